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
import functools
import importlib.util
import inspect
import linecache
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, NamedTuple

from .__about__ import __version__
from .constants import STATUS_PENDING
from .decorators import DECLARATION_ERRORS_ATTR, UNCALLED_DECORATOR_ATTR, Step
from .utils import log_internal

if TYPE_CHECKING:
    from .uplink import FlowUpdateDTO


_PACKAGE = __name__.partition(".")[0] + "."


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
        A graph reads it from the source only when first asked for: nothing else needs it.
    step_definition : Step
        The step's definition, with its decorators' settings.
    docstring : str or None
        The docstring of the step's function.

    Attributes
    ----------
    definition : Step
        The step's definition (``step_definition``).
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

    def __init__(self, step_function: ast.FunctionDef | None, step_definition: Step, docstring: str | None):
        self._step_function = step_function
        # Set by the graph: reads the source of all its steps once, when a step_function is first asked for.
        self._source: _SourceReader | None = None
        self.definition = step_definition
        self.docstring = docstring
        self.lock = threading.Lock()
        self.done = False
        self.skipped = False
        self.successors: list[FlowStep] = []
        self.predecessors: list[FlowStep] = []
        self.nodes: list[FlowNode] = []
        # How the function is called: with no arguments, with the inputs, or with the flow and the inputs.
        self.call_mode = "inputs"

    @property
    def step_function(self) -> ast.FunctionDef | None:
        """ast.FunctionDef or None: The parsed definition of the step's function."""
        if self._source is not None:
            self._source.read()
        return self._step_function

    @step_function.setter
    def step_function(self, node: ast.FunctionDef | None) -> None:
        self._step_function = node
        self._source = None

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
        Set by an app node once its run exists: cancels the run if it is still in progress and removes the
        node's output directory; called only when the node's result is not wanted.
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


def _definitions_in_file(filename: str, module_globals: dict[str, Any] | None) -> dict[tuple[int, str], ast.AST]:
    """Every function definition of a source file, by (first line with its decorators, name); empty without source."""
    linecache.checkcache(filename)  # re-read a file edited since it was cached, as inspect does
    lines = linecache.getlines(filename, module_globals)
    try:
        tree = ast.parse("".join(lines), filename)
    except (SyntaxError, ValueError):
        return {}
    definitions = {}
    statements = list(tree.body)
    while statements:  # functions are statements: no need to walk into expressions as ast.walk does
        node = statements.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            definitions[min([node.lineno] + [d.lineno for d in node.decorator_list]), node.name] = node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            statements.extend(getattr(node, field, ()))
    return definitions


def _function_defs(functions: list[Callable]) -> list[ast.FunctionDef | None]:
    """
    The parsed definitions of functions, reading and parsing each source file once.

    A function's code object knows its file, first line and name, which pick its definition out
    of the file's syntax tree, so the cost is one parse per file, not one source lookup per
    step. ``None`` for a function whose source cannot be read (``exec``, ``python -c``, lambdas).
    """
    files: dict[str, dict[tuple[int, str], ast.AST]] = {}
    found = []
    for function in functions:
        target = inspect.unwrap(function)  # the user's own def, also under @staticmethod or functools.wraps
        code = getattr(target, "__code__", None)
        if code is None:
            found.append(None)
            continue
        definitions = files.get(code.co_filename)
        if definitions is None:
            module_globals = getattr(target, "__globals__", None)
            definitions = files[code.co_filename] = _definitions_in_file(code.co_filename, module_globals)
        found.append(definitions.get((code.co_firstlineno, code.co_name)))
    return found


class _SourceReader:
    """Fills the ``step_function`` of a graph's steps on first use, parsing each source file once for all."""

    def __init__(self, steps: list[FlowStep]):
        self._steps = steps
        self._lock = threading.Lock()

    def read(self) -> None:
        with self._lock:
            steps, self._steps = self._steps, []
            nodes = _function_defs([s.definition.function for s in steps])
            for step, node in zip(steps, nodes, strict=True):
                step.step_function = node


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


