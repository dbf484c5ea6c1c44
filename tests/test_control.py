"""Retries, time limits, tolerated failures and concurrency limits of Python steps (issue 13).

App steps against the platform emulator and local apps are in ``test_control_apps.py``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import nextpipe
from nextpipe import (
    Configuration,
    FlowSpec,
    allow_failure,
    app,
    concurrency,
    foreach,
    join,
    needs,
    optional,
    repeat,
    retry,
    step,
    timeout,
)
from nextpipe._policy import Deadlines, Timers, retry_delay, should_retry
from nextpipe.decorators import AllowFailure, Concurrency, Retry, Timeout
from nextpipe.errors import AppRunError, StepTimeoutError
from nextpipe.flow import STATUS_FAILED, STATUS_PENDING, STATUS_RUNNING, STATUS_SUCCEEDED, FlowDefinitionError
from nextpipe.threads import Job, Pool

WAIT = 10.0  # generous upper bound of every wait: a broken feature fails the test instead of hanging it


def nodes(flow: FlowSpec, function: Any) -> list[Any]:
    return flow.graph.get_step(function.step).nodes


class Counter:
    """Thread-safe call counts and the most calls in progress at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[Any, int] = {}
        self.active = 0
        self.most_active = 0

    def enter(self, key: Any) -> int:
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            return self.calls[key]

    def leave(self) -> None:
        with self.lock:
            self.active -= 1


# ---------------------------------------------------------------------------- declaration


def test_settings_are_attributes_with_reprs_in_any_order() -> None:
    class Flow(FlowSpec):
        @step
        def start(data: int) -> int:
            return data

        @concurrency(limit=2)
        @retry(attempts=4, delay=0.5, backoff=3.0, max_delay=10.0, jitter=0.1, retry_on=[ValueError, callable])
        @needs(predecessors=[start])
        @timeout(seconds=30)
        @allow_failure()
        @step
        def controlled(data: int) -> int:
            return data

    definition = Flow.controlled.step
    assert isinstance(definition.retry, Retry) and repr(definition.retry) == "StepRetry(4)"
    assert (definition.retry.attempts, definition.retry.delay, definition.retry.backoff) == (4, 0.5, 3.0)
    assert (definition.retry.max_delay, definition.retry.jitter) == (10.0, 0.1)
    assert definition.retry.retry_on == (ValueError, callable)
    assert isinstance(definition.timeout, Timeout) and repr(definition.timeout) == "StepTimeout(30)"
    assert isinstance(definition.allow_failure, AllowFailure) and repr(definition.allow_failure) == "StepAllowFailure()"
    assert isinstance(definition.concurrency, Concurrency) and repr(definition.concurrency) == "StepConcurrency(2)"
    assert repr(definition) == "Step(controlled, StepNeeds(start))"
    plain = Flow.start.step
    assert (plain.retry, plain.timeout, plain.allow_failure, plain.concurrency) == (None, None, None, None)
    assert nextpipe.decorators.retry is retry and nextpipe.decorators.allow_failure is allow_failure


def test_mermaid_is_unchanged_by_the_settings() -> None:
    class Plain(FlowSpec):
        @foreach()
        @step
        def fan(data: int) -> list[int]:
            return [data]

        @repeat(repetitions=2)
        @needs(predecessors=[fan])
        @step
        def work(item: int) -> int:
            return item

    class Controlled(FlowSpec):
        @foreach()
        @retry(attempts=2)
        @step
        def fan(data: int) -> list[int]:
            return [data]

        @timeout(seconds=1)
        @repeat(repetitions=2)
        @concurrency(limit=1)
        @needs(predecessors=[fan])
        @allow_failure()
        @step
        def work(item: int) -> int:
            return item

    assert Controlled("c", 1).graph._to_mermaid() == Plain("p", 1).graph._to_mermaid()


