"""Findings of trying nextpipe as a new user would: each test is a mistake or an edge a user ran into."""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import nextmv
import pytest

from nextpipe import AppRunConfig, Configuration, FlowSpec, app, cli, foreach, needs, optional, repeat, step
from nextpipe.graph import FlowDefinitionError
from nextpipe.uplink import UplinkConfig


class PlainFlow(FlowSpec):
    @step
    def increment(data: int) -> int:
        return data + 1


class EchoFlow(FlowSpec):
    @app(app_id="echo")
    @step
    def echo() -> None:
        pass


@pytest.mark.parametrize("value", ["garbage", "echo", "echo=", "=apps/echo"])
def test_malformed_local_apps_variable_leaves_flows_without_app_steps_alone(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXTPIPE_LOCAL_APPS", value)
    flow = PlainFlow("plain", 1)
    flow.run()
    assert flow.get_result(flow.increment) == 2
    with pytest.raises(ValueError, match="NEXTPIPE_LOCAL_APPS entries must look like 'app_id=directory'"):
        EchoFlow("echo", {})


@pytest.mark.parametrize("via", ["configuration", "environment"])
def test_local_app_mapped_to_a_file_says_it_is_not_a_directory(
    via: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text("type: python\n")
    conf = Configuration(local_apps={"echo": str(manifest)}) if via == "configuration" else None
    if via == "environment":
        monkeypatch.setenv("NEXTPIPE_LOCAL_APPS", f"echo={manifest}")
    with pytest.raises(FlowDefinitionError) as raised:
        EchoFlow("echo", {}, conf=conf)
    message = str(raised.value)
    assert message.startswith(f"Step echo: app 'echo' is mapped to the local app directory {manifest}, ")
    assert "is not a directory" in message and "does not exist" not in message


class FailingFlow(FlowSpec):
    @step
    def load(data: int) -> int:
        return data

    @needs(predecessors=[load])
    @step
    def divide(data: int) -> float:
        return 1 / data


@pytest.mark.parametrize("stderr", ["none", "closed"])
def test_flow_without_a_usable_stderr_runs_and_fails_as_usual(stderr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # pythonw and some services run with sys.stderr None; a closed stream stands for a broken pipe.
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", None if stderr == "none" else closed)
    flow = FailingFlow("quiet", 2)
    flow.run()
    assert flow.get_result(flow.divide) == 0.5
    failing = FailingFlow("quiet", 0)
    with pytest.raises(RuntimeError, match="^Flow failed: Step divide failed: division by zero$"):
        failing.run()
    assert failing.get_result(failing.load) == 0


@pytest.mark.parametrize(
    ("decorators", "name", "usage"),
    [
        (lambda a, b: [needs(predecessors=[a]), needs(predecessors=[b])], "needs", "list every predecessor"),
        (lambda a, b: [repeat(repetitions=2), repeat(repetitions=3)], "repeat", "one @repeat"),
        (lambda a, b: [optional(condition=bool), optional(condition=callable)], "optional", "one @optional"),
        (lambda a, b: [app(app_id="first"), app(app_id="second")], "app", "one app step per app"),
    ],
)
def test_a_decorator_applied_twice_is_refused(decorators: Any, name: str, usage: str) -> None:
    # Applied twice, the outer decorator replaced the inner one's setting: a predecessor or a condition was lost.
    class Twice(FlowSpec):
        @step
        def first(data: int) -> int:
            return data

        @step
        def second(data: int) -> int:
            return data

        def combine(x: int, y: int = 0) -> int:
            return x + y

        combine = step(combine)
        for decorator in decorators(first, second):
            combine = decorator(combine)

    with pytest.raises(FlowDefinitionError) as raised:
        Twice("twice", 1)
    message = str(raised.value)
    assert message.startswith(f"Step combine: @{name} is applied twice, so the outer one would replace the inner one:")
    assert usage in message


@pytest.mark.parametrize("member", ["run", "get_result"])
def test_a_step_named_like_a_flow_member_is_refused(member: str) -> None:
    # A step named run replaced FlowSpec.run: flow.run() called the step and the flow silently never ran.
    def work(data: int) -> int:
        return data

    work.__name__ = work.__qualname__ = member
    flow_class = type("Shadow", (FlowSpec,), {member: step(work)})
    with pytest.raises(FlowDefinitionError) as raised:
        flow_class("shadow", 1)
    assert str(raised.value) == (
        f"Step {member} of Shadow hides FlowSpec.{member}: flow.{member} would be the step instead. "
        "Give the step function another name."
    )
    # The same step under a second name as well (legacy = prepare).
    work.__name__ = work.__qualname__ = "prepare"
    prepare = step(work)
    alias_class = type("Alias", (FlowSpec,), {"prepare": prepare, member: prepare})
    with pytest.raises(FlowDefinitionError, match=f"^Step {member} of Alias hides FlowSpec.{member}: "):
        alias_class("alias", 1)


@pytest.mark.parametrize("member", ["summary", "client", "add_hook"])
def test_a_step_may_be_named_like_a_later_addition(member: str) -> None:
    # 0.7.3 scripts may have a step named summary or client: they keep working, the step hides the addition only.
    def work(data: int) -> int:
        return data + 1

    work.__name__ = work.__qualname__ = member
    flow = type("Named", (FlowSpec,), {member: step(work)})("named", 1)
    flow.run()
    assert flow.get_result(getattr(flow, member)) == 2
    assert FlowSpec.summary(flow).status == "succeeded"


def test_get_result_of_another_flows_step_names_the_step() -> None:
    flow = PlainFlow("plain", 1)
    flow.run()
    with pytest.raises(
        Exception, match=r"^Step divide is not a step of PlainFlow \(another flow's step\?\): "
    ) as raised:
        flow.get_result(FailingFlow.divide)
    assert "flow.increment" in str(raised.value)


def test_graph_command_on_a_script_that_imports_its_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "user_findings_flows.py").write_text(
        "from nextpipe import FlowSpec, step\n\n\nclass Solve(FlowSpec):\n    @step\n    def prepare(data):\n"
        "        return data\n"
    )
    (tmp_path / "main.py").write_text(
        "from user_findings_flows import Solve\n\nif __name__ == '__main__':\n    Solve('solve', {}).run()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "user_findings_flows", raising=False)
    try:
        assert cli.main(["graph", "main.py"]) == 0
        assert capsys.readouterr() == ("graph LR\n  prepare(prepare)\n", "")
    finally:
        sys.modules.pop("user_findings_flows", None)
        sys.modules.pop("_nextpipe_graph_target", None)
    assert cli.main(["graph", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"nextpipe: error: {tmp_path}: a directory, not a Python file.\n"


class RecordingClient:
    """Stands in for nextmv.cloud.Client: keeps the requests instead of sending them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, endpoint: str, payload: Any = None, **kwargs: Any) -> None:
        self.requests.append((method, endpoint, payload))


def test_uplink_attributes_after_construction() -> None:
    # Inactive: nothing is waiting to be sent, ever.
    quiet = PlainFlow("plain", 1)
    assert (quiet.uplink.inactive, quiet.uplink.changed, quiet.uplink.flow) == (True, False, {})
    quiet.run()
    assert (quiet.uplink.changed, quiet.uplink.flow) == (False, {})
    # Active: the constructor handed the initial graph over, so it is the latest state, waiting to be sent.
    client = RecordingClient()
    flow = PlainFlow("plain", 1, client=client, uplink_config=UplinkConfig(application_id="app", run_id="run"))
    assert flow.uplink.changed is True
    initial = flow.uplink.flow
    assert initial["pipeline_graph"] == {"steps": [{"id": "increment", "predecessors": []}], "nodes": []}
    flow.run()
    assert flow.uplink.changed is False
    assert flow.uplink.flow == client.requests[-1][2]
    assert flow.uplink.flow["pipeline_graph"]["nodes"][0]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"name": 5}, "AppRunConfig.name must be a string or None, got 5."),
        ({"description": ["x"]}, "AppRunConfig.description must be a string or None, got ['x']."),
        ({"instance_id": 3}, "AppRunConfig.instance_id must be a string or None, got 3."),
        (
            {"run_configuration": "fast"},
            "AppRunConfig.run_configuration must be a nextmv.RunConfiguration (or a dict), got 'fast'.",
        ),
    ],
)
def test_app_run_config_refuses_wrong_argument_types(arguments: dict[str, Any], message: str) -> None:
    # These were accepted and failed only when the app step sent the run, or never (a name of 5).
    with pytest.raises(TypeError) as raised:
        AppRunConfig(input={"value": 1}, **arguments)
    assert str(raised.value) == message


def test_app_run_config_still_takes_what_it_documents() -> None:
    configuration = nextmv.RunConfiguration(execution_class="6c9500mb870s")
    for run_configuration in (None, configuration, {"execution_class": "6c9500mb870s"}):
        config = AppRunConfig(input=1, name="n", description="d", instance_id="i", run_configuration=run_configuration)
        assert AppRunConfig.from_json(config.to_json()).run_configuration == (run_configuration and configuration)
    assert AppRunConfig.from_json('{"input": 1, "name": 5}').name == "5"  # lenient decoding, as dataclasses-json


class Product(FlowSpec):
    @foreach()
    @step
    def rows(size: int) -> list:
        return list(range(size))

    @foreach()
    @step
    def columns(size: int) -> list:
        return list(range(size))

    @needs(predecessors=[rows, columns])
    @step
    def cell(row: int, column: int) -> int:
        return row * column


def test_too_many_inputs_is_refused_before_the_product_is_built() -> None:
    # The limit guards against accidental products of fan-outs: the product of two fan-outs of 1,000 was
    # built in full (a million inputs) before it was counted; of two of 100,000 it never finished.
    flow = Product("product", 1000)
    tracemalloc.start()
    try:
        with pytest.raises(Exception, match=r"^Step cell has too many inputs \(1000000\)\. Maximum allowed is 50\.$"):
            flow.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000  # bytes; building the product takes several times more
    assert flow.get_result(flow.rows) == list(range(1000))


def logged(function: Any) -> Any:
    """A user's decorator without functools.wraps."""

    def inner(*args: Any) -> Any:
        return function(*args)

    return inner


def traced(function: Any) -> Any:
    """A user's decorator with functools.wraps, counting the calls."""

    @functools.wraps(function)
    def inner(*args: Any) -> Any:
        inner.calls += 1
        return function(*args)

    inner.calls = 0
    return inner


def test_a_decorator_above_step_that_hides_the_step_is_refused() -> None:
    # The decorator's wrapper took the step's place in the class: the flow ran without the step, silently.
    class Hidden(FlowSpec):
        @step
        def prepare(data: int) -> int:
            return data

        @logged
        @step
        def report(data: int) -> int:
            return data

    with pytest.raises(FlowDefinitionError) as raised:
        Hidden("hidden", 1)
    assert str(raised.value) == (
        "Step report: a decorator above @step replaced the step with logged.<locals>.inner, which is not a step, "
        "so report would never run. Put @step above your own decorators (with functools.wraps in them, "
        "so that the step keeps its name)."
    )

    class Below(FlowSpec):  # what the message says to do
        @step
        @traced
        def report(data: int) -> int:
            return data + 1

        helper = logged(len)  # a wrapper around something that is not a step is no mistake
        check = logged(report)  # nor one under another name than the step's (a condition built from a step)

    flow = Below("below", 3)
    flow.run()
    assert flow.get_result(flow.report) == 4
    assert flow.report.step.function.calls == 1


def test_graph_command_on_a_closed_standard_output_is_a_one_line_error(tmp_path: Path) -> None:
    # The output read by nobody (| head that already quit): a traceback came out, exit status 1.
    (tmp_path / "flow.py").write_text(
        "from nextpipe import FlowSpec, step\n\n\nclass F(FlowSpec):\n    @step\n    def a(d):\n        return d\n"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "nextpipe", "graph", "flow.py"],
            cwd=tmp_path,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (completed.returncode, completed.stderr) == (
        2,
        "nextpipe: error: cannot write to standard output: Broken pipe.\n",
    )


def test_graph_command_on_a_script_that_reads_its_input_at_module_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The usual app script without a __main__ block: it read standard input (empty here) before flow.run().
    (tmp_path / "app.py").write_text(
        "import nextmv\n\nfrom nextpipe import FlowSpec, step\n\n\nclass Solve(FlowSpec):\n    @step\n"
        "    def prepare(data):\n        return data\n\n\nrun_input = nextmv.load()\n"
        "flow = Solve('solve', run_input.data)\nflow.run()\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        assert cli.main(["graph", "app.py"]) == 0
    finally:
        sys.modules.pop("_nextpipe_graph_target", None)
    out, err = capsys.readouterr()
    assert out == "graph LR\n  prepare(prepare)\n"
    assert err.startswith("nextpipe: note: importing app.py:12 failed (JSONDecodeError: ")
    assert err.endswith("; showing the flows defined above.\n") and err.count("\n") == 1


@pytest.mark.parametrize("local_apps", [{"echo": ""}, {"echo": "  "}, {"": "apps/echo"}])
def test_configuration_refuses_an_empty_local_app_mapping(local_apps: dict[str, str]) -> None:
    # An empty directory was the working directory; NEXTPIPE_LOCAL_APPS="echo=" was already refused.
    with pytest.raises(ValueError, match=r"^Configuration\.local_apps maps '.*' to '.*': give a non-empty app id"):
        Configuration(local_apps=local_apps)
    with pytest.raises(ValueError, match=r"^Configuration\.local_apps maps "):
        Configuration.from_dict({"local_apps": local_apps})
