"""Executing one node: a call of the step's Python function, or a run of its Nextmv application."""

from __future__ import annotations

import threading
from typing import Any

from .graph import FlowNode

# What the running node's thread reads to learn it should stop: an object with a ``cancel`` attribute
# (the node itself, or the attempt of a node under ``@timeout``/``@retry``).
_current = threading.local()


def cancelled() -> bool:
    """
    Whether the node running in the calling thread should stop.

    True once the flow failed or was interrupted, or once the node's attempt
    outlived its ``@timeout`` (and was abandoned). A long Python step can check
    it now and then and return early: nextpipe cannot stop a Python thread
    from outside. Outside a step it is always false.

    Returns
    -------
    bool
        Whether the calling step should stop.

    Examples
    --------
    >>> import nextpipe
    >>> nextpipe.cancelled()
    False
    """
    token = getattr(_current, "token", None)
    return token is not None and token.cancel


def execute_node(flow_spec: Any, node: FlowNode, args: list[Any], token: Any = None) -> Any:
    """
    Execute a node and return its result.

    Parameters
    ----------
    flow_spec : FlowSpec
        The flow the node belongs to.
    node : FlowNode
        The node.
    args : list
        The node's input values (see ``nextpipe._inputs.node_inputs``).
    token : Any, optional
        What :func:`cancelled` reads (its ``cancel`` attribute) in this thread; the node by default.

    Returns
    -------
    Any
        The step function's return value, or the app run's result.
    """
    _current.token = node if token is None else token
    step = node.parent
    if step.definition.is_app():
        from ._apps import run_app_node  # deferred: imports the nextmv SDK

        return run_app_node(flow_spec, node, args[0] if args else None)
    function = step.definition.function
    if step.call_mode == "inputs":
        return function(*args)
    if step.call_mode == "none":
        return function()
    return function(flow_spec, *args)
