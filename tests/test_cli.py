"""The ``nextpipe`` command: ``nextpipe graph FILE.py[:ClassName]`` in every format, and its failures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_program

from nextpipe import __version__, cli
from nextpipe.graph import mermaid_url

FLOW_FILE = """
import pathlib

from nextpipe import FlowSpec, app, foreach, join, needs, optional, repeat, step

import nextpipe_cli_test_neighbour  # a neighbour of this file: importable as when the file runs as a script


class Pipeline(FlowSpec):
    @foreach()
    @step
    def split(data: dict) -> list:
        return data["numbers"]

    @needs(predecessors=[split])
    @step
    def square(number: int) -> int:
        return number * number

    @join()
    @needs(predecessors=[square])
    @step
    def total(squares: list) -> int:
        return sum(value for [value] in squares)

    @repeat(repetitions=2)
    @needs(predecessors=[total])
    @step
    def noisy(value: int) -> int:
        return value

    @optional(condition=lambda step: True)
    @app(app_id="echo", bypass_result={"ok": True})
    @needs(predecessors=[noisy])
    @step
    def solve() -> None:
        pass


if __name__ == "__main__":
    pathlib.Path("main-block-ran").write_text("the __main__ block must not run")
    Pipeline("pipeline", {"numbers": [1, 2, 3]}).run()
"""

EXPECTED_MERMAID = """\
graph LR
  split{ }
  split(split)
  split -- foreach --> square
  square(square)
  square -- join --> total
  total(total)
  total --> noisy
  noisy{ }
  noisy_join{ }
  noisy_0(noisy_0)
  noisy --> noisy_0
  noisy_0 --> noisy_join
  noisy_1(noisy_1)
  noisy --> noisy_1
  noisy_1 --> noisy_join
  noisy_join --> solve
  solve(solve)
"""

EXPECTED_DOT = """\
digraph "Pipeline" {
  rankdir=LR;
  node [fontname="Helvetica"];
  edge [fontname="Helvetica"];
  "split" [shape="diamond", label="split"];
  "square" [shape="box", style="rounded", label="square"];
  "total" [shape="invtrapezium", label="total"];
  "noisy" [shape="box3d", label="noisy x2"];
  "solve" [shape="component", style="dashed", label="solve\\napp: echo"];
  "split" -> "square" [label="foreach"];
  "square" -> "total" [label="join"];
  "total" -> "noisy";
  "noisy" -> "solve";
}
"""

TWO_FLOWS = """
from nextpipe import FlowSpec, needs, step


class First(FlowSpec):
    @step
    def only(data):
        return data


class Second(FlowSpec):
    @step
    def prepare(data):
        return data

    @needs(predecessors=[prepare])
    @step
    def finish(data):
        return data
"""


def _script() -> str:
    """The ``nextpipe`` console script of the environment running the tests."""
    script = Path(sys.executable).with_name("nextpipe")
    assert script.exists(), (
        f"{script} is missing: reinstall the project (pip install -e .) to create the console script"
    )
    return str(script)


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory with flow files, made the working directory."""
    (tmp_path / "nextpipe_cli_test_neighbour.py").write_text("VALUE = 1\n")
    (tmp_path / "pipeline.py").write_text(FLOW_FILE)
    (tmp_path / "two.py").write_text(TWO_FLOWS)
    (tmp_path / "none.py").write_text("from nextpipe import FlowSpec\n\nVALUE = 1\n")
    (tmp_path / "broken.py").write_text("import nextpipe\n\nimport module_that_does_not_exist\n")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in ("nextpipe_cli_test_neighbour", "_nextpipe_graph_target"):  # the modules the tests imported
        sys.modules.pop(name, None)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_mermaid_is_the_default_and_matches_the_library(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "graph", "pipeline.py")
    assert (code, out, err) == (0, EXPECTED_MERMAID, "")
    assert not (flows / "main-block-ran").exists()
    assert _run(capsys, "graph", "pipeline.py", "--format", "mermaid")[:2] == (0, EXPECTED_MERMAID)


