"""
Reliability: failures while other nodes run, a flaky or slow platform, and random DAGs under stress.

Final node states after ``run()`` (decided here, and asserted by every test of this file):

- a step that never started (its predecessors did not all finish) has no nodes at all;
- every node that exists ends ``succeeded`` or ``failed`` — never ``pending`` or ``running``. A node whose step
  started but that was still queued or running when the flow failed is marked ``failed`` (canceled) without its
  result being recorded, and a queued one never runs;
- a step is ``done`` only when all its nodes succeeded, and then ``get_result`` gives every node's result.
"""

from __future__ import annotations

import importlib.util
import itertools
import pathlib
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import (  # noqa: E402
    FLOW_PATH,
    fast_polling,
    flow_puts,
    last_graph,
    nextpipe_threads,
    nodes_by_id,
    wait_for_no_nextpipe_threads,
)
from platform_emulator import PlatformEmulator  # noqa: E402

from nextpipe import Configuration, FlowSpec, app, foreach, needs, step  # noqa: E402
from nextpipe.flow import STATUS_FAILED, STATUS_SUCCEEDED  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

FINAL = {STATUS_SUCCEEDED, STATUS_FAILED}


def assert_final_states(flow: FlowSpec) -> None:
    """Every node of the flow is succeeded or failed; done steps have all nodes succeeded."""
    for flow_step in flow.graph.steps:
        for node in flow_step.nodes:
            assert node.status in FINAL, f"{node.id} ended {node.status}"
        if flow_step.done:
            assert all(n.status == STATUS_SUCCEEDED for n in flow_step.nodes), flow_step


def assert_graph_final(graph: dict[str, Any], flow: FlowSpec) -> None:
    """The uplink's last document shows the same final states as the flow."""
    sent = {n["id"]: n["status"] for n in graph["nodes"]}
    local = {n.id: n.status for s in flow.graph.steps for n in s.nodes}
    assert sent == local
    assert set(sent.values()) <= FINAL


# ---------------------------------------------------------------------------------------------------------------------
# A failing step while others run
# ---------------------------------------------------------------------------------------------------------------------


def test_failure_while_others_run_leaves_no_node_running(workflow_env: PlatformEmulator, fast_uplink: float) -> None:
    emu = workflow_env
    emu.hold_runs(True, app_id="slow")
    release = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    class BusyFlow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return list(range(8))

        @needs(predecessors=[fan])
        @step
        def work(item):
            with lock:
                started.append(item)
            if item == 2:
                emu.wait_for(lambda: len(emu.runs_for("slow")) == 1, timeout=5)
                time.sleep(0.05)  # the other workers are now blocked below
                raise ValueError("work item 2 broke")
            release.wait(5)
            return item

        @needs(predecessors=[work])
        @step
        def after(item):
            return item

        @app(app_id="slow", polling_options=fast_polling(max_duration=30))
        @step
        def slow():
            pass

    before = set(nextpipe_threads())
    flow = BusyFlow("busy", {"x": 1}, conf=Configuration(thread_count=4))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step work failed: work item 2 broke$"):
        flow.run()
    assert time.monotonic() - t0 < 3
    release.set()

    assert_final_states(flow)
    work_nodes = flow.graph.get_step(flow.work.step).nodes
    assert len(work_nodes) == 8
    assert all(n.status == STATUS_FAILED for n in work_nodes)  # the failing one, the running and the queued ones
    assert all(n.result is None for n in work_nodes)
    assert flow.graph.get_step(flow.after.step).nodes == []  # never started
    assert flow.get_result(flow.fan) == list(range(8))
    assert flow.get_result(flow.work) is None and flow.get_result(flow.after) is None
    slow_node = flow.graph.get_step(flow.slow.step).nodes[0]
    assert slow_node.status == STATUS_FAILED and slow_node.cancel
    (run,) = emu.runs_for("slow")
    assert emu.run(run.run_id).canceled

    assert_graph_final(last_graph(emu), flow)
    assert wait_for_no_nextpipe_threads(ignore=before) == []
    # At most 3 work nodes ran (4 threads, one polling the slow run); the queued ones never ran, not even later.
    assert 2 in started and len(started) == len(set(started)) <= 3


