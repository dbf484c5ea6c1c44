"""SPEC section 1: package layout, exported names and constants; cheap import (no nextmv for pure flows)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

import nextpipe
import nextpipe.__about__

EXPORTS = {
    "nextpipe": [
        "__version__",
        "VERSION",
        "Configuration",
        "app",
        "foreach",
        "join",
        "needs",
        "optional",
        "repeat",
        "step",
        "FlowGraph",
        "FlowSpec",
        "AppOption",
        "AppRunConfig",
        "log",
    ],
    "nextpipe.__about__": ["__version__"],
    "nextpipe.flow": [
        "FlowSpec",
        "FlowGraph",
        "FlowStep",
        "FlowNode",
        "StepVisitor",
        "Runner",
        "STATUS_PENDING",
        "STATUS_RUNNING",
        "STATUS_SUCCEEDED",
        "STATUS_FAILED",
    ],
    "nextpipe.decorators": [
        "InputType",
        "StepType",
        "Step",
        "Needs",
        "Optional",
        "Repeat",
        "Foreach",
        "Join",
        "App",
        "step",
        "needs",
        "optional",
        "repeat",
        "foreach",
        "join",
        "app",
    ],
    "nextpipe.config": ["Configuration"],
    "nextpipe.schema": ["AppOption", "AppRunConfig"],
    "nextpipe.uplink": [
        "UplinkConfig",
        "StepDTO",
        "NodeDTO",
        "FlowDTO",
        "FlowUpdateDTO",
        "UplinkClient",
        "FAILED_UPDATES_THRESHOLD",
        "UPDATE_INTERVAL",
        "MAX_DOCS_LENGTH",
    ],
    "nextpipe.threads": ["Job", "Pool", "DEFAULT_MAX_THREADS"],
    "nextpipe.graph": ["check_cycle"],
    "nextpipe.utils": [
        "THREAD_NAME_PREFIX",
        "log",
        "log_internal",
        "wrap_func",
        "convert_to_string_values",
        "get_ast_root",
    ],
    "nextpipe.constants": ["ENV_APP_ID", "ENV_RUN_ID"],
}

CASES = [(module, name) for module, names in EXPORTS.items() for name in names]


@pytest.mark.parametrize(("module", "name"), CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_name_is_exported(module: str, name: str) -> None:
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{module} does not expose {name}"
    # ``from module import name`` works too
    namespace: dict = {}
    exec(f"from {module} import {name}", namespace)
    assert namespace[name] is getattr(mod, name)


def test_callables_and_classes_are_what_they_say() -> None:
    from nextpipe import decorators, flow, schema, threads, uplink, utils

    for name in ("step", "needs", "optional", "repeat", "foreach", "join", "app"):
        assert callable(getattr(decorators, name))
    for name in ("Step", "Needs", "Optional", "Repeat", "Foreach", "Join", "App", "InputType", "StepType"):
        assert isinstance(getattr(decorators, name), type)
    for name in ("FlowSpec", "FlowGraph", "FlowStep", "FlowNode", "StepVisitor", "Runner"):
        assert isinstance(getattr(flow, name), type)
    for name in ("UplinkConfig", "StepDTO", "NodeDTO", "FlowDTO", "FlowUpdateDTO", "UplinkClient"):
        assert isinstance(getattr(uplink, name), type)
    assert isinstance(schema.AppOption, type) and isinstance(schema.AppRunConfig, type)
    assert isinstance(threads.Job, type) and isinstance(threads.Pool, type)
    for name in ("log", "log_internal", "wrap_func", "convert_to_string_values", "get_ast_root"):
        assert callable(getattr(utils, name))


def test_top_level_names_are_the_module_objects() -> None:
    from nextpipe import config, decorators, flow, schema, utils

    assert nextpipe.Configuration is config.Configuration
    assert nextpipe.FlowSpec is flow.FlowSpec
    assert nextpipe.FlowGraph is flow.FlowGraph
    assert nextpipe.AppOption is schema.AppOption
    assert nextpipe.AppRunConfig is schema.AppRunConfig
    assert nextpipe.log is utils.log
    for name in ("app", "foreach", "join", "needs", "optional", "repeat", "step"):
        assert getattr(nextpipe, name) is getattr(decorators, name)


def test_flow_step_visitor_is_an_ast_visitor() -> None:
    import ast

    from nextpipe.flow import StepVisitor

    assert issubclass(StepVisitor, ast.NodeVisitor)


def test_version() -> None:
    assert isinstance(nextpipe.__about__.__version__, str)
    assert nextpipe.__about__.__version__
    assert nextpipe.VERSION == nextpipe.__about__.__version__
    assert nextpipe.__version__ == nextpipe.__about__.__version__


def test_status_constants() -> None:
    from nextpipe import flow

    assert flow.STATUS_PENDING == "pending"
    assert flow.STATUS_RUNNING == "running"
    assert flow.STATUS_SUCCEEDED == "succeeded"
    assert flow.STATUS_FAILED == "failed"


def test_uplink_constants() -> None:
    from nextpipe import uplink

    assert uplink.FAILED_UPDATES_THRESHOLD == 10
    assert uplink.UPDATE_INTERVAL == 5
    assert uplink.MAX_DOCS_LENGTH == 1000


def test_threads_and_utils_and_env_constants() -> None:
    from nextpipe import constants, threads, utils

    assert threads.DEFAULT_MAX_THREADS == 24
    assert utils.THREAD_NAME_PREFIX == "nextpipe-"
    assert constants.ENV_APP_ID == "NEXTMV_APP_ID"
    assert constants.ENV_RUN_ID == "NEXTMV_RUN_ID"


def test_enums() -> None:
    from enum import Enum

    from nextpipe.decorators import InputType, StepType

    assert issubclass(InputType, Enum) and issubclass(StepType, Enum)
    assert InputType.JSON.value == 1
    assert InputType.FILES.value == 2
    assert {m.name: m.value for m in InputType} == {"JSON": 1, "FILES": 2}
    assert StepType.DEFAULT.value == 1
    assert StepType.APP.value == 2
    assert {m.name: m.value for m in StepType} == {"DEFAULT": 1, "APP": 2}


# ---------------------------------------------------------------------------------------------------------------------
# Cheap import and no account needed: checked in fresh interpreters
# ---------------------------------------------------------------------------------------------------------------------


def _run_python(code: str, tmp_path) -> dict:
    script = tmp_path / "snippet.py"
    script.write_text(textwrap.dedent(code))
    return _run_script(script, tmp_path)


def _run_script(script, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTMV_") and k != "NEXTPIPE_LOCAL_APPS"}
    env["HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert proc.returncode == 0, f"subprocess failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_nextpipe_does_not_import_nextmv(tmp_path) -> None:
    out = _run_python(
        """
        import json, sys
        import nextpipe
        print(json.dumps({"mods": sorted(m for m in sys.modules if m == "nextmv" or m.startswith("nextmv."))}))
        """,
        tmp_path,
    )
    assert out["mods"] == []


def test_pure_flow_runs_without_api_key_and_never_imports_nextmv_cloud(tmp_path) -> None:
    script = tmp_path / "pure_flow.py"
    script.write_text(
        textwrap.dedent(
            """
            import json
            import os
            import sys

            from nextpipe import FlowSpec, foreach, join, needs, repeat, step

            assert "NEXTMV_API_KEY" not in os.environ


            class PureFlow(FlowSpec):
                @foreach()
                @step
                def fan(data):
                    return [data, data + 1, data + 2]

                @needs(predecessors=[fan])
                @step
                def double(x):
                    return 2 * x

                @needs(predecessors=[double])
                @join()
                @step
                def total(values):
                    return sum(v[0] for v in values)

                @repeat(repetitions=2)
                @needs(predecessors=[total])
                @step
                def again(t):
                    return t + 1


            flow = PureFlow("pure", 10)
            flow.run()
            print(
                json.dumps(
                    {
                        "total": flow.get_result(flow.total),
                        "again": flow.get_result(flow.again),
                        "cloud": sorted(m for m in sys.modules if m.startswith("nextmv.cloud")),
                    }
                )
            )
            """
        )
    )
    out = _run_script(script, tmp_path)
    assert out["total"] == 66
    assert out["again"] == [67, 67]
    assert out["cloud"] == []
