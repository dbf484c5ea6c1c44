"""SPEC section 3 (what each step receives), checked through real flows; node predecessors (SPEC section 6 Beyond)."""

from __future__ import annotations

import itertools

import pytest

from nextpipe import Configuration, FlowSpec, foreach, join, needs, optional, repeat, step
from nextpipe.flow import STATUS_SUCCEEDED


def _node_ids(flow, f) -> list[str]:
    return [n.id for n in flow.graph.get_step(f.step).nodes]


def _preds(flow, f) -> list[list[str]]:
    return [sorted(p.id for p in n.predecessors) for n in flow.graph.get_step(f.step).nodes]


# ---------------------------------------------------------------------------------------------------------------------
# Start steps
# ---------------------------------------------------------------------------------------------------------------------


def test_start_steps_receive_the_flow_input() -> None:
    class Flow(FlowSpec):
        @step
        def first(data):
            return ("first", data)

        @step
        def second(data):
            return ("second", data)

    flow = Flow("f", {"k": [1, 2]})
    flow.run()
    assert flow.get_result(flow.first) == ("first", {"k": [1, 2]})
    assert flow.get_result(flow.second) == ("second", {"k": [1, 2]})
    assert _node_ids(flow, flow.first) == ["first_0"]
    assert _preds(flow, flow.first) == [[]]


def test_start_step_receives_the_very_input_object() -> None:
    payload = {"big": list(range(5))}

    class Flow(FlowSpec):
        @step
        def first(data):
            return data

    flow = Flow("f", payload)
    flow.run()
    assert flow.get_result(flow.first) is payload


def test_repeated_start_step_runs_n_times_on_the_input() -> None:
    calls = []

    class Flow(FlowSpec):
        @repeat(repetitions=3)
        @step
        def rep(data):
            calls.append(data)
            return data * 2

    flow = Flow("f", 4)
    flow.run()
    assert calls == [4, 4, 4]
    assert flow.get_result(flow.rep) == [8, 8, 8]
    assert _node_ids(flow, flow.rep) == ["rep_0", "rep_1", "rep_2"]


def test_repeated_start_step_is_not_limited_by_max_step_inputs() -> None:
    class Flow(FlowSpec):
        @repeat(repetitions=5)
        @step
        def rep(data):
            return data

    flow = Flow("f", 1, conf=Configuration(max_step_inputs=2))
    flow.run()
    assert flow.get_result(flow.rep) == [1] * 5


# ---------------------------------------------------------------------------------------------------------------------
# Normal predecessors
# ---------------------------------------------------------------------------------------------------------------------


def test_needs_order_gives_positional_argument_order() -> None:
    class Flow(FlowSpec):
        @step
        def a(data):
            return "A"

        @step
        def b(data):
            return "B"

        @step
        def c(data):
            return "C"

        @needs(predecessors=[c, a, b])
        @step
        def combine(x, y, z):
            return x + y + z

        @needs(predecessors=[b, c])
        @step
        def combine2(x, y):
            return x + y

    flow = Flow("f", None)
    flow.run()
    assert flow.get_result(flow.combine) == "CAB"
    assert flow.get_result(flow.combine2) == "BC"
    assert _preds(flow, flow.combine) == [["a_0", "b_0", "c_0"]]
    assert _preds(flow, flow.combine2) == [["b_0", "c_0"]]


def test_normal_predecessor_node_is_the_source() -> None:
    class Flow(FlowSpec):
        @step
        def a(data):
            return data + 1

        @needs(predecessors=[a])
        @step
        def b(x):
            return x * 10

    flow = Flow("f", 1)
    flow.run()
    assert flow.get_result(flow.b) == 20
    nodes = flow.graph.get_step(flow.b.step).nodes
    assert len(nodes) == 1
    assert nodes[0].predecessors == flow.graph.get_step(flow.a.step).nodes


# ---------------------------------------------------------------------------------------------------------------------
# Foreach
# ---------------------------------------------------------------------------------------------------------------------


