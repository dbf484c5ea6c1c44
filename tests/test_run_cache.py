"""The run cache of app steps: keys, the SQLite store, reuse against the platform emulator, and the CLI."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from typing import Any

import nextmv
import nextmv.cloud
import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import API_KEY, client_for, fast_polling, last_graph, nodes_by_id  # noqa: E402
from platform_emulator import PlatformEmulator, echo_handler  # noqa: E402

from nextpipe import AppRunConfig, Configuration, FlowSpec, app, cache, foreach, join, needs, repeat, step  # noqa: E402
from nextpipe.cli import main as cli_main  # noqa: E402
from nextpipe.flow import FlowDefinitionError, FlowNode  # noqa: E402
from nextpipe.run_cache import (  # noqa: E402
    APP_DIR_EXCLUDES,
    CacheEntry,
    RunStore,
    cache_key,
    canonical_json,
    default_cache_dir,
    directory_digest,
    parse_age,
)

pytest_plugins = ["emulator_fixtures"]

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Every test gets its own cache directory through the environment variable."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("NEXTPIPE_CACHE_DIR", str(directory))
    return directory


def key_of(value: Any, **changes: Any) -> str:
    parts = {
        "app_id": "solver",
        "instance_id": "",
        "options": {"duration": "3"},
        "run_configuration": None,
        "input": {"json": value},
        "code": {"cloud": "https://api.cloud.nextmv.io"},
    }
    parts.update(changes)
    return cache_key(**parts)


def new_run_posts(emu: PlatformEmulator, app_id: str | None = None) -> list[Any]:
    """The run creation requests the emulator received (of one app, or of all)."""
    prefix = f"/v1/applications/{app_id}/runs" if app_id else "/v1/applications/"
    return [r for r in emu.requests_for("POST", prefix) if r.route == "new_run"]


def read_tree(directory: str | pathlib.Path) -> dict[str, bytes]:
    root = pathlib.Path(directory)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def node_of(flow: FlowSpec, step_function: Any, index: int = 0) -> FlowNode:
    return flow.graph.get_step(step_function.step).nodes[index]


# ---------------------------------------------------------------------------------------------------------------------
# The key
# ---------------------------------------------------------------------------------------------------------------------


def test_key_ignores_dict_order_and_whitespace_but_not_list_order() -> None:
    a = {"cases": [{"x": 1, "y": [1, 2]}, {"z": None}], "name": "plan", "weights": {"a": 0.5, "b": 2}}
    b = {"weights": {"b": 2, "a": 0.5}, "name": "plan", "cases": [{"y": [1, 2], "x": 1}, {"z": None}]}
    assert key_of(a) == key_of(b)
    assert key_of({"options": {"b": "1", "a": "2"}}) == key_of({"options": {"a": "2", "b": "1"}})
    assert key_of(a, options={"x": "1", "y": "2"}) == key_of(a, options={"y": "2", "x": "1"})
    assert key_of([1, 2]) != key_of([2, 1])
    assert key_of((1, 2)) == key_of([1, 2])  # both are sent as the same JSON array
    assert canonical_json(b) == '{"cases":[{"x":1,"y":[1,2]},{"z":null}],"name":"plan","weights":{"a":0.5,"b":2}}'


def test_key_of_numbers_follows_the_bytes_sent() -> None:
    # Equal floats give one digest, however they were written.
    assert key_of({"v": float("1.00")}) == key_of({"v": 1.0}) == key_of({"v": 1e0})
    assert key_of({"v": 0.1 + 0.2}) == key_of({"v": 0.30000000000000004})
    # Different floats, or an int and a float (sent as 1 and 1.0), are different inputs.
    assert key_of({"v": 0.1 + 0.2}) != key_of({"v": 0.3})
    assert key_of({"v": 1}) != key_of({"v": 1.0})
    assert key_of({"v": True}) != key_of({"v": 1})
    assert key_of({"v": "1"}) != key_of({"v": 1})
    assert key_of({"v": 2**64}) != key_of({"v": float(2**64)})
    # Keys are compared as JSON writes them: {1: ...} is sent as {"1": ...}.
    assert key_of({1: "a"}) == key_of({"1": "a"})
    assert key_of({1.0: "a"}) != key_of({1: "a"})
    assert key_of({1: "a", "b": [{2: 0, "c": 1}]}) == key_of({"b": [{"c": 1, 2: 0}], 1: "a"})


def test_every_changed_byte_changes_the_key() -> None:
    base = {"name": "plan", "values": [1.5, 2, "x"]}
    text = canonical_json(base)
    keys = {key_of(base)}
    for i in range(len(text)):
        for replacement in ("0", "a", " "):
            changed = text[:i] + replacement + text[i + 1 :]
            if changed == text:
                continue
            try:
                value = json.loads(changed)
            except ValueError:
                continue  # not JSON any more: nothing could send it
            if canonical_json(value) != text:
                keys.add(key_of(value))
                assert key_of(value) != key_of(base), changed
    assert len(keys) > 20
    # Each other part of the key counts as well.
    others = [
        key_of(base, app_id="solver2"),
        key_of(base, instance_id="prod"),
        key_of(base, options={"duration": "4"}),
        key_of(base, options={}),
        key_of(base, run_configuration={"execution_class": "6c9500mb870s"}),
        key_of(base, code={"cloud": "http://127.0.0.1:1"}),
        key_of(base, code={"local": "/apps/solver", "files": "0" * 64}),
        key_of(None, input={"text": canonical_json(base)}),
        key_of(base, repetition=0),
    ]
    assert len({key_of(base), *others}) == len(others) + 1
    # A configuration object counts as the JSON the SDK sends for it.
    configuration = nextmv.RunConfiguration(execution_class="6c9500mb870s")
    assert key_of(base, run_configuration=configuration) == others[4]


def test_key_refuses_what_json_cannot_send() -> None:
    with pytest.raises(TypeError):
        key_of({"when": object()})


def test_directory_digest_covers_names_and_contents_only(tmp_path: pathlib.Path) -> None:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "a.csv").write_bytes(b"x,y\n1,2\n")
    (tmp_path / "b.json").write_bytes(b"{}")
    first = directory_digest(str(tmp_path))
    os.utime(tmp_path / "b.json", (1, 1))
    assert directory_digest(str(tmp_path)) == first  # times do not count
    (tmp_path / "b.json").write_bytes(b"{ }")
    assert directory_digest(str(tmp_path)) != first
    (tmp_path / "b.json").write_bytes(b"{}")
    assert directory_digest(str(tmp_path)) == first
    (tmp_path / "b.json").rename(tmp_path / "c.json")
    assert directory_digest(str(tmp_path)) != first
    (tmp_path / "c.json").rename(tmp_path / "b.json")
    (tmp_path / "empty.txt").write_bytes(b"")
    assert directory_digest(str(tmp_path)) != first
    (tmp_path / "empty.txt").unlink()
    # A local app's run folders and bytecode are no part of its code.
    for excluded in APP_DIR_EXCLUDES:
        (tmp_path / excluded).mkdir()
        (tmp_path / excluded / "state.json").write_text("{}")
    assert directory_digest(str(tmp_path), APP_DIR_EXCLUDES) == first
    assert directory_digest(str(tmp_path)) != first


def test_parse_age_and_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    assert [parse_age(t) for t in ("90", "90s", "1.5m", "12h", "7d", "2w")] == [90, 90, 90, 43200, 604800, 1209600]
    with pytest.raises(ValueError, match="7d"):
        parse_age("seven days")
    monkeypatch.delenv("NEXTPIPE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "nextpipe")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "nextpipe")


# ---------------------------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------------------------


def entry(key: str, app_id: str = "solver", age: float = 0.0, run_id: str = "run-1") -> CacheEntry:
    return CacheEntry(key, app_id, "https://api.cloud.nextmv.io", run_id, "succeeded", time.time() - age, "solve_0")


def test_store_keeps_one_entry_per_key(tmp_path: pathlib.Path) -> None:
    store = RunStore(str(tmp_path / "new" / "dir"))
    assert not os.path.exists(store.path)
    store.put(entry("k1", run_id="run-1"))
    store.put(entry("k1", run_id="run-2"))
    store.put(entry("k2", app_id="other", age=3600))
    assert store.get("k1").run_id == "run-2"
    assert store.get("missing") is None
    assert [e.key for e in store.entries()] == ["k2", "k1"]  # oldest first
    assert [e.key for e in store.entries("other")] == ["k2"]
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store.clear(older_than=60) == 1
    assert store.clear(app_id="nobody") == 0
    assert store.clear() == 1 and store.entries() == []


def test_two_processes_filling_one_store_lose_no_entry(tmp_path: pathlib.Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from nextpipe.run_cache import CacheEntry, RunStore
        store = RunStore(sys.argv[1])
        name = sys.argv[2]
        while time.time() < float(sys.argv[3]):
            pass
        for i in range(200):
            store.put(CacheEntry(f"{name}-{i}", name, "here", f"run-{i}", "succeeded", time.time(), "s_0"))
            store.put(CacheEntry("shared", name, "here", f"run-{i}", "succeeded", time.time(), "s_0"))
        """
    )
    start = str(time.time() + 1.0)  # both start writing at the same moment
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name, start], env=env) for name in ("a", "b")
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    entries = RunStore(str(tmp_path)).entries()
    assert len(entries) == 401
    assert {e.key for e in entries if e.app_id == "a"} >= {f"a-{i}" for i in range(200)}
    assert {e.key for e in entries if e.app_id == "b"} >= {f"b-{i}" for i in range(200)}


