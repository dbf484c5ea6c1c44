"""
Issue 11: a local run still in progress when the flow fails or is interrupted is stopped, not left running.

The ``probe`` test app writes its process id to a file and sleeps; the tests find its ``uv`` parent and the
run's executor through ``/proc`` and check that the whole process tree ended, that the run's recorded state
reads ``canceled`` (or ``failed``), and that no temporary directory is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import nextmv
import nextmv.local
import pytest

from nextpipe import Configuration, FlowSpec, app, step
from nextpipe.errors import AppRunError
from nextpipe.flow import STATUS_FAILED

PROBE = pathlib.Path(__file__).resolve().parent / "apps" / "probe"
POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.02, backoff=0, jitter=0, max_duration=120)

if not pathlib.Path("/proc/self/stat").exists():
    pytest.skip("these tests read process parents from /proc", allow_module_level=True)


@pytest.fixture
def probe(tmp_path: pathlib.Path) -> str:
    """A copy of the probe app, so that its runs are this test's."""
    directory = tmp_path / "probe"
    shutil.copytree(PROBE, directory, ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
    return str(directory)


@pytest.fixture(autouse=True)
def temp_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    """Our temporary directories and the executors' (``TMPDIR``) in directories of this test; uv offline."""
    monkeypatch.setenv("UV_NO_PROJECT", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    ours, executors = tmp_path / "tmp", tmp_path / "executor-tmp"
    ours.mkdir()
    executors.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(ours))
    monkeypatch.setenv("TMPDIR", str(executors))
    return {"ours": ours, "executors": executors}


def parent(pid: int) -> int:
    """The parent process id of ``pid`` (from /proc)."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet collected by its parent, does not)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or gone between the open and the read
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Wait for ``predicate()`` (a generous bound for a loaded machine); return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def run_processes(pid_file: pathlib.Path) -> list[int]:
    """Once the probe app wrote its pid: the app, its ``uv`` parent and the run's executor."""
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text() != ""), "the app never started"
    app_pid = int(pid_file.read_text())
    uv_pid = parent(app_pid)
    return [app_pid, uv_pid, parent(uv_pid)]


def recorded_status(app_dir: str, run_id: str) -> str:
    return nextmv.local.Application(src=app_dir).run_information(run_id).metadata.status_v2.value


class SlowFlow(FlowSpec):
    @app(app_id="probe", polling_options=POLLING)
    @step
    def slow() -> None:
        """Sleeps (the input asks for it)."""

    @step
    def boom(data: dict[str, Any]) -> None:
        """Fails once the app runs, when the input asks for it."""
        if data.get("fail"):
            PROCESSES.extend(run_processes(pathlib.Path(data["pid_file"])))
            raise ValueError("boom while the local run sleeps")


PROCESSES: list[int] = []


@pytest.mark.parametrize("how", ["failure", "interrupt"])
def test_flow_that_fails_or_is_interrupted_stops_its_local_run(
    how: str, probe: str, tmp_path: pathlib.Path, temp_dirs: dict[str, pathlib.Path]
) -> None:
    PROCESSES.clear()
    pid_file = tmp_path / "pid"
    flow = SlowFlow(
        "stop",
        {"pid_file": str(pid_file), "sleep": 120, "fail": how == "failure"},
        conf=Configuration(local_apps={"probe": probe}),
    )
    if how == "interrupt":

        def interrupt() -> None:
            PROCESSES.extend(run_processes(pid_file))
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            flow.run()
    else:
        with pytest.raises(RuntimeError, match=r"^Flow failed: Step boom failed: boom while the local run sleeps$"):
            flow.run()

    assert len(PROCESSES) == 3
    assert wait_until(lambda: not any(alive(pid) for pid in PROCESSES)), "a process of the run still runs"
    (node,) = flow.graph.get_step(flow.slow.step).nodes
    assert node.status == STATUS_FAILED
    assert recorded_status(probe, node.run_id) == "canceled"
    assert list(temp_dirs["ours"].iterdir()) == []  # no nextpipe_output_* left
    assert list(temp_dirs["executors"].iterdir()) == []  # the executor removed its copy of the app


