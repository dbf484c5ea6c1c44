"""
Building and checking a flow's graph from its class.

A :class:`FlowGraph` holds one :class:`FlowStep` per ``@step`` function of the
flow class (in definition order, base classes first) and, once the flow runs,
one :class:`FlowNode` per execution of a step. Every declaration mistake is
refused here, when the flow is constructed, with a message naming the step.
"""

from __future__ import annotations

import ast
import base64
import datetime
import inspect
import textwrap
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

from .__about__ import __version__
from .constants import STATUS_PENDING
from .decorators import DECLARATION_ERRORS_ATTR, Step
from .utils import log_internal

if TYPE_CHECKING:
    from .uplink import FlowUpdateDTO


class FlowDefinitionError(ValueError):
    """A flow class declares its steps in a way that cannot run; the message names the step and the fix."""


def check_cycle(graph: dict[Hashable, list[Hashable]]) -> tuple[bool, list[Hashable] | None]:
    """
    Look for a cycle with a topological sweep (Kahn's algorithm).

    Parameters
    ----------
    graph : dict
        Maps each node to the list of its successors.

    Returns
    -------
    tuple of (bool, list or None)
        ``(False, None)`` for a DAG; otherwise ``(True, nodes)`` with the nodes
        that still have unresolved predecessors after the sweep, in the
        order of ``graph``.
    """
    in_degree: dict[Hashable, int] = dict.fromkeys(graph, 0)
    for successors in graph.values():
        for successor in successors:
            in_degree[successor] = in_degree.get(successor, 0) + 1
    ready = [node for node, degree in in_degree.items() if degree == 0]
    while ready:
        node = ready.pop()
        for successor in graph.get(node, ()):
            in_degree[successor] -= 1
            if in_degree[successor] == 0:
                ready.append(successor)
    left = [node for node, degree in in_degree.items() if degree > 0]
    return (True, left) if left else (False, None)


class FlowStep:
    """
    A step of a flow's graph.

    Parameters
    ----------
    step_function : ast.FunctionDef or None
        The parsed definition of the step's function (``None`` when its source cannot be read).
    definition : Step
        The step's definition, with its decorators' settings.
    docstring : str or None
        The docstring of the step's function.

    Attributes
    ----------
    lock : threading.Lock
        Guards the step's nodes.
    done : bool
        Whether every node of the step has finished.
    skipped : bool
        Whether the step was skipped by its ``@optional`` condition.
    predecessors, successors : list of FlowStep
        Neighbouring steps, predecessors in ``@needs`` order.
    nodes : list of FlowNode
        The step's executions, created when the step becomes ready.
    call_mode : str
        How the function is called: ``"inputs"`` (with its inputs), ``"none"``
        (no parameters) or ``"flow"`` (``self`` first).
    """

    def __init__(self, step_function: ast.FunctionDef | None, definition: Step, docstring: str | None):
        self.step_function = step_function
        self.definition = definition
        self.docstring = docstring
        self.lock = threading.Lock()
        self.done = False
        self.skipped = False
        self.successors: list[FlowStep] = []
        self.predecessors: list[FlowStep] = []
        self.nodes: list[FlowNode] = []
        # How the function is called: with no arguments, with the inputs, or with the flow and the inputs.
        self.call_mode = "inputs"

    def __repr__(self) -> str:
        return f"FlowStep({self.definition.get_id()})"