# ---------------------------------------------------------------------------------------------------------------------
# A flaky or slow platform
# ---------------------------------------------------------------------------------------------------------------------


class ChainFlow(FlowSpec):
    @step
    def a(data):
        time.sleep(0.1)
        return data + 1

    @needs(predecessors=[a])
    @step
    def b(data):
        time.sleep(0.1)
        return data * 2

    @needs(predecessors=[b])
    @step
    def c(data):
        time.sleep(0.1)
        return data - 3


@pytest.mark.parametrize("fault", ["http-500", "connection-drop"])
def test_platform_errors_for_a_while_then_recovery(
    workflow_env: PlatformEmulator, fast_uplink: float, fault: str
) -> None:
    emu = workflow_env
    if fault == "http-500":
        emu.fail_next(4, status=500, path_prefix="/v1/internal/")
    else:
        emu.drop_next(4, path_prefix="/v1/internal/")
    flow = ChainFlow("flaky", 1)
    started = time.monotonic()
    flow.run()
    assert time.monotonic() - started < 5
    assert flow.get_result(flow.c) == 1

    statuses = [r.status for r in flow_puts(emu)]
    failed = 500 if fault == "http-500" else 0
    assert statuses[:4] == [failed] * 4
    assert statuses[-1] == 204
    assert flow.uplink.failed_updates == 0
    graph = last_graph(emu)
    assert {n["id"]: n["status"] for n in graph["nodes"]} == {
        "a_0": "succeeded",
        "b_0": "succeeded",
        "c_0": "succeeded",
    }


def test_slow_platform_does_not_slow_the_flow_much(workflow_env: PlatformEmulator, fast_uplink: float) -> None:
    emu = workflow_env
    emu.set_delay(1.0, FLOW_PATH)
    flow = ChainFlow("slow platform", 5)
    started = time.monotonic()
    flow.run()
    elapsed = time.monotonic() - started
    assert flow.get_result(flow.c) == 9
    assert elapsed < 4, f"run() took {elapsed:.2f} s with a platform answering in 1 s"
    graph = last_graph(emu)
    assert {n["status"] for n in graph["nodes"]} == {"succeeded"} and len(graph["nodes"]) == 3
    emu.set_delay(0, FLOW_PATH)


def test_platform_unreachable_when_the_flow_ends_loses_no_final_state(
    workflow_env: PlatformEmulator, fast_uplink: float
) -> None:
    emu = workflow_env
    restarted = threading.Event()

    def come_back() -> None:
        time.sleep(0.6)
        emu.start_listening()
        restarted.set()

    class OutageFlow(FlowSpec):
        @step
        def a(data):
            emu.wait_for(lambda: len(emu.flow_updates) >= 1, timeout=5)
            return data + 1

        @needs(predecessors=[a])
        @step
        def b(data):
            emu.stop_listening()  # the platform goes away right before the flow ends ...
            threading.Thread(target=come_back, daemon=True).start()  # ... and comes back 0.6 s later
            return data * 2

    flow = OutageFlow("outage", 1)
    started = time.monotonic()
    flow.run()
    assert time.monotonic() - started < 5
    assert restarted.wait(5)
    assert flow.get_result(flow.b) == 4
    nodes = nodes_by_id(last_graph(emu))
    assert {n_id: n["status"] for n_id, n in nodes.items()} == {"a_0": "succeeded", "b_0": "succeeded"}


