"""
Cost of nextpipe's output: a log line (default handler, a user's handler), and the run summary of large flows.

Prints microseconds per line for ``log_internal`` (the runner's ``Running node``
lines) with no logging configuration (the default handler's fast path) and
with a handler of the user's on the ``nextpipe`` logger, then the time that
building the summary and logging its table takes for flows of many steps and
nodes. Run: ``python benchmarks/bench_logging.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time

from bench_runner import chain_flow, fanout_flow

from nextpipe import Configuration
from nextpipe.summary import SummaryHook, summarize
from nextpipe.utils import log_internal

LINES = 100_000


def per_line() -> float:
    """Microseconds per log_internal line, best of 3, written to a StringIO stderr."""
    best = float("inf")
    for _ in range(3):
        with contextlib.redirect_stderr(io.StringIO()):
            started = time.perf_counter()
            for _ in range(LINES):
                log_internal("Running node work_1")
            best = min(best, time.perf_counter() - started)
    return best / LINES * 1e6


def summary_cost(flow_class: type, n: int) -> tuple[float, float]:
    """Milliseconds to build the summary, and to build and log its table, after a run of ``flow_class(n)``."""
    with contextlib.redirect_stderr(io.StringIO()):
        flow = flow_class("bench", n, conf=Configuration(summary=False, max_step_inputs=n + 10))
        flow.run()
        hook = SummaryHook()
        hook.flow_start(flow)
        started = time.perf_counter()
        summarize(flow)
        build = time.perf_counter() - started
        started = time.perf_counter()
        hook.flow_end(flow, None)
        table = time.perf_counter() - started
    return build * 1e3, table * 1e3


def main() -> None:
    print(f"log line, default handler:     {per_line():6.2f} us")
    handler = logging.NullHandler()
    logging.getLogger("nextpipe").addHandler(handler)
    print(f"log line, plus a user handler: {per_line():6.2f} us")
    logging.getLogger("nextpipe").removeHandler(handler)
    print()
    print("| flow | steps | nodes | summary (ms) | summary + table logged (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name, make, n, steps, nodes in (
        ("chain", chain_flow, 1_000, 1_000, 1_000),
        ("fan-out", fanout_flow, 10_000, 3, 10_002),
    ):
        build, table = summary_cost(make(n), n)
        print(f"| {name} | {steps:,} | {nodes:,} | {build:.1f} | {table:.1f} |")


if __name__ == "__main__":
    main()
