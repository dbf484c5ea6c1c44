"""A decision workflow run the way the platform runs it: a subprocess with the input on stdin and the run's ids set.

``examples/decision_app/main.py`` runs ``prepare → solve (app "echo") → decide``. The platform emulator plays
Nextmv Cloud: it runs the ``echo`` app and receives the flow's graph on the uplink.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import API_KEY, last_graph, nodes_by_id, parse_rfc3339_utc  # noqa: E402
from platform_emulator import PlatformEmulator  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

APP_DIR = pathlib.Path(__file__).resolve().parent.parent / "examples" / "decision_app"
DECISION_APP, DECISION_RUN = "decision-app", "decision-run-1"
INPUT = {
    "orders": [
        {"id": "o1", "quantity": 3},
        {"id": "o2", "quantity": 0},
        {"id": "o3", "quantity": 7},
        {"id": "o4", "quantity": 2},
    ]
}


def platform_env(emu: PlatformEmulator, home: pathlib.Path) -> dict[str, str]:
    """The environment the platform gives a run: its ids, the endpoint and key; nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTMV_", "NEXTPIPE_"))}
    env.update(
        HOME=str(home),
        NEXTMV_APP_ID=DECISION_APP,
        NEXTMV_RUN_ID=DECISION_RUN,
        NEXTMV_ENDPOINT=emu.url,
        NEXTMV_API_KEY=API_KEY,
        PYTHONUNBUFFERED="1",
    )
    return env


def run_app(emu: PlatformEmulator, tmp_path: pathlib.Path, data: object) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(APP_DIR / "main.py")],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=platform_env(emu, home),
        timeout=60,
    )


def test_decision_app_runs_like_on_the_platform(emu: PlatformEmulator, tmp_path: pathlib.Path) -> None:
    emu.set_app_behavior("echo", duration=0.1)
    done = run_app(emu, tmp_path, INPUT)
    assert done.returncode == 0, done.stderr

    output = json.loads(done.stdout)
    assert output["solution"] == {"orders": 3, "total": 12, "largest": "o3", "label": "decision"}

    # The app run, named after the workflow's run.
    (run,) = emu.runs.values()
    assert run.app_id == "echo" and run.status == "succeeded"
    assert run.input == {"orders": [o for o in INPUT["orders"] if o["quantity"] > 0], "total": 12}
    assert run.options == {"label": "decision"}
    assert run.name == f"Nextpipe step solve_0 ({DECISION_APP}/{DECISION_RUN})"
    assert run.description == f"This run was started by the nextpipe parent: {DECISION_APP} (run-id: {DECISION_RUN})"

    # The graph the platform received, ending with every node succeeded and the app node's run id.
    records = emu.flow_update_records
    assert records and {(r.app_id, r.run_id) for r in records} == {(DECISION_APP, DECISION_RUN)}
    graph = last_graph(emu)
    parse_rfc3339_utc(emu.flow_updates[-1]["updated_at"])
    assert graph["steps"] == [
        {
            "id": "prepare",
            "predecessors": [],
            "docs": "Keeps the orders with a positive quantity and adds their total.",
        },
        {
            "id": "solve",
            "predecessors": ["prepare"],
            "docs": "Runs the echo app on the prepared orders.",
            "app_id": "echo",
        },
        {"id": "decide", "predecessors": ["solve"], "docs": "Picks the largest order of the app's solution."},
    ]
    nodes = nodes_by_id(graph)
    assert set(nodes) == {"prepare_0", "solve_0", "decide_0"}
    assert {n["status"] for n in nodes.values()} == {"succeeded"}
    assert nodes["solve_0"]["run_id"] == run.run_id
    assert nodes["decide_0"]["predecessor_ids"] == ["solve_0"]
    assert nodes["solve_0"]["predecessor_ids"] == ["prepare_0"]

    console = f"https://cloud.nextmv.io/app/echo/run/{run.run_id}?view=details"
    assert f"[nextpipe] Started app step solve_0 run, find it at {console}\n" in done.stderr
    assert "[decide_0] 3 orders, largest:" in done.stderr
    assert API_KEY not in done.stdout and API_KEY not in done.stderr
    assert all(r.status in (200, 204) for r in emu.requests), [(r.method, r.path, r.status) for r in emu.requests]


def test_decision_app_reports_a_failed_app_run(emu: PlatformEmulator, tmp_path: pathlib.Path) -> None:
    def infeasible(input: object, options: dict[str, str], files: dict[str, bytes]) -> object:
        raise RuntimeError("no feasible plan")

    emu.set_app_behavior("echo", infeasible)
    done = run_app(emu, tmp_path, INPUT)
    assert done.returncode != 0
    assert done.stdout == ""
    (run,) = emu.runs.values()
    assert "Flow failed: Step solve failed:" in done.stderr and run.run_id in done.stderr
    assert "no feasible plan" in done.stderr
    nodes = nodes_by_id(last_graph(emu))
    assert nodes["prepare_0"]["status"] == "succeeded"
    assert nodes["solve_0"]["status"] == "failed" and nodes["solve_0"]["run_id"] == run.run_id
    assert "decide_0" not in nodes  # never started
    assert API_KEY not in done.stderr
