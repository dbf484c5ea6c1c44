"""
Reporting: the built-in consumers of a run's hooks (summary table, live progress, tracing).

``FlowSpec.run()`` adds :func:`default_hooks` to the hooks of each run. Each
consumer lives in a module of its own and is returned only where it applies,
so that a run nobody watches pays nothing for them.
"""

from __future__ import annotations

from typing import Any

from .hooks import FlowHooks


def default_hooks(flow: Any) -> list[FlowHooks]:
    """
    The built-in hooks that apply to a run of ``flow``.

    Parameters
    ----------
    flow : FlowSpec
        The flow about to run.

    Returns
    -------
    list of FlowHooks
        The consumers to call during this run (empty when none applies).
    """
    return []