def test_mermaid_is_the_text_the_flow_logs(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = cli.load_module("pipeline.py")
    flow = module.Pipeline("pipeline", None)
    assert flow.graph._to_mermaid() == EXPECTED_MERMAID


def test_url_format(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "graph", "pipeline.py", "--format", "url")
    assert code == 0
    assert out == mermaid_url(EXPECTED_MERMAID) + "\n"
    assert out.startswith("https://mermaid.ink/svg/") and out.endswith("?theme=dark\n")


def test_dot_format(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "graph", "pipeline.py:Pipeline", "-f", "dot") == (0, EXPECTED_DOT, "")


def test_svg_format_renders_with_graphviz(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_program("dot", "--format svg (Graphviz: apt-get install -y graphviz)")
    code, out, err = _run(capsys, "graph", "pipeline.py", "--format", "svg")
    assert (code, err) == (0, "")
    root = ElementTree.fromstring(out)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    titles = {element.text for element in root.iter() if element.tag.endswith("title")}
    assert {"Pipeline", "split", "square", "total", "noisy", "solve", "split->square", "noisy->solve"} <= titles


def test_svg_without_dot_says_how_to_install_it(
    flows: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(flows))  # no dot there
    code, out, err = _run(capsys, "graph", "pipeline.py", "--format", "svg")
    assert (code, out) == (2, "")
    assert "Graphviz" in err and "apt-get install graphviz" in err and "--format dot" in err


def test_output_file(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "graph", "pipeline.py", "-f", "dot", "-o", "graph.dot") == (0, "", "")
    assert (flows / "graph.dot").read_text() == EXPECTED_DOT


def test_file_with_two_flows_needs_a_class_name(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "graph", "two.py")
    assert (code, out) == (2, "")
    assert "two.py defines 2 flows (First, Second)" in err
    assert "nextpipe graph two.py:First" in err
    code, out, _ = _run(capsys, "graph", "two.py:Second")
    assert (code, out) == (0, "graph LR\n  prepare(prepare)\n  prepare --> finish\n  finish(finish)\n")
    assert _run(capsys, "graph", "two.py:First")[:2] == (0, "graph LR\n  only(only)\n")


def test_unknown_or_wrong_class_name(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "graph", "two.py:Third")
    assert code == 2
    assert "Third is not defined there" in err and "First, Second" in err
    code, _, err = _run(capsys, "graph", "two.py:FlowSpec")
    assert code == 2
    assert "FlowSpec is not a flow" in err


def test_file_without_a_flow(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "graph", "none.py")
    assert (code, out) == (2, "")
    assert err == "nextpipe: error: none.py defines no flow (a subclass of nextpipe.FlowSpec).\n"


def test_file_that_fails_to_import(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "graph", "broken.py")
    assert (code, out) == (2, "")
    assert err == (
        "nextpipe: error: cannot import broken.py:3: "
        "ModuleNotFoundError: No module named 'module_that_does_not_exist'\n"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def broken(:\n", "cannot import bad.py:1: SyntaxError: "),
        ("import sys\nsys.exit(3)\n", "cannot import bad.py:2: SystemExit: 3"),
        ("raise ValueError('no configuration')\n", "cannot import bad.py:1: ValueError: no configuration"),
    ],
)
def test_other_import_failures(flows: Path, capsys: pytest.CaptureFixture[str], source: str, message: str) -> None:
    (flows / "bad.py").write_text(source)
    code, out, err = _run(capsys, "graph", "bad.py")
    assert (code, out) == (2, "")
    assert message in err
    assert "Traceback" not in err


def test_missing_file(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "graph", "missing.py") == (2, "", "nextpipe: error: missing.py: no such file.\n")


def test_flow_whose_graph_cannot_be_built(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (flows / "cycle.py").write_text(
        textwrap.dedent(
            """
            from nextpipe import FlowSpec, needs, step


            class Cycle(FlowSpec):
                @needs(predecessors=[lambda: None])
                @step
                def first(data):
                    return data
            """
        )
    )
    code, out, err = _run(capsys, "graph", "cycle.py")
    assert (code, out) == (2, "")
    assert err.startswith("nextpipe: error: the graph of Cycle cannot be built: Step first: @needs lists")


def test_split_target() -> None:
    assert cli.split_target("flow.py") == ("flow.py", None)
    assert cli.split_target("dir/flow.py:Flow") == ("dir/flow.py", "Flow")
    assert cli.split_target("C:\\flows\\flow.py") == ("C:\\flows\\flow.py", None)
    assert cli.split_target("C:\\flows\\flow.py:Flow") == ("C:\\flows\\flow.py", "Flow")


def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: nextpipe" in capsys.readouterr().err


def test_unknown_format_is_a_usage_error(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["graph", "pipeline.py", "--format", "png"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'png'" in capsys.readouterr().err


def test_console_script_version_and_graph(flows: Path) -> None:
    script = _script()
    version = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert (version.returncode, version.stdout) == (0, f"nextpipe {__version__}\n")
    graph = subprocess.run([script, "graph", "pipeline.py"], capture_output=True, text=True, check=False)
    assert (graph.returncode, graph.stdout) == (0, EXPECTED_MERMAID)
    assert not (flows / "main-block-ran").exists()


def test_python_dash_m(flows: Path) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "nextpipe", "--version"], capture_output=True, text=True, check=False
    )
    assert (version.returncode, version.stdout) == (0, f"nextpipe {__version__}\n")
    broken = subprocess.run(
        [sys.executable, "-m", "nextpipe", "graph", "broken.py"], capture_output=True, text=True, check=False
    )
    assert broken.returncode == 2
    assert broken.stdout == ""
    assert broken.stderr.startswith("nextpipe: error: cannot import broken.py:3: ModuleNotFoundError")


def test_console_script_without_dot_exits_2(flows: Path) -> None:
    environment = {**os.environ, "PATH": str(flows)}
    completed = subprocess.run(
        [_script(), "graph", "pipeline.py", "--format", "svg"], capture_output=True, text=True, env=environment
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "not on PATH" in completed.stderr and "apt-get install graphviz" in completed.stderr


MODULE_LEVEL_RUN = """
import pathlib
import sys

from nextpipe import FlowSpec, needs, step

print("printed while importing")
print("warned while importing", file=sys.stderr)
typed = sys.stdin.read()


class Squares(FlowSpec):
    @step
    def split(data: dict) -> list:
        pathlib.Path("flow-ran").write_text("a step ran")
        return data["numbers"]

    @needs(predecessors=[split])
    @step
    def total(numbers: list) -> int:
        return sum(numbers)


flow = Squares("squares", {"numbers": [1, 2, 3]})
try:
    flow.run()
except Exception:  # a script's own error handling does not catch the stop
    pathlib.Path("flow-ran").write_text("run() raised an Exception")
pathlib.Path("after-run").write_text("the lines after run() use its results: they must not run")
print(flow.get_result(flow.total))
"""


def test_module_level_run_does_not_run_the_flow(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (flows / "script.py").write_text(MODULE_LEVEL_RUN)
    code, out, err = _run(capsys, "graph", "script.py")
    assert (code, out, err) == (0, "graph LR\n  split(split)\n  split --> total\n  total(total)\n", "")
    assert not (flows / "flow-ran").exists()
    assert not (flows / "after-run").exists()
    from nextpipe import FlowSpec

    assert FlowSpec.run.__name__ == "run"  # restored after the import


def test_module_level_run_in_a_subprocess_reads_no_stdin(flows: Path) -> None:
    (flows / "script.py").write_text(MODULE_LEVEL_RUN)
    completed = subprocess.run(
        [_script(), "graph", "script.py", "-f", "dot"], input="not for the flow", capture_output=True, text=True
    )
    assert (completed.returncode, completed.stderr) == (0, "")
    assert completed.stdout.startswith('digraph "Squares"')
    assert not (flows / "flow-ran").exists()


def test_prints_of_a_failing_import_are_shown(flows: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (flows / "bad.py").write_text("print('about to fail')\nraise ValueError('no configuration')\n")
    code, out, err = _run(capsys, "graph", "bad.py")
    assert (code, out) == (2, "")
    assert err == "about to fail\nnextpipe: error: cannot import bad.py:2: ValueError: no configuration\n"


@pytest.mark.parametrize("target", ["missing/graph.mmd", "."], ids=["missing-folder", "a-directory"])
def test_unwritable_output_is_a_one_line_error(flows: Path, capsys: pytest.CaptureFixture[str], target: str) -> None:
    code, out, err = _run(capsys, "graph", "pipeline.py", "-o", target)
    assert (code, out) == (2, "")
    assert err.startswith(f"nextpipe: error: cannot write {target}: ") and err.count("\n") == 1
    assert "Traceback" not in err
