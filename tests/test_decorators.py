"""SPEC section 2: declaring a flow with the decorators, the Step definition object and its reprs."""

from __future__ import annotations

import itertools
import warnings

import nextmv
import pytest
from nextmv.deprecated import NextmvDeprecationWarning

from nextpipe import FlowSpec, app, foreach, join, needs, optional, repeat, step
from nextpipe.decorators import (
    App,
    Foreach,
    InputType,
    Join,
    Needs,
    Optional,
    Repeat,
    Step,
    StepType,
)

# ---------------------------------------------------------------------------------------------------------------------
# @step
# ---------------------------------------------------------------------------------------------------------------------


def test_step_attributes() -> None:
    def prepare(data):
        return data

    decorated = step(prepare)
    assert decorated.is_step is True
    assert isinstance(decorated.step, Step)
    assert decorated.step.function is prepare
    assert decorated.step.type == StepType.DEFAULT
    assert decorated.step.run_ids == []
    assert decorated.__name__ == "prepare"


def test_step_is_a_plain_function_receiving_the_data() -> None:
    class Flow(FlowSpec):
        @step
        def prepare(data):
            return {"got": data}

    # The step is a plain function: called through the class, or by the runner, it receives just the data.
    assert Flow.prepare(5) == {"got": 5}
    flow = Flow("f", 7)
    flow.run()
    assert flow.get_result(flow.prepare) == {"got": 7}


def test_step_wrapper_passes_args_and_kwargs() -> None:
    @step
    def f(a, b=2, *, c=3):
        return (a, b, c)

    assert f(1) == (1, 2, 3)
    assert f(1, b=5, c=6) == (1, 5, 6)


def test_plain_step_methods() -> None:
    @step
    def plain(data):
        return data

    s = plain.step
    assert s.get_id() == "plain"
    assert s.is_needs() is False
    assert s.skip() is False
    assert s.is_repeat() is False
    assert s.get_repetitions() == 1
    assert s.is_app() is False
    assert s.get_app_id() is None
    assert s.is_foreach() is False
    assert s.is_join() is False
    assert s.get_run_ids() == []
    s.set_run_ids(["run-1", "run-2"])
    assert s.get_run_ids() == ["run-1", "run-2"]
    assert s.run_ids == ["run-1", "run-2"]
    assert repr(s) == "Step(plain)"


# ---------------------------------------------------------------------------------------------------------------------
# @needs, @optional, @repeat, @foreach, @join
# ---------------------------------------------------------------------------------------------------------------------


@step
def _a(x):
    return x


@step
def _b(x):
    return x


def test_needs() -> None:
    @needs(predecessors=[_a, _b])
    @step
    def c(x, y):
        return x + y

    s = c.step
    assert s.is_needs() is True
    assert isinstance(s.needs, Needs)
    assert s.needs.predecessors == [_a, _b]
    assert repr(s.needs) == "StepNeeds(_a,_b)"
    assert repr(s) == "Step(c, StepNeeds(_a,_b))"


def test_needs_single_predecessor_repr() -> None:
    @needs(predecessors=[_a])
    @step
    def c(x):
        return x

    assert repr(c.step.needs) == "StepNeeds(_a)"


@pytest.mark.parametrize(("value", "skipped"), [(True, False), (False, True), (1, False), (0, True), (None, True)])
def test_optional_skip(value, skipped) -> None:
    seen = []

    def condition(definition):
        seen.append(definition)
        return value

    @optional(condition=condition)
    @step
    def maybe(x):
        return x

    s = maybe.step
    assert isinstance(s.optional, Optional)
    assert s.optional.condition is condition
    assert s.skip() is skipped
    # the condition receives the step definition
    assert seen == [s]


def test_optional_repr() -> None:
    def condition(_):
        return True

    @optional(condition=condition)
    @step
    def maybe(x):
        return x

    assert repr(maybe.step.optional) == f"StepOnlyIf({condition})"
    # optional does not appear in the Step repr
    assert repr(maybe.step) == "Step(maybe)"


def test_repeat() -> None:
    @repeat(repetitions=3)
    @step
    def rep(x):
        return x

    s = rep.step
    assert s.is_repeat() is True
    assert isinstance(s.repeat, Repeat)
    assert s.repeat.repetitions == 3
    assert s.get_repetitions() == 3
    assert repr(s.repeat) == "StepRepeat(3)"
    assert repr(s) == "Step(rep, StepRepeat(3))"


def test_foreach() -> None:
    @foreach()
    @step
    def fan(x):
        return [x]

    s = fan.step
    assert s.is_foreach() is True
    assert isinstance(s.foreach, Foreach)
    assert repr(s.foreach) == "StepForeach()"
    assert repr(s) == "Step(fan)"
    assert s.is_join() is False


def test_join() -> None:
    @join()
    @step
    def collect(xs):
        return xs

    s = collect.step
    assert s.is_join() is True
    assert isinstance(s.join, Join)
    assert repr(s.join) == "StepJoin()"
    assert repr(s) == "Step(collect)"
    assert s.is_foreach() is False


# ---------------------------------------------------------------------------------------------------------------------
# @app
# ---------------------------------------------------------------------------------------------------------------------


def test_app_defaults() -> None:
    @app(app_id="echo")
    @step
    def run_echo():
        pass

    s = run_echo.step
    assert s.is_app() is True
    assert s.type == StepType.APP
    assert s.get_app_id() == "echo"
    a = s.app
    assert isinstance(a, App)
    assert a.app_id == "echo"
    assert a.instance_id == ""
    assert a.options == {}
    assert a.input_type is None
    assert a.full_result is False
    assert a.run_configuration is None
    assert a.polling_options is nextmv.DEFAULT_POLLING_OPTIONS
    assert a.bypass_result is None
    assert a.emit_live_logs is False
    assert repr(a) == "StepRun(echo, , {}, False)"
    assert repr(s) == "Step(run_echo, StepRun(echo, , {}, False))"