class FanFlow(FlowSpec):
    @foreach()
    @step
    def fan(data):
        return [f"{data}-{i}" for i in range(4)]

    @needs(predecessors=[fan])
    @step
    def each(item):
        return item.upper()

    @needs(predecessors=[each])
    @step
    def after(item):
        return item + "!"


def test_foreach_fans_out_one_node_per_item_in_order() -> None:
    flow = FanFlow("f", "x")
    flow.run()
    assert flow.get_result(flow.fan) == ["x-0", "x-1", "x-2", "x-3"]
    assert flow.get_result(flow.each) == ["X-0", "X-1", "X-2", "X-3"]
    assert _node_ids(flow, flow.each) == ["each_0", "each_1", "each_2", "each_3"]
    # a normal predecessor with several nodes contributes each of them: the fan-out continues
    assert flow.get_result(flow.after) == ["X-0!", "X-1!", "X-2!", "X-3!"]
    assert _node_ids(flow, flow.after) == ["after_0", "after_1", "after_2", "after_3"]
    for step_ in (flow.each, flow.after):
        for node in flow.graph.get_step(step_.step).nodes:
            assert node.status == STATUS_SUCCEEDED


def test_foreach_node_predecessors() -> None:
    flow = FanFlow("f", "x")
    flow.run()
    fan_node = flow.graph.get_step(flow.fan.step).nodes[0]
    for node in flow.graph.get_step(flow.each.step).nodes:
        assert node.predecessors == [fan_node]
    each_nodes = flow.graph.get_step(flow.each.step).nodes
    for node, source in zip(flow.graph.get_step(flow.after.step).nodes, each_nodes, strict=True):
        assert node.predecessors == [source]


def test_foreach_empty_list_gives_no_nodes() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return []

        @needs(predecessors=[fan])
        @step
        def each(item):
            return item

    flow = Flow("f", None)
    flow.run()
    assert flow.get_result(flow.fan) == []
    assert flow.get_result(flow.each) == []
    assert _node_ids(flow, flow.each) == []


@pytest.mark.parametrize("value", [{"a": 1}, "abc", (1, 2), 7, None])
def test_foreach_returning_a_non_list_fails_with_exact_message(value) -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return data

        @needs(predecessors=[fan])
        @step
        def each(item):
            return item

    flow = Flow("f", value)
    with pytest.raises(Exception) as info:
        flow.run()
    assert type(info.value) is Exception
    assert str(info.value) == f"Predecessor step fan declared as 'foreach' must return a list, but returned {[value]}"
    assert flow.get_result(flow.each) is None


def test_foreach_step_with_several_nodes_fails_its_successor() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def outer(data):
            return [1, 2]

        @needs(predecessors=[outer])
        @foreach()
        @step
        def inner(x):
            return [x, x]

        @needs(predecessors=[inner])
        @step
        def last(x):
            return x

    flow = Flow("f", None)
    with pytest.raises(Exception) as info:
        flow.run()
    assert type(info.value) is Exception
    assert (
        str(info.value)
        == "Predecessor step inner declared as 'foreach' must return a list, but returned [[1, 1], [2, 2]]"
    )


def test_cartesian_product_order_first_predecessor_slowest() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def letters(data):
            return ["a", "b", "c"]

        @foreach()
        @step
        def numbers(data):
            return [1, 2]

        @needs(predecessors=[letters, numbers])
        @step
        def pair(letter, number):
            return f"{letter}{number}"

        @needs(predecessors=[numbers, letters])
        @step
        def pair_reversed(number, letter):
            return f"{number}{letter}"

    flow = Flow("f", None)
    flow.run()
    expected = [f"{x}{y}" for x, y in itertools.product("abc", [1, 2])]
    assert expected == ["a1", "a2", "b1", "b2", "c1", "c2"]
    assert flow.get_result(flow.pair) == expected
    assert _node_ids(flow, flow.pair) == [f"pair_{i}" for i in range(6)]
    assert flow.get_result(flow.pair_reversed) == [f"{y}{x}" for y, x in itertools.product([1, 2], "abc")]
    letters_node = flow.graph.get_step(flow.letters.step).nodes[0].id
    numbers_node = flow.graph.get_step(flow.numbers.step).nodes[0].id
    assert _preds(flow, flow.pair) == [sorted([letters_node, numbers_node])] * 6


