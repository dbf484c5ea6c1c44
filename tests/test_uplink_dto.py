"""SPEC section 6, the documents the uplink sends (no network): DTOs, the graph's document, inactive uplinks."""

from __future__ import annotations

import datetime

import pytest

from nextpipe import FlowSpec, foreach, join, needs, repeat, step
from nextpipe.uplink import (
    FAILED_UPDATES_THRESHOLD,
    MAX_DOCS_LENGTH,
    UPDATE_INTERVAL,
    FlowDTO,
    FlowUpdateDTO,
    NodeDTO,
    StepDTO,
    UplinkClient,
    UplinkConfig,
)


class RecordingClient:
    """Stands in for nextmv.cloud.Client; records requests instead of sending them."""

    timeout = 20

    def __init__(self):
        self.requests = []

    def request(self, **kwargs):
        self.requests.append(kwargs)


class ShapesFlow(FlowSpec):
    @step
    def prepare(data):
        """Prepare the input."""
        return data

    @foreach()
    @needs(predecessors=[prepare])
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
        """Collect every result."""
        return [i[0] for i in items]

    @repeat(repetitions=2)
    @needs(predecessors=[prepare])
    @step
    def rep(data):
        return data

    @needs(predecessors=[rep])
    @step
    def use_rep(results):
        return sum(results)

    @needs(predecessors=[work, prepare])
    @step
    def pair(w, p):
        return w + p


def test_constants():
    assert FAILED_UPDATES_THRESHOLD == 10
    assert UPDATE_INTERVAL == 5
    assert MAX_DOCS_LENGTH == 1000


def test_step_dto_leaves_out_none_keys():
    assert StepDTO(id="a", predecessors=[]).to_dict() == {"id": "a", "predecessors": []}
    assert StepDTO(id="b", predecessors=["a"], docs="Some docs.").to_dict() == {
        "id": "b",
        "predecessors": ["a"],
        "docs": "Some docs.",
    }
    assert StepDTO(id="c", predecessors=["a", "b"], app_id="echo").to_dict() == {
        "id": "c",
        "predecessors": ["a", "b"],
        "app_id": "echo",
    }
    assert StepDTO(id="d", predecessors=[], docs="x", app_id="echo").to_dict() == {
        "id": "d",
        "predecessors": [],
        "docs": "x",
        "app_id": "echo",
    }


def test_node_dto_leaves_out_none_run_id():
    assert NodeDTO(id="a_0", parent_id="a", predecessor_ids=[], status="pending").to_dict() == {
        "id": "a_0",
        "parent_id": "a",
        "predecessor_ids": [],
        "status": "pending",
    }
    assert NodeDTO(
        id="b_1", parent_id="b", predecessor_ids=["a_0"], status="succeeded", run_id="run-123"
    ).to_dict() == {
        "id": "b_1",
        "parent_id": "b",
        "predecessor_ids": ["a_0"],
        "status": "succeeded",
        "run_id": "run-123",
    }


def test_flow_and_update_dto_shapes():
    flow = FlowDTO(
        steps=[StepDTO(id="a", predecessors=[]), StepDTO(id="b", predecessors=["a"], app_id="echo")],
        nodes=[
            NodeDTO(id="a_0", parent_id="a", predecessor_ids=[], status="succeeded"),
            NodeDTO(id="b_0", parent_id="b", predecessor_ids=["a_0"], status="running", run_id="r-1"),
        ],
    )
    expected_graph = {
        "steps": [{"id": "a", "predecessors": []}, {"id": "b", "predecessors": ["a"], "app_id": "echo"}],
        "nodes": [
            {"id": "a_0", "parent_id": "a", "predecessor_ids": [], "status": "succeeded"},
            {"id": "b_0", "parent_id": "b", "predecessor_ids": ["a_0"], "status": "running", "run_id": "r-1"},
        ],
    }
    assert flow.to_dict() == expected_graph
    update = FlowUpdateDTO(pipeline_graph=flow, updated_at="2024-01-02T03:04:05.678000+00:00")
    assert update.to_dict() == {"pipeline_graph": expected_graph, "updated_at": "2024-01-02T03:04:05.678000+00:00"}
    assert FlowDTO().to_dict() == {"steps": [], "nodes": []}