class FlowNode:
    """
    One execution of a step.

    Parameters
    ----------
    parent : FlowStep
        The step this node executes.
    index : int
        Position of the node among the step's nodes, in input order.

    Attributes
    ----------
    id : str
        ``<step id>_<index>``.
    status : str
        ``pending``, ``running``, ``succeeded`` or ``failed``.
    error : str or None
        Why the node failed.
    predecessors : list of FlowNode
        The nodes whose results fed this node's input.
    run_id : str or None
        Id of the app run an app step's node made.
    result : Any
        What the node returned.
    done : bool
        Whether the node finished.
    cancel : bool
        Set when the flow failed or was interrupted while the node ran; an app
        node stops polling and cancels its run.
    cancel_run : Callable or None
        Set by an app node while its run is in progress: cancels the run.
    run_created : threading.Event or None
        Set by an app node while it creates its run; the event is set once the run exists (or creation failed).
    run_created_at, run_finished_at : datetime.datetime or None
        For an app node, when the platform created and finished its run.
    run_ids : list of str
        Ids of the runs of every attempt of an app node (``@retry``), oldest first; ``run_id`` is the latest.
    """

    # Runs of earlier attempts, set only on retried nodes: a class default costs the others nothing.
    _earlier_run_ids: tuple[str, ...] = ()

    def __init__(self, parent: FlowStep, index: int):
        self.parent = parent
        self.index = index
        self.id = f"{parent.definition.get_id()}_{index}"
        self.status = STATUS_PENDING
        self.error: str | None = None
        self.predecessors: list[FlowNode] = []
        self.run_id: str | None = None
        self.result: Any = None
        self.done = False
        self.cancel = False
        # Set by an app node while its run is in progress: cancels the run on the platform.
        self.cancel_run: Callable[[], None] | None = None
        # Set by an app node while it creates its run, so that a failing flow can wait to cancel it.
        self.run_created: threading.Event | None = None
        # perf_counter() readings taken by the runner: one cheap clock call each on the hot path.
        self._started: float | None = None
        self._finished: float | None = None
        self.run_created_at: datetime.datetime | None = None
        self.run_finished_at: datetime.datetime | None = None

    def __repr__(self) -> str:
        return f"FlowNode({self.id})"

    @property
    def run_ids(self) -> list[str]:
        """list of str: Ids of the runs of every attempt of the node, oldest first."""
        latest = [self.run_id] if self.run_id and self.run_id not in self._earlier_run_ids else []
        return [*self._earlier_run_ids, *latest]

    @property
    def started_at(self) -> datetime.datetime | None:
        """datetime.datetime or None: When the node started (UTC); for a skipped step's node, when it was skipped."""
        return _wall_time(self._started)

    @property
    def finished_at(self) -> datetime.datetime | None:
        """datetime.datetime or None: When the node finished (UTC), also when the flow canceled it."""
        return _wall_time(self._finished)

    @property
    def duration(self) -> float | None:
        """
        float or None: Seconds the node ran, from a monotonic clock.

        ``None`` until it finished; ``0.0`` for a skipped step's node and for a
        node the flow canceled before it started.
        """
        if self._finished is None:
            return None
        return 0.0 if self._started is None else max(0.0, self._finished - self._started)


# Maps perf_counter() readings to wall-clock time, so that nodes are timed with one cheap monotonic clock call.
_WALL_CLOCK_OFFSET = time.time() - time.perf_counter()


def _wall_time(reading: float | None) -> datetime.datetime | None:
    if reading is None:
        return None
    return datetime.datetime.fromtimestamp(_WALL_CLOCK_OFFSET + reading, datetime.timezone.utc)