# FlowSpec methods that a step of that name would hide, so that the flow could not run or be read. nextpipe's later
# additions (``summary``, ``add_hook``, ``client``) stay usable as step names, as they were in 0.7.3: a step hides
# them on its flow (``FlowSpec.summary(flow)`` still works), and nextpipe's own code does not go through them.
_RESERVED_NAMES = ("run", "get_result")


def _declared_steps(flow_class: type) -> list[Step]:
    """
    The steps of a flow class and its bases, each once: base classes first, each in definition order.

    Raises
    ------
    FlowDefinitionError
        For a declaration mistake recorded by a decorator, a decorator used without its call, two
        steps with the same id, a step named ``run`` or ``get_result`` (it would hide the ``FlowSpec``
        method), or no steps at all.
    """
    by_name: dict[str, Any] = {}
    for klass in reversed(flow_class.__mro__):
        by_name.update(vars(klass))
    names_by_id: dict[str, str] = {}
    steps: dict[Step, None] = {}
    for name, value in by_name.items():
        if isinstance(value, staticmethod):  # @staticmethod above @step: the step is the function inside
            value = value.__func__
        if not callable(value):
            continue
        uncalled = getattr(value, UNCALLED_DECORATOR_ATTR, None)
        if isinstance(uncalled, str):  # (a mock class attribute answers any attribute: not a flag)
            raise FlowDefinitionError(f"Step {name}: {uncalled} Used so, {name} is not a step and would never run.")
        errors = getattr(value, DECLARATION_ERRORS_ATTR, None)
        if errors and isinstance(errors, list):
            if not getattr(value, "is_step", False):
                errors = [*errors, "It is not a step at all: add @step right above 'def'."]
            raise FlowDefinitionError(f"Step {name}: " + " ".join(errors))
        definition = getattr(value, "step", None)
        if not getattr(value, "is_step", False) or not isinstance(definition, Step):
            # The wrapper of a decorator without functools.wraps, under the step's name: the step is lost.
            if any(
                getattr(content, "is_step", False) is True and getattr(content, "__name__", None) == name
                for content in _closed_over(value)
            ):
                raise FlowDefinitionError(
                    f"Step {name}: a decorator above @step replaced the step with {value.__qualname__}, which is "
                    f"not a step, so {name} would never run. Put @step above your own decorators (with "
                    "functools.wraps in them, so that the step keeps its name)."
                )
            continue
        if name in _RESERVED_NAMES:
            raise FlowDefinitionError(
                f"Step {name} of {flow_class.__name__} hides FlowSpec.{name}: flow.{name} would be the step "
                "instead. Give the step function another name."
            )
        if definition in steps:
            continue  # a step bound to a second name (legacy = prepare): still one step
        step_id = definition.get_id()
        if step_id in names_by_id:
            raise FlowDefinitionError(
                f"Steps {names_by_id[step_id]} and {name} of {flow_class.__name__} have the same id {step_id!r}: "
                "a step's id is the name of its function, so give each step function a name of its own "
                "(define it with 'def', not as a lambda)."
            )
        names_by_id[step_id] = name
        steps[definition] = None
    if not steps:
        raise FlowDefinitionError(
            f"Flow {flow_class.__name__} declares no steps: mark each step function with @step, "
            "the innermost decorator (the line right above 'def')."
        )
    return list(steps)


def _closed_over(value: Any) -> list[Any]:
    """The values a function closes over (none for anything else): a decorator's wrapper holds the step there."""
    contents = []
    for cell in getattr(value, "__closure__", None) or ():
        try:
            contents.append(cell.cell_contents)
        except ValueError:  # a cell not assigned yet
            pass
    return contents


class _Parameters(NamedTuple):
    """What a step function's parameters accept."""

    any: bool  # declares any parameter at all
    positional: tuple[str, ...]  # names of the positional parameters
    required: int  # how many positional parameters have no default
    varargs: bool  # declares *args
    required_keyword_only: tuple[str, ...]  # keyword-only parameters without a default