def test_hanging_platform_does_not_hold_the_flow_for_long(workflow_env: PlatformEmulator, fast_uplink: float) -> None:
    """A platform that never answers: the flow's end may wait for the final state, but only a few seconds."""
    emu = workflow_env
    emu.set_delay(60, FLOW_PATH)  # lifted when the emulator stops (delayed requests are woken up)
    flow = ChainFlow("hanging platform", 5)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            flow.run()
        except BaseException as error:
            errors.append(error)

    runner = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    runner.start()
    runner.join(8)
    elapsed = time.monotonic() - started
    assert not runner.is_alive(), "run() still waits on the platform after 8 s"
    assert errors == [] and flow.get_result(flow.c) == 9
    assert elapsed < 8


# ---------------------------------------------------------------------------------------------------------------------
# Random DAGs
# ---------------------------------------------------------------------------------------------------------------------

HELPERS = """
MODULUS = 100003


def _flat(value):
    if isinstance(value, list):
        return sum(_flat(v) for v in value)
    return value


def _value(index, args):
    return (sum(_flat(a) for a in args) * 31 + index) % MODULUS


def _check(name, fail_mod, value):
    if fail_mod and value % fail_mod == 0:
        raise ValueError(f"injected failure in {name} for {value}")
    return value


def _items(value, count):
    return [(value + i) % MODULUS for i in range(count)]
"""


@dataclass
class StepSpec:
    name: str
    index: int
    kind: str  # plain, foreach, join, repeat
    preds: list[str]
    fanout: int = 0
    reps: int = 1
    fail_mod: int = 0
    nodes: int = 1


@dataclass
class DagSpec:
    steps: list[StepSpec] = field(default_factory=list)
    threads: int = 0

    @property
    def total_nodes(self) -> int:
        return sum(s.nodes for s in self.steps)


def generate_dag(rng: random.Random, inject_failures: bool) -> DagSpec:
    """A random DAG of 200 to 2000 nodes, with foreach fan-outs, joins and repeats."""
    target = rng.randint(200, 2000)
    dag = DagSpec(threads=rng.choice([0, 1, 3, 8, 32]))
    by_name: dict[str, StepSpec] = {}

    def contribution(pred: StepSpec) -> int:
        if pred.kind == "foreach":
            return pred.fanout
        if pred.kind == "repeat":
            return 1
        return pred.nodes

    for _ in range(500):
        if dag.total_nodes >= target or len(dag.steps) >= 60:
            break
        index = len(dag.steps)
        name = f"s{index}"
        preds: list[str] = []
        if dag.steps and rng.random() < 0.95:
            count = 1 if rng.random() < 0.7 or len(dag.steps) < 2 else 2
            preds = rng.sample([s.name for s in dag.steps], count)
        incoming = 1
        for p in preds:
            incoming *= contribution(by_name[p])
        kind = rng.choices(["plain", "foreach", "join", "repeat"], weights=[5, 3, 2, 1])[0]
        if kind == "foreach" and incoming != 1:
            kind = "plain"  # a foreach step must have one node, or its successors fail
        if kind == "join" and not preds:
            kind = "plain"
        spec = StepSpec(name=name, index=index, kind=kind, preds=preds)
        if kind == "foreach":
            spec.fanout = rng.randint(2, 60)
        if kind == "repeat":
            spec.reps = rng.randint(2, 3)
        spec.nodes = 1 if kind == "join" else incoming * spec.reps
        if spec.nodes > 1000 or dag.total_nodes + spec.nodes > 2000:
            continue
        dag.steps.append(spec)
        by_name[name] = spec
    if inject_failures:
        for spec in rng.sample(dag.steps[1:], min(2, len(dag.steps) - 1)):
            spec.fail_mod = rng.choice([3, 7, 50])
    return dag