@pytest.mark.parametrize(
    ("decorator", "expected"),
    [
        (retry(attempts=0), "@retry needs a whole number of attempts of 1 or more"),
        (retry(attempts=-1), "got -1"),
        (retry(attempts=2.5), "got 2.5"),
        (retry(delay=-1.0), "@retry needs a delay of 0 seconds or more"),
        (retry(backoff=0.5), "@retry needs a backoff factor of 1 or more"),
        (retry(max_delay=-2), "max_delay"),
        (retry(jitter=1.5), "@retry needs a jitter between 0 and 1"),
        (retry(retry_on="AppRunError"), "retry_on takes exception types and predicates"),
        (retry(retry_on=[ValueError, int]), "got <class 'int'>"),
        (timeout(seconds=0), "@timeout needs a number of seconds above 0, got 0"),
        (timeout(seconds=-5), "got -5"),
        (timeout(seconds=float("nan")), "got nan"),
        (concurrency(limit=0), "@concurrency needs a whole-number limit of 1 or more, got 0"),
        (concurrency(limit=True), "got True"),
    ],
)
def test_bad_settings_are_refused_at_construction_naming_the_step(decorator: Any, expected: str) -> None:
    class Flow(FlowSpec):
        @decorator
        @step
        def solve(data: int) -> int:
            return data

    with pytest.raises(FlowDefinitionError, match=r"^Step solve: ") as raised:
        Flow("bad", 1)
    assert expected in str(raised.value)


def test_allow_failure_without_parentheses_and_below_step_are_refused() -> None:
    class Flow(FlowSpec):
        @allow_failure
        @step
        def solve(data: int) -> int:
            return data

    with pytest.raises(FlowDefinitionError, match=r"write @allow_failure\(\), not @allow_failure"):
        Flow("bad", 1)

    class Below(FlowSpec):
        @step
        @retry(attempts=2)
        def solve(data: int) -> int:
            return data

    with pytest.raises(FlowDefinitionError, match=r"^Step solve: @retry is applied to a function that is not a step"):
        Below("bad", 1)


@pytest.mark.parametrize(
    ("decorator", "usage"),
    [(retry, "@retry(attempts=3)"), (timeout, "@timeout(seconds=60)"), (concurrency, "@concurrency(limit=3)")],
)
def test_decorators_used_without_their_call_are_refused(decorator: Any, usage: str) -> None:
    class Flow(FlowSpec):
        @decorator
        @step
        def solve(data: int) -> int:
            return data

    with pytest.raises(FlowDefinitionError, match=r"^Step solve: ") as raised:
        Flow("bad", 1)
    assert f"is used without its call: write {usage}" in str(raised.value)


def test_bad_app_concurrency_is_refused() -> None:
    with pytest.raises(ValueError, match=r"app_concurrency\['solver'\] must be a whole number of 1 or more, got 0"):
        Configuration(app_concurrency={"solver": 0})
    conf = Configuration(app_concurrency={"solver": 2}, tolerate_failed_app_runs=True)
    assert Configuration.from_json(conf.to_json()) == conf


# ---------------------------------------------------------------------------- policy


