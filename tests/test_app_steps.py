"""SPEC section 5: app steps, run through the real ``nextmv`` SDK against the platform emulator."""

from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import nextmv
import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import (  # noqa: E402
    API_KEY,
    FLOW_PATH,
    WF_APP,
    WF_RUN,
    fast_polling,
    last_graph,
    nextpipe_threads,
    nodes_by_id,
    wait_for_no_nextpipe_threads,
)
from platform_emulator import PlatformEmulator, RunFailure  # noqa: E402

import nextpipe._apps.cloud as app_cloud  # noqa: E402
import nextpipe._apps.run as app_run  # noqa: E402
from nextpipe import AppOption, AppRunConfig, FlowSpec, app, foreach, needs, step  # noqa: E402
from nextpipe._apps import PollingStopped  # noqa: E402
from nextpipe._apps.cloud import CloudApp  # noqa: E402
from nextpipe._apps.local import LocalApp  # noqa: E402
from nextpipe.errors import AppRunError  # noqa: E402
from nextpipe.flow import STATUS_FAILED, STATUS_SUCCEEDED, FlowNode  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

ECHO_STATISTICS = {"schema": "v1", "run": {"duration": 0.0}}


def new_run_posts(emu: PlatformEmulator, app_id: str = "echo") -> list[Any]:
    """The run creation requests of an app (not its upload URL requests)."""
    return [r for r in emu.requests_for("POST", f"/v1/applications/{app_id}/runs") if r.route == "new_run"]


def echo_output(solution: Any, options: dict[str, str] | None = None) -> dict[str, Any]:
    return {"options": options or {}, "solution": solution, "statistics": ECHO_STATISTICS}


@pytest.fixture
def private_tempdir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Make ``tempfile`` create its directories under a directory of this test only."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def output_dirs(directory: pathlib.Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith("nextpipe_output_")}


def read_tree(directory: str | pathlib.Path) -> dict[str, str]:
    root = pathlib.Path(directory)
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------------
# Flows
# ---------------------------------------------------------------------------------------------------------------------


class JsonFlow(FlowSpec):
    @step
    def prepare(data):
        return {"items": data["items"], "prepared": True}

    @app(
        app_id="echo",
        instance_id="inst-decorator",
        options={"duration": 3, "skip": None, "flag": True, "ratio": 0.5},
        polling_options=fast_polling(),
    )
    @needs(predecessors=[prepare])
    @step
    def solve():
        pass

    @needs(predecessors=[solve])
    @step
    def final(result):
        return result["solution"]["items"]


class ConfiguredFlow(FlowSpec):
    @app(
        app_id="echo",
        run_configuration=nextmv.RunConfiguration(execution_class="6c9500mb870s"),
        polling_options=fast_polling(),
    )
    @step
    def solve():
        pass


class FailingRunFlow(FlowSpec):
    @step
    def prepare(data):
        return {"value": data}

    @app(app_id="echo", polling_options=fast_polling())
    @needs(predecessors=[prepare])
    @step
    def solve():
        pass

    @needs(predecessors=[solve])
    @step
    def final(result):
        FINAL_CALLS.append(result)
        return result


FINAL_CALLS: list[Any] = []


class BadInputFlow(FlowSpec):
    @step
    def prepare(data):
        return data

    @needs(predecessors=[prepare])
    @step
    def make_input(data):
        return data["bad"]

    @app(app_id="echo", polling_options=fast_polling())
    @needs(predecessors=[make_input])
    @step
    def solve():
        pass


# ---------------------------------------------------------------------------------------------------------------------
# The run request
# ---------------------------------------------------------------------------------------------------------------------


def test_json_app_step_request_without_workflow_ids(
    platform_env: PlatformEmulator, capfd: pytest.CaptureFixture
) -> None:
    emu = platform_env
    flow = JsonFlow("json", {"items": [1, 2, 3]})
    flow.run()
    (run,) = emu.runs.values()
    console = f"https://cloud.nextmv.io/app/echo/run/{run.run_id}?view=details"
    assert f"[nextpipe] Started app step solve_0 run, find it at {console}\n" in capfd.readouterr().err

    (post,) = new_run_posts(emu)
    assert post.query == {"instance_id": "inst-decorator"}
    body = post.json
    assert body["name"] == "Nextpipe step solve_0 (echo/local)"
    assert body["description"] == "This run was started by the nextpipe parent: echo (run-id: local)"
    assert body["options"] == {"duration": "3", "flag": "True", "ratio": "0.5"}  # strings, None dropped
    assert body["input"] == {"items": [1, 2, 3], "prepared": True}
    # No run configuration given: the SDK still sends one, resolved from the input.
    assert body["configuration"] == {"format": {"input": {"type": "json"}, "output": {"type": "json"}}}

    (run,) = emu.runs.values()
    expected = echo_output({"items": [1, 2, 3], "prepared": True}, {"duration": "3", "flag": "True", "ratio": "0.5"})
    assert flow.get_result(flow.solve) == expected  # the run's output
    assert flow.get_result(flow.final) == [1, 2, 3]
    solve_step = flow.graph.get_step(flow.solve.step)
    assert solve_step.nodes[0].run_id == run.run_id
    assert flow.solve.step.get_run_ids() == [run.run_id]
    assert run.instance_id == "inst-decorator"
    assert emu.requests_for("PUT", "/v1/internal/") == []  # no workflow run ids: no uplink
    assert emu.unrouted_requests() == []


