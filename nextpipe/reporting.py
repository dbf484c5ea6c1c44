"""
Reporting: the built-in consumers of a run's hooks (summary table, live progress, tracing).

``FlowSpec.run()`` adds :func:`default_hooks` to the hooks of each run. Each
consumer lives in a module of its own and is returned only where it applies,
so that a run nobody watches pays nothing for them. All of them override only
``flow_start`` and ``flow_end`` except tracing, which is there only when
OpenTelemetry is configured.
"""

from __future__ import annotations

from typing import Any

from .hooks import FlowHooks


def default_hooks(flow: Any) -> list[FlowHooks]:
    """
    The built-in hooks that apply to a run of ``flow``.

    Always the summary hook (it records the run's start and end for
    ``flow.summary()`` and logs the summary table unless
    ``Configuration(summary=False)``); the live progress display on an
    interactive terminal (see :func:`nextpipe.progress.progress_applies`); and
    tracing when OpenTelemetry is configured (see
    :func:`nextpipe.tracing.tracing_applies`).

    Parameters
    ----------
    flow : FlowSpec
        The flow about to run.

    Returns
    -------
    list of FlowHooks
        The consumers to call during this run, in order: the progress display
        stops before the summary table is logged.
    """
    from .progress import ProgressHook, progress_applies
    from .summary import SummaryHook
    from .tracing import TracingHook, tracing_applies

    hooks: list[FlowHooks] = []
    if tracing_applies():
        hooks.append(TracingHook())
    if progress_applies(flow):
        hooks.append(ProgressHook())
    hooks.append(SummaryHook(log_table=getattr(flow.config, "summary", True)))
    return hooks
