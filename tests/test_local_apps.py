"""SPEC section 9: app steps running local Nextmv apps through real `nextmv.local` runs, offline.

The example apps of `examples/` are copied to a temporary directory once (the
SDK records its runs under each app's `.nextmv/`). Every local run costs about
a second, so each running test checks several points of the contract on the
same runs. Tests that make no run cover the construction errors, the unmapped
app and `bypass_result`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nextmv
import nextmv.local
import pytest

from nextpipe import AppOption, AppRunConfig, Configuration, FlowSpec, app, needs, step
from nextpipe.errors import AppRunError
from nextpipe.flow import STATUS_FAILED, STATUS_SUCCEEDED, FlowDefinitionError, FlowNode

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
APP_SOURCES = {
    "echo": EXAMPLES / "chain" / "apps" / "echo",
    "scale": EXAMPLES / "fanout" / "apps" / "scale",
    "stats": EXAMPLES / "multifile" / "apps" / "stats",
    "report": EXAMPLES / "multifile" / "apps" / "report",
}
POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.05, backoff=0, jitter=0, max_duration=60)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding `apps/<name>` (copies of the example apps) and `input/` (the multifile CSV files)."""
    root = tmp_path_factory.mktemp("local-apps")
    for name, source in APP_SOURCES.items():
        shutil.copytree(source, root / "apps" / name, ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
    shutil.copytree(EXAMPLES / "multifile" / "input", root / "input")
    return root


@pytest.fixture(autouse=True)
def local_run_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """uv offline and project-less for the runs; temporary directories (`nextpipe_output_*`) inside `tmp_path`."""
    monkeypatch.setenv("UV_NO_PROJECT", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def node_of(flow: FlowSpec, step_function: Any) -> FlowNode:
    """The single node of a step."""
    (node,) = flow.graph.get_step(step_function.step).nodes
    return node


def run_information(app_dir: Path, run_id: str) -> nextmv.RunInformation:
    """What the SDK recorded about a local run."""
    return nextmv.local.Application(src=str(app_dir)).run_information(run_id)


class StatsReportFlow(FlowSpec):
    """A directory through the stats app, then the report app with overrides from an `AppRunConfig`."""

    @app(app_id="stats", polling_options=POLLING)
    @step
    def stats() -> None:
        """Multi-file run on the flow's input directory."""

    @needs(predecessors=[stats])
    @step
    def configure(stats_dir: str) -> AppRunConfig:
        return AppRunConfig(
            input=stats_dir,
            options=[AppOption(name="title", value="Overridden title")],
            name="report-run",
            description="configured by a step",
        )

    @app(
        app_id="report",
        options={"title": "Decorator title", "max_rows": 2},
        full_result=True,
        polling_options=POLLING,
    )
    @needs(predecessors=[configure])
    @step
    def report() -> None:
        """Multi-file run with options merged from the decorator and the AppRunConfig."""


def test_mapping_overrides_and_multi_file_runs(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative paths, from the environment and from the Configuration; the Configuration wins for "report".
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("NEXTPIPE_LOCAL_APPS", "stats=apps/stats;report=no/such/report")
    monkeypatch.delenv("NEXTMV_API_KEY", raising=False)
    flow = StatsReportFlow("local", str(workspace / "input"), conf=Configuration(local_apps={"report": "apps/report"}))
    monkeypatch.chdir(tmp_path)  # paths were resolved when the flow was constructed
    flow.run()

    # The stats run: a multi-file input directory, its files in a fresh output directory, the default naming.
    stats_dir = Path(flow.get_result(flow.stats))
    assert stats_dir.name.startswith("nextpipe_output_") and stats_dir.parent == tmp_path
    assert sorted(path.name for path in stats_dir.iterdir()) == ["summary.csv", "totals.json"]
    stats_node = node_of(flow, flow.stats)
    assert stats_node.status == STATUS_SUCCEEDED and stats_node.run_id.startswith("local-")
    stats_run = run_information(workspace / "apps" / "stats", stats_node.run_id)
    assert stats_run.name == "Nextpipe step stats_0 (stats/local)"
    assert stats_run.description == "This run was started by the nextpipe parent: stats (run-id: local)"

    # The report run: full result, AppRunConfig name/description, options merged and sent as strings.
    result = flow.get_result(flow.report)
    assert isinstance(result, nextmv.RunResult)
    report_node = node_of(flow, flow.report)
    assert result.id == report_node.run_id and result.id.startswith("local-")
    output_dir = Path(result.output)
    assert output_dir.name.startswith("nextpipe_output_") and output_dir != stats_dir
    report = (output_dir / "report.md").read_text()
    assert report.startswith("# Overridden title\n")
    assert "## summary.csv" in report and "_2 more rows not shown._" in report and "## totals.json" in report
    assert result.metadata.metrics["files"] == 2
    report_run = run_information(workspace / "apps" / "report", result.id)
    assert (report_run.name, report_run.description) == ("report-run", "configured by a step")
    assert report_run.metadata.options.request_options == {"title": "Overridden title", "max_rows": "2"}

    # Runs are recorded in the mapped directories; no Nextmv client was ever needed.
    assert (workspace / "apps" / "stats" / ".nextmv" / "runs" / stats_node.run_id).is_dir()
    assert (workspace / "apps" / "report" / ".nextmv" / "runs" / result.id).is_dir()
    assert "NEXTMV_API_KEY" not in os.environ and flow._client is None


class EchoChainFlow(FlowSpec):
    """The full result of one echo run is the input of the next."""

    @app(app_id="echo", options={"label": "first"}, full_result=True, emit_live_logs=True, polling_options=POLLING)
    @step
    def first() -> None:
        """Echoes the flow's input; its live logs are relayed."""

    @app(app_id="echo", options={"label": "second"}, polling_options=POLLING)
    @needs(predecessors=[first])
    @step
    def second() -> None:
        """Echoes the first run's output."""


class RecordingClient:
    """Stands in for `nextmv.cloud.Client`: records the uplink's requests."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def request(self, method: str, endpoint: str, payload: dict[str, Any] | None = None, **kwargs: Any) -> None:
        assert (method, endpoint) == ("PUT", "v1/internal/applications/wf-app/runs/wf-run/flow")
        self.payloads.append(payload)


def test_run_result_chaining_live_logs_and_uplink(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Inside a workflow run: the uplink reports the local runs' ids, and runs are named after the workflow.
    monkeypatch.setenv("NEXTMV_APP_ID", "wf-app")
    monkeypatch.setenv("NEXTMV_RUN_ID", "wf-run")
    monkeypatch.setenv("NEXTPIPE_LOCAL_APPS", f"echo={workspace / 'apps' / 'echo'}")
    data = {"greeting": "hello", "numbers": [1, 2, 3]}
    client = RecordingClient()
    flow = EchoChainFlow("chain", data, client=client)
    flow.run()

    first = flow.get_result(flow.first)
    assert isinstance(first, nextmv.RunResult)
    assert first.output["solution"] == data and first.metadata.metrics["label"] == "first"
    second = flow.get_result(flow.second)
    assert isinstance(second, dict)  # not a full result: the run's output
    assert second["solution"] == first.output  # the upstream RunResult's output was sent
    assert second["options"] == {"label": "second"}

    first_id, second_id = node_of(flow, flow.first).run_id, node_of(flow, flow.second).run_id
    assert first_id == first.id and second_id.startswith("local-") and second_id != first_id
    err = capfd.readouterr().err
    runs = workspace / "apps" / "echo" / ".nextmv" / "runs"
    assert f"[nextpipe] Started app step first_0 run, find it at {runs / first_id}\n" in err
    assert f"[nextpipe] Started app step second_0 run, find it at {runs / second_id}\n" in err
    assert "[nextpipe] Emitting live logs for app step first_0 ...\n" in err
    assert "Emitting live logs for app step second_0" not in err
    assert "[first_0] echo [first]: " in err  # the app's own log line, relayed with the node id
    assert "echo [second]" not in err  # no live logs asked for the second step

    second_run = run_information(workspace / "apps" / "echo", second_id)
    assert second_run.name == "Nextpipe step second_0 (wf-app/wf-run)"
    assert second_run.description == "This run was started by the nextpipe parent: wf-app (run-id: wf-run)"
    nodes = {node["id"]: node for node in client.payloads[-1]["pipeline_graph"]["nodes"]}
    assert nodes["first_0"]["run_id"] == first_id and nodes["second_0"]["run_id"] == second_id
    assert nodes["first_0"]["status"] == nodes["second_0"]["status"] == STATUS_SUCCEEDED


class FailingScaleFlow(FlowSpec):
    @step
    def prepare(data: dict[str, Any]) -> dict[str, Any]:
        return data

    @app(app_id="scale", options={"factor": 2}, polling_options=POLLING)
    @needs(predecessors=[prepare])
    @step
    def scale() -> None:
        """The scale app raises KeyError without `numbers` in its input."""

    @needs(predecessors=[scale])
    @step
    def after(result: dict[str, Any]) -> str:
        return "never"


@pytest.mark.parametrize("live_logs", [False, True])
def test_failing_local_run_fails_the_flow(
    live_logs: bool, workspace: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(FailingScaleFlow.scale.step.app, "emit_live_logs", live_logs)
    flow = FailingScaleFlow(
        "failing", {"values": [1, 2]}, conf=Configuration(local_apps={"scale": str(workspace / "apps" / "scale")})
    )
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step scale failed: ") as raised:
        flow.run()
    err = capfd.readouterr().err
    assert err.count("KeyError: 'numbers'") == 1  # in the relayed logs, else in the error: never twice
    assert f"(logs: {workspace / 'apps' / 'scale' / '.nextmv' / 'runs' / node_of(flow, flow.scale).run_id}/logs)" in err
    error = raised.value.__cause__
    assert isinstance(error, AppRunError) and (error.app_id, error.status) == ("scale", "failed")
    node = node_of(flow, flow.scale)
    assert node.status == STATUS_FAILED and node.run_id.startswith("local-")
    message = str(raised.value)
    assert "app scale" in message and node.run_id in message and "failed" in message.split(node.run_id, 1)[1]
    assert flow.get_result(flow.prepare) == {"values": [1, 2]}  # finished steps stay readable
    assert flow.get_result(flow.after) is None  # no successor ran
    run = run_information(workspace / "apps" / "scale", node.run_id)
    assert run.metadata.status_v2 == nextmv.StatusV2.failed


class SolveFlow(FlowSpec):
    @app(app_id="solver")
    @step
    def solve() -> None:
        """An app step of app `solver`."""


@pytest.mark.parametrize("via", ["configuration", "environment"])
@pytest.mark.parametrize("problem", ["missing", "no-manifest"])
def test_bad_mapping_fails_at_construction(
    via: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "solver"
    if problem == "no-manifest":
        directory.mkdir()
        (directory / "main.py").write_text("print('no app.yaml here')\n")
    monkeypatch.chdir(tmp_path)
    conf = Configuration()
    if via == "configuration":
        conf = Configuration(local_apps={"solver": "solver"})
    else:
        monkeypatch.setenv("NEXTPIPE_LOCAL_APPS", "solver=solver")
    with pytest.raises(FlowDefinitionError) as raised:
        SolveFlow("bad", {}, conf=conf)
    message = str(raised.value)
    assert "Step solve" in message and str(directory) in message
    assert ("does not exist" if problem == "missing" else "app.yaml") in message


def test_unmapped_app_without_api_key_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEXTMV_API_KEY", raising=False)
    flow = SolveFlow("unmapped", {"items": []})
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: ") as raised:
        flow.run()
    message = str(raised.value)
    assert "'solver'" in message
    assert "local_apps" in message and "NEXTPIPE_LOCAL_APPS" in message and "NEXTMV_API_KEY" in message
    assert flow._client is None


class BypassFlow(FlowSpec):
    @app(app_id="nowhere", bypass_result={"value": 42})
    @step
    def plain() -> None:
        pass

    @app(app_id="nowhere", bypass_result={"value": 7}, full_result=True)
    @step
    def full() -> None:
        pass


def test_bypass_result_needs_no_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEXTMV_API_KEY", raising=False)
    flow = BypassFlow("bypass", {})
    flow.run()
    assert flow.get_result(flow.plain) == {"value": 42}
    full = flow.get_result(flow.full)
    assert isinstance(full, nextmv.RunResult)
    assert full.id == "bypassed-run" and full.output == {"value": 7}
    assert full.metadata.status_v2 == nextmv.StatusV2.succeeded
    assert node_of(flow, flow.plain).status == STATUS_SUCCEEDED
    assert flow._client is None
    assert not list(tmp_path.glob("nextpipe_output_*"))  # no files: no output directory left behind
