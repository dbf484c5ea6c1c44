"""
Scheduling: runs a flow's nodes on a thread pool as their inputs become ready.

Scheduling is driven by node completions, never by a timer: the thread that
called ``run()`` starts the start steps and then sleeps on an event (waking
only to let a signal through, see ``SIGNAL_CHECK_INTERVAL``); the
worker that finishes a node records its result and starts every step that this
makes ready, then takes the next job itself (so a chain never waits for a
thread hand-off). All scheduling state changes under one lock. A failure, an
interrupt or SIGTERM wakes the calling thread, which cancels what still runs
and raises.

Each ``run()`` starts from a clean state: a node of an earlier run that ends
late is not in the current run's set of running nodes, so its completion is
ignored.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from ._control import Controller, needs_control
from ._execution import execute_node
from ._inputs import node_inputs
from .constants import STATUS_FAILED, STATUS_RUNNING, STATUS_SUCCEEDED
from .graph import FlowGraph, FlowNode, FlowStep
from .hooks import RunHooks
from .threads import Job, Pool
from .utils import THREAD_NAME_PREFIX, _error_text, log_internal

SIGNAL_CHECK_INTERVAL = 0.2
"""Seconds between two wake-ups of the thread that waits in ``run()``, so that a signal reaches it in time."""
RUN_CANCEL_GRACE = 5.0
"""Most seconds in all that a failing or interrupted flow waits for its runs being created and their cancel
requests, sent all at once: the SDK's own timeout (20 s) and, over HTTPS, its retries (up to 10 tries per request)
would hold the end far longer."""

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _NotStarted(Exception):
    """Raised in a worker for a queued node that must not start: the flow is ending, or the node is from an old run."""


class _Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM during ``run()``, which then ends like after Ctrl-C."""


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
    uplink : UplinkClient or None
        Receives the node states; does nothing when inactive.

    Attributes
    ----------
    spec : FlowSpec
        The flow.
    graph : FlowGraph
        The flow's graph.
    uplink : UplinkClient or None
        The flow's uplink.
    pool : Pool
        The thread pool of the latest run (built from ``config.thread_count``
        at construction; each further run gets a fresh one).
    node_idxs : dict of FlowStep to int
        How many nodes each step of the latest run created.
    fail : bool
        ``False`` until the latest run failed (a node failed, a step's inputs
        could not be prepared, or the run was interrupted), then ``True``.
    fail_reason : str or None
        Why the latest run failed: for a node failure
        ``"Step <id> failed: <error>"``, the text that follows ``Flow failed: ``
        in the raised error; otherwise the text of the raised error.
    lock_fail : threading.Lock
        Held while ``fail`` and ``fail_reason`` change.
    lock_running : threading.Lock
        Guards the scheduling state (which nodes run, which steps wait).
    """

    def __init__(self, spec: Any, graph: FlowGraph, config: Any, uplink: Any):
        self.spec = spec
        self.graph = graph
        self.config = config
        self.uplink = uplink
        self.pool = Pool(config.thread_count, keep_finished=False)  # completions arrive by done callback
        self.node_idxs: dict[FlowStep, int] = {}
        self.fail = False
        self.fail_reason: str | None = None
        self.lock_fail = threading.Lock()
        self.lock_running = threading.Lock()
        self._pool_used = False
        self._active = threading.Lock()  # held by the thread inside run()
        self._hooks = RunHooks()
        # Scheduling state of the current run, guarded by lock_running.
        self._stopping = False  # nothing new starts: a node failed, or the flow is interrupted
        self._error: BaseException | None = None
        self._ended = threading.Event()
        self._waiting: dict[FlowStep, int] = {}  # predecessor steps not done yet
        self._open_nodes: dict[FlowStep, int] = {}  # nodes of a started step not finished yet
        self._steps_left = 0
        self._running: dict[FlowNode, Job | None] = {}  # nodes not finished, with their jobs (None: not submitted)
        self._controller: Controller | None = None  # retries, time limits, limits: made for the first step using them
        # Cheap no-op when nobody listens: no document is built per node event.
        self._changed = uplink.notify_changed if uplink is not None and uplink.active else _nothing

    @property
    def jobs(self) -> list[Job]:
        """list of Job: The jobs of the latest run that were submitted and had not finished (when it ended)."""
        with self.lock_running:
            return [job for job in self._running.values() if job is not None]

    def run(self, hooks: RunHooks | None = None) -> None:
        """
        Run every node of the graph and block until the flow ends.

        Each call starts from a clean state (the nodes and results of an
        earlier run are dropped). In the main thread, SIGTERM is handled like
        Ctrl-C (running app runs are canceled and the uplink sends the final
        state), then delivered again to the previous handler, which by default
        ends the process with the usual status of SIGTERM.

        Parameters
        ----------
        hooks : RunHooks, optional
            The hooks of this run; none by default.

        Raises
        ------
        RuntimeError
            ``Flow failed: Step <id> failed: <error>`` when a node fails; or,
            before anything runs, when the flow is already running (in another thread).
        Exception
            When a step's inputs cannot be prepared (a foreach step that did not
            return a list, too many inputs).
        KeyboardInterrupt
            Re-raised after running app runs were canceled (also for SIGTERM,
            when its previous handler returns).
        """
        if not self._active.acquire(blocking=False):
            raise RuntimeError(
                f"Flow {self.spec.name} is already running: run() was called again (from another thread?) before "
                "it returned. Wait for it to return, or construct a second instance of the flow class to run both "
                "at once."
            )
        try:
            with _sigterm_as_interrupt():
                self._run(hooks if hooks is not None else RunHooks())
        finally:
            self._active.release()

    def _run(self, hooks: RunHooks) -> None:
        self._reset(hooks)
        uplink = self.uplink
        if uplink is not None:
            uplink.run_async()
        error = None
        try:
            if hooks.flow_start:
                hooks.emit("flow_start", self.spec)
            self._execute()
        except BaseException as caught:
            error = caught
            raise
        finally:
            if uplink is not None:
                uplink.terminate()
            if hooks.flow_end:
                hooks.emit("flow_end", self.spec, error)

    def _reset(self, hooks: RunHooks) -> None:
        if self._pool_used:  # the previous run shut its pool down
            self.pool = Pool(self.config.thread_count, keep_finished=False)
        self._pool_used = True
        with self.lock_running:  # a late node of an earlier run may be looking at this state
            for step in self.graph.steps:
                step.done = False
                step.skipped = False
                step.nodes = []
            self._running = {}
            self._controller = None
            self._hooks = hooks
            self._stopping = False
            self._error = None
            self._ended = threading.Event()
            self._waiting = {step: len(set(step.predecessors)) for step in self.graph.steps}
            self._open_nodes = {}
            self._steps_left = len(self.graph.steps)
            self.node_idxs = {}
            with self.lock_fail:
                self.fail = False
                self.fail_reason = None
        self._changed()

    def _execute(self) -> None:
        try:
            if self._schedule(self.graph.start_steps):
                self._ended.set()
            # Woken now and then: a Ctrl-C or SIGTERM that the kernel hands to a worker thread only sets a flag,
            # which the main thread checks when it wakes; without a timeout it would wait for the flow's end.
            while not self._ended.wait(SIGNAL_CHECK_INTERVAL):
                pass
            if self._error is not None:
                raise self._error
        except BaseException as error:
            self._abort(error)
            raise
        finally:
            if self._controller is not None:
                self._controller.stop()
            self.pool.shutdown(wait=not self._stopping)

    def _schedule(self, steps: list[FlowStep]) -> bool:
        """Start ready steps and what becomes ready through them; return whether the flow ended."""
        skipped: list[FlowNode] = []
        with self.lock_running:
            if self._stopping:
                return False
            try:
                self._start_steps(steps, skipped)
            except BaseException as error:  # a step's inputs or @optional condition: the flow fails
                self._stop(error)  # (in the calling thread, _execute raises it, also a KeyboardInterrupt)
                return True
            hooks = self._hooks
            ended = self._steps_left == 0
        if skipped:
            self._changed()
            if hooks.node_skip:
                for node in skipped:
                    hooks.emit("node_skip", self.spec, node)
        return ended

    def _start_steps(self, steps: list[FlowStep], skipped: list[FlowNode]) -> None:
        """Start steps whose predecessors are done, and every step that becomes ready through them (lock held)."""
        finished = deque(step for step in steps if self._start_step(step, skipped) == 0)
        while finished:
            for successor in self._finish_step(finished.popleft()):
                if self._start_step(successor, skipped) == 0:
                    finished.append(successor)

    def _finish_step(self, step: FlowStep) -> list[FlowStep]:
        """Mark a step done; return the successors this makes ready (lock held)."""
        step.done = True
        self._steps_left -= 1
        if step.definition.is_app():
            step.definition.set_run_ids([run_id for n in step.nodes for run_id in n.run_ids])
        ready = []
        for successor in step.successors:
            self._waiting[successor] -= 1
            if self._waiting[successor] == 0:
                ready.append(successor)
        return ready

    def _start_step(self, step: FlowStep, skipped: list[FlowNode]) -> int:
        """Create and submit the step's nodes; return how many are running (lock held)."""
        definition = step.definition
        try:
            skip = definition.skip()
        except Exception as error:
            raise RuntimeError(
                f"Flow failed: Step {definition.get_id()} failed: its @optional condition raised "
                f"{type(error).__name__}: {_error_text(error)}"
            ) from error
        if skip:
            log_internal(f"Skipping step {definition.get_id()}")
            step.skipped = True
            node = FlowNode(step, 0)
            node.predecessors = [n for p in step.predecessors for n in p.nodes]
            node.status = STATUS_SUCCEEDED
            node.done = True
            node._started = node._finished = time.perf_counter()
            step.nodes = [node]
            self.node_idxs[step] = 1
            skipped.append(node)
            return 0
        inputs = node_inputs(step, self.spec.input, self.config.max_step_inputs)
        # Submitting under the lock is safe: a node that starts at once waits for the lock before it runs.
        step.nodes = nodes = []
        self.node_idxs[step] = self._open_nodes[step] = len(inputs)
        if needs_control(step, self.config):  # retries, time limits, limits: the controller submits the nodes
            if self._controller is None:
                self._controller = Controller(self)
            for index, (_, sources) in enumerate(inputs):
                node = FlowNode(step, index)
                node.predecessors = sources
                nodes.append(node)
                self._running[node] = None
            self._controller.launch(step, nodes, inputs)
            self._changed()
            return len(nodes)
        running = self._running
        submit = self.pool.run
        run_node, node_done = self._run_node, self._node_done
        for index, (args, sources) in enumerate(inputs):
            node = FlowNode(step, index)
            node.predecessors = sources
            nodes.append(node)
            running[node] = job = Job(run_node, None, node_done, (node, args), node.id, node)
            submit(job)
        self._changed()
        return len(nodes)

    def _run_node(self, node: FlowNode, args: list[Any], token: Any = None) -> Any:
        """
        The job of a node, in a worker: start it unless the flow is ending, time it, execute it.

        ``token`` is what ``nextpipe.cancelled()`` reads in the node's thread (see ``execute_node``).
        """
        with self.lock_running:  # so that no node turns running after _abort marked the flow failed
            if self._stopping or node not in self._running:
                raise _NotStarted()
            node.status = STATUS_RUNNING
            hooks = self._hooks
        self._changed()
        log_internal(f"Running node {node.id}")
        node._started = time.perf_counter()
        if hooks.node_start:
            hooks.emit("node_start", self.spec, node)
        return execute_node(self.spec, node, args, token)

    def _node_done(self, job: Job) -> None:
        # Runs in the worker that ran the node: it schedules what becomes ready and then takes the
        # next job itself, so a chain hands no work between threads and a failure stops queued nodes at once.
        node = job.reference
        node._finished = time.perf_counter()  # the done callback follows the node's code at once, in its worker
        if job.error is not None:
            self._node_failed(node, job.error)
            return
        self._node_ended(node, job.result)

    def _node_ended(
        self,
        node: FlowNode,
        result: Any,
        tolerated: BaseException | None = None,
        settle: Callable[[], bool] | None = None,
    ) -> None:
        """
        Record a node that succeeded, or that failed with ``tolerated`` without failing the flow
        (``@allow_failure``: its result is ``None``), and start what this makes ready. ``settle`` is
        called under the lock first: the controller settles the node's attempt there (its timer, its
        concurrency places); a false return (the attempt is no longer the node's live one) records nothing.
        """
        with self.lock_running:
            if self._stopping or (settle is not None and not settle()):
                return
            if self._running.pop(node, None) is None:  # an old run's node
                return
            node.result = result
            if tolerated is None:
                node.status = STATUS_SUCCEEDED
            else:
                node.status = STATUS_FAILED
                node.error = _error_text(tolerated)
            node.done = True
            step = node.parent
            self._open_nodes[step] -= 1
            ready = self._finish_step(step) if self._open_nodes[step] == 0 else None
            ended = self._steps_left == 0
            hooks = self._hooks
        self._changed()
        if tolerated is not None:
            if hooks.node_failure:
                hooks.emit("node_failure", self.spec, node, tolerated)
        elif hooks.node_success:
            hooks.emit("node_success", self.spec, node)
        if ready:
            ended = self._schedule(ready)
        if ended:
            self._ended.set()

    def _node_failed(self, node: FlowNode, error: BaseException) -> None:
        with self.lock_running:
            if self._stopping or self._running.pop(node, None) is None:  # also a node that did not start
                return
            text = _error_text(error)
            node.status = STATUS_FAILED
            node.error = text
            node.done = True
            step_id = node.parent.definition.get_id()
            failure = RuntimeError(f"Flow failed: Step {step_id} failed: {text}")
            failure.__cause__ = error
            self._stop(failure)
            hooks = self._hooks
        self._changed()
        log_internal(f"Step {step_id} failed in node {node.id} with {type(error).__name__}:\n{_user_traceback(error)}")
        if hooks.node_failure:
            hooks.emit("node_failure", self.spec, node, error)
        self._ended.set()

    def _stop(self, error: BaseException) -> None:
        """Let nothing new start and record the first reason the run fails (lock_running held)."""
        self._stopping = True
        if not self.fail:
            with self.lock_fail:
                self.fail = True
                self.fail_reason = _error_text(error).removeprefix("Flow failed: ")
            self._error = error

    def _abort(self, error: BaseException) -> None:
        """Stop everything after a failure or an interrupt: nothing new starts, running nodes are canceled."""
        with self.lock_running:
            self._stop(error)
            running = list(self._running)  # frozen from now on: completions are no longer recorded
        if self._controller is not None:
            self._controller.stop()  # no retry starts, no time limit fires
        now = time.perf_counter()
        for node in running:
            node.cancel = True
            node.status = STATUS_FAILED
            node.error = node.error or "canceled: the flow failed or was interrupted"
            node.done = True
            node._finished = now
        # One thread per app node, all at once and within one deadline: each waits for a run still being created
        # (its worker cancels it as soon as it exists), then cancels the run. A platform that does not answer
        # cannot hold the end of the flow longer than RUN_CANCEL_GRACE.
        cancels = [
            (node, threading.Thread(target=_cancel_run_of, args=(node,), name=f"{THREAD_NAME_PREFIX}{node.id}"))
            for node in running
            if node.run_created is not None or node.cancel_run is not None
        ]
        for _, thread in cancels:
            thread.daemon = True
            thread.start()
        deadline = time.monotonic() + RUN_CANCEL_GRACE
        for node, thread in cancels:
            thread.join(max(0.0, deadline - time.monotonic()))
            if not thread.is_alive():
                continue
            if node.run_created is not None and not node.run_created.is_set():
                log_internal(
                    f"Gave up waiting for the run of node {node.id} being created: it is canceled once it exists, "
                    "if this process still runs."
                )
            else:
                log_internal(f"Gave up waiting for the cancel request of node {node.id}.")
        self._changed()


def _cancel_run_of(node: FlowNode) -> None:
    """Cancel a node's run, once a run still being created exists (its worker sets ``run_created`` in any case)."""
    if node.run_created is not None:
        node.run_created.wait()
    if node.cancel_run is not None:
        node.cancel_run()


def _user_traceback(error: BaseException) -> str:
    """The exception with its traceback from the first frame outside nextpipe (just the exception if none is)."""
    tb: TracebackType | None = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb)).rstrip()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """In the main thread, turn SIGTERM into ``_Terminated``; afterwards deliver it again to the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or previous is None:  # ignored, or handled outside Python: leave it so
        yield
        return
    received = []

    def on_sigterm(signum: int, frame: Any) -> None:
        if not received:  # a second SIGTERM must not interrupt the cleanup of the first
            received.append(signum)
            raise _Terminated("stopped by SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if received:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.kill(os.getpid(), signal.SIGTERM)  # the default action ends the process with status 143


def _nothing() -> None:
    pass