def test_retry_delay_backoff_cap_and_jitter() -> None:
    policy = Retry(attempts=10, delay=1.0, backoff=2.0, max_delay=5.0, jitter=0.0, retry_on=(Exception,))
    assert [retry_delay(policy, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert retry_delay(Retry(2000, 1.0, 2.0, None, 0.0, ()), 1500) == float("inf")
    jittered = Retry(attempts=3, delay=10.0, backoff=1.0, max_delay=None, jitter=0.2, retry_on=())
    delays = {retry_delay(jittered, 1) for _ in range(200)}
    assert all(8.0 <= d <= 12.0 for d in delays) and len(delays) > 1


def test_retry_filter_takes_types_and_predicates() -> None:
    policy = Retry(3, 0, 1, None, 0, (AppRunError, lambda e: "429" in str(e)))
    assert should_retry(policy, AppRunError("ended failed", "app", "run-1", "failed"))
    assert should_retry(policy, RuntimeError("HTTP 429 Too Many Requests"))
    assert not should_retry(policy, ValueError("a bug in the step"))

    def broken(error: BaseException) -> bool:
        raise KeyError("oops")

    assert not should_retry(Retry(3, 0, 1, None, 0, (broken,)), RuntimeError("x"))


def test_timers_fire_in_order_and_stop() -> None:
    timers = Timers()
    fired: list[str] = []
    blocking, unblock, done = threading.Event(), threading.Event(), threading.Event()
    timers.call_later(0.0, lambda: (blocking.set(), unblock.wait(WAIT)))
    assert blocking.wait(WAIT)  # the timer thread is busy: the calls below all come due before it looks again
    timers.call_later(0.02, lambda: fired.append("late"))
    timers.call_later(0.0, lambda: fired.append("first"))
    timers.call_later(0.03, done.set)
    time.sleep(0.05)
    unblock.set()
    assert done.wait(WAIT)
    assert fired == ["first", "late"]
    timers.stop()
    timers.call_later(0.0, lambda: fired.append("after stop"))
    time.sleep(0.02)
    assert fired == ["first", "late"]


def test_deadlines_expire_every_item_in_order_after_its_limit() -> None:
    timers = Timers()
    expired: list[tuple[str, float]] = []
    all_due = threading.Event()

    def expire(item: tuple[str, float]) -> None:
        expired.append((item[0], time.monotonic() - item[1]))
        if len(expired) == 3:
            all_due.set()

    deadlines = Deadlines(timers, 0.05, expire)
    deadlines.add(("a", time.monotonic()))
    deadlines.add(("b", time.monotonic()))
    time.sleep(0.03)
    deadlines.add(("c", time.monotonic()))  # its limit ends after the timer thread served the first two
    assert all_due.wait(WAIT)
    assert [name for name, _ in expired] == ["a", "b", "c"]
    assert all(age >= 0.05 for _, age in expired)
    deadlines.add(("d", time.monotonic()))  # the queue ran empty: a new item arms the timer again
    deadline = time.monotonic() + WAIT
    while len(expired) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [name for name, _ in expired] == ["a", "b", "c", "d"]
    timers.stop()


def test_detached_worker_is_replaced_and_ends_after_its_job() -> None:
    pool = Pool(1, keep_finished=False)
    release = threading.Event()
    started = threading.Event()
    stuck_thread: list[threading.Thread] = []

    def stuck() -> None:
        stuck_thread.append(threading.current_thread())
        started.set()
        release.wait(WAIT)

    pool.run(Job(stuck, None, None))
    assert started.wait(WAIT)
    second = threading.Event()
    pool.run(Job(second.set, None, None))
    pool.detach(stuck_thread[0])
    assert second.wait(WAIT), "the detached worker's place was not given to a new one"
    release.set()
    stuck_thread[0].join(WAIT)
    assert not stuck_thread[0].is_alive()
    pool.shutdown(wait=True)


def test_run_next_job_runs_in_the_same_worker_without_waking_another() -> None:
    pool = Pool(4, keep_finished=False)
    threads: list[tuple[str, threading.Thread]] = []
    done = threading.Event()
    follow = Job(lambda: threads.append(("follow", threading.current_thread())), None, lambda _job: done.set())
    first = Job(
        lambda: threads.append(("first", threading.current_thread())),
        None,
        lambda job: pool.run_next(follow, job),
    )
    pool.run(first)
    assert done.wait(WAIT)
    assert [name for name, _ in threads] == ["first", "follow"]
    assert threads[0][1] is threads[1][1]
    assert pool.threads_started == 1  # nobody else was needed
    pool.join()  # the handed-over job was counted as outstanding until it ran


def test_run_next_job_of_a_detached_worker_goes_to_another_worker() -> None:
    pool = Pool(1, keep_finished=False)
    release = threading.Event()
    started = threading.Event()
    ran_in: list[threading.Thread] = []
    done = threading.Event()
    follow = Job(lambda: ran_in.append(threading.current_thread()), None, lambda _job: done.set())

    def stuck() -> None:
        started.set()
        release.wait(WAIT)

    stuck_job = Job(stuck, None, lambda job: pool.run_next(follow, job))
    pool.run(stuck_job)
    assert started.wait(WAIT)
    stuck_thread = next(t for t in threading.enumerate() if t.name.startswith("nextpipe-worker-"))
    pool.detach(stuck_thread)
    release.set()
    assert done.wait(WAIT)
    assert ran_in and ran_in[0] is not stuck_thread  # the detached worker ended after its own job
    stuck_thread.join(WAIT)
    assert not stuck_thread.is_alive()
    pool.join()


def test_run_next_job_is_dropped_after_shutdown() -> None:
    pool = Pool(1, keep_finished=False)
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []
    follow = Job(lambda: ran.append("follow"), None, None)

    def blocked() -> None:
        started.set()
        release.wait(WAIT)

    pool.run(Job(blocked, None, lambda job: pool.run_next(follow, job)))
    assert started.wait(WAIT)
    pool.shutdown(wait=False)
    release.set()
    pool.join()  # returns: the dropped job is no longer outstanding
    assert ran == []


# ---------------------------------------------------------------------------- retries


def test_each_failed_item_of_a_fan_out_is_retried_alone() -> None:
    counter = Counter()

    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data: int) -> list[int]:
            return list(range(data))

        @retry(attempts=3, delay=0.0)
        @needs(predecessors=[fan])
        @step
        def work(item: int) -> int:
            calls = counter.enter(item)
            counter.leave()
            if item % 3 == 0 and calls <= item // 3:  # item 0 never fails, 3 once, 6 twice
                raise RuntimeError(f"flaky {item} attempt {calls}")
            return item * 10

    flow = Flow("retry", 8)
    flow.run()
    assert flow.get_result(flow.work) == [i * 10 for i in range(8)]
    assert counter.calls == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1, 5: 1, 6: 3, 7: 1}
    assert all(n.status == STATUS_SUCCEEDED and n.error is None for n in nodes(flow, flow.work))


