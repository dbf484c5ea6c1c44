"""
Property test of SPEC section 3: random DAGs run by nextpipe agree with a small sequential interpreter.

The interpreter below is written from the contract only (it does not use ``nextpipe._inputs``). Each random
flow mixes plain, ``@foreach``, ``@repeat``, ``@join`` and ``@optional`` steps; every step's function is
deterministic and returns a value derived from its own id, its node index (read from the worker thread's name,
``nextpipe-<node id>``) and its inputs, so any difference in argument values, order, fan-out or node numbering
shows up in the results.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from nextpipe import Configuration, FlowSpec, foreach, join, needs, optional, repeat, step

MAX_NODES = 150  # keep every example small and fast
FLOW_INPUT = "IN"


@dataclass
class StepSpec:
    sid: str
    preds: list[int]
    foreach_len: int | None = None  # a foreach step returning this many items
    repetitions: int | None = None  # @repeat(n)
    join: bool = False
    optional: bool | None = None  # None: not optional; else the condition's value
    order: list[str] = field(default_factory=list)  # order in which the decorators are applied above @step


# ---------------------------------------------------------------------------------------------------------------------
# The deterministic step functions
# ---------------------------------------------------------------------------------------------------------------------


def _digest(args: tuple) -> str:
    text = repr(args)
    return text if len(text) <= 80 else "sha:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def step_value(spec: StepSpec, index: Any, args: tuple) -> Any:
    """What the node ``index`` of ``spec`` returns when called with ``args``."""
    d = _digest(args)
    if spec.foreach_len is not None:
        return [(spec.sid, index, k, d) for k in range(spec.foreach_len)]
    return (spec.sid, index, d)


def _make_function(spec: StepSpec):
    prefix = f"nextpipe-{spec.sid}_"

    def function(*args):
        name = threading.current_thread().name
        index: Any = int(name[len(prefix) :]) if name.startswith(prefix) else f"bad-thread:{name}"
        return step_value(spec, index, args)

    function.__name__ = spec.sid
    function.__qualname__ = spec.sid
    return function


def build_flow_class(specs: list[StepSpec]) -> type:
    namespace: dict[str, Any] = {}
    decorated: list[Any] = []
    for spec in specs:
        f = step(_make_function(spec))
        for name in spec.order:
            if name == "needs":
                f = needs(predecessors=[decorated[i] for i in spec.preds])(f)
            elif name == "foreach":
                f = foreach()(f)
            elif name == "repeat":
                f = repeat(repetitions=spec.repetitions)(f)
            elif name == "join":
                f = join()(f)
            elif name == "optional":
                value = spec.optional
                f = optional(condition=lambda _definition, value=value: value)(f)
        decorated.append(f)
        namespace[spec.sid] = f
    return type("RandomFlow", (FlowSpec,), namespace)


# ---------------------------------------------------------------------------------------------------------------------
# The reference interpreter (SPEC section 3)
# ---------------------------------------------------------------------------------------------------------------------


class InputError(Exception):
    pass


@dataclass
class Outcome:
    skipped: bool = False
    results: list[Any] = field(default_factory=list)  # one per node, in node index order
    sources: list[set[str]] = field(default_factory=list)  # node ids feeding each node


def _contribution(spec: StepSpec, outcome: Outcome) -> list[tuple[Any, set[str]]]:
    ids = [f"{spec.sid}_{i}" for i in range(len(outcome.results))]
    if outcome.skipped:
        return [(None, {ids[0]})]
    if spec.foreach_len is not None:
        if len(outcome.results) != 1 or not isinstance(outcome.results[0], list):
            raise InputError(
                f"Predecessor step {spec.sid} declared as 'foreach' must return a list, "
                f"but returned {list(outcome.results)}"
            )
        return [(item, {ids[0]}) for item in outcome.results[0]]
    if spec.repetitions is not None:
        return [(list(outcome.results), set(ids))]
    return [(r, {i}) for r, i in zip(outcome.results, ids, strict=True)]


def interpret(specs: list[StepSpec]) -> tuple[dict[str, Outcome], set[str]]:
    """Run the flow sequentially: the outcome of every step that can run, and every input error that can occur."""
    outcomes: dict[str, Outcome] = {}
    errors: set[str] = set()
    for spec in specs:  # definition order is a topological order: predecessors are always earlier steps
        pred_specs = [specs[i] for i in spec.preds]
        if any(p.sid not in outcomes for p in pred_specs):
            continue  # blocked behind a failure
        if spec.optional is False:
            outcomes[spec.sid] = Outcome(
                skipped=True,
                results=[None],
                sources=[{f"{p.sid}_{i}" for p in pred_specs for i in range(len(outcomes[p.sid].results))}],
            )
            continue
        try:
            if not pred_specs:
                elements = [((FLOW_INPUT, set()),)]
            else:
                elements = list(itertools.product(*(_contribution(p, outcomes[p.sid]) for p in pred_specs)))
        except InputError as error:
            errors.add(str(error))
            continue
        if spec.join:
            sources = set().union(*(s for element in elements for _, s in element))
            inputs = [(([[v for v, _ in element] for element in elements],), sources)]
        else:
            inputs = [(tuple(v for v, _ in element), set().union(*(s for _, s in element))) for element in elements]
        inputs = inputs * (spec.repetitions or 1)
        outcome = Outcome()
        for index, (args, sources) in enumerate(inputs):
            outcome.results.append(step_value(spec, index, args))
            outcome.sources.append(sources)
        outcomes[spec.sid] = outcome
    return outcomes, errors


# ---------------------------------------------------------------------------------------------------------------------
# Random flows
# ---------------------------------------------------------------------------------------------------------------------


@st.composite
def flows(draw) -> list[StepSpec]:
    count = draw(st.integers(min_value=3, max_value=8))
    specs: list[StepSpec] = []
    for i in range(count):
        preds = draw(st.lists(st.integers(min_value=0, max_value=i - 1), max_size=min(2, i), unique=True)) if i else []
        kind = draw(st.sampled_from(["plain", "plain", "foreach", "repeat"]))
        spec = StepSpec(sid=f"s{i}", preds=preds)
        if kind == "foreach":
            spec.foreach_len = draw(st.integers(min_value=0, max_value=3))
        elif kind == "repeat":
            spec.repetitions = draw(st.integers(min_value=1, max_value=3))
        # a join on a start step is left out: the contract only defines join over predecessors' results
        spec.join = bool(preds) and draw(st.integers(min_value=0, max_value=3)) == 0
        spec.optional = draw(st.sampled_from([None, None, True, False]))
        names = [
            name
            for name, present in (
                ("needs", bool(preds)),
                ("foreach", spec.foreach_len is not None),
                ("repeat", spec.repetitions is not None),
                ("join", spec.join),
                ("optional", spec.optional is not None),
            )
            if present
        ]
        spec.order = draw(st.permutations(names))
        specs.append(spec)
    return specs


# ---------------------------------------------------------------------------------------------------------------------
# The property
# ---------------------------------------------------------------------------------------------------------------------


def _expected_get_result(outcome: Outcome) -> Any:
    return outcome.results[0] if len(outcome.results) == 1 else list(outcome.results)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(specs=flows())
def test_random_dags_match_the_reference_interpreter(specs: list[StepSpec]) -> None:
    outcomes, errors = interpret(specs)
    assume(sum(len(o.results) for o in outcomes.values()) <= MAX_NODES)
    event("input error expected" if errors else "runs to the end")

    flow_class = build_flow_class(specs)
    flow = flow_class("random", FLOW_INPUT, conf=Configuration(max_step_inputs=10_000))
    assert [s.definition.get_id() for s in flow.graph.steps] == [s.sid for s in specs]

    raised: BaseException | None = None
    try:
        flow.run()
    except Exception as error:  # compared with the interpreter below
        raised = error

    if not errors:
        assert raised is None, f"unexpected failure: {raised!r}"
        assert set(outcomes) == {s.sid for s in specs}
    else:
        # The first input error the runner meets depends on scheduling, but it must be one the interpreter predicts.
        assert raised is not None, f"expected one of {errors}"
        assert type(raised) is Exception, repr(raised)
        assert str(raised) in errors

    for spec in specs:
        function = getattr(flow, spec.sid)
        flow_step = flow.graph.get_step(function.step)
        if raised is None:
            assert flow_step.done, spec.sid
        if not flow_step.done:
            assert flow.get_result(function) is None
            continue
        assert spec.sid in outcomes, f"{spec.sid} ran although the interpreter says it cannot"
        expected = outcomes[spec.sid]
        assert flow.get_result(function) == _expected_get_result(expected), spec.sid
        assert [n.id for n in flow_step.nodes] == [f"{spec.sid}_{i}" for i in range(len(expected.results))]
        assert [n.result for n in flow_step.nodes] == expected.results, spec.sid
        assert all(n.status == "succeeded" for n in flow_step.nodes), spec.sid
        if not expected.skipped:
            assert [{p.id for p in n.predecessors} for n in flow_step.nodes] == expected.sources, spec.sid


# ---------------------------------------------------------------------------------------------------------------------
# Sanity checks of the interpreter itself on hand-written cases
# ---------------------------------------------------------------------------------------------------------------------


def test_interpreter_join_and_product_shapes() -> None:
    specs = [
        StepSpec("s0", [], foreach_len=2),
        StepSpec("s1", [], repetitions=2),
        StepSpec("s2", [0, 1], join=True),
        StepSpec("s3", [0, 1]),
    ]
    outcomes, errors = interpret(specs)
    assert errors == set()
    items = outcomes["s0"].results[0]
    reps = outcomes["s1"].results
    assert len(items) == 2 and len(reps) == 2
    assert outcomes["s2"].results == [("s2", 0, _digest(([[items[0], reps], [items[1], reps]],)))]
    assert outcomes["s3"].results == [("s3", i, _digest((items[i], reps))) for i in range(2)]
    assert outcomes["s3"].sources == [{"s0_0", "s1_0", "s1_1"}] * 2


def test_interpreter_predicts_foreach_error_and_blocks_successors() -> None:
    specs = [
        StepSpec("s0", [], foreach_len=2),
        StepSpec("s1", [0], foreach_len=1),
        StepSpec("s2", [1]),
        StepSpec("s3", [2]),
    ]
    outcomes, errors = interpret(specs)
    assert set(outcomes) == {"s0", "s1"}
    assert len(errors) == 1
    assert next(iter(errors)).startswith(
        "Predecessor step s1 declared as 'foreach' must return a list, but returned [["
    )


def test_dynamic_flow_class_runs() -> None:
    specs = [StepSpec("s0", [], foreach_len=3, order=["foreach"]), StepSpec("s1", [0], order=["needs"])]
    flow = build_flow_class(specs)("dyn", FLOW_INPUT)
    flow.run()
    items = flow.get_result(flow.s0)
    assert items == [("s0", 0, k, _digest((FLOW_INPUT,))) for k in range(3)]
    assert flow.get_result(flow.s1) == [("s1", i, _digest((items[i],))) for i in range(3)]
