"""
Declaring and running a flow.

A flow is a subclass of :class:`FlowSpec` whose ``@step`` functions make up a
graph (:mod:`nextpipe.graph`) that a :class:`Runner` executes on a thread pool.
This module keeps the public names of the original ``nextpipe.flow``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import reporting
from ._runner import Runner
from .config import Configuration
from .constants import (
    ENV_APP_ID,
    ENV_RUN_ID,
    STATUS_FAILED,
    STATUS_PENDING,
    STATUS_RUNNING,
    STATUS_SUCCEEDED,
)
from .graph import FlowDefinitionError, FlowGraph, FlowNode, FlowStep, StepVisitor
from .hooks import RunHooks, check_hook, registered
from .uplink import UplinkClient, UplinkConfig
from .utils import log_internal

if TYPE_CHECKING:
    from .summary import RunSummary


class FlowSpec:
    """
    Base class of a flow: subclass it and declare the steps as ``@step`` functions.

    The graph is built and checked when the flow is constructed, so declaration
    mistakes surface here; :meth:`run` executes it.

    Parameters
    ----------
    name : str
        Name of the flow, shown in logs.
    input : Any
        The input of the steps without predecessors.
    conf : Configuration, optional
        How the flow runs; default ``Configuration()``.
    client : nextmv.cloud.Client, optional
        Client for app steps on Nextmv Cloud and for the uplink. Created from
        ``NEXTMV_API_KEY`` only when first needed, so flows without cloud app
        steps need no account.
    uplink_config : UplinkConfig, optional
        Where to report the flow's state; by default from ``NEXTMV_APP_ID`` and ``NEXTMV_RUN_ID``.

    Attributes
    ----------
    name : str
        Name of the flow.
    input : Any
        The flow's input.
    config : Configuration
        How the flow runs.
    graph : FlowGraph
        The flow's steps and, once it ran, their nodes.
    local_apps : dict of str to str
        App ids of the flow's app steps that run locally, mapped to their directories.
    run_cache : RunCache or None
        The run cache of the app steps that use it; ``None`` when none does.
    uplink : UplinkClient
        Reports the flow's state to the platform (inactive outside a Nextmv run).
    runner : Runner
        Executes the graph.

    Raises
    ------
    FlowDefinitionError
        When the flow class declares its steps in a way that cannot run; the message names the step and the fix.
    Exception
        For a cycle, or an app step with more than one predecessor (the original's messages).
    TypeError
        When ``conf`` or ``uplink_config`` has the wrong type.

    Examples
    --------
    >>> from nextpipe import FlowSpec, needs, step
    >>> class Flow(FlowSpec):
    ...     @step
    ...     def prepare(data: dict) -> dict:
    ...         return {"value": data["value"] + 1}
    ...
    ...     @needs(predecessors=[prepare])
    ...     @step
    ...     def double(data: dict) -> int:
    ...         return data["value"] * 2
    >>> flow = Flow("flow", {"value": 1})  # doctest: +SKIP
    >>> flow.run()  # doctest: +SKIP
    >>> flow.get_result(flow.double)  # doctest: +SKIP
    4
    """

    def __init__(
        self,
        name: str,
        input: Any,
        conf: Configuration | None = None,
        client: Any = None,
        uplink_config: UplinkConfig | None = None,
    ):
        if conf is not None and not isinstance(conf, Configuration):
            raise TypeError(
                f"Flow {name}: conf must be a Configuration, e.g. Configuration(thread_count=4); got {conf!r}."
            )
        if uplink_config is not None and not isinstance(uplink_config, UplinkConfig):
            raise TypeError(f"Flow {name}: uplink_config must be an UplinkConfig; got {uplink_config!r}.")
        self.name = name
        self.input = input
        self.config = conf if conf is not None else Configuration()
        self._client = client
        self.graph = FlowGraph(self)
        from ._apps import check_local_apps

        self.local_apps = check_local_apps(self.graph, self.config)
        self.run_cache = None
        if self.config.cache or any(s.definition.cache for s in self.graph.steps):
            from .run_cache import RunCache  # deferred: flows that use no cache never import it

            self.run_cache = RunCache.for_flow(self.graph, self.config)
        if uplink_config is None:
            uplink_config = UplinkConfig(application_id=os.environ.get(ENV_APP_ID), run_id=os.environ.get(ENV_RUN_ID))
        uplink_client = None
        if uplink_config.application_id and uplink_config.run_id:
            try:
                uplink_client = self.client
            except ValueError as error:  # no API key: report nothing rather than fail the flow
                log_internal(f"Not reporting the flow's state to the platform: {error}")
                uplink_config = UplinkConfig()
        self.uplink = UplinkClient(uplink_client, uplink_config)
        self.uplink.follow(self.graph._to_uplink_dto)
        self.uplink.notify_changed()
        self.runner = Runner(self, self.graph, self.config, self.uplink)

    @property
    def client(self) -> Any:
        """nextmv.cloud.Client: The Nextmv Cloud client, created on first use from the environment."""
        if self._client is None:
            from nextmv.cloud import Client

            self._client = Client()
        return self._client

    @client.setter
    def client(self, client: Any) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"Flow({self.name})"

    _hooks: tuple = ()  # this flow's own hooks (add_hook); a class-level empty default costs no constructor work

    def add_hook(self, hook: Any) -> None:
        """
        Call a hook on the events of this flow's runs, after the globally registered ones.

        Parameters
        ----------
        hook : nextpipe.hooks.FlowHooks
            An object with some of the methods of ``FlowHooks`` (see :mod:`nextpipe.hooks`).
            Adding it again does nothing.

        Raises
        ------
        TypeError
            When ``hook`` has none of the event methods.
        """
        check_hook(hook)
        if not any(h is hook for h in self._hooks):
            self._hooks = (*self._hooks, hook)

    def run(self) -> None:
        """
        Execute the flow and block until it ends.

        Every call starts from a clean state, so a flow can be run again. The
        run's hooks are the globally registered ones (``nextpipe.hooks.register``),
        then this flow's (:meth:`add_hook`), then the built-in reporting ones.
        Called in the main thread, it handles SIGTERM like Ctrl-C and then
        delivers it to the previous handler (by default, the process ends).

        Raises
        ------
        RuntimeError
            ``Flow failed: Step <id> failed: <error>`` when a step fails; the
            results of the steps that finished stay readable with :meth:`get_result`.
            Also when the flow is already running in another thread.
        Exception
            When a step's inputs cannot be prepared (see the user guide's errors page).
        KeyboardInterrupt
            On Ctrl-C, after running app runs were canceled.
        """
        self.runner.run(RunHooks([*registered(), *self._hooks, *reporting.default_hooks(self)]))

    def get_result(self, step: Any) -> Any:
        """
        Return the result of a step.

        Parameters
        ----------
        step : Callable
            The step function, e.g. ``flow.prepare``.

        Returns
        -------
        Any
            ``None`` while the step is not done; its result when it ran once;
            the list of its results (one per node) otherwise.

        Raises
        ------
        Exception
            When ``step`` is not a step function.
        """
        definition = getattr(step, "step", None)
        if definition is None or not hasattr(step, "is_step"):
            raise Exception(f"Step {step} does not have a step decorator.")
        flow_step = self.graph.get_step(definition)
        if not flow_step.done:
            return None
        nodes = flow_step.nodes
        return nodes[0].result if len(nodes) == 1 else [n.result for n in nodes]

    def summary(self) -> RunSummary:
        """
        Summarize the flow's latest run: its status and wall time, and per step node counts, durations and runs.

        Built from the graph's nodes when called, so it also works during a run,
        after a failed one, and with ``Configuration(summary=False)``.

        Returns
        -------
        nextpipe.summary.RunSummary
            A dataclass with ``to_dict()`` and ``to_json()``; its status is
            ``pending`` before the first run.
        """
        from .summary import summarize

        return summarize(self)


__all__ = [
    "STATUS_FAILED",
    "STATUS_PENDING",
    "STATUS_RUNNING",
    "STATUS_SUCCEEDED",
    "FlowDefinitionError",
    "FlowGraph",
    "FlowNode",
    "FlowSpec",
    "FlowStep",
    "Runner",
    "StepVisitor",
]
