"""
Hooks: callbacks on a flow run's events.

A hook is any object with some of the methods of :class:`FlowHooks` (subclass
it and override what you need). Register it for every flow with
:func:`register`, or for one flow with ``FlowSpec.add_hook``. The runner calls
the hooks of a run in registration order: the global ones, then the flow's
own, then the built-in reporting hooks; each from the thread where the event
happens (a node's worker for node events). An exception in a hook is logged
once per hook and event and never fails the flow.

The run summary, the live progress display and tracing are built on these
hooks; when no hook is registered the runner does no work for them.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from .utils import log_internal


class FlowHooks:
    """
    Base class of hooks: every method does nothing; override the ones you need.

    Every method receives the ``flow`` (the ``FlowSpec``); node events also
    receive the ``node`` (a ``nextpipe.flow.FlowNode``, whose ``started_at``,
    ``finished_at`` and ``duration`` are set by the runner).
    """

    def flow_start(self, flow: Any) -> None:
        """
        Called when ``run()`` starts, before any node starts.

        Parameters
        ----------
        flow : FlowSpec
            The flow being run.
        """

    def flow_end(self, flow: Any, error: BaseException | None) -> None:
        """
        Called when ``run()`` ends, also when it fails or is interrupted.

        Parameters
        ----------
        flow : FlowSpec
            The flow that ran.
        error : BaseException or None
            What ``run()`` raises (a ``KeyboardInterrupt`` for Ctrl-C and SIGTERM); ``None`` on success.
        """

    def node_start(self, flow: Any, node: Any) -> None:
        """
        Called when a node starts running, in the node's worker thread.

        Parameters
        ----------
        flow : FlowSpec
            The flow being run.
        node : FlowNode
            The node; its status is ``running`` and ``started_at`` is set.
        """

    def node_skip(self, flow: Any, node: Any) -> None:
        """
        Called for the single node of a step skipped by ``@optional``.

        Parameters
        ----------
        flow : FlowSpec
            The flow being run.
        node : FlowNode
            The skipped step's node (status ``succeeded``, no result, ``duration`` 0.0).
        """

    def node_success(self, flow: Any, node: Any) -> None:
        """
        Called when a node succeeded, in the node's worker thread.

        Parameters
        ----------
        flow : FlowSpec
            The flow being run.
        node : FlowNode
            The node; its ``result``, ``finished_at`` and ``duration`` (seconds) are set.
        """

    def node_failure(self, flow: Any, node: Any, error: BaseException) -> None:
        """
        Called when a node failed, before the flow fails, in the node's worker thread.

        Parameters
        ----------
        flow : FlowSpec
            The flow being run.
        node : FlowNode
            The node; its ``error`` (text), ``finished_at`` and ``duration`` (seconds) are set.
        error : BaseException
            What the node raised.
        """

    def node_retry(self, flow: Any, node: Any, error: BaseException, attempt: int, delay: float) -> None:
        """
        Called when an attempt of a node failed and the node is tried again.

        Parameters
        ----------
        flow : FlowSpec
            The flow being run.
        node : FlowNode
            The node, still ``running``.
        error : BaseException
            What the failed attempt raised.
        attempt : int
            The number of the failed attempt, from 1.
        delay : float
            Seconds until the next attempt starts.
        """


EVENTS = ("flow_start", "flow_end", "node_start", "node_skip", "node_success", "node_failure", "node_retry")
"""The names of the events, which are the method names of :class:`FlowHooks`."""

_registered: list[Any] = []
_registered_lock = threading.Lock()


def register(hook: Any) -> None:
    """
    Register a hook for the runs of every flow, from the next ``run()`` on.

    Parameters
    ----------
    hook : FlowHooks
        An object with some of the methods of :class:`FlowHooks`. Registering
        it again does nothing.

    Raises
    ------
    TypeError
        When ``hook`` has none of the event methods (see :data:`EVENTS`).
    """
    check_hook(hook)
    with _registered_lock:
        if not any(h is hook for h in _registered):
            _registered.append(hook)


def unregister(hook: Any) -> None:
    """
    Stop calling a hook registered with :func:`register`, from the next ``run()`` on.

    Parameters
    ----------
    hook : FlowHooks
        The hook; one that is not registered is ignored.
    """
    with _registered_lock:
        _registered[:] = [h for h in _registered if h is not hook]


def registered() -> list[Any]:
    """
    Return the hooks registered for every flow.

    Returns
    -------
    list of FlowHooks
        The hooks, in registration order (a copy).
    """
    with _registered_lock:
        return list(_registered)


def check_hook(hook: Any) -> None:
    """
    Refuse an object that cannot be a hook.

    Parameters
    ----------
    hook : Any
        The candidate.

    Raises
    ------
    TypeError
        When ``hook`` is a class or has none of the event methods.
    """
    if isinstance(hook, type) or not any(callable(getattr(hook, name, None)) for name in EVENTS):
        raise TypeError(
            f"{hook!r} is not a hook: pass an instance of a nextpipe.hooks.FlowHooks subclass that overrides "
            f"some of {', '.join(EVENTS)}."
        )


def _overrides(hook: Any, name: str) -> Callable[..., None] | None:
    """The hook's method for an event, or None when it has none or it is FlowHooks' own (which does nothing)."""
    method = getattr(hook, name, None)
    if not callable(method) or getattr(method, "__func__", None) is getattr(FlowHooks, name):
        return None
    return method


class RunHooks:
    """
    The hooks of one run, sorted by event: the runner's dispatch.

    Each event has a list attribute of the same name holding only the methods
    that do something, so that the runner checks ``if hooks.node_start:``
    (a list's truthiness) and pays nothing more when nobody listens.

    Parameters
    ----------
    hooks : iterable of FlowHooks
        The run's hooks, in calling order; a hook given twice is called once, at its first place.

    Attributes
    ----------
    flow_start, flow_end, node_start, node_skip, node_success, node_failure, node_retry : list of Callable
        The hooks' methods for that event, in calling order.
    """

    def __init__(self, hooks: Iterable[Any] = ()):
        hooks = list({id(hook): hook for hook in hooks}.values())  # registered and added to the flow: called once
        for hook in hooks:
            check_hook(hook)
        for name in EVENTS:
            setattr(self, name, [m for m in (_overrides(h, name) for h in hooks) if m is not None])
        self._reported: set[tuple[int, str]] = set()
        self._lock = threading.Lock()

    def emit(self, event: str, *args: Any) -> None:
        """
        Call every hook's method for an event, in order; a hook that raises is logged and skipped.

        In the main thread, ``KeyboardInterrupt`` and ``SystemExit`` propagate; in a worker, whose
        thread they would end without ending the run, they are logged like any error.

        Parameters
        ----------
        event : str
            One of :data:`EVENTS`.
        *args : Any
            The method's arguments (see :class:`FlowHooks`).
        """
        for method in getattr(self, event):
            try:
                method(*args)
            except BaseException as error:
                # Ctrl-C or sys.exit() in the thread of run() is the user's; in a worker it would stop the run.
                if not isinstance(error, Exception) and threading.current_thread() is threading.main_thread():
                    raise
                self._report(method, event, error)

    def _report(self, method: Callable[..., None], event: str, error: BaseException) -> None:
        hook = getattr(method, "__self__", method)
        with self._lock:
            if (id(hook), event) in self._reported:
                return
            self._reported.add((id(hook), event))
        details = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
        log_internal(
            f"Hook {type(hook).__name__}.{event} raised {type(error).__name__} (the flow goes on; "
            f"further errors of this hook in {event} are not logged):\n{details}"
        )
