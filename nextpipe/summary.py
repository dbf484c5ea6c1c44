"""
Run summary: what a flow run did, per step, built from the graph's nodes after (or during) the run.

The only thing recorded while the flow runs is its start and end (by
:class:`SummaryHook`, a ``flow_start``/``flow_end`` hook, so nodes pay
nothing); everything else comes from the nodes, whose timing the runner
records anyway. ``FlowSpec.summary()`` returns a :class:`RunSummary`; at the
end of a run its table goes to the ``nextpipe`` logger unless
``Configuration(summary=False)`` or the logger's level is above INFO.
"""

from __future__ import annotations

import datetime
import logging
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any

from dataclasses_json import DataClassJsonMixin, config

from .constants import STATUS_FAILED, STATUS_PENDING, STATUS_RUNNING, STATUS_SUCCEEDED
from .hooks import FlowHooks
from .utils import _error_text, _log, logger

STATUS_SKIPPED = "skipped"
"""Status of a step (and of its single node) skipped by ``@optional``."""
STATUS_WAITING = "waiting"
"""Status of a step that has not started: its predecessors are not done."""
STATUS_CANCELED = "canceled"
"""Status of a flow run stopped by Ctrl-C or SIGTERM."""

NODE_STATUSES = (STATUS_PENDING, STATUS_RUNNING, STATUS_SUCCEEDED, STATUS_FAILED, STATUS_SKIPPED)
"""Keys of :attr:`StepSummary.nodes`, in display order."""

_ISO = config(
    encoder=lambda value: None if value is None else value.isoformat(),
    decoder=lambda value: None if value is None else datetime.datetime.fromisoformat(value),
)


@dataclass
class StepSummary(DataClassJsonMixin):
    """
    What one step of a flow run did.

    Attributes
    ----------
    step : str
        The step's id.
    status : str
        ``waiting`` (not started), ``running``, ``succeeded``, ``failed`` or ``skipped``.
    nodes : dict of str to int
        Number of the step's nodes by status (the keys of :data:`NODE_STATUSES`).
    duration_min, duration_median, duration_max : float or None
        Durations of the step's finished nodes, in seconds (``None`` when none finished).
    app_id : str or None
        The app of an app step.
    run_ids : list of str
        The app runs the step's nodes made, in node order (every attempt's, oldest first).
    errors : dict of str to str
        Why nodes failed, by node id.
    """

    step: str
    status: str
    nodes: dict[str, int]
    duration_min: float | None = None
    duration_median: float | None = None
    duration_max: float | None = None
    app_id: str | None = None
    run_ids: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class RunSummary(DataClassJsonMixin):
    """
    What a flow run did: its status and wall time, and a :class:`StepSummary` per step.

    Attributes
    ----------
    flow : str
        The flow's name.
    status : str
        ``pending`` (never run), ``running``, ``succeeded``, ``failed`` or ``canceled``.
    started_at, finished_at : datetime.datetime or None
        When the run started and ended (UTC); ISO 8601 text in ``to_dict()``/``to_json()``.
    duration : float or None
        Wall time of the run in seconds, ``None`` until it ended.
    error : str or None
        What ``run()`` raised.
    steps : list of StepSummary
        One per step, in definition order.
    """

    flow: str
    status: str
    started_at: datetime.datetime | None = field(default=None, metadata=_ISO)
    finished_at: datetime.datetime | None = field(default=None, metadata=_ISO)
    duration: float | None = None
    error: str | None = None
    steps: list[StepSummary] = field(default_factory=list)

    def table(self) -> list[str]:
        """
        Render the summary as a compact text table.

        Returns
        -------
        list of str
            A headline, a header row and one row per step, columns aligned.
        """
        nodes = _count(sum(sum(s.nodes.values()) for s in self.steps), "node")
        took = f" in {_seconds(self.duration)}" if self.duration is not None else ""
        headline = f"Flow {self.flow} {self.status}{took}: {_count(len(self.steps), 'step')}, {nodes}"
        rows = [("step", "status", "nodes", "time (min / median / max)", "runs")]
        for s in self.steps:
            counts = ", ".join(f"{n} {status}" for status, n in s.nodes.items() if n) or "-"
            runs = s.run_ids[0] + (f" (+{len(s.run_ids) - 1})" if len(s.run_ids) > 1 else "") if s.run_ids else ""
            if s.duration_min is None or s.duration_min == s.duration_max:
                times = _seconds(s.duration_max)
            else:
                times = " / ".join(_seconds(d) for d in (s.duration_min, s.duration_median, s.duration_max))
            rows.append((s.step, s.status, counts, times, runs))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        return [headline, *lines]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f}ms"
    return f"{value:.2f}s" if value < 100 else f"{value:.0f}s"


@dataclass(frozen=True)
class _RunTimes:
    """Start and end of a flow's latest run, kept on the flow (replaced whole, so readers see one consistent state)."""

    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    duration: float | None = None  # from a monotonic clock
    error: BaseException | None = None
    started: float = 0.0  # perf_counter() at the start


