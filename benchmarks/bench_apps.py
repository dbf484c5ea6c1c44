"""
Many app steps and the uplink, against the test suite's platform emulator on 127.0.0.1.

Prints: the wall time of 200 fanned-out app runs lasting 0.5 s each (explicit
fast polling, 24 threads) with the most worker threads alive at once, and the
uplink's cost for that run (update documents built and PUTs sent).
Run: ``python benchmarks/bench_apps.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time

import nextmv
from nextmv.cloud import Client

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from platform_emulator import PlatformEmulator  # noqa: E402

import nextpipe.uplink  # noqa: E402
from nextpipe import AppRunConfig, Configuration, FlowSpec, app, foreach, join, needs, step  # noqa: E402
from nextpipe.uplink import UplinkConfig  # noqa: E402

RUNS = 200
RUN_SECONDS = 0.5
POLLING = nextmv.PollingOptions(initial_delay=0.05, delay=0.05, backoff=0, jitter=0, max_duration=60)


class ManyApps(FlowSpec):
    @foreach()
    @step
    def configs(n: int) -> list:
        return [AppRunConfig(input={"i": i}, name=f"run {i}") for i in range(n)]

    @app(app_id="echo", polling_options=POLLING)
    @needs(predecessors=[configs])
    @step
    def solve() -> None:
        pass

    @join()
    @needs(predecessors=[solve])
    @step
    def collect(results: list) -> int:
        return len(results)


def count_workers() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("nextpipe-") and "uplink" not in t.name)


def main() -> None:
    nextpipe.uplink.UPDATE_INTERVAL = 1  # a run of a few seconds still shows several updates
    with PlatformEmulator(api_key="bench-key") as emu:
        emu.set_app_behavior("echo", duration=RUN_SECONDS, logs=[])
        client = Client(api_key="bench-key", url=emu.url)
        with contextlib.redirect_stderr(io.StringIO()):
            flow = ManyApps(
                "many",
                RUNS,
                conf=Configuration(thread_count=24, max_step_inputs=RUNS),
                client=client,
                uplink_config=UplinkConfig(application_id="wf", run_id="run-1"),
            )
            peak = 0
            done = threading.Event()

            def watch() -> None:
                nonlocal peak
                while not done.wait(0.01):
                    peak = max(peak, count_workers())

            watcher = threading.Thread(target=watch)
            watcher.start()
            start = time.perf_counter()
            flow.run()
            seconds = time.perf_counter() - start
            done.set()
            watcher.join()
        assert flow.get_result(flow.collect) == RUNS
        ideal = RUNS / 24 * RUN_SECONDS
        print(f"{RUNS} app runs of {RUN_SECONDS} s, 24 threads: {seconds:.2f} s (ideal {ideal:.2f} s)")
        print(f"most worker threads alive at once: {peak}")
        print(f"uplink: {flow.uplink.updates_built} documents built, {len(emu.flow_updates)} PUTs")


if __name__ == "__main__":
    main()
