"""
The ``nextpipe`` command.

``nextpipe graph FILE.py[:ClassName]`` prints the graph of a flow without
running it: the file is imported as a module (its ``if __name__ == "__main__":``
block does not run, and a module-level ``flow.run()`` ends the import instead
of running the flow, see :func:`load_module`), the flow class is found in it
and its graph is built, exactly as constructing the flow would build it.

Formats (``--format``): ``mermaid`` (default), the Mermaid text that the flow
logs; ``dot``, Graphviz DOT; ``url``, the mermaid.ink link that renders the
Mermaid text; ``svg``, a picture rendered offline by Graphviz's ``dot`` program.

Exit codes: 0 on success, 2 when the file cannot be imported, holds no flow
(or several and none was named), its graph cannot be built, ``dot`` is
missing, or the ``--output`` file cannot be written; 1 when ``dot`` fails.

``nextpipe cache list [--app ID]`` prints the runs that app steps may reuse
(see :mod:`nextpipe.run_cache`); ``nextpipe cache clear [--app ID]
[--older-than AGE]`` removes them. Both take ``--dir DIR``; a store that cannot
be read exits with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from .__about__ import __version__
from .flow import FlowGraph, FlowSpec, FlowStep
from .graph import mermaid_url
from .run_cache import add_cache_command, run_cache_command

FORMATS = ("mermaid", "dot", "url", "svg")
"""The output formats of ``nextpipe graph``."""

GRAPHVIZ_INSTALL_HINT = (
    "Install Graphviz, e.g. 'apt-get install graphviz' (Debian, Ubuntu), 'brew install graphviz' (macOS) "
    "or 'conda install graphviz', or print the graph with --format dot or --format url instead."
)
"""How to get Graphviz's ``dot`` program, shown when ``--format svg`` cannot find it."""

_MODULE_NAME = "_nextpipe_graph_target"


