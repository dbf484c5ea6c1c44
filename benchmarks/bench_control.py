"""
Overhead of retries, time limits and concurrency limits on the 10,000-item fan-out of no-op steps.

Each round runs every setting and the plain fan-out once, in a fresh random order, all in this process;
a garbage collection precedes each run. Prints, per setting, the median
wall-clock and CPU seconds (CPU of all the process's threads, ``time.process_time``) and the median over
rounds of the CPU and wall overhead against that round's plain run. No node fails, so this is the price of
the machinery itself. Run: ``python benchmarks/bench_control.py [--items N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import random
import statistics
import time
from collections.abc import Callable

from nextpipe import (
    Configuration,
    FlowSpec,
    allow_failure,
    concurrency,
    foreach,
    join,
    needs,
    retry,
    step,
    timeout,
)


def fanout_flow(*controls: Callable) -> type[FlowSpec]:
    def work(item):
        return item

    decorated = needs(predecessors=[])(step(work))
    for control in controls:
        decorated = control(decorated)

    class FanOut(FlowSpec):
        @foreach()
        @step
        def items(n):
            return list(range(n))

        work = decorated

        @join()
        @needs(predecessors=[work])
        @step
        def collect(results):
            return len(results)

    FanOut.work.step.needs.predecessors = [FanOut.items]
    return FanOut


SETTINGS: dict[str, tuple[Callable, ...]] = {
    "plain": (),
    "@retry(attempts=3)": (retry(attempts=3),),
    "@allow_failure()": (allow_failure(),),
    "@concurrency(limit=3)": (concurrency(limit=3),),
    "@concurrency(limit=24)": (concurrency(limit=24),),
    "@timeout(seconds=60)": (timeout(seconds=60),),
    "all four": (retry(attempts=3), concurrency(limit=24), timeout(seconds=60), allow_failure()),
}


def run_once(flow_class: type[FlowSpec], n: int, threads: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one ``run()`` (construction excluded)."""
    with contextlib.redirect_stderr(io.StringIO()):
        flow = flow_class("bench", n, conf=Configuration(max_step_inputs=10**9, thread_count=threads))
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        flow.run()
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    assert flow.get_result(flow.collect) == n
    return wall, cpu


def measure_all(
    flows: dict[str, type[FlowSpec]], n: int, rounds: int, threads: int
) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each flow per round; each round runs them in a fresh random order."""
    order = list(flows)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in flows}
    for name in order:  # warm-up: imports, first thread starts, caches
        run_once(flows[name], n, threads)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            samples[name].append(run_once(flows[name], n, threads))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="thread_count (default 0: 24 threads)")
    args = parser.parse_args()
    flows = {name: fanout_flow(*controls) for name, controls in SETTINGS.items()}
    samples = measure_all(flows, args.items, args.rounds, args.threads)
    plain = samples["plain"]
    threads = f"{args.threads} worker thread(s)" if args.threads > 0 else "24 worker threads"
    print(f"fan-out of {args.items:,} no-op nodes, {threads}; medians of {args.rounds} interleaved rounds")
    print(f"| {'setting of the fanned-out step':<30} | wall s | CPU s | CPU µs/node | CPU overhead | wall overhead |")
    print(f"|{'-' * 32}|-------:|------:|------------:|-------------:|--------------:|")
    for name, runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        if name == "plain":
            cpu_over = wall_over = "—"
        else:  # paired with the same round's plain run, so that a busy spell of the machine cancels out
            pairs = list(zip(runs, plain, strict=True))
            cpu_over = f"{(statistics.median(c / p for (_, c), (_, p) in pairs) - 1) * 100:+.1f} %"
            wall_over = f"{(statistics.median(w / p for (w, _), (p, _) in pairs) - 1) * 100:+.1f} %"
        print(
            f"| {name:<30} | {wall:6.3f} | {cpu:5.3f} | {cpu / args.items * 1e6:11.1f} | {cpu_over:>12} "
            f"| {wall_over:>13} |"
        )


if __name__ == "__main__":
    main()