def test_json_app_step_request_with_workflow_ids(workflow_env: PlatformEmulator) -> None:
    emu = workflow_env
    flow = JsonFlow("json", {"items": [4]})
    flow.run()

    (post,) = new_run_posts(emu)
    assert post.json["name"] == f"Nextpipe step solve_0 ({WF_APP}/{WF_RUN})"
    assert post.json["description"] == f"This run was started by the nextpipe parent: {WF_APP} (run-id: {WF_RUN})"
    assert flow.get_result(flow.final) == [4]
    assert emu.flow_updates, "the active uplink sent the graph"
    assert {r.status for r in emu.requests_for("PUT", FLOW_PATH)} == {204}


def test_long_names_are_cut(platform_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emu = platform_env
    long_app = "a" * 90
    monkeypatch.setenv("NEXTMV_APP_ID", long_app)
    monkeypatch.setenv("NEXTMV_RUN_ID", "r" * 20)

    class LongFlow(FlowSpec):
        @app(app_id="echo", polling_options=fast_polling())
        @step
        def a_step_with_a_really_long_name_that_goes_well_beyond_fifty_characters():
            pass

    LongFlow("long", {}).run()
    (post,) = new_run_posts(emu)
    node_id = "a_step_with_a_really_long_name_that_goes_well_beyond_fifty_characters_0"
    full = f"Nextpipe step {node_id[:50]} ({long_app}/{'r' * 20})"
    assert len(full) > 128
    assert post.json["name"] == full[:128]
    assert post.json["description"] == f"This run was started by the nextpipe parent: {long_app} (run-id: {'r' * 20})"


def test_run_configuration_is_sent_when_set(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    flow = ConfiguredFlow("configured", {"x": 1})
    flow.run()
    (post,) = new_run_posts(emu)
    assert post.json["configuration"] == {"execution_class": "6c9500mb870s"}
    assert "instance_id" not in post.query  # no instance id anywhere: the app's default instance
    assert flow.get_result(flow.solve) == echo_output({"x": 1})


def test_client_passed_to_the_flow_is_used(emu: PlatformEmulator) -> None:
    client = nextmv.cloud.Client(api_key=API_KEY, url=emu.url)
    flow = ConfiguredFlow("explicit client", {"y": 2}, client=client)
    flow.run()
    assert flow.get_result(flow.solve)["solution"] == {"y": 2}
    assert len(new_run_posts(emu)) == 1


# ---------------------------------------------------------------------------------------------------------------------
# AppRunConfig, RunResult chaining
# ---------------------------------------------------------------------------------------------------------------------


def test_foreach_app_run_configs(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    decorator_configuration = nextmv.RunConfiguration(execution_class="small", secrets_collection_id="secrets")

    class ConfigsFlow(FlowSpec):
        @foreach()
        @step
        def configs(data):
            return [
                AppRunConfig(
                    input={"i": 0},
                    name="first run",
                    description="first description",
                    options={"b": "x", "c": None},
                    run_configuration=nextmv.RunConfiguration(execution_class="big"),
                    instance_id="inst-run",
                ),
                AppRunConfig(input={"i": 1}, options=[AppOption("a", 5), AppOption("d", 2.5)]),
            ]

        @app(
            app_id="echo",
            instance_id="inst-decorator",
            options={"a": 1, "b": 2},
            run_configuration=decorator_configuration,
            polling_options=fast_polling(),
        )
        @needs(predecessors=[configs])
        @step
        def solve():
            pass

    flow = ConfigsFlow("configs", None)
    flow.run()

    posts = sorted(new_run_posts(emu), key=lambda r: r.json["input"]["i"])
    first, second = (p.json for p in posts)
    assert first["name"] == "first run"
    assert first["description"] == "first description"
    assert first["options"] == {"a": "1", "b": "x"}
    assert first["configuration"] == {"execution_class": "big"}  # replaces the decorator's as a whole
    assert posts[0].query == {"instance_id": "inst-run"}

    assert second["name"] == "Nextpipe step solve_1 (echo/local)"
    assert second["description"] == "This run was started by the nextpipe parent: echo (run-id: local)"
    assert second["options"] == {"a": "5", "b": "2", "d": "2.5"}
    assert second["configuration"] == {"execution_class": "small", "secrets_collection_id": "secrets"}
    assert posts[1].query == {"instance_id": "inst-decorator"}

    results = flow.get_result(flow.solve)
    assert [r["solution"] for r in results] == [{"i": 0}, {"i": 1}]  # node order follows the foreach list
    assert results[0]["options"] == {"a": "1", "b": "x"}
    assert decorator_configuration.to_dict() == {"execution_class": "small", "secrets_collection_id": "secrets"}


def test_app_nodes_record_the_platform_side_of_their_timing(platform_env: PlatformEmulator) -> None:
    platform_env.set_app_behavior("slow", lambda input, options, files: {"solution": 1}, duration=0.2)

    class TimedFlow(FlowSpec):
        @app(app_id="slow", polling_options=fast_polling())
        @step
        def solve():
            pass

    flow = TimedFlow("timed", {})
    flow.run()
    (node,) = flow.graph.steps[0].nodes
    (record,) = platform_env.runs_for("slow")
    assert node.run_created_at is not None and node.run_created_at.tzinfo is not None
    assert abs(node.run_created_at.timestamp() - record.created_at) < 0.01
    # The platform reports the run's duration: created + duration is when it finished there.
    assert (node.run_finished_at - node.run_created_at).total_seconds() >= 0.2
    assert node.started_at <= node.run_created_at <= node.run_finished_at <= node.finished_at


def test_full_result_and_run_result_chaining(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.set_app_behavior("double", lambda input, options, files: {"value": input["solution"]["value"] * 2})

    class ChainFlow(FlowSpec):
        @app(app_id="echo", full_result=True, polling_options=fast_polling())
        @step
        def first():
            pass

        @app(app_id="double", options={"k": "v"}, polling_options=fast_polling())
        @needs(predecessors=[first])
        @step
        def second():
            pass

    flow = ChainFlow("chain", {"value": 21})
    flow.run()

    result = flow.get_result(flow.first)
    assert isinstance(result, nextmv.RunResult)
    (first_run,) = emu.runs_for("echo")
    assert result.id == first_run.run_id
    assert result.metadata.status_v2 == nextmv.StatusV2.succeeded
    assert result.output == echo_output({"value": 21})

    (post,) = new_run_posts(emu, "double")
    assert post.json["input"] == result.output  # the RunResult's output is sent, not the RunResult
    assert post.json["options"] == {"k": "v"}
    assert flow.get_result(flow.second) == {"value": 42}


# ---------------------------------------------------------------------------------------------------------------------
# Multi-file runs and output directories
# ---------------------------------------------------------------------------------------------------------------------


def test_directory_input_is_uploaded_and_files_come_back_as_a_directory(
    platform_env: PlatformEmulator, tmp_path: pathlib.Path, private_tempdir: pathlib.Path
) -> None:
    emu = platform_env
    emu.set_app_behavior(
        "stats",
        lambda input, options, files: {"summary.txt": f"{len(files)} files".encode(), "copy/a.csv": files["a.csv"]},
    )
    inputs = tmp_path / "inputs"
    (inputs / "nested").mkdir(parents=True)
    (inputs / "a.csv").write_text("x,y\n1,2\n")
    (inputs / "nested" / "b.txt").write_text("bee")

    class FilesFlow(FlowSpec):
        @app(app_id="stats", polling_options=fast_polling())
        @step
        def stats():
            pass

        @app(app_id="echo", full_result=True, polling_options=fast_polling())
        @needs(predecessors=[stats])
        @step
        def again():
            pass

    flow = FilesFlow("files", str(inputs))
    flow.run()

    # The directory was uploaded: upload URL, then the tar.gz PUT, then a run on the upload id.
    assert len(emu.requests_for("POST", "/v1/applications/stats/runs/uploadurl")) == 1
    (stats_run,) = emu.runs_for("stats")
    (put,) = emu.requests_for("PUT", f"/upload/{stats_run.upload_id}")
    assert put.body[:2] == b"\x1f\x8b"  # a tar.gz
    (post,) = new_run_posts(emu, "stats")
    assert post.json["upload_id"] == stats_run.upload_id and "input" not in post.json
    assert stats_run.input_files == {"a.csv": b"x,y\n1,2\n", "nested/b.txt": b"bee"}

    output = flow.get_result(flow.stats)
    assert isinstance(output, str) and os.path.isdir(output)
    assert os.path.basename(output).startswith("nextpipe_output_")
    assert os.path.dirname(output) == str(private_tempdir)
    assert read_tree(output) == {"summary.txt": "2 files", "copy/a.csv": "x,y\n1,2\n"}

    # The output directory of one app step is a multi-file input of the next; full_result gives the directory too.
    (again_run,) = emu.runs_for("echo")
    assert again_run.input_files == {"summary.txt": b"2 files", "copy/a.csv": b"x,y\n1,2\n"}
    again = flow.get_result(flow.again)
    assert isinstance(again, nextmv.RunResult)
    assert os.path.isdir(again.output) and os.path.basename(again.output).startswith("nextpipe_output_")
    assert read_tree(again.output) == read_tree(output)
    assert output_dirs(private_tempdir) == {os.path.basename(output), os.path.basename(again.output)}


def test_json_run_leaves_no_output_directory(platform_env: PlatformEmulator, private_tempdir: pathlib.Path) -> None:
    assert output_dirs(private_tempdir) == set()
    flow = JsonFlow("json", {"items": []})
    flow.run()
    assert flow.get_result(flow.final) == []
    assert tempfile.gettempdir() == str(private_tempdir)
    assert output_dirs(private_tempdir) == set()


def test_json_input_with_multi_file_output(platform_env: PlatformEmulator, private_tempdir: pathlib.Path) -> None:
    emu = platform_env
    emu.set_app_behavior("report", lambda input, options, files: {"plan.csv": f"n\n{input['n']}\n".encode()})

    class ReportFlow(FlowSpec):
        @app(app_id="report", polling_options=fast_polling())
        @step
        def report():
            pass

    flow = ReportFlow("report", {"n": 7})
    flow.run()
    output = flow.get_result(flow.report)
    assert read_tree(output) == {"plan.csv": "n\n7\n"}
    assert output_dirs(private_tempdir) == {os.path.basename(output)}
    assert new_run_posts(emu, "report")[0].json["input"] == {"n": 7}


# ---------------------------------------------------------------------------------------------------------------------
# bypass_result
# ---------------------------------------------------------------------------------------------------------------------


def test_bypass_result_makes_no_request(platform_env: PlatformEmulator) -> None:
    emu = platform_env

    class BypassFlow(FlowSpec):
        @app(app_id="echo", bypass_result={"solution": "canned"}, full_result=True)
        @step
        def full():
            pass

        @app(app_id="echo", bypass_result={"solution": "plain"})
        @needs(predecessors=[full])
        @step
        def plain():
            pass

    flow = BypassFlow("bypass", {"x": 1})
    flow.run()
    full = flow.get_result(flow.full)
    assert isinstance(full, nextmv.RunResult)
    assert full.id == "bypassed-run"
    assert full.metadata.status_v2 == nextmv.StatusV2.succeeded
    assert full.output == {"solution": "canned"}
    assert flow.get_result(flow.plain) == {"solution": "plain"}
    assert emu.requests == []


def test_bypass_directory_is_copied_privately_with_links_to_files_inside_it(
    platform_env: PlatformEmulator, tmp_path: pathlib.Path, private_tempdir: pathlib.Path, capfd: pytest.CaptureFixture
) -> None:
    emu = platform_env
    bypass = tmp_path / "bypass"
    (bypass / "sub").mkdir(parents=True)
    (bypass / "data.txt").write_text("data")
    (bypass / "sub" / "inner.txt").write_text("inner")
    os.symlink("data.txt", bypass / "relative_link")  # relative: would resolve against the copy's folder
    os.symlink(bypass / "sub" / "inner.txt", bypass / "sub" / "absolute_link")
    os.chmod(bypass, 0o777)

    class BypassDirFlow(FlowSpec):
        @app(app_id="echo", bypass_result=str(bypass))
        @step
        def files():
            pass

        @app(app_id="echo", bypass_result=str(bypass), full_result=True)
        @step
        def files_full():
            pass

    flow = BypassDirFlow("bypass dir", None)
    flow.run()
    outputs = [flow.get_result(flow.files), flow.get_result(flow.files_full).output]
    assert outputs[0] != outputs[1]
    for output in outputs:
        copied = pathlib.Path(output)
        assert copied.parent == private_tempdir and copied.name.startswith("nextpipe_output_")
        assert copied.stat().st_mode & 0o777 == 0o700  # private, whatever the source's mode
        assert read_tree(copied) == {
            "data.txt": "data",
            "relative_link": "data",
            "sub/absolute_link": "inner",
            "sub/inner.txt": "inner",
        }
        assert not [p for p in copied.rglob("*") if p.is_symlink()]  # links became the files they point to
    err = capfd.readouterr().err
    assert "[nextpipe] Bypassing app step files_0 run, using bypass result\n" in err
    assert "[nextpipe] Bypassing app step files_full_0 run, using bypass result\n" in err
    assert emu.requests == []


@pytest.mark.parametrize("link", ["outside", "directory", "dangling"])
def test_bypass_directory_with_a_link_leading_out_of_it_is_refused(
    link: str, tmp_path: pathlib.Path, private_tempdir: pathlib.Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not to be copied")
    bypass = tmp_path / "bypass"
    (bypass / "sub").mkdir(parents=True)
    (bypass / "data.txt").write_text("data")
    target = {"outside": outside / "secret.txt", "directory": bypass / "sub", "dangling": bypass / "missing"}[link]
    os.symlink(target, bypass / "the_link")

    class BypassDirFlow(FlowSpec):
        @app(app_id="echo", bypass_result=str(bypass))
        @step
        def files():
            pass

    with pytest.raises(RuntimeError, match=r"^Flow failed: Step files failed: the bypass_result directory ") as raised:
        BypassDirFlow("bypass dir", None).run()
    assert f"symbolic link the_link to {target}" in str(raised.value)
    assert output_dirs(private_tempdir) == set()


# ---------------------------------------------------------------------------------------------------------------------
# Live logs, run ids on the uplink, polling
# ---------------------------------------------------------------------------------------------------------------------


def test_live_logs_are_relayed_with_the_node_id(platform_env: PlatformEmulator, capfd: pytest.CaptureFixture) -> None:
    emu = platform_env
    emu.set_app_behavior("echo", duration=0.2, logs=["alpha line", "beta line", "gamma line"])

    class LogsFlow(FlowSpec):
        @app(app_id="echo", emit_live_logs=True, polling_options=fast_polling())
        @step
        def solve():
            pass

    flow = LogsFlow("logs", {"x": 1})
    flow.run()
    err = capfd.readouterr().err
    assert "[nextpipe] Emitting live logs for app step solve_0 ...\n" in err
    for line in ("alpha line", "beta line", "gamma line"):
        assert f"[solve_0] {line}\n" in err
    (run,) = emu.runs.values()
    assert emu.requests_for("GET", f"/v1/applications/echo/runs/{run.run_id}/logs/live")
    assert flow.get_result(flow.solve)["solution"] == {"x": 1}


def test_run_id_is_pushed_on_the_uplink_while_the_run_is_in_progress(
    workflow_env: PlatformEmulator, fast_uplink: float
) -> None:
    emu = workflow_env
    emu.hold_runs(True, app_id="echo")
    flow = JsonFlow("uplink", {"items": [1]})
    errors: list[BaseException] = []

    def run() -> None:
        try:
            flow.run()
        except BaseException as error:
            errors.append(error)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        (run_record,) = emu.wait_for_runs(1, timeout=5)

        def pushed() -> bool:
            return any(
                nodes_by_id(u["pipeline_graph"]).get("solve_0", {}).get("run_id") == run_record.run_id
                for u in emu.flow_updates
            )

        emu.wait_for(pushed, timeout=5)
        assert emu.run(run_record.run_id).status == "running"  # pushed before the run finished
    finally:
        emu.release_runs()
        runner.join(10)
    assert not runner.is_alive() and errors == []
    node = flow.graph.get_step(flow.solve.step).nodes[0]
    assert node.run_id == run_record.run_id
    final = nodes_by_id(last_graph(emu))
    assert final["solve_0"]["run_id"] == run_record.run_id
    assert "run_id" not in final["prepare_0"] and "run_id" not in final["final_0"]
    assert {n["status"] for n in final.values()} == {STATUS_SUCCEEDED}


def test_explicit_polling_options_are_honoured() -> None:
    node = _solo_node()
    given = nextmv.PollingOptions(initial_delay=0.123, delay=0.01, backoff=0, jitter=0, max_duration=10)
    original = dataclasses.asdict(given)
    for _ in range(20):
        polling = app_run._polling_options(node, given, CloudApp)
        assert polling is not given
        assert polling.initial_delay == 0.123
        assert (polling.delay, polling.backoff, polling.jitter, polling.max_duration) == (0.01, 0, 0, 10)
    assert dataclasses.asdict(given) == original  # the user's object is left alone (no stop added)

    assert polling.stop() is False
    node.cancel = True
    with pytest.raises(PollingStopped):  # not True, on which the SDK prints a line of its own
        polling.stop()

    def mine() -> bool:
        return False

    with_stop = nextmv.PollingOptions(initial_delay=0, stop=mine)
    assert app_run._polling_options(node, with_stop, LocalApp).stop is mine


def test_default_polling_options_get_a_random_initial_delay() -> None:
    node = _solo_node()
    definition_options = node.parent.definition.app.polling_options
    assert definition_options is nextmv.DEFAULT_POLLING_OPTIONS  # the decorator's default, by identity
    before = copy.deepcopy(dataclasses.asdict(nextmv.DEFAULT_POLLING_OPTIONS))
    delays = [app_run._polling_options(node, definition_options, CloudApp).initial_delay for _ in range(50)]
    assert all(0 <= d < 5 for d in delays)
    assert len(set(delays)) > 1
    assert dataclasses.asdict(nextmv.DEFAULT_POLLING_OPTIONS) == before
    assert nextmv.DEFAULT_POLLING_OPTIONS.initial_delay == 1 and nextmv.DEFAULT_POLLING_OPTIONS.stop is None


def test_flow_with_default_polling_and_live_logs_leaves_the_global_options_alone(
    platform_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    emu = platform_env
    emu.set_app_behavior("echo", duration=0, logs=["only line"])
    monkeypatch.setattr(app_cloud, "INITIAL_DELAY_SPREAD", 0.0)  # keep the randomized first delay at 0
    before = dataclasses.asdict(nextmv.DEFAULT_POLLING_OPTIONS)

    class DefaultPollingFlow(FlowSpec):
        @app(app_id="echo", emit_live_logs=True)
        @step
        def solve():
            pass

    flow = DefaultPollingFlow("default polling", {"x": 1})
    flow.run()
    assert flow.get_result(flow.solve)["solution"] == {"x": 1}
    assert dataclasses.asdict(nextmv.DEFAULT_POLLING_OPTIONS) == before
    assert nextmv.DEFAULT_POLLING_OPTIONS.sleep_duration_func is None
    assert "[solve_0] only line" in capfd.readouterr().err


def test_explicit_fast_polling_makes_a_short_chain_fast(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.set_app_behavior("echo", duration=0.2)
    flow = JsonFlow("fast", {"items": [9]})
    started = time.monotonic()
    flow.run()
    elapsed = time.monotonic() - started
    assert flow.get_result(flow.final) == [9]
    assert elapsed < 1.5, f"a 3-step chain with a 0.2 s run took {elapsed:.2f} s"
    (run,) = emu.runs.values()
    polls = emu.requests_for("GET", f"/v1/applications/echo/runs/{run.run_id}/metadata")
    assert polls and polls[0].time - run.created_at < 0.5  # no randomized initial delay before the first poll


def _solo_node() -> FlowNode:
    class SoloFlow(FlowSpec):
        @app(app_id="echo", bypass_result={})
        @step
        def solo():
            pass

    flow = SoloFlow("solo", None)
    return FlowNode(flow.graph.steps[0], 0)


# ---------------------------------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def final_calls() -> Iterator[list[Any]]:
    FINAL_CALLS.clear()
    yield FINAL_CALLS
    FINAL_CALLS.clear()


def test_failed_sub_run_fails_the_flow(platform_env: PlatformEmulator, final_calls: list[Any]) -> None:
    emu = platform_env

    def infeasible(input: Any, options: dict[str, str], files: dict[str, bytes]) -> Any:
        raise RunFailure("infeasible: no vehicle left")

    emu.set_app_behavior("echo", infeasible)
    flow = FailingRunFlow("failing run", 5)
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: ") as raised:
        flow.run()
    (run,) = emu.runs.values()
    message = str(raised.value)
    assert "echo" in message and run.run_id in message and "infeasible: no vehicle left" in message
    assert final_calls == []  # the successor never ran
    assert flow.get_result(flow.prepare) == {"value": 5}
    assert flow.get_result(flow.final) is None
    node = flow.graph.get_step(flow.solve.step).nodes[0]
    assert node.status == STATUS_FAILED
    assert node.run_id == run.run_id
    assert "infeasible: no vehicle left" in node.error
    error = raised.value.__cause__  # what a retry filter sees
    assert isinstance(error, AppRunError) and isinstance(error, RuntimeError)
    assert (error.app_id, error.run_id, error.status) == ("echo", run.run_id, "failed")
    assert run.cancel_requests == 0  # a run that ended needs no cancel


def test_sub_run_canceled_on_the_platform_fails_the_flow(
    platform_env: PlatformEmulator, final_calls: list[Any]
) -> None:
    emu = platform_env
    emu.hold_runs(True, app_id="echo")

    def cancel_from_outside() -> None:
        (run,) = emu.wait_for_runs(1, timeout=5)
        outside = nextmv.cloud.Application(client=nextmv.cloud.Client(api_key=API_KEY, url=emu.url), id="echo")
        outside.cancel_run(run.run_id)

    canceller = threading.Thread(target=cancel_from_outside)
    canceller.start()
    flow = FailingRunFlow("canceled run", 1)
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: ") as raised:
        flow.run()
    canceller.join(5)
    (run,) = emu.runs.values()
    assert run.status == "canceled"
    message = str(raised.value)
    assert "echo" in message and run.run_id in message and "canceled" in message
    assert final_calls == []
    assert flow.get_result(flow.prepare) == {"value": 1}


def test_failed_multi_file_run_leaves_no_output_directory(
    platform_env: PlatformEmulator, tmp_path: pathlib.Path, private_tempdir: pathlib.Path
) -> None:
    emu = platform_env
    emu.set_app_behavior("stats", lambda input, options, files: RunFailure("bad csv"), output_format="multi-file")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("x\n")

    class FailingFilesFlow(FlowSpec):
        @app(app_id="stats", polling_options=fast_polling())
        @step
        def stats():
            pass

    with pytest.raises(RuntimeError, match=r"^Flow failed: Step stats failed: .*bad csv"):
        FailingFilesFlow("failing files", str(tmp_path / "in")).run()
    assert output_dirs(private_tempdir) == set()
    assert len(emu.runs_for("stats")) == 1


def test_app_run_config_with_a_directory_input(
    platform_env: PlatformEmulator, tmp_path: pathlib.Path, private_tempdir: pathlib.Path
) -> None:
    emu = platform_env
    for name in ("north", "south"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "region.txt").write_text(name)

    class RegionsFlow(FlowSpec):
        @foreach()
        @step
        def regions(root):
            return [AppRunConfig(input=f"{root}/{name}", name=f"region {name}") for name in ("north", "south")]

        @app(app_id="echo", polling_options=fast_polling())
        @needs(predecessors=[regions])
        @step
        def solve():
            pass

    flow = RegionsFlow("regions", str(tmp_path))
    flow.run()
    outputs = flow.get_result(flow.solve)
    assert [read_tree(o) for o in outputs] == [{"region.txt": "north"}, {"region.txt": "south"}]
    runs = sorted(emu.runs.values(), key=lambda r: r.name)
    assert [(r.name, r.input_files) for r in runs] == [
        ("region north", {"region.txt": b"north"}),
        ("region south", {"region.txt": b"south"}),
    ]
    assert all(r.upload_id for r in runs)


def test_flow_failure_cancels_app_runs_in_progress(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.hold_runs(True, app_id="slow")

    class CancelFlow(FlowSpec):
        @app(app_id="slow", polling_options=fast_polling(max_duration=30))
        @step
        def slow():
            pass

        @step
        def boom(data):
            emu.wait_for(lambda: bool(emu.requests_for("GET", "/v1/applications/slow/runs/")), timeout=5)  # polled
            raise ValueError("boom while the slow run is held")

    flow = CancelFlow("cancel", {"x": 1})
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step boom failed: boom while the slow run is held$"):
        flow.run()
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"run() took {elapsed:.2f} s to return after the failure"
    (run,) = emu.runs_for("slow")
    patches = emu.requests_for("PATCH", f"/v1/applications/slow/runs/{run.run_id}/cancel")
    assert patches and patches[0].status == 204  # (a second cancel would be harmless)
    assert emu.run(run.run_id).canceled and emu.run(run.run_id).status == "canceled"
    assert flow.graph.get_step(flow.slow.step).nodes[0].status == STATUS_FAILED


def test_cancel_requests_are_sent_at_once_and_bounded_when_the_platform_hangs(
    platform_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cancels used to go one after the other, each bounded only by the SDK (20 s; over HTTPS with retries).
    emu = platform_env
    emu.hold_runs(True, app_id="slow")
    emu.set_delay(3, method="PATCH", path_regex=r".*/cancel$")  # answered, but late
    monkeypatch.setattr("nextpipe._runner.RUN_CANCEL_GRACE", 1.0)

    class HangingCancels(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return [{"item": 1}, {"item": 2}, {"item": 3}]

        @app(app_id="slow", polling_options=fast_polling(max_duration=30))
        @needs(predecessors=[fan])
        @step
        def slow():
            pass

        @step
        def boom(data):
            emu.wait_for(lambda: len(emu.runs_for("slow")) == 3, timeout=5)
            raise ValueError("boom")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step boom failed: boom$"):
        HangingCancels("hanging", {}).run()
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"run() took {elapsed:.2f} s to return while cancel requests hung"
    emu.wait_for(lambda: sum(r.cancel_requests for r in emu.runs_for("slow")) == 3, timeout=5)  # all three sent


def test_flow_failure_while_a_run_is_being_created_still_cancels_it(platform_env: PlatformEmulator) -> None:
    """The run exists on the platform only once its creation request is answered: it must not be left running."""
    emu = platform_env
    emu.hold_runs(True, app_id="slow")
    emu.set_delay(0.5, method="POST", path_regex=r"^/v1/applications/slow/runs$")

    class CreatingFlow(FlowSpec):
        @app(app_id="slow", polling_options=fast_polling(max_duration=30))
        @step
        def slow():
            pass

        @step
        def boom(data):
            emu.wait_for(lambda: bool(emu.requests_for("POST", "/v1/applications/slow/runs")), timeout=5)
            raise ValueError("boom while the slow run is being created")

    flow = CreatingFlow("creating", {"x": 1})
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step boom failed: "):
        flow.run()
    elapsed = time.monotonic() - started
    patches_when_run_returned = emu.requests_for("PATCH")
    assert elapsed < 3
    (run,) = emu.wait_for_runs(1, timeout=5)
    emu.wait_for(lambda: emu.run(run.run_id).canceled, timeout=5)  # canceled in the end, by the worker
    # run() must not return before: a script whose flow failed exits right after, and the run would stay held.
    assert {p.path for p in patches_when_run_returned} == {f"/v1/applications/slow/runs/{run.run_id}/cancel"}


def test_ctrl_c_cancels_app_runs_in_progress(workflow_env: PlatformEmulator, fast_uplink: float) -> None:
    emu = workflow_env
    emu.hold_runs(True, app_id="slow")

    class InterruptFlow(FlowSpec):
        @app(app_id="slow", polling_options=fast_polling(max_duration=30))
        @step
        def slow():
            pass

    main_thread = threading.main_thread()
    assert threading.current_thread() is main_thread

    def interrupt() -> None:
        emu.wait_for(lambda: bool(emu.requests_for("GET", "/v1/applications/slow/runs/")), timeout=5)  # polled
        os.kill(os.getpid(), signal.SIGINT)

    flow = InterruptFlow("interrupt", {})
    timer = threading.Thread(target=interrupt, daemon=True)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        flow.run()
    elapsed = time.monotonic() - started
    timer.join(5)
    assert elapsed < 3
    (run,) = emu.runs_for("slow")
    assert emu.requests_for("PATCH", f"/v1/applications/slow/runs/{run.run_id}/cancel")
    assert emu.run(run.run_id).canceled
    assert nodes_by_id(last_graph(emu))["slow_0"]["status"] == STATUS_FAILED  # the final state reached the platform


def test_run_that_outlasts_its_polling_time_limit_is_canceled(
    platform_env: PlatformEmulator, private_tempdir: pathlib.Path
) -> None:
    emu = platform_env
    emu.hold_runs(True, app_id="slow")

    class LimitFlow(FlowSpec):
        @app(app_id="slow", polling_options=fast_polling(max_duration=0.3))
        @step
        def slow():
            pass

    with pytest.raises(
        RuntimeError, match=r"^Flow failed: Step slow failed: run \S+ of app slow could not be followed: "
    ) as raised:
        LimitFlow("limit", {"x": 1}).run()
    (run,) = emu.runs_for("slow")
    assert "TimeoutError" in str(raised.value)
    error = raised.value.__cause__
    assert isinstance(error, AppRunError) and (error.run_id, error.status) == (run.run_id, None)
    assert run.cancel_requests == 1 and run.status == "canceled"  # not left running on the platform
    assert output_dirs(private_tempdir) == set()


def test_platform_error_while_polling_cancels_the_run(
    platform_env: PlatformEmulator, private_tempdir: pathlib.Path
) -> None:
    emu = platform_env
    emu.hold_runs(True, app_id="slow")
    emu.fail_next(1, status=503, method="GET", path_regex=r"^/v1/applications/slow/runs/[^/]+/metadata$")

    class PollFlow(FlowSpec):
        @app(app_id="slow", polling_options=fast_polling())
        @step
        def slow():
            pass

    with pytest.raises(RuntimeError, match=r"^Flow failed: Step slow failed: .*could not be followed: HTTPError.*503"):
        PollFlow("poll", {"x": 1}).run()
    (run,) = emu.runs_for("slow")
    assert run.cancel_requests == 1 and run.status == "canceled"
    assert output_dirs(private_tempdir) == set()


def test_interrupt_while_the_worker_sleeps_between_polls_leaves_no_output_directory(
    platform_env: PlatformEmulator, private_tempdir: pathlib.Path
) -> None:
    emu = platform_env
    emu.hold_runs(True, app_id="slow")
    slow_polling = nextmv.PollingOptions(initial_delay=0, delay=2, backoff=0, jitter=0, max_duration=30)

    class SleepyFlow(FlowSpec):
        @app(app_id="slow", polling_options=slow_polling)
        @step
        def slow():
            pass

    seen: list[set[str]] = []

    def interrupt() -> None:
        emu.wait_for(lambda: bool(emu.requests_for("GET", "/v1/applications/slow/runs/")), timeout=5)  # polled once
        seen.append(output_dirs(private_tempdir))
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    workers = set(nextpipe_threads())
    try:
        with pytest.raises(KeyboardInterrupt):
            SleepyFlow("sleepy", {}).run()
        assert len(seen) == 1 and len(seen[0]) == 1  # the node's output directory existed while it polled
        assert output_dirs(private_tempdir) == set()  # gone, although the worker still sleeps in the SDK's poll
        (run,) = emu.runs_for("slow")
        assert run.canceled
    finally:
        wait_for_no_nextpipe_threads(timeout=10, ignore=workers)


@pytest.mark.parametrize(
    "bad", [{1, 2}, object(), {"nested": {1, 2}}, {"o": object()}], ids=["set", "object", "nested-set", "nested-object"]
)
def test_input_that_is_not_json_names_the_step(platform_env: PlatformEmulator, bad: Any) -> None:
    emu = platform_env
    flow = BadInputFlow("bad input", {"bad": bad})
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: ") as raised:
        flow.run()
    assert API_KEY not in str(raised.value)
    assert flow.get_result(flow.prepare) == {"bad": bad}
    assert flow.get_result(flow.make_input) is bad
    assert new_run_posts(emu) == []


def test_http_500_on_run_creation_names_the_step(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.fail_next(1, status=500, path_regex=r"^/v1/applications/echo/runs$", method="POST", message="db on fire")
    flow = JsonFlow("http 500", {"items": [1]})
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: .*500") as raised:
        flow.run()
    assert API_KEY not in str(raised.value)
    assert flow.get_result(flow.prepare) == {"items": [1], "prepared": True}
    assert flow.get_result(flow.final) is None
    assert emu.runs == {}


def test_unreachable_platform_names_the_step(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    emu.stop_listening()
    flow = JsonFlow("unreachable", {"items": [2]})
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step solve failed: ") as raised:
        flow.run()
    assert time.monotonic() - started < 5
    assert API_KEY not in str(raised.value)
    assert flow.get_result(flow.prepare) == {"items": [2], "prepared": True}


def test_api_key_never_leaks(workflow_env: PlatformEmulator, fast_uplink: float, capfd: pytest.CaptureFixture) -> None:
    emu = workflow_env
    emu.set_app_behavior("echo", duration=0.1, logs=["a log line"])

    class LeakFlow(FlowSpec):
        @app(app_id="echo", emit_live_logs=True, full_result=True, polling_options=fast_polling())
        @step
        def solve():
            pass

    flow = LeakFlow("leak", {"x": 1})
    flow.run()
    assert repr(flow.get_result(flow.solve)).count(API_KEY) == 0

    emu.fail_next(1, status=500, path_regex=r"^/v1/applications/echo/runs$", method="POST")
    failing = LeakFlow("leak again", {"x": 2})
    with pytest.raises(RuntimeError) as raised:
        failing.run()
    assert API_KEY not in str(raised.value) and API_KEY not in repr(raised.value)

    out, err = capfd.readouterr()
    assert "[solve_0] a log line" in err
    assert API_KEY not in out and API_KEY not in err
    flow_requests = emu.requests_for("PUT", "/v1/internal/")
    assert flow_requests
    for request in emu.requests:
        assert API_KEY.encode() not in request.body
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in flow_requests)  # sent only as the header
