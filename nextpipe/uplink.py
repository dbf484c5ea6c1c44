"""
Reporting a flow's graph and node states to the Nextmv platform.

When the workflow itself runs as a Nextmv application, the platform sets
``NEXTMV_APP_ID`` and ``NEXTMV_RUN_ID`` and shows the graph sent here in the
run's Flow tab. The :class:`UplinkClient` sends at most one update per
:data:`UPDATE_INTERVAL` while something changed, builds the document only
when it sends it, and delivers the final state when the flow ends.
"""

import datetime
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urljoin

from dataclasses_json import DataClassJsonMixin, config

from .constants import ENV_APP_ID, ENV_RUN_ID
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


def ExcludeIfNone(value: Any) -> bool:  # CamelCase: the original's public name
    """
    Tell dataclasses-json to leave a field out of ``to_dict``/``to_json`` when it is ``None``.

    Parameters
    ----------
    value : Any
        The field's value.

    Returns
    -------
    bool
        ``value is None``.
    """
    return value is None


_OMIT_NONE = config(exclude=ExcludeIfNone)


class _Document(DataClassJsonMixin):
    """
    dataclasses-json's API, with a ``to_dict`` fast enough for the uplink.

    dataclasses-json's own ``to_dict`` takes about a second for a graph of 10,000 nodes; the uplink builds one
    such document per update and one at the flow's end. The documents hold only strings, lists of strings and
    other documents, so the same dictionary is built directly, leaving out the fields whose ``exclude`` says so.
    """

    def to_dict(self, encode_json: bool = False) -> dict[str, Any]:
        """
        Convert to a dictionary of JSON values, as dataclasses-json's ``to_dict`` does.

        Parameters
        ----------
        encode_json : bool, default=False
            Accepted for dataclasses-json compatibility; the values are JSON values either way.

        Returns
        -------
        dict
            One key per field, without the fields that are ``None`` where that leaves them out.
        """
        document = {}
        for name, exclude in _document_fields(type(self)):
            value = getattr(self, name)
            if exclude is not None and exclude(value):
                continue
            if isinstance(value, list):
                value = [item.to_dict() if isinstance(item, _Document) else item for item in value]
            elif isinstance(value, _Document):
                value = value.to_dict()
            document[name] = value
        return document


@functools.cache
def _document_fields(cls: type) -> list[tuple[str, Callable[[Any], bool] | None]]:
    return [(f.name, f.metadata.get("dataclasses_json", {}).get("exclude")) for f in fields(cls)]


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
class StepDTO(_Document):
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
    docs: str | None = field(default=None, metadata=_OMIT_NONE)
    app_id: str | None = field(default=None, metadata=_OMIT_NONE)

    def __post_init__(self) -> None:
        if self.docs is not None and len(self.docs) > MAX_DOCS_LENGTH:
            self.docs = self.docs[:MAX_DOCS_LENGTH] + "..."


@dataclass
class NodeDTO(_Document):
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
    run_id: str | None = field(default=None, metadata=_OMIT_NONE)


@dataclass
class FlowDTO(_Document):
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


