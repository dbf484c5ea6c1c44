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


# ---------------------------------------------------------------------------------------------------------------------
# Decorator factories used without their call: the step would vanish from the graph
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decorator", "usage"),
    [
        (repeat, "@repeat(repetitions=3)"),
        (needs, "@needs(predecessors=[prepare])"),
        (optional, "@optional(condition=lambda step: ...)"),
        (app, '@app(app_id="my-app")'),
    ],
)
def test_decorator_factory_without_its_call(decorator, usage):
    @decorator
    @step
    def sample(x):
        return x

    with pytest.raises(FlowDefinitionError) as info:
        construct(source=source, sample=sample)
    name = decorator.__name__
    assert str(info.value) == (
        f"Step sample: @{name} is used without its call: write {usage}. "
        "Used so, sample is not a step and would never run."
    )


def test_uncalled_factory_under_another_decorator_is_the_reported_mistake():
    @needs(predecessors=[source])
    @repeat
    @step
    def sample(x):
        return x

    with pytest.raises(FlowDefinitionError, match=r"^Step sample: @repeat is used without its call") as info:
        construct(source=source, sample=sample)
    assert "innermost" not in str(info.value)


def test_uncalled_factory_above_a_function_without_step():
    @repeat
    def sample(x):
        return x

    with pytest.raises(FlowDefinitionError, match=r"^Step sample: @repeat is used without its call"):
        construct(source=source, sample=step(sample))


def test_single_predecessor_without_a_list_still_works():
    # The called form with one step (no list) is unambiguous: accepted, not mistaken for a bare @needs.
    @needs(predecessors=source)
    @step
    def after(x):
        return x + 1

    flow = construct(source=source, after=after)
    flow.run()
    assert flow.get_result(flow.after) == 2


# ---------------------------------------------------------------------------------------------------------------------
# Steps: none at all, one under two names, two with one id
# ---------------------------------------------------------------------------------------------------------------------


def test_flow_without_steps_is_refused():
    class Forgotten(FlowSpec):
        def prepare(data):
            return data

        def solve(data):
            return data

    with pytest.raises(FlowDefinitionError) as info:
        Forgotten("forgotten", 1)
    assert str(info.value) == (
        "Flow Forgotten declares no steps: mark each step function with @step, "
        "the innermost decorator (the line right above 'def')."
    )
    with pytest.raises(FlowDefinitionError, match="Flow FlowSpec declares no steps"):
        FlowSpec("bare", 1)


def test_step_bound_to_a_second_name_is_one_step():
    calls = []

    class Aliased(FlowSpec):
        @step
        def prepare(data):
            calls.append(data)
            return data + 1

        legacy = prepare

        @needs(predecessors=[legacy])
        @step
        def solve(value):
            return value * 10

    flow = Aliased("aliased", 1)
    assert [s.definition.get_id() for s in flow.graph.steps] == ["prepare", "solve"]
    assert flow.graph._to_mermaid() == "graph LR\n  prepare(prepare)\n  prepare --> solve\n  solve(solve)\n"
    flow.run()
    assert calls == [1]
    assert flow.get_result(flow.legacy) == flow.get_result(flow.prepare) == 2
    assert flow.get_result(flow.solve) == 20


def test_app_step_bound_to_a_second_name_makes_one_node():
    class AliasedApp(FlowSpec):
        @app(app_id="echo", bypass_result={"ok": True})
        @step
        def solve():
            pass

        solve_again = solve

    flow = AliasedApp("aliased-app", {})
    flow.run()
    (flow_step,) = flow.graph.steps
    assert [n.id for n in flow_step.nodes] == ["solve_0"]


def test_two_lambdas_have_the_same_id():
    with pytest.raises(FlowDefinitionError) as info:
        construct(first=step(lambda x: x), second=step(lambda x: x))
    assert str(info.value) == (
        "Steps first and second of BadFlow have the same id '<lambda>': a step's id is the name of its function, "
        "so give each step function a name of its own (define it with 'def', not as a lambda)."
    )


def test_two_functions_with_one_name_are_refused():
    def make(result):
        def work(x):
            return result

        return step(work)

    with pytest.raises(FlowDefinitionError, match=r"^Steps work_a and work_b of BadFlow have the same id 'work'"):
        construct(work_a=make(1), work_b=make(2))


def test_subclass_overriding_a_step_replaces_it():
    class Base(FlowSpec):
        @step
        def prepare(data):
            return data

        @step
        def report(data):
            return "base"

    class Child(Base):
        @step
        def report(data):
            return "child"

    flow = Child("child", 1)
    assert [s.definition.get_id() for s in flow.graph.steps] == ["prepare", "report"]
    flow.run()
    assert flow.get_result(flow.report) == "child"