# ---------------------------------------------------------------------------------------------------------------------
# Declaring
# ---------------------------------------------------------------------------------------------------------------------


def test_cache_declaration_mistakes_name_the_step() -> None:
    class PythonStepFlow(FlowSpec):
        @cache()
        @step
        def compute(data):
            return data

    with pytest.raises(FlowDefinitionError, match=r"Step compute: @cache applies to app steps"):
        PythonStepFlow("flow", {})

    class BareFlow(FlowSpec):
        @cache
        @app(app_id="solver")
        @step
        def solve():
            pass

    with pytest.raises(FlowDefinitionError, match=r"write @cache\(\), not @cache"):
        BareFlow("flow", {})

    class WrongTypeFlow(FlowSpec):
        @cache(refresh="yes")
        @app(app_id="solver")
        @step
        def solve():
            pass

    with pytest.raises(FlowDefinitionError, match=r"refresh=True or refresh=False, got 'yes'"):
        WrongTypeFlow("flow", {})
    with pytest.raises(TypeError, match="keyword arguments"):
        cache(True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"cache": "yes"}, "cache must be True or False"), ({"cache_max_age": 0}, "cache_max_age must be")],
)
def test_configuration_checks_cache_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Configuration(**fields)


def test_flows_without_cache_have_none() -> None:
    class NoCacheFlow(FlowSpec):
        @app(app_id="solver")
        @step
        def solve():
            pass

    assert NoCacheFlow("flow", {}).run_cache is None
    assert NoCacheFlow("flow", {}, conf=Configuration(cache=True)).run_cache is not None


