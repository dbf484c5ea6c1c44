"""The example workflows of `examples/`, each run as a script on its local apps, offline.

Every example directory is copied to a temporary directory (so the runs the SDK
records under each app's `.nextmv/` stay out of the repository) and its
`main.py` is run there with this interpreter, from another temporary working
directory, with no Nextmv variables, an empty home directory and uv kept
offline. The four examples start together (each takes a few seconds, mostly
waiting for its local runs) and each test checks one example's output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 180


@dataclass
class Outcome:
    """What one example run printed."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The example's result (its stdout), after checking that it succeeded."""
        assert self.returncode == 0, f"exit code {self.returncode}\n--- stderr ---\n{self.stderr}"
        return json.loads(self.stdout)


def example_env(home: Path) -> dict[str, str]:
    """This environment without Nextmv or nextpipe variables; an empty home; uv offline and project-less."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("NEXTMV_", "NEXTPIPE_"))}
    env.update(HOME=str(home), UV_NO_PROJECT="1", UV_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


class Examples:
    """Starts example scripts in the background and collects their output on demand."""

    def __init__(self, root: Path):
        self.root = root
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        self.home = root / "home"
        self.home.mkdir()
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.outcomes: dict[str, Outcome] = {}

    def start(self, key: str, name: str, args: list[str] | None = None, stdin: str | None = None) -> None:
        """Copies example `name` (once) and starts its `main.py` with `args`, feeding `stdin` (a file) to it."""
        copy = self.root / name
        if not copy.exists():
            shutil.copytree(EXAMPLES / name, copy, ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
        with open(copy / stdin) if stdin else contextlib.nullcontext(subprocess.DEVNULL) as stdin_file:
            self.processes[key] = subprocess.Popen(
                [sys.executable, str(copy / "main.py"), *(args or [])],
                cwd=self.cwd,
                env=example_env(self.home),
                stdin=stdin_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

    def outcome(self, key: str) -> Outcome:
        """Waits for the run started as `key` and returns what it printed."""
        if key not in self.outcomes:
            process = self.processes[key]
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            self.outcomes[key] = Outcome(process.returncode, stdout, stderr)
        return self.outcomes[key]

    def stop(self) -> None:
        """Kills what is still running (only after a failure or timeout)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Examples]:
    """All example runs, started at once."""
    runner = Examples(tmp_path_factory.mktemp("examples"))
    runner.start("ensemble", "ensemble", stdin="input.json")
    runner.start("chain", "chain", stdin="input.json")
    runner.start("fanout", "fanout", stdin="input.json")
    runner.start("multifile", "multifile", args=["--output-dir", str(runner.root / "multifile-output")])
    try:
        yield runner
    finally:
        runner.stop()


def test_ensemble_picks_the_best_solution_and_reports_every_solver(examples: Examples) -> None:
    output = examples.outcome("ensemble").json()
    best, solvers = output["solution"], output["metrics"]["solvers"]
    assert best["value"] == 818
    assert best["solver"] in ("mip", "dp")
    assert best["weight"] <= 485
    assert len(best["items"]) == len(set(best["items"])) == 16
    values = {name: solver["value"] for name, solver in solvers.items()}
    assert values == {"mip": 818, "dp": 818, "greedy-ratio": 810, "greedy-value": 722, "greedy-weight": 662}
    assert solvers["mip"]["status"] == solvers["dp"]["status"] == "optimal"
    run_ids = {solver["run_id"] for solver in solvers.values()}
    assert len(run_ids) == 5 and all(run_id.startswith("local-") for run_id in run_ids)
    assert best["run_id"] == solvers[best["solver"]]["run_id"]
    stderr = examples.outcome("ensemble").stderr
    for node in ("solve_greedy_0", "solve_greedy_1", "solve_greedy_2", "solve_mip_0", "solve_dp_0"):
        assert f"[nextpipe] Started app step {node} run, find it at " in stderr


def test_chain_enhances_the_echoed_input(examples: Examples) -> None:
    data = json.loads((EXAMPLES / "chain" / "input.json").read_text())
    solution = examples.outcome("chain").json()["solution"]
    assert {key: solution[key] for key in data} == data
    assert solution["summary"] == {"count": 8, "sum": 31, "max": 9}
    assert solution["sorted_numbers"] == sorted(data["numbers"])
    assert solution["echo"]["label"] == "chain"
    assert solution["echo"]["run_id"].startswith("local-")
    assert solution["enhanced"] is True


def test_fanout_scales_once_per_factor(examples: Examples) -> None:
    solution = examples.outcome("fanout").json()["solution"]
    assert solution["totals"] == {"scale-x0.5": 27.5, "scale-x1": 55.0, "scale-x2": 110.0, "scale-x10": 550.0}
    assert [run["factor"] for run in solution["runs"]] == [0.5, 1.0, 2.0, 10.0]
    for run in solution["runs"]:
        assert run["numbers"] == [number * run["factor"] for number in range(1, 11)]
    assert len({run["run_id"] for run in solution["runs"]}) == 4


def test_multifile_writes_the_report_and_its_inputs(examples: Examples) -> None:
    result = examples.outcome("multifile").json()
    output_dir = examples.root / "multifile-output"
    assert result["output_dir"] == str(output_dir)
    expected = ["report.md", "report_inputs/notes.txt", "report_inputs/summary.csv", "report_inputs/totals.json"]
    assert result["files"] == [*expected, "report_metrics.json"]
    assert all((output_dir / name).is_file() for name in result["files"])
    assert result["input_rows"] == {"orders.csv": 12, "regions.csv": 4}

    report = (output_dir / "report.md").read_text()
    assert report.startswith("# Sales report\n")
    assert "## Notes" in report and "> Best region: west (909.0 total revenue, 12 orders)." in report
    assert "## summary.csv" in report and "| west | Edsger |" in report and "## totals.json" in report
    metrics = json.loads((output_dir / "report_metrics.json").read_text())
    assert metrics["has_notes"] is True and metrics["files"] == 3
    totals = json.loads((output_dir / "report_inputs" / "totals.json").read_text())
    assert totals["revenue"] == 909.0


def test_examples_keep_stdout_for_the_result_and_log_on_stderr(examples: Examples) -> None:
    for key in ("ensemble", "chain", "fanout", "multifile"):
        outcome = examples.outcome(key)
        outcome.json()  # stdout is exactly one JSON document
        assert "[nextpipe] Flow graph steps:" in outcome.stderr


def test_ensemble_rejects_an_invalid_instance(tmp_path: Path) -> None:
    """A bad instance fails in `prepare`, before any app runs: the script exits with the flow's error."""
    process = subprocess.run(
        [sys.executable, str(EXAMPLES / "ensemble" / "main.py")],
        input=json.dumps({"weight_capacity": 10, "items": []}),
        cwd=tmp_path,
        env=example_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert process.returncode != 0
    assert "RuntimeError: Flow failed: Step prepare failed: items must be a non-empty list" in process.stderr
    assert "Started app step" not in process.stderr
    assert process.stdout == ""