def dag_source(dag: DagSpec) -> str:
    lines = [
        "from nextpipe import FlowSpec, foreach, join, needs, repeat, step",
        HELPERS,
        "",
        "class RandomFlow(FlowSpec):",
    ]
    for s in dag.steps:
        lines.append("")
        if s.kind == "foreach":
            lines.append("    @foreach()")
        elif s.kind == "join":
            lines.append("    @join()")
        elif s.kind == "repeat":
            lines.append(f"    @repeat(repetitions={s.reps})")
        if s.preds:
            lines.append(f"    @needs(predecessors=[{', '.join(s.preds)}])")
        lines.append("    @step")
        params = ["data"] if not s.preds or s.kind == "join" else [f"a{i}" for i in range(len(s.preds))]
        lines.append(f"    def {s.name}({', '.join(params)}):")
        lines.append(f"        value = _check({s.name!r}, {s.fail_mod}, _value({s.index}, [{', '.join(params)}]))")
        if s.kind == "foreach":
            lines.append(f"        return _items(value, {s.fanout})")
        else:
            lines.append("        return value")
    return "\n".join(lines) + "\n"


def reference(dag: DagSpec, module: Any, flow_input: int) -> tuple[dict[str, list[Any]], set[str]]:
    """Every node's result per SPEC section 3, evaluated sequentially, and the steps with failing nodes."""
    by_name = {s.name: s for s in dag.steps}
    results: dict[str, list[Any]] = {}
    failing: set[str] = set()
    for s in dag.steps:
        if not s.preds:
            elements: list[tuple[Any, ...]] = [(flow_input,)]
        else:
            lists = []
            for p in s.preds:
                pred = by_name[p]
                if pred.kind == "foreach":
                    lists.append(results[p][0])
                elif pred.kind == "repeat":
                    lists.append([results[p]])
                else:
                    lists.append(results[p])
            elements = list(itertools.product(*lists))
        inputs = [([list(e) for e in elements],)] if s.kind == "join" else elements
        inputs = list(inputs) * s.reps
        values = []
        for args in inputs:
            value = module._value(s.index, list(args))
            if s.fail_mod and value % s.fail_mod == 0:
                failing.add(s.name)
            values.append(module._items(value, s.fanout) if s.kind == "foreach" else value)
        assert len(values) == s.nodes
        results[s.name] = values
    return results, failing


def import_source(source: str, directory: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"random_dag_{uuid.uuid4().hex}"
    path = directory / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", range(20))
def test_random_dags(seed: int, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    dag = generate_dag(rng, inject_failures=seed % 2 == 1)
    assert 100 <= dag.total_nodes <= 2000
    module = import_source(dag_source(dag), tmp_path, monkeypatch)
    flow_input = rng.randint(0, 1000)
    expected, failing = reference(dag, module, flow_input)

    before = set(nextpipe_threads())
    flow = module.RandomFlow(
        f"random {seed}", flow_input, conf=Configuration(thread_count=dag.threads, max_step_inputs=5000)
    )
    error: BaseException | None = None
    try:
        flow.run()
    except RuntimeError as raised:
        error = raised

    if failing:
        assert error is not None, "a node should have failed"
        message = str(error)
        assert message.startswith("Flow failed: Step "), message
        failed_step = message.split()[3]
        assert failed_step in failing, (message, failing)
        assert f"injected failure in {failed_step} for " in message
        failed_nodes = [n for n in flow.graph.get_step(getattr(flow, failed_step).step).nodes if n.error]
        assert any(n.error.startswith(f"injected failure in {failed_step}") for n in failed_nodes)
    else:
        assert error is None, error

    assert_final_states(flow)
    done_steps = 0
    for flow_step in flow.graph.steps:
        name = flow_step.definition.get_id()
        result = flow.get_result(getattr(flow, name))
        if flow_step.done:
            done_steps += 1
            values = [n.result for n in flow_step.nodes]
            assert values == expected[name], name
            assert result == (values[0] if len(values) == 1 else values)
        else:
            assert error is not None
            assert result is None
        for node in flow_step.nodes:  # also the nodes that finished in a step that did not
            if node.status == STATUS_SUCCEEDED:
                assert node.result == expected[name][node.index], node.id
            else:
                assert node.result is None and node.error, node.id
    if error is None:
        assert done_steps == len(dag.steps)
        assert sum(len(s.nodes) for s in flow.graph.steps) == dag.total_nodes
    assert wait_for_no_nextpipe_threads(ignore=before) == []
