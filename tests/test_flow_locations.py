"""SPEC sections 7 (Beyond) and 8: wherever a flow is declared it runs, and pure-Python flows need no account."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import nextpipe
from nextpipe import Configuration, FlowSpec, foreach, join, needs, repeat, step

PLATFORM_VARIABLES = ("NEXTMV_API_KEY", "NEXTMV_APP_ID", "NEXTMV_RUN_ID", "NEXTMV_ENDPOINT", "NEXTPIPE_LOCAL_APPS")


def step_ids(flow: FlowSpec) -> list[str]:
    return [s.definition.get_id() for s in flow.graph.steps]


def offline_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in PLATFORM_VARIABLES}


# ---------------------------------------------------------------------------------------------------------------------
# Inside functions
# ---------------------------------------------------------------------------------------------------------------------


def test_flow_defined_inside_a_function():
    offset = 7  # a closure variable used by the steps

    class LocalFlow(FlowSpec):
        @step
        def prepare(data):
            return data + offset

        @foreach()
        @needs(predecessors=[prepare])
        @step
        def fan(value):
            return [value, value * 2]

        @needs(predecessors=[fan])
        @step
        def shift(item):
            return item - offset

        @join()
        @needs(predecessors=[shift])
        @step
        def collect(items):
            return items

    flow = LocalFlow("local", 1)
    assert step_ids(flow) == ["prepare", "fan", "shift", "collect"]
    flow.run()
    assert flow.get_result(flow.prepare) == 8
    assert flow.get_result(flow.shift) == [1, 9]
    assert flow.get_result(flow.collect) == [[1], [9]]


def _make_flow_class(factor: int) -> type:
    class Factory(FlowSpec):
        @step
        def scale(data):
            return data * factor

        @needs(predecessors=[scale])
        @step
        def describe(value):
            return f"{factor}:{value}"

    return Factory


def test_same_class_from_a_factory_twice():
    two, three = _make_flow_class(2), _make_flow_class(3)
    flow2, flow3 = two("two", 5), three("three", 5)
    flow3.run()
    flow2.run()
    assert flow2.get_result(flow2.describe) == "2:10"
    assert flow3.get_result(flow3.describe) == "3:15"
    assert step_ids(flow2) == step_ids(flow3) == ["scale", "describe"]


def test_flow_defined_in_a_nested_function():
    def outer():
        def inner():
            class Deep(FlowSpec):
                @repeat(repetitions=3)
                @step
                def again(data):
                    return data

                @needs(predecessors=[again])
                @step
                def count(results):
                    return len(results)

            return Deep

        return inner()

    deep = outer()
    flow = deep("deep", "x")
    flow.run()
    assert flow.get_result(flow.again) == ["x", "x", "x"]
    assert flow.get_result(flow.count) == 3


# ---------------------------------------------------------------------------------------------------------------------
# __main__ scripts, run as subprocesses
# ---------------------------------------------------------------------------------------------------------------------

MAIN_SCRIPT = '''
import json

from nextpipe import FlowSpec, foreach, join, needs, step


class ScriptFlow(FlowSpec):
    """A flow in a script's __main__ module."""

    @step
    def prepare(data):
        return data["values"]

    @foreach()
    @needs(predecessors=[prepare])
    @step
    def fan(values):
        return values

    @needs(predecessors=[fan])
    @step
    def triple(item):
        return item * 3

    @join()
    @needs(predecessors=[triple])
    @step
    def total(items):
        return sum(i[0] for i in items)


def main():
    flow = ScriptFlow("script", {"values": [1, 2, 3]})
    flow.run()
    print("RESULT " + json.dumps({
        "module": __name__,
        "triple": flow.get_result(flow.triple),
        "total": flow.get_result(flow.total),
        "steps": [s.definition.get_id() for s in flow.graph.steps],
        "definitions": [s.step_function and s.step_function.name for s in flow.graph.steps],
        "client_created": flow._client is not None,
    }))


if __name__ == "__main__":
    main()
