"""SPEC sections 4 and 10: what constructing a flow logs, the original's signatures, and how little it reads."""

from __future__ import annotations

import ast
import base64
import importlib.util
import inspect
import json
import subprocess
import sys
import textwrap

import nextmv
import pytest

import nextpipe
from nextpipe import FlowSpec, needs, step
from nextpipe import graph as graph_module
from nextpipe.decorators import SDK_DEFAULT_POLLING, App
from nextpipe.flow import FlowGraph, FlowNode, FlowStep, StepVisitor


class Documented(FlowSpec):
    @step
    def prepare(data):
        """Prepare the input.

        Indented second line.
        """
        return data

    @needs(predecessors=[prepare])
    @step
    def solve(data):
        return data


def test_construction_log_lines_in_order(capfd):
    capfd.readouterr()
    Documented("documented", 1)
    lines = capfd.readouterr().err.splitlines()
    mermaid = "graph LR\n  prepare(prepare)\n  prepare --> solve\n  solve(solve)\n"
    url = f"https://mermaid.ink/svg/{base64.b64encode(mermaid.encode()).decode()}?theme=dark"
    expected = [
        "[nextpipe] Flow: Documented",
        f"[nextpipe] nextpipe: {nextpipe.__version__}",
        f"[nextpipe] nextmv: {nextmv.__version__}",
        "[nextpipe] Flow graph steps:",
        "[nextpipe] Step:",
        "[nextpipe]   Definition: Step(prepare)",
        "[nextpipe]   Docstring: Prepare the input.",
        "",
        "Indented second line.",
        "[nextpipe] Step:",
        "[nextpipe]   Definition: Step(solve, StepNeeds(prepare))",
        "[nextpipe]   Docstring: None",
        "[nextpipe] Mermaid diagram:",
        "[nextpipe] graph LR",
        "  prepare(prepare)",
        "  prepare --> solve",
        "  solve(solve)",
        "",
        f"[nextpipe] Mermaid URL: {url}",
    ]
    start = lines.index(expected[0])
    assert lines[start : start + len(expected)] == expected


def _parameters(obj) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(obj).parameters.values()]


def test_signatures_of_the_original():
    empty = inspect.Parameter.empty
    assert _parameters(App) == [
        ("app_id", empty),
        ("instance_id", ""),
        ("input_type", None),
        ("parameters", None),
        ("options", None),
        ("full_result", False),
        ("run_configuration", None),
        ("polling_options", SDK_DEFAULT_POLLING),
        ("bypass_result", None),
        ("emit_live_logs", False),
    ]
    assert _parameters(FlowStep) == [("step_function", empty), ("step_definition", empty), ("docstring", empty)]
    assert _parameters(FlowNode) == [("parent", empty), ("index", empty)]
    assert _parameters(FlowGraph) == [("flow_spec", empty)]
    assert _parameters(StepVisitor) == [("steps", empty), ("flow_class", empty)]
    assert _parameters(FlowSpec) == [
        ("name", empty),
        ("input", empty),
        ("conf", None),
        ("client", None),
        ("uplink_config", None),
    ]
    assert [name for name, _ in _parameters(nextpipe.app)] == [
        "app_id",
        "instance_id",
        "parameters",
        "options",
        "input_type",
        "full_result",
        "run_configuration",
        "polling_options",
        "bypass_result",
        "emit_live_logs",
    ]
    # The default polling options are the SDK's, resolved when an app step is declared.
    assert App("echo").polling_options is nextmv.DEFAULT_POLLING_OPTIONS
    assert repr(SDK_DEFAULT_POLLING) == "nextmv.DEFAULT_POLLING_OPTIONS"


def test_flow_step_built_directly():
    node = ast.parse("def prepare(data):\n    return data").body[0]
    flow_step = FlowStep(node, Documented.prepare.step, "docs")
    assert flow_step.step_function is node
    assert flow_step.definition is Documented.prepare.step
    assert flow_step.docstring == "docs"
    flow_step.step_function = None
    assert flow_step.step_function is None


# ---------------------------------------------------------------------------------------------------------------------
# Cheap construction: no source is read until a step's parsed definition is asked for, then each file once
# ---------------------------------------------------------------------------------------------------------------------


