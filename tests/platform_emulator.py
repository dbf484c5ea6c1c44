"""
A small, real HTTP server that emulates the Nextmv Cloud API as the ``nextmv`` SDK uses it.

Tests point the real SDK at the emulator (``nextmv.cloud.Client(api_key="dummy", url=emu.url)`` or the
``NEXTMV_ENDPOINT`` / ``NEXTMV_API_KEY`` environment variables) and then inspect what was sent, steer how
emulated runs behave, and inject faults.

Emulated endpoints (paths as the SDK 1.13 builds them):

- ``GET  /v1/applications/{app}``: the application (``Application.get``), with its default instance.
- ``GET  /v1/applications/{app}/instances/{instance}``: an instance and the app version it runs
  (``Application.instance``); any instance exists, running version ``""`` unless :meth:`set_instance` says otherwise.
- ``POST /v1/applications/{app}/runs[?instance_id=...]``: new run, answers ``{"run_id"}``.
- ``POST /v1/applications/{app}/runs/uploadurl``: ``{"upload_id", "upload_url"}``; the URL points back at the
  emulator (``PUT /upload/{upload_id}``, no authorization needed, like a presigned URL).
- ``GET  /v1/applications/{app}/runs/{run}/metadata``: run information (no output).
- ``GET  /v1/applications/{app}/runs/{run}[?format=url]``: run result; with ``format=url`` the output is
  ``{"url": ...}``.
- ``GET  /v1/applications/{app}/runs/{run}/output[?format=url]``: the output, or ``{"url": ...}`` whose
  ``GET /download/{run}/output`` gives the JSON bytes or a tar.gz of the output files.
- ``GET  /v1/applications/{app}/runs/{run}/input[?format=url]``: the input, likewise.
- ``GET  /v1/applications/{app}/runs/{run}/logs`` and ``.../logs/live[?since=token]``: logs.
- ``PATCH /v1/applications/{app}/runs/{run}/cancel``: cancels the run.
- ``DELETE /v1/applications/{app}/runs/{run}``: deletes the run (``Application.delete_run``); it is then ``404``.
- ``PUT  /v1/internal/applications/{app}/runs/{run}/flow``: records a flow update (``emu.flow_updates``).
- Anything else: ``404`` (``405`` for a known path with another method) with a JSON error, recorded.

Examples
--------
>>> with PlatformEmulator() as emu:  # doctest: +SKIP
...     client = nextmv.cloud.Client(api_key="dummy", url=emu.url)
...     app = nextmv.cloud.Application(client=client, id="echo")
...     run_id = app.new_run(input={"x": 1})
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import io
import json
import math
import re
import socket
import ssl
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "DEFAULT_APP",
    "AppBehavior",
    "FlowUpdateRecord",
    "Handler",
    "PlatformEmulator",
    "RequestRecord",
    "RunFailure",
    "RunRecord",
    "echo_handler",
]

Handler = Callable[[Any, dict[str, str], dict[str, bytes]], Any]
"""``handler(input, options, files) -> output``: computes an emulated run's outcome.

``input`` is the JSON (or text) input, ``None`` for a multi-file input; ``options`` the run's options
(``dict[str, str]``); ``files`` the multi-file input (relative path -> bytes), empty for a JSON input.
Return a ``dict`` for a JSON output, a ``dict[str, bytes]`` for a multi-file output, or raise (or return) a
:class:`RunFailure` (any exception works) to make the run fail with that message.
"""

DEFAULT_APP = "*"
"""Application id under which :meth:`PlatformEmulator.set_app_behavior` sets the default behaviour."""

FINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
"""Values of ``status_v2`` after which a run never changes."""

_GZIP_MAGIC = b"\x1f\x8b"
_FILE_FORMATS = frozenset({"multi-file", "csv-archive"})


class RunFailure(Exception):
    """
    Raised (or returned) by a run handler to make the emulated run fail.

    Parameters
    ----------
    message : str
        The run's error, reported as ``metadata.error`` and ``error_log.error``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def echo_handler(input: Any, options: dict[str, str], files: dict[str, bytes]) -> Any:
    """
    The default run behaviour: echo the input.

    Parameters
    ----------
    input : Any
        The run's JSON (or text) input.
    options : dict[str, str]
        The run's options.
    files : dict[str, bytes]
        The run's multi-file input, if any.

    Returns
    -------
    Any
        For a multi-file input, the same files (a multi-file output); otherwise
        ``{"options": options, "solution": input, "statistics": {...}}``.
    """
    if files:
        return dict(files)
    return {"options": dict(options), "solution": input, "statistics": {"schema": "v1", "run": {"duration": 0.0}}}


@dataclass(frozen=True)
class AppBehavior:
    """
    How the emulated runs of one application behave.

    Parameters
    ----------
    handler : Handler
        Computes the run's outcome from its input (see :data:`Handler`).
    duration : float
        Seconds a run stays unfinished (``queued`` then ``running``) before its final status shows.
    queued_seconds : float
        Seconds, from the run's creation, for which its status is ``queued`` rather than ``running``.
    logs : tuple[str, ...]
        Log lines the run emits, spread evenly over ``duration`` (all of them once the run is final).
    output_format : str or None
        ``"json"`` or ``"multi-file"``; ``None`` infers it from what the handler returns.
    """

    handler: Handler = echo_handler
    duration: float = 0.05
    queued_seconds: float = 0.0
    logs: tuple[str, ...] = ("Emulated run started.", "Emulated run finished.")
    output_format: str | None = None