'''


def _result_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0][len("RESULT ") :])


def test_flow_in_main_script(tmp_path):
    script = tmp_path / "workflow.py"
    script.write_text(MAIN_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert _result_line(done.stdout) == {
        "module": "__main__",
        "triple": [3, 6, 9],
        "total": 18,
        "steps": ["prepare", "fan", "triple", "total"],
        "definitions": ["prepare", "fan", "triple", "total"],
        "client_created": False,
    }
    assert "Traceback" not in done.stderr
    assert "[nextpipe]" in done.stderr


def test_flow_in_main_without_source_file(tmp_path):
    # python -c: the __main__ module has no source file to read.
    done = subprocess.run(
        [sys.executable, "-c", MAIN_SCRIPT],
        cwd=tmp_path,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert _result_line(done.stdout)["total"] == 18
    assert _result_line(done.stdout)["steps"] == ["prepare", "fan", "triple", "total"]
    # From Python 3.13 on, the code of ``python -c`` is kept in linecache, so the definitions can be parsed.
    found = sys.version_info >= (3, 13)
    assert _result_line(done.stdout)["definitions"] == (
        ["prepare", "fan", "triple", "total"] if found else [None, None, None, None]
    )


def test_failing_flow_in_main_script_exits_with_one_error(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(
        textwrap.dedent(
            """
            from nextpipe import FlowSpec, step

            class Failing(FlowSpec):
                @step
                def broken(data):
                    raise ValueError("script failure")

            if __name__ == "__main__":
                Failing("failing", 1).run()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "RuntimeError: Flow failed: Step broken failed: script failure" in done.stderr
    assert "Exception in thread" not in done.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Inheritance
# ---------------------------------------------------------------------------------------------------------------------


class BaseFlow(FlowSpec):
    @step
    def load(data):
        return data + 1

    @needs(predecessors=[load])
    @step
    def clean(value):
        return value * 10


class ChildFlow(BaseFlow):
    @needs(predecessors=[BaseFlow.clean])
    @step
    def analyze(value):
        return value + 5

    @needs(predecessors=[BaseFlow.load, analyze])
    @step
    def report(loaded, analyzed):
        return f"{loaded}/{analyzed}"


class GrandChildFlow(ChildFlow):
    @foreach()
    @needs(predecessors=[ChildFlow.report])
    @step
    def split(text):
        return text.split("/")


def test_subclass_inherits_base_steps_first():
    flow = ChildFlow("child", 1)
    assert step_ids(flow) == ["load", "clean", "analyze", "report"]
    assert [s.definition.get_id() for s in flow.graph.start_steps] == ["load"]
    flow.run()
    assert flow.get_result(flow.load) == 2
    assert flow.get_result(flow.clean) == 20
    assert flow.get_result(flow.analyze) == 25
    assert flow.get_result(flow.report) == "2/25"
    report = flow.graph.get_step(ChildFlow.report.step)
    assert [p.definition.get_id() for p in report.predecessors] == ["load", "analyze"]


def test_base_flow_still_has_only_its_own_steps():
    flow = BaseFlow("base", 1)
    assert step_ids(flow) == ["load", "clean"]
    flow.run()
    assert flow.get_result(flow.clean) == 20
    assert ChildFlow.analyze.step not in flow.graph.steps_by_definition


def test_two_levels_of_inheritance():
    flow = GrandChildFlow("grand", 1)
    assert step_ids(flow) == ["load", "clean", "analyze", "report", "split"]
    flow.run()
    assert flow.get_result(flow.split) == ["2", "25"]


def test_inherited_mermaid_uses_definition_order():
    flow = ChildFlow("child", 1)
    assert flow.graph._to_mermaid() == (
        "graph LR\n"
        "  load(load)\n"
        "  load --> clean\n"
        "  load --> report\n"
        "  clean(clean)\n"
        "  clean --> analyze\n"
        "  analyze(analyze)\n"
        "  analyze --> report\n"
        "  report(report)\n"
    )


# ---------------------------------------------------------------------------------------------------------------------
# No retrievable source: type(...) and exec
# ---------------------------------------------------------------------------------------------------------------------


def test_flow_built_with_type():
    @step
    def zeta(data):
        return data + 1

    @step
    def alpha(data):
        return data * 2

    @needs(predecessors=[zeta, alpha])
    @step
    def mid(z, a):
        return (z, a)

    built = type("BuiltFlow", (FlowSpec,), {"zeta": zeta, "alpha": alpha, "mid": mid, "not_a_step": lambda: 1})
    flow = built("built", 10)
    assert step_ids(flow) == ["zeta", "alpha", "mid"]
    flow.run()
    assert flow.get_result(flow.mid) == (11, 20)
    assert repr(flow) == "Flow(built)"


EXEC_SOURCE = '''
from nextpipe import FlowSpec, foreach, join, needs, step


