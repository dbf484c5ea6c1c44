"""
Findings of a second round of trying nextpipe's new features as a user would (issues 11, 12, 14): each test
failed before its fix.
"""

from __future__ import annotations

import datetime
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import threading

import nextmv
import pytest
from emulator_fixtures import fast_polling

from nextpipe import AppRunConfig, Configuration, FlowSpec, app, foreach, log, needs, step
from nextpipe.graph import FlowDefinitionError
from nextpipe.hooks import FlowHooks
from nextpipe.run_cache import APP_DIR_EXCLUDES, directory_digest

TESTS = pathlib.Path(__file__).resolve().parent
WAIT = 20  # seconds: only reached when a run hangs


class Fan(FlowSpec):
    @foreach()
    @step
    def items(data: int) -> list:
        return list(range(data))

    @needs(predecessors=[items])
    @step
    def double(item: int) -> int:
        return 2 * item


def run_in_thread(flow: FlowSpec) -> BaseException | None:
    """Run the flow in a thread; fail the test if ``run()`` does not return within :data:`WAIT` seconds."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            flow.run()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "run() hangs"
    return outcome[0]


@pytest.mark.parametrize("event", ["node_start", "node_success"])
@pytest.mark.parametrize("exception", [SystemExit, KeyboardInterrupt])
def test_a_node_hook_raising_a_base_exception_neither_hangs_nor_fails_the_flow(
    event: str, exception: type[BaseException], capsys: pytest.CaptureFixture[str]
) -> None:
    # A hook calling sys.exit() in a worker thread used to leave run() waiting forever (node_success) or fail
    # the node (node_start), although a hook never fails the flow.
    class Exiting(FlowHooks):
        pass

    def raising(self, flow, node):
        raise exception("from a hook")

    setattr(Exiting, event, raising)
    flow = Fan("exiting hook", 3, conf=Configuration(summary=False))
    flow.add_hook(Exiting())
    assert run_in_thread(flow) is None
    assert flow.get_result(flow.double) == [0, 2, 4]
    assert f"Hook Exiting.{event} raised {exception.__name__}" in capsys.readouterr().err


@pytest.fixture
def restore_logging():
    """Put the nextpipe and root loggers' handlers and levels back."""
    loggers = [logging.getLogger(), logging.getLogger("nextpipe")]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_a_console_handler_that_filters_out_nextpipe_leaves_the_default_lines(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # A user's console handler for the app's own records that drops nextpipe's: nextpipe's lines used to vanish.
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(lambda record: not record.name.startswith("nextpipe"))
    logging.getLogger().addHandler(handler)
    log("still shown", step_name="mine")
    assert capsys.readouterr().err == "[mine] still shown\n"


class Copy(FlowSpec):
    @app(app_id="passthrough", polling_options=fast_polling(60))
    @step
    def copy() -> None:
        """Copies its input files to its outputs."""


def test_a_local_runs_output_directory_is_private_as_on_the_cloud(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK copies a local run's outputs with copytree, which gave the directory its source's mode (0755):
    # readable by every user, where a cloud run's, a bypass result's and a fresh mkdtemp are 0700.
    monkeypatch.setenv("UV_NO_PROJECT", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    app_dir = tmp_path / "passthrough"
    shutil.copytree(TESTS / "apps" / "passthrough", app_dir, ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "orders.csv").write_text("id\n1\n")
    conf = Configuration(local_apps={"passthrough": str(app_dir)}, cache=True, cache_dir=str(tmp_path / "cache"))
    for _ in range(2):  # a new run, then the same run reused from the cache
        flow = Copy("copy", str(inputs), conf=conf)
        flow.run()
        output = flow.get_result(flow.copy)
        assert (pathlib.Path(output) / "orders.csv").read_text() == "id\n1\n"
        assert os.stat(output).st_mode & 0o777 == 0o700


def local_apps(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, **sources: pathlib.Path) -> dict[str, str]:
    """Copies of local apps under ``tmp_path`` (runs are recorded in the app's directory), by app id."""
    monkeypatch.setenv("UV_NO_PROJECT", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    apps = {}
    for app_id, source in sources.items():
        shutil.copytree(source, tmp_path / app_id, ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
        apps[app_id] = str(tmp_path / app_id)
    return apps


class Relabel(FlowSpec):
    @app(app_id="upstream", bypass_result={"orders": [1, 2]}, full_result=True)
    @step
    def upstream() -> None:
        """Stands for an earlier app run (its full RunResult)."""

    @foreach()
    @needs(predecessors=[upstream])
    @step
    def configs(result):
        return [AppRunConfig(input=result, options={"label": label}) for label in ("first", "second")]

    @app(app_id="echo", polling_options=fast_polling(60))
    @needs(predecessors=[configs])
    @step
    def echo() -> None:
        pass


def test_an_app_run_config_may_wrap_an_upstream_run_result(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An upstream RunResult is sent as its output, but wrapped in an AppRunConfig (to run it with other options)
    # it failed the step with "must be ... an AppRunConfig or an upstream RunResult; got RunResult".
    apps = local_apps(tmp_path, monkeypatch, echo=TESTS.parent / "examples" / "chain" / "apps" / "echo")
    flow = Relabel("relabel", None, conf=Configuration(local_apps=apps, summary=False))
    flow.run()
    outputs = flow.get_result(flow.echo)
    assert [o["solution"] for o in outputs] == [{"orders": [1, 2]}] * 2
    assert [o["metrics"]["label"] for o in outputs] == ["first", "second"]


class Nested(FlowSpec):
    @step
    def config(data):
        return AppRunConfig(input=AppRunConfig(input=data))

    @app(app_id="probe", polling_options=fast_polling(60))
    @needs(predecessors=[config])
    @step
    def probe() -> None:
        pass


def test_an_app_run_config_inside_another_is_named_as_such(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The message used to say the input must be "... an AppRunConfig ...; got AppRunConfig".
    apps = local_apps(tmp_path, monkeypatch, probe=TESTS / "apps" / "probe")
    flow = Nested("nested", {"a": 1}, conf=Configuration(local_apps=apps, summary=False))
    with pytest.raises(RuntimeError) as raised:
        flow.run()
    assert str(raised.value) == (
        "Flow failed: Step probe failed: the input of the AppRunConfig for app probe must be a JSON object (dict), "
        "a string, a directory path or an upstream RunResult; got AppRunConfig"
    )
    assert not (tmp_path / "probe" / ".nextmv").exists()  # refused before a run was made


class Probe(FlowSpec):
    @app(app_id="probe")
    @step
    def probe() -> None:
        pass


def test_a_local_app_mapped_to_its_manifest_file_is_named_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # Mapping the app id to .../app.yaml (a file) said the path "does not exist".
    manifest = TESTS / "apps" / "probe" / "app.yaml"
    monkeypatch.setenv("NEXTPIPE_LOCAL_APPS", f"probe={manifest}")
    with pytest.raises(FlowDefinitionError) as raised:
        Probe("probe", {})
    assert str(raised.value) == (
        f"Step probe: app 'probe' is mapped to the local app directory {manifest}, which is not a directory "
        "(map the app id to the directory that holds app.yaml)."
    )


class Dated(FlowSpec):
    @app(app_id="probe", polling_options=fast_polling(60))
    @step
    def probe() -> None:
        pass


def test_an_input_with_dates_is_cached(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Dates are sent as ISO 8601 text, but the cache key could not be written for them: such a step never reused.
    apps = local_apps(tmp_path, monkeypatch, probe=TESTS / "apps" / "probe")
    conf = Configuration(local_apps=apps, cache=True, cache_dir=str(tmp_path / "cache"), summary=False)
    for data in ({"day": datetime.date(2024, 1, 2)}, {"day": "2024-01-02"}):  # the same text is sent
        flow = Dated("dated", data, conf=conf)
        flow.run()
        assert flow.get_result(flow.probe)["solution"]["stdin"] == '{"day": "2024-01-02"}'
    assert len(os.listdir(tmp_path / "probe" / ".nextmv" / "runs")) == 1


class Configured(FlowSpec):
    @step
    def source(data):
        return data

    @app(
        app_id="probe",
        polling_options=fast_polling(60),
        run_configuration=nextmv.RunConfiguration(execution_class="6c9500mb870s", priority=3),
    )
    @needs(predecessors=[source])
    @step
    def probe() -> None:
        pass


class ConfiguredFiles(FlowSpec):
    @app(
        app_id="passthrough",
        polling_options=fast_polling(60),
        run_configuration=nextmv.RunConfiguration(execution_class="6c9500mb870s"),
    )
    @step
    def copy() -> None:
        pass


def test_a_run_configuration_works_for_a_local_app(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A step written for the cloud with a run_configuration (an execution class, say) failed locally with the
    # SDK's "KeyError: 'format'": the local executor needs the format, which the platform resolves itself.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    apps = local_apps(tmp_path, monkeypatch, probe=TESTS / "apps" / "probe", passthrough=TESTS / "apps" / "passthrough")
    conf = Configuration(local_apps=apps, summary=False)
    for data, sent in (({"a": 1}, '{"a": 1}'), ('{"b": 2}', '{"b": 2}')):
        flow = Configured("configured", data, conf=conf)
        flow.run()
        assert flow.get_result(flow.probe)["solution"]["stdin"] == sent
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "orders.csv").write_text("id\n1\n")
    flow = ConfiguredFiles("configured files", str(inputs), conf=conf)
    flow.run()
    assert (pathlib.Path(flow.get_result(flow.copy)) / "orders.csv").read_text() == "id\n1\n"


def test_a_linked_directory_of_a_local_app_is_part_of_its_code(tmp_path: pathlib.Path) -> None:
    # The SDK copies a linked directory's files into the run, but the code digest skipped them: editing a
    # helper in a linked lib/ reused the run made with the old helper.
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "helper.py").write_text("VALUE = 1\n")
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "main.py").write_text("import helper\n")
    (app_dir / "lib").symlink_to(shared, target_is_directory=True)
    (shared / "loop").symlink_to(app_dir, target_is_directory=True)  # a loop is read once, not forever
    before = directory_digest(str(app_dir), APP_DIR_EXCLUDES)
    assert directory_digest(str(app_dir), APP_DIR_EXCLUDES) == before
    (shared / "helper.py").write_text("VALUE = 2\n")
    assert directory_digest(str(app_dir), APP_DIR_EXCLUDES) != before
