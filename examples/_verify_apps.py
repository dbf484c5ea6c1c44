"""Runs every example app once through `nextmv.local` and checks its output.

Each app under `examples/*/apps/` is a real Nextmv local application (`app.yaml`
+ `main.py`). This script starts one local run per app with its sample input
(`input.json`, or the `input/` directory for the multi-file apps), polls it
tightly, prints the output and the end-to-end time, and checks the result.

The SDK's executor starts each app with `python -m uv run [--with-requirements
requirements.txt] main.py` in a temporary copy of the app. This script sets
`UV_NO_PROJECT=1` (so uv never mistakes an enclosing directory with a
`pyproject.toml` for the app's project) and, unless `--allow-downloads` is
given, `UV_OFFLINE=1`: the apps must then run with the packages already
installed in this interpreter's environment, which uv reuses as is.

Usage:
    python examples/_verify_apps.py [--repeat N] [--allow-downloads] [NAME ...]
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nextmv
import nextmv.local

EXAMPLES = Path(__file__).resolve().parent
POLLING = {"initial_delay": 0, "delay": 0.05, "backoff": 0, "jitter": 0, "max_duration": 60}


@dataclass
class Outcome:
    """What one local run produced."""

    output: dict[str, Any] | None  # JSON apps: the whole output document.
    files: dict[str, str]  # Multi-file apps: output files (relative path -> text).
    metrics: dict[str, Any]
    run_seconds: float  # The run's own duration, as recorded by the SDK's executor.


@dataclass
class Case:
    """One local run of one app, and what its outcome must satisfy."""

    name: str
    src: Path
    check: Callable[[Outcome], str]  # Raises AssertionError, or returns a one-line summary.
    input_file: Path | None = None
    input_dir: Path | None = None
    extra_files: dict[str, str] = field(default_factory=dict)  # Added to a copy of input_dir.
    options: dict[str, str] = field(default_factory=dict)


def knapsack_check(expected_value: int) -> Callable[[Outcome], str]:
    capacity = json.loads((EXAMPLES / "ensemble" / "input.json").read_text())["weight_capacity"]

    def check(outcome: Outcome) -> str:
        solution, metrics = outcome.output["solution"], outcome.metrics
        assert solution["value"] == sum(item["value"] for item in solution["items"]), solution
        assert solution["weight"] <= capacity, solution
        assert metrics["result_value"] == solution["value"] == expected_value, metrics
        assert outcome.output["statistics"]["result"]["value"] == expected_value
        return f"value={metrics['result_value']} status={metrics['status']} items={metrics['items_selected']}"

    return check


def echo_check(outcome: Outcome) -> str:
    expected = json.loads((EXAMPLES / "chain" / "input.json").read_text())
    assert outcome.output["solution"] == expected, outcome.output["solution"]
    assert outcome.metrics["label"] == "first", outcome.metrics
    return f"solution == input, metrics={outcome.metrics}"


def scale_check(factor: float) -> Callable[[Outcome], str]:
    numbers = json.loads((EXAMPLES / "fanout" / "input.json").read_text())["numbers"]

    def check(outcome: Outcome) -> str:
        assert outcome.output["solution"]["numbers"] == [n * factor for n in numbers]
        assert outcome.metrics["result_value"] == sum(numbers) * factor, outcome.metrics
        return f"total={outcome.metrics['result_value']} factor={outcome.metrics['factor']}"

    return check


def stats_check(outcome: Outcome) -> str:
    assert sorted(outcome.files) == ["summary.csv", "totals.json"], sorted(outcome.files)
    summary = list(csv.DictReader(outcome.files["summary.csv"].splitlines()))
    totals = json.loads(outcome.files["totals.json"])
    assert len(summary) == totals["regions"] == 4, summary
    assert totals["revenue"] == outcome.metrics["revenue"] == 909.0, totals
    return f"files={sorted(outcome.files)} revenue={totals['revenue']} best={totals['best_region']}"


def report_check(has_notes: bool) -> Callable[[Outcome], str]:
    def check(outcome: Outcome) -> str:
        assert sorted(outcome.files) == ["report.md"], sorted(outcome.files)
        report = outcome.files["report.md"]
        assert "## orders.csv" in report and "## regions.csv" in report, report
        assert ("## Notes" in report) == has_notes == outcome.metrics["has_notes"], outcome.metrics
        return f"report.md: {len(report.splitlines())} lines, metrics={outcome.metrics}"

    return check


def cases() -> list[Case]:
    ensemble, multifile = EXAMPLES / "ensemble", EXAMPLES / "multifile"
    knapsack = ensemble / "input.json"
    return [
        Case("greedy", ensemble / "apps" / "greedy", knapsack_check(810), input_file=knapsack),
        Case("greedy-value", ensemble / "apps" / "greedy", knapsack_check(722), knapsack, options={"sort": "value"}),
        Case("mip", ensemble / "apps" / "mip", knapsack_check(818), knapsack, options={"time_limit": "5"}),
        Case("dp", ensemble / "apps" / "dp", knapsack_check(818), input_file=knapsack),
        Case(
            "echo",
            EXAMPLES / "chain" / "apps" / "echo",
            echo_check,
            input_file=EXAMPLES / "chain" / "input.json",
            options={"label": "first"},
        ),
        Case(
            "scale",
            EXAMPLES / "fanout" / "apps" / "scale",
            scale_check(2.5),
            input_file=EXAMPLES / "fanout" / "input.json",
            options={"factor": "2.5"},
        ),
        Case("stats", multifile / "apps" / "stats", stats_check, input_dir=multifile / "input"),
        Case("report", multifile / "apps" / "report", report_check(False), input_dir=multifile / "input"),
        Case(
            "report-notes",
            multifile / "apps" / "report",
            report_check(True),
            input_dir=multifile / "input",
            extra_files={"notes.txt": "Added by a workflow step.\nTargets are preliminary.\n"},
        ),
    ]


def result_with_polling(app: nextmv.local.Application, run_id: str, output_dir: Path) -> nextmv.RunResult:
    """`run_result_with_polling`, retried while the run's info file is being rewritten.

    The SDK's executor rewrites `<src>/.nextmv/runs/<id>/<id>.json` in place
    (open "w", then dump), so a poll that reads it at that moment fails with
    `json.JSONDecodeError`; polling again a moment later reads it whole.
    """
    for _ in range(100):
        try:
            return app.run_result_with_polling(
                run_id, polling_options=nextmv.PollingOptions(**POLLING), output_dir_path=str(output_dir)
            )
        except json.JSONDecodeError:
            time.sleep(POLLING["delay"])
    raise RuntimeError(f"run {run_id}: its info file never read as valid JSON")


def run_case(case: Case, work_dir: Path) -> tuple[float, Outcome]:
    """Runs `case` once; returns the end-to-end seconds and the outcome."""
    app = nextmv.local.Application(src=str(case.src))
    input_dir = None
    if case.input_dir is not None:
        # The executor reads `input_dir_path` asynchronously: it must outlive the run.
        input_dir = work_dir / f"{case.name}-input"
        shutil.copytree(case.input_dir, input_dir)
        for name, text in case.extra_files.items():
            (input_dir / name).write_text(text)
    output_dir = work_dir / f"{case.name}-output"
    run_input = json.loads(case.input_file.read_text()) if case.input_file is not None else None

    start = time.perf_counter()
    run_id = app.new_run(
        input=run_input,
        input_dir_path=str(input_dir) if input_dir is not None else None,
        options=case.options or None,
    )
    result = result_with_polling(app, run_id, output_dir)
    elapsed = time.perf_counter() - start

    status = result.metadata.status_v2.value
    if status != "succeeded":
        raise RuntimeError(f"run {run_id} {status}: {result.metadata.error}\n--- logs ---\n{app.run_logs(run_id)}")
    files = {}
    if output_dir.is_dir():
        files = {str(p.relative_to(output_dir)): p.read_text() for p in sorted(output_dir.rglob("*")) if p.is_file()}
    metrics = result.metadata.metrics or {}
    output = result.output if isinstance(result.output, dict) else None
    return elapsed, Outcome(output=output, files=files, metrics=metrics, run_seconds=result.metadata.duration / 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="cases to run (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case, to time them (default: 1)")
    parser.add_argument("--allow-downloads", action="store_true", help="do not set UV_OFFLINE=1")
    parser.add_argument("--quiet", action="store_true", help="do not print the outputs")
    args = parser.parse_args()
    os.environ["UV_NO_PROJECT"] = "1"  # Inherited by the executor and by `uv run`.
    if not args.allow_downloads:
        os.environ["UV_OFFLINE"] = "1"

    selected = [case for case in cases() if not args.names or case.name in args.names]
    uv_env = {name: os.environ.get(name, "") for name in ("UV_OFFLINE", "UV_NO_PROJECT")}
    print(f"python {sys.executable} ({sys.version.split()[0]}), {uv_env}")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="nextpipe-verify-") as tmp:
        for case in selected:
            times, run_times = [], []
            try:
                for i in range(args.repeat):
                    elapsed, outcome = run_case(case, Path(tmp) / str(i))
                    times.append(elapsed)
                    run_times.append(outcome.run_seconds)
                    summary = case.check(outcome)
            except Exception as error:  # Report every case, then fail.
                failures += 1
                print(f"FAIL {case.name}: {type(error).__name__}: {error}")
                continue
            timing = f"{statistics.median(times):.3f}s (run {statistics.median(run_times):.3f}s)"
            if len(times) > 1:
                timing = f"median {timing}, min {min(times):.3f}s"
            print(f"ok   {case.name:<13} {timing:<40} {summary}")
            if not args.quiet:
                shown = outcome.output if outcome.output is not None else outcome.files
                print("     " + json.dumps(shown)[:400])
    print(f"{len(selected) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
