"""Small helpers: logging with step names, value conversion and source lookup."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

THREAD_NAME_PREFIX = "nextpipe-"
"""Prefix of the names of the threads that run nodes; the rest of the name is the node id."""

# One lock for stderr so that lines written by concurrent steps never interleave.
_log_lock = threading.Lock()


def _current_step_name() -> str:
    name = threading.current_thread().name
    if name.startswith(THREAD_NAME_PREFIX):
        return name[len(THREAD_NAME_PREFIX) :]
    return "main"


def _write_line(line: str) -> None:
    stream = sys.stderr
    if stream is None:  # pythonw, some services: nowhere to log, and logging never fails a flow
        return
    with _log_lock:
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed stream or a broken pipe: the line is lost, the flow goes on
            pass


def log(message: str, step_name: str | None = None) -> None:
    """
    Log a message to stderr, prefixed with the name of the step that logs it.

    Parameters
    ----------
    message : str
        The message to log.
    step_name : str, optional
        Name shown in brackets before the message. By default the id of the
        node whose thread calls this function, or ``main`` outside a node.

    Examples
    --------
    >>> log("preparing data")  # doctest: +SKIP
    [main] preparing data
    """
    _write_line(f"[{step_name if step_name is not None else _current_step_name()}] {message}")


def log_internal(message: str) -> None:
    """
    Log a message of nextpipe itself to stderr, prefixed with ``[nextpipe]``.

    Parameters
    ----------
    message : str
        The message to log.
    """
    _write_line(f"[nextpipe] {message}")


def wrap_func(function: Callable[..., Any]) -> Callable[[tuple[tuple, dict]], Any]:
    """
    Wrap a function so that it takes its positional and keyword arguments as one value.

    Parameters
    ----------
    function : Callable
        The function to wrap.

    Returns
    -------
    Callable
        A function ``g(args)`` that returns ``function(*args[0], **args[1])``.
    """

    def wrapper(args: tuple[tuple, dict]) -> Any:
        return function(*args[0], **args[1])

    return wrapper


def convert_to_string_values(input_dict: dict[str, Any], preserve_none: bool = False) -> dict[str, Any]:
    """
    Convert the values of a dictionary to strings.

    Parameters
    ----------
    input_dict : dict
        The dictionary to convert.
    preserve_none : bool, default=False
        Keep ``None`` values as ``None`` instead of dropping their keys.

    Returns
    -------
    dict
        A new dictionary with the same keys (less those whose value is ``None``,
        unless ``preserve_none``) and ``str`` values.
    """
    if preserve_none:
        return {k: (None if v is None else str(v)) for k, v in input_dict.items()}
    return {k: str(v) for k, v in input_dict.items() if v is not None}


def _ipython_history() -> list[str]:
    """Cells executed so far in an IPython kernel, newest last; empty outside IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return []
    return [cell for cell in shell.user_ns.get("In", []) if cell]


def get_ast_root(obj: Any) -> ast.AST | None:
    """
    Parse the source code that defines an object.

    The source is read with :func:`inspect.getsource`; inside an IPython kernel
    (Jupyter) a class whose source cannot be read that way is looked up in the
    cell history instead, newest cell first.

    Parameters
    ----------
    obj : Any
        A class or function.

    Returns
    -------
    ast.AST or None
        The root of the parsed source, or ``None`` when no source can be found.
    """
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        pass
    name = getattr(obj, "__name__", None)
    for cell in reversed(_ipython_history()):
        try:
            tree = ast.parse(cell)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                return node
    return None