@dataclass
class FlowUpdateDTO(_Document):
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
    updated_at: str | None = field(default=None, metadata=_OMIT_NONE)

    def __post_init__(self) -> None:
        if self.updated_at is None:
            self.updated_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class UplinkClient:
    """
    Sends a flow's state to the platform from a background thread.

    Inactive (sending nothing) unless both the application id and the run id
    are known. Never fails the flow: failed requests are logged, retried with
    the next update, and after more than :data:`FAILED_UPDATES_THRESHOLD`
    consecutive failures the uplink stops.

    Every request is one attempt bounded by :data:`REQUEST_TIMEOUT`: it goes
    through a ``requests`` session of the uplink's own (the client's URL and
    headers, without the SDK's retry adapter, which over ``https://`` would
    retry a 429 for minutes inside one call). So whatever the platform does,
    :meth:`terminate` returns within :data:`FINAL_UPDATE_DEADLINE` seconds.

    Parameters
    ----------
    client : nextmv.cloud.Client or None
        The client whose URL and headers the requests use; may be ``None``
        when inactive. An object without ``url`` and ``headers`` (a test
        double) is called through its ``request(method, endpoint, payload)``.
    config : UplinkConfig, optional
        Where to report; by default ``NEXTMV_APP_ID`` and ``NEXTMV_RUN_ID``
        from the environment.

    Attributes
    ----------
    config : UplinkConfig
        Where the uplink reports to.
    client : nextmv.cloud.Client or None
        The client given.
    inactive : bool
        Whether the uplink sends nothing (application id or run id missing).
    updates_built : int
        How many update documents were built from the flow's state.
    updates_sent : int
        How many updates the platform accepted.
    failed_updates : int
        How many updates in a row failed.
    """

    def __init__(self, client: Any, config: UplinkConfig | None = None):
        if config is None:
            config = UplinkConfig(application_id=os.environ.get(ENV_APP_ID), run_id=os.environ.get(ENV_RUN_ID))
        self.config = config
        self.client = client
        self.inactive = not (config.application_id and config.run_id)
        self.updates_built = 0
        self.updates_sent = 0
        self.failed_updates = 0
        self._condition = threading.Condition()
        self._send_lock = threading.Lock()
        self._latest: FlowUpdateDTO | None = None
        self._source: Callable[[], FlowUpdateDTO] | None = None
        self._pending = False
        self._stop = threading.Event()
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._endpoint = f"v1/internal/applications/{config.application_id}/runs/{config.run_id}/flow"
        if self.inactive:
            log_internal("No application ID or run ID found, uplink is inactive.")

    @property
    def active(self) -> bool:
        """bool: Whether the uplink reports anything (``not inactive``)."""
        return not self.inactive

    @property
    def flow(self) -> dict[str, Any]:
        """dict: The latest state submitted (or built to be sent), as its JSON document; ``{}`` before any."""
        latest = self._latest
        return {} if latest is None else latest.to_dict()

    @property
    def changed(self) -> bool:
        """bool: Whether a state is waiting to be sent."""
        return self._pending

    def submit_update(self, flow_update: FlowUpdateDTO) -> None:
        """
        Queue a state to send with the next update (nothing happens when inactive).

        Parameters
        ----------
        flow_update : FlowUpdateDTO
            The state.

        Raises
        ------
        ValueError
            When the uplink is active and ``flow_update`` is not a :class:`FlowUpdateDTO`.
        """
        if self.inactive:
            return
        if not isinstance(flow_update, FlowUpdateDTO):
            raise ValueError(f"Expected FlowUpdateDTO, got {type(flow_update).__name__}")
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
        if self.inactive:
            return
        with self._condition:
            if self._thread is not None:
                return
            self._stop = threading.Event()
            self._thread = self._start(self._send_loop, self._stop)

    def terminate(self) -> None:
        """
        Stop sending updates and deliver the final state, retrying while the platform fails.

        Returns as soon as the platform accepted the final state, and after at
        most :data:`FINAL_UPDATE_DEADLINE` seconds whatever the platform does
        (errors, 429s, dropped connections, no answer at all).
        """
        if self.inactive:
            return
        with self._condition:
            thread, self._thread = self._thread, None
            self._deadline = time.monotonic() + FINAL_UPDATE_DEADLINE
            self._stop.set()
            self._condition.notify_all()
        if thread is None or not thread.is_alive():  # never started, or gave up: the final attempts need a thread
            thread = self._start(self._deliver_final)
        # The requests run on that thread: even a call that ignores its timeout (a hanging DNS lookup) cannot hold us.
        thread.join(max(0.0, self._deadline - time.monotonic()))
        if thread.is_alive():
            log_internal(f"Gave up delivering the flow's final state after {FINAL_UPDATE_DEADLINE:g} s.")

    def _start(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name="nextpipe-uplink", daemon=True)
        thread.start()
        return thread

    def _current(self) -> FlowUpdateDTO | None:
        with self._condition:
            self._pending = False
        if self._source is None:
            return self._latest
        self.updates_built += 1
        self._latest = self._source()
        return self._latest

    def _send(self, update: FlowUpdateDTO | None, timeout: float) -> bool:
        if update is None:
            return True
        if not self._send_lock.acquire(timeout=timeout):  # another thread's request still hangs
            return False
        try:
            self._put(update.to_dict(), timeout)
        except Exception as error:  # any failure is the platform's, never the flow's
            self.failed_updates += 1
            log_internal(f"Failed to update the flow's state on the platform ({type(error).__name__}): {error}")
            return False
        finally:
            self._send_lock.release()
        self.failed_updates = 0
        self.updates_sent += 1
        return True

    def _put(self, payload: dict[str, Any], timeout: float) -> None:
        url, headers = getattr(self.client, "url", None), getattr(self.client, "headers", None)
        if url is None or headers is None:
            self.client.request(method="PUT", endpoint=self._endpoint, payload=payload)
            return
        if self._session is None:
            import requests  # only an active uplink needs it

            self._session = requests.Session()
        response = self._session.put(
            urljoin(url, self._endpoint),
            data=json.dumps(payload, separators=(",", ":")),
            headers=headers,
            timeout=timeout,
        )
        response.raise_for_status()

    def _send_loop(self, stop: threading.Event) -> None:
        next_allowed = 0.0
        while True:
            with self._condition:
                while not stop.is_set() and (not self._pending or time.monotonic() < next_allowed):
                    self._condition.wait(None if not self._pending else next_allowed - time.monotonic())
                if stop.is_set():
                    break
            ok = self._send(self._current(), REQUEST_TIMEOUT)
            next_allowed = time.monotonic() + UPDATE_INTERVAL
            if not ok:
                if self.failed_updates > FAILED_UPDATES_THRESHOLD:
                    log_internal("Giving up updating the flow's state on the platform.")
                    return
                with self._condition:
                    self._pending = True
        self._deliver_final()

    def _deliver_final(self) -> None:
        deadline = self._deadline
        attempts = 1 if self.failed_updates > FAILED_UPDATES_THRESHOLD else FINAL_UPDATE_ATTEMPTS
        pause = FINAL_UPDATE_FIRST_PAUSE
        try:
            for attempt in range(attempts):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self._send(self._current(), min(REQUEST_TIMEOUT, remaining)):
                    return
                if attempt + 1 == attempts or time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
                pause *= 2
            log_internal("Could not deliver the flow's final state to the platform.")
        finally:
            if self._session is not None:
                self._session.close()  # a later run opens new connections
