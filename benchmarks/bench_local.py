"""
One trivial local app step against the SDK's own floor for the same run.

The floor is ``nextmv.local.Application.new_run`` then ``run_result_with_polling`` with tight polling
(no initial delay, a poll every 10 ms). The flow is built and run with the step's default polling options,
each time from scratch. Both run the ``probe`` test app (no imports beyond the standard library), alternately,
ROUNDS times; the medians and their ratio are printed (target: at most 1.2).
Run: ``python benchmarks/bench_local.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import statistics
import tempfile
import time

WORK = tempfile.mkdtemp(prefix="nextpipe-bench-local-")
os.environ["HOME"] = WORK  # the SDK keeps a registry under ~/.nextmv: not the user's
os.environ.setdefault("UV_OFFLINE", "1")
os.environ.setdefault("UV_NO_PROJECT", "1")

import nextmv  # noqa: E402
import nextmv.local  # noqa: E402

from nextpipe import Configuration, FlowSpec, app, step  # noqa: E402

ROUNDS = 9
PROBE = os.path.join(os.path.dirname(__file__), "..", "tests", "apps", "probe")


class OneStep(FlowSpec):
    @app(app_id="probe")
    @step
    def probe() -> None:
        pass


def sdk_floor(src: str) -> float:
    sdk_app = nextmv.local.Application(src=src)
    polling = nextmv.PollingOptions(initial_delay=0, delay=0.01, backoff=0, jitter=0, max_duration=60)
    start = time.perf_counter()
    run_id = sdk_app.new_run(input={"n": 1})
    while True:
        try:
            result = sdk_app.run_result_with_polling(run_id, polling_options=polling, output_dir_path=None)
            break
        except json.JSONDecodeError:  # the executor rewrites the run's state in place: a poll may read half of it
            continue
    seconds = time.perf_counter() - start
    assert result.metadata.status_v2 == nextmv.StatusV2.succeeded, result.metadata.error
    return seconds


def flow_run(src: str) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        flow = OneStep("bench", {"n": 1}, conf=Configuration(local_apps={"probe": src}))
        flow.run()
    seconds = time.perf_counter() - start
    assert flow.get_result(flow.probe)["solution"]["stdin"] == '{"n": 1}'
    return seconds


def main() -> None:
    src = os.path.join(WORK, "probe")
    shutil.copytree(PROBE, src, ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
    try:
        sdk_floor(src), flow_run(src)  # warm-up: imports, caches
        floors, flows = [], []
        for _ in range(ROUNDS):
            floors.append(sdk_floor(src))
            flows.append(flow_run(src))
        floor, flow = statistics.median(floors), statistics.median(flows)
        print(f"SDK floor (new_run + tight polling): median {floor:.3f} s over {ROUNDS} runs")
        print(f"flow with one local app step:       median {flow:.3f} s over {ROUNDS} runs")
        print(f"ratio: {flow / floor:.2f} (target <= 1.2)")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
