"""SPEC section 4: running a flow, results, failures, logging, Mermaid, the graph objects and the thread pool."""

from __future__ import annotations

import ast
import base64
import inspect
import os
import signal
import threading
import time
from importlib.metadata import version

import pytest

import nextpipe
from nextpipe import Configuration, FlowSpec, app, foreach, join, log, needs, repeat, step
from nextpipe.config import Configuration as ConfigConfiguration
from nextpipe.decorators import Needs, Step
from nextpipe.flow import (
    STATUS_FAILED,
    STATUS_PENDING,
    STATUS_SUCCEEDED,
    FlowGraph,
    FlowNode,
    FlowStep,
    Runner,
    StepVisitor,
)
from nextpipe.graph import check_cycle
from nextpipe.threads import DEFAULT_MAX_THREADS, Job, Pool
from nextpipe.uplink import UplinkClient
from nextpipe.utils import THREAD_NAME_PREFIX, log_internal

WAIT = 10  # seconds: generous upper bound for events and barriers, only hit when something is broken


# ---------------------------------------------------------------------------------------------------------------------
# Flows shared by several tests
# ---------------------------------------------------------------------------------------------------------------------


class ChainFlow(FlowSpec):
    @step
    def a(data):
        """Adds one."""
        return data + 1

    @needs(predecessors=[a])
    @step
    def b(data):
        return data * 2

    @needs(predecessors=[b])
    @step
    def c(data):
        return data - 3


class ForeachStepJoinFlow(FlowSpec):
    @foreach()
    @step
    def fan(data):
        return [data, data + 1, data + 2]

    @needs(predecessors=[fan])
    @step
    def work(item):
        return item * 10

    @join()
    @needs(predecessors=[work])
    @step
    def collect(items):
        return [i[0] for i in items]


class RepeatFlow(FlowSpec):
    @repeat(repetitions=2)
    @step
    def rep(data):
        return data

    @needs(predecessors=[rep])
    @step
    def after(results):
        return sum(results)

    @join()
    @needs(predecessors=[rep])
    @step
    def gather(items):
        return items


class StepIntoJoinFlow(FlowSpec):
    @step
    def first(data):
        return data

    @join()
    @needs(predecessors=[first])
    @step
    def gather(items):
        return items


class ForeachIntoJoinFlow(FlowSpec):
    @foreach()
    @step
    def fan(data):
        return [1, 2]

    @join()
    @needs(predecessors=[fan])
    @step
    def gather(items):
        return items


class FanOutFlow(FlowSpec):
    @step
    def a(data):
        return data

    @needs(predecessors=[a])
    @step
    def b(data):
        return data

    @needs(predecessors=[a])
    @step
    def c(data):
        return data


def plain_function(x):
    return x


# ---------------------------------------------------------------------------------------------------------------------
# FlowSpec attributes and get_result
# ---------------------------------------------------------------------------------------------------------------------


def test_flowspec_attributes():
    flow = ChainFlow("my-chain", 5)
    assert flow.name == "my-chain"
    assert flow.input == 5
    assert isinstance(flow.config, Configuration)
    assert ConfigConfiguration is Configuration
    assert flow.config.thread_count == 0
    assert flow.config.max_step_inputs == 50
    assert isinstance(flow.graph, FlowGraph)
    assert flow.graph.flow_spec is flow
    assert isinstance(flow.uplink, UplinkClient)
    assert flow.uplink.active is False
    assert isinstance(flow.runner, Runner)
    assert repr(flow) == "Flow(my-chain)"
    # No Nextmv client for a pure-Python flow: neither at construction nor after running.
    assert flow._client is None
    flow.run()
    assert flow._client is None


def test_flowspec_keeps_given_conf_and_client():
    conf = Configuration(thread_count=3, max_step_inputs=7)
    sentinel_client = object()
    flow = ChainFlow("given", 1, conf=conf, client=sentinel_client)
    assert flow.config is conf
    assert flow.client is sentinel_client
    flow.run()
    assert flow.get_result(ChainFlow.c) == 1


