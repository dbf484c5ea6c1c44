"""Multi-file: a directory of CSV files through two multi-file apps, with a Python step in between.

Runs, on this machine (the apps are local Nextmv apps under `apps/`):

    prepare ─ stats_run ─ stats ─ add_notes ─ report ─ publish
       └──────────────────────────────┴───────────────────┘

- `prepare` checks the input directory (it must hold `orders.csv` and
  `regions.csv`, read with `nextmv.load`) and creates the output directory;
- `stats_run` builds the `AppRunConfig` of the `stats` app's run: the input
  directory, sent as a multi-file input, and a run name;
- `stats` writes `summary.csv` and `totals.json` (its result is the directory
  holding them);
- `add_notes` copies that directory into a new temporary directory and adds a
  `notes.txt` written from the totals;
- `report` renders every file of that directory into `report.md`
  (`full_result=True`: the whole run result, with the output directory);
- `publish` writes `report.md`, the report run's metrics and the files the
  report was made from into the output directory.

The result (the output directory and its files) is written as JSON on stdout.
Temporary directories of the intermediate steps are removed at the end.

Usage:
    python examples/multifile/main.py [INPUT_DIR] [--output-dir DIR]

INPUT_DIR defaults to `examples/multifile/input`; without `--output-dir` the
files go to a new temporary directory, named in the result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from typing import Any

import nextmv

from nextpipe import AppRunConfig, Configuration, FlowSpec, app, needs, step

HERE = os.path.dirname(os.path.abspath(__file__))
LOCAL_APPS = {"stats": os.path.join(HERE, "apps", "stats"), "report": os.path.join(HERE, "apps", "report")}
REPORT_TITLE = "Sales report"
POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.05, backoff=0, jitter=0, max_duration=60)


class MultifileFlow(FlowSpec):
    """A directory → stats (multi-file app) → add_notes → report (multi-file app) → publish."""

    @step
    def prepare(request: dict[str, str]) -> dict[str, Any]:
        """Checks that the input directory holds the CSV files the apps need; creates the output directory."""
        input_dir = os.path.abspath(request["input_dir"])
        data = nextmv.load(
            input_format=nextmv.ContentFormat.MULTI_FILE,
            path=input_dir,
            data_files=[nextmv.csv_data_file("orders"), nextmv.csv_data_file("regions")],
        ).data
        output_dir = request.get("output_dir") or tempfile.mkdtemp(prefix="nextpipe_multifile_")
        os.makedirs(output_dir, exist_ok=True)
        rows = {name: len(rows) for name, rows in data.items()}
        return {"input_dir": input_dir, "output_dir": os.path.abspath(output_dir), "rows": rows}

    @needs(predecessors=[prepare])
    @step
    def stats_run(request: dict[str, Any]) -> AppRunConfig:
        """The stats run: the input directory (a directory is sent as a multi-file input) and a name."""
        name = f"stats of {os.path.basename(request['input_dir'])}"
        return AppRunConfig(input=request["input_dir"], name=name)

    @app(app_id="stats", polling_options=POLLING)
    @needs(predecessors=[stats_run])
    @step
    def stats() -> None:
        """Summarizes the orders per region; the result is the directory of its output files."""

    @needs(predecessors=[stats])
    @step
    def add_notes(stats_dir: str) -> str:
        """Copies the stats files into a new directory and adds `notes.txt`; returns that directory."""
        notes_dir = tempfile.mkdtemp(prefix="nextpipe_multifile_notes_")
        shutil.copytree(stats_dir, notes_dir, dirs_exist_ok=True)
        with open(os.path.join(notes_dir, "totals.json")) as file:
            totals = json.load(file)
        notes = [
            f"Best region: {totals['best_region']} ({totals['revenue']} total revenue, {totals['orders']} orders).",
            "Files added by the nextpipe multifile example's add_notes step.",
        ]
        with open(os.path.join(notes_dir, "notes.txt"), "w") as file:
            file.write("\n".join(notes) + "\n")
        return notes_dir

    @app(app_id="report", options={"title": REPORT_TITLE}, full_result=True, polling_options=POLLING)
    @needs(predecessors=[add_notes])
    @step
    def report() -> None:
        """Renders the stats files and the notes as a Markdown report (`report.md`)."""

    @needs(predecessors=[prepare, add_notes, report])
    @step
    def publish(request: dict[str, Any], notes_dir: str, report: nextmv.RunResult) -> dict[str, Any]:
        """Writes `report.md`, `report_metrics.json` and the report's inputs (under `report_inputs/`)."""
        output_dir = request["output_dir"]
        shutil.copy(os.path.join(report.output, "report.md"), output_dir)
        with open(os.path.join(output_dir, "report_metrics.json"), "w") as file:
            json.dump(report.metadata.metrics, file, indent=2)
        shutil.copytree(notes_dir, os.path.join(output_dir, "report_inputs"), dirs_exist_ok=True)
        files = sorted(
            os.path.relpath(os.path.join(root, name), output_dir)
            for root, _, names in os.walk(output_dir)
            for name in names
        )
        return {"output_dir": output_dir, "files": files, "report_run_id": report.id, "input_rows": request["rows"]}


def parse_args() -> argparse.Namespace:
    """The command line: the input directory and the output directory."""
    parser = argparse.ArgumentParser(description="Runs the multifile example flow.")
    parser.add_argument(
        "input_dir", nargs="?", default=os.path.join(HERE, "input"), help="directory holding the CSV input files"
    )
    parser.add_argument("--output-dir", help="where the output files go (default: a new temporary directory)")
    return parser.parse_args()


def main() -> None:
    """Runs the flow on the given directories and writes the published files as JSON on stdout."""
    args = parse_args()
    # Local apps run with `uv run`: keep uv from taking an enclosing pyproject.toml for the app's project.
    os.environ.setdefault("UV_NO_PROJECT", "1")
    request = {"input_dir": args.input_dir, "output_dir": args.output_dir}
    flow = MultifileFlow("multifile", request, conf=Configuration(local_apps=LOCAL_APPS))
    flow.run()
    result = flow.get_result(flow.publish)
    intermediate = [flow.get_result(flow.stats), flow.get_result(flow.add_notes), flow.get_result(flow.report).output]
    for directory in intermediate:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
