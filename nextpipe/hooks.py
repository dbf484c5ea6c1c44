"""
Hooks: callbacks on a flow run's events.

A hook is any object with some of the methods of :class:`FlowHooks` (subclass
it and override what you need). Register it for every flow with
:func:`register`, or for one flow with ``FlowSpec.add_hook``. The runner calls
the hooks of a run in registration order (global ones first), from the thread
where the event happens (a node's worker for node events). An exception in a
hook is logged once per hook and event and never fails the flow.

The run summary, the live progress display and tracing are built on these
hooks; when no hook is registered the runner does no work for them.
"""

from __future__ import annotations

from typing import Any


class FlowHooks:
    """
    Base class of hooks: every method does nothing; override the ones you need.

    Every method receives the ``flow`` (the ``FlowSpec``); node events also
    receive the ``node`` (a ``nextpipe.flow.FlowNode``, whose ``started_at``,
    ``finished_at`` and ``duration`` are set by the runner).
    """

    def flow_start(self, flow: Any) -> None:
        """Called when ``run()`` starts, before any node starts."""

    def flow_end(self, flow: Any, error: BaseException | None) -> None:
        """Called when ``run()`` ends; ``error`` is what it raises, ``None`` on success."""

    def node_start(self, flow: Any, node: Any) -> None:
        """Called when a node starts running (its status is ``running``)."""

    def node_skip(self, flow: Any, node: Any) -> None:
        """Called for the single node of a step skipped by ``@optional``."""

    def node_success(self, flow: Any, node: Any) -> None:
        """Called when a node succeeded (its ``result`` is set)."""

    def node_failure(self, flow: Any, node: Any, error: BaseException) -> None:
        """Called when a node failed (its ``error`` is set), before the flow fails."""

    def node_retry(self, flow: Any, node: Any, error: BaseException, attempt: int, delay: float) -> None:
        """Called when attempt ``attempt`` (1-based) of a node failed with ``error`` and is retried in ``delay`` s."""
