"""
Tracing with OpenTelemetry: one span per flow run and one per node (install ``nextpipe[otel]``).

Spans are made only when the application configured a tracer provider
(``opentelemetry.trace.set_tracer_provider``, or the ``opentelemetry-instrument``
launcher); otherwise :func:`tracing_applies` is false, no hook is registered
and OpenTelemetry is not even imported.

Node spans are children of the run's span and are named after their step;
their attributes are ``nextpipe.step``, ``nextpipe.node.id``,
``nextpipe.app.id``, ``nextpipe.run.id`` and ``nextpipe.status``; a failed
node's span has status ERROR, the exception recorded, ``error.type`` and
``nextpipe.error``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from .__about__ import __version__
from .hooks import FlowHooks
from .utils import _error_text

INSTRUMENTATION_NAME = "nextpipe"
"""Name of the tracer (the instrumentation scope of nextpipe's spans)."""


def tracing_applies() -> bool:
    """
    Tell whether OpenTelemetry is configured in this process, cheaply.

    Returns
    -------
    bool
        ``True`` when ``opentelemetry.trace`` is imported and its global tracer
        provider is not the default (proxy or no-op) one.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # nobody imported it, so nobody configured a provider
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _nanoseconds(moment: Any) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1_000_000_000)


class TracingHook(FlowHooks):
    """
    Makes an OpenTelemetry span for each flow run and, as its children, one per node.

    Parameters
    ----------
    tracer_provider : opentelemetry.trace.TracerProvider, optional
        Where the spans go; by default the global provider.
    """

    def __init__(self, tracer_provider: Any = None):
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider)
        self._lock = threading.Lock()
        # By id(flow), as a hook may serve several flows at once: the run's span and its nodes' open spans.
        self._runs: dict[int, tuple[Any, dict[Any, Any]]] = {}

    def flow_start(self, flow: Any) -> None:
        """Start the run's span (parameters: :meth:`FlowHooks.flow_start`)."""
        attributes = {"nextpipe.flow.name": flow.name, "nextpipe.flow.class": type(flow).__name__}
        span = self._tracer.start_span(f"flow {flow.name}", attributes=attributes)
        with self._lock:
            self._runs[id(flow)] = (span, {})

    def _start_node_span(self, flow: Any, node: Any) -> Any:
        with self._lock:
            parent = self._runs.get(id(flow), (None,))[0]
        definition = node.parent.definition
        attributes = {"nextpipe.step": definition.get_id(), "nextpipe.node.id": node.id}
        app_id = definition.get_app_id()
        if app_id:
            attributes["nextpipe.app.id"] = app_id
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        return self._tracer.start_span(
            definition.get_id(),
            context=context,
            attributes=attributes,
            start_time=_nanoseconds(getattr(node, "started_at", None)),
        )

    def _end_node_span(self, span: Any, node: Any, status: str, error: BaseException | str | None = None) -> None:
        span.set_attribute("nextpipe.status", status)
        if node.run_id:
            span.set_attribute("nextpipe.run.id", node.run_id)
        if error is not None:
            text = _error_text(error)
            span.set_attribute("nextpipe.error", text)
            if isinstance(error, BaseException):
                span.set_attribute("error.type", type(error).__qualname__)
                span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, text))
        span.end(end_time=_nanoseconds(getattr(node, "finished_at", None)))

    def _open_spans(self, flow: Any) -> dict[Any, Any]:
        """The open node spans of the flow's run (lock held); a throwaway dict when the run has no span."""
        run = self._runs.get(id(flow))
        return run[1] if run is not None else {}

    def node_start(self, flow: Any, node: Any) -> None:
        """Start the node's span (parameters: :meth:`FlowHooks.node_start`)."""
        span = self._start_node_span(flow, node)
        with self._lock:
            self._open_spans(flow)[node] = span

    def node_skip(self, flow: Any, node: Any) -> None:
        """Record the skipped step's node as a span of its own (parameters: :meth:`FlowHooks.node_skip`)."""
        self._end_node_span(self._start_node_span(flow, node), node, "skipped")

    def node_success(self, flow: Any, node: Any) -> None:
        """End the node's span (parameters: :meth:`FlowHooks.node_success`)."""
        with self._lock:
            span = self._open_spans(flow).pop(node, None)
        if span is not None:
            self._end_node_span(span, node, node.status)

    def node_failure(self, flow: Any, node: Any, error: BaseException) -> None:
        """End the node's span with the error (parameters: :meth:`FlowHooks.node_failure`)."""
        with self._lock:
            span = self._open_spans(flow).pop(node, None)
        if span is not None:
            self._end_node_span(span, node, "failed", error)

    def node_retry(self, flow: Any, node: Any, error: BaseException, attempt: int, delay: float) -> None:
        """Note the failed attempt on the node's span (parameters: :meth:`FlowHooks.node_retry`)."""
        with self._lock:
            span = self._open_spans(flow).get(node)
        if span is not None:
            text = _error_text(error)
            span.add_event("retry", {"nextpipe.attempt": attempt, "nextpipe.delay": delay, "nextpipe.error": text})

    def flow_end(self, flow: Any, error: BaseException | None) -> None:
        """End the run's span after the spans of nodes left unfinished (parameters: :meth:`FlowHooks.flow_end`)."""
        with self._lock:
            flow_span, left = self._runs.pop(id(flow), (None, {}))
        for node, span in left.items():
            self._end_node_span(span, node, "failed", node.error or "canceled: the flow failed or was interrupted")
        if flow_span is None:
            return
        if error is not None:
            flow_span.record_exception(error)
            flow_span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, _error_text(error)))
        flow_span.set_attribute("nextpipe.status", "failed" if error is not None else "succeeded")
        flow_span.end()