class ExecFlow(FlowSpec):
    @step
    def zeta(data):
        """Runs first although its name sorts last."""
        return data

    @foreach()
    @step
    def alpha(data):
        return [data, data + 1]

    @needs(predecessors=[zeta, alpha])
    @step
    def mid(z, a):
        return z * 100 + a

    @join()
    @needs(predecessors=[mid])
    @step
    def beta(items):
        return [i[0] for i in items]
'''


def test_flow_built_with_exec_has_no_source():
    import inspect

    namespace: dict = {"__name__": "exec_module"}
    exec(compile(EXEC_SOURCE, "<generated flow>", "exec"), namespace)
    exec_flow = namespace["ExecFlow"]
    with pytest.raises((OSError, TypeError)):
        inspect.getsource(exec_flow)
    flow = exec_flow("exec", 3)
    assert step_ids(flow) == ["zeta", "alpha", "mid", "beta"]
    assert flow.graph.get_step(exec_flow.mid.step).predecessors == [
        flow.graph.get_step(exec_flow.zeta.step),
        flow.graph.get_step(exec_flow.alpha.step),
    ]
    flow.run()
    assert flow.get_result(flow.mid) == [303, 304]
    assert flow.get_result(flow.beta) == [303, 304]
    assert flow.graph._to_mermaid() == (
        "graph LR\n"
        "  zeta(zeta)\n"
        "  zeta --> mid\n"
        "  alpha{ }\n"
        "  alpha(alpha)\n"
        "  alpha -- foreach --> mid\n"
        "  mid(mid)\n"
        "  mid -- join --> beta\n"
        "  beta(beta)\n"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Steps in "self" style (SPEC section 3, Beyond)
# ---------------------------------------------------------------------------------------------------------------------


class SelfStyleFlow(FlowSpec):
    @step
    def start(self, data):
        return {"name": self.name, "data": data, "is_flow": isinstance(self, FlowSpec)}

    @needs(predecessors=[start])
    @step
    def follow(self, info):
        return info["data"] + self.input

    @foreach()
    @needs(predecessors=[follow])
    @step
    def fan(self, value):
        return [value, value + 1]

    @needs(predecessors=[fan, start])
    @step
    def pair(self, item, info):
        return (self.name, item, info["data"])

    @join()
    @needs(predecessors=[pair])
    @step
    def collect(self, items):
        return (self is not None, len(items))

    @needs(predecessors=[start])
    @step
    def no_args():
        return "no arguments"

    @step
    def self_is_the_input(self):
        # One parameter for one value: a parameter named self still receives the value.
        return self


def test_self_style_steps_receive_the_flow_first():
    flow = SelfStyleFlow("selfish", 4)
    flow.run()
    assert flow.get_result(flow.start) == {"name": "selfish", "data": 4, "is_flow": True}
    assert flow.get_result(flow.follow) == 8
    assert flow.get_result(flow.fan) == [8, 9]
    assert flow.get_result(flow.pair) == [("selfish", 8, 4), ("selfish", 9, 4)]
    assert flow.get_result(flow.collect) == (True, 2)
    assert flow.get_result(flow.no_args) == "no arguments"
    assert flow.get_result(flow.self_is_the_input) == 4


def test_flowspec_docstring_example_style_runs():
    class DocFlow(FlowSpec):
        @step
        def prepare(self, data: dict) -> dict:
            return {"value": data["value"] + 1}

        @needs(predecessors=[prepare])
        @step
        def double(self, data: dict) -> int:
            return data["value"] * 2

    flow = DocFlow("doc", {"value": 1})
    flow.run()
    assert flow.get_result(flow.double) == 4


# ---------------------------------------------------------------------------------------------------------------------
# No account needed (SPEC section 8)
# ---------------------------------------------------------------------------------------------------------------------


def test_pure_python_flow_needs_no_api_key():
    assert "NEXTMV_API_KEY" not in os.environ
    flow = ChildFlow("offline", 1, conf=Configuration(thread_count=2))
    assert flow._client is None
    flow.run()
    assert flow.get_result(flow.report) == "2/25"
    assert flow._client is None
    # The check above means something: a client really cannot be created here.
    with pytest.raises(ValueError, match="API key"):
        _ = flow.client


def test_pure_python_flow_in_subprocess_without_api_key(tmp_path):
    env = offline_env()
    env["HOME"] = str(tmp_path)  # no ~/.nextmv configuration either
    script = tmp_path / "offline.py"
    script.write_text(MAIN_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert _result_line(done.stdout)["client_created"] is False


def test_version_exports():
    assert nextpipe.VERSION == nextpipe.__version__
    assert isinstance(nextpipe.__version__, str)