def test_update_dto_default_timestamp_is_rfc3339_utc():
    update = FlowUpdateDTO(pipeline_graph=FlowDTO())
    body = update.to_dict()
    assert set(body) == {"pipeline_graph", "updated_at"}
    stamp = datetime.datetime.fromisoformat(body["updated_at"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - stamp) < datetime.timedelta(minutes=5)


@pytest.mark.parametrize(
    ("length", "expected_length", "suffixed"),
    [(0, 0, False), (999, 999, False), (1000, 1000, False), (1001, 1003, True), (5000, 1003, True)],
)
def test_docs_cut_to_max_length(length, expected_length, suffixed):
    docs = "".join(chr(ord("a") + i % 26) for i in range(length))
    result = StepDTO(id="a", predecessors=[], docs=docs).to_dict()["docs"]
    assert len(result) == expected_length
    if suffixed:
        assert result == docs[:1000] + "..."
    else:
        assert result == docs


def test_long_step_docstring_is_cut_in_graph_document():
    long_doc = "word " * 400  # 2000 characters

    class LongDocs(FlowSpec):
        @step
        def documented(data):
            return data

    LongDocs.documented.step.function.__doc__ = long_doc
    flow = LongDocs("long-docs", 1)
    docs = flow.graph._to_uplink_dto().to_dict()["pipeline_graph"]["steps"][0]["docs"]
    assert docs.endswith("...")
    assert len(docs) == 1003
    assert docs[:1000] == flow.graph.steps[0].docstring[:1000]


def test_graph_document_before_run_has_steps_and_no_nodes():
    flow = ShapesFlow("shapes", 1)
    body = flow.graph._to_uplink_dto().to_dict()
    assert isinstance(flow.graph._to_uplink_dto(), FlowUpdateDTO)
    assert body["pipeline_graph"]["steps"] == [
        {"id": "prepare", "predecessors": [], "docs": "Prepare the input."},
        {"id": "fan", "predecessors": ["prepare"]},
        {"id": "work", "predecessors": ["fan"]},
        {"id": "collect", "predecessors": ["work"], "docs": "Collect every result."},
        {"id": "rep", "predecessors": ["prepare"]},
        {"id": "use_rep", "predecessors": ["rep"]},
        {"id": "pair", "predecessors": ["work", "prepare"]},
    ]
    assert body["pipeline_graph"]["nodes"] == []


def test_graph_document_after_run_has_node_parents_statuses_and_predecessors():
    flow = ShapesFlow("shapes", 1)
    flow.run()
    assert flow.get_result(flow.collect) == [10, 20, 30]
    assert flow.get_result(flow.use_rep) == 2
    assert flow.get_result(flow.pair) == [11, 21, 31]

    body = flow.graph._to_uplink_dto().to_dict()
    graph = body["pipeline_graph"]
    assert [s["id"] for s in graph["steps"]] == ["prepare", "fan", "work", "collect", "rep", "use_rep", "pair"]
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert len(nodes) == len(graph["nodes"])  # unique ids
    expected_predecessors = {
        "prepare_0": [],
        "fan_0": ["prepare_0"],
        "work_0": ["fan_0"],
        "work_1": ["fan_0"],
        "work_2": ["fan_0"],
        "collect_0": ["work_0", "work_1", "work_2"],
        "rep_0": ["prepare_0"],
        "rep_1": ["prepare_0"],
        "use_rep_0": ["rep_0", "rep_1"],
        "pair_0": ["work_0", "prepare_0"],
        "pair_1": ["work_1", "prepare_0"],
        "pair_2": ["work_2", "prepare_0"],
    }
    assert set(nodes) == set(expected_predecessors)
    for node_id, node in nodes.items():
        assert node["parent_id"] == node_id.rsplit("_", 1)[0]
        assert node["status"] == "succeeded"
        assert "run_id" not in node
        assert sorted(node["predecessor_ids"]) == sorted(expected_predecessors[node_id]), node_id
        assert set(node) == {"id", "parent_id", "predecessor_ids", "status"}


def test_active_submit_update_rejects_anything_but_flow_update_dto():
    active = UplinkClient(RecordingClient(), UplinkConfig(application_id="app", run_id="run"))
    for bad in ({"pipeline_graph": {}}, FlowDTO(), None, "update"):
        with pytest.raises(ValueError, match="Expected FlowUpdateDTO"):
            active.submit_update(bad)
    assert active.flow == {} and active.changed is False


def test_inactive_submit_update_accepts_anything_and_drops_it():
    inactive = UplinkClient(None, UplinkConfig())
    for anything in ({"pipeline_graph": {}}, FlowDTO(), None, "update", FlowUpdateDTO(pipeline_graph=FlowDTO())):
        inactive.submit_update(anything)
    assert inactive.flow == {} and inactive.changed is False


def test_uplink_config_defaults():
    config = UplinkConfig()
    assert config.application_id is None
    assert config.run_id is None
    assert UplinkClient(None, config).active is False
    assert UplinkClient(None, UplinkConfig(application_id="app")).active is False
    assert UplinkClient(None, UplinkConfig(run_id="run")).active is False
    assert UplinkClient(RecordingClient(), UplinkConfig(application_id="app", run_id="run")).active is True


def test_inactive_uplink_builds_no_document_during_a_whole_run():
    flow = ShapesFlow("shapes", 1)
    assert flow.uplink.active is False
    flow.run()
    assert flow.get_result(flow.collect) == [10, 20, 30]
    assert flow.uplink.updates_built == 0
    assert flow.uplink.active is False
    assert flow._client is None


def test_inactive_uplink_with_only_one_env_var(monkeypatch):
    monkeypatch.setenv("NEXTMV_APP_ID", "wf-app")
    flow = ShapesFlow("shapes", 1)
    assert flow.uplink.active is False
    flow.run()
    assert flow.uplink.updates_built == 0
    assert flow._client is None


def test_uplink_config_from_env_vars_makes_it_active(monkeypatch):
    monkeypatch.setenv("NEXTMV_APP_ID", "wf-app")
    monkeypatch.setenv("NEXTMV_RUN_ID", "wf-run")
    client = RecordingClient()
    flow = ShapesFlow("shapes", 1, client=client)
    assert flow.uplink.active is True
    assert flow.uplink.config.application_id == "wf-app"
    assert flow.uplink.config.run_id == "wf-run"
    assert client.requests == []  # nothing is sent before the flow runs


def test_explicit_uplink_config_makes_it_active():
    client = RecordingClient()
    flow = ShapesFlow("shapes", 1, client=client, uplink_config=UplinkConfig(application_id="a", run_id="r"))
    assert flow.uplink.active is True
    assert flow.uplink.config == UplinkConfig(application_id="a", run_id="r")
    assert client.requests == []


def test_active_uplink_creates_the_client_from_the_api_key(monkeypatch):
    from nextmv.cloud import Client

    monkeypatch.setenv("NEXTMV_APP_ID", "wf-app")
    monkeypatch.setenv("NEXTMV_RUN_ID", "wf-run")
    monkeypatch.setenv("NEXTMV_API_KEY", "not-a-real-key")
    flow = ShapesFlow("shapes", 1)  # constructing sends nothing
    assert flow.uplink.active is True
    assert isinstance(flow._client, Client)