def test_retries_are_logged_with_attempt_and_reason(capsys: pytest.CaptureFixture[str]) -> None:
    class Flow(FlowSpec):
        @retry(attempts=3, delay=0.0)
        @step
        def flaky(data: list[int]) -> int:
            data.append(1)
            if len(data) < 3:
                raise ConnectionError(f"platform hiccup {len(data)}")
            return len(data)

    flow = Flow("retry", [])
    flow.run()
    assert flow.get_result(flow.flaky) == 3
    err = capsys.readouterr().err
    assert "[flaky_0] Attempt 1 of 3 failed (ConnectionError: platform hiccup 1); retrying in 0 s." in err
    assert "[flaky_0] Attempt 2 of 3 failed (ConnectionError: platform hiccup 2); retrying in 0 s." in err
    assert "[flaky_0] Attempt 3 of 3 started." in err


def test_exhausted_or_filtered_failures_fail_the_flow() -> None:
    counter = Counter()

    class Flow(FlowSpec):
        @retry(attempts=3, delay=0.0, retry_on=ConnectionError)
        @step
        def solve(data: str) -> None:
            counter.enter(data)
            counter.leave()
            raise (ConnectionError if data == "network" else ValueError)(f"{data} problem")

    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: network problem$"):
        Flow("exhausted", "network").run()
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: bug problem$") as raised:
        Flow("filtered", "bug").run()
    assert isinstance(raised.value.__cause__, ValueError)
    assert counter.calls == {"network": 3, "bug": 1}


def test_failing_flow_starts_no_retry_and_no_waiting_node() -> None:
    counter = Counter()
    failed = threading.Event()

    class Flow(FlowSpec):
        @retry(attempts=5, delay=0.3)
        @step
        def flaky(data: int) -> None:
            counter.enter("flaky")
            counter.leave()
            raise ConnectionError("try again")

        @foreach()
        @step
        def fan(data: int) -> list[int]:
            return list(range(4))

        @concurrency(limit=1)
        @needs(predecessors=[fan])
        @step
        def queued(item: int) -> None:
            counter.enter("queued")
            counter.leave()
            failed.wait(WAIT)

        @step
        def broken(data: int) -> None:
            time.sleep(0.05)  # after the first failure of flaky and the start of one queued node
            failed.set()
            raise ValueError("broken")

    flow = Flow("fail-fast", 1)
    with pytest.raises(RuntimeError, match="Step broken failed: broken"):
        flow.run()
    time.sleep(0.5)  # longer than the retry delay: a retry that was still due would have run by now
    assert counter.calls == {"flaky": 1, "queued": 1}
    flaky_node = nodes(flow, flow.flaky)[0]
    assert flaky_node.status == STATUS_FAILED and flaky_node.cancel


# ---------------------------------------------------------------------------- time limits


def test_python_step_at_its_limit_is_abandoned_and_its_thread_replaced() -> None:
    release = threading.Event()
    saw_cancel = threading.Event()

    class Flow(FlowSpec):
        @allow_failure()
        @timeout(seconds=0.1)
        @step
        def stuck(data: int) -> str:
            while not nextpipe.cancelled():
                time.sleep(0.005)
            saw_cancel.set()
            release.wait(WAIT)  # keeps its thread well after the flow ended
            return "late"

        @needs(predecessors=[stuck])
        @step
        def after(value: Any) -> Any:
            return value

        @step
        def independent(data: int) -> int:
            return data + 1

    flow = Flow("timeout", 1, conf=Configuration(thread_count=1))
    flow.run()  # with one worker thread: returns only if the stuck worker was replaced
    stuck = nodes(flow, flow.stuck)[0]
    assert saw_cancel.wait(WAIT)
    assert stuck.status == STATUS_FAILED and stuck.result is None
    assert stuck.error == "node stuck_0 ran longer than its time limit of 0.1 s"
    assert flow.get_result(flow.after) is None and flow.get_result(flow.independent) == 2
    release.set()
    time.sleep(0.05)
    assert stuck.result is None and stuck.status == STATUS_FAILED, "the late result was recorded"


