"""Findings of trying retries, time limits, tolerated failures and concurrency limits as a user would (issue 13)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import fast_polling  # noqa: E402
from platform_emulator import PlatformEmulator, RunFailure  # noqa: E402

import nextpipe  # noqa: E402
from nextpipe import (  # noqa: E402
    Configuration,
    FlowSpec,
    allow_failure,
    app,
    concurrency,
    foreach,
    needs,
    retry,
    step,
    timeout,
)
from nextpipe._policy import retry_delay  # noqa: E402
from nextpipe.decorators import Retry  # noqa: E402
from nextpipe.graph import FlowDefinitionError  # noqa: E402
from nextpipe.hooks import FlowHooks  # noqa: E402

pytest_plugins = ["emulator_fixtures"]


def test_run_created_after_its_attempt_timed_out_is_kept_among_the_node_runs(platform_env: PlatformEmulator) -> None:
    # The platform answers the first run creation only after the attempt's time limit: the run still comes to
    # exist (and is canceled), so the node must keep its id next to the retry's run.
    emu = platform_env
    emu.set_delay(0.8, "/v1/applications/slowcreate/runs", method="POST")

    def answer_at_once_after_the_first_run() -> None:
        emu.wait_for(lambda: len(emu.runs_for("slowcreate")) >= 1, timeout=10)
        emu.set_delay(0, "/v1/applications/slowcreate/runs", method="POST")

    helper = threading.Thread(target=answer_at_once_after_the_first_run)
    helper.start()

    class Flow(FlowSpec):
        @retry(attempts=2, delay=0)
        @timeout(seconds=0.3)
        @app(app_id="slowcreate", polling_options=fast_polling())
        @step
        def solve() -> None:
            pass

    flow = Flow("late-creation", {"x": 1})
    flow.run()
    helper.join()
    first, second = emu.runs_for("slowcreate")
    assert first.status == "canceled" and second.status == "succeeded"
    (node,) = flow.graph.get_step(flow.solve.step).nodes
    assert node.run_ids == [first.run_id, second.run_id]
    assert flow.solve.step.get_run_ids() == [first.run_id, second.run_id]


class _FailingFirst:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, input: Any, options: dict[str, str], files: dict[str, bytes]) -> Any:
        with self.lock:
            self.calls += 1
            if self.calls == 1:
                raise RunFailure("first run crashes")
        return {"ok": True}


def test_summary_lists_the_runs_of_every_attempt(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.set_app_behavior("flaky", _FailingFirst(), duration=0.02)

    class Flow(FlowSpec):
        @retry(attempts=2, delay=0)
        @app(app_id="flaky", polling_options=fast_polling())
        @step
        def solve() -> None:
            pass

    flow = Flow("summary-runs", {"x": 1}, conf=Configuration(summary=False))
    flow.run()
    runs = [r.run_id for r in emu.runs_for("flaky")]
    assert len(runs) == 2
    (solve,) = flow.summary().steps
    assert solve.run_ids == runs == flow.solve.step.get_run_ids()


def test_summary_of_a_step_after_a_tolerated_failed_fan_out_is_not_waiting() -> None:
    # A failed @foreach node fans out over nothing: its successor has no node, and it is done, not waiting.
    class Flow(FlowSpec):
        @allow_failure()
        @foreach()
        @step
        def items(data: int) -> list[int]:
            raise ValueError("no items today")

        @needs(predecessors=[items])
        @step
        def work(item: int) -> int:
            return item

    flow = Flow("empty-fan-out", 1, conf=Configuration(summary=False))
    flow.run()
    summary = flow.summary()
    assert summary.status == "succeeded"
    assert [(s.step, s.status) for s in summary.steps] == [("items", "failed"), ("work", "succeeded")]


def test_a_slow_cancel_on_the_platform_does_not_hold_up_other_time_limits(platform_env: PlatformEmulator) -> None:
    # Canceling a timed-out run is a platform call, which may hang: meanwhile, other nodes' limits still fire.
    emu = platform_env
    emu.hold_runs(True, app_id="stuck")
    emu.set_delay(4, method="PATCH", path_regex="/cancel$")
    cancel_path = "/v1/applications/stuck/runs/"
    seen: dict[str, Any] = {}
    recorded = threading.Event()

    class Flow(FlowSpec):
        @allow_failure()
        @timeout(seconds=0.3)
        @app(app_id="stuck", polling_options=fast_polling(60))
        @step
        def solve() -> None:
            pass

        @step
        def gate(data: dict) -> None:
            emu.wait_for(lambda: any(r.path.endswith("/cancel") for r in emu.requests_for("PATCH", cancel_path)), 10)

        @allow_failure()
        @timeout(seconds=0.3)
        @needs(predecessors=[gate])
        @step
        def search(_: None) -> None:
            while not nextpipe.cancelled():
                time.sleep(0.01)
            (run,) = emu.runs_for("stuck")
            seen["run canceled when the search was stopped"] = run.canceled
            recorded.set()

    flow = Flow("slow-cancel", {"x": 1})
    flow.run()
    assert recorded.wait(10), "the search never saw its time limit"  # it was abandoned: it may end after run()
    (run,) = emu.runs_for("stuck")
    assert run.status == "canceled"
    assert seen == {"run canceled when the search was stopped": False}


@pytest.mark.parametrize(
    ("outer", "inner", "name"),
    [
        (retry(attempts=2), retry(attempts=5), "retry"),
        (timeout(seconds=1), timeout(seconds=60), "timeout"),
        (concurrency(limit=1), concurrency(limit=4), "concurrency"),
    ],
)
def test_a_control_decorator_applied_twice_is_refused_naming_the_step(outer: Any, inner: Any, name: str) -> None:
    # Like @repeat or @app twice: the outer one would silently replace the inner one.
    with pytest.raises(FlowDefinitionError, match=rf"^Step work: @{name} is applied twice, so the outer one would"):

        class Flow(FlowSpec):
            @outer
            @inner
            @step
            def work(data: int) -> int:
                return data

        Flow("twice", 1)


def test_a_zero_delay_stays_zero_however_many_attempts_failed() -> None:
    # delay=0 means "retry at once": the backoff factor's power overflowing a float must not turn it into a wait.
    at_once = Retry(attempts=2000, delay=0.0, backoff=2.0, max_delay=None, jitter=0.0, retry_on=(Exception,))
    assert retry_delay(at_once, 1500) == 0.0
    capped = Retry(attempts=2000, delay=0.0, backoff=2.0, max_delay=60.0, jitter=0.0, retry_on=(Exception,))
    assert retry_delay(capped, 1500) == 0.0


def test_a_slow_hook_at_a_time_limit_does_not_hold_up_other_time_limits() -> None:
    # The outcome of a timed-out node goes to the hooks: a hook that takes its time (a chat message, an HTTP
    # call) must not keep the other nodes' limits from firing.
    other_stopped, hook_done = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    class SlowHook(FlowHooks):
        def node_failure(self, flow: Any, node: Any, error: BaseException) -> None:
            if node.id == "first_0":
                seen["other limit fired while the hook ran"] = other_stopped.wait(10)
                hook_done.set()

    def spin_until_cancelled() -> None:
        while not nextpipe.cancelled():
            time.sleep(0.01)

    class Flow(FlowSpec):
        @allow_failure()
        @timeout(seconds=0.2)
        @step
        def first(data: int) -> None:
            spin_until_cancelled()

        @allow_failure()
        @timeout(seconds=0.5)
        @step
        def second(data: int) -> None:
            spin_until_cancelled()
            other_stopped.set()

    flow = Flow("slow-hook", 1)
    flow.add_hook(SlowHook())
    flow.run()
    assert hook_done.wait(15)
    assert seen == {"other limit fired while the hook ran": True}
