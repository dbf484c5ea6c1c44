"""Tracing: OpenTelemetry spans of flow runs and nodes, collected with the SDK's in-memory exporter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytest.register_assert_rewrite("emulator_fixtures")

from emulator_fixtures import fast_polling  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402
from platform_emulator import PlatformEmulator  # noqa: E402

from nextpipe import Configuration, FlowSpec, app, foreach, needs, optional, step  # noqa: E402
from nextpipe.graph import FlowNode  # noqa: E402
from nextpipe.tracing import TracingHook, tracing_applies  # noqa: E402

pytest_plugins = ["emulator_fixtures"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def hook(exporter: InMemorySpanExporter) -> TracingHook:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return TracingHook(tracer_provider=provider)


class Items(FlowSpec):
    @foreach()
    @step
    def split(data: dict) -> list:
        return list(range(data["n"]))

    @needs(predecessors=[split])
    @step
    def work(item: int) -> int:
        if item < 0:
            raise ValueError(f"negative {item}")
        return item

    @optional(condition=lambda _: False)
    @needs(predecessors=[work])
    @step
    def never(value: int) -> int:
        return value


def spans_by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    spans: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.name, []).append(span)
    return spans


def test_one_span_per_run_and_per_node(hook: TracingHook, exporter: InMemorySpanExporter) -> None:
    flow = Items("items", {"n": 2})
    flow.add_hook(hook)
    flow.run()
    spans = spans_by_name(exporter)
    (root,) = spans["flow items"]
    assert root.parent is None
    assert dict(root.attributes) == {
        "nextpipe.flow.name": "items",
        "nextpipe.flow.class": "Items",
        "nextpipe.status": "succeeded",
    }
    nodes = spans["split"] + spans["work"] + spans["never"]
    assert len(exporter.get_finished_spans()) == 1 + len(nodes) == 1 + 1 + 2 + 1
    for span in nodes:
        assert span.parent.span_id == root.context.span_id and span.context.trace_id == root.context.trace_id
        assert span.status.status_code is StatusCode.UNSET
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time
    work = sorted(spans["work"], key=lambda s: s.attributes["nextpipe.node.id"])
    assert [dict(s.attributes) for s in work] == [
        {"nextpipe.step": "work", "nextpipe.node.id": f"work_{i}", "nextpipe.status": "succeeded"} for i in (0, 1)
    ]
    # The span's times are the node's.
    node = flow.graph.get_step(flow.work.step).nodes[0]
    assert work[0].start_time == int(node.started_at.timestamp() * 1e9)
    assert spans["never"][0].attributes["nextpipe.status"] == "skipped"


def test_a_failed_node_and_run(hook: TracingHook, exporter: InMemorySpanExporter) -> None:
    class Failing(FlowSpec):
        @step
        def fail() -> None:
            raise ValueError("it broke")

    flow = Failing("failing", None)
    flow.add_hook(hook)
    with pytest.raises(RuntimeError, match="it broke"):
        flow.run()
    spans = spans_by_name(exporter)
    (node,) = spans["fail"]
    assert node.status.status_code is StatusCode.ERROR and node.status.description == "it broke"
    assert node.attributes["nextpipe.status"] == "failed" and node.attributes["nextpipe.error"] == "it broke"
    assert node.attributes["error.type"] == "ValueError"
    (event,) = node.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ValueError"
    (root,) = spans["flow failing"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "Flow failed: Step fail failed: it broke"
    assert root.attributes["nextpipe.status"] == "failed"


def test_nodes_canceled_by_a_failure_end_their_spans(hook: TracingHook, exporter: InMemorySpanExporter) -> None:
    started = threading.Event()
    release = threading.Event()

    class Race(FlowSpec):
        @step
        def slow() -> None:
            started.set()
            release.wait(30)

        @step
        def fail() -> None:
            started.wait(30)
            raise ValueError("fast failure")

    flow = Race("race", None, conf=Configuration(thread_count=2))
    flow.add_hook(hook)
    try:
        with pytest.raises(RuntimeError, match="fast failure"):
            flow.run()
    finally:
        release.set()
    spans = spans_by_name(exporter)
    (slow,) = spans["slow"]
    assert slow.attributes["nextpipe.status"] == "failed"
    assert slow.status.status_code is StatusCode.ERROR
    assert spans["flow race"][0].end_time >= slow.end_time


class Solve(FlowSpec):
    @app(app_id="echo", polling_options=fast_polling())
    @step
    def solve():
        pass


def test_app_node_spans_name_the_app_and_run(
    platform_env: PlatformEmulator, hook: TracingHook, exporter: InMemorySpanExporter
) -> None:
    flow = Solve("solve", {"items": [1]})
    flow.add_hook(hook)
    flow.run()
    (span,) = spans_by_name(exporter)["solve"]
    (run_id,) = platform_env.runs
    assert span.attributes["nextpipe.app.id"] == "echo"
    assert span.attributes["nextpipe.run.id"] == run_id


def test_retry_events(hook: TracingHook, exporter: InMemorySpanExporter) -> None:
    flow = Items("items", {"n": 1})
    hook.flow_start(flow)
    node = FlowNode(flow.graph.get_step(flow.split.step), 0)
    hook.node_start(flow, node)
    hook.node_retry(flow, node, TimeoutError("slow"), 1, 0.5)
    node.status = "succeeded"
    hook.node_success(flow, node)
    hook.flow_end(flow, None)
    (span,) = spans_by_name(exporter)["split"]
    (event,) = span.events
    assert (event.name, dict(event.attributes)) == (
        "retry",
        {"nextpipe.attempt": 1, "nextpipe.delay": 0.5, "nextpipe.error": "slow"},
    )


def test_not_registered_without_a_configured_provider() -> None:
    # In this process no global tracer provider was set: the default proxy means "not configured".
    assert not tracing_applies()


def run_script(code: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTMV_", "NEXTPIPE_", "OTEL_"))}
    environment.update(PYTHONPATH=str(ROOT), CI="1")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


FLOW = """
from nextpipe import FlowSpec, step

class One(FlowSpec):
    @step
    def only() -> int:
        return 1
"""


def test_a_configured_global_provider_gets_the_spans() -> None:
    proc = run_script(
        FLOW
        + """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
One("one", None).run()
print(sorted(span.name for span in exporter.get_finished_spans()))
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "['flow one', 'only']\n"


def test_without_opentelemetry_nothing_is_imported() -> None:
    proc = run_script(
        FLOW
        + """
import sys
One("one", None).run()
print(any(name.startswith("opentelemetry") for name in sys.modules))
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "False\n"


def test_imported_but_not_configured_makes_no_hook() -> None:
    proc = run_script(
        FLOW
        + """
from opentelemetry import trace
from nextpipe.reporting import default_hooks
print([type(h).__name__ for h in default_hooks(One("one", None))])
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "['SummaryHook']\n"
