"""SPEC section 6: the uplink's traffic, through a real ``nextmv`` client against the platform emulator."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import threading
import time
import uuid
from typing import Any

import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import (  # noqa: E402
    API_KEY,
    FLOW_PATH,
    WF_APP,
    WF_RUN,
    client_for,
    fast_polling,
    flow_puts,
    last_graph,
    nodes_by_id,
    parse_rfc3339_utc,
)
from platform_emulator import PlatformEmulator  # noqa: E402

import nextpipe.uplink  # noqa: E402
from nextpipe import Configuration, FlowSpec, app, foreach, join, needs, repeat, step  # noqa: E402
from nextpipe.uplink import (  # noqa: E402
    FAILED_UPDATES_THRESHOLD,
    FlowDTO,
    FlowUpdateDTO,
    NodeDTO,
    StepDTO,
    UplinkClient,
    UplinkConfig,
)

pytest_plugins = ["emulator_fixtures"]

STEP_KEYS = {"id", "predecessors", "docs", "app_id"}
NODE_KEYS = {"id", "parent_id", "predecessor_ids", "status", "run_id"}


def set_interval(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    monkeypatch.setattr(nextpipe.uplink, "UPDATE_INTERVAL", seconds)


def simple_update(label: str = "a") -> FlowUpdateDTO:
    return FlowUpdateDTO(
        pipeline_graph=FlowDTO(
            steps=[StepDTO(id=label, predecessors=[], docs="doc")],
            nodes=[NodeDTO(id=f"{label}_0", parent_id=label, predecessor_ids=[], status="running")],
        )
    )


class ShapesFlow(FlowSpec):
    @step
    def prepare(data):
        """Prepare the input."""
        return data

    @foreach()
    @needs(predecessors=[prepare])
    @step
    def fan(data):
        return [{"v": data}, {"v": data + 1}, {"v": data + 2}]

    @app(app_id="echo", polling_options=fast_polling())
    @needs(predecessors=[fan])
    @step
    def solve():
        pass

    @join()
    @needs(predecessors=[solve])
    @step
    def collect(results):
        """Collect every result."""
        return [r[0]["solution"]["v"] for r in results]

    @repeat(repetitions=2)
    @needs(predecessors=[prepare])
    @step
    def rep(data):
        return data

    @needs(predecessors=[rep])
    @step
    def use_rep(values):
        return sum(values)

    @needs(predecessors=[solve, prepare])
    @step
    def pair(result, data):
        return result["solution"]["v"] + data


class QuickFlow(FlowSpec):
    @step
    def a(data):
        return data + 1

    @needs(predecessors=[a])
    @step
    def b(data):
        return data * 2


# ---------------------------------------------------------------------------------------------------------------------
# Inactive
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [UplinkConfig(), UplinkConfig(application_id=WF_APP), UplinkConfig(run_id=WF_RUN)],
    ids=["none", "app-only", "run-only"],
)
def test_uplink_without_both_ids_sends_nothing(emu: PlatformEmulator, config: UplinkConfig) -> None:
    uplink = UplinkClient(client_for(emu), config)
    assert uplink.active is False
    uplink.follow(simple_update)
    uplink.run_async()
    uplink.submit_update(simple_update())
    uplink.notify_changed()
    uplink.terminate()
    assert emu.requests == []
    assert uplink.updates_built == 0


def test_flow_with_only_the_app_id_sends_no_update(
    platform_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = platform_env
    monkeypatch.setenv("NEXTMV_APP_ID", WF_APP)
    flow = ShapesFlow("shapes", 1)
    flow.run()
    assert flow.get_result(flow.collect) == [1, 2, 3]
    assert len(emu.runs) == 3  # the app runs went out ...
    assert emu.requests_for("PUT", "/v1/internal/") == []  # ... but no flow update


# ---------------------------------------------------------------------------------------------------------------------
# What is sent
# ---------------------------------------------------------------------------------------------------------------------


def test_submitted_update_is_put_as_is(emu: PlatformEmulator) -> None:
    uplink = UplinkClient(client_for(emu), UplinkConfig(application_id=WF_APP, run_id=WF_RUN))
    assert uplink.active
    update = simple_update("only")
    uplink.run_async()
    uplink.submit_update(update)
    uplink.terminate()
    puts = flow_puts(emu)
    assert puts and all(r.status == 204 for r in puts)
    assert puts[-1].json == update.to_dict()
    assert puts[-1].headers["authorization"] == f"Bearer {API_KEY}"
    assert puts[-1].headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        uplink.submit_update(update.to_dict())  # type: ignore[arg-type]


def test_put_path_and_body_shape(workflow_env: PlatformEmulator, fast_uplink: float) -> None:
    emu = workflow_env
    flow = ShapesFlow("shapes", 10)
    flow.run()
    assert flow.get_result(flow.collect) == [10, 11, 12]
    assert flow.get_result(flow.pair) == [20, 21, 22]

    puts = emu.requests_for("PUT", "/v1/internal/")
    assert puts and {r.path for r in puts} == {FLOW_PATH}
    assert {(u.app_id, u.run_id) for u in emu.flow_update_records} == {(WF_APP, WF_RUN)}
    previous = None
    for body in emu.flow_updates:
        assert set(body) == {"pipeline_graph", "updated_at"}
        assert set(body["pipeline_graph"]) == {"steps", "nodes"}
        stamp = parse_rfc3339_utc(body["updated_at"])
        assert previous is None or stamp >= previous
        previous = stamp
        for s in body["pipeline_graph"]["steps"]:
            assert {"id", "predecessors"} <= set(s) <= STEP_KEYS
            assert all(v is not None for v in s.values())
        for n in body["pipeline_graph"]["nodes"]:
            assert {"id", "parent_id", "predecessor_ids", "status"} <= set(n) <= NODE_KEYS
            assert n["status"] in {"pending", "running", "succeeded", "failed"}
            assert all(v is not None for v in n.values())

    graph = last_graph(emu)
    assert graph["steps"] == [
        {"id": "prepare", "predecessors": [], "docs": "Prepare the input."},
        {"id": "fan", "predecessors": ["prepare"]},
        {"id": "solve", "predecessors": ["fan"], "app_id": "echo"},
        {"id": "collect", "predecessors": ["solve"], "docs": "Collect every result."},
        {"id": "rep", "predecessors": ["prepare"]},
        {"id": "use_rep", "predecessors": ["rep"]},
        {"id": "pair", "predecessors": ["solve", "prepare"]},
    ]
    nodes = nodes_by_id(graph)
    assert len(nodes) == len(graph["nodes"])
    assert {n["status"] for n in nodes.values()} == {"succeeded"}
    run_ids = {r.run_id for r in emu.runs.values()}
    assert {nodes[f"solve_{i}"]["run_id"] for i in range(3)} == run_ids
    assert all("run_id" not in n for node_id, n in nodes.items() if not node_id.startswith("solve_"))
    for node_id, node in nodes.items():
        assert node["parent_id"] == node_id.rsplit("_", 1)[0]


def test_node_predecessor_ids_in_the_final_update(workflow_env: PlatformEmulator, fast_uplink: float) -> None:
    emu = workflow_env
    ShapesFlow("shapes", 1).run()
    nodes = nodes_by_id(last_graph(emu))
    expected = {
        "prepare_0": [],
        "fan_0": ["prepare_0"],  # after a normal predecessor: the node whose result is the input
        "solve_0": ["fan_0"],  # after a foreach: the foreach node
        "solve_1": ["fan_0"],
        "solve_2": ["fan_0"],
        "collect_0": ["solve_0", "solve_1", "solve_2"],  # a join: every contributing node
        "rep_0": ["prepare_0"],
        "rep_1": ["prepare_0"],
        "use_rep_0": ["rep_0", "rep_1"],  # after a repeat: all of its nodes
        "pair_0": ["solve_0", "prepare_0"],
        "pair_1": ["solve_1", "prepare_0"],
        "pair_2": ["solve_2", "prepare_0"],
    }
    assert set(nodes) == set(expected)
    for node_id, predecessors in expected.items():
        assert sorted(nodes[node_id]["predecessor_ids"]) == sorted(predecessors), node_id


@pytest.mark.parametrize(("length", "expected"), [(999, 999), (1000, 1000), (1001, 1003), (1500, 1003)])
def test_long_docs_are_cut(
    emu: PlatformEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
    length: int,
    expected: int,
) -> None:
    set_interval(monkeypatch, 0.05)
    docs = "d" * length
    # The graph reads docstrings from the source: write the flow to a module file.
    source = f'''
from nextpipe import FlowSpec, step


class DocsFlow(FlowSpec):
    @step
    def documented(data):
        """{docs}"""
        return data
'''
    module = _import_source(source, tmp_path, monkeypatch)
    flow = module.DocsFlow(
        "docs", 1, client=client_for(emu), uplink_config=UplinkConfig(application_id=WF_APP, run_id=WF_RUN)
    )
    flow.run()
    (sent,) = last_graph(emu)["steps"]
    assert len(sent["docs"]) == expected
    assert sent["docs"] == (docs[:1000] + "..." if length > 1000 else docs)


def _import_source(source: str, directory: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"uplink_docs_{uuid.uuid4().hex}"
    path = directory / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------------------
# Pace
# ---------------------------------------------------------------------------------------------------------------------


def test_at_most_one_update_per_interval(emu: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    interval = 0.3
    set_interval(monkeypatch, interval)

    class BusyFlow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return list(range(data))

        @needs(predecessors=[fan])
        @step
        def work(item):
            time.sleep(0.05)
            return item * 2

        @join()
        @needs(predecessors=[work])
        @step
        def gather(results):
            return sum(r[0] for r in results)

    flow = BusyFlow(
        "busy",
        60,
        conf=Configuration(thread_count=2, max_step_inputs=100),
        client=client_for(emu),
        uplink_config=UplinkConfig(application_id=WF_APP, run_id=WF_RUN),
    )
    started = time.monotonic()
    flow.run()
    duration = time.monotonic() - started
    assert flow.get_result(flow.gather) == sum(range(60)) * 2
    assert duration > 1.2  # 60 nodes of 50 ms on 2 threads

    puts = flow_puts(emu)
    assert len(puts) <= duration / interval + 2, (len(puts), duration)
    assert len(puts) >= 2
    gaps = [later.time - earlier.time for earlier, later in zip(puts[:-2], puts[1:-1], strict=True)]
    assert all(gap >= interval * 0.9 for gap in gaps), gaps  # the loop's updates, the final one left out
    # One document per update posted, not one per node event (there were well over 120 of those).
    assert flow.uplink.updates_built == len(puts)
    assert {n["status"] for n in last_graph(emu)["nodes"]} == {"succeeded"}
    assert len(last_graph(emu)["nodes"]) == 62


def test_updates_built_counts_posted_updates(workflow_env: PlatformEmulator, fast_uplink: float) -> None:
    emu = workflow_env
    flow = ShapesFlow("shapes", 2)
    flow.run()
    assert flow.uplink.updates_built == len(flow_puts(emu))
    assert flow.uplink.updates_sent == len(emu.flow_updates)


def test_terminate_returns_at_once_with_the_final_state(emu: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_interval(monkeypatch, 5)  # the original could wait up to a whole interval here
    states = iter(range(1000))
    built: list[FlowUpdateDTO] = []

    def source() -> FlowUpdateDTO:
        update = simple_update(f"state{next(states)}")
        built.append(update)
        return update

    uplink = UplinkClient(client_for(emu), UplinkConfig(application_id=WF_APP, run_id=WF_RUN))
    uplink.follow(source)
    uplink.notify_changed()
    uplink.run_async()
    emu.wait_for(lambda: len(emu.flow_updates) == 1, timeout=5)
    uplink.notify_changed()  # pending, but the next update is due only in 5 s
    started = time.monotonic()
    uplink.terminate()
    assert time.monotonic() - started < 0.5
    assert len(emu.flow_updates) == 2
    assert emu.flow_updates[-1] == built[-1].to_dict()
    assert uplink.updates_built == len(built) == 2


def test_flow_run_ends_without_waiting_for_the_interval(
    workflow_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = workflow_env
    set_interval(monkeypatch, 5)
    flow = QuickFlow("quick", 1)
    started = time.monotonic()
    flow.run()
    assert time.monotonic() - started < 0.5
    assert flow.get_result(flow.b) == 4
    nodes = nodes_by_id(last_graph(emu))
    assert set(nodes) == {"a_0", "b_0"}
    assert {n["status"] for n in nodes.values()} == {"succeeded"}


# ---------------------------------------------------------------------------------------------------------------------
# Platform failures
# ---------------------------------------------------------------------------------------------------------------------


def test_final_update_is_retried(workflow_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emu = workflow_env
    set_interval(monkeypatch, 5)

    class FailLaterFlow(FlowSpec):
        @step
        def a(data):
            emu.wait_for(lambda: len(emu.flow_updates) >= 1, timeout=5)  # the first update went through
            emu.fail_next(3, status=500, path_prefix="/v1/internal/")
            return data + 1

        @needs(predecessors=[a])
        @step
        def b(data):
            return data * 2

    flow = FailLaterFlow("fail later", 1)
    flow.run()
    assert flow.get_result(flow.b) == 4
    assert [r.status for r in flow_puts(emu)] == [204, 500, 500, 500, 204]
    nodes = nodes_by_id(last_graph(emu))
    assert set(nodes) == {"a_0", "b_0"}
    assert {n["status"] for n in nodes.values()} == {"succeeded"}


def test_platform_unreachable_for_the_whole_run(emu: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_interval(monkeypatch, 0.05)
    client = client_for(emu)
    emu.stop_listening()

    class SlowishFlow(FlowSpec):
        @step
        def a(data):
            time.sleep(0.2)
            return data + 1

        @needs(predecessors=[a])
        @step
        def b(data):
            return data * 2

    flow = SlowishFlow("down", 1, client=client, uplink_config=UplinkConfig(application_id=WF_APP, run_id=WF_RUN))
    started = time.monotonic()
    flow.run()
    assert time.monotonic() - started < 8
    assert flow.get_result(flow.b) == 4
    assert flow.uplink.updates_sent == 0
    emu.start_listening()
    assert emu.flow_updates == []


def test_uplink_gives_up_after_too_many_failures(emu: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_interval(monkeypatch, 0.01)
    emu.fail_next(1000, status=500, path_prefix="/v1/internal/")
    uplink = UplinkClient(client_for(emu), UplinkConfig(application_id=WF_APP, run_id=WF_RUN))
    uplink.follow(simple_update)
    uplink.notify_changed()
    uplink.run_async()
    limit = FAILED_UPDATES_THRESHOLD + 1
    emu.wait_for(lambda: len(flow_puts(emu)) >= limit, timeout=5)
    for _ in range(5):  # more changes after giving up are not sent
        uplink.notify_changed()
        time.sleep(0.03)
    assert len(flow_puts(emu)) == limit
    assert not any(t.name == "nextpipe-uplink" and t.is_alive() for t in threading.enumerate())
    started = time.monotonic()
    uplink.terminate()  # never raises, and does not insist
    assert time.monotonic() - started < 0.5
    assert limit <= len(flow_puts(emu)) <= limit + 1
    assert {r.status for r in flow_puts(emu)} == {500}
    assert uplink.updates_sent == 0


def test_flow_survives_an_uplink_that_gave_up(emu: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_interval(monkeypatch, 0.01)
    emu.set_down(True)

    class ChainFlow(FlowSpec):
        @step
        def a(data):
            emu.wait_for(lambda: len(flow_puts(emu)) > FAILED_UPDATES_THRESHOLD, timeout=5)
            return data

        @needs(predecessors=[a])
        @step
        def b(data):
            time.sleep(0.1)
            return data + 1

    flow = ChainFlow("gave up", 1, client=client_for(emu), uplink_config=UplinkConfig(WF_APP, WF_RUN))
    started = time.monotonic()
    flow.run()
    assert time.monotonic() - started < 3
    assert flow.get_result(flow.b) == 2
    assert len(flow_puts(emu)) <= FAILED_UPDATES_THRESHOLD + 2
    assert {r.status for r in flow_puts(emu)} == {503}
