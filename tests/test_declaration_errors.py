"""Every bad declaration is refused when the flow is constructed, with a message naming the step and the fix."""

from __future__ import annotations

import pytest

from nextpipe import Configuration, FlowSpec, app, foreach, join, needs, optional, repeat, step
from nextpipe.flow import FlowDefinitionError


def construct(**namespace) -> FlowSpec:
    return type("BadFlow", (FlowSpec,), namespace)("bad", 1)


@step
def source(x):
    return x


class OtherFlow(FlowSpec):
    @step
    def foreign(x):
        return x


def plain_function(x):
    return x


@pytest.mark.parametrize(
    ("predecessor", "expected"),
    [
        (plain_function, r"Step consumer: @needs lists plain_function, a function that is not a step \(add @step\)"),
        (OtherFlow.foreign, r"Step consumer: @needs lists foreign, a step that is not part of BadFlow"),
        (42, r"Step consumer: @needs lists 42, which is not a step function"),
    ],
)
def test_needs_must_list_steps_of_the_same_flow(predecessor, expected):
    @needs(predecessors=[predecessor])
    @step
    def consumer(x):
        return x

    with pytest.raises(FlowDefinitionError, match=expected):
        construct(source=source, consumer=consumer)


@pytest.mark.parametrize(
    "decorator",
    [needs(predecessors=[source]), foreach(), join(), repeat(repetitions=2), optional(condition=bool), app("echo")],
)
def test_decorator_below_step_says_step_must_be_innermost(decorator):
    @step
    @decorator
    def misplaced(x):
        return x

    with pytest.raises(FlowDefinitionError, match=r"Step misplaced: @\w+ is applied to a function that is not a step"):
        construct(source=source, misplaced=misplaced)
    with pytest.raises(FlowDefinitionError, match="@step must be the innermost decorator"):
        construct(source=source, misplaced=misplaced)


def test_decorator_without_step_at_all_is_refused():
    @needs(predecessors=[source])
    def forgot_step(x):
        return x

    with pytest.raises(FlowDefinitionError, match=r"Step forgot_step: .*add @step"):
        construct(source=source, forgot_step=forgot_step)


@pytest.mark.parametrize("decorator", [foreach, join])
def test_foreach_and_join_without_parentheses(decorator):
    @decorator
    @step
    def fan(x):
        return [x]

    name = decorator.__name__
    with pytest.raises(
        FlowDefinitionError, match=rf"Step fan: @{name} must be called: write @{name}\(\), not @{name}\."
    ):
        construct(fan=fan)


@pytest.mark.parametrize(("received", "params"), [(2, "x"), (1, "x, y"), (3, "a, b")])
def test_parameter_count_must_fit_the_inputs(received, params):
    namespace = {"source": source}
    exec(f"def consumer({params}):\n    return 0", namespace)
    consumer = needs(predecessors=[source] * received)(step(namespace.pop("consumer")))
    namespace.pop("__builtins__")
    with pytest.raises(FlowDefinitionError, match=rf"Step consumer receives {received} value\(s\)"):
        construct(consumer=consumer, **namespace)


def test_parameter_counts_that_fit_are_accepted():
    @needs(predecessors=[source, source])
    @step
    def two(a, b):
        return a + b

    @needs(predecessors=[source, source])
    @step
    def none():
        return "none"

    @needs(predecessors=[source, source])
    @step
    def with_self(self, a, b):
        return (self.name, a + b)

    @needs(predecessors=[source, source])
    @step
    def varargs(*values):
        return sum(values)

    @needs(predecessors=[source, source])
    @step
    def defaults(a, b, c=5):
        return a + b + c

    @join()
    @needs(predecessors=[source, source])
    @step
    def joined(elements):
        return elements

    flow = construct(
        source=source, two=two, none=none, with_self=with_self, varargs=varargs, defaults=defaults, joined=joined
    )
    flow.run()
    assert flow.get_result(flow.two) == 2
    assert flow.get_result(flow.none) == "none"
    assert flow.get_result(flow.with_self) == ("bad", 2)
    assert flow.get_result(flow.varargs) == 2
    assert flow.get_result(flow.defaults) == 7
    assert flow.get_result(flow.joined) == [[1, 1]]


def test_keyword_only_parameters_without_default_are_refused():
    @step
    def kw(x, *, y):
        return x

    with pytest.raises(FlowDefinitionError, match=r"Step kw declares keyword-only parameters without defaults \(y\)"):
        construct(kw=kw)


@pytest.mark.parametrize("count", [0, -1, 1.5, "3", True])
def test_repeat_needs_a_whole_number_of_one_or_more(count):
    @repeat(repetitions=count)
    @step
    def again(x):
        return x

    with pytest.raises(FlowDefinitionError, match=r"Step again: @repeat needs a whole number of repetitions"):
        construct(again=again)


def test_optional_condition_must_be_callable():
    @optional(condition=False)
    @step
    def maybe(x):
        return x

    with pytest.raises(FlowDefinitionError, match=r"Step maybe: @optional needs a callable condition, got False"):
        construct(maybe=maybe)


@pytest.mark.parametrize("app_id", ["", "   ", None])
def test_app_needs_an_app_id(app_id):
    @app(app_id=app_id)
    @step
    def solve(x):
        return x

    with pytest.raises(FlowDefinitionError, match=r"Step solve: @app: app_id must be a non-empty string"):
        construct(solve=solve)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thread_count": -1}, "thread_count must be a whole number of 0"),
        ({"max_step_inputs": 0}, "max_step_inputs must be a whole number of 1 or more"),
        ({"max_step_inputs": -5}, "max_step_inputs must be a whole number of 1 or more"),
    ],
)
def test_configuration_limits(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Configuration(**kwargs)


def test_flow_definition_error_is_a_value_error():
    assert issubclass(FlowDefinitionError, ValueError)


def test_optional_condition_that_raises_fails_the_flow_naming_the_step():
    def broken(_step):
        raise KeyError("missing setting")

    @needs(predecessors=[source])
    @optional(condition=broken)
    @step
    def maybe(x):
        return x

    flow = construct(source=source, maybe=maybe)
    with pytest.raises(RuntimeError, match=r"Flow failed: Step maybe failed: its @optional condition raised KeyError"):
        flow.run()
    assert flow.get_result(flow.source) == 1