# ---------------------------------------------------------------------------------------------------------------------
# What @step accepts
# ---------------------------------------------------------------------------------------------------------------------


def test_step_refuses_a_partial_and_a_callable_object():
    import functools

    class Doubler:
        def __call__(self, x):
            return 2 * x

    for target in (functools.partial(pow, 2), Doubler()):
        with pytest.raises(TypeError, match=r"^@step decorates a function defined with def, whose name is the step's"):
            step(target)
    with pytest.raises(TypeError, match=r"^@step decorates a function .* got 42"):
        step(42)


def test_step_refuses_async_def():
    with pytest.raises(TypeError) as info:

        @step
        async def fetch(data):
            return data

    assert str(info.value) == (
        "Step fetch is an 'async def' function, but steps are called in worker threads and never awaited. "
        "Declare it with 'def' and run the coroutine inside, e.g. 'return asyncio.run(fetch(data))'."
    )


def test_step_under_a_user_decorator_is_called_through_it():
    import functools

    seen = []

    def traced(function):
        @functools.wraps(function)
        def wrapper(*args):
            seen.append(function.__name__)
            return function(*args)

        return wrapper

    @needs(predecessors=[source, source])
    @step
    @traced
    def add(a, b):
        """Adds."""
        return a + b

    flow = construct(source=source, add=add)
    add_step = flow.graph.get_step(add.step)
    assert add_step.docstring == "Adds."
    assert add_step.step_function.name == "add"
    flow.run()
    assert flow.get_result(flow.add) == 2
    assert seen == ["add"]


# ---------------------------------------------------------------------------------------------------------------------
# Arguments of the wrong type name the argument
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decorator", [foreach, join])
def test_marker_decorators_take_no_arguments(decorator):
    name = decorator.__name__
    with pytest.raises(TypeError) as info:
        decorator(5)
    assert str(info.value) == f"@{name} takes no arguments: write @{name}(), not @{name}(5)."


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"options": "x=1"}, "options must be a dict of option names to values, e.g. {'duration': 10}, got 'x=1'."),
        ({"options": ["x", 1]}, "options must be a dict of option names to values"),
        ({"instance_id": 3}, "instance_id must be a string (empty for the default instance), got 3."),
        ({"polling_options": {"max_tries": 3}}, "polling_options must be a nextmv.PollingOptions, got {'max_tries'"),
        ({"run_configuration": "big"}, "run_configuration must be a nextmv.RunConfiguration (or a dict), got 'big'."),
        ({"app_id": 7}, "app_id must be a non-empty string naming the application, got 7."),
    ],
)
def test_app_arguments_of_the_wrong_type(kwargs, message):
    @app(**{"app_id": "echo", **kwargs})
    @step
    def solve(x):
        return x

    with pytest.raises(FlowDefinitionError) as info:
        construct(solve=solve)
    assert str(info.value).startswith(f"Step solve: @app: {message}")


def test_app_settings_object_checks_its_arguments():
    from nextpipe.decorators import App

    with pytest.raises(TypeError, match=r"^options must be a dict"):
        App("echo", options="x=1")
    with pytest.raises(ValueError, match=r"^app_id must be a non-empty string"):
        App(" ")
    assert App("echo", parameters={"a": 1}).options == {"a": "1"}
    assert App("echo", run_configuration={"execution_class": "6c9500mb870s"}).run_configuration is not None
    assert App("echo", polling_options=None).polling_options is None


def test_decorator_applied_to_something_without_attributes():
    with pytest.raises(TypeError, match=r"^@needs is applied to a function that is not a step yet"):
        needs(predecessors=[source])(5)


def test_staticmethod_steps_work_in_either_order():
    class Static(FlowSpec):
        @staticmethod
        @step
        def first(x):
            return x + 1

        @needs(predecessors=[first])
        @step
        @staticmethod
        def second(x):
            return x * 2

    flow = Static("static", 1)
    assert [s.step_function.name for s in flow.graph.steps] == ["first", "second"]
    flow.run()
    assert flow.get_result(flow.second) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"conf": {"thread_count": 2}},
            r"^Flow bad: conf must be a Configuration, e.g. Configuration\(thread_count=4\)",
        ),
        ({"uplink_config": {"application_id": "a"}}, r"^Flow bad: uplink_config must be an UplinkConfig"),
    ],
)
def test_flow_arguments_of_the_wrong_type(kwargs, message):
    flow_class = type("BadFlow", (FlowSpec,), {"source": source})
    with pytest.raises(TypeError, match=message):
        flow_class("bad", 1, **kwargs)


def test_class_attributes_that_answer_any_attribute_are_not_mistaken_for_steps():
    from unittest import mock

    flow = construct(source=source, client_factory=mock.MagicMock())
    assert [s.definition.get_id() for s in flow.graph.steps] == ["source"]
