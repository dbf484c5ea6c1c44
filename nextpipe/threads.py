"""
A small thread pool whose workers are reused across jobs.

The runner submits one :class:`Job` per node and blocks in :meth:`Pool.wait_one`
until a job finishes, so the scheduler wakes up exactly when there is something
to do, never on a timer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from .utils import THREAD_NAME_PREFIX

DEFAULT_MAX_THREADS = 24
"""Number of worker threads of a pool created with ``max_threads <= 0``."""

thread_local = threading.local()
"""Storage private to each thread (a ``threading.local()``), kept for scripts written for the original."""


class Job:
    """
    A unit of work for a :class:`Pool`: a call of ``target`` with callbacks around it.

    Parameters
    ----------
    target : Callable
        The function to call, as ``target(*args)``.
    start_callback : Callable[[Job], None] or None
        Called with the job in the worker thread before ``target``; if it
        raises, ``target`` is not called and the exception becomes ``error``.
    done_callback : Callable[[Job], None] or None
        Called with the job in the worker thread once it finished, also when it failed.
    args : tuple, optional
        Positional arguments of ``target``.
    name : str, optional
        Name of the job; the worker thread is named ``nextpipe-<name>`` while it runs the job.
    reference : Any, optional
        Anything the submitter wants to find on the job when it is done (the runner puts the node here).

    Attributes
    ----------
    done : bool
        Whether the job has finished.
    result : Any
        What ``target`` returned.
    error : BaseException or None
        What ``target`` (or the start callback) raised.
    """

    _successor: Job | None = None  # set by Pool.run_next(): what the same worker runs next

    def __init__(
        self,
        target: Callable[..., Any],
        start_callback: Callable[[Job], None] | None,
        done_callback: Callable[[Job], None] | None,
        args: tuple | list | None = None,
        name: str | None = None,
        reference: Any = None,
    ):
        self.target = target
        self.start_callback = start_callback
        self.done_callback = done_callback
        self.args = tuple(args) if args is not None else ()
        self.name = name
        self.reference = reference
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return f"Job({self.name})"

    def run(self) -> None:
        """Run the job in the calling thread: start callback, target, done callback."""
        try:
            if self.start_callback is not None:
                self.start_callback(self)
            self.result = self.target(*self.args)
        except BaseException as error:  # noqa: B036 - a step calling sys.exit() must not kill the worker silently
            self.error = error
        finally:
            self.done = True
            if self.done_callback is not None:
                self.done_callback(self)


class Pool:
    """
    Runs jobs on at most ``max_threads`` worker threads, started as needed and reused.

    Parameters
    ----------
    max_threads : int, default=0
        Most worker threads; ``0`` or less means :data:`DEFAULT_MAX_THREADS`.
    keep_finished : bool, default=True
        Whether finished jobs are kept for :meth:`wait_one`; without, only their done callbacks tell.

    Attributes
    ----------
    threads_started : int
        How many worker threads the pool started so far.
    """

    def __init__(self, max_threads: int = 0, *, keep_finished: bool = True):
        self.max_threads = max_threads if max_threads > 0 else DEFAULT_MAX_THREADS
        self._work: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        # Finished jobs wait here for wait_one(); a submitter that learns of them from done callbacks opts out.
        self._finished: queue.SimpleQueue[Job] | None = queue.SimpleQueue() if keep_finished else None
        self._lock = threading.Lock()
        self._all_done = threading.Condition(self._lock)
        self._workers: list[threading.Thread] = []
        self._idle = 0  # workers waiting for a job
        self._queued = 0  # jobs submitted and not yet taken by a worker
        self._outstanding = 0  # jobs submitted and not yet finished
        self._detached: set[threading.Thread] = set()  # workers given up on; they end after their job
        self._closed = False  # shut down: jobs handed over by run_next() are dropped too
        self.threads_started = 0

    def run(self, job: Job) -> None:
        """
        Submit a job; it runs as soon as a worker is free.

        Parameters
        ----------
        job : Job
            The job to run.
        """
        with self._lock:
            self._queued += 1
            self._outstanding += 1
            if self._queued > self._idle and len(self._workers) < self.max_threads:
                self._start_worker()
        self._work.put(job)

    def run_next(self, job: Job, after: Job) -> None:
        """
        Submit a job for the worker running ``after`` to take once ``after`` finished, with no hand-off
        between threads (nor a thread woken); call it from ``after``'s done callback. If that worker
        was detached meanwhile, the job goes to the queue instead.

        Parameters
        ----------
        job : Job
            The job to run.
        after : Job
            The job whose done callback is running.
        """
        with self._lock:
            self._outstanding += 1
        after._successor = job

    def wait_one(self, timeout: float | None = None) -> Job | None:
        """
        Block until a submitted job finishes.

        Parameters
        ----------
        timeout : float, optional
            Most seconds to wait; forever by default.

        Returns
        -------
        Job or None
            The finished job, each one returned once; ``None`` when ``timeout`` passed first.
        """
        if self._finished is None:
            raise RuntimeError("this pool does not keep finished jobs (keep_finished=False)")
        try:
            return self._finished.get(timeout=timeout)
        except queue.Empty:
            return None

    def detach(self, worker: threading.Thread) -> None:
        """
        Give up on a worker busy with a job that may never return: it no longer counts towards
        ``max_threads`` (a replacement starts when jobs wait) and it ends once its job returns.

        Parameters
        ----------
        worker : threading.Thread
            A worker thread of this pool; others are ignored.
        """
        with self._lock:
            if worker not in self._workers:
                return
            self._workers.remove(worker)
            self._detached.add(worker)
            if self._queued > self._idle and len(self._workers) < self.max_threads:
                self._start_worker()

    def join(self) -> None:
        """Wait until every submitted job finished, then stop the workers."""
        with self._all_done:
            self._all_done.wait_for(lambda: self._outstanding == 0)
        self.shutdown(wait=True)

    def shutdown(self, wait: bool = True) -> None:
        """
        Stop the workers once they finished their current job; queued jobs that no worker took do not run.

        Parameters
        ----------
        wait : bool, default=True
            Whether to wait until the worker threads have ended.
        """
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
            # Drop jobs no worker has taken yet, so that sentinels are seen at once.
            while True:
                try:
                    job = self._work.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    self._queued -= 1
                    self._outstanding -= 1
            self._all_done.notify_all()
        for _ in workers:
            self._work.put(None)
        if wait:
            for worker in workers:
                if worker is not threading.current_thread():
                    worker.join()

    def _start_worker(self) -> None:
        worker = threading.Thread(
            target=self._work_loop, name=f"{THREAD_NAME_PREFIX}worker-{self.threads_started}", daemon=True
        )
        self._workers.append(worker)
        self.threads_started += 1
        worker.start()

    def _work_loop(self) -> None:
        thread = threading.current_thread()
        idle_name = thread.name
        while True:
            with self._lock:
                self._idle += 1
            job = self._work.get()
            with self._lock:
                self._idle -= 1
                if job is not None:
                    self._queued -= 1
            if job is None:
                return
            while job is not None:  # the job, then those handed to this worker by run_next()
                if job.name is not None:
                    thread.name = THREAD_NAME_PREFIX + job.name
                try:
                    job.run()
                finally:
                    thread.name = idle_name
                    successor = job._successor
                    with self._lock:
                        self._outstanding -= 1
                        detached = bool(self._detached) and thread in self._detached
                        if detached:
                            self._detached.discard(thread)
                        if successor is not None and (detached or self._closed):
                            self._outstanding -= 1  # submitted again below, or dropped like a queued job
                        if self._outstanding == 0:
                            self._all_done.notify_all()
                    if self._finished is not None:
                        self._finished.put(job)
                if detached:
                    if successor is not None and not self._closed:
                        self.run(successor)  # another worker takes it
                    return
                job = successor if not self._closed else None
