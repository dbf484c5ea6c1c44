"""
What each node of a step receives (the contract's section 3), as a pure function of the finished predecessors.

Every value carries the nodes it came from, so that the uplink can show which
nodes fed which.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from .constants import STATUS_FAILED
from .graph import FlowNode, FlowStep
from .utils import log_internal

# One value a predecessor contributes, with the nodes whose results make it up.
Contribution = tuple[Any, tuple[FlowNode, ...]]


def _contributions(predecessor: FlowStep) -> list[Contribution]:
    definition = predecessor.definition
    nodes = predecessor.nodes
    if predecessor.skipped:
        return [(None, (nodes[0],))]
    if definition.is_foreach():
        if len(nodes) == 1 and nodes[0].status == STATUS_FAILED:  # a tolerated failure (@allow_failure) fans out
            return []  # over nothing
        if len(nodes) != 1 or not isinstance(nodes[0].result, list):
            returned = ", ".join(type(n.result).__name__ for n in nodes)
            log_internal(
                f"Step {definition.get_id()} is declared @foreach, so it must run once and return a list, but "
                f"{'it' if len(nodes) == 1 else f'its {len(nodes)} nodes'} returned {returned or 'nothing'}: "
                "return a list of the items to fan out over (e.g. list(...)), or remove @foreach."
            )
            raise Exception(
                f"Predecessor step {definition.get_id()} declared as 'foreach' must return a list, "
                f"but returned {[n.result for n in nodes]}"
            )
        source = (nodes[0],)
        return [(item, source) for item in nodes[0].result]
    if definition.is_repeat():
        return [([n.result for n in nodes], tuple(nodes))]
    return [(n.result, (n,)) for n in nodes]


def node_inputs(step: FlowStep, flow_input: Any, max_step_inputs: int) -> list[tuple[list[Any], list[FlowNode]]]:
    """
    Compute the inputs of a step whose predecessors have all finished.

    Parameters
    ----------
    step : FlowStep
        The step.
    flow_input : Any
        The flow's input, received by steps without predecessors.
    max_step_inputs : int
        Most inputs a step with predecessors may get.

    Returns
    -------
    list of (list, list of FlowNode)
        One entry per node to create, in node index order: the positional
        arguments of the call, and the nodes whose results they hold.

    Raises
    ------
    Exception
        When a foreach predecessor did not return a list, or the step would get
        more than ``max_step_inputs`` inputs.
    """
    definition = step.definition
    if not step.predecessors:
        elements: Any = [((flow_input, ()),)]
    else:
        contributions = [_contributions(p) for p in step.predecessors]
        # Count before building: a refused Cartesian product must cost no time and no memory.
        count = (1 if definition.is_join() else math.prod(map(len, contributions))) * definition.get_repetitions()
        if count > max_step_inputs:
            log_internal(
                f"Step {definition.get_id()} would run {count} times, more than max_step_inputs={max_step_inputs}; "
                f"if that is intended, raise the limit: Configuration(max_step_inputs={count})."
            )
            raise Exception(
                f"Step {definition.get_id()} has too many inputs ({count}). Maximum allowed is {max_step_inputs}."
            )
        elements = itertools.product(*contributions)

    if definition.is_join():
        elements = list(elements)
        sources = dict.fromkeys(node for element in elements for _, nodes in element for node in nodes)
        inputs = [([[[value for value, _ in element] for element in elements]], list(sources))]
    elif len(step.predecessors) <= 1:  # fast path of fan-outs: one contribution per element
        inputs = [([value for value, _ in element], list(element[0][1])) for element in elements]
    else:
        inputs = [
            ([value for value, _ in element], list(dict.fromkeys(n for _, nodes in element for n in nodes)))
            for element in elements
        ]
    return inputs * definition.get_repetitions()
