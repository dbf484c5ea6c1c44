"""
Runner overhead on no-op steps: chain, fan-out, wide and mixed shapes.

Prints one row per shape and size: seconds (best of 3) and microseconds per
node, then the peak memory growth of the largest fan-out and the idle CPU use
while a step sleeps. Run: ``python benchmarks/bench_runner.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import subprocess
import sys
import time

from nextpipe import Configuration, FlowSpec, foreach, join, needs, optional, repeat, step
from nextpipe.hooks import FlowHooks


def chain_flow(n: int) -> type[FlowSpec]:
    namespace: dict = {}
    previous = None
    for i in range(n):

        def noop(*args, i=i):
            return i

        noop.__name__ = f"s{i}"
        decorated = step(noop)
        if previous is not None:
            decorated = needs(predecessors=[previous])(decorated)
        namespace[f"s{i}"] = previous = decorated
    return type("Chain", (FlowSpec,), namespace)


def fanout_flow(_n: int) -> type[FlowSpec]:
    class FanOut(FlowSpec):
        @foreach()
        @step
        def items(n):
            return list(range(n))

        @needs(predecessors=[items])
        @step
        def work(item):
            return item

        @join()
        @needs(predecessors=[work])
        @step
        def collect(results):
            return len(results)

    return FanOut


def wide_flow(n: int) -> type[FlowSpec]:
    namespace: dict = {}
    starts = []
    for i in range(n):

        def noop(_input, i=i):
            return i

        noop.__name__ = f"w{i}"
        namespace[f"w{i}"] = decorated = step(noop)
        starts.append(decorated)

    def collect(elements):
        return len(elements)

    namespace["collect"] = join()(needs(predecessors=starts)(step(collect)))
    return type("Wide", (FlowSpec,), namespace)


def mixed_flow(_n: int) -> type[FlowSpec]:
    class Mixed(FlowSpec):
        @foreach()
        @step
        def items(n):
            return list(range(n))

        @repeat(repetitions=3)
        @needs(predecessors=[items])
        @step
        def solve(item):
            return item * 2

        @foreach()
        @step
        def seeds(n):
            return [1, 2]

        @needs(predecessors=[solve, seeds])
        @step
        def combine(results, seed):
            return sum(results) * seed

        @optional(condition=lambda _step: False)
        @needs(predecessors=[combine])
        @step
        def skipped(value):
            return value

        @join()
        @needs(predecessors=[combine, skipped])
        @step
        def collect(elements):
            return len(elements)

    return Mixed


SHAPES = {
    "chain": (chain_flow, [10, 100, 1000]),
    "fan-out": (fanout_flow, [100, 1000, 10000]),
    "wide": (wide_flow, [100, 1000]),
    "mixed": (mixed_flow, [10, 100, 1000]),
}


def nodes_of(flow: FlowSpec) -> int:
    return sum(len(s.nodes) for s in flow.graph.steps)


class NoOpHook(FlowHooks):
    """Listens to every node event and does nothing: the cost of dispatching hooks."""

    def node_start(self, flow, node):
        pass

    def node_success(self, flow, node):
        pass


def measure(make, n: int, repeats: int = 3, hooks: tuple = ()) -> tuple[float, int]:
    flow_class = make(n)
    best = float("inf")
    nodes = 0
    for _ in range(repeats):
        with contextlib.redirect_stderr(io.StringIO()):
            flow = flow_class("bench", n, conf=Configuration(max_step_inputs=10**9))
            for hook in hooks:
                flow.add_hook(hook)
            start = time.perf_counter()
            flow.run()
            best = min(best, time.perf_counter() - start)
        nodes = nodes_of(flow)
    return best, nodes


def peak_rss_growth_mb(n: int) -> float:
    # In a fresh process, read VmHWM (peak RSS) from /proc: ru_maxrss would carry the parent's peak over exec.
    code = (
        "import contextlib, io, sys; sys.path.insert(0, 'benchmarks');"
        "from bench_runner import fanout_flow; from nextpipe import Configuration;"
        "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]);"
        f"cls = fanout_flow({n}); before = hwm();"
        "ctx = contextlib.redirect_stderr(io.StringIO()); ctx.__enter__();"
        f"f = cls('bench', {n}, conf=Configuration(max_step_inputs=10**9)); f.run();"
        "print((hwm() - before) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def idle_cpu_share(seconds: float = 2.0) -> float:
    class Sleeper(FlowSpec):
        @step
        def nap(_input):
            time.sleep(seconds)

    with contextlib.redirect_stderr(io.StringIO()):
        flow = Sleeper("sleep", None)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        flow.run()
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu / wall


def import_time() -> float:
    code = "import time; t = time.perf_counter(); import nextpipe; print(time.perf_counter() - t)"
    return min(float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    args = parser.parse_args()
    print(f"{'shape':<8} {'N':>6} {'nodes':>6} {'seconds':>9} {'us/node':>8}")
    for shape, (make, sizes) in SHAPES.items():
        for n in sizes[:1] if args.quick else sizes:
            seconds, nodes = measure(make, n)
            print(f"{shape:<8} {n:>6} {nodes:>6} {seconds:>9.4f} {seconds / nodes * 1e6:>8.1f}")
    if args.quick:
        return
    seconds, nodes = measure(fanout_flow, 10000, hooks=(NoOpHook(),))
    print(f"fan-out 10000 with a no-op hook on node_start and node_success: {seconds:.4f} s")
    print(f"peak RSS growth, fan-out 10000: {peak_rss_growth_mb(10000):.1f} MB")
    print(f"CPU share while one step sleeps 2 s: {idle_cpu_share() * 100:.2f} % of a core")
    print(f"import nextpipe: {import_time():.3f} s")


if __name__ == "__main__":
    main()
