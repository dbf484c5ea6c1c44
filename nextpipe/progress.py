"""
Live progress: a display of each step's node counts and the elapsed time while a flow runs, drawn with ``rich``.

It applies only on an interactive terminal (see :func:`progress_applies`) and
reads the graph's nodes each time it redraws, so it needs only the
``flow_start`` and ``flow_end`` hooks and nodes pay nothing. While it runs,
stderr (and stdout, when it is the same terminal) goes through the display, so
log lines print above it instead of garbling it.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import threading
import time
from typing import Any

from .constants import ENV_RUN_ID
from .hooks import FlowHooks
from .utils import logger

PROGRESS_ENV = "NEXTPIPE_PROGRESS"
"""Environment variable: ``0`` (or ``false``, ``no``, ``off``) turns the live display off."""

REFRESH_PER_SECOND = 4
"""How often the live display redraws."""

_OFF = ("0", "false", "no", "off")
# One display at a time: a second flow running at once prints plain lines.
_display_lock = threading.Lock()


def _isatty(stream: Any) -> bool:
    try:
        return stream is not None and stream.isatty()
    except Exception:  # a replaced stream without a working isatty
        return False


def progress_applies(flow: Any) -> bool:
    """
    Tell whether a run of ``flow`` gets the live display.

    It does on an interactive terminal (``sys.stderr`` is a TTY and ``TERM`` is
    not ``dumb``) that no other rich live display uses, unless ``Configuration(progress=False)``,
    ``NEXTPIPE_PROGRESS=0``, the ``CI`` variable is set, the flow runs as a
    Nextmv run (``NEXTMV_RUN_ID``), or the ``nextpipe`` logger's level is above
    INFO.

    Parameters
    ----------
    flow : FlowSpec
        The flow about to run.

    Returns
    -------
    bool
        Whether to show the live display.
    """
    if not getattr(flow.config, "progress", True):
        return False
    if os.environ.get(PROGRESS_ENV, "").strip().lower() in _OFF:
        return False
    if os.environ.get("CI", "").strip().lower() not in ("", *_OFF) or os.environ.get(ENV_RUN_ID):
        return False
    if os.environ.get("TERM") == "dumb" or not _isatty(sys.stderr):
        return False
    if getattr(sys.stderr, "rich_proxied_file", None) is not None:  # another live display (the caller's) is on
        return False
    return logger.isEnabledFor(logging.INFO)


class _Board:
    """The display's content: rebuilt from the graph's nodes at each redraw (a finished step's row is kept)."""

    def __init__(self, flow: Any):
        self.flow = flow
        self.started = time.monotonic()
        self._final_rows: dict[Any, tuple[str, ...]] = {}
        # A step's first start, once seen, is final: a node that starts later cannot have started earlier.
        self._first_starts: dict[Any, datetime.datetime] = {}

    def __rich__(self) -> Any:
        from rich.table import Table

        elapsed = time.monotonic() - self.started
        table = Table(title=f"{self.flow.name}  {elapsed:.1f}s", title_justify="left", box=None, padding=(0, 1))
        for column in ("step", "status", "done", "running", "failed", "waiting", "time"):
            table.add_column(column, justify="left" if column in ("step", "status") else "right")
        now = datetime.datetime.now(datetime.timezone.utc)
        for step in self.flow.graph.steps:
            row = self._final_rows.get(step)
            if row is None:
                nodes = list(step.nodes)  # a snapshot: the runner replaces the list when the step starts
                start = self._first_starts.get(step)
                if start is None:
                    start = min((t for node in nodes if (t := node.started_at) is not None), default=None)
                    if start is not None:
                        self._first_starts[step] = start
                row = _row(step, nodes, start, now)
                if step.done:
                    self._final_rows[step] = row
            table.add_row(*row)
        return table


_STYLES = {"running": "yellow", "succeeded": "green", "failed": "red", "skipped": "dim", "waiting": "dim"}


def _row(step: Any, nodes: list[Any], start: datetime.datetime | None, now: datetime.datetime) -> tuple[str, ...]:
    """A step's row: id, status, node counts (done, running, failed, waiting) and time so far."""
    from .summary import STATUS_FAILED, STATUS_PENDING, STATUS_RUNNING, STATUS_SKIPPED, STATUS_SUCCEEDED, step_status

    status, n = step_status(step, nodes)
    counts = (n[STATUS_SUCCEEDED] + n[STATUS_SKIPPED], n[STATUS_RUNNING], n[STATUS_FAILED], n[STATUS_PENDING])
    cells = [str(c) for c in counts] if nodes else ["-"] * len(counts)
    # From the first node's start to now while the step runs, to its last node's end once it is done.
    end = max((t for node in nodes if (t := node.finished_at) is not None), default=now) if step.done else now
    took = f"{(end - start).total_seconds():.1f}s" if start is not None else ""
    return (step.definition.get_id(), f"[{_STYLES[status]}]{status}[/]", *cells, took)


class ProgressHook(FlowHooks):
    """
    Shows a live display of the flow's steps (nodes done / running / failed / waiting) and the elapsed time.

    Parameters
    ----------
    console : rich.console.Console, optional
        Where to draw; by default a console on ``sys.stderr``.
    refresh_per_second : float, default=REFRESH_PER_SECOND
        How often to redraw.
    """

    def __init__(self, console: Any = None, refresh_per_second: float = REFRESH_PER_SECOND):
        self.console = console
        self.refresh_per_second = refresh_per_second
        self._live: Any = None

    def flow_start(self, flow: Any) -> None:
        """Start the live display, unless another flow shows one (parameters: :meth:`FlowHooks.flow_start`)."""
        if not _display_lock.acquire(blocking=False):
            return
        try:
            from rich.console import Console
            from rich.live import Live

            console = self.console if self.console is not None else Console(file=sys.stderr)
            live = Live(
                _Board(flow),
                console=console,
                refresh_per_second=self.refresh_per_second,
                transient=True,  # the summary table follows; the display leaves no trace
                redirect_stderr=True,
                redirect_stdout=_isatty(sys.stdout),  # only when stdout is the same terminal, never a pipe or file
            )
            live.start()
            self._live = live
        except BaseException:
            _display_lock.release()
            raise

    def flow_end(self, flow: Any, error: BaseException | None) -> None:
        """Stop the live display (parameters: :meth:`FlowHooks.flow_end`)."""
        live, self._live = self._live, None
        if live is None:
            return
        try:
            live.stop()
        finally:
            _display_lock.release()