def test_product_of_normal_multi_node_predecessors_and_sources() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return [1, 2]

        @needs(predecessors=[fan])
        @step
        def left(x):
            return f"L{x}"

        @step
        def single(data):
            return "S"

        @needs(predecessors=[left, single])
        @step
        def combine(x, y):
            return x + y

    flow = Flow("f", None)
    flow.run()
    assert flow.get_result(flow.combine) == ["L1S", "L2S"]
    assert _preds(flow, flow.combine) == [["left_0", "single_0"], ["left_1", "single_0"]]


# ---------------------------------------------------------------------------------------------------------------------
# Repeat
# ---------------------------------------------------------------------------------------------------------------------


def test_repeat_predecessor_contributes_one_list() -> None:
    counter = itertools.count()

    class Flow(FlowSpec):
        @repeat(repetitions=3)
        @step
        def rep(data):
            return data

        @needs(predecessors=[rep])
        @step
        def collect(values):
            next(counter)
            return values

    flow = Flow("f", 9)
    flow.run()
    assert flow.get_result(flow.collect) == [9, 9, 9]
    assert next(counter) == 1  # collect ran once
    assert _node_ids(flow, flow.collect) == ["collect_0"]
    # after a repeat: every node of the repeated step
    assert _preds(flow, flow.collect) == [["rep_0", "rep_1", "rep_2"]]


def test_repeat_one_predecessor_still_contributes_a_list() -> None:
    class Flow(FlowSpec):
        @repeat(repetitions=1)
        @step
        def rep(data):
            return data

        @needs(predecessors=[rep])
        @step
        def collect(values):
            return values

    flow = Flow("f", "v")
    flow.run()
    assert flow.get_result(flow.rep) == "v"
    assert flow.get_result(flow.collect) == ["v"]


def test_repeat_of_several_inputs_repeats_the_input_list_as_a_whole() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return ["i0", "i1"]

        @needs(predecessors=[fan])
        @repeat(repetitions=2)
        @step
        def rep(item):
            return item

    flow = Flow("f", None)
    flow.run()
    assert flow.get_result(flow.rep) == ["i0", "i1", "i0", "i1"]
    assert _node_ids(flow, flow.rep) == ["rep_0", "rep_1", "rep_2", "rep_3"]
    fan_node = flow.graph.get_step(flow.fan.step).nodes[0]
    assert all(n.predecessors == [fan_node] for n in flow.graph.get_step(flow.rep.step).nodes)


def test_repeat_after_repeat_and_with_two_predecessors() -> None:
    class Flow(FlowSpec):
        @repeat(repetitions=2)
        @step
        def rep(data):
            return data

        @foreach()
        @step
        def fan(data):
            return ["x", "y"]

        @needs(predecessors=[fan, rep])
        @repeat(repetitions=2)
        @step
        def combine(item, reps):
            return (item, reps)

    flow = Flow("f", 0)
    flow.run()
    assert flow.get_result(flow.combine) == [("x", [0, 0]), ("y", [0, 0]), ("x", [0, 0]), ("y", [0, 0])]


# ---------------------------------------------------------------------------------------------------------------------
# Join
# ---------------------------------------------------------------------------------------------------------------------


def test_join_after_one_foreach() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return [0, 1, 2]

        @needs(predecessors=[fan])
        @step
        def each(x):
            return f"r{x}"

        @needs(predecessors=[each])
        @join()
        @step
        def collect(results):
            return results

    flow = Flow("f", None)
    flow.run()
    assert flow.get_result(flow.collect) == [["r0"], ["r1"], ["r2"]]
    assert _node_ids(flow, flow.collect) == ["collect_0"]
    assert _preds(flow, flow.collect) == [["each_0", "each_1", "each_2"]]


def test_join_directly_after_foreach_step() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return ["a", "b"]

        @needs(predecessors=[fan])
        @join()
        @step
        def collect(results):
            return results

    flow = Flow("f", None)
    flow.run()
    assert flow.get_result(flow.collect) == [["a"], ["b"]]
    assert _preds(flow, flow.collect) == [["fan_0"]]