def test_get_result_none_before_run_then_values():
    flow = ChainFlow("chain", 5)
    assert flow.get_result(flow.a) is None
    assert flow.get_result(flow.c) is None
    flow.run()
    assert flow.get_result(flow.a) == 6
    assert flow.get_result(flow.b) == 12
    assert flow.get_result(flow.c) == 9
    # The class attribute is the same step function.
    assert flow.get_result(ChainFlow.c) == 9


def test_get_result_single_vs_list():
    flow = ForeachStepJoinFlow("fsj", 1)
    flow.run()
    assert flow.get_result(flow.fan) == [1, 2, 3]  # one node whose result is a list
    assert flow.get_result(flow.work) == [10, 20, 30]  # three nodes -> list of node results
    assert flow.get_result(flow.collect) == [10, 20, 30]  # one node

    rflow = RepeatFlow("rep", 4)
    rflow.run()
    assert rflow.get_result(rflow.rep) == [4, 4]
    assert rflow.get_result(rflow.after) == 8
    assert rflow.get_result(rflow.gather) == [[[4, 4]]]


def test_get_result_single_node_after_foreach_of_one_item():
    class OneItem(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return [data]

        @needs(predecessors=[fan])
        @step
        def work(item):
            return [item, item]

    flow = OneItem("one", 3)
    flow.run()
    # A single node: its result as is, not wrapped in a list of node results.
    assert flow.get_result(flow.work) == [3, 3]


@pytest.mark.parametrize("not_a_step", [plain_function, 42, "a", None])
def test_get_result_of_non_step_raises(not_a_step):
    flow = ChainFlow("chain", 1)
    with pytest.raises(Exception) as info:
        flow.get_result(not_a_step)
    assert type(info.value) is Exception
    assert str(info.value) == f"Step {not_a_step} does not have a step decorator."


# ---------------------------------------------------------------------------------------------------------------------
# Graph construction errors
# ---------------------------------------------------------------------------------------------------------------------


def test_cycle_error_lists_steps_left_in_definition_order():
    class Cyclic(FlowSpec):
        @step
        def start(data):
            return data

        @needs(predecessors=[start])  # replaced below: a class body cannot name a later step
        @step
        def ping(data):
            return data

        @needs(predecessors=[start])
        @step
        def pong(data):
            return data

        @needs(predecessors=[pong])
        @step
        def downstream(data):
            return data

    # ping <-> pong form a 2-cycle (pong also needs start); downstream hangs below the cycle.
    Cyclic.ping.step.needs.predecessors = [Cyclic.pong]
    Cyclic.pong.step.needs.predecessors = [Cyclic.start, Cyclic.ping]
    with pytest.raises(Exception) as info:
        Cyclic("cyclic", 1)
    # start resolves; ping, pong and downstream keep unresolved predecessors.
    assert str(info.value) == "Cycle detected in the flow graph, cycle steps: ['ping', 'pong', 'downstream']"


def test_self_cycle_error():
    class SelfCycle(FlowSpec):
        @step
        def alone(data):
            return data

    SelfCycle.alone.step.needs = Needs([SelfCycle.alone])
    with pytest.raises(Exception) as info:
        SelfCycle("self", 1)
    assert str(info.value) == "Cycle detected in the flow graph, cycle steps: ['alone']"


def test_app_step_with_two_predecessors_is_refused():
    class TwoIntoApp(FlowSpec):
        @step
        def left(data):
            return data

        @step
        def right(data):
            return data

        @app(app_id="echo")
        @needs(predecessors=[left, right])
        @step
        def solve():
            pass

    with pytest.raises(Exception) as info:
        TwoIntoApp("two", 1)
    assert str(info.value) == "App steps cannot have more than one predecessor, but solve has 2"


def test_check_cycle():
    assert check_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) == (False, None)
    assert check_cycle({}) == (False, None)
    has_cycle, left = check_cycle({"a": ["b"], "b": ["c"], "c": ["b", "d"], "d": []})
    assert has_cycle is True
    assert left == ["b", "c", "d"]
    assert check_cycle({"x": ["x"]}) == (True, ["x"])


