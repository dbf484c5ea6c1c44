"""Executing one node: a call of the step's Python function, or a run of its Nextmv application."""

from __future__ import annotations

from typing import Any

from .graph import FlowNode


def execute_node(flow_spec: Any, node: FlowNode, args: list[Any]) -> Any:
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

    Returns
    -------
    Any
        The step function's return value, or the app run's result.
    """
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