def test_join_with_two_predecessors() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return [1, 2]

        @needs(predecessors=[fan])
        @step
        def each(x):
            return x * 10

        @step
        def other(data):
            return "o"

        @needs(predecessors=[each, other])
        @join()
        @step
        def collect(results):
            return results

    flow = Flow("f", None)
    flow.run()
    assert flow.get_result(flow.collect) == [[10, "o"], [20, "o"]]
    assert _preds(flow, flow.collect) == [["each_0", "each_1", "other_0"]]


def test_join_after_repeat() -> None:
    class Flow(FlowSpec):
        @repeat(repetitions=2)
        @step
        def rep(data):
            return data

        @needs(predecessors=[rep])
        @join()
        @step
        def collect(results):
            return results

    flow = Flow("f", 3)
    flow.run()
    assert flow.get_result(flow.collect) == [[[3, 3]]]
    assert _preds(flow, flow.collect) == [["rep_0", "rep_1"]]


# ---------------------------------------------------------------------------------------------------------------------
# Calling conventions
# ---------------------------------------------------------------------------------------------------------------------


def test_zero_parameter_steps_are_called_with_none() -> None:
    class Flow(FlowSpec):
        @step
        def start():
            return "started"

        @needs(predecessors=[start])
        @step
        def middle():
            return "middle"

        @foreach()
        @step
        def fan(data):
            return [1, 2, 3]

        @needs(predecessors=[fan])
        @step
        def each():
            return "each"

        @needs(predecessors=[each])
        @join()
        @step
        def joined():
            return "joined"

    flow = Flow("f", {"ignored": True})
    flow.run()
    assert flow.get_result(flow.start) == "started"
    assert flow.get_result(flow.middle) == "middle"
    assert flow.get_result(flow.each) == ["each"] * 3
    assert flow.get_result(flow.joined) == "joined"


def test_self_rule_passes_the_flow_instance_first() -> None:
    class Flow(FlowSpec):
        @step
        def start(self, data):
            return (self, data)

        @step
        def plain(data):
            return data

        @needs(predecessors=[start, plain])
        @step
        def two(self, x, y):
            return (self, x[1], y)

        @foreach()
        @step
        def fan(data):
            return [1, 2]

        @needs(predecessors=[fan])
        @join()
        @step
        def joined(self, items):
            return (self, items)

    flow = Flow("f", "in")
    flow.run()
    result = flow.get_result(flow.start)
    assert result[0] is flow and result[1] == "in"
    two = flow.get_result(flow.two)
    assert two[0] is flow and two[1:] == ("in", "in")
    joined = flow.get_result(flow.joined)
    assert joined[0] is flow and joined[1] == [[1], [2]]


def test_self_named_parameter_receiving_values_is_not_the_flow() -> None:
    # 'self' is the only parameter and the step receives one value: no extra parameter, so it gets the value.
    class Flow(FlowSpec):
        @step
        def start(self):
            return self

    flow = Flow("f", 42)
    flow.run()
    assert flow.get_result(flow.start) == 42


# ---------------------------------------------------------------------------------------------------------------------
# Too many inputs
# ---------------------------------------------------------------------------------------------------------------------


def test_too_many_inputs_fails_with_exact_message() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return list(range(data))

        @needs(predecessors=[fan])
        @step
        def each(x):
            return x

    flow = Flow("f", 4, conf=Configuration(max_step_inputs=3))
    with pytest.raises(Exception) as info:
        flow.run()
    assert type(info.value) is Exception
    assert str(info.value) == "Step each has too many inputs (4). Maximum allowed is 3."
    assert flow.get_result(flow.each) is None


def test_exactly_max_inputs_is_allowed() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return list(range(data))

        @needs(predecessors=[fan])
        @step
        def each(x):
            return x

    flow = Flow("f", 3, conf=Configuration(max_step_inputs=3))
    flow.run()
    assert flow.get_result(flow.each) == [0, 1, 2]


