"""
Scheduling: runs a flow's nodes on a thread pool as their inputs become ready.

Scheduling is driven by node completions, with no timer anywhere: the thread
that called ``run()`` starts the start steps and then sleeps on an event; the
worker that finishes a node records its result and starts every step that this
makes ready, then takes the next job itself (so a chain never waits for a
thread hand-off). All scheduling state changes under one lock. A failure or an
interrupt wakes the calling thread, which cancels what still runs and raises.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from ._control import Controller, needs_control
from ._execution import execute_node
from ._inputs import node_inputs
from .constants import STATUS_FAILED, STATUS_RUNNING, STATUS_SUCCEEDED
from .graph import FlowGraph, FlowNode, FlowStep
from .threads import Job, Pool
from .utils import log_internal

RUN_CREATION_GRACE = 5.0
"""Most seconds a failing flow waits for app runs being created, so that it can cancel them."""


class _NotStarted(Exception):
    """Raised in a worker for a queued node that must not start because the flow already failed."""


class Runner:
    """
    Executes a flow's graph.

    Parameters
    ----------
    spec : FlowSpec
        The flow (its ``input`` feeds the start steps; ``self`` steps receive it).
    graph : FlowGraph
        The flow's graph.
    config : Configuration
        Thread count and input limit.
    uplink : UplinkClient
        Receives the node states; does nothing when inactive.

    Attributes
    ----------
    pool : Pool or None
        The thread pool of the latest run.
    """

    def __init__(self, spec: Any, graph: FlowGraph, config: Any, uplink: Any):
        self.spec = spec
        self.graph = graph
        self.config = config
        self.uplink = uplink
        self.pool: Pool | None = None
        self._lock = threading.Lock()  # guards all scheduling state below; held by whoever schedules
        self._failed = False
        self._error: BaseException | None = None
        self._ended = threading.Event()
        self._waiting: dict[FlowStep, int] = {}  # predecessor steps not done yet
        self._open_nodes: dict[FlowStep, int] = {}  # nodes of a started step not finished yet
        self._steps_left = 0
        self._running: dict[FlowNode, None] = {}  # submitted nodes not finished: an insertion-ordered set
        self._controller: Controller | None = None  # retries, time limits, limits: made for the first step using them
        # Cheap no-op when nobody listens: no document is built per node event.
        self._changed: Callable[[], None] = uplink.notify_changed if uplink is not None and uplink.active else _nothing

    def run(self) -> None:
        """
        Run every node of the graph and block until the flow ends.

        Raises
        ------
        RuntimeError
            ``Flow failed: Step <id> failed: <error>`` when a node fails.
        Exception
            When a step's inputs cannot be prepared (a foreach step that did not
            return a list, too many inputs).
        KeyboardInterrupt
            Re-raised after running app runs were canceled.
        """
        self.pool = Pool(self.config.thread_count, keep_finished=False)  # completions arrive by done callback
        self._failed = False
        self._error = None
        self._ended = threading.Event()
        self._waiting = {step: len(set(step.predecessors)) for step in self.graph.steps}
        self._open_nodes = {}
        self._steps_left = len(self.graph.steps)
        self._controller = None
        try:
            with self._lock:
                self._start_steps(self.graph.start_steps)
            self._ended.wait()
            if self._error is not None:
                raise self._error
        except BaseException:
            self._abort()
            raise
        finally:
            if self._controller is not None:
                self._controller.stop()
            self.pool.shutdown(wait=not self._failed)

    def _start_steps(self, steps: list[FlowStep]) -> None:
        """Start steps whose predecessors are done, and every step that becomes ready through them (lock held)."""
        finished: deque[FlowStep] = deque()
        for step in steps:
            if self._start_step(step) == 0:
                finished.append(step)
        while finished:
            step = finished.popleft()
            self._finish_step(step)
            for successor in step.successors:
                self._waiting[successor] -= 1
                if self._waiting[successor] == 0 and self._start_step(successor) == 0:
                    finished.append(successor)
        if self._steps_left == 0:
            self._ended.set()

    def _finish_step(self, step: FlowStep) -> None:
        step.done = True
        self._steps_left -= 1
        if step.definition.is_app():
            step.definition.set_run_ids([run_id for n in step.nodes for run_id in n.run_ids])

    def _start_step(self, step: FlowStep) -> int:
        """Create and submit the step's nodes; return how many are running."""
        definition = step.definition
        try:
            skip = definition.skip()
        except Exception as error:
            raise RuntimeError(
                f"Flow failed: Step {definition.get_id()} failed: its @optional condition raised "
                f"{type(error).__name__}: {error}"
            ) from error
        if skip:
            step.skipped = True
            node = FlowNode(step, 0)
            node.predecessors = [n for p in step.predecessors for n in p.nodes]
            node.status = STATUS_SUCCEEDED
            node.done = True
            step.nodes = [node]
            self._changed()
            return 0
        inputs = node_inputs(step, self.spec.input, self.config.max_step_inputs)
        nodes = []
        for index, (_, sources) in enumerate(inputs):
            node = FlowNode(step, index)
            node.predecessors = sources
            nodes.append(node)
        step.nodes = nodes
        self._open_nodes[step] = len(nodes)
        if needs_control(step, self.config):  # retries, time limits, limits: the controller runs the nodes
            if self._controller is None:
                self._controller = Controller(self)
            self._running.update(dict.fromkeys(nodes))
            self._controller.launch(step, nodes, inputs)
            self._changed()
            return len(nodes)
        submit = self.pool.run
        for node, (args, _) in zip(nodes, inputs, strict=True):
            self._running[node] = None
            submit(Job(execute_node, self._node_started, self._node_done, (self.spec, node, args), node.id, node))
        self._changed()
        return len(nodes)

    def _node_started(self, job: Job) -> None:
        with self._lock:  # so that no node turns running after _abort marked the flow failed
            if self._failed:
                raise _NotStarted()
            job.reference.status = STATUS_RUNNING
        self._changed()

    def _node_done(self, job: Job) -> None:
        # Runs in the worker that ran the node: it schedules what becomes ready and then takes the
        # next job itself, so a chain hands no work between threads and a failure stops queued nodes at once.
        node = job.reference
        with self._lock:
            if self._failed:  # the flow is ending; late results are not recorded
                return
            self._running.pop(node, None)
            try:
                if job.error is not None:
                    raise self._node_failure(node, job.error) from job.error
                self._succeed_node(node, job.result)
                self._complete_node(node)
            except BaseException as error:
                self._fail_flow(error)

    def _complete_node(self, node: FlowNode) -> None:
        """Count a finished node; once its step is done, start the steps this makes ready (lock held)."""
        step = node.parent
        self._open_nodes[step] -= 1
        if self._open_nodes[step] == 0:
            self._finish_step(step)
            ready = []
            for successor in step.successors:
                self._waiting[successor] -= 1
                if self._waiting[successor] == 0:
                    ready.append(successor)
            self._start_steps(ready)

    def _fail_flow(self, error: BaseException) -> None:
        """End the run with ``error`` (lock held): nothing new starts; the calling thread cancels and raises."""
        self._failed = True
        self._error = error
        self._ended.set()

    def _node_retried(self, node: FlowNode, error: BaseException, attempt: int, delay: float) -> None:
        """A controlled node's attempt failed and is retried in ``delay`` seconds (lock held)."""
        self._changed()

    def _succeed_node(self, node: FlowNode, result: Any) -> None:
        node.result = result
        node.status = STATUS_SUCCEEDED
        node.done = True
        self._changed()

    def _node_failure(self, node: FlowNode, error: BaseException) -> RuntimeError:
        node.status = STATUS_FAILED
        node.error = str(error)
        node.done = True
        step_id = node.parent.definition.get_id()
        trace = error.__traceback__  # None for a failure nextpipe decided (a time limit), never raised
        details = "".join(traceback.format_exception(type(error), error, trace.tb_next if trace else None))
        log_internal(f"Step {step_id} failed in node {node.id}:\n{details.rstrip()}")
        return RuntimeError(f"Flow failed: Step {step_id} failed: {error}")

    def _abort(self) -> None:
        """Stop everything after a failure or an interrupt: nothing new starts, running nodes are canceled."""
        with self._lock:
            self._failed = True
        if self._controller is not None:
            self._controller.stop()
        running = list(self._running)
        for node in running:
            node.cancel = True
            node.status = STATUS_FAILED
            node.error = node.error or "canceled: the flow failed or was interrupted"
            node.done = True
        # A run still being created is canceled by its own worker as soon as it exists: wait for that, briefly.
        deadline = time.monotonic() + RUN_CREATION_GRACE
        for node in running:
            if node.run_created is not None:
                node.run_created.wait(max(0.0, deadline - time.monotonic()))
        for node in running:
            if node.cancel_run is not None:
                node.cancel_run()
        self._changed()


def _nothing() -> None:
    pass
