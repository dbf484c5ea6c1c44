"""
Issue 11: an app step gives the same result whether its app runs locally (``nextmv.local``) or on the platform.

Each test runs the same flow twice: once with the app mapped to a real local app directory (``tests/apps/``,
``examples/``), once against the platform emulator. The emulator records what the cloud path sent; the local
``probe`` app reports what it read on stdin, so inputs are compared as the app receives them.
"""

from __future__ import annotations

import datetime
import functools
import json
import pathlib
import random
import shutil
import subprocess
import tempfile
from typing import Any

import nextmv
import nextmv.local
import pydantic
import pytest
from nextmv.local import executor as sdk_executor
from nextmv.local import runner

pytest.register_assert_rewrite("emulator_fixtures")

from emulator_fixtures import fast_polling  # noqa: E402
from platform_emulator import PlatformEmulator  # noqa: E402

from nextpipe import AppRunConfig, Configuration, FlowSpec, app, foreach, needs, step  # noqa: E402
from nextpipe._apps import local as local_module  # noqa: E402
from nextpipe._apps.cloud import CloudApp  # noqa: E402
from nextpipe._apps.local import LocalApp  # noqa: E402
from nextpipe._apps.run import _polling_options  # noqa: E402
from nextpipe.flow import FlowNode  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

