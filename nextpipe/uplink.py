"""
Reporting a flow's graph and node states to the Nextmv platform.

When the workflow itself runs as a Nextmv application, the platform sets
``NEXTMV_APP_ID`` and ``NEXTMV_RUN_ID`` and shows the graph sent here in the
run's Flow tab. The :class:`UplinkClient` sends at most one update per
:data:`UPDATE_INTERVAL` while something changed, builds the document only
when it sends it, and delivers the final state when the flow ends.
"""

from __future__ import annotations

import copy
import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .utils import log_internal

FAILED_UPDATES_THRESHOLD = 10
"""Consecutive failed updates after which the uplink stops sending."""

UPDATE_INTERVAL = 5
"""Seconds between two updates sent while the flow runs."""

MAX_DOCS_LENGTH = 1000
"""Longest step documentation sent; longer text is cut and suffixed with ``...``."""

FINAL_UPDATE_ATTEMPTS = 6
"""Most attempts to deliver the final state, with doubling pauses between them."""

FINAL_UPDATE_FIRST_PAUSE = 0.25
"""Seconds between the first and the second attempt to deliver the final state."""

FINAL_UPDATE_DEADLINE = 6.0
"""Seconds after which no new attempt to deliver the final state starts."""

REQUEST_TIMEOUT = 5.0
"""Upper bound in seconds of one request of the uplink (the SDK's default is 20 s)."""


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


@dataclass
class UplinkConfig:
    """
    Where the uplink reports to.

    Parameters
    ----------
    application_id : str, optional
        Id of the application the workflow runs as (``NEXTMV_APP_ID``).
    run_id : str, optional
        Id of the workflow's run (``NEXTMV_RUN_ID``).
    """

    application_id: str | None = None
    run_id: str | None = None


@dataclass
class StepDTO:
    """
    A step as the platform shows it.

    Parameters
    ----------
    id : str
        The step's id.
    predecessors : list of str
        Ids of the step's predecessors.
    docs : str, optional
        The step's docstring, cut to :data:`MAX_DOCS_LENGTH` characters plus ``...``.
    app_id : str, optional
        The application an app step runs.
    """

    id: str
    predecessors: list[str] = field(default_factory=list)
    docs: str | None = None
    app_id: str | None = None

    def __post_init__(self) -> None:
        if self.docs is not None and len(self.docs) > MAX_DOCS_LENGTH:
            self.docs = self.docs[:MAX_DOCS_LENGTH] + "..."

    def to_dict(self) -> dict[str, Any]:
        """dict: The JSON document, without keys whose value is ``None``."""
        return _without_none(
            {"id": self.id, "predecessors": list(self.predecessors), "docs": self.docs, "app_id": self.app_id}
        )


@dataclass
class NodeDTO:
    """
    A node (one execution of a step) as the platform shows it.

    Parameters
    ----------
    id : str
        The node's id.
    parent_id : str
        Id of the node's step.
    predecessor_ids : list of str
        Ids of the nodes whose results fed this node.
    status : str
        ``pending``, ``running``, ``succeeded`` or ``failed``.
    run_id : str, optional
        Id of the app run the node made.
    """

    id: str
    parent_id: str
    predecessor_ids: list[str] = field(default_factory=list)
    status: str = "pending"
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """dict: The JSON document, without keys whose value is ``None``."""
        return _without_none(
            {
                "id": self.id,
                "parent_id": self.parent_id,
                "predecessor_ids": list(self.predecessor_ids),
                "status": self.status,
                "run_id": self.run_id,
            }
        )


@dataclass
class FlowDTO:
    """
    A flow's graph: its steps and their nodes.

    Parameters
    ----------
    steps : list of StepDTO
        The steps.
    nodes : list of NodeDTO
        The nodes.
    """

    steps: list[StepDTO] = field(default_factory=list)
    nodes: list[NodeDTO] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """dict: The JSON document."""
        return {"steps": [s.to_dict() for s in self.steps], "nodes": [n.to_dict() for n in self.nodes]}


@dataclass
class FlowUpdateDTO:
    """
    One update of a flow's state, the body of the uplink's request.

    Parameters
    ----------
    pipeline_graph : FlowDTO
        The graph with its nodes' states.
    updated_at : str, optional
        RFC 3339 UTC time of the state; now by default.
    """

    pipeline_graph: FlowDTO
    updated_at: str | None = None

    def __post_init__(self) -> None:
        if self.updated_at is None:
            self.updated_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")

    def to_dict(self) -> dict[str, Any]:
        """dict: The JSON document."""
        return _without_none({"pipeline_graph": self.pipeline_graph.to_dict(), "updated_at": self.updated_at})