def test_timed_out_attempt_is_retried() -> None:
    counter = Counter()

    class Flow(FlowSpec):
        @retry(attempts=2, delay=0.0, retry_on=StepTimeoutError)
        @timeout(seconds=0.1)
        @step
        def slow_once(data: int) -> int:
            if counter.enter("calls") == 1:
                while not nextpipe.cancelled():
                    time.sleep(0.005)
            counter.leave()
            return data

    flow = Flow("timeout-retry", 7)
    flow.run()
    assert flow.get_result(flow.slow_once) == 7 and counter.calls == {"calls": 2}
    deadline = time.monotonic() + WAIT
    while any(t.name == "nextpipe-timers" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not any(t.name == "nextpipe-timers" for t in threading.enumerate()), "the run's timer thread outlived it"


def test_timeout_without_tolerance_fails_the_flow_with_step_timeout_error() -> None:
    class Flow(FlowSpec):
        @timeout(seconds=0.05)
        @step
        def slow(data: int) -> None:
            while not nextpipe.cancelled():
                time.sleep(0.005)

    with pytest.raises(RuntimeError, match=r"^Flow failed: Step slow failed: node slow_0 ran longer") as raised:
        Flow("timeout", 1).run()
    assert isinstance(raised.value.__cause__, StepTimeoutError)


def test_cancelled_is_false_outside_steps_and_true_once_the_flow_failed() -> None:
    assert nextpipe.cancelled() is False
    seen = threading.Event()

    class Flow(FlowSpec):
        @step
        def long(data: int) -> None:
            deadline = time.monotonic() + WAIT
            while not nextpipe.cancelled() and time.monotonic() < deadline:
                time.sleep(0.005)
            if nextpipe.cancelled():
                seen.set()

        @step
        def broken(data: int) -> None:
            time.sleep(0.02)
            raise ValueError("broken")

    with pytest.raises(RuntimeError, match="Step broken failed"):
        Flow("cancel", 1).run()
    assert seen.wait(WAIT)


# ---------------------------------------------------------------------------- tolerated failures


def test_tolerated_failures_hand_none_to_joins_and_successors() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def solvers(data: int) -> list[str]:
            return ["greedy", "broken", "exact"]

        @allow_failure()
        @needs(predecessors=[solvers])
        @step
        def solve(name: str) -> dict[str, Any]:
            if name == "broken":
                raise ValueError("infeasible corner case")
            return {"solver": name, "cost": len(name)}

        @join()
        @needs(predecessors=[solve])
        @step
        def pick_best(results: list[list[Any]]) -> dict[str, Any]:
            return min((r[0] for r in results if r[0] is not None), key=lambda r: r["cost"])

        @allow_failure()
        @foreach()
        @step
        def bad_fan(data: int) -> list[int]:
            raise RuntimeError("no items today")

        @needs(predecessors=[bad_fan])
        @step
        def per_item(item: int) -> int:
            return item

    flow = Flow("ensemble", 1)
    flow.run()
    assert flow.get_result(flow.pick_best) == {"solver": "exact", "cost": 5}
    solve_nodes = nodes(flow, flow.solve)
    assert [n.status for n in solve_nodes] == [STATUS_SUCCEEDED, STATUS_FAILED, STATUS_SUCCEEDED]
    assert solve_nodes[1].error == "infeasible corner case" and solve_nodes[1].result is None
    assert nodes(flow, flow.bad_fan)[0].status == STATUS_FAILED
    assert nodes(flow, flow.per_item) == [] and flow.get_result(flow.per_item) == []


# ---------------------------------------------------------------------------- concurrency limits


def test_at_most_limit_nodes_run_and_the_others_wait_pending() -> None:
    counter = Counter()
    statuses: list[list[str]] = []

    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data: int) -> list[int]:
            return list(range(data))

        @concurrency(limit=3)
        @needs(predecessors=[fan])
        @step
        def work(item: int) -> int:
            counter.enter(item)
            statuses.append([n.status for n in flow.graph.get_step(Flow.work.step).nodes])
            time.sleep(0.01)
            counter.leave()
            return item

    flow = Flow("limit", 20)
    flow.run()
    assert flow.get_result(flow.work) == list(range(20))
    assert counter.most_active <= 3
    assert all(s.count(STATUS_RUNNING) <= 3 for s in statuses)
    assert any(STATUS_PENDING in s for s in statuses), "waiting nodes should show pending"


