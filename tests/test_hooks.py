"""Hooks on a run's events (nextpipe.hooks) and node timing: registration, dispatch, order, threads, errors."""

from __future__ import annotations

import datetime
import threading
import time

import pytest

import nextpipe.reporting
from nextpipe import FlowSpec, foreach, join, needs, optional, step
from nextpipe.constants import STATUS_FAILED, STATUS_SUCCEEDED
from nextpipe.hooks import EVENTS, FlowHooks, RunHooks, register, registered, unregister

WAIT = 10  # seconds: upper bound for events, only hit when something is broken


class Recorder(FlowHooks):
    """Records every event as (event, node id or flow name, thread name, extra)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.lock = threading.Lock()

    def _add(self, *event) -> None:
        with self.lock:
            self.events.append((*event, threading.current_thread().name))

    def flow_start(self, flow):
        self._add("flow_start", flow.name)

    def flow_end(self, flow, error):
        self._add("flow_end", flow.name, error)

    def node_start(self, flow, node):
        self._add("node_start", node.id, node.status, node.started_at)

    def node_skip(self, flow, node):
        self._add("node_skip", node.id)

    def node_success(self, flow, node):
        self._add("node_success", node.id, node.result, node.finished_at)

    def node_failure(self, flow, node, error):
        self._add("node_failure", node.id, node.error, error)

    def names(self) -> list[str]:
        return [e[0] for e in self.events]

    def of(self, name: str) -> list[tuple]:
        return [e for e in self.events if e[0] == name]

    def position(self, name: str, node_id: str) -> int:
        return next(i for i, e in enumerate(self.events) if e[0] == name and e[1] == node_id)


class Pipeline(FlowSpec):
    @foreach()
    @step
    def fan(data):
        return [1, 2, 3]

    @needs(predecessors=[fan])
    @step
    def work(item):
        time.sleep(0.01)
        return item * 10

    @optional(condition=lambda _step: False)
    @needs(predecessors=[work])
    @step
    def skipped(value):
        return value

    @join()
    @needs(predecessors=[work, skipped])
    @step
    def collect(elements):
        return sorted(e[0] for e in elements)


def test_flow_hook_sees_every_event_in_order_in_the_thread_where_it_happens():
    flow = Pipeline("pipeline", None)
    recorder = Recorder()
    flow.add_hook(recorder)
    flow.add_hook(recorder)  # again: no second call
    flow.run()

    events = recorder.events
    assert events[0][:2] == ("flow_start", "pipeline")
    assert events[-1][:3] == ("flow_end", "pipeline", None)
    assert recorder.names().count("flow_start") == recorder.names().count("flow_end") == 1
    node_ids = ["fan_0", "work_0", "work_1", "work_2", "collect_0"]
    assert sorted(e[1] for e in recorder.of("node_start")) == sorted(node_ids)
    assert sorted(e[1] for e in recorder.of("node_success")) == sorted(node_ids)
    assert [e[1] for e in recorder.of("node_skip")] == ["skipped_0"]
    assert recorder.of("node_failure") == []
    # Flow events in the calling thread, node start and success in the node's worker.
    assert events[0][-1] == events[-1][-1] == threading.current_thread().name
    for event in recorder.of("node_start") + recorder.of("node_success"):
        assert event[-1] == f"nextpipe-{event[1]}"
    # What the hooks see: a started node is running and has its start time; a finished one its result.
    for _, node_id, status, started_at, _thread in recorder.of("node_start"):
        assert status == "running" and started_at is not None, node_id
    assert {e[1]: e[2] for e in recorder.of("node_success")}["collect_0"] == [10, 20, 30]
    # A node's success is reported before any node it feeds starts.
    for work in ("work_0", "work_1", "work_2"):
        assert recorder.position("node_start", work) < recorder.position("node_success", work)
        assert recorder.position("node_success", "fan_0") < recorder.position("node_start", work)
        assert recorder.position("node_success", work) < recorder.position("node_start", "collect_0")
    assert recorder.position("node_skip", "skipped_0") < recorder.position("node_start", "collect_0")


def test_nodes_record_start_finish_and_duration():
    class Timed(FlowSpec):
        @step
        def nap(data):
            time.sleep(0.05)
            return data

        @optional(condition=lambda _step: False)
        @needs(predecessors=[nap])
        @step
        def skipped(value):
            return value

    flow = Timed("timed", 1)
    before = datetime.datetime.now(datetime.timezone.utc)
    flow.run()
    after = datetime.datetime.now(datetime.timezone.utc)
    (nap,) = flow.graph.get_step(Timed.nap.step).nodes
    (skipped,) = flow.graph.get_step(Timed.skipped.step).nodes
    assert nap.started_at.tzinfo == datetime.timezone.utc
    assert before <= nap.started_at <= nap.finished_at <= after
    assert nap.duration >= 0.05  # the step slept that long
    assert nap.duration <= (nap.finished_at - nap.started_at).total_seconds() + 0.01
    assert skipped.duration == 0.0
    assert skipped.started_at == skipped.finished_at and nap.finished_at <= skipped.started_at <= after
    assert nap.run_created_at is None and nap.run_finished_at is None  # set by app nodes only


def test_failure_reaches_node_failure_before_flow_end():
    class Failing(FlowSpec):
        @step
        def boom(data):
            raise ValueError("kaboom")

    flow = Failing("failing", None)
    recorder = Recorder()
    flow.add_hook(recorder)
    with pytest.raises(RuntimeError, match="^Flow failed: Step boom failed: kaboom$") as raised:
        flow.run()
    assert recorder.names() == ["flow_start", "node_start", "node_failure", "flow_end"]
    _, node_id, node_error, error, thread = recorder.of("node_failure")[0]
    assert (node_id, node_error, thread) == ("boom_0", "kaboom", "nextpipe-boom_0")
    assert isinstance(error, ValueError) and str(error) == "kaboom"
    assert recorder.of("flow_end")[0][2] is raised.value
    node = flow.graph.get_step(Failing.boom.step).nodes[0]
    assert node.status == STATUS_FAILED and node.finished_at >= node.started_at and node.duration >= 0


def test_global_hooks_run_first_for_every_flow_until_unregistered():
    class One(FlowSpec):
        @step
        def a(data):
            return 1

    class Two(FlowSpec):
        @step
        def b(data):
            return 2

    calls = []

    class Tagged(FlowHooks):
        def __init__(self, tag):
            self.tag = tag

        def node_success(self, flow, node):
            calls.append((self.tag, node.id))

    first_global, second_global, own = Tagged("global 1"), Tagged("global 2"), Tagged("own")
    register(first_global)
    register(second_global)
    register(first_global)  # again: no second call
    try:
        assert registered()[-2:] == [first_global, second_global]
        one = One("one", None)
        one.add_hook(own)
        one.add_hook(second_global)  # registered globally too: still called once, at its global place
        one.run()
        Two("two", None).run()
    finally:
        unregister(first_global)
        unregister(second_global)
    assert calls == [("global 1", "a_0"), ("global 2", "a_0"), ("own", "a_0"), ("global 1", "b_0"), ("global 2", "b_0")]
    assert first_global not in registered() and second_global not in registered()
    calls.clear()
    One("one again", None).run()
    assert calls == []
    unregister(first_global)  # not registered: nothing happens


def test_default_hooks_of_reporting_run_last(monkeypatch):
    order = []

    class Named(FlowHooks):
        def __init__(self, name):
            self.name = name

        def flow_start(self, flow):
            order.append(self.name)

    monkeypatch.setattr(nextpipe.reporting, "default_hooks", lambda flow: [Named(f"default for {flow.name}")])
    global_hook = Named("global")
    register(global_hook)
    try:
        flow = Pipeline("p", None)
        flow.add_hook(Named("own"))
        flow.run()
    finally:
        unregister(global_hook)
    assert order == ["global", "own", "default for p"]


def test_a_raising_hook_is_logged_once_per_event_and_never_fails_the_flow(capfd):
    class Broken(FlowHooks):
        def node_start(self, flow, node):
            raise KeyError("distinctive start problem")

        def node_success(self, flow, node):
            raise ValueError("distinctive success problem")

    recorder = Recorder()
    flow = Pipeline("broken hooks", None)
    flow.add_hook(Broken())
    flow.add_hook(recorder)  # a later hook still gets every event
    capfd.readouterr()
    flow.run()
    err = capfd.readouterr().err
    assert flow.get_result(flow.collect) == [10, 20, 30]
    assert len(recorder.of("node_start")) == 5 and len(recorder.of("node_success")) == 5
    assert err.count("[nextpipe] Hook Broken.node_start raised KeyError") == 1
    assert err.count("[nextpipe] Hook Broken.node_success raised ValueError") == 1
    assert "KeyError: 'distinctive start problem'" in err  # with its traceback
    assert "ValueError: distinctive success problem" in err


def test_only_overriding_methods_are_dispatched():
    class StartOnly(FlowHooks):
        def node_start(self, flow, node):
            pass

    class DuckTyped:  # not a FlowHooks subclass: its methods are enough
        def flow_end(self, flow, error):
            pass

    hooks = RunHooks([StartOnly(), FlowHooks(), DuckTyped()])
    assert len(hooks.node_start) == 1 and len(hooks.flow_end) == 1
    for event in ("flow_start", "node_skip", "node_success", "node_failure", "node_retry"):
        assert getattr(hooks, event) == [], event
    assert not any(getattr(RunHooks(), event) for event in EVENTS)


def test_node_retry_dispatch():
    seen = []

    class Retries(FlowHooks):
        def node_retry(self, flow, node, error, attempt, delay):
            seen.append((flow, node, str(error), attempt, delay))

    hooks = RunHooks([Retries()])
    hooks.emit("node_retry", "flow", "node", OSError("flaky"), 1, 0.5)
    assert seen == [("flow", "node", "flaky", 1, 0.5)]


@pytest.mark.parametrize("not_a_hook", [object(), FlowHooks, 42])
def test_objects_without_event_methods_are_refused(not_a_hook):
    with pytest.raises(TypeError, match="is not a hook: pass an instance of a nextpipe.hooks.FlowHooks subclass"):
        register(not_a_hook)
    with pytest.raises(TypeError, match="is not a hook"):
        Pipeline("p", None).add_hook(not_a_hook)
    assert not_a_hook not in registered()


def test_each_flow_sees_only_its_own_events_when_two_run_at_once():
    barrier = threading.Barrier(2, timeout=WAIT)

    class Meeting(FlowSpec):
        @step
        def meet(data):
            barrier.wait()  # both flows are running at this point
            return data

        @needs(predecessors=[meet])
        @step
        def double(data):
            return data * 2

    flows = [Meeting("left", 1), Meeting("right", 100)]
    recorders = [Recorder(), Recorder()]
    for flow, recorder in zip(flows, recorders, strict=True):
        flow.add_hook(recorder)
    threads = [threading.Thread(target=flow.run) for flow in flows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert [flow.get_result(flow.double) for flow in flows] == [2, 200]
    for flow, recorder in zip(flows, recorders, strict=True):
        assert {e[1] for e in recorder.of("flow_start") + recorder.of("flow_end")} == {flow.name}
        assert [(e[1], e[2]) for e in recorder.of("node_success")] == [
            ("meet_0", flow.input),
            ("double_0", flow.input * 2),
        ]
    assert all(n.status == STATUS_SUCCEEDED for flow in flows for s in flow.graph.steps for n in s.nodes)