def test_default_max_step_inputs_is_fifty() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return list(range(data))

        @needs(predecessors=[fan])
        @step
        def each(x):
            return x

    ok = Flow("f", 50)
    ok.run()
    assert ok.get_result(ok.each) == list(range(50))
    too_many = Flow("f", 51)
    with pytest.raises(Exception, match=r"^Step each has too many inputs \(51\)\. Maximum allowed is 50\.$"):
        too_many.run()


def test_too_many_inputs_counts_repetitions_and_products() -> None:
    class Flow(FlowSpec):
        @foreach()
        @step
        def fan_a(data):
            return [1, 2]

        @foreach()
        @step
        def fan_b(data):
            return [1, 2]

        @needs(predecessors=[fan_a, fan_b])
        @repeat(repetitions=3)
        @step
        def combine(a, b):
            return a * b

    flow = Flow("f", None, conf=Configuration(max_step_inputs=11))
    with pytest.raises(Exception) as info:
        flow.run()
    assert str(info.value) == "Step combine has too many inputs (12). Maximum allowed is 11."


# ---------------------------------------------------------------------------------------------------------------------
# Optional
# ---------------------------------------------------------------------------------------------------------------------


def test_skipped_optional_step_has_one_succeeded_node_with_none() -> None:
    calls = []

    class Flow(FlowSpec):
        @step
        def start(data):
            return data

        @optional(condition=lambda _: False)
        @needs(predecessors=[start])
        @step
        def maybe(x):
            calls.append(x)
            return "ran"

        @needs(predecessors=[maybe])
        @step
        def after(x):
            return ("after", x)

        @optional(condition=lambda _: True)
        @needs(predecessors=[start])
        @step
        def kept(x):
            return ("kept", x)

    flow = Flow("f", 1)
    flow.run()
    assert calls == []
    nodes = flow.graph.get_step(flow.maybe.step).nodes
    assert [n.id for n in nodes] == ["maybe_0"]
    assert nodes[0].status == STATUS_SUCCEEDED
    assert nodes[0].result is None
    assert flow.get_result(flow.maybe) is None
    assert flow.get_result(flow.after) == ("after", None)
    assert flow.get_result(flow.kept) == ("kept", 1)


def test_skipped_optional_foreach_start_step_gives_single_none() -> None:
    class Flow(FlowSpec):
        @optional(condition=lambda _: False)
        @foreach()
        @step
        def fan(data):
            return [1, 2, 3]

        @needs(predecessors=[fan])
        @step
        def each(x):
            return ("each", x)

    flow = Flow("f", None)
    flow.run()
    assert flow.get_result(flow.fan) is None
    assert flow.get_result(flow.each) == ("each", None)


def test_optional_condition_receives_the_step_definition() -> None:
    seen = []

    def condition(definition):
        seen.append(definition)
        return True

    class Flow(FlowSpec):
        @optional(condition=condition)
        @step
        def maybe(data):
            return data

    flow = Flow("f", 5)
    flow.run()
    assert seen == [Flow.maybe.step]
    assert flow.get_result(flow.maybe) == 5


# ---------------------------------------------------------------------------------------------------------------------
# get_result
# ---------------------------------------------------------------------------------------------------------------------


def test_get_result_before_run_single_and_list() -> None:
    class Flow(FlowSpec):
        @step
        def single(data):
            return [data]

        @foreach()
        @step
        def fan(data):
            return [data]

        @needs(predecessors=[fan])
        @step
        def one_of_fan(x):
            return [x]

        @repeat(repetitions=2)
        @step
        def rep(data):
            return data

    flow = Flow("f", 1)
    for f in (flow.single, flow.fan, flow.one_of_fan, flow.rep):
        assert flow.get_result(f) is None
    flow.run()
    # a single node: its result itself (even when the result is a list)
    assert flow.get_result(flow.single) == [1]
    assert flow.get_result(flow.fan) == [1]
    assert flow.get_result(flow.one_of_fan) == [1]
    # several nodes: the list of results
    assert flow.get_result(flow.rep) == [1, 1]
