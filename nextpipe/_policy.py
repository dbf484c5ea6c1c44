"""
Policies of controlled steps, free of scheduling: retry delays and filters, concurrency limiters, timers.

The runner's controller (``nextpipe._control``) applies them; they know nothing of flows.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .decorators import Retry
from .utils import THREAD_NAME_PREFIX, log_internal


def retry_delay(retry: Retry, failed_attempts: int) -> float:
    """
    Seconds to wait before the next attempt.

    Parameters
    ----------
    retry : Retry
        The step's policy.
    failed_attempts : int
        How many attempts failed so far (1 or more).

    Returns
    -------
    float
        ``delay * backoff ** (failed_attempts - 1)``, capped at ``max_delay``, then spread by ``jitter``.
    """
    try:
        delay = retry.delay * retry.backoff ** (failed_attempts - 1)
    except OverflowError:  # a huge power: no wait stays no wait
        delay = float("inf") if retry.delay else 0.0
    if retry.max_delay is not None:
        delay = min(delay, retry.max_delay)
    if retry.jitter:
        delay *= random.uniform(1 - retry.jitter, 1 + retry.jitter)
    return delay


def should_retry(retry: Retry, error: BaseException) -> bool:
    """
    Whether a failure matches the policy's ``retry_on`` filter.

    Parameters
    ----------
    retry : Retry
        The step's policy.
    error : BaseException
        Why the attempt failed.

    Returns
    -------
    bool
        True when ``error`` is an instance of one of the exception types, or a
        predicate returns true for it. A predicate that raises counts as false
        (and is logged).
    """
    for condition in retry.retry_on:
        if isinstance(condition, type):
            if isinstance(error, condition):
                return True
            continue
        try:
            if condition(error):
                return True
        except Exception as problem:
            log_internal(f"The retry_on predicate {condition!r} raised {type(problem).__name__}: {problem}")
    return False


class Limiter:
    """
    A concurrency limit: how many holders are active and who waits, in arrival order.

    The caller serializes all access (the runner's lock).

    Parameters
    ----------
    limit : int
        Most active holders.
    """

    __slots__ = ("active", "limit", "waiting")

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self.waiting: deque[Any] = deque()

    def __repr__(self) -> str:
        return f"Limiter({self.active}/{self.limit}, {len(self.waiting)} waiting)"


class Timers:
    """
    Calls functions at given times on one thread, started on first use.

    One thread serves every retry delay and time limit of a run, so that ten
    thousand time-limited nodes do not make ten thousand threads.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple]] = []  # (deadline, tie-breaker, callback, args)
        self._sequence = itertools.count()  # ties never compare the callbacks
        self._lock = threading.Lock()  # taken directly where no wait or notify follows (cheaper than the condition)
        self._condition = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopped = False

    def call_later(self, seconds: float, callback: Callable[..., None], *args: Any) -> None:
        """
        Call ``callback(*args)`` in the timer thread after ``seconds``.

        A push is O(log n) in the pending calls and wakes the timer thread
        only when the new call is due before all others.

        Parameters
        ----------
        seconds : float
            Delay in seconds.
        callback : Callable
            What to call; an exception it raises is logged.
        *args : Any
            Its arguments.
        """
        entry = (time.monotonic() + seconds, next(self._sequence), callback, args)
        with self._lock:
            if self._stopped:
                return
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"{THREAD_NAME_PREFIX}timers", daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:
                self._condition.notify()

    def stop(self) -> None:
        """Drop every pending call and end the thread; later calls of :meth:`call_later` do nothing."""
        with self._condition:
            self._stopped = True
            self._heap.clear()
            self._condition.notify()

    def _loop(self) -> None:
        while True:
            with self._condition:
                while True:
                    if self._stopped:
                        return
                    if not self._heap:
                        self._condition.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _, _, callback, args = heapq.heappop(self._heap)
                        break
                    self._condition.wait(wait)
            try:
                callback(*args)
            except Exception as error:  # a timer must outlive one bad callback
                log_internal(f"A timed action failed: {type(error).__name__}: {error}")


class Deadlines:
    """
    Time limits of one length, served by a :class:`Timers` thread.

    Items are kept in the order they were added, which is also the order
    their limits come due, so a start is an append (no heap, no timer entry
    of its own) and the timer thread is armed for the first pending item
    only. Every item comes due, also one whose work ended in time: the
    ``expire`` callback tells them apart.

    Parameters
    ----------
    timers : Timers
        The thread that waits.
    seconds : float
        The limit, in seconds.
    expire : Callable[[Any], None]
        Called in the timer thread with each item whose limit passed, in order.
    """

    def __init__(self, timers: Timers, seconds: float, expire: Callable[[Any], None]):
        self.seconds = seconds
        self._timers = timers
        self._expire = expire
        self._items: deque[tuple[float, Any]] = deque()  # (deadline, item), deadlines ascending
        self._lock = threading.Lock()
        self._armed = False  # a call of _check is pending

    def add(self, item: Any) -> None:
        """
        Start the limit of ``item`` now.

        Parameters
        ----------
        item : Any
            What ``expire`` receives once the limit passed.
        """
        with self._lock:
            self._items.append((time.monotonic() + self.seconds, item))
            if self._armed:
                return
            self._armed = True
        self._timers.call_later(self.seconds, self._check)

    def _check(self) -> None:
        now = time.monotonic()
        due = []
        with self._lock:
            items = self._items
            while items and items[0][0] <= now:
                due.append(items.popleft()[1])
            wait = items[0][0] - now if items else None
            self._armed = wait is not None
        if wait is not None:
            self._timers.call_later(wait, self._check)
        for item in due:
            try:
                self._expire(item)
            except Exception as error:  # the others still come due
                log_internal(f"A timed action failed: {type(error).__name__}: {error}")