class SlowAloneFlow(FlowSpec):
    @app(app_id="probe", polling_options=nextmv.PollingOptions(initial_delay=0, delay=0.02, backoff=0, jitter=0))
    @step
    def slow() -> None:
        """Sleeps (the input asks for it)."""


def test_local_run_whose_executor_dies_fails_instead_of_polling_forever(probe: str, tmp_path: pathlib.Path) -> None:
    pid_file = tmp_path / "pid"
    processes: list[int] = []

    def kill_executor() -> None:
        processes.extend(run_processes(pid_file))
        os.kill(processes[2], signal.SIGKILL)  # the executor only: the app and uv go on

    threading.Thread(target=kill_executor, daemon=True).start()
    flow = SlowAloneFlow(
        "dies", {"pid_file": str(pid_file), "sleep": 120}, conf=Configuration(local_apps={"probe": probe})
    )
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step slow failed: ") as raised:
        flow.run()  # polling has no time limit: only noticing the dead executor ends this

    error = raised.value.__cause__
    assert isinstance(error, AppRunError) and error.status == "failed" and error.app_id == "probe"
    assert "executor process ended (exit code -9) unfinished" in str(error)
    assert wait_until(lambda: not any(alive(pid) for pid in processes)), "the app outlived its executor"
    (node,) = flow.graph.get_step(flow.slow.step).nodes
    assert error.run_id == node.run_id and recorded_status(probe, node.run_id) == "failed"


def children() -> set[int]:
    """This process's children."""
    pids = set()
    for task in pathlib.Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


def command(pid: int) -> str:
    """The command line of a process (empty while it is being started)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        return pathlib.Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
    return ""


def test_a_programs_own_sdk_runs_keep_the_sdk_executor(probe: str) -> None:
    import nextpipe._apps.local  # noqa: F401 (puts its stand-in for subprocess into the SDK)

    sdk_app = nextmv.local.Application(src=probe)
    before = children()
    run_id = sdk_app.new_run(input={"a": 1})
    (executor,) = children() - before
    assert wait_until(lambda: command(executor) != "", timeout=10)
    assert command(executor).endswith("/nextmv/local/executor.py")
    for _ in range(20):  # let it finish: the SDK's executor rewrites the run's state in place
        with contextlib.suppress(json.JSONDecodeError):
            result = sdk_app.run_result_with_polling(run_id, POLLING, output_dir_path=None)
            break
    assert result.output["solution"]["stdin"] == '{"a": 1}'


ORPHAN_SCRIPT = """
import sys

import nextmv

from nextpipe import Configuration, FlowSpec, app, step


class Orphan(FlowSpec):
    @app(app_id="probe", polling_options=nextmv.PollingOptions(initial_delay=0, delay=0.05, backoff=0, jitter=0))
    @step
    def slow() -> None:
        pass


Orphan("orphan", {"pid_file": sys.argv[2], "sleep": 120}, conf=Configuration(local_apps={"probe": sys.argv[1]})).run()
"""


def test_local_run_stops_when_the_flow_process_is_killed(
    probe: str, tmp_path: pathlib.Path, temp_dirs: dict[str, pathlib.Path]
) -> None:
    script, pid_file = tmp_path / "orphan.py", tmp_path / "pid"
    script.write_text(ORPHAN_SCRIPT)
    flow_process = subprocess.Popen(
        [sys.executable, str(script), probe, str(pid_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        processes = run_processes(pid_file)
    finally:
        flow_process.kill()  # no chance to stop anything itself
        flow_process.wait()
    assert wait_until(lambda: not any(alive(pid) for pid in processes)), "the run outlived its flow's process"
    (run_id,) = [run.name for run in (pathlib.Path(probe) / ".nextmv" / "runs").iterdir()]
    assert recorded_status(probe, run_id) == "canceled"
    # The executor removed its copy of the app; the killed flow's own empty output directory stays (nothing of
    # that process ran to remove it).
    assert [p.name for p in temp_dirs["executors"].iterdir() if not p.name.startswith("nextpipe_output_")] == []