# ---------------------------------------------------------------------------------------------------------------------
# Concurrency and threads
# ---------------------------------------------------------------------------------------------------------------------


def test_independent_nodes_run_concurrently_in_named_threads():
    barrier = threading.Barrier(3, timeout=WAIT)
    names: dict[str, str] = {}

    class Parallel(FlowSpec):
        @step
        def one(data):
            barrier.wait()  # only passes when all three run at the same time
            names["one"] = threading.current_thread().name
            return 1

        @step
        def two(data):
            barrier.wait()
            names["two"] = threading.current_thread().name
            return 2

        @step
        def three(data):
            barrier.wait()
            names["three"] = threading.current_thread().name
            return 3

    flow = Parallel("parallel", None)
    flow.run()
    assert names == {"one": "nextpipe-one_0", "two": "nextpipe-two_0", "three": "nextpipe-three_0"}
    assert [flow.get_result(f) for f in (flow.one, flow.two, flow.three)] == [1, 2, 3]


def test_foreach_nodes_run_concurrently():
    barrier = threading.Barrier(4, timeout=WAIT)
    names = []
    lock = threading.Lock()

    class Fan(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return list(range(4))

        @needs(predecessors=[fan])
        @step
        def work(item):
            barrier.wait()
            with lock:
                names.append(threading.current_thread().name)
            return item * item

    flow = Fan("fan", None)
    flow.run()
    assert sorted(names) == [f"nextpipe-work_{i}" for i in range(4)]
    assert flow.get_result(flow.work) == [0, 1, 4, 9]


def test_thread_count_one_runs_one_node_at_a_time():
    lock = threading.Lock()
    state = {"active": 0, "max": 0, "count": 0}

    def track(value):
        with lock:
            state["active"] += 1
            state["count"] += 1
            state["max"] = max(state["max"], state["active"])
        time.sleep(0.005)
        with lock:
            state["active"] -= 1
        return value

    class Many(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return list(range(8))

        @needs(predecessors=[fan])
        @step
        def work(item):
            return track(item)

        @step
        def side(data):
            return track(-1)

    flow = Many("many", None, conf=Configuration(thread_count=1))
    flow.run()
    assert state["count"] == 9
    assert state["max"] == 1
    assert flow.get_result(flow.work) == list(range(8))
    assert flow.runner.pool.threads_started == 1


def test_default_thread_count_is_default_max_threads():
    assert DEFAULT_MAX_THREADS == 24
    assert Pool().max_threads == 24
    assert Pool(0).max_threads == 24
    assert Pool(-3).max_threads == 24
    assert Pool(5).max_threads == 5
    flow = ChainFlow("chain", 1)
    flow.run()
    assert flow.runner.pool.max_threads == 24
    flow = ChainFlow("chain", 1, conf=Configuration(thread_count=2))
    flow.run()
    assert flow.runner.pool.max_threads == 2


def _chain_flow_class(length: int) -> type:
    namespace = {}
    previous = None
    for i in range(length):

        def body(value=None, _i=i):
            return (value or 0) + 1

        body.__name__ = body.__qualname__ = f"s{i}"
        decorated = step(body)
        if previous is not None:
            decorated = needs(predecessors=[previous])(decorated)
        namespace[f"s{i}"] = decorated
        previous = decorated
    return type("LongChain", (FlowSpec,), namespace)


def test_runner_is_event_driven_on_a_long_chain():
    long_chain = _chain_flow_class(200)
    flow = long_chain("long", 0, conf=Configuration(thread_count=3))
    assert [s.definition.get_id() for s in flow.graph.steps] == [f"s{i}" for i in range(200)]
    flow.run()
    assert flow.get_result(long_chain.s199) == 200
    assert 1 <= flow.runner.pool.threads_started <= 3
    assert all(s.done for s in flow.graph.steps)


# ---------------------------------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------------------------------


def test_raising_step_fails_the_flow_and_keeps_finished_results():
    class Failing(FlowSpec):
        @step
        def early(data):
            return "early-result"

        @needs(predecessors=[early])
        @step
        def boom(data):
            raise ValueError("kaboom 42")

        @needs(predecessors=[boom])
        @step
        def never(data):
            raise AssertionError("must not run")

    flow = Failing("failing", 1)
    with pytest.raises(RuntimeError) as info:
        flow.run()
    assert str(info.value) == "Flow failed: Step boom failed: kaboom 42"
    boom = flow.graph.get_step(Failing.boom.step)
    assert [n.status for n in boom.nodes] == [STATUS_FAILED]
    assert boom.nodes[0].error == "kaboom 42"
    assert flow.get_result(flow.early) == "early-result"
    assert flow.get_result(flow.boom) is None
    assert flow.get_result(flow.never) is None
    assert flow.graph.get_step(Failing.never.step).nodes == []


def test_fail_fast_no_chain_step_starts_after_failure():
    ran = []
    go = threading.Event()
    c0_done = threading.Event()
    holder = {}

    def wait_own_cancel(step_function) -> None:
        node = holder["flow"].graph.get_step(step_function.step).nodes[0]
        deadline = time.monotonic() + WAIT
        while not node.cancel and time.monotonic() < deadline:
            time.sleep(0.002)

    class FailFast(FlowSpec):
        @step
        def boom(data):
            go.wait(WAIT)
            raise RuntimeError("boom text")

        @step
        def c0(data):
            ran.append("c0")
            go.set()
            try:
                wait_own_cancel(FailFast.c0)  # returns once the runner has processed the failure
            finally:
                c0_done.set()
            return 0

        @needs(predecessors=[c0])
        @step
        def c1(data):
            ran.append("c1")

        @needs(predecessors=[c1])
        @step
        def c2(data):
            ran.append("c2")

        @needs(predecessors=[c2])
        @step
        def c3(data):
            ran.append("c3")

        @needs(predecessors=[c3])
        @step
        def c4(data):
            ran.append("c4")

        @needs(predecessors=[c4])
        @step
        def c5(data):
            ran.append("c5")

    flow = FailFast("fail-fast", None)
    holder["flow"] = flow
    with pytest.raises(RuntimeError) as info:
        flow.run()
    assert str(info.value) == "Flow failed: Step boom failed: boom text"
    assert c0_done.wait(WAIT)
    assert ran == ["c0"]
    c0_node = flow.graph.get_step(FailFast.c0.step).nodes[0]
    assert c0_node.cancel is True
    assert c0_node.status == STATUS_FAILED
    assert flow.graph.get_step(FailFast.boom.step).nodes[0].status == STATUS_FAILED
    for name in ("c1", "c2", "c3", "c4", "c5"):
        assert flow.graph.get_step(getattr(FailFast, name).step).nodes == []


def test_fail_fast_queued_nodes_never_start():
    ran = []
    workers = []
    go = threading.Event()
    s0_done = threading.Event()
    holder = {}

    def record(name):
        ran.append(name)
        workers.append(threading.current_thread())

    class Queued(FlowSpec):
        @step
        def boom(data):
            workers.append(threading.current_thread())
            go.wait(WAIT)
            ran.append("boom raises")
            raise ValueError("queued boom")

        @step
        def s0(data):
            record("s0")
            go.set()
            node = holder["flow"].graph.get_step(Queued.s0.step).nodes[0]
            deadline = time.monotonic() + WAIT
            while not node.cancel and time.monotonic() < deadline:
                time.sleep(0.002)
            s0_done.set()

        @step
        def s1(data):
            record("s1")

        @step
        def s2(data):
            record("s2")

        @step
        def s3(data):
            record("s3")

        @step
        def s4(data):
            record("s4")

        @step
        def s5(data):
            record("s5")

    flow = Queued("queued", None, conf=Configuration(thread_count=2))
    holder["flow"] = flow
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step boom failed: queued boom$"):
        flow.run()
    assert s0_done.wait(WAIT)
    for worker in list(workers):
        worker.join(WAIT)  # workers end once they saw the pool's shutdown
        assert not worker.is_alive()
    # s1..s5 were queued behind boom and s0: none may start once boom raised.
    assert ran == ["s0", "boom raises"]
    for name in ("s1", "s2", "s3", "s4", "s5"):
        nodes = flow.graph.get_step(getattr(Queued, name).step).nodes
        assert all(n.status != "running" and n.status != STATUS_SUCCEEDED for n in nodes)


def test_failure_prints_one_clear_error(capfd):
    barrier = threading.Barrier(3, timeout=WAIT)
    workers = []

    class AllFail(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return [0, 1, 2]

        @needs(predecessors=[fan])
        @step
        def explode(item):
            workers.append(threading.current_thread())
            barrier.wait()
            raise ValueError(f"distinctive failure {item}")

    flow = AllFail("all-fail", None)
    capfd.readouterr()
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step explode failed: distinctive failure \d$"):
        flow.run()
    for worker in list(workers):  # the other failing nodes finish before stderr is read
        worker.join(WAIT)
    err = capfd.readouterr().err
    assert "distinctive failure" in err
    assert "Exception in thread" not in err
    assert err.count("Traceback (most recent call last)") <= 1


# ---------------------------------------------------------------------------------------------------------------------
# Ctrl-C
# ---------------------------------------------------------------------------------------------------------------------


def test_ctrl_c_interrupts_run_and_cancels_running_node():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    started = threading.Event()
    release = threading.Event()

    class Blocking(FlowSpec):
        @step
        def block(data):
            started.set()
            release.wait(WAIT)
            return "late"

    flow = Blocking("blocking", None)

    def interrupt():
        if started.wait(WAIT):
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Thread(target=interrupt, daemon=True)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            flow.run()
        node = flow.graph.get_step(Blocking.block.step).nodes[0]
        assert node.cancel is True
        assert node.status == STATUS_FAILED
        assert flow.get_result(flow.block) is None
    finally:
        release.set()
        timer.join(WAIT)
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------------------------------


def test_log_formats(capfd):
    capfd.readouterr()
    log("hello from main")
    log("explicit name", step_name="custom")
    log_internal("internal note")
    nextpipe.log("top-level export")
    out, err = capfd.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "[main] hello from main",
        "[custom] explicit name",
        "[nextpipe] internal note",
        "[main] top-level export",
    ]


def test_log_from_step_thread_uses_node_id(capfd):
    class Logging(FlowSpec):
        @foreach()
        @step
        def fan(data):
            log("fanning out")
            return [0, 1]

        @needs(predecessors=[fan])
        @step
        def work(item):
            log(f"item {item}")
            log(f"named {item}", step_name="override")
            return item

    flow = Logging("logging", None)
    capfd.readouterr()
    flow.run()
    lines = capfd.readouterr().err.splitlines()
    assert "[fan_0] fanning out" in lines
    assert "[work_0] item 0" in lines
    assert "[work_1] item 1" in lines
    assert "[override] named 0" in lines
    assert "[override] named 1" in lines


def test_log_thread_name_prefix():
    assert THREAD_NAME_PREFIX == "nextpipe-"


def test_construction_logs(capfd):
    class Documented(FlowSpec):
        @step
        def prepare(data):
            """Prepare the very special input."""
            return data

        @needs(predecessors=[prepare])
        @step
        def solve(data):
            return data

    capfd.readouterr()
    flow = Documented("documented", 1)
    err = capfd.readouterr().err
    lines = err.splitlines()
    mermaid = flow.graph._to_mermaid()
    url = "https://mermaid.ink/svg/" + base64.b64encode(mermaid.encode("utf-8")).decode("ascii") + "?theme=dark"

    def logged(text: str) -> bool:
        return any(line.startswith("[nextpipe]") and text in line for line in lines)

    assert logged("Documented")
    assert logged(nextpipe.__version__)
    assert logged(version("nextmv"))
    assert logged(repr(Documented.prepare.step))
    assert logged(repr(Documented.solve.step))
    assert logged("Prepare the very special input.")
    assert logged(url)
    assert mermaid in err
    assert "[nextpipe] graph LR" in lines
    # Everything construction logs goes to stderr through log_internal: each line that is not a continuation of the
    # multi-line Mermaid text carries the [nextpipe] prefix.
    mermaid_lines = set(mermaid.splitlines()[1:]) | {""}
    assert all(line.startswith("[nextpipe] ") or line in mermaid_lines for line in lines)


# ---------------------------------------------------------------------------------------------------------------------
# Mermaid
# ---------------------------------------------------------------------------------------------------------------------


def test_mermaid_plain_chain():
    flow = ChainFlow("chain", 1)
    assert flow.graph._to_mermaid() == "graph LR\n  a(a)\n  a --> b\n  b(b)\n  b --> c\n  c(c)\n"


def test_mermaid_fan_out_lists_successors_in_definition_order():
    flow = FanOutFlow("fan-out", 1)
    assert flow.graph._to_mermaid() == "graph LR\n  a(a)\n  a --> b\n  a --> c\n  b(b)\n  c(c)\n"


def test_mermaid_foreach_step_join():
    flow = ForeachStepJoinFlow("fsj", 1)
    assert flow.graph._to_mermaid() == (
        "graph LR\n"
        "  fan{ }\n"
        "  fan(fan)\n"
        "  fan -- foreach --> work\n"
        "  work(work)\n"
        "  work -- join --> collect\n"
        "  collect(collect)\n"
    )


def test_mermaid_repeat_with_successors():
    flow = RepeatFlow("rep", 1)
    assert flow.graph._to_mermaid() == (
        "graph LR\n"
        "  rep{ }\n"
        "  rep_join{ }\n"
        "  rep_0(rep_0)\n"
        "  rep --> rep_0\n"
        "  rep_0 --> rep_join\n"
        "  rep_1(rep_1)\n"
        "  rep --> rep_1\n"
        "  rep_1 --> rep_join\n"
        "  rep_join --> after\n"
        "  rep_join -- join --> gather\n"
        "  after(after)\n"
        "  gather(gather)\n"
    )


def test_mermaid_step_into_join():
    flow = StepIntoJoinFlow("into-join", 1)
    assert flow.graph._to_mermaid() == "graph LR\n  first(first)\n  first -- join --> gather\n  gather(gather)\n"


def test_mermaid_foreach_into_join():
    flow = ForeachIntoJoinFlow("foreach-join", 1)
    assert flow.graph._to_mermaid() == "graph LR\n  fan{ }\n  fan(fan)\n  fan --> gather\n  gather(gather)\n"


def test_mermaid_url_is_logged(capfd):
    capfd.readouterr()
    ChainFlow("chain", 1)
    err = capfd.readouterr().err
    text = "graph LR\n  a(a)\n  a --> b\n  b(b)\n  b --> c\n  c(c)\n"
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    assert f"https://mermaid.ink/svg/{encoded}?theme=dark" in err


# ---------------------------------------------------------------------------------------------------------------------
# FlowStep, FlowNode, FlowGraph, StepVisitor
# ---------------------------------------------------------------------------------------------------------------------


def test_flowgraph_attributes():
    flow = ForeachStepJoinFlow("fsj", 1)
    graph = flow.graph
    assert [repr(s) for s in graph.steps] == ["FlowStep(fan)", "FlowStep(work)", "FlowStep(collect)"]
    assert all(isinstance(s, FlowStep) for s in graph.steps)
    assert graph.start_steps == [graph.steps[0]]
    assert set(graph.steps_by_definition) == {
        ForeachStepJoinFlow.fan.step,
        ForeachStepJoinFlow.work.step,
        ForeachStepJoinFlow.collect.step,
    }
    for step_function in (ForeachStepJoinFlow.fan, ForeachStepJoinFlow.work, ForeachStepJoinFlow.collect):
        flow_step = graph.get_step(step_function.step)
        assert flow_step.definition is step_function.step
        assert graph.steps_by_definition[step_function.step] is flow_step

    fan_out = FanOutFlow("fo", 1).graph
    assert [s.definition.get_id() for s in fan_out.start_steps] == ["a"]
    parallel = ChainFlow("c", 1).graph
    assert [s.definition.get_id() for s in parallel.start_steps] == ["a"]


def test_flowstep_attributes_before_and_after_run():
    flow = ChainFlow("chain", 5)
    a, b, c = flow.graph.steps
    assert repr(b) == "FlowStep(b)"
    assert isinstance(a.step_function, ast.FunctionDef)
    assert a.step_function.name == "a"
    assert isinstance(a.definition, Step)
    assert a.definition is ChainFlow.a.step
    assert a.docstring == "Adds one."
    assert b.docstring is None
    assert a.lock.acquire(blocking=False)
    a.lock.release()
    assert a.predecessors == []
    assert a.successors == [b]
    assert b.predecessors == [a]
    assert b.successors == [c]
    assert c.successors == []
    assert [s.done for s in (a, b, c)] == [False, False, False]
    assert [s.nodes for s in (a, b, c)] == [[], [], []]

    flow.run()
    assert [s.done for s in (a, b, c)] == [True, True, True]
    node = b.nodes[0]
    assert isinstance(node, FlowNode)
    assert repr(node) == "FlowNode(b_0)"
    assert node.parent is b
    assert node.index == 0
    assert node.id == "b_0"
    assert node.status == STATUS_SUCCEEDED
    assert node.error is None
    assert node.predecessors == [a.nodes[0]]
    assert node.run_id is None
    assert node.result == 12
    assert node.done is True
    assert node.cancel is False


def test_flownode_constructed_directly():
    flow = ChainFlow("chain", 5)
    parent = flow.graph.steps[1]
    node = FlowNode(parent, 7)
    assert node.parent is parent
    assert node.index == 7
    assert node.id == "b_7"
    assert repr(node) == "FlowNode(b_7)"
    assert node.status == STATUS_PENDING == "pending"
    assert node.error is None
    assert node.predecessors == []
    assert node.run_id is None
    assert node.result is None
    assert node.done is False
    assert node.cancel is False


def test_node_ids_follow_input_order():
    flow = ForeachStepJoinFlow("fsj", 1)
    flow.run()
    work = flow.graph.get_step(ForeachStepJoinFlow.work.step)
    assert [n.id for n in work.nodes] == ["work_0", "work_1", "work_2"]
    assert [n.index for n in work.nodes] == [0, 1, 2]
    assert [n.result for n in work.nodes] == [10, 20, 30]


def test_step_visitor_collects_steps_in_source_order():
    tree = ast.parse(inspect.getsource(ForeachStepJoinFlow).strip())
    steps: list[FlowStep] = []
    visitor = StepVisitor(steps, ForeachStepJoinFlow)
    assert isinstance(visitor, ast.NodeVisitor)
    visitor.visit(tree)
    assert [s.definition.get_id() for s in steps] == ["fan", "work", "collect"]
    assert [s.definition for s in steps] == [
        ForeachStepJoinFlow.fan.step,
        ForeachStepJoinFlow.work.step,
        ForeachStepJoinFlow.collect.step,
    ]
    assert all(isinstance(s.step_function, ast.FunctionDef) for s in steps)


# ---------------------------------------------------------------------------------------------------------------------
# threads.Job and threads.Pool
# ---------------------------------------------------------------------------------------------------------------------


def test_job_runs_with_none_callbacks():
    job = Job(lambda x, y: x + y, None, None, args=(2, 3), name="adder")
    assert job.done is False
    job.run()
    assert job.done is True
    assert job.result == 5
    assert job.error is None


def test_job_callbacks_and_reference():
    events = []
    marker = object()
    job = Job(
        lambda: events.append("target") or "value",
        lambda j: events.append(("start", j)),
        lambda j: events.append(("done", j)),
        name="cb",
        reference=marker,
    )
    job.run()
    assert events == [("start", job), "target", ("done", job)]
    assert job.result == "value"
    assert job.reference is marker


def test_raising_job_sets_error_and_still_calls_done_callback():
    error = ValueError("job broke")
    seen = []

    def target():
        raise error

    job = Job(target, None, lambda j: seen.append((j.done, j.error)))
    job.run()  # must not raise
    assert job.error is error
    assert job.done is True
    assert job.result is None
    assert seen == [(True, error)]


def test_pool_runs_at_most_max_threads_at_once():
    lock = threading.Lock()
    state = {"active": 0, "max": 0}
    both_running = threading.Barrier(2, timeout=WAIT)

    def work(i):
        with lock:
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])
        if i < 2:
            both_running.wait()  # the first two prove that two do run at once
        time.sleep(0.002)
        with lock:
            state["active"] -= 1
        return i

    pool = Pool(max_threads=2)
    jobs = [Job(work, None, None, args=(i,), name=f"j{i}") for i in range(20)]
    for job in jobs:
        pool.run(job)
    pool.join()
    assert all(j.done and j.error is None for j in jobs)
    assert [j.result for j in jobs] == list(range(20))
    assert state["max"] == 2
    assert pool.threads_started <= 2


