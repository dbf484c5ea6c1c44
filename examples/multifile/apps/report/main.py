"""Report app (multi-file): renders whatever its input directory holds as Markdown.

Every `*.csv` file under `inputs/` becomes a table (at most `-max_rows` rows),
`*.json` files are shown pretty-printed and an optional `notes.txt` (e.g. added
by a workflow step) is quoted at the top. Nothing is required: the app works on
the raw CSV inputs as well as on the output files of the `stats` app.
The report is written to `outputs/solutions/report.md`.
"""

import json
import os
import time
from typing import Any

import nextmv

NOTES_FILE = "notes.txt"
LOADERS = {".csv": nextmv.csv_data_file, ".json": nextmv.json_data_file, ".txt": nextmv.text_data_file}


def input_dir() -> str:
    """The input directory declared in the manifest (`inputs` by default)."""
    manifest = nextmv.Manifest.from_yaml(os.path.dirname(os.path.abspath(__file__)))
    return manifest.configuration.content.multi_file.input.path


def markdown_table(rows: list[dict[str, Any]], max_rows: int) -> list[str]:
    columns = list(rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(column, "")) for column in columns) + " |" for row in rows[:max_rows]]
    if len(rows) > max_rows:
        lines.append(f"\n_{len(rows) - max_rows} more rows not shown._")
    return lines


def render(title: str, data: dict[str, Any], other_files: list[str], max_rows: int) -> str:
    lines = [f"# {title}", ""]
    notes = data.get(NOTES_FILE)
    if notes:
        lines += ["## Notes", ""] + [f"> {line}".rstrip() for line in notes.strip().splitlines()] + [""]
    for name, content in data.items():
        if name == NOTES_FILE:
            continue
        lines += [f"## {name}", ""]
        if name.endswith(".csv"):
            lines += [f"{len(content)} rows.", ""]
            lines += markdown_table(content, max_rows) if content else ["_empty_"]
        elif name.endswith(".json"):
            lines += ["```json", json.dumps(content, indent=2), "```"]
        else:
            lines += ["```", content.rstrip(), "```"]
        lines.append("")
    if other_files:
        lines += ["## Other files", ""] + [f"- {name}" for name in other_files] + [""]
    return "\n".join(lines).rstrip()  # The solution file writer adds the final newline.


def main() -> None:
    start = time.perf_counter()
    path = input_dir()
    names = sorted(name for name in os.listdir(path) if os.path.isfile(os.path.join(path, name)))
    readable = [name for name in names if os.path.splitext(name)[1] in LOADERS]
    other_files = [name for name in names if name not in readable]
    data_files = [LOADERS[os.path.splitext(name)[1]](name) for name in readable]

    run_input = nextmv.load(data_files=data_files)  # Options come from app.yaml.
    options = run_input.options
    has_notes = NOTES_FILE in run_input.data
    nextmv.log(f"report: {len(names)} input files ({', '.join(names)}), notes: {has_notes}")

    report = render(options.title, run_input.data, other_files, options.max_rows)
    nextmv.write(
        nextmv.Output(
            options=options,
            output_format=nextmv.ContentFormat.MULTI_FILE,
            solution_files=[nextmv.text_solution_file("report.md", report)],
            metrics={
                "files": len(names),
                "csv_files": sum(name.endswith(".csv") for name in names),
                "has_notes": has_notes,
                "report_lines": len(report.splitlines()),
                "duration": time.perf_counter() - start,
            },
        )
    )


if __name__ == "__main__":
    main()