class CommandError(Exception):
    """
    A failure the command reports as one message, without a traceback.

    Parameters
    ----------
    message : str
        What went wrong and what to do about it.
    exit_code : int, default=2
        The command's exit status.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def split_target(target: str) -> tuple[str, str | None]:
    """
    Split ``FILE.py[:ClassName]`` into the file and the class name.

    Parameters
    ----------
    target : str
        A path, optionally followed by ``:`` and a class name.

    Returns
    -------
    tuple of (str, str or None)
        The path, and the class name or ``None`` when none is given.

    Examples
    --------
    >>> split_target("flows/solve.py:Solve")
    ('flows/solve.py', 'Solve')
    >>> split_target("solve.py")
    ('solve.py', None)
    """
    path, sep, name = target.rpartition(":")
    if sep and name.isidentifier() and len(path) > 1:  # "C:\\flow.py" keeps its drive letter
        return path, name
    return target, None


class _FlowRunReached(BaseException):
    """Stops importing a file at its first ``flow.run()``: a BaseException, so that ``except Exception`` lets it by."""


def _stop_at_run(self: FlowSpec, *args: object, **kwargs: object) -> None:
    raise _FlowRunReached


def load_module(path: str) -> ModuleType:
    """
    Import a Python file as a module, without running a flow or its ``__main__`` block.

    The file runs as a module named other than ``__main__``, so its
    ``if __name__ == "__main__":`` block does not run. While it is imported,
    ``FlowSpec.run`` stops the import instead of running the flow: a script
    that builds and runs its flow at module level (``flow.run()`` after the
    class) stops there, with its flow classes defined, and what follows (which
    needs the flow's results) does not run. Standard input reads as empty,
    and what the file prints is held back (shown only when the import fails),
    so that the command's output is the graph alone. The file's directory
    comes first on ``sys.path``, as when the file is run as a script, so that
    it can import its neighbours.

    Parameters
    ----------
    path : str
        The file.

    Returns
    -------
    ModuleType
        The imported module.

    Raises
    ------
    CommandError
        When the file does not exist or raises while it is imported.
    """
    if not os.path.isfile(path):
        raise CommandError(f"{path}: no such file.")
    shown, path = path, os.path.abspath(path)
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise CommandError(f"{shown}: cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    folder, printed, stdin, run = os.path.dirname(path), io.StringIO(), sys.stdin, FlowSpec.run
    sys.path.insert(0, folder)
    sys.stdin, FlowSpec.run = io.StringIO(), _stop_at_run  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            spec.loader.exec_module(module)
    except _FlowRunReached:
        pass  # the flow classes are defined: the rest of the file would use the results of the run
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # SystemExit too: a file that exits on import holds no usable flow
        sys.modules.pop(_MODULE_NAME, None)
        sys.stderr.write(printed.getvalue())
        raise CommandError(f"cannot import {shown}{_failure_location(error, path)}: {_describe(error)}") from error
    finally:
        sys.stdin, FlowSpec.run = stdin, run  # type: ignore[method-assign]
        sys.path.remove(folder)
    return module


def _describe(error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _failure_location(error: BaseException, path: str) -> str:
    """``:LINE`` of the failing statement in the imported file, or nothing when unknown."""
    if isinstance(error, SyntaxError) and error.filename == path and error.lineno:
        return f":{error.lineno}"
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == path]
    return f":{lines[-1]}" if lines else ""


def find_flow(module: ModuleType, class_name: str | None = None, where: str | None = None) -> type[FlowSpec]:
    """
    Pick the flow class of a module.

    Parameters
    ----------
    module : ModuleType
        A module imported with :func:`load_module`.
    class_name : str, optional
        The class to pick; by default the only ``FlowSpec`` subclass that the module defines.
    where : str, optional
        How messages name the module; its file by default.

    Returns
    -------
    type
        A subclass of :class:`~nextpipe.flow.FlowSpec`.

    Raises
    ------
    CommandError
        When the named class is missing or not a flow, or when no class is
        named and the module defines no flow or several.
    """
    where = where or getattr(module, "__file__", None) or module.__name__
    flows = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, FlowSpec)
        and value is not FlowSpec
        and value.__module__ == module.__name__
    ]
    names = ", ".join(flow.__name__ for flow in flows)
    if class_name is not None:
        found = getattr(module, class_name, None)
        if isinstance(found, type) and issubclass(found, FlowSpec) and found is not FlowSpec:
            return found
        problem = "is not a flow (a subclass of nextpipe.FlowSpec)" if found is not None else "is not defined there"
        known = f" Flows defined there: {names}." if flows else ""
        raise CommandError(f"{where}: {class_name} {problem}.{known}")
    if not flows:
        raise CommandError(f"{where} defines no flow (a subclass of nextpipe.FlowSpec).")
    if len(flows) > 1:
        raise CommandError(
            f"{where} defines {len(flows)} flows ({names}): name one, "
            f"e.g. 'nextpipe graph {where}:{flows[0].__name__}'."
        )
    return flows[0]


def build_graph(flow_class: type[FlowSpec]) -> FlowGraph:
    """
    Build a flow's graph without constructing or running the flow.

    No input, local app directory, API key or platform is needed; the graph's
    log lines (which repeat the Mermaid text) are not shown.

    Parameters
    ----------
    flow_class : type
        A subclass of :class:`~nextpipe.flow.FlowSpec`.

    Returns
    -------
    FlowGraph
        The checked graph.

    Raises
    ------
    CommandError
        When the class declares its steps in a way that cannot run (the graph's error message).
    """
    flow = object.__new__(flow_class)  # the graph needs the class only: skip the constructor's side effects
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return FlowGraph(flow)
    except Exception as error:
        raise CommandError(f"the graph of {flow_class.__name__} cannot be built: {error}") from error


def _dot_id(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dot_node(step: FlowStep) -> str:
    definition = step.definition
    label = definition.get_id()
    attributes = {"shape": "box", "style": "rounded"}
    if definition.is_repeat():
        label += f" x{definition.get_repetitions()}"
        attributes = {"shape": "box3d"}
    if definition.is_join():
        attributes = {"shape": "invtrapezium"}
    if definition.is_foreach():
        attributes = {"shape": "diamond"}
    if definition.is_app():
        label += f"\napp: {definition.get_app_id()}"
        attributes = {"shape": "component"}
    if definition.optional is not None:
        attributes["style"] = ",".join(filter(None, [attributes.get("style"), "dashed"]))
    attributes["label"] = label
    rendered = ", ".join(f"{key}={_dot_id(value)}" for key, value in attributes.items())
    return f"  {_dot_id(definition.get_id())} [{rendered}];"


def _edge_label(step: FlowStep, successor: FlowStep) -> str | None:
    """The label of the Mermaid arrow from a step to a successor."""
    foreach, join = step.definition.is_foreach(), successor.definition.is_join()
    if foreach and not join:
        return "foreach"
    if join and not foreach:
        return "join"
    return None


def to_dot(graph: FlowGraph, name: str = "flow") -> str:
    """
    Render a flow's graph as Graphviz DOT text.

    Each step is a node whose shape tells its kind: a diamond for ``@foreach``,
    a trapezium for ``@join``, a 3D box (labelled ``xN``) for ``@repeat``, a
    component (labelled with the app id) for ``@app``, a rounded box otherwise;
    an ``@optional`` step is dashed. Edges are labelled like the Mermaid arrows
    (``foreach``, ``join``).

    Parameters
    ----------
    graph : FlowGraph
        The graph.
    name : str, default="flow"
        The graph's name, usually the flow class's name.

    Returns
    -------
    str
        The DOT text, ending with a newline.
    """
    lines = [
        f"digraph {_dot_id(name)} {{",
        "  rankdir=LR;",
        '  node [fontname="Helvetica"];',
        '  edge [fontname="Helvetica"];',
    ]
    lines += [_dot_node(step) for step in graph.steps]
    for step in graph.steps:
        for successor in step.successors:
            label = _edge_label(step, successor)
            attributes = f" [label={_dot_id(label)}]" if label else ""
            source, target = _dot_id(step.definition.get_id()), _dot_id(successor.definition.get_id())
            lines.append(f"  {source} -> {target}{attributes};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot_text: str) -> str:
    """
    Render DOT text as an SVG picture with Graphviz's ``dot`` program.

    Parameters
    ----------
    dot_text : str
        The graph, as :func:`to_dot` renders it.

    Returns
    -------
    str
        The SVG document.

    Raises
    ------
    CommandError
        With exit code 2 when ``dot`` is not on ``PATH`` (the message says how
        to install it); with exit code 1 when it fails.
    """
    dot = shutil.which("dot")
    if dot is None:
        raise CommandError(
            f"--format svg needs Graphviz's 'dot' program, which is not on PATH. {GRAPHVIZ_INSTALL_HINT}"
        )
    completed = subprocess.run([dot, "-Tsvg"], input=dot_text, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise CommandError(f"dot failed (exit {completed.returncode}): {completed.stderr.strip()}", exit_code=1)
    return completed.stdout


def render(graph: FlowGraph, output_format: str, name: str = "flow") -> str:
    """
    Render a flow's graph in one of :data:`FORMATS`.

    Parameters
    ----------
    graph : FlowGraph
        The graph.
    output_format : str
        ``mermaid``, ``dot``, ``url`` or ``svg``.
    name : str, default="flow"
        The graph's name in DOT and SVG output.

    Returns
    -------
    str
        The text to print, ending with a newline.
    """
    mermaid = graph._to_mermaid()
    if output_format == "mermaid":
        return mermaid
    if output_format == "url":
        return mermaid_url(mermaid) + "\n"
    dot_text = to_dot(graph, name)
    return dot_text if output_format == "dot" else render_svg(dot_text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nextpipe", description="Tools for nextpipe decision workflows.")
    parser.add_argument("--version", action="version", version=f"nextpipe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    graph = commands.add_parser(
        "graph",
        help="print a flow's graph without running it",
        description="Print the graph of a flow without running it. The file is imported as a module: "
        "its 'if __name__ == \"__main__\":' block does not run.",
    )
    graph.add_argument(
        "target",
        metavar="FILE.py[:ClassName]",
        help="the file defining the flow, and the flow class when the file defines several",
    )
    graph.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        default="mermaid",
        help="mermaid text (default), Graphviz dot, the mermaid.ink url, or an svg picture rendered by Graphviz",
    )
    graph.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of standard output")
    add_cache_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``nextpipe`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments, without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status.
    """
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help(sys.stderr)
        return 2
    if arguments.command == "cache":
        return _cache(arguments)
    try:
        path, class_name = split_target(arguments.target)
        flow_class = find_flow(load_module(path), class_name, where=path)
        text = render(build_graph(flow_class), arguments.format, flow_class.__name__)
    except CommandError as error:
        print(f"nextpipe: error: {error}", file=sys.stderr)
        return error.exit_code
    if not arguments.output:
        sys.stdout.write(text)
        return 0
    try:
        with open(arguments.output, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as error:
        print(f"nextpipe: error: cannot write {arguments.output}: {error.strerror or error}.", file=sys.stderr)
        return 2
    return 0


def _cache(arguments: argparse.Namespace) -> int:
    """``nextpipe cache list|clear``: a store that cannot be read is reported in one line (exit 2)."""
    import sqlite3

    try:
        return run_cache_command(arguments, sys.stdout)
    except (sqlite3.Error, OSError) as error:
        print(f"nextpipe: error: the run cache cannot be read: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