def test_app_all_attributes() -> None:
    config = nextmv.RunConfiguration(execution_class="6c9500mb870s")
    polling = nextmv.PollingOptions(max_tries=3)

    @app(
        app_id="solver",
        instance_id="prod",
        options={"duration": 10, "verbose": True, "skip": None, "name": "x"},
        full_result=True,
        run_configuration=config,
        polling_options=polling,
        bypass_result={"out": 1},
        emit_live_logs=True,
    )
    @step
    def solve():
        pass

    a = solve.step.app
    assert a.app_id == "solver"
    assert a.instance_id == "prod"
    assert a.options == {"duration": "10", "verbose": "True", "name": "x"}
    assert all(isinstance(v, str) for v in a.options.values())
    assert a.full_result is True
    assert a.run_configuration is config
    assert a.polling_options is polling
    assert a.bypass_result == {"out": 1}
    assert a.emit_live_logs is True
    assert solve.step.get_app_id() == "solver"
    expected = "StepRun(solver, prod, {'duration': '10', 'verbose': 'True', 'name': 'x'}, True)"
    assert repr(a) == expected


def test_app_step_full_repr_with_needs_and_repeat() -> None:
    @repeat(repetitions=2)
    @app(app_id="echo", options={"k": 1})
    @needs(predecessors=[_a])
    @step
    def run_echo(x):
        pass

    assert repr(run_echo.step) == "Step(run_echo, StepNeeds(_a), StepRepeat(2), StepRun(echo, , {'k': '1'}, False))"


def test_app_parameters_alias_warns_and_sets_options() -> None:
    with pytest.warns(NextmvDeprecationWarning, match="parameters"):

        @app(app_id="echo", parameters={"a": 1, "b": None})
        @step
        def run_echo():
            pass

    assert run_echo.step.app.options == {"a": "1"}


def test_app_parameters_and_options_is_an_error() -> None:
    with pytest.raises(ValueError) as info:
        app(app_id="echo", parameters={"a": 1}, options={"b": 2})
    assert str(info.value) == "You can only use either 'parameters' or 'options', not both."
    assert type(info.value) is ValueError


@pytest.mark.parametrize("input_type", [InputType.JSON, InputType.FILES])
def test_app_input_type_warns_and_is_ignored(input_type) -> None:
    with pytest.warns(NextmvDeprecationWarning, match="input_type"):

        @app(app_id="echo", input_type=input_type)
        @step
        def run_echo():
            pass

    s = run_echo.step
    assert s.is_app() is True
    assert s.app.options == {}


def test_app_without_deprecated_arguments_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @app(app_id="echo", options={"a": 1})
        @step
        def run_echo():
            pass

    assert run_echo.step.app.options == {"a": "1"}


# ---------------------------------------------------------------------------------------------------------------------
# Decorators in any order above @step
# ---------------------------------------------------------------------------------------------------------------------


def _condition(_definition):
    return True


DECORATORS = {
    "needs": lambda: needs(predecessors=[_a, _b]),
    "optional": lambda: optional(condition=_condition),
    "repeat": lambda: repeat(repetitions=3),
    "foreach": lambda: foreach(),
    "join": lambda: join(),
}


@pytest.mark.parametrize("order", list(itertools.permutations(DECORATORS)), ids="-".join)
def test_decorators_in_any_order(order) -> None:
    def target(*args):
        return args

    decorated = step(target)
    for name in order:
        decorated = DECORATORS[name]()(decorated)

    assert decorated.is_step is True
    s = decorated.step
    assert s.function is target
    assert s.needs.predecessors == [_a, _b]
    assert s.optional.condition is _condition
    assert s.get_repetitions() == 3
    assert s.is_foreach() and s.is_join() and s.is_repeat() and s.is_needs()
    assert s.skip() is False
    assert repr(s) == "Step(target, StepNeeds(_a,_b), StepRepeat(3))"


@pytest.mark.parametrize("app_first", [True, False])
def test_app_in_any_order(app_first) -> None:
    def target(x):
        return x

    decorated = step(target)
    decorators = [app(app_id="echo"), needs(predecessors=[_a])]
    if not app_first:
        decorators.reverse()
    for decorator in decorators:
        decorated = decorator(decorated)
    s = decorated.step
    assert s.is_app() and s.get_app_id() == "echo"
    assert s.needs.predecessors == [_a]
    assert repr(s) == "Step(target, StepNeeds(_a), StepRun(echo, , {}, False))"


def test_decorated_flow_in_any_order_runs() -> None:
    class OrderedFlow(FlowSpec):
        @step
        def start(data):
            return [data, data + 1]

        @foreach()
        @needs(predecessors=[start])
        @step
        def fan(values):
            return values

        @needs(predecessors=[fan])
        @repeat(repetitions=2)
        @step
        def twice(item):
            return item * 10

        @optional(condition=lambda _: True)
        @join()
        @needs(predecessors=[twice])
        @step
        def collect(items):
            return items

    flow = OrderedFlow("ordered", 1)
    flow.run()
    assert flow.get_result(flow.fan) == [1, 2]
    assert flow.get_result(flow.twice) == [10, 20, 10, 20]
    assert flow.get_result(flow.collect) == [[[10, 20, 10, 20]]]
