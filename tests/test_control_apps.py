"""Retries, time limits, tolerated failures and concurrency limits of app steps (issue 13).

Runs go through the real ``nextmv`` SDK to the platform emulator, and to a real local app through ``nextmv.local``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import nextmv
import nextmv.local
import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import fast_polling  # noqa: E402
from platform_emulator import PlatformEmulator, RunFailure  # noqa: E402

from nextpipe import (  # noqa: E402
    AppRunConfig,
    Configuration,
    FlowSpec,
    allow_failure,
    app,
    concurrency,
    foreach,
    join,
    needs,
    retry,
    step,
    timeout,
)
from nextpipe.errors import AppRunError, StepTimeoutError  # noqa: E402
from nextpipe.flow import STATUS_FAILED, STATUS_PENDING, STATUS_RUNNING, STATUS_SUCCEEDED  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class FailingFirst:
    """An emulated app handler whose first ``failures`` runs fail."""

    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, input: Any, options: dict[str, str], files: dict[str, bytes]) -> Any:
        with self.lock:
            self.calls += 1
            if self.calls <= self.failures:
                raise RunFailure(f"solver crashed on call {self.calls}")
        return {"solution": input, "calls": self.calls}


def most_alive_at_once(emu: PlatformEmulator, app_id: str) -> int:
    """The most runs of an app the emulator had unfinished at one time (creation to final status)."""
    events = []
    for run in emu.runs_for(app_id):
        assert run.finished_at is not None, f"run {run.run_id} never finished"
        events += [(run.created_at, 1), (run.finished_at, -1)]
    alive = most = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        alive += change
        most = max(most, alive)
    return most


def test_failed_runs_are_retried_as_new_runs(
    workflow_env: PlatformEmulator, fast_uplink: float, capfd: pytest.CaptureFixture
) -> None:
    emu = workflow_env
    emu.set_app_behavior("flaky", FailingFirst(2), duration=0.1)

    class Flow(FlowSpec):
        @retry(attempts=3, delay=0.01, retry_on=AppRunError)
        @app(app_id="flaky", polling_options=fast_polling())
        @step
        def solve() -> None:
            pass

    flow = Flow("retry", {"x": 1})
    flow.run()
    assert flow.get_result(flow.solve) == {"solution": {"x": 1}, "calls": 3}
    runs = emu.runs_for("flaky")
    assert [r.status for r in runs] == ["failed", "failed", "succeeded"]
    (node,) = flow.graph.get_step(flow.solve.step).nodes
    assert node.run_ids == [r.run_id for r in runs] and node.run_id == runs[-1].run_id
    assert flow.solve.step.get_run_ids() == node.run_ids
    assert node.status == STATUS_SUCCEEDED
    err = capfd.readouterr().err
    for number, run in enumerate(runs[:2], start=1):
        assert (
            f"[solve_0] Attempt {number} of 3 failed (AppRunError: run {run.run_id} of app flaky ended failed: "
            f"solver crashed on call {number})"
        ) in err
    assert "[solve_0] Attempt 3 of 3 started." in err
    # The platform's flow view never shows the node failed between its attempts.
    states = [(n["status"], n.get("run_id")) for u in emu.flow_updates for n in u["pipeline_graph"]["nodes"]]
    assert all(status != STATUS_FAILED for status, _ in states)
    assert states[-1] == (STATUS_SUCCEEDED, runs[-1].run_id)


def test_run_that_never_finishes_is_canceled_at_the_limit(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.hold_runs(True, app_id="stuck")

    class Flow(FlowSpec):
        @timeout(seconds=0.3)
        @app(app_id="stuck", polling_options=fast_polling(60))
        @step
        def solve() -> None:
            pass

    flow = Flow("timeout", {"x": 1})
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: node solve_0 ran longer") as raised:
        flow.run()
    assert isinstance(raised.value.__cause__, StepTimeoutError)
    (run,) = emu.runs_for("stuck")
    assert run.cancel_requests >= 1 and run.status == "canceled"
    assert emu.requests_for("PATCH", f"/v1/applications/stuck/runs/{run.run_id}/cancel")


def test_timed_out_run_is_canceled_and_retried(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.hold_runs(True, app_id="slow")

    def lift_hold_after_the_first_cancel() -> None:
        emu.wait_for(lambda: any(r.canceled for r in emu.runs_for("slow")), timeout=10)
        emu.hold_runs(False, app_id="slow")

    helper = threading.Thread(target=lift_hold_after_the_first_cancel)
    helper.start()

    class Flow(FlowSpec):
        @retry(attempts=2, delay=0.05, retry_on=StepTimeoutError)
        @timeout(seconds=0.3)
        @app(app_id="slow", polling_options=fast_polling(60))
        @step
        def solve() -> None:
            pass

    flow = Flow("timeout-retry", {"x": 2})
    flow.run()
    helper.join()
    first, second = emu.runs_for("slow")
    assert first.status == "canceled" and second.status == "succeeded"
    (node,) = flow.graph.get_step(flow.solve.step).nodes
    assert node.run_ids == [first.run_id, second.run_id]
    assert flow.get_result(flow.solve)["solution"] == {"x": 2}


class LimitedFlow(FlowSpec):
    @foreach()
    @step
    def fan(data: int) -> list[dict[str, int]]:
        return [{"item": i} for i in range(data)]

    @app(app_id="limited", polling_options=fast_polling())
    @needs(predecessors=[fan])
    @step
    def solve() -> None:
        pass

    @join()
    @needs(predecessors=[solve])
    @step
    def collect(results: list[list[dict[str, Any]]]) -> list[int]:
        return [r[0]["solution"]["item"] for r in results]


class StepLimitedFlow(LimitedFlow):
    @concurrency(limit=3)
    @app(app_id="limited", polling_options=fast_polling())
    @needs(predecessors=[LimitedFlow.fan])
    @step
    def solve() -> None:
        pass

    @join()
    @needs(predecessors=[solve])
    @step
    def collect(results: list[list[dict[str, Any]]]) -> list[int]:
        return [r[0]["solution"]["item"] for r in results]


@pytest.mark.parametrize(
    ("flow_class", "conf"),
    [
        (LimitedFlow, Configuration(app_concurrency={"limited": 3})),
        (StepLimitedFlow, Configuration()),
    ],
    ids=["app_concurrency", "step_concurrency"],
)
def test_fan_out_of_20_keeps_at_most_3_runs_alive(
    workflow_env: PlatformEmulator, fast_uplink: float, flow_class: type, conf: Configuration
) -> None:
    emu = workflow_env
    emu.set_app_behavior("limited", duration=0.1)
    flow = flow_class("limit", 20, conf=conf)
    flow.run()
    assert flow.get_result(flow.collect) == list(range(20))
    assert len(emu.runs_for("limited")) == 20
    assert most_alive_at_once(emu, "limited") <= 3
    solve_states = [
        [n["status"] for n in update["pipeline_graph"]["nodes"] if n["id"].startswith("solve_")]
        for update in emu.flow_updates
    ]
    assert all(states.count(STATUS_RUNNING) <= 3 for states in solve_states)
    assert any(STATUS_PENDING in states and STATUS_RUNNING in states for states in solve_states), (
        "the uplink never showed waiting nodes as pending next to running ones"
    )


def test_ensemble_with_a_failing_solver_still_picks_the_best(platform_env: PlatformEmulator) -> None:
    emu = platform_env

    def solver(input: Any, options: dict[str, str], files: dict[str, bytes]) -> Any:
        if options["solver"] == "mip":
            raise RunFailure("infeasible corner case")
        return {"solver": options["solver"], "cost": {"greedy": 12, "dp": 9}[options["solver"]]}

    emu.set_app_behavior("ensemble", solver, duration=0.02)

    class Flow(FlowSpec):
        @foreach()
        @step
        def configure(data: dict[str, Any]) -> list[AppRunConfig]:
            return [AppRunConfig(input=data, options={"solver": s}) for s in ("greedy", "mip", "dp")]

        @allow_failure()
        @app(app_id="ensemble", polling_options=fast_polling())
        @needs(predecessors=[configure])
        @step
        def solve() -> None:
            pass

        @join()
        @needs(predecessors=[solve])
        @step
        def pick_best(results: list[list[Any]]) -> dict[str, Any]:
            return min((r[0] for r in results if r[0] is not None), key=lambda r: r["cost"])

    flow = Flow("ensemble", {"orders": 3})
    flow.run()
    assert flow.get_result(flow.pick_best) == {"solver": "dp", "cost": 9}
    greedy, mip, dp = flow.graph.get_step(flow.solve.step).nodes
    assert (greedy.status, mip.status, dp.status) == (STATUS_SUCCEEDED, STATUS_FAILED, STATUS_SUCCEEDED)
    assert mip.result is None and "infeasible corner case" in mip.error and mip.run_id


def test_tolerated_failed_app_runs_restore_the_original_behaviour(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.set_app_behavior("broken", FailingFirst(1), duration=0.02)

    class Flow(FlowSpec):
        @app(app_id="broken", polling_options=fast_polling())
        @step
        def solve() -> None:
            pass

        @needs(predecessors=[solve])
        @step
        def after(value: Any) -> str:
            return f"received {value!r}"

    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: run .* of app broken ended failed"):
        Flow("fail-fast", {"x": 1}).run()
    emu.set_app_behavior("broken", FailingFirst(1))
    flow = Flow("original", {"x": 1}, conf=Configuration(tolerate_failed_app_runs=True))
    flow.run()
    assert flow.get_result(flow.after) == "received None"
    (node,) = flow.graph.get_step(flow.solve.step).nodes
    assert node.status == STATUS_FAILED and "solver crashed on call 1" in node.error


# ---------------------------------------------------------------------------- local apps


def local_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_attempt: str) -> Path:
    """A copy of the echo example app whose first run does ``first_attempt`` (Python lines) and leaves a marker."""
    monkeypatch.setenv("UV_NO_PROJECT", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    app_dir = tmp_path / "flaky"
    shutil.copytree(EXAMPLES / "chain" / "apps" / "echo", app_dir, ignore=shutil.ignore_patterns(".nextmv"))
    marker = tmp_path / "first-attempt-done"
    main = app_dir / "main.py"
    main.write_text(
        "import pathlib, sys, time\n"
        f"_marker = pathlib.Path({str(marker)!r})\n"
        "if not _marker.exists():\n"
        "    _marker.touch()\n" + "".join(f"    {line}\n" for line in first_attempt.splitlines()) + main.read_text()
    )
    return app_dir


def test_local_app_failing_on_its_first_attempt_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app_dir = local_app(
        tmp_path, monkeypatch, "print('first attempt: failing on purpose', file=sys.stderr)\nsys.exit(1)"
    )

    class Flow(FlowSpec):
        @retry(attempts=2, delay=0.0, retry_on=AppRunError)
        @app(app_id="flaky", polling_options=fast_polling(60))
        @step
        def solve() -> None:
            pass

    flow = Flow("local", {"x": 5}, conf=Configuration(local_apps={"flaky": str(app_dir)}))
    flow.run()
    assert flow.get_result(flow.solve)["solution"] == {"x": 5}
    (node,) = flow.graph.get_step(flow.solve.step).nodes
    assert len(node.run_ids) == 2 and len(set(node.run_ids)) == 2
    first = nextmv.local.Application(src=str(app_dir)).run_information(node.run_ids[0])
    assert first.metadata.status_v2 == nextmv.StatusV2.failed


def test_local_run_at_its_limit_is_stopped_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app_dir = local_app(tmp_path, monkeypatch, "time.sleep(120)")

    class Flow(FlowSpec):
        @retry(attempts=2, delay=0.0, retry_on=StepTimeoutError)
        @timeout(seconds=8)  # a normal local run takes a second or two, more on a busy machine
        @app(app_id="flaky", polling_options=fast_polling(60))
        @step
        def solve() -> None:
            pass

    flow = Flow("local-timeout", {"x": 6}, conf=Configuration(local_apps={"flaky": str(app_dir)}))
    flow.run()
    assert flow.get_result(flow.solve)["solution"] == {"x": 6}
    (node,) = flow.graph.get_step(flow.solve.step).nodes
    first = nextmv.local.Application(src=str(app_dir)).run_information(node.run_ids[0])
    assert first.metadata.status_v2 == nextmv.StatusV2.canceled


def test_failing_flow_cancels_limited_runs_and_starts_no_waiting_node(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.hold_runs(True, app_id="quota")
    go = threading.Event()

    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data: int) -> list[dict[str, int]]:
            return [{"item": i} for i in range(data)]

        @retry(attempts=3, delay=0.05)
        @app(app_id="quota", polling_options=fast_polling(60))
        @needs(predecessors=[fan])
        @step
        def solve() -> None:
            pass

        @step
        def broken(data: int) -> None:
            go.wait(10)
            raise ValueError("broken while runs are in progress")

    def fail_once_two_runs_exist() -> None:
        emu.wait_for(lambda: len(emu.runs_for("quota")) >= 2, timeout=10)
        go.set()

    helper = threading.Thread(target=fail_once_two_runs_exist)
    helper.start()
    flow = Flow("fail-fast", 6, conf=Configuration(app_concurrency={"quota": 2}))
    with pytest.raises(RuntimeError, match="Step broken failed: broken while runs are in progress"):
        flow.run()
    helper.join()
    runs = emu.runs_for("quota")
    assert len(runs) == 2, "a waiting node started after the flow failed"
    assert all(r.cancel_requests >= 1 and r.status == "canceled" for r in runs)
    statuses = [n.status for n in flow.graph.get_step(flow.solve.step).nodes]
    assert statuses == [STATUS_FAILED] * 6