def _module_from_source(tmp_path, name: str, source: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _chain_source(n: int, base: str = "FlowSpec") -> str:
    lines = ["from nextpipe import FlowSpec, needs, step", "", "", f"class Flow({base}):"]
    lines += ["    @step", "    def s0(data):", '        """First."""', "        return data", ""]
    for i in range(1, n):
        lines += [f"    @needs(predecessors=[s{i - 1}])", "    @step", f"    def s{i}(value):"]
        lines += ["        return value", ""]
    return "\n".join(lines)


@pytest.fixture
def counted_parses(monkeypatch):
    """Count calls of ast.parse and inspect.getsource: the ways to read a flow's source."""
    counts = {"parse": 0, "getsource": 0}
    parse, getsource = ast.parse, inspect.getsource

    def counting_parse(*args, **kwargs):
        counts["parse"] += 1
        return parse(*args, **kwargs)

    def counting_getsource(*args, **kwargs):
        counts["getsource"] += 1
        return getsource(*args, **kwargs)

    monkeypatch.setattr(ast, "parse", counting_parse)
    monkeypatch.setattr(inspect, "getsource", counting_getsource)
    return counts


def test_construction_reads_no_source_and_one_parse_per_file_on_demand(tmp_path, counted_parses):
    module = _module_from_source(tmp_path, "generated_chain_flow", _chain_source(200))
    flow = module.Flow("chain", 1)
    assert counted_parses == {"parse": 0, "getsource": 0}
    assert flow.graph.steps[0].docstring == "First."  # from the function, without its source

    definitions = [s.step_function for s in flow.graph.steps]
    assert counted_parses == {"parse": 1, "getsource": 0}
    assert [d.name for d in definitions] == [f"s{i}" for i in range(200)]
    assert all(isinstance(d, ast.FunctionDef) for d in definitions)
    assert flow.graph.steps[5].step_function is definitions[5]
    assert counted_parses["parse"] == 1
    flow.run()
    assert flow.get_result(flow.s199) == 1


def test_inherited_steps_parse_each_file_once(tmp_path, counted_parses):
    base = _module_from_source(tmp_path, "generated_base_flow", _chain_source(30))
    child_source = "\n".join(
        [
            "from generated_base_flow import Flow as Base",
            "from nextpipe import needs, step",
            "",
            "",
            "class Flow(Base):",
            "    @needs(predecessors=[Base.s29])",
            "    @step",
            "    def extra(value):",
            "        return value + 1",
            "",
        ]
    )
    child = _module_from_source(tmp_path, "generated_child_flow", child_source)
    flow = child.Flow("child", 1)
    assert [s.step_function.name for s in flow.graph.steps] == [f"s{i}" for i in range(30)] + ["extra"]
    assert counted_parses["parse"] == 2
    assert base.Flow("base", 1).graph.steps[-1].step_function.name == "s29"


def test_steps_without_source_have_no_parsed_definition():
    namespace: dict = {}
    exec(compile(_chain_source(3), "<generated>", "exec"), namespace)
    flow = namespace["Flow"]("exec", 1)
    assert [s.step_function for s in flow.graph.steps] == [None, None, None]
    assert flow.graph.steps[0].docstring == "First."


def test_nextmv_version_is_read_once_per_process_without_importing_the_sdk():
    code = textwrap.dedent(
        """
        import json, sys
        from nextpipe import FlowSpec, step
        from nextpipe.graph import _nextmv_version

        class Pure(FlowSpec):
            @step
            def only(data):
                return data

        Pure("one", 1)
        Pure("two", 1)
        imported = sorted(m for m in sys.modules if m == "nextmv" or m.startswith("nextmv."))
        print(json.dumps({"version": _nextmv_version(), "misses": _nextmv_version.cache_info().misses,
                          "imported": imported}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout)
    assert result == {"version": nextmv.__version__, "misses": 1, "imported": []}
    assert f"[nextpipe] nextmv: {nextmv.__version__}\n" in done.stderr


def test_parameter_check_follows_wrapped_functions_and_signatures():
    import functools

    def untouched(a, b):
        return (a, b)

    @functools.wraps(untouched)
    def wrapper(*args):
        return untouched(*args)

    wrapper.__signature__ = inspect.signature(untouched)
    parameters = graph_module._parameters(wrapper)
    assert parameters.positional == ("a", "b")
    assert parameters.varargs is False

    def everything(self, a, /, b=1, *rest, c, d=2, **extra):
        return None

    fast = graph_module._parameters(everything)
    assert fast == graph_module._parameters(functools.partial(everything))  # the slow path, via inspect.signature
    assert fast == graph_module._Parameters(
        any=True, positional=("self", "a", "b"), required=2, varargs=True, required_keyword_only=("c",)
    )