# ---------------------------------------------------------------------------------------------------------------------
# Flows against the emulator
# ---------------------------------------------------------------------------------------------------------------------

BUG = {"on": True}


class SolveAllFlow(FlowSpec):
    """Fans out five solver runs and one multi-file run, then a Python step that may fail on a bug."""

    @foreach()
    @step
    def cases(data: dict) -> list:
        return [{"case": i, "weights": data["weights"]} for i in range(5)]

    @app(app_id="solver", options={"duration": 3}, polling_options=fast_polling())
    @needs(predecessors=[cases])
    @step
    def solve():
        pass

    @step
    def files(data: dict) -> str:
        return data["dir"]

    @app(app_id="files", polling_options=fast_polling())
    @needs(predecessors=[files])
    @step
    def report():
        pass

    @join()
    @needs(predecessors=[solve])
    @step
    def collect(results: list) -> list:
        return [r[0]["solution"]["case"] for r in results]

    @needs(predecessors=[collect, report])
    @step
    def final(cases: list, report_dir: str) -> int:
        if BUG["on"]:
            raise ValueError("a bug after the expensive runs")
        return len(cases) + len(os.listdir(report_dir))


@pytest.fixture
def files_dir(tmp_path: pathlib.Path) -> str:
    directory = tmp_path / "files"
    (directory / "inputs").mkdir(parents=True)
    (directory / "inputs" / "orders.csv").write_text("id,qty\n1,5\n2,7\n")
    (directory / "inputs" / "notes.txt").write_text("two orders\n")
    return str(directory)