TESTS = pathlib.Path(__file__).resolve().parent
APP_SOURCES = {
    "probe": TESTS / "apps" / "probe",
    "passthrough": TESTS / "apps" / "passthrough",
    "echo": TESTS.parent / "examples" / "chain" / "apps" / "echo",
}
WHEN = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Copies of the test apps (the SDK records runs under each app's directory), by app id."""
    root = tmp_path_factory.mktemp("parity-apps")
    for name, source in APP_SOURCES.items():
        shutil.copytree(source, root / name, ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
    return {name: str(root / name) for name in APP_SOURCES}


@pytest.fixture(autouse=True)
def local_run_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    """uv offline and project-less; our temporary directories in a directory of this test."""
    monkeypatch.setenv("UV_NO_PROJECT", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def read_tree(directory: str) -> dict[str, str]:
    root = pathlib.Path(directory)
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def run_both(flow_class: type[FlowSpec], flow_input: Any, apps: dict[str, str]) -> tuple[FlowSpec, FlowSpec]:
    """Run the flow locally, then on the emulator the caller set up (``platform_env``); return both flows."""
    local = flow_class("local", flow_input, conf=Configuration(local_apps=apps))
    local.run()
    cloud = flow_class("cloud", flow_input)
    cloud.run()
    return local, cloud


# ---------------------------------------------------------------------------------------------------------------------
# Outputs: every file the app writes, whatever its name
# ---------------------------------------------------------------------------------------------------------------------


class PassthroughFlow(FlowSpec):
    @app(app_id="passthrough", polling_options=fast_polling(60))
    @step
    def copy() -> None:
        """Copies its input files to its outputs, and writes files named like its own files."""


def passthrough(input: Any, options: dict[str, str], files: dict[str, bytes]) -> dict[str, bytes]:
    """What the passthrough app does, for the emulator."""
    named = {name: f"an output named {name}\n".encode() for name in ("main.py", "app.yaml", "statistics.json")}
    return {**files, **named}


def test_output_files_named_like_inputs_or_app_files_are_kept(
    platform_env: PlatformEmulator, apps: dict[str, str], tmp_path: pathlib.Path
) -> None:
    platform_env.set_app_behavior("passthrough", passthrough, output_format="multi-file")
    inputs = tmp_path / "inputs"
    (inputs / "nested").mkdir(parents=True)
    (inputs / "orders.csv").write_text("id,qty\n1,5\n")
    (inputs / "nested" / "regions.csv").write_text("region\nnorth\n")

    local, cloud = run_both(PassthroughFlow, str(inputs), apps)

    expected = {
        "orders.csv": "id,qty\n1,5\n",  # the name of an input file
        "nested/regions.csv": "region\nnorth\n",
        "main.py": "an output named main.py\n",  # the name of a file of the app
        "app.yaml": "an output named app.yaml\n",  # the manifest's name
        "statistics.json": "an output named statistics.json\n",  # the name of the app's statistics file
    }
    assert read_tree(local.get_result(local.copy)) == expected
    assert read_tree(cloud.get_result(cloud.copy)) == expected


# ---------------------------------------------------------------------------------------------------------------------
# Inputs: what the cloud path accepts works locally, with the same effect on the app
# ---------------------------------------------------------------------------------------------------------------------


class Order(pydantic.BaseModel):
    id: int
    due: datetime.datetime
    note: str | None = None


class Item(nextmv.BaseModel):
    name: str
    count: int = 1


INPUTS = [
    {"plain": 1, "when": WHEN, "day": WHEN.date()},  # datetimes, as the SDK's JSON encoder writes them
    json.dumps({"from": "json.dumps", "numbers": [1, 2]}),  # a JSON document held in a str
    "plain words, not JSON",  # text
    Order(id=7, due=WHEN),  # a pydantic model
    Item(name="bolt"),  # a nextmv model
    nextmv.Input(data={"wrapped": True}),  # a nextmv.Input holding JSON
    AppRunConfig(input=json.dumps({"in": "AppRunConfig"}), options={"k": "v"}),
    AppRunConfig(input={"when": WHEN}),
]


class ProbeInputsFlow(FlowSpec):
    @foreach()
    @step
    def inputs(_: Any) -> list:
        return INPUTS

    @app(app_id="probe", polling_options=fast_polling(60))
    @needs(predecessors=[inputs])
    @step
    def probe() -> None:
        """Reports its stdin."""


def cloud_stdin(emu: PlatformEmulator, index: int) -> tuple[str, Any]:
    """What the app of run ``probe_<index>`` reads on the platform: ("text", the upload) or ("json", the input)."""
    (run,) = [r for r in emu.runs_for("probe") if r.name == f"Nextpipe step probe_{index} (probe/local)"]
    if run.uploaded is not None:
        return "text", run.uploaded.decode()
    return "json", run.input


def test_every_input_kind_reaches_the_app_as_on_the_cloud(platform_env: PlatformEmulator, apps: dict[str, str]) -> None:
    platform_env.set_app_behavior("probe", lambda input, options, files: {"solution": {"stdin": "(emulated)"}})
    local, _ = run_both(ProbeInputsFlow, None, apps)

    received = [output["solution"]["stdin"] for output in local.get_result(local.probe)]
    for index, local_stdin in enumerate(received):
        kind, sent = cloud_stdin(platform_env, index)
        if kind == "text":  # uploaded as is: the app reads exactly that text
            assert local_stdin == sent, INPUTS[index]
        else:
            assert json.loads(local_stdin) == sent, INPUTS[index]
    # The kinds above are all present: text was uploaded, JSON was sent in the request, dates as ISO 8601.
    assert received[1] == received[1].strip() and json.loads(received[1]) == {"from": "json.dumps", "numbers": [1, 2]}
    assert received[2] == "plain words, not JSON"
    assert json.loads(received[0]) == {"plain": 1, "when": "2024-01-02T03:04:05+00:00", "day": "2024-01-02"}
    assert json.loads(received[3]) == {"id": 7, "due": "2024-01-02T03:04:05Z"}
    assert json.loads(received[4]) == {"name": "bolt", "count": 1}
    assert json.loads(received[7]) == {"when": "2024-01-02T03:04:05+00:00"}


class JsonTextFlow(FlowSpec):
    @step
    def prepare(data: dict) -> str:
        return json.dumps(data)

    @app(app_id="echo", polling_options=fast_polling(60))
    @needs(predecessors=[prepare])
    @step
    def echo() -> None:
        """A JSON app (``nextmv.load()``) given JSON text."""


def test_json_text_runs_a_local_json_app(apps: dict[str, str]) -> None:
    flow = JsonTextFlow("json text", {"greeting": "hello"}, conf=Configuration(local_apps=apps))
    flow.run()
    assert flow.get_result(flow.echo)["solution"] == {"greeting": "hello"}


# ---------------------------------------------------------------------------------------------------------------------
# full_result metadata
# ---------------------------------------------------------------------------------------------------------------------


class FullResultFlow(FlowSpec):
    @app(app_id="probe", full_result=True, options={"label": "x"}, polling_options=fast_polling(60))
    @step
    def probe() -> None:
        pass


def test_full_result_metadata_is_filled_as_on_the_cloud(platform_env: PlatformEmulator, apps: dict[str, str]) -> None:
    local, cloud = run_both(FullResultFlow, {"a": 1}, apps)
    local_result, cloud_result = local.get_result(local.probe), cloud.get_result(cloud.probe)

    assert local_result.metadata.application_id == cloud_result.metadata.application_id == "probe"
    assert local_result.console_url == str(pathlib.Path(apps["probe"]) / ".nextmv" / "runs" / local_result.id)
    assert local_result.metadata.output_size > 0 and local_result.metadata.input_size > 0
    assert local_result.metadata.options.request_options == cloud_result.metadata.options.request_options
    # Every metadata field the platform fills is filled locally too.
    local_fields, cloud_fields = local_result.metadata.to_dict(), cloud_result.metadata.to_dict()
    empty_locally = [key for key, value in cloud_fields.items() if value not in ("", None, 0) and not local_fields[key]]
    assert empty_locally == []
    assert local_result.name == cloud_result.name and local_result.description == cloud_result.description


# ---------------------------------------------------------------------------------------------------------------------
# Polling a local run
# ---------------------------------------------------------------------------------------------------------------------


class DefaultPollingFlow(FlowSpec):
    @app(app_id="probe")
    @step
    def probe() -> None:
        """The SDK's default polling options."""


def test_local_run_with_default_polling_chooses_no_random_delay(
    apps: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spreads: list[tuple[float, float]] = []
    uniform = random.uniform
    monkeypatch.setattr(random, "uniform", lambda a, b: spreads.append((a, b)) or uniform(a, b))
    node = FlowNode(DefaultPollingFlow("shape", None).graph.steps[0], 0)
    polling = _polling_options(node, nextmv.DEFAULT_POLLING_OPTIONS, LocalApp)
    assert polling.initial_delay == 0 and polling.sleep_duration_func() <= 0.05

    flow = DefaultPollingFlow("default polling", {"a": 1}, conf=Configuration(local_apps=apps))
    flow.run()
    assert json.loads(flow.get_result(flow.probe)["solution"]["stdin"]) == {"a": 1}
    assert spreads == []  # no random first delay was drawn


@pytest.mark.parametrize("backend", ["cloud", "local"])
def test_polling_options_given_are_honoured_for_every_backend(backend: str) -> None:
    node = FlowNode(DefaultPollingFlow("shape", None).graph.steps[0], 0)
    given = nextmv.PollingOptions(initial_delay=0.7, delay=3, backoff=0.5, jitter=0.2, max_duration=9)
    polling = _polling_options(node, given, CloudApp if backend == "cloud" else LocalApp)
    assert polling is not given and polling.sleep_duration_func is None
    assert (polling.initial_delay, polling.delay, polling.backoff, polling.jitter) == (0.7, 3, 0.5, 0.2)


class NotJsonFlow(FlowSpec):
    @step
    def prepare(data: dict) -> dict:
        return {"nested": {1, 2}}

    @app(app_id="probe", polling_options=fast_polling(60))
    @needs(predecessors=[prepare])
    @step
    def probe() -> None:
        pass


def test_input_that_is_not_json_fails_alike_and_makes_no_run(
    platform_env: PlatformEmulator, apps: dict[str, str]
) -> None:
    runs = pathlib.Path(apps["probe"]) / ".nextmv" / "runs"
    runs_before = set(runs.iterdir()) if runs.exists() else set()
    errors = []
    for conf in (Configuration(local_apps=apps), None):
        with pytest.raises(RuntimeError, match=r"^Flow failed: Step probe failed: ") as raised:
            NotJsonFlow("not json", {}, conf=conf).run()
        errors.append(str(raised.value))
    assert errors[0] == errors[1] and "the input of app probe cannot be sent as JSON" in errors[0]
    assert platform_env.runs_for("probe") == []
    assert (set(runs.iterdir()) if runs.exists() else set()) == runs_before


# ---------------------------------------------------------------------------------------------------------------------
# A nextmv whose private parts differ: local runs still work, as the SDK makes them, and the loss is logged once
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_sdk_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK check and the once-only log lines start afresh (and are restored after the test)."""
    monkeypatch.setattr(local_module, "_sdk_support", functools.cache(local_module._sdk_support.__wrapped__))
    monkeypatch.setattr(local_module, "_logged", set())


def test_without_the_executors_private_functions_local_runs_use_the_sdks_executor(
    apps: dict[str, str],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_sdk_check: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delattr(sdk_executor, "_copy_new_or_modified_files")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "orders.csv").write_text("id,qty\n1,5\n")
    for name in ("first", "second"):
        flow = PassthroughFlow(name, str(inputs), conf=Configuration(local_apps=apps))
        flow.run()
        outputs = read_tree(flow.get_result(flow.copy))
        # The SDK's executor ran: it leaves out files named like the app's own files.
        assert "main.py" not in outputs and "app.yaml" not in outputs
    assert capfd.readouterr().err.count("lacks nextmv.local.executor._copy_new_or_modified_files") == 1


def test_runs_started_in_an_unknown_way_still_run_and_the_loss_is_logged_once(
    apps: dict[str, str], monkeypatch: pytest.MonkeyPatch, fresh_sdk_check: None, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "subprocess", subprocess)  # nextpipe never sees the executor's process
    monkeypatch.setattr(local_module, "deflated_serialize_json", None)
    for name in ("first", "second"):
        flow = FullResultFlow(name, {"a": 1}, conf=Configuration(local_apps=apps))
        flow.run()
        result = flow.get_result(flow.probe)
        assert result.metadata.status_v2 == nextmv.StatusV2.succeeded
        assert json.loads(result.output["solution"]["stdin"]) == {"a": 1}
    err = capfd.readouterr().err
    assert err.count("starts local runs in a way nextpipe does not know: a local run cannot be stopped") == 1
    assert err.count("lacks nextmv._serialization.deflated_serialize_json") == 1


class LiveLogsFlow(FlowSpec):
    @app(app_id="echo", emit_live_logs=True, polling_options=fast_polling(60))
    @step
    def echo() -> None:
        """Logs one line."""


def test_a_poll_that_reads_a_half_written_state_is_tried_again(
    apps: dict[str, str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    torn = {"run_result_with_polling": 1, "run_logs_with_polling": 1}  # the first poll of each reads a torn file
    for name in torn:
        sdk_poll = getattr(nextmv.local.Application, name)

        def poll(self: Any, *args: Any, _name: str = name, _sdk_poll: Any = sdk_poll, **options: Any) -> Any:
            if torn[_name]:
                torn[_name] -= 1
                raise json.JSONDecodeError("half-written", "{", 1)
            return _sdk_poll(self, *args, **options)

        monkeypatch.setattr(nextmv.local.Application, name, poll)
    flow = LiveLogsFlow("torn", {"a": 1}, conf=Configuration(local_apps=apps))
    flow.run()
    assert flow.get_result(flow.echo)["solution"] == {"a": 1}
    assert torn == {"run_result_with_polling": 0, "run_logs_with_polling": 0}
    assert capfd.readouterr().err.count("[echo_0] echo [") == 1