class UplinkClient:
    """
    Sends a flow's state to the platform from a background thread.

    Inactive (sending nothing) unless both ``config.application_id`` and
    ``config.run_id`` are set. Never fails the flow: failed requests are
    logged, retried with the next update, and after more than
    :data:`FAILED_UPDATES_THRESHOLD` consecutive failures the uplink stops.

    Parameters
    ----------
    client : nextmv.cloud.Client or None
        The client the requests go through; may be ``None`` when inactive.
    config : UplinkConfig
        Where to report.

    Attributes
    ----------
    active : bool
        Whether the uplink reports anything.
    updates_built : int
        How many update documents were built from the flow's state.
    updates_sent : int
        How many updates the platform accepted.
    failed_updates : int
        How many updates in a row failed.
    """

    def __init__(self, client: Any, config: UplinkConfig):
        self.config = config
        self.active = bool(config.application_id and config.run_id)
        self.client = client
        if self.active and client is not None and hasattr(client, "timeout"):
            # Our own copy with a short timeout: the uplink must never hold the flow's end for long.
            self.client = copy.copy(client)
            self.client.timeout = min(client.timeout, REQUEST_TIMEOUT)
        self.updates_built = 0
        self.updates_sent = 0
        self.failed_updates = 0
        self._condition = threading.Condition()
        self._send_lock = threading.Lock()
        self._latest: FlowUpdateDTO | None = None
        self._source: Callable[[], FlowUpdateDTO] | None = None
        self._pending = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._endpoint = f"v1/internal/applications/{config.application_id}/runs/{config.run_id}/flow"

    def submit_update(self, flow_update: FlowUpdateDTO) -> None:
        """
        Queue a state to send with the next update.

        Parameters
        ----------
        flow_update : FlowUpdateDTO
            The state.

        Raises
        ------
        ValueError
            When ``flow_update`` is not a :class:`FlowUpdateDTO`.
        """
        if not isinstance(flow_update, FlowUpdateDTO):
            raise ValueError(f"Expected FlowUpdateDTO, got {type(flow_update).__name__}")
        if not self.active:
            return
        with self._condition:
            self._latest = flow_update
            self._pending = True
            self._condition.notify()

    def follow(self, source: Callable[[], FlowUpdateDTO]) -> None:
        """
        Take updates from a function that builds the current state, called only when an update is sent.

        Parameters
        ----------
        source : Callable[[], FlowUpdateDTO]
            Builds the current state.
        """
        self._source = source

    def notify_changed(self) -> None:
        """Mark the state as changed; the followed source is read at the next update."""
        with self._condition:
            if not self._pending:
                self._pending = True
                self._condition.notify()

    def run_async(self) -> None:
        """Start sending updates from a background thread (does nothing when inactive or started)."""
        if not self.active or self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._send_loop, name="nextpipe-uplink", daemon=True)
        self._thread.start()

    def terminate(self) -> None:
        """Stop the background thread and send the final state, retrying for a few seconds if the platform fails."""
        if not self.active:
            return
        with self._condition:
            self._stopping = True
            self._condition.notify()
        # One budget for everything below, so that a platform that never answers delays the flow's end boundedly.
        deadline = time.monotonic() + FINAL_UPDATE_DEADLINE
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            self._thread = None
        gave_up = self.failed_updates > FAILED_UPDATES_THRESHOLD
        pause = FINAL_UPDATE_FIRST_PAUSE
        for attempt in range(1 if gave_up else FINAL_UPDATE_ATTEMPTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._send(self._current(), timeout=min(REQUEST_TIMEOUT, remaining)):
                return
            if attempt + 1 == FINAL_UPDATE_ATTEMPTS or time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
            pause *= 2
        log_internal("Could not deliver the flow's final state to the platform.")

    def _current(self) -> FlowUpdateDTO | None:
        with self._condition:
            self._pending = False
            latest = self._latest
        if self._source is None:
            return latest
        self.updates_built += 1
        return self._source()

    def _send(self, update: FlowUpdateDTO | None, timeout: float = REQUEST_TIMEOUT) -> bool:
        if update is None:
            return True
        if not self._send_lock.acquire(timeout=timeout):  # the loop's request still hangs
            return False
        try:
            if hasattr(self.client, "timeout"):
                self.client.timeout = timeout
            try:
                self.client.request(method="PUT", endpoint=self._endpoint, payload=update.to_dict())
            except Exception as error:  # any failure is the platform's, never the flow's
                self.failed_updates += 1
                log_internal(f"Failed to update the flow's state on the platform ({type(error).__name__}): {error}")
                return False
        finally:
            self._send_lock.release()
        self.failed_updates = 0
        self.updates_sent += 1
        return True

    def _send_loop(self) -> None:
        next_allowed = 0.0
        while True:
            with self._condition:
                while not self._stopping and (not self._pending or time.monotonic() < next_allowed):
                    self._condition.wait(None if not self._pending else next_allowed - time.monotonic())
                if self._stopping:
                    return
            ok = self._send(self._current())
            next_allowed = time.monotonic() + UPDATE_INTERVAL
            if not ok:
                if self.failed_updates > FAILED_UPDATES_THRESHOLD:
                    log_internal("Giving up updating the flow's state on the platform.")
                    return
                with self._condition:
                    self._pending = True
