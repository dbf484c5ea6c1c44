"""
Overhead of retries, time limits and concurrency limits on the 10,000-item fan-out of no-op steps.

Prints wall-clock and CPU seconds (best of 7, the settings taking turns) and the CPU overhead against the
plain fan-out for each
setting of the fanned-out step; no node fails, so this is the price of the
machinery itself. Run: ``python benchmarks/bench_control.py [--items N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
    "@concurrency(limit=24)": (concurrency(limit=24),),
    "@concurrency(limit=3)": (concurrency(limit=3),),
    "@timeout(seconds=60)": (timeout(seconds=60),),
    "@allow_failure()": (allow_failure(),),
    "all four": (retry(attempts=3), concurrency(limit=24), timeout(seconds=60), allow_failure()),
}


def measure_all(flows: dict[str, type[FlowSpec]], n: int, repeats: int) -> dict[str, tuple[float, float]]:
    """
    Best wall-clock and CPU seconds of each flow; the flows take turns, so that a busy spell of the machine
    hits them all. CPU seconds (all threads of the process) hardly depend on what else runs on the machine.
    """
    best = {name: (float("inf"), float("inf")) for name in flows}
    for _ in range(repeats):
        for name, flow_class in flows.items():
            with contextlib.redirect_stderr(io.StringIO()):
                flow = flow_class("bench", n, conf=Configuration(max_step_inputs=10**9))
                start, start_cpu = time.perf_counter(), time.process_time()
                flow.run()
                wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
            assert flow.get_result(flow.collect) == n
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"fan-out of {args.items:,} no-op nodes, best of {args.repeats}")
    print(f"| {'setting of the fanned-out step':<32} | seconds | CPU seconds | CPU µs/node | CPU overhead |")
    print(f"|{'-' * 34}|--------:|------------:|------------:|-------------:|")
    best = measure_all({name: fanout_flow(*controls) for name, controls in SETTINGS.items()}, args.items, args.repeats)
    base_cpu = best["plain"][1]
    for name, (wall, cpu) in best.items():
        overhead = f"{(cpu / base_cpu - 1) * 100:+.0f} %" if name != "plain" else "—"
        print(f"| {name:<32} | {wall:7.3f} | {cpu:11.3f} | {cpu / args.items * 1e6:11.1f} | {overhead:>12} |")


if __name__ == "__main__":
    main()
