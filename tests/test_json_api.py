"""
SPEC section 10: the dataclasses-json API of the seven JSON classes, argument types, ``ExcludeIfNone``,
``threads.thread_local``, the version, and ``import nextpipe`` staying free of the SDK.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import threading
from pathlib import Path

import marshmallow
import nextmv
import pytest
from dataclasses_json import DataClassJsonMixin
from packaging.requirements import Requirement
from packaging.version import Version

import nextpipe
from nextpipe import AppOption, AppRunConfig, Configuration
from nextpipe.threads import thread_local
from nextpipe.uplink import MAX_DOCS_LENGTH, ExcludeIfNone, FlowDTO, FlowUpdateDTO, NodeDTO, StepDTO

ROOT = Path(__file__).resolve().parent.parent


def _update() -> FlowUpdateDTO:
    return FlowUpdateDTO(
        pipeline_graph=FlowDTO(
            steps=[StepDTO(id="a", predecessors=[], docs="x" * 1500), StepDTO(id="b", predecessors=["a"], app_id="s")],
            nodes=[NodeDTO(id="a_0", parent_id="a", status="succeeded", run_id="r1"), NodeDTO(id="b_0", parent_id="b")],
        ),
        updated_at="2026-01-02T03:04:05.678+00:00",
    )


SAMPLES = {
    "AppOption": AppOption("duration", 10),
    "AppRunConfig": AppRunConfig(
        input={"items": [1, 2]},
        options=[AppOption("duration", 10), AppOption("seed", None)],
        name="run",
        run_configuration=nextmv.RunConfiguration(execution_class="6c9500mb870s"),
        instance_id="candidate",
    ),
    "Configuration": Configuration(thread_count=3, max_step_inputs=7, local_apps={"echo": "apps/echo"}),
    "StepDTO": StepDTO(id="a", predecessors=["b"], docs="doc"),
    "NodeDTO": NodeDTO(id="a_0", parent_id="a", predecessor_ids=["b_0"], status="running", run_id="r"),
    "FlowDTO": _update().pipeline_graph,
    "FlowUpdateDTO": _update(),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_whole_dataclasses_json_api(name: str) -> None:
    value = SAMPLES[name]
    cls = type(value)
    assert isinstance(value, DataClassJsonMixin)
    assert cls.from_dict(value.to_dict()) == value
    assert cls.from_dict(json.loads(value.to_json()), infer_missing=True) == value
    assert cls.from_json(value.to_json(indent=2, sort_keys=True)) == value
    assert cls.from_json(value.to_json(), infer_missing=False, parse_float=float) == value
    assert json.loads(value.to_json()) == value.to_dict(encode_json=True)
    schema = cls.schema()
    assert isinstance(schema, marshmallow.Schema)
    assert schema.load(json.loads(value.to_json())) == value
    assert schema.loads(schema.dumps(value)) == value


def test_lenient_decoding_follows_dataclasses_json() -> None:
    assert Configuration.from_json('{"thread_count": "8"}') == Configuration(thread_count=8)
    assert Configuration.from_dict({"max_step_inputs": "9"}).max_step_inputs == 9
    assert Configuration.from_dict({}, infer_missing=True) == Configuration()
    assert AppRunConfig.from_dict({"input": 3}) == AppRunConfig(input=3)
    assert NodeDTO.from_dict({"id": "a_0", "parent_id": "a"}) == NodeDTO(id="a_0", parent_id="a")


def test_run_configuration_is_a_sdk_object_after_json_and_schema_round_trips() -> None:
    config = SAMPLES["AppRunConfig"]
    for loaded in (AppRunConfig.from_json(config.to_json()), AppRunConfig.schema().loads(config.to_json())):
        assert isinstance(loaded.run_configuration, nextmv.RunConfiguration)
        assert loaded.run_configuration.execution_class == "6c9500mb870s"
        assert loaded.options == [AppOption("duration", 10), AppOption("seed", None)]
        assert loaded.get_options() == {"duration": "10"}


def test_uplink_documents_leave_out_none_keys_and_cut_docs() -> None:
    document = _update().to_dict()
    first, second = document["pipeline_graph"]["steps"]
    assert first["docs"] == "x" * MAX_DOCS_LENGTH + "..."
    assert set(first) == {"id", "predecessors", "docs"}
    assert set(second) == {"id", "predecessors", "app_id"}
    assert [set(node) for node in document["pipeline_graph"]["nodes"]] == [
        {"id", "parent_id", "predecessor_ids", "status", "run_id"},
        {"id", "parent_id", "predecessor_ids", "status"},
    ]
    assert "docs" not in json.loads(StepDTO(id="a").to_json())
    for encode_json in (False, True):  # the uplink's fast to_dict builds what dataclasses-json's builds
        assert _update().to_dict(encode_json) == DataClassJsonMixin.to_dict(_update(), encode_json)
    assert ExcludeIfNone(None) is True
    assert ExcludeIfNone(0) is False and ExcludeIfNone("") is False


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: Configuration(local_apps="echo=dir"), "local_apps"),
        (lambda: Configuration(local_apps={"echo": 5}), "local_apps"),
        (lambda: Configuration(local_apps={1: "apps/echo"}), "local_apps"),
        (lambda: AppRunConfig(options="abc"), "options"),
        (lambda: AppRunConfig(options=["duration=10"]), "options"),
        (lambda: AppRunConfig(options={1: "x"}), "options"),
    ],
)
def test_wrong_argument_types_name_the_argument(make, argument: str) -> None:
    with pytest.raises(TypeError, match=rf"\.{argument} must be"):
        make()


def test_local_apps_paths_are_kept_as_strings(tmp_path) -> None:
    conf = Configuration(local_apps={"echo": tmp_path})
    assert conf.local_apps == {"echo": str(tmp_path)}
    assert Configuration.from_json(conf.to_json()) == conf


def test_thread_local_is_private_to_each_thread() -> None:
    assert isinstance(thread_local, threading.local)
    thread_local.value = "main"
    seen = []
    worker = threading.Thread(target=lambda: seen.append(getattr(thread_local, "value", None)))
    worker.start()
    worker.join()
    assert seen == [None] and thread_local.value == "main"


def test_version_satisfies_pins_of_the_original() -> None:
    assert nextpipe.__version__ == nextpipe.VERSION == "v0.8.0"
    version = Version(nextpipe.__version__)  # the distribution's version: "v0.8.0" normalized to "0.8.0"
    assert version >= Version("0.7.3")
    for pin in ("nextpipe>=0.5", "nextpipe>=0.7.3", "nextpipe~=0.7", "nextpipe<1"):
        assert Requirement(pin).specifier.contains(version), pin
    distribution = importlib.metadata.distribution("nextpipe")
    source = json.loads(distribution.read_text("direct_url.json") or "{}").get("url", "")
    if source == ROOT.as_uri():  # installed from this checkout (as CI does): its metadata says the same
        assert Version(distribution.version) == version


def test_import_nextpipe_imports_no_sdk() -> None:
    code = "import sys, nextpipe; print('nextmv' in sys.modules, 'requests' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["False", "False"]