def test_waiting_nodes_hold_no_worker_thread() -> None:
    """With two workers, a limited step's waiting nodes must leave a thread to the step that unblocks it."""
    unblock = threading.Event()

    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data: int) -> list[int]:
            return list(range(5))

        @concurrency(limit=1)
        @needs(predecessors=[fan])
        @step
        def limited(item: int) -> bool:
            return unblock.wait(WAIT)

        @step
        def slow_start(data: int) -> None:
            time.sleep(0.05)  # the limited nodes are created and queued first

        @needs(predecessors=[slow_start])
        @step
        def unblocker(value: Any) -> None:
            unblock.set()

    flow = Flow("starvation", 1, conf=Configuration(thread_count=2))
    flow.run()
    assert flow.get_result(flow.limited) == [True] * 5


def test_step_limit_and_retry_compose() -> None:
    counter = Counter()

    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data: int) -> list[int]:
            return list(range(10))

        @retry(attempts=2, delay=0.0)
        @concurrency(limit=2)
        @needs(predecessors=[fan])
        @step
        def work(item: int) -> int:
            calls = counter.enter(item)
            time.sleep(0.005)
            counter.leave()
            if calls == 1 and item % 2:
                raise ConnectionError("odd items fail once")
            return item

    flow = Flow("limit-retry", 1)
    flow.run()
    assert flow.get_result(flow.work) == list(range(10))
    assert counter.most_active <= 2 and sum(counter.calls.values()) == 15


def test_optional_skip_and_rerun_with_controlled_steps() -> None:
    counter = Counter()

    class Flow(FlowSpec):
        @optional(condition=lambda s: False)
        @retry(attempts=2)
        @step
        def skipped(data: int) -> int:
            return data

        @retry(attempts=2, delay=0.0)
        @step
        def flaky(data: int) -> int:
            if counter.enter("flaky") % 2:
                raise ConnectionError("odd calls fail")
            return data

    flow = Flow("rerun", 3)
    flow.run()
    flow.run()  # a second run starts from scratch with its own controller
    assert flow.get_result(flow.flaky) == 3 and flow.get_result(flow.skipped) is None
    assert counter.calls == {"flaky": 4}


def test_app_step_settings_need_no_run_to_check() -> None:
    class Flow(FlowSpec):
        @retry(attempts=2, retry_on=AppRunError)
        @timeout(seconds=60)
        @app(app_id="solver", bypass_result={"ok": True})
        @step
        def solve() -> None:
            pass

    flow = Flow("bypass", {"x": 1}, conf=Configuration(app_concurrency={"solver": 1}))
    flow.run()
    assert flow.get_result(flow.solve) == {"ok": True}


def test_hooks_see_each_retry_and_one_outcome_per_node() -> None:
    from nextpipe.hooks import FlowHooks

    events: list[tuple[Any, ...]] = []

    class Recorder(FlowHooks):
        def node_start(self, flow: Any, node: Any) -> None:
            events.append(("start", node.id, node.status))

        def node_retry(self, flow: Any, node: Any, error: BaseException, attempt: int, delay: float) -> None:
            events.append(("retry", node.id, type(error).__name__, attempt, delay, node.status))

        def node_success(self, flow: Any, node: Any) -> None:
            events.append(("success", node.id, node.result))

        def node_failure(self, flow: Any, node: Any, error: BaseException) -> None:
            events.append(("failure", node.id, str(error), node.status))

    tries: list[int] = []

    class Flow(FlowSpec):
        @retry(attempts=3, delay=0.0, backoff=1.0)
        @step
        def flaky(data: int) -> int:
            tries.append(1)
            if len(tries) < 3:
                raise ConnectionError("again")
            return data

        @allow_failure()
        @step
        def broken(data: int) -> None:
            raise ValueError("tolerated")

    flow = Flow("hooks", 4)
    flow.add_hook(Recorder())
    flow.run()
    flaky = [e for e in events if e[1] == "flaky_0"]
    assert flaky == [
        ("start", "flaky_0", STATUS_RUNNING),
        ("retry", "flaky_0", "ConnectionError", 1, 0.0, STATUS_RUNNING),
        ("retry", "flaky_0", "ConnectionError", 2, 0.0, STATUS_RUNNING),
        ("success", "flaky_0", 4),
    ]
    assert [e for e in events if e[1] == "broken_0"][-1] == ("failure", "broken_0", "tolerated", STATUS_FAILED)
    node = nodes(flow, flow.flaky)[0]
    assert node.duration is not None and node.duration >= 0
