"""
Controlled nodes: retries, time limits, tolerated failures and concurrency limits, applied for the runner.

Only the nodes of steps with such settings come here; the runner runs the
others on its direct path, which pays nothing for this module. Methods named
``_locked*`` run under the runner's ``lock_running``, as does every change of
the state below; timers fire on one thread (``Timers``). A node waiting for a
limit or a retry holds no worker thread. Final outcomes go back to the
runner (``_node_ended``, ``_node_failed``), which reports them to the hooks.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from ._execution import execute_node
from ._policy import Deadlines, Limiter, Timers, retry_delay, should_retry
from .errors import AppRunError, StepTimeoutError
from .graph import FlowNode, FlowStep
from .threads import Job
from .utils import THREAD_NAME_PREFIX, log


def needs_control(step: FlowStep, config: Any) -> bool:
    """
    Whether a step's nodes go through the controller.

    Parameters
    ----------
    step : FlowStep
        The step.
    config : Configuration
        The flow's configuration (``app_concurrency``, ``tolerate_failed_app_runs``).

    Returns
    -------
    bool
        True when the step has ``@retry``, ``@timeout``, ``@allow_failure`` or
        ``@concurrency``, or runs an app under an ``app_concurrency`` limit or
        with failed runs tolerated.
    """
    definition = step.definition
    if definition.retry or definition.timeout or definition.allow_failure or definition.concurrency:
        return True
    app_id = definition.get_app_id()
    return app_id is not None and (config.tolerate_failed_app_runs or app_id in (config.app_concurrency or {}))


class _Stopped(Exception):
    """Raised in a worker for an attempt that must not start because the flow already failed."""


class _StepControl:
    """The settings of one controlled step for one run, with its limiters."""

    __slots__ = ("allow_failure", "deadlines", "is_app", "limiters", "retry", "seconds", "tolerate_app_runs")

    def __init__(self, step: FlowStep, config: Any, limiters: tuple[Limiter, ...], deadlines: Deadlines | None):
        definition = step.definition
        self.retry = definition.retry
        self.deadlines = deadlines  # the time limits of the step's attempts, when it has @timeout
        self.seconds = deadlines.seconds if deadlines is not None else None
        self.allow_failure = definition.allow_failure is not None
        self.is_app = definition.is_app()
        self.tolerate_app_runs = self.is_app and config.tolerate_failed_app_runs
        self.limiters = limiters

    def tolerates(self, error: BaseException) -> bool:
        """Whether a final failure leaves the flow going: ``@allow_failure``, or 0.7.3's failed app runs."""
        return self.allow_failure or (
            self.tolerate_app_runs and isinstance(error, AppRunError) and error.status in ("failed", "canceled")
        )


class _Attempt:
    """
    One attempt of a controlled node; ``cancel`` is what ``nextpipe.cancelled()`` reads in its thread.

    ``finished`` is set once the runner decided the attempt's outcome (its worker may still run, abandoned);
    ``worker_done`` once its worker returned; ``follow_up`` is the next attempt, waiting for that worker.
    """

    # Class defaults: a new attempt sets four attributes only (the fan-out path makes one per node).
    thread: threading.Thread | None = None
    finished = False
    worker_done = False
    follow_up: _Attempt | None = None
    _cancel = False

    def __init__(self, node: FlowNode, args: list[Any], control: _StepControl, number: int):
        self.node = node
        self.args = args
        self.control = control
        self.number = number

    @property
    def cancel(self) -> bool:
        return self._cancel or self.node.cancel