def _parameters(function: Callable) -> _Parameters | None:
    """The parameters of a function, None when they cannot be told."""
    if type(function) is types.FunctionType and not function.__dict__:  # no __wrapped__ or __signature__ to follow
        # The code object answers directly; inspect.signature costs ten times more for the same answer.
        code = function.__code__
        count = code.co_argcount
        keyword_only = code.co_varnames[count : count + code.co_kwonlyargcount]
        defaults = function.__kwdefaults__ or {}
        return _Parameters(
            any=bool(count or keyword_only or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)),
            positional=code.co_varnames[:count],
            required=count - len(function.__defaults__ or ()),
            varargs=bool(code.co_flags & inspect.CO_VARARGS),
            required_keyword_only=tuple(name for name in keyword_only if name not in defaults),
        )
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return _Parameters(
        any=bool(params),
        positional=tuple(p.name for p in positional),
        required=sum(p.default is p.empty for p in positional),
        varargs=any(p.kind == p.VAR_POSITIONAL for p in params),
        required_keyword_only=tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty),
    )


def _call_mode(step: FlowStep, received: int) -> str:
    """Decide how a Python step is called with ``received`` values, or raise if its parameters cannot take them."""
    name = step.definition.get_id()
    params = _parameters(step.definition.function)
    if params is None:
        return "inputs"
    if params.required_keyword_only:
        raise FlowDefinitionError(
            f"Step {name} declares keyword-only parameters without defaults "
            f"({', '.join(params.required_keyword_only)}); steps receive their inputs as positional arguments only."
        )
    if not params.any:
        return "none"
    positional = params.positional
    if positional and positional[0] == "self" and len(positional) == received + 1:
        return "flow"
    if params.required <= received and (params.varargs or received <= len(positional)):
        return "inputs"
    source = ", ".join(p.definition.get_id() for p in step.predecessors) or "the flow's input"
    if step.definition.is_join():
        source = f"the joined list of {source}"
    raise FlowDefinitionError(
        f"Step {name} receives {received} value(s) ({source}) but its function declares "
        f"{len(positional)} positional parameter(s) ({', '.join(positional)}). "
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
        self.steps = [FlowStep(None, d, _docstring(d.function)) for d in _declared_steps(flow_class)]
        source = _SourceReader(self.steps)
        for step in self.steps:
            step._source = source
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
        log_internal(f"Flow: {flow_class.__name__}")
        log_internal(f"nextpipe: {__version__}")
        log_internal(f"nextmv: {_nextmv_version()}")
        log_internal("Flow graph steps:")
        for step in self.steps:
            log_internal("Step:")
            log_internal(f"  Definition: {step.definition}")
            log_internal(f"  Docstring: {step.docstring}")
        mermaid = self._to_mermaid()
        log_internal("Mermaid diagram:")
        log_internal(mermaid)
        log_internal(f"Mermaid URL: {mermaid_url(mermaid)}")


@functools.cache
def _nextmv_version() -> str:
    """
    The nextmv SDK's ``__version__``, read once per process.

    Read from the SDK's ``__about__`` module, loaded on its own when the SDK is not imported yet:
    importing the SDK takes a quarter of a second, and importlib.metadata tens of milliseconds.
    """
    about = sys.modules.get("nextmv.__about__")
    if about is None:
        package = importlib.util.find_spec("nextmv")
        if package is None or not package.submodule_search_locations:
            return "not installed"
        path = os.path.join(package.submodule_search_locations[0], "__about__.py")
        spec = importlib.util.spec_from_file_location("nextmv.__about__", path)
        about = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(about)
        except OSError:
            return "unknown"
    return str(getattr(about, "__version__", "unknown"))


def _docstring(function: Callable) -> str | None:
    """A function's docstring, cleaned of indentation as ``ast.get_docstring`` does."""
    doc = getattr(function, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else None


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