_RUN_TIMES_ATTR = "_nextpipe_run_times"


def summarize(flow: Any) -> RunSummary:
    """
    Build the summary of a flow's latest run from its graph's nodes.

    Parameters
    ----------
    flow : FlowSpec
        The flow; it may be running, done, or never run.

    Returns
    -------
    RunSummary
        The flow's status, wall time and per-step figures.
    """
    times: _RunTimes = getattr(flow, _RUN_TIMES_ATTR, None) or _RunTimes()
    if times.started_at is None:
        status = STATUS_PENDING
    elif times.finished_at is None:
        status = STATUS_RUNNING
    elif times.error is None:
        status = STATUS_SUCCEEDED
    elif isinstance(times.error, KeyboardInterrupt | SystemExit):
        status = STATUS_CANCELED
    else:
        status = STATUS_FAILED
    error = None if times.error is None else _error_text(times.error)
    steps = [summarize_step(step) for step in flow.graph.steps] if times.started_at is not None else []
    return RunSummary(flow.name, status, times.started_at, times.finished_at, times.duration, error, steps)


def step_status(step: Any, nodes: list[Any]) -> tuple[str, dict[str, int]]:
    """
    Tell a step's status and count its nodes by status.

    Parameters
    ----------
    step : FlowStep
        The step.
    nodes : list of FlowNode
        A snapshot of the step's nodes.

    Returns
    -------
    tuple of (str, dict of str to int)
        The step's status (see :attr:`StepSummary.status`) and the node counts
        (the keys of :data:`NODE_STATUSES`).
    """
    counts = dict.fromkeys(NODE_STATUSES, 0)
    skipped = getattr(step, "skipped", False)
    for node in nodes:
        counts[STATUS_SKIPPED if skipped else node.status] += 1
    if skipped:
        status = STATUS_SKIPPED
    elif not nodes:  # a done step without nodes followed a fan-out over nothing
        status = STATUS_SUCCEEDED if step.done else STATUS_WAITING
    elif counts[STATUS_FAILED]:
        status = STATUS_FAILED
    elif step.done:
        status = STATUS_SUCCEEDED
    else:
        status = STATUS_RUNNING
    return status, counts


def summarize_step(step: Any) -> StepSummary:
    """
    Build the summary of one step from its nodes as they are now.

    Parameters
    ----------
    step : FlowStep
        The step.

    Returns
    -------
    StepSummary
        The step's status, node counts, durations, runs and errors.
    """
    nodes = list(step.nodes)  # a snapshot: the runner replaces the list when the step starts
    status, counts = step_status(step, nodes)
    skipped = status == STATUS_SKIPPED
    durations = [d for n in nodes if n.done and (d := getattr(n, "duration", None)) is not None] if not skipped else []
    return StepSummary(
        step=step.definition.get_id(),
        status=status,
        nodes=counts,
        duration_min=min(durations) if durations else None,
        duration_median=statistics.median(durations) if durations else None,
        duration_max=max(durations) if durations else None,
        app_id=step.definition.get_app_id(),
        run_ids=[run_id for n in nodes for run_id in n.run_ids],
        errors={n.id: n.error for n in nodes if n.error},
    )


class SummaryHook(FlowHooks):
    """
    Records the start and end of each run of a flow and, at the end, logs the summary table.

    Only ``flow_start`` and ``flow_end`` are overridden, so nodes pay nothing.
    The table goes to the ``nextpipe`` logger at INFO, one record per line; the
    headline's record carries the :class:`RunSummary` as its ``summary`` attribute.

    Parameters
    ----------
    log_table : bool, default=True
        Whether to log the table at the end of the run.
    """

    def __init__(self, log_table: bool = True):
        self.log_table = log_table

    def flow_start(self, flow: Any) -> None:
        """Record the run's start (parameters: :meth:`FlowHooks.flow_start`)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        setattr(flow, _RUN_TIMES_ATTR, _RunTimes(started_at=now, started=time.perf_counter()))

    def flow_end(self, flow: Any, error: BaseException | None) -> None:
        """Record the run's end and log the summary table (parameters: :meth:`FlowHooks.flow_end`)."""
        ended = time.perf_counter()
        start: _RunTimes = getattr(flow, _RUN_TIMES_ATTR, None) or _RunTimes(started=ended)
        finished_at = datetime.datetime.now(datetime.timezone.utc)
        times = replace(start, finished_at=finished_at, duration=ended - start.started, error=error)
        setattr(flow, _RUN_TIMES_ATTR, times)
        if self.log_table and logger.isEnabledFor(logging.INFO):
            summary = summarize(flow)
            lines = summary.table()
            _log(logger, "nextpipe", lines[0], {"summary": summary})
            for line in lines[1:]:
                _log(logger, "nextpipe", line)