@dataclass
class RequestRecord:
    """
    One request the emulator received.

    Attributes
    ----------
    method : str
        HTTP method.
    path : str
        URL path, without the query.
    query : dict[str, str]
        Query parameters (first value of each).
    headers : dict[str, str]
        Request headers, names lowercased (``headers["authorization"]``). Left out of ``repr``.
    body : bytes
        Raw request body.
    json : Any
        The body parsed as JSON, or ``None`` when it is empty or not JSON.
    time : float
        ``time.time()`` at reception.
    status : int or None
        Status answered; ``0`` when the connection was dropped; ``None`` while being handled.
    route : str or None
        Name of the emulated endpoint that matched, ``None`` when none did.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    json: Any = field(repr=False)
    time: float
    status: int | None = None
    route: str | None = None


@dataclass
class FlowUpdateRecord:
    """
    One flow update received on ``PUT /v1/internal/applications/{app}/runs/{run}/flow``.

    Attributes
    ----------
    app_id : str
        Application id from the path.
    run_id : str
        Run id from the path.
    body : Any
        The JSON body.
    time : float
        ``time.time()`` at reception.
    """

    app_id: str
    run_id: str
    body: Any
    time: float


@dataclass
class RunRecord:
    """
    An emulated run. Snapshots are returned by :attr:`PlatformEmulator.runs` and :meth:`PlatformEmulator.run`.

    Attributes
    ----------
    run_id, app_id : str
        Ids.
    instance_id : str or None
        The ``instance_id`` query parameter of the creation request.
    input : Any
        JSON (or text) input; ``None`` for a multi-file input.
    input_files : dict[str, bytes]
        Multi-file input (from the uploaded tar.gz), relative path -> bytes.
    upload_id : str or None
        Upload the input came from, if any.
    uploaded : bytes or None
        Raw bytes of that upload.
    options : dict[str, str]
        The run's options.
    name, description : str or None
        As sent.
    configuration : dict or None
        The ``configuration`` object as sent.
    input_format : str
        ``configuration.format.input.type`` as sent, else inferred (``"json"``, ``"text"``, ``"multi-file"``).
    created_at : float
        ``time.time()`` at creation.
    duration : float
        Seconds before the final status shows.
    queued_seconds : float
        Seconds the run shows ``queued`` before ``running``.
    status : str
        ``status_v2`` as last computed: ``queued``, ``running``, ``succeeded``, ``failed`` or ``canceled``.
    canceled : bool
        Whether a cancel request arrived while the run was unfinished.
    cancel_requests : int
        How many cancel requests arrived for the run.
    held : bool
        Whether the run was held (by :meth:`PlatformEmulator.hold_runs`) when last computed.
    released : bool
        Whether :meth:`PlatformEmulator.release_runs` released the run.
    error : str
        Error of a failed run ("" otherwise).
    output : Any
        JSON output of a succeeded run.
    output_files : dict[str, bytes] or None
        Multi-file output of a succeeded run.
    output_format : str
        ``"json"`` or ``"multi-file"``.
    logs : tuple[str, ...]
        Log lines of the run.
    outcome : str
        Final status the run reaches unless canceled (``succeeded`` or ``failed``), decided at creation.
    finished_at : float or None
        ``time.time()`` when the final status was first computed.
    ran_on_instance : str
        The instance the run ran on: the ``instance_id`` parameter, else the application's default instance.
    version_id : str
        The app version that instance ran when the run was created (``metadata.application_version_id``).
    """

    run_id: str
    app_id: str
    instance_id: str | None
    input: Any
    input_files: dict[str, bytes]
    upload_id: str | None
    uploaded: bytes | None = field(repr=False)
    options: dict[str, str]
    name: str | None
    description: str | None
    configuration: dict[str, Any] | None
    input_format: str
    created_at: float
    duration: float
    queued_seconds: float
    status: str
    error: str
    output: Any = field(repr=False)
    output_files: dict[str, bytes] | None = field(repr=False)
    output_format: str
    logs: tuple[str, ...]
    outcome: str = "succeeded"
    canceled: bool = False
    cancel_requests: int = 0
    held: bool = False
    released: bool = False
    finished_at: float | None = None
    ran_on_instance: str = ""
    version_id: str = ""


@dataclass
class _FaultRule:
    remaining: int
    status: int  # 0: drop the connection
    method: str | None
    path_prefix: str | None
    path_regex: re.Pattern[str] | None
    message: str

    def matches(self, method: str, path: str) -> bool:
        return _matches(method, path, self.method, self.path_prefix, self.path_regex)


@dataclass
class _DelayRule:
    seconds: float
    method: str | None
    path_prefix: str | None
    path_regex: re.Pattern[str] | None

    def matches(self, method: str, path: str) -> bool:
        return _matches(method, path, self.method, self.path_prefix, self.path_regex)


def _matches(
    method: str, path: str, want_method: str | None, prefix: str | None, regex: re.Pattern[str] | None
) -> bool:
    if want_method is not None and want_method.upper() != method:
        return False
    if prefix is not None and not path.startswith(prefix):
        return False
    return regex is None or regex.search(path) is not None


def _normalize_prefix(prefix: str | None) -> str | None:
    if prefix is None:
        return None
    return prefix if prefix.startswith("/") else "/" + prefix


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).isoformat()


def _is_files(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, bytes | bytearray) for k, v in value.items())
    )


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name=name)
            info.size = len(content)
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(bytes(content)))
    return buffer.getvalue()


def _untar_gz(data: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            extracted = archive.extractfile(member)
            if extracted is None:
                continue
            name = member.name[2:] if member.name.startswith("./") else member.name
            files[name] = extracted.read()
    return files


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def of_json(cls, value: Any, status: int = 200) -> _Response:
        return cls(status=status, body=json.dumps(value).encode("utf-8"))


_Route = tuple[str, str, re.Pattern[str]]
_APP = r"/v1/applications/(?P<app>[^/]+)"
_RUN = _APP + r"/runs/(?P<run>[^/]+)"
_ROUTES: list[_Route] = [
    ("POST", "upload_url", re.compile(rf"^{_APP}/runs/uploadurl$")),
    ("POST", "new_run", re.compile(rf"^{_APP}/runs$")),
    ("GET", "run_metadata", re.compile(rf"^{_RUN}/metadata$")),
    ("GET", "run_output", re.compile(rf"^{_RUN}/output$")),
    ("GET", "run_input", re.compile(rf"^{_RUN}/input$")),
    ("GET", "run_logs_live", re.compile(rf"^{_RUN}/logs/live$")),
    ("GET", "run_logs", re.compile(rf"^{_RUN}/logs$")),
    ("PATCH", "cancel_run", re.compile(rf"^{_RUN}/cancel$")),
    ("GET", "run_result", re.compile(rf"^{_RUN}$")),
    ("DELETE", "delete_run", re.compile(rf"^{_RUN}$")),
    ("GET", "instance", re.compile(rf"^{_APP}/instances/(?P<instance>[^/]+)$")),
    ("GET", "application", re.compile(rf"^{_APP}$")),
    ("PUT", "flow_update", re.compile(r"^/v1/internal/applications/(?P<app>[^/]+)/runs/(?P<run>[^/]+)/flow$")),
    ("PUT", "upload", re.compile(r"^/upload/(?P<upload>[^/]+)$")),
    ("GET", "download", re.compile(r"^/download/(?P<run>[^/]+)/(?P<kind>input|output)$")),
]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # parallel flow steps open many short connections at once

    def __init__(self, address: tuple[str, int], emulator: PlatformEmulator) -> None:
        super().__init__(address, _RequestHandler)
        self.emulator = emulator

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if self.emulator.tls is not None:  # the handshake happens in the request's thread, not in the accept loop
            connection = self.emulator.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):  # a client that gave up or does not trust the certificate
                return
        super().finish_request(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "NextmvPlatformEmulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent: tests read ``emu.requests`` instead."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        response = self.server.emulator._dispatch(self.command, self.path, dict(self.headers.items()), body)
        if response is None:  # injected connection drop
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            if response.status != HTTPStatus.NO_CONTENT:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class PlatformEmulator:
    """
    An HTTP server on ``127.0.0.1`` emulating the Nextmv Cloud API endpoints the ``nextmv`` SDK calls.

    Every method is thread-safe. Use it as a context manager, or call :meth:`start` and :meth:`stop`.

    Parameters
    ----------
    api_key : str or None
        When given, ``/v1/`` requests must carry ``Authorization: Bearer <api_key>``; otherwise any non-empty
        bearer token is accepted. Requests without one get ``401``.
    log_poll_hint : float
        ``next_available_in_seconds`` answered by the live-logs endpoint (the SDK sleeps that long between polls).
    tls : ssl.SSLContext, optional
        A server context with a certificate for ``127.0.0.1``: the emulator then speaks HTTPS (``url`` starts
        with ``https://``), as the real platform does; the client must trust the certificate
        (``REQUESTS_CA_BUNDLE``).

    Examples
    --------
    >>> with PlatformEmulator() as emu:  # doctest: +SKIP
    ...     emu.set_app_behavior("solver", lambda input, options, files: {"solution": 42}, duration=0.1)
    ...     client = nextmv.cloud.Client(api_key="dummy", url=emu.url)
    """

    def __init__(
        self, api_key: str | None = None, log_poll_hint: float = 0.02, tls: ssl.SSLContext | None = None
    ) -> None:
        self.api_key = api_key
        self.tls = tls
        self.log_poll_hint = log_poll_hint
        self._lock = threading.RLock()
        self._port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._requests: list[RequestRecord] = []
        self._flow_updates: list[FlowUpdateRecord] = []
        self._runs: dict[str, RunRecord] = {}
        self._uploads: dict[str, bytes | None] = {}
        self._behaviors: dict[str, AppBehavior] = {DEFAULT_APP: AppBehavior()}
        self._instance_versions: dict[tuple[str, str], str] = {}
        self._default_instances: dict[str, str] = {}
        self._faults: list[_FaultRule] = []
        self._delays: list[_DelayRule] = []
        self._down = False
        self._hold_all = False
        self._held_apps: set[str] = set()
        self._run_counter = 0
        self._upload_counter = 0
        self._token = uuid.uuid4().hex[:6]

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> PlatformEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> PlatformEmulator:
        """
        Start listening (on an ephemeral port the first time, on the same port afterwards).

        Returns
        -------
        PlatformEmulator
            ``self``.
        """
        self.start_listening()
        return self

    def stop(self) -> None:
        """Stop listening and wake delayed requests. Recorded state is kept; :meth:`start` may be called again."""
        self.stop_listening()

    def start_listening(self) -> None:
        """Open the listening socket (again), on the port used before if any. No-op when already listening."""
        with self._lock:
            if self._server is not None:
                return
            self._wake = threading.Event()
            server = _Server(("127.0.0.1", self._port), self)
            self._port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="platform-emulator", daemon=True
            )
            self._thread.start()

    def stop_listening(self) -> None:
        """
        Close the listening socket: new connections are refused (``requests.ConnectionError``) until
        :meth:`start_listening`. Requests sleeping in an injected delay are woken up.
        """
        with self._lock:
            server, thread = self._server, self._thread
            self._server, self._thread = None, None
            self._wake.set()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def listening(self) -> bool:
        """Whether the emulator accepts connections."""
        with self._lock:
            return self._server is not None

    @property
    def port(self) -> int:
        """The TCP port (0 before the first :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL for the SDK's ``Client(url=...)`` or ``NEXTMV_ENDPOINT``: ``http(s)://127.0.0.1:PORT``."""
        if self._port == 0:
            raise RuntimeError("the emulator was never started")
        return f"{'https' if self.tls is not None else 'http'}://127.0.0.1:{self._port}"

    # ------------------------------------------------------------------ behaviour

    def set_app_behavior(
        self,
        app_id: str,
        handler: Handler | None = None,
        *,
        duration: float | None = None,
        queued_seconds: float | None = None,
        logs: list[str] | tuple[str, ...] | None = None,
        output_format: str | None = None,
    ) -> AppBehavior:
        """
        Set how the runs of ``app_id`` behave (:data:`DEFAULT_APP` for apps without their own behaviour).

        Arguments left ``None`` keep their current value (for a new app, the default behaviour's).

        Parameters
        ----------
        app_id : str
            Application id, or :data:`DEFAULT_APP`.
        handler : Handler, optional
            ``handler(input, options, files)``: return a ``dict`` (JSON output), a ``dict[str, bytes]``
            (multi-file output), or raise/return an exception (failed run with ``str(exception)`` as error).
        duration : float, optional
            Seconds before the run's final status shows.
        queued_seconds : float, optional
            Seconds the run shows ``queued`` before ``running``.
        logs : list[str], optional
            Log lines emitted over the run's duration.
        output_format : str, optional
            ``"json"`` or ``"multi-file"``; a JSON output of a multi-file app is written as ``output.json``.

        Returns
        -------
        AppBehavior
            The behaviour now in effect for ``app_id``.
        """
        if output_format not in (None, "json", "multi-file"):
            raise ValueError(f"output_format must be 'json' or 'multi-file', not {output_format!r}")
        changes: dict[str, Any] = {}
        if handler is not None:
            changes["handler"] = handler
        if duration is not None:
            changes["duration"] = float(duration)
        if queued_seconds is not None:
            changes["queued_seconds"] = float(queued_seconds)
        if logs is not None:
            changes["logs"] = tuple(logs)
        if output_format is not None:
            changes["output_format"] = output_format
        with self._lock:
            current = self._behaviors.get(app_id, self._behaviors[DEFAULT_APP])
            behavior = dataclasses.replace(current, **changes)
            self._behaviors[app_id] = behavior
            return behavior

    def behavior(self, app_id: str) -> AppBehavior:
        """
        The behaviour runs of ``app_id`` get.

        Parameters
        ----------
        app_id : str
            Application id.

        Returns
        -------
        AppBehavior
            The app's own behaviour, else the default one.
        """
        with self._lock:
            return self._behaviors.get(app_id, self._behaviors[DEFAULT_APP])

    def set_instance(self, app_id: str, instance_id: str, version_id: str, *, default: bool = False) -> None:
        """
        Point an instance of an application at an app version.

        Parameters
        ----------
        app_id : str
            Application id.
        instance_id : str
            Instance id.
        version_id : str
            The version the instance runs from now on: new runs on it report it as ``application_version_id``.
        default : bool
            Also make it the application's default instance (used by runs without ``instance_id``).
        """
        with self._lock:
            self._instance_versions[(app_id, instance_id)] = version_id
            if default:
                self._default_instances[app_id] = instance_id

    def hold_runs(self, hold: bool = True, app_id: str | None = None) -> None:
        """
        Keep runs unfinished (``running``) until canceled, released or the hold is lifted.

        Parameters
        ----------
        hold : bool
            ``True`` to hold, ``False`` to lift the hold (held runs then finish once their duration elapsed).
        app_id : str, optional
            Hold only this application's runs; ``None`` for every application.
        """
        with self._lock:
            if app_id is None:
                self._hold_all = hold
                if not hold:
                    self._held_apps.clear()
            elif hold:
                self._held_apps.add(app_id)
            else:
                self._held_apps.discard(app_id)

    def release_runs(self, run_ids: list[str] | None = None) -> None:
        """
        Let held runs finish (once their duration elapsed) although the hold stays on for new runs.

        Parameters
        ----------
        run_ids : list[str], optional
            Runs to release; ``None`` for every existing run.
        """
        with self._lock:
            for run_id in list(self._runs) if run_ids is None else run_ids:
                if run_id in self._runs:
                    self._runs[run_id].released = True

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        path_prefix: str | None = None,
        *,
        method: str | None = None,
        path_regex: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """
        Make the next ``n`` matching requests answer ``status`` with ``{"error": message}``.

        Parameters
        ----------
        n : int
            Number of requests to fail.
        status : int
            HTTP status to answer.
        path_prefix : str, optional
            Only requests whose path starts with this (leading ``/`` optional).
        method : str, optional
            Only requests with this method.
        path_regex : str, optional
            Only requests whose path matches this regular expression (``re.search``).
        message : str
            Error message in the body.
        """
        regex = re.compile(path_regex) if path_regex is not None else None
        with self._lock:
            self._faults.append(_FaultRule(n, status, method, _normalize_prefix(path_prefix), regex, message))

    def drop_next(
        self, n: int = 1, path_prefix: str | None = None, *, method: str | None = None, path_regex: str | None = None
    ) -> None:
        """
        Close the connection of the next ``n`` matching requests without answering
        (the SDK raises ``requests.ConnectionError``).

        Parameters
        ----------
        n : int
            Number of requests to drop.
        path_prefix, method, path_regex
            As for :meth:`fail_next`.
        """
        regex = re.compile(path_regex) if path_regex is not None else None
        with self._lock:
            self._faults.append(_FaultRule(n, 0, method, _normalize_prefix(path_prefix), regex, "dropped"))

    def set_down(self, down: bool = True) -> None:
        """
        While ``down``, every request is answered ``503``. See :meth:`stop_listening` to refuse connections.

        Parameters
        ----------
        down : bool
            Whether the platform is down.
        """
        with self._lock:
            self._down = down

    def set_delay(
        self,
        seconds: float,
        path_prefix: str | None = None,
        *,
        method: str | None = None,
        path_regex: str | None = None,
    ) -> None:
        """
        Answer matching requests after ``seconds`` (the longest matching delay applies).

        ``seconds <= 0`` removes the delay set with the same matching arguments.

        Parameters
        ----------
        seconds : float
            Delay.
        path_prefix, method, path_regex
            As for :meth:`fail_next`.
        """
        prefix = _normalize_prefix(path_prefix)
        regex = re.compile(path_regex) if path_regex is not None else None
        with self._lock:
            self._delays = [
                d for d in self._delays if (d.method, d.path_prefix, d.path_regex) != (method, prefix, regex)
            ]
            if seconds > 0:
                self._delays.append(_DelayRule(seconds, method, prefix, regex))

    def clear_faults(self) -> None:
        """Remove pending failures, drops and delays, and bring the platform back up."""
        with self._lock:
            self._faults.clear()
            self._delays.clear()
            self._down = False

    # ------------------------------------------------------------------ recordings

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received, in order."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, method: str | None = None, path_prefix: str = "") -> list[RequestRecord]:
        """
        The requests with ``method`` (any if ``None``) whose path starts with ``path_prefix``.

        Parameters
        ----------
        method : str, optional
            HTTP method.
        path_prefix : str
            Path prefix (leading ``/`` optional).

        Returns
        -------
        list[RequestRecord]
            Matching requests, in order.
        """
        prefix = _normalize_prefix(path_prefix) or "/"
        return [
            r for r in self.requests if (method is None or r.method == method.upper()) and r.path.startswith(prefix)
        ]

    def unrouted_requests(self) -> list[RequestRecord]:
        """
        The requests no emulated endpoint matched (answered ``404``/``405``).

        Returns
        -------
        list[RequestRecord]
            Those requests, in order.
        """
        return [r for r in self.requests if r.route is None and r.status in (404, 405)]

    @property
    def flow_updates(self) -> list[Any]:
        """The JSON bodies received on the flow endpoint, in order."""
        with self._lock:
            return [u.body for u in self._flow_updates]

    @property
    def flow_update_records(self) -> list[FlowUpdateRecord]:
        """The flow updates with their application and run ids."""
        with self._lock:
            return list(self._flow_updates)

    @property
    def runs(self) -> dict[str, RunRecord]:
        """Snapshots of every run (status freshly computed), by run id, in creation order."""
        with self._lock:
            now = time.time()
            return {run_id: copy.copy(self._refresh(run, now)) for run_id, run in self._runs.items()}

    def run(self, run_id: str) -> RunRecord:
        """
        A snapshot of one run, its status freshly computed.

        Parameters
        ----------
        run_id : str
            Run id.

        Returns
        -------
        RunRecord
            The run.

        Raises
        ------
        KeyError
            If there is no such run.
        """
        with self._lock:
            return copy.copy(self._refresh(self._runs[run_id], time.time()))

    def runs_for(self, app_id: str) -> list[RunRecord]:
        """
        Snapshots of the runs of one application, in creation order.

        Parameters
        ----------
        app_id : str
            Application id.

        Returns
        -------
        list[RunRecord]
            The runs.
        """
        return [r for r in self.runs.values() if r.app_id == app_id]

    @property
    def uploads(self) -> dict[str, bytes | None]:
        """Upload ids handed out, with the bytes put there (``None`` until uploaded)."""
        with self._lock:
            return dict(self._uploads)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005) -> None:
        """
        Wait until ``predicate()`` is true.

        Parameters
        ----------
        predicate : Callable[[], bool]
            Condition, typically on the emulator's recordings.
        timeout : float
            Seconds to wait at most.
        interval : float
            Seconds between evaluations.

        Raises
        ------
        TimeoutError
            If the condition is still false after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(interval)

    def wait_for_runs(self, count: int, timeout: float = 5.0) -> list[RunRecord]:
        """
        Wait until at least ``count`` runs exist.

        Parameters
        ----------
        count : int
            Number of runs.
        timeout : float
            Seconds to wait at most.

        Returns
        -------
        list[RunRecord]
            All runs, in creation order.
        """
        self.wait_for(lambda: len(self._runs) >= count, timeout)
        return list(self.runs.values())

    def reset(self) -> None:
        """Forget requests, flow updates, runs, uploads, behaviours, holds and faults."""
        with self._lock:
            self._requests.clear()
            self._flow_updates.clear()
            self._runs.clear()
            self._uploads.clear()
            self._behaviors = {DEFAULT_APP: AppBehavior()}
            self._instance_versions.clear()
            self._default_instances.clear()
            self._hold_all = False
            self._held_apps.clear()
        self.clear_faults()

    # ------------------------------------------------------------------ request handling

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Response | None:
        split = urlsplit(raw_path)
        path = unquote(split.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        record = RequestRecord(
            method=method,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
            json=parsed,
            time=time.time(),
        )
        with self._lock:
            self._requests.append(record)
            delay = max((d.seconds for d in self._delays if d.matches(method, path)), default=0.0)
            wake = self._wake
        if delay > 0:
            wake.wait(delay)
        response = self._answer(record)
        record.status = 0 if response is None else response.status
        return response

    def _answer(self, record: RequestRecord) -> _Response | None:
        method, path = record.method, record.path
        with self._lock:
            if self._down:
                return _Response.of_json({"error": "service unavailable (emulated outage)"}, 503)
            for rule in self._faults:
                if rule.remaining > 0 and rule.matches(method, path):
                    rule.remaining -= 1
                    self._faults = [f for f in self._faults if f.remaining > 0]
                    if rule.status == 0:
                        return None
                    return _Response.of_json({"error": rule.message}, rule.status)

        route_name, params, path_known = None, {}, False
        for route_method, name, pattern in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            path_known = True
            if route_method == method:
                route_name, params = name, match.groupdict()
                break
        if route_name is None:
            status = 405 if path_known else 404
            return _Response.of_json({"error": f"no emulated endpoint for {method} {path}"}, status)
        record.route = route_name

        if path.startswith("/v1/"):
            authorization = record.headers.get("authorization", "")
            token = authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else ""
            if not token or (self.api_key is not None and token != self.api_key):
                return _Response.of_json({"error": "unauthorized"}, 401)

        try:
            return getattr(self, f"_route_{route_name}")(record, **params)
        except _ApiError as error:
            return _Response.of_json({"error": error.message}, error.status)
        except Exception as error:  # an emulator bug: answer it rather than drop the connection
            return _Response.of_json({"error": f"emulator error: {type(error).__name__}: {error}"}, 500)

    # ------------------------------------------------------------------ routes

    def _route_application(self, record: RequestRecord, app: str) -> _Response:
        with self._lock:
            default = self._default_instances.get(app, "")
        return _Response.of_json(
            {"id": app, "name": app, "description": "", "type": "custom", "default_instance": default, "locked": False}
        )

    def _route_instance(self, record: RequestRecord, app: str, instance: str) -> _Response:
        with self._lock:
            version = self._instance_versions.get((app, instance), "")
        stamp = _iso(0)
        return _Response.of_json(
            {
                "id": instance,
                "application_id": app,
                "version_id": version,
                "name": instance,
                "description": "",
                "configuration": {},
                "locked": False,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )

    def _route_delete_run(self, record: RequestRecord, app: str, run: str) -> _Response:
        with self._lock:
            run_record = self._runs.get(run)
            if run_record is None or run_record.app_id != app:
                raise _ApiError(404, f"run {run} not found in application {app}")
            del self._runs[run]
        return _Response(204)

    def _route_upload_url(self, record: RequestRecord, app: str) -> _Response:
        with self._lock:
            self._upload_counter += 1
            upload_id = f"upload-{self._token}-{self._upload_counter}"
            self._uploads[upload_id] = None
        return _Response.of_json({"upload_id": upload_id, "upload_url": f"{self.url}/upload/{upload_id}"})

    def _route_upload(self, record: RequestRecord, upload: str) -> _Response:
        with self._lock:
            if upload not in self._uploads:
                raise _ApiError(404, f"unknown upload {upload}")
            self._uploads[upload] = record.body
        return _Response(200)

    def _route_new_run(self, record: RequestRecord, app: str) -> _Response:
        payload = record.json
        if not isinstance(payload, dict):
            raise _ApiError(400, "the body must be a JSON object")
        configuration = payload.get("configuration")
        declared = _declared_input_type(configuration)
        if "input_id" in payload:
            raise _ApiError(400, "managed inputs (input_id) are not emulated")
        upload_id: str | None = None
        uploaded: bytes | None = None
        files: dict[str, bytes] = {}
        if "upload_id" in payload:
            upload_id = str(payload["upload_id"])
            with self._lock:
                uploaded = self._uploads.get(upload_id)
            if uploaded is None:
                raise _ApiError(400, f"upload {upload_id} not found or empty")
            run_input, files, inferred = _decode_upload(uploaded, declared)
        elif "input" in payload:
            run_input = payload["input"]
            inferred = "text" if isinstance(run_input, str) else "json"
        else:
            raise _ApiError(400, "one of input, upload_id or input_id is required")
        options = payload.get("options") or {}
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            raise _ApiError(400, "options must be an object of strings")

        behavior = self.behavior(app)
        outcome, output, output_files, output_format, error = _execute(behavior, run_input, options, files)
        now = time.time()
        with self._lock:
            ran_on = record.query.get("instance_id") or self._default_instances.get(app, "")
            self._run_counter += 1
            run_id = f"run-{self._token}-{self._run_counter}"
            self._runs[run_id] = RunRecord(
                run_id=run_id,
                app_id=app,
                instance_id=record.query.get("instance_id"),
                input=run_input,
                input_files=files,
                upload_id=upload_id,
                uploaded=uploaded,
                options=dict(options),
                name=payload.get("name"),
                description=payload.get("description"),
                configuration=configuration if isinstance(configuration, dict) else None,
                input_format=declared or inferred,
                created_at=now,
                duration=behavior.duration,
                queued_seconds=behavior.queued_seconds,
                status="queued",
                error=error,
                output=output,
                output_files=output_files,
                output_format=output_format,
                logs=behavior.logs,
                outcome=outcome,
                held=self._is_held_by_config(app),
                ran_on_instance=ran_on,
                version_id=self._instance_versions.get((app, ran_on), ""),
            )
        return _Response.of_json({"run_id": run_id})

    def _route_run_metadata(self, record: RequestRecord, app: str, run: str) -> _Response:
        return _Response.of_json(self._run_document(app, run, with_output=False, as_url=False))

    def _route_run_result(self, record: RequestRecord, app: str, run: str) -> _Response:
        as_url = record.query.get("format") == "url"
        return _Response.of_json(self._run_document(app, run, with_output=True, as_url=as_url))

    def _route_run_output(self, record: RequestRecord, app: str, run: str) -> _Response:
        run_record = self._get_run(app, run)
        if run_record.output_format == "multi-file" or record.query.get("format") == "url":
            return _Response.of_json({"url": f"{self.url}/download/{run}/output"})
        return _Response.of_json(run_record.output if run_record.status == "succeeded" else None)

    def _route_run_input(self, record: RequestRecord, app: str, run: str) -> _Response:
        run_record = self._get_run(app, run)
        if run_record.input_format in _FILE_FORMATS or record.query.get("format") == "url":
            return _Response.of_json({"url": f"{self.url}/download/{run}/input"})
        return _Response.of_json(run_record.input)

    def _route_download(self, record: RequestRecord, run: str, kind: str) -> _Response:
        with self._lock:
            if run not in self._runs:
                raise _ApiError(404, f"run {run} not found")
            run_record = self._refresh(self._runs[run], time.time())
        if kind == "input":
            if run_record.uploaded is not None:
                return _Response(200, run_record.uploaded, "application/octet-stream")
            return _Response.of_json(run_record.input)
        succeeded = run_record.status == "succeeded"
        if run_record.output_format == "multi-file":
            # A failed or canceled multi-file run downloads as an empty archive: the SDK then returns its result.
            files = run_record.output_files if succeeded and run_record.output_files is not None else {}
            return _Response(200, _tar_gz(files), "application/gzip")
        return _Response.of_json(run_record.output if succeeded else None)

    def _route_run_logs_live(self, record: RequestRecord, app: str, run: str) -> _Response:
        run_record = self._get_run(app, run)
        try:
            since = max(0, int(record.query.get("since", "0")))
        except ValueError:
            since = 0
        available = _available_logs(run_record, time.time())
        items = [
            {"timestamp": _iso(_log_time(run_record, i)), "log": run_record.logs[i]}
            for i in range(min(since, available), available)
        ]
        return _Response.of_json(
            {
                "items": items,
                "status_v2": run_record.status,
                "next_available_in_seconds": self.log_poll_hint,
                "next_page_token": str(available),
            }
        )

    def _route_run_logs(self, record: RequestRecord, app: str, run: str) -> _Response:
        run_record = self._get_run(app, run)
        available = _available_logs(run_record, time.time())
        return _Response.of_json({"log": "\n".join(run_record.logs[:available])})

    def _route_cancel_run(self, record: RequestRecord, app: str, run: str) -> _Response:
        with self._lock:
            run_record = self._runs.get(run)
            if run_record is None or run_record.app_id != app:
                raise _ApiError(404, f"run {run} not found in application {app}")
            self._refresh(run_record, time.time())
            run_record.cancel_requests += 1
            if run_record.status not in FINAL_STATUSES:
                run_record.canceled = True
                self._refresh(run_record, time.time())
        return _Response(204)

    def _route_flow_update(self, record: RequestRecord, app: str, run: str) -> _Response:
        if record.json is None:
            raise _ApiError(400, "the body must be JSON")
        with self._lock:
            self._flow_updates.append(FlowUpdateRecord(app_id=app, run_id=run, body=record.json, time=record.time))
        return _Response(204)

    # ------------------------------------------------------------------ run state

    def _is_held_by_config(self, app_id: str) -> bool:
        return self._hold_all or app_id in self._held_apps

    def _refresh(self, run: RunRecord, now: float) -> RunRecord:
        """Compute the run's status at ``now`` (under the lock). Final statuses never change."""
        if run.status in FINAL_STATUSES:
            return run
        if run.canceled:
            run.status, run.error, run.finished_at = "canceled", "run canceled", now
            return run
        run.held = self._is_held_by_config(run.app_id) and not run.released
        elapsed = now - run.created_at
        if run.held or elapsed < run.duration:
            run.status = "queued" if elapsed < run.queued_seconds else "running"
            return run
        run.status, run.finished_at = run.outcome, now
        return run

    def _get_run(self, app: str, run: str) -> RunRecord:
        with self._lock:
            run_record = self._runs.get(run)
            if run_record is None or run_record.app_id != app:
                raise _ApiError(404, f"run {run} not found in application {app}")
            return copy.copy(self._refresh(run_record, time.time()))

    def _run_document(self, app: str, run: str, *, with_output: bool, as_url: bool) -> dict[str, Any]:
        run_record = self._get_run(app, run)
        final = run_record.status in FINAL_STATUSES
        succeeded = run_record.status == "succeeded"
        end = run_record.finished_at if final and run_record.finished_at is not None else time.time()
        duration_ms = round((end - run_record.created_at) * 1000.0, 3)
        output_size = 0
        if succeeded and run_record.output_files is not None:
            output_size = sum(len(c) for c in run_record.output_files.values())
        elif succeeded:
            output_size = len(json.dumps(run_record.output).encode("utf-8"))
        input_size = (
            len(run_record.uploaded)
            if run_record.uploaded is not None
            else len(json.dumps(run_record.input).encode("utf-8"))
        )
        options_summary = [{"name": k, "value": v, "source": "request"} for k, v in run_record.options.items()]
        legacy_status = {"queued": "requested", "canceled": "canceled"}.get(run_record.status, run_record.status)
        metadata: dict[str, Any] = {
            "application_id": run_record.app_id,
            "application_instance_id": run_record.ran_on_instance,
            "application_version_id": run_record.version_id,
            "created_at": _iso(run_record.created_at),
            "duration": duration_ms if final else 0.0,
            "error": run_record.error if final else "",
            "execution_class": "emulated",
            "execution_duration": duration_ms if final else 0.0,
            "format": {"input": {"type": run_record.input_format}, "output": {"type": run_record.output_format}},
            "input_size": input_size,
            "output_size": output_size,
            "options": {
                "active_options": dict(run_record.options),
                "request_options": dict(run_record.options),
                "options_summary": options_summary,
            },
            "run_type": {"type": "standard"},
            "status": legacy_status,
            "status_v2": run_record.status,
        }
        if run_record.status != "queued":
            metadata["initiated_at"] = _iso(run_record.created_at + min(run_record.queued_seconds, run_record.duration))
        document: dict[str, Any] = {
            "id": run_record.run_id,
            "name": run_record.name or "",
            "description": run_record.description or "",
            "user_email": "emulator@example.com",
            "metadata": metadata,
        }
        if with_output:
            if not succeeded:
                document["output"] = None
            elif as_url or run_record.output_format == "multi-file":
                document["output"] = {"url": f"{self.url}/download/{run_record.run_id}/output"}
            else:
                document["output"] = run_record.output
            if run_record.status in ("failed", "canceled"):
                available = _available_logs(run_record, time.time())
                document["error_log"] = {
                    "error": run_record.error,
                    "stdout": "",
                    "stderr": "\n".join(run_record.logs[:available]),
                }
        return document


# ---------------------------------------------------------------------- helpers


def _declared_input_type(configuration: Any) -> str | None:
    if not isinstance(configuration, dict):
        return None
    fmt = configuration.get("format")
    if not isinstance(fmt, dict):
        return None
    fmt_input = fmt.get("input")
    if not isinstance(fmt_input, dict):
        return None
    value = fmt_input.get("type")
    return str(value) if value else None


def _decode_upload(data: bytes, declared: str | None) -> tuple[Any, dict[str, bytes], str]:
    """Decode uploaded input bytes: a tar.gz (multi-file), JSON, or text."""
    if data[:2] == _GZIP_MAGIC:
        try:
            return None, _untar_gz(data), declared if declared in _FILE_FORMATS else "multi-file"
        except (tarfile.TarError, OSError, EOFError) as error:
            raise _ApiError(400, f"the uploaded archive cannot be read: {error}") from error
    text = data.decode("utf-8", errors="replace")
    if declared != "text":
        try:
            return json.loads(text), {}, "json"
        except ValueError:
            pass
    return text, {}, "text"


def _execute(
    behavior: AppBehavior, run_input: Any, options: dict[str, str], files: dict[str, bytes]
) -> tuple[str, Any, dict[str, bytes] | None, str, str]:
    """Run the handler: (outcome status, JSON output, output files, output format, error)."""
    wanted = behavior.output_format
    try:
        result = behavior.handler(copy.deepcopy(run_input), dict(options), dict(files))
    except Exception as error:  # the handler's failure is the run's failure
        return "failed", None, None, wanted or "json", str(error) or type(error).__name__
    if isinstance(result, BaseException):
        return "failed", None, None, wanted or "json", str(result) or type(result).__name__
    if wanted == "multi-file" or (wanted is None and _is_files(result)):
        if _is_files(result):
            return "succeeded", None, {k: bytes(v) for k, v in result.items()}, "multi-file", ""
        if isinstance(result, dict) and not result and wanted == "multi-file":
            return "succeeded", None, {}, "multi-file", ""
        try:
            encoded = json.dumps(result).encode("utf-8")
        except (TypeError, ValueError) as error:
            return "failed", None, None, "multi-file", f"output is not JSON serializable: {error}"
        return "succeeded", None, {"output.json": encoded}, "multi-file", ""
    if _is_files(result):
        return "failed", None, None, "json", "the app returned files but its output format is json"
    if not isinstance(result, dict):
        return "failed", None, None, "json", f"the output must be a JSON object, not {type(result).__name__}"
    try:
        output = json.loads(json.dumps(result))
    except (TypeError, ValueError) as error:
        return "failed", None, None, "json", f"output is not JSON serializable: {error}"
    return "succeeded", output, None, "json", ""


def _available_logs(run: RunRecord, now: float) -> int:
    """How many of the run's log lines have been emitted at ``now``: all once final, never the last before."""
    total = len(run.logs)
    if run.status in FINAL_STATUSES:
        return total
    if total == 0:
        return 0
    if run.duration <= 0:
        return total - 1
    emitted = math.floor(total * (now - run.created_at) / run.duration) + 1
    return max(0, min(total - 1, emitted))


def _log_time(run: RunRecord, index: int) -> float:
    total = max(1, len(run.logs))
    return run.created_at + run.duration * index / total