def test_second_run_reuses_every_app_run(
    workflow_env: PlatformEmulator, fast_uplink: float, files_dir: str, capfd: pytest.CaptureFixture[str]
) -> None:
    emu = workflow_env
    data = {"weights": {"a": 1.0, "b": 0.5}, "dir": files_dir}
    BUG["on"] = True
    first = SolveAllFlow("solve", data, conf=Configuration(cache=True))
    with pytest.raises(RuntimeError, match="a bug after the expensive runs"):
        first.run()
    assert len(new_run_posts(emu)) == 6
    first_ids = {n.id: n.run_id for s in first.graph.steps for n in s.nodes if n.run_id}
    first_solutions = first.get_result(first.solve)
    first_files = read_tree(first.get_result(first.report))
    assert first_files == read_tree(files_dir)  # the emulator echoes the files
    capfd.readouterr()

    posts = len(emu.requests_for("POST", "/v1/applications/"))  # new runs and upload URLs
    BUG["on"] = False  # the bug is fixed; the same script runs again
    data_again = {"dir": files_dir, "weights": {"b": 0.5, "a": 1.0}}  # another dict order: the same input
    second = SolveAllFlow("solve", data_again, conf=Configuration(cache=True))
    second.run()
    assert len(emu.requests_for("POST", "/v1/applications/")) == posts  # no new run at all, nothing uploaded
    assert second.get_result(second.collect) == [0, 1, 2, 3, 4] and second.get_result(second.final) == 6
    assert second.get_result(second.solve) == first_solutions
    report_dir = second.get_result(second.report)
    assert read_tree(report_dir) == first_files and report_dir != first.get_result(first.report)
    second_ids = {n.id: n.run_id for s in second.graph.steps for n in s.nodes if n.run_id}
    assert second_ids == first_ids
    err = capfd.readouterr().err
    for node_id, run_id in first_ids.items():
        assert f"[nextpipe] Reused run {run_id} for app step {node_id}, find it at " in err
    assert "Started app step" not in err
    uplinked = nodes_by_id(last_graph(emu))
    assert {node_id: uplinked[node_id]["run_id"] for node_id in first_ids} == first_ids


def option_flow(slow_duration: int) -> type[FlowSpec]:
    """The same script with one option of one step edited."""

    class OneOptionFlow(FlowSpec):
        @app(app_id="solver", options={"duration": 3}, polling_options=fast_polling())
        @step
        def fast():
            pass

        @app(app_id="solver", options={"duration": slow_duration}, polling_options=fast_polling())
        @step
        def slow():
            pass

    return OneOptionFlow