def _function_def(function: Callable) -> ast.FunctionDef | None:
    """The parsed definition of a function, or None when its source cannot be read."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node
    return None


class StepVisitor(ast.NodeVisitor):
    """
    Collects the steps of a flow class from the parsed source of its body.

    Parameters
    ----------
    steps : list of FlowStep
        Receives one :class:`FlowStep` per step function found, in source order.
    flow_class : type
        The flow class whose attributes tell which functions are steps.
    """

    def __init__(self, steps: list[FlowStep], flow_class: type):
        self.steps = steps
        self.flow_class = flow_class

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        """Append a :class:`FlowStep` when ``node`` defines a step of the flow class."""
        function = getattr(self.flow_class, node.name, None)
        definition = getattr(function, "step", None)
        if isinstance(definition, Step):
            self.steps.append(FlowStep(node, definition, ast.get_docstring(node)))


def _step_functions(flow_class: type) -> list[Callable]:
    """The step functions of a flow class and its bases: base classes first, each in definition order."""
    by_name: dict[str, Any] = {}
    for klass in reversed(flow_class.__mro__):
        by_name.update(vars(klass))
    return [f for f in by_name.values() if getattr(f, "is_step", False) and isinstance(getattr(f, "step", None), Step)]


def _misdeclared_functions(flow_class: type) -> Iterable[tuple[str, list[str]]]:
    """Functions of the class carrying declaration mistakes, steps or not."""
    for klass in reversed(flow_class.__mro__):
        for name, value in vars(klass).items():
            errors = getattr(value, DECLARATION_ERRORS_ATTR, None) if callable(value) else None
            if errors:
                if not getattr(value, "is_step", False):
                    errors = [*errors, "It is not a step at all: add @step right above 'def'."]
                yield name, errors


def _call_mode(step: FlowStep, received: int) -> str:
    """Decide how a Python step is called with ``received`` values, or raise if its parameters cannot take them."""
    name = step.definition.get_id()
    try:
        signature = inspect.signature(step.definition.function)
    except (TypeError, ValueError):
        return "inputs"
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    required_keyword_only = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if required_keyword_only:
        raise FlowDefinitionError(
            f"Step {name} declares keyword-only parameters without defaults ({', '.join(required_keyword_only)}); "
            "steps receive their inputs as positional arguments only."
        )
    if not params:
        return "none"

    def fits(count: int) -> bool:
        return len(required) <= count and (varargs or count <= len(positional))

    if positional and positional[0].name == "self" and len(positional) == received + 1:
        return "flow"
    if fits(received):
        return "inputs"
    source = ", ".join(p.definition.get_id() for p in step.predecessors) or "the flow's input"
    if step.definition.is_join():
        source = f"the joined list of {source}"
    raise FlowDefinitionError(
        f"Step {name} receives {received} value(s) ({source}) but its function declares "
        f"{len(positional)} positional parameter(s) ({', '.join(p.name for p in positional)}). "
        f"Declare {received} parameter(s), no parameters, or 'self' followed by {received}."
    )


def _mermaid(steps: list[FlowStep]) -> str:
    lines = ["graph LR"]
    for step in steps:
        sid = step.definition.get_id()
        foreach = step.definition.is_foreach()

        def arrow(successor: FlowStep, foreach: bool = foreach) -> str:
            if foreach and not successor.definition.is_join():
                return "-- foreach -->"
            if not foreach and successor.definition.is_join():
                return "-- join -->"
            return "-->"

        if foreach:
            lines.append(f"  {sid}{{ }}")
        if step.definition.is_repeat():
            lines.append(f"  {sid}{{ }}")
            lines.append(f"  {sid}_join{{ }}")
            for i in range(step.definition.get_repetitions()):
                lines += [f"  {sid}_{i}({sid}_{i})", f"  {sid} --> {sid}_{i}", f"  {sid}_{i} --> {sid}_join"]
            lines += [f"  {sid}_join {arrow(s)} {s.definition.get_id()}" for s in step.successors]
        else:
            lines.append(f"  {sid}({sid})")
            lines += [f"  {sid} {arrow(s)} {s.definition.get_id()}" for s in step.successors]
    return "".join(line + "\n" for line in lines)


class FlowGraph:
    """
    The steps of a flow, linked by their ``@needs`` declarations, checked and ready to run.

    Parameters
    ----------
    flow_spec : FlowSpec
        The flow whose class declares the steps.

    Raises
    ------
    Exception
        When the steps form a cycle, or an app step has more than one predecessor.
    FlowDefinitionError
        For any other declaration mistake; the message names the step.

    Attributes
    ----------
    steps : list of FlowStep
        All steps, in definition order.
    steps_by_definition : dict
        Maps each :class:`~nextpipe.decorators.Step` to its :class:`FlowStep`.
    start_steps : list of FlowStep
        The steps without predecessors.
    """

    def __init__(self, flow_spec: Any):
        self.flow_spec = flow_spec
        flow_class = type(flow_spec)
        for name, errors in _misdeclared_functions(flow_class):
            raise FlowDefinitionError(f"Step {name}: " + " ".join(errors))
        self.steps = [
            FlowStep(_function_def(f), f.step, inspect.getdoc(f.step.function)) for f in _step_functions(flow_class)
        ]
        self.steps_by_definition = {s.definition: s for s in self.steps}
        self._link(flow_class)
        self.start_steps = [s for s in self.steps if not s.predecessors]
        for step in self.steps:
            if not step.definition.is_app():
                received = 1 if step.definition.is_join() or not step.predecessors else len(step.predecessors)
                step.call_mode = _call_mode(step, received)
        self._log_definition(flow_class)

    def _link(self, flow_class: type) -> None:
        for step in self.steps:
            if not step.definition.is_needs():
                continue
            for predecessor in step.definition.needs.predecessors:
                step.predecessors.append(self._resolve_predecessor(step, predecessor, flow_class))
            for predecessor in dict.fromkeys(step.predecessors):
                predecessor.successors.append(step)
            if step.definition.is_app() and len(step.predecessors) > 1:
                raise Exception(
                    f"App steps cannot have more than one predecessor, but {step.definition.get_id()} "
                    f"has {len(step.predecessors)}"
                )
        has_cycle, cycle_steps = check_cycle({s: s.successors for s in self.steps})
        if has_cycle:
            raise Exception(
                f"Cycle detected in the flow graph, cycle steps: {[s.definition.get_id() for s in cycle_steps]}"
            )

    def _resolve_predecessor(self, step: FlowStep, predecessor: Any, flow_class: type) -> FlowStep:
        name = step.definition.get_id()
        definition = getattr(predecessor, "step", None)
        if definition in self.steps_by_definition:
            return self.steps_by_definition[definition]
        if isinstance(definition, Step):
            problem = f"{definition.get_id()}, a step that is not part of {flow_class.__name__} (another flow's step?)"
        elif callable(predecessor):
            problem = f"{getattr(predecessor, '__name__', predecessor)!s}, a function that is not a step (add @step)"
        else:
            problem = f"{predecessor!r}, which is not a step function"
        raise FlowDefinitionError(
            f"Step {name}: @needs lists {problem}. List step functions of the same flow class, "
            "e.g. @needs(predecessors=[prepare])."
        )

    def get_step(self, definition: Step) -> FlowStep:
        """
        Return the graph's step for a step definition.

        Parameters
        ----------
        definition : Step
            The ``step`` attribute of a step function.

        Returns
        -------
        FlowStep
            The step.
        """
        return self.steps_by_definition[definition]

    def _to_mermaid(self) -> str:
        """Return the graph as Mermaid flowchart text."""
        return _mermaid(self.steps)

    def _to_uplink_dto(self) -> FlowUpdateDTO:
        """Return the graph and its nodes' states as the document the uplink sends."""
        from .uplink import FlowDTO, FlowUpdateDTO, NodeDTO, StepDTO

        steps = []
        nodes = []
        for step in self.steps:
            steps.append(
                StepDTO(
                    id=step.definition.get_id(),
                    predecessors=[p.definition.get_id() for p in step.predecessors],
                    docs=step.docstring,
                    app_id=step.definition.get_app_id(),
                )
            )
            nodes += [
                NodeDTO(
                    id=node.id,
                    parent_id=step.definition.get_id(),
                    predecessor_ids=[p.id for p in node.predecessors],
                    status=node.status,
                    run_id=node.run_id,
                )
                for node in list(step.nodes)
            ]
        return FlowUpdateDTO(
            pipeline_graph=FlowDTO(steps=steps, nodes=nodes),
            updated_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        )

    def _log_definition(self, flow_class: type) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            nextmv_version = version("nextmv")
        except PackageNotFoundError:
            nextmv_version = "not installed"
        log_internal(f"Flow: {flow_class.__name__}")
        log_internal(f"nextpipe: {__version__}")
        log_internal(f"nextmv: {nextmv_version}")
        log_internal("Flow graph steps:")
        for step in self.steps:
            log_internal("Step:")
            log_internal(f"  Definition: {step.definition}")
            log_internal(f"  Docstring: {step.docstring}")
        mermaid = self._to_mermaid()
        log_internal("Mermaid:")
        log_internal(mermaid)
        log_internal(f"Mermaid URL: {mermaid_url(mermaid)}")


def mermaid_url(mermaid: str) -> str:
    """
    Return a mermaid.ink link that renders Mermaid text as an SVG picture.

    Parameters
    ----------
    mermaid : str
        The Mermaid text.

    Returns
    -------
    str
        ``https://mermaid.ink/svg/<base64 of the text>?theme=dark``.
    """
    return f"https://mermaid.ink/svg/{base64.b64encode(mermaid.encode('utf-8')).decode('ascii')}?theme=dark"


__all__ = [
    "FlowDefinitionError",
    "FlowGraph",
    "FlowNode",
    "FlowStep",
    "StepVisitor",
    "check_cycle",
    "mermaid_url",
]
