"""Small helpers: logging with step names (through the standard ``logging``), value conversion and source lookup."""

from __future__ import annotations

import ast
import inspect
import logging
import os
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

THREAD_NAME_PREFIX = "nextpipe-"
"""Prefix of the names of the threads that run nodes; the rest of the name is the node id."""

LOGGER_NAME = "nextpipe"
"""Name of the logger of nextpipe's own lines; the user's ``log()`` lines go to its child ``nextpipe.step``."""

LOG_LEVEL_ENV = "NEXTPIPE_LOG_LEVEL"
"""Environment variable read at import: the ``nextpipe`` logger's level (a name such as ``WARNING``, or a number)."""

LOG_FORMAT = "[%(step)s] %(message)s"
"""Format of the default handler's lines: the original's ``[<step>] <message>``."""

logger = logging.getLogger(LOGGER_NAME)
"""The ``nextpipe`` logger: nextpipe's own lines (``log_internal``), at INFO unless ``NEXTPIPE_LOG_LEVEL`` says."""
step_logger = logging.getLogger(LOGGER_NAME + ".step")
"""The ``nextpipe.step`` logger: the lines of ``log()``, with the name in brackets as the record's ``step``."""
_CONSOLE_HANDLER_NAME = "nextpipe-console"


def _console_streams() -> set[int]:
    """Ids of the streams that reach the console now (a rich live display proxies stderr: its file counts too)."""
    streams = {id(sys.stderr), id(sys.stdout), id(sys.__stderr__), id(sys.__stdout__)}
    proxied = getattr(sys.stderr, "rich_proxied_file", None)
    if proxied is not None:
        streams.add(id(proxied))
    return streams


def _writes_to_console(handler: logging.Handler, streams: set[int]) -> bool:
    stream = getattr(handler, "stream", None)
    if stream is None:  # e.g. rich.logging.RichHandler writes through a Console
        stream = getattr(getattr(handler, "console", None), "file", None)
    return stream is not None and id(stream) in streams


class ConsoleHandler(logging.Handler):
    """
    The default handler of the ``nextpipe`` logger: writes ``[<step>] <message>`` lines to stderr.

    It writes to whatever ``sys.stderr`` is when a record is emitted, does
    nothing when it is ``None`` (pythonw, embedded hosts), and steps back when
    another handler that a record reaches (on the root logger after
    ``logging.basicConfig()``, say) already writes to the console, so that no
    line is printed twice. Each line is written whole under the handler's lock,
    so lines of concurrent steps never interleave.
    """

    def __init__(self) -> None:
        super().__init__()
        self.name = _CONSOLE_HANDLER_NAME
        self.setFormatter(_FORMATTER)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record as one line to the current ``sys.stderr`` unless another handler shows it on the console."""
        if sys.stderr is None or self._shown_elsewhere(record):
            return
        try:
            self.write(self.format(record))
        except Exception:
            self.handleError(record)

    def write(self, line: str) -> None:
        """Write a line to the current ``sys.stderr`` (nothing when it is ``None``); call with the lock held."""
        stream = sys.stderr
        if stream is not None:
            stream.write(line + "\n")
            stream.flush()

    def _shown_elsewhere(self, record: logging.LogRecord) -> bool:
        streams = None
        current: logging.Logger | None = _LOGGERS.get(record.name) or logging.getLogger(record.name)
        while current is not None:
            for handler in current.handlers:
                if handler is not self and record.levelno >= handler.level:
                    if streams is None:
                        streams = _console_streams()
                    if _writes_to_console(handler, streams) and handler.filter(record):  # (a filter may drop it)
                        return True
            current = current.parent if current.propagate else None
        return False


_FORMATTER = logging.Formatter(LOG_FORMAT)
_LOGGERS = {logger.name: logger, step_logger.name: step_logger}


def _level_from_environment() -> int:
    value = os.environ.get(LOG_LEVEL_ENV, "").strip()
    if not value:
        return logging.INFO
    level = int(value) if value.isdigit() else logging.getLevelName(value.upper())
    if isinstance(level, int):
        return level
    logger.warning(
        "Ignoring %s=%s: use a level name (DEBUG, INFO, WARNING, ERROR, CRITICAL) or a number.",
        LOG_LEVEL_ENV,
        value,
        extra={"step": "nextpipe"},
    )
    return logging.INFO


def _console_handler() -> ConsoleHandler:
    # The logger has a level of its own so that the root logger's default (WARNING) does not hide the info lines.
    for handler in logger.handlers:
        if handler.name == _CONSOLE_HANDLER_NAME:  # once, even if the module is reloaded
            return handler  # type: ignore[return-value]
    handler = ConsoleHandler()
    logger.addHandler(handler)
    logger.setLevel(_level_from_environment())
    return handler


_console = _console_handler()


def _only_console(source: logging.Logger) -> bool:
    """Whether a record of ``source`` would meet no filter and no handler but the default one, as nextpipe set it up."""
    current: logging.Logger | None = source
    while current is not logger:  # a descendant of nextpipe's logger (nextpipe.step): nothing of its own
        if current is None or current.filters or current.handlers or not current.propagate:
            return False
        current = current.parent
    handlers = logger.handlers
    if logger.filters or len(handlers) != 1 or handlers[0] is not _console:
        return False
    current = logger.parent if logger.propagate else None
    while current is not None:
        if current.filters or current.handlers:
            return False
        current = current.parent if current.propagate else None
    return not _console.filters and _console.formatter is _FORMATTER and _console.level <= logging.INFO


def _log(source: logging.Logger, step: str, message: str, attributes: dict[str, Any] | None = None) -> None:
    """Log at INFO with ``step`` and ``attributes`` as record attributes; never raises (the caller checks the level)."""
    # The usual case, nobody configured logging: write the line the record would have become (a record costs ~10x),
    # as ConsoleHandler.write would, inlined (this runs for every node).
    if _only_console(source):
        stream = sys.stderr
        if stream is not None:
            with _console.lock:
                try:
                    stream.write(f"[{step}] {message}\n")
                    stream.flush()
                except Exception:  # a broken stderr must not fail the flow
                    pass
        return
    try:
        source.info(message, extra={"step": step, **(attributes or {})}, stacklevel=3)
    except Exception:  # a failing handler must not fail the flow
        pass


def _error_text(error: BaseException) -> str:
    """The message of an exception; its type name when the message is empty or cannot be read."""
    try:
        text = str(error)
    except Exception as problem:
        return f"{type(error).__name__} (its message could not be read: {type(problem).__name__})"
    return text or type(error).__name__


def _current_step_name() -> str:
    name = threading.current_thread().name
    if name.startswith(THREAD_NAME_PREFIX):
        return name[len(THREAD_NAME_PREFIX) :]
    return "main"


def log(message: str, step_name: str | None = None) -> None:
    """
    Log a message of a step, shown as ``[<step>] <message>`` on stderr.

    The record goes to the ``nextpipe.step`` logger at level INFO, with the
    name in brackets as its ``step`` attribute. Logging never raises.

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
    if step_logger.isEnabledFor(logging.INFO):
        _log(step_logger, step_name if step_name is not None else _current_step_name(), message)


def log_internal(message: str) -> None:
    """
    Log a message of nextpipe itself, shown as ``[nextpipe] <message>`` on stderr.

    The record goes to the ``nextpipe`` logger at level INFO, with ``step``
    set to ``"nextpipe"``. Logging never raises.

    Parameters
    ----------
    message : str
        The message to log.
    """
    if logger.isEnabledFor(logging.INFO):
        _log(logger, "nextpipe", message)


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