def test_changing_one_option_makes_exactly_one_new_run(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    option_flow(30)("flow", {"x": 1}, conf=Configuration(cache=True)).run()
    assert len(new_run_posts(emu)) == 2
    flow = option_flow(31)("flow", {"x": 1}, conf=Configuration(cache=True))
    flow.run()
    posts = new_run_posts(emu)
    assert len(posts) == 3 and posts[-1].json["options"] == {"duration": "31"}
    assert flow.get_result(flow.slow)["options"] == {"duration": "31"}
    assert flow.get_result(flow.fast)["options"] == {"duration": "3"}


class SingleFlow(FlowSpec):
    @app(app_id="solver", polling_options=fast_polling())
    @step
    def solve():
        pass


def stored_run_id(key_count: int = 1) -> str:
    entries = RunStore(default_cache_dir()).entries()
    assert len(entries) == key_count
    return entries[0].run_id


def test_deleted_or_failed_stored_run_is_run_again(
    platform_env: PlatformEmulator, capfd: pytest.CaptureFixture[str]
) -> None:
    emu = platform_env
    conf = Configuration(cache=True)
    SingleFlow("flow", {"x": 1}, conf=conf).run()
    first_run = stored_run_id()

    # Deleted on the platform: a new run, which replaces the entry.
    nextmv.cloud.Application(client=client_for(emu), id="solver").delete_run(first_run)
    flow = SingleFlow("flow", {"x": 1}, conf=conf)
    flow.run()
    second_run = stored_run_id()
    assert len(new_run_posts(emu)) == 2 and second_run != first_run
    assert node_of(flow, flow.solve).run_id == second_run
    assert f"Not reusing run {first_run} for app step solve_0: it cannot be fetched" in capfd.readouterr().err

    # Pointing at a failed run: a new run again.
    emu.set_app_behavior("solver", lambda input, options, files: RuntimeError("infeasible"))
    failed = nextmv.cloud.Application(client=client_for(emu), id="solver").new_run(input={"x": 1})
    emu.wait_for(lambda: emu.run(failed).status == "failed")
    emu.set_app_behavior("solver", echo_handler)
    store = RunStore(default_cache_dir())
    store.put(CacheEntry(store.entries()[0].key, "solver", emu.url, failed, "succeeded", time.time(), "solve_0"))
    flow = SingleFlow("flow", {"x": 1}, conf=conf)
    flow.run()
    assert len(new_run_posts(emu)) == 4  # with the failed one
    assert stored_run_id() == node_of(flow, flow.solve).run_id not in (failed, first_run, second_run)
    assert f"Not reusing run {failed} for app step solve_0: it ended failed" in capfd.readouterr().err
    assert flow.get_result(flow.solve)["solution"] == {"x": 1}


def test_run_made_by_another_app_version_is_not_reused(
    platform_env: PlatformEmulator, capfd: pytest.CaptureFixture[str]
) -> None:
    emu = platform_env
    emu.set_instance("solver", "prod", "v1", default=True)
    conf = Configuration(cache=True)
    SingleFlow("flow", {"x": 1}, conf=conf).run()
    assert emu.run(stored_run_id()).version_id == "v1"
    SingleFlow("flow", {"x": 1}, conf=conf).run()
    assert len(new_run_posts(emu)) == 1  # same version: reused, after one look at the app and its instance
    assert len(emu.requests_for("GET", "/v1/applications/solver/instances/prod")) == 1

    emu.set_instance("solver", "prod", "v2")
    flow = SingleFlow("flow", {"x": 1}, conf=conf)
    flow.run()
    assert len(new_run_posts(emu)) == 2
    assert emu.run(node_of(flow, flow.solve).run_id).version_id == "v2"
    assert "it was made by app version 'v1', and instance 'prod' now runs 'v2'" in capfd.readouterr().err

    # A version that cannot be read is no version to trust.
    emu.fail_next(1, status=503, method="GET", path_regex=r"/instances/")
    SingleFlow("flow", {"x": 1}, conf=conf).run()
    assert len(new_run_posts(emu)) == 3
    assert "the app version its instance runs cannot be read (HTTPError" in capfd.readouterr().err


def test_step_instance_is_checked_without_reading_the_application(platform_env: PlatformEmulator) -> None:
    class InstanceFlow(FlowSpec):
        @app(app_id="solver", instance_id="candidate", polling_options=fast_polling())
        @step
        def solve():
            pass

    emu = platform_env
    emu.set_instance("solver", "candidate", "v7")
    emu.set_instance("solver", "prod", "v1", default=True)
    for _ in range(2):
        InstanceFlow("flow", {"x": 1}, conf=Configuration(cache=True)).run()
    (run,) = emu.runs.values()
    assert (run.ran_on_instance, run.version_id) == ("candidate", "v7")
    assert [r.path for r in emu.requests_for("GET") if r.route in ("application", "instance")] == [
        "/v1/applications/solver/instances/candidate"
    ]


class SwitchFlow(FlowSpec):
    @cache(refresh=True)
    @app(app_id="solver", polling_options=fast_polling())
    @step
    def fresh():
        pass

    @cache(enabled=False)
    @app(app_id="random", polling_options=fast_polling())
    @step
    def never():
        pass

    @cache()
    @app(app_id="kept", polling_options=fast_polling())
    @step
    def kept():
        pass


def test_step_switches_refresh_and_opt_out(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    flows = [SwitchFlow("flow", {"x": 1}) for _ in range(2)]  # the cache is on for @cache() steps only
    for flow in flows:
        flow.run()
    assert [len(new_run_posts(emu, app_id)) for app_id in ("solver", "random", "kept")] == [2, 2, 1]
    entries = {e.app_id: e.run_id for e in RunStore(default_cache_dir()).entries()}
    assert entries == {
        "solver": node_of(flows[1], SwitchFlow.fresh).run_id,
        "kept": node_of(flows[0], SwitchFlow.kept).run_id,
    }


def test_repetitions_are_runs_of_their_own(platform_env: PlatformEmulator) -> None:
    class RepeatFlow(FlowSpec):
        @repeat(repetitions=3)
        @app(app_id="heuristic", polling_options=fast_polling())
        @step
        def sample():
            pass

    emu = platform_env
    flows = [RepeatFlow("flow", {"x": 1}, conf=Configuration(cache=True)) for _ in range(2)]
    for flow in flows:
        flow.run()
    assert len(new_run_posts(emu)) == 3  # three runs, each reused once
    run_ids = [[node.run_id for node in flow.graph.get_step(RepeatFlow.sample.step).nodes] for flow in flows]
    assert run_ids[0] == run_ids[1] and len(set(run_ids[0])) == 3


def test_expired_entries_are_not_reused(platform_env: PlatformEmulator) -> None:
    emu = platform_env
    conf = Configuration(cache=True, cache_max_age=1e-9)
    SingleFlow("flow", {"x": 1}, conf=conf).run()
    SingleFlow("flow", {"x": 1}, conf=conf).run()
    assert len(new_run_posts(emu)) == 2
    assert len(RunStore(default_cache_dir()).entries()) == 1


def test_app_run_config_overrides_are_part_of_the_key(platform_env: PlatformEmulator) -> None:
    class ConfiguredFlow(FlowSpec):
        @step
        def configure(data: dict) -> AppRunConfig:
            return AppRunConfig(input=data, options={"seed": data["seed"]}, name=f"run {time.time()}")

        @app(app_id="solver", polling_options=fast_polling())
        @needs(predecessors=[configure])
        @step
        def solve():
            pass

    emu = platform_env
    for seed in (1, 2, 1):
        ConfiguredFlow("flow", {"seed": seed}, conf=Configuration(cache=True)).run()
    assert len(new_run_posts(emu)) == 2  # the run's name differs every time, and does not count


@pytest.mark.parametrize("problem", ["corrupt", "unwritable"])
def test_unusable_store_never_fails_the_flow(
    problem: str,
    platform_env: PlatformEmulator,
    tmp_path: pathlib.Path,
    files_dir: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    emu = platform_env
    if problem == "corrupt":
        directory = tmp_path / "corrupt"
        directory.mkdir()
        (directory / "runs.sqlite3").write_bytes(b"this is not a database, " * 100)
    else:
        directory = tmp_path / "a-file"
        directory.write_text("a file where the cache directory should be")
    conf = Configuration(cache=True, cache_dir=str(directory))
    for _ in range(2):
        flow = SolveAllFlow("flow", {"weights": {}, "dir": files_dir}, conf=conf)
        BUG["on"] = False
        flow.run()
        assert flow.get_result(flow.final) == 6
        err = capfd.readouterr().err
        assert err.count("cannot be used") == 1 and "this flow runs without it" in err
    assert len(new_run_posts(emu)) == 12


# ---------------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------------


def test_cache_command_lists_and_clears(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(default_cache_dir())
    store.put(entry("k1", app_id="solver", age=10 * 86400, run_id="run-old"))
    store.put(entry("k2", app_id="solver", run_id="run-new"))
    store.put(entry("k3", app_id="router", run_id="run-router"))
    assert cli_main(["cache", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["STORED", "(UTC)", "APP", "RUN", "STATUS", "STEP", "WHERE"]
    assert [line.split()[2] for line in lines[1:]] == ["run-old", "run-new", "run-router"]
    assert cli_main(["cache", "list", "--app", "router"]) == 0
    assert "run-router" in capsys.readouterr().out
    assert cli_main(["cache", "clear", "--older-than", "7d"]) == 0
    assert capsys.readouterr().out.startswith("Removed 1 stored run from ")
    assert cli_main(["cache", "clear", "--app", "solver"]) == 0
    capsys.readouterr()
    assert [e.run_id for e in store.entries()] == ["run-router"]
    other = tmp_path / "other"
    assert cli_main(["cache", "list", "--dir", str(other)]) == 0
    assert capsys.readouterr().out.startswith("No stored runs in ")
    assert not other.exists()  # listing creates nothing
    (other).mkdir()
    (other / "runs.sqlite3").write_bytes(b"garbage" * 1000)
    assert cli_main(["cache", "list", "--dir", str(other)]) == 2
    assert "the run cache cannot be read" in capsys.readouterr().err


def test_api_key_never_reaches_the_store(platform_env: PlatformEmulator) -> None:
    SingleFlow("flow", {"x": 1}, conf=Configuration(cache=True)).run()
    assert API_KEY.encode() not in pathlib.Path(RunStore(default_cache_dir()).path).read_bytes()


# ---------------------------------------------------------------------------------------------------------------------
# Local apps
# ---------------------------------------------------------------------------------------------------------------------

EXAMPLES = REPO / "examples"
LOCAL_POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.05, backoff=0, jitter=0, max_duration=60)


class LocalFlow(FlowSpec):
    """A multi-file run of the stats app, then an echo run of its totals."""

    @app(app_id="stats", polling_options=LOCAL_POLLING)
    @step
    def stats() -> None:
        """Summarizes the input directory's CSV files."""

    @needs(predecessors=[stats])
    @step
    def totals(stats_dir: str) -> dict:
        with open(os.path.join(stats_dir, "totals.json")) as file:
            return json.load(file)

    @app(app_id="echo", full_result=True, polling_options=LOCAL_POLLING)
    @needs(predecessors=[totals])
    @step
    def echo() -> None:
        """Echoes the totals."""


def local_runs(app_dir: pathlib.Path) -> set[str]:
    runs = app_dir / ".nextmv" / "runs"
    return {p.name for p in runs.iterdir() if p.is_dir()} if runs.exists() else set()


def test_local_apps_reuse_runs_until_their_code_changes(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UV_NO_PROJECT", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    apps = tmp_path / "apps"
    for name, source in (
        ("stats", EXAMPLES / "multifile" / "apps" / "stats"),
        ("echo", EXAMPLES / "chain" / "apps" / "echo"),
    ):
        shutil.copytree(source, apps / name, ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
    conf = Configuration(cache=True, local_apps={"stats": str(apps / "stats"), "echo": str(apps / "echo")})
    data = str(EXAMPLES / "multifile" / "input")

    def run() -> tuple[LocalFlow, dict[str, bytes], nextmv.RunResult]:
        flow = LocalFlow("local", data, conf=conf)
        flow.run()
        return flow, read_tree(flow.get_result(flow.stats)), flow.get_result(flow.echo)

    first, first_files, first_echo = run()
    stats_runs, echo_runs = local_runs(apps / "stats"), local_runs(apps / "echo")
    assert len(stats_runs) == len(echo_runs) == 1
    assert sorted(first_files) == ["summary.csv", "totals.json"]

    # Unchanged: no new local run, the same results (the stored runs' own output).
    second, second_files, second_echo = run()
    assert (local_runs(apps / "stats"), local_runs(apps / "echo")) == (stats_runs, echo_runs)
    assert second_files == first_files
    assert second_echo.id == first_echo.id and second_echo.output == first_echo.output
    assert "Reused run" in capfd.readouterr().err

    # The echo app's code changed: only the echo step runs again.
    with open(apps / "echo" / "main.py", "a") as file:
        file.write("\n# edited\n")
    third, _, third_echo = run()
    assert local_runs(apps / "stats") == stats_runs and len(local_runs(apps / "echo")) == 2
    assert third_echo.id != first_echo.id and third_echo.output["solution"] == first_echo.output["solution"]

    # The stored stats run was deleted: the stats step runs again, and the echo run of the same totals is reused.
    shutil.rmtree(apps / "stats" / ".nextmv" / "runs" / stats_runs.pop())
    fourth, fourth_files, fourth_echo = run()
    assert len(local_runs(apps / "stats")) == 1 and len(local_runs(apps / "echo")) == 2
    assert fourth_files == first_files and fourth_echo.id == third_echo.id
    assert "it cannot be fetched" in capfd.readouterr().err