class Controller:
    """
    Applies the control settings of a run's steps, on behalf of its runner.

    Parameters
    ----------
    runner : Runner
        The runner; its lock guards this controller's state.
    """

    def __init__(self, runner: Any):
        self.runner = runner
        self.timers = Timers()
        self._app_limiters = {app_id: Limiter(limit) for app_id, limit in (runner.config.app_concurrency or {}).items()}

    def stop(self) -> None:
        """End the timers: no retry starts and no time limit fires any more."""
        self.timers.stop()

    def launch(self, step: FlowStep, nodes: list[FlowNode], inputs: list[tuple[list[Any], Any]]) -> None:
        """
        Start the first attempts of a controlled step's nodes, or queue them behind their limits (lock held).

        Parameters
        ----------
        step : FlowStep
            The step.
        nodes : list of FlowNode
            Its nodes, already registered as running with the runner.
        inputs : list of (list, Any)
            Their input values (first of each pair), in the same order.
        """
        control = self._step_control(step)
        admit = self._locked_admit
        for node, (args, _) in zip(nodes, inputs, strict=True):
            admit(_Attempt(node, args, control, 1))

    def _step_control(self, step: FlowStep) -> _StepControl:
        definition = step.definition
        limiters = []
        if definition.concurrency is not None:
            limiters.append(Limiter(definition.concurrency.limit))
        app_id = definition.get_app_id()
        if app_id in self._app_limiters and definition.app.bypass_result is None:  # a bypass makes no run
            limiters.append(self._app_limiters[app_id])
        timeout = definition.timeout
        deadlines = Deadlines(self.timers, timeout.seconds, self._timed_out) if timeout is not None else None
        return _StepControl(step, self.runner.config, tuple(limiters), deadlines)

    # ---------------------------------------------------------------- limits

    def _locked_admit(self, attempt: _Attempt, after: Job | None = None) -> None:
        """
        Submit the attempt when every limit has room, else queue it at the first full one. With ``after``
        (a job whose done callback is running), the worker of that job takes the attempt next, with no hand-off.
        """
        limiters = attempt.control.limiters
        if limiters:
            for limiter in limiters:
                if limiter.active >= limiter.limit:
                    limiter.waiting.append(attempt)
                    return
            for limiter in limiters:
                limiter.active += 1
        node = attempt.node
        runner = self.runner
        started = self._started if attempt.control.seconds is not None else None
        target = runner._run_node if attempt.number == 1 else self._run_again
        runner._running[node] = job = Job(target, started, self._done, (node, attempt.args, attempt), node.id, node)
        if after is None:
            runner.pool.run(job)
        else:
            runner.pool.run_next(job, after)

    def _locked_release(self, attempt: _Attempt, after: Job | None = None) -> None:
        """
        Give back the attempt's places and admit the attempts waiting for them, in arrival order; the first
        one admitted runs next in the worker of ``after`` (see ``_locked_admit``), which saves a thread wake-up.
        """
        limiters = attempt.control.limiters
        for limiter in limiters:
            limiter.active -= 1
        if self.runner._stopping:
            return
        for limiter in limiters:
            while limiter.waiting and limiter.active < limiter.limit:
                self._locked_admit(limiter.waiting.popleft(), after)
                after = None

    def _live(self, node: FlowNode) -> bool:
        """Whether the node still belongs to a run that goes on (lock held)."""
        return not self.runner._stopping and node in self.runner._running

    # ---------------------------------------------------------------- an attempt's life

    def _run_again(self, node: FlowNode, args: list[Any], attempt: _Attempt) -> Any:
        """The job of a later attempt (the first one is the runner's ``_run_node``, which also starts the node)."""
        runner = self.runner
        with runner.lock_running:
            if not self._live(node):
                raise _Stopped()
            # The earlier attempt's worker is done: its run, if any (also one created after its time limit), is final.
            if node.run_id and node.run_id not in node._earlier_run_ids:
                node._earlier_run_ids = (*node._earlier_run_ids, node.run_id)
        log(f"Attempt {attempt.number} of {attempt.control.retry.attempts} started.", step_name=node.id)
        return execute_node(runner.spec, node, args, attempt)

    def _started(self, job: Job) -> None:
        """Start callback of a time-limited attempt: its limit starts."""
        attempt = job.args[2]
        attempt.thread = threading.current_thread()  # the worker to give up on at the limit
        attempt.control.deadlines.add(attempt)

    def _done(self, job: Job) -> None:
        attempt = job.args[2]
        node = attempt.node
        if job.error is None:
            control = attempt.control
            if control.seconds is None and not control.limiters:  # nothing to settle: no time limit races this
                node._finished = time.perf_counter()
                self.runner._node_ended(node, job.result)
            else:  # settled in the runner's lock section that records the result: one lock per node
                settle = functools.partial(self._locked_settle, attempt, job, time.perf_counter())
                self.runner._node_ended(node, job.result, settle=settle)
            return
        with self.runner.lock_running:
            if not self._locked_settle(attempt, job):
                return
            delay = self._locked_retry(attempt, job.error)
        self._conclude(attempt, job.error, delay)

    def _locked_settle(self, attempt: _Attempt, job: Job, finished: float | None = None) -> bool:
        """
        Settle an attempt whose worker returned: it no longer times out, and gives back its places. Return whether
        its outcome counts, that is whether it is still the live attempt of a node of a run that goes on;
        if so, ``finished`` (a ``perf_counter`` reading), when given, becomes the node's end.
        """
        attempt.worker_done = True
        node = attempt.node
        if attempt.finished:  # abandoned at its time limit: its outcome is decided, its result ignored
            if attempt.follow_up is not None and self._live(node):
                node.cancel = False
                self._locked_admit(attempt.follow_up)
            return False
        if not self._live(node):
            return False
        attempt.finished = True
        if attempt.control.limiters:
            self._locked_release(attempt, job)
        if finished is not None:
            node._finished = finished
        return True

    def _timed_out(self, attempt: _Attempt) -> None:
        if attempt.finished:  # most attempts end in time (read without the lock: it never turns false again)
            return
        node = attempt.node
        runner = self.runner
        with runner.lock_running:
            if attempt.finished or not self._live(node):
                return
            attempt.finished = True
            attempt._cancel = True
            if attempt.thread is not None:
                runner.pool.detach(attempt.thread)  # the pool keeps its capacity
            cancel_run = None
            if attempt.control.is_app:
                node.cancel = True  # stops polling; a run still being created is canceled once it exists
                cancel_run = node.cancel_run
        # Not on the timer thread, which serves every other limit and retry: canceling the run is a platform call
        # that may hang, and the outcome goes to the hooks.
        name = f"{THREAD_NAME_PREFIX}{node.id}"
        threading.Thread(target=self._end_timed_out, args=(attempt, cancel_run), name=name, daemon=True).start()

    def _end_timed_out(self, attempt: _Attempt, cancel_run: Callable[[], None] | None) -> None:
        """Cancel the timed-out attempt's run (when given), then retry, tolerate or fail the attempt."""
        node = attempt.node
        runner = self.runner
        error = StepTimeoutError(
            f"node {node.id} ran longer than its time limit of {attempt.control.seconds:g} s"
            + (f" (attempt {attempt.number})" if attempt.number > 1 else "")
        )
        try:
            if cancel_run is not None:  # done before the node's outcome
                cancel_run()
            with runner.lock_running:
                if not self._live(node):
                    return
                if attempt.control.limiters:
                    self._locked_release(attempt)
                delay = self._locked_retry(attempt, error)
            self._conclude(attempt, error, delay)
        except Exception as problem:  # never leave the flow waiting for a node nobody runs
            runner._node_failed(node, problem)

    # ---------------------------------------------------------------- outcomes

    def _locked_retry(self, attempt: _Attempt, error: BaseException) -> float | None:
        """The delay before the next attempt when the policy allows one, else None (a final failure)."""
        retry = attempt.control.retry
        if retry is None or attempt.number >= retry.attempts or not should_retry(retry, error):
            return None
        node = attempt.node
        delay = retry_delay(retry, attempt.number)
        log(
            f"Attempt {attempt.number} of {retry.attempts} failed ({type(error).__name__}: {error}); "
            f"retrying in {delay:.3g} s.",
            step_name=node.id,
        )  # under the lock, so that it comes before the next attempt's lines
        return delay

    def _conclude(self, attempt: _Attempt, error: BaseException, delay: float | None) -> None:
        """Act on a failed attempt: retry it after ``delay`` (when set), tolerate it, or fail the flow."""
        runner = self.runner
        node = attempt.node
        if delay is not None:
            runner._changed()
            hooks = runner._hooks
            if hooks.node_retry:
                hooks.emit("node_retry", runner.spec, node, error, attempt.number, delay)
            following = _Attempt(node, attempt.args, attempt.control, attempt.number + 1)
            self.timers.call_later(delay, self._retry, attempt, following)  # after the hooks saw the retry
            return
        node._finished = time.perf_counter()
        if attempt.control.tolerates(error):
            log(f"Failed ({type(error).__name__}: {error}); the flow goes on without its result.", step_name=node.id)
            runner._node_ended(node, None, error)
        else:
            runner._node_failed(node, error)

    def _retry(self, failed: _Attempt, following: _Attempt) -> None:
        node = failed.node
        with self.runner.lock_running:
            if not self._live(node):
                return
            if failed.control.is_app and not failed.worker_done:
                failed.follow_up = following  # an abandoned run is still being stopped: its worker starts this one
                return
            node.cancel = False
            self._locked_admit(following)