def test_pool_wait_one_returns_each_finished_job():
    pool = Pool(max_threads=3)
    jobs = [Job(lambda i=i: i * 2, None, None, name=f"w{i}") for i in range(5)]
    for job in jobs:
        pool.run(job)
    finished = [pool.wait_one() for _ in jobs]
    assert {id(j) for j in finished} == {id(j) for j in jobs}
    assert all(j.done for j in finished)
    assert sorted(j.result for j in finished) == [0, 2, 4, 6, 8]
    assert pool.wait_one(timeout=0.01) is None
    pool.join()


def test_pool_join_waits_for_all_jobs():
    release = threading.Event()
    pool = Pool(max_threads=4)
    jobs = [Job(lambda: release.wait(WAIT), None, None, name=f"slow{i}") for i in range(6)]
    for job in jobs:
        pool.run(job)
    threading.Timer(0.02, release.set).start()
    pool.join()
    assert all(j.done for j in jobs)
    assert all(j.result is True for j in jobs)


def test_pool_reuses_named_workers():
    names = []
    lock = threading.Lock()

    def record(i):
        with lock:
            names.append((i, threading.current_thread().name))
        return i

    pool = Pool(max_threads=3)
    jobs = [Job(record, None, None, args=(i,), name=f"job-{i}") for i in range(100)]
    for job in jobs:
        pool.run(job)
    pool.join()
    assert pool.threads_started <= 3
    assert sorted(names) == [(i, f"nextpipe-job-{i}") for i in range(100)]
    assert [j.result for j in jobs] == list(range(100))


def test_pool_raising_job_calls_done_callback_in_pool():
    done = []
    pool = Pool(max_threads=1)

    def explode():
        raise KeyError("missing")

    job = Job(explode, None, lambda j: done.append(j))
    pool.run(job)
    finished = pool.wait_one(timeout=WAIT)
    pool.join()
    assert finished is job
    assert isinstance(job.error, KeyError)
    assert done == [job]
