"""
What every app backend shares: the run request, creating a run, fetching its result, and the node's result.

A node's run goes through two functions, :func:`create_run` and :func:`fetch_result`, so that a run cache can
stand in for the first. While the run exists, ``node.cancel_run`` stops it: it cancels the run if it is still
in progress and removes the node's output directory; it is called only when the node's result is not wanted
(the flow failed or was interrupted, a step's time limit ran out). The node cancels its run itself on every
other way it ends without success. Polling stops at the next poll once ``node.cancel`` is True.
"""

from __future__ import annotations

import copy
import datetime
import functools
import os
import shutil
import threading
from collections.abc import Callable
from typing import Any

import nextmv
import pydantic

from ..constants import ENV_APP_ID, ENV_RUN_ID
from ..errors import AppRunError
from ..graph import FlowNode
from ..schema import AppRunConfig
from ..utils import log, log_internal
from . import PollingStopped, new_output_dir
from .cloud import CloudApp
from .local import LocalApp
from .reuse import lookup_run, record_run

LOG_RELAY_GRACE = 2.0
"""Seconds the live log relay may outlive the run's result."""
_FINAL_FAILURE_STATES = ("failed", "canceled")

App = CloudApp | LocalApp


def default_run_name(node_id: str, app_id: str) -> str:
    """The default name of the run a node makes, cut to 128 characters."""
    wf_app = os.environ.get(ENV_APP_ID) or app_id
    wf_run = os.environ.get(ENV_RUN_ID) or "local"
    return f"Nextpipe step {node_id[:50]} ({wf_app}/{wf_run})"[:128]


def default_run_description(app_id: str) -> str:
    """The default description of the run a node makes."""
    wf_app = os.environ.get(ENV_APP_ID) or app_id
    wf_run = os.environ.get(ENV_RUN_ID) or "local"
    return f"This run was started by the nextpipe parent: {wf_app} (run-id: {wf_run})"


def create_run(app: App, request: dict[str, Any]) -> str:
    """
    Start a run of an application.

    Parameters
    ----------
    app : CloudApp or LocalApp
        The application.
    request : dict
        The keyword arguments of the SDK's ``new_run`` (see :func:`run_request`).

    Returns
    -------
    str
        The run's id.

    Raises
    ------
    TypeError
        When the input cannot be sent as JSON.
    requests.HTTPError, ConnectionError
        When the platform refuses or cannot be reached.
    """
    try:
        return app.new_run(**request)
    except TypeError as error:
        raise TypeError(f"the input of app {app.app_id} cannot be sent as JSON: {error}") from error


def fetch_result(
    app: App, run_id: str, polling: nextmv.PollingOptions, output_dir: str, logs_shown: bool = False
) -> nextmv.RunResult:
    """
    Wait for a run to end and return its result.

    Parameters
    ----------
    app : CloudApp or LocalApp
        The application.
    run_id : str
        The run.
    polling : nextmv.PollingOptions
        How to poll (used as given; the SDK may assign to it).
    output_dir : str
        Where the run's output files go.
    logs_shown : bool
        Whether the run's logs were relayed live: a failed run's error then leaves them out.

    Returns
    -------
    nextmv.RunResult
        The result of the succeeded run.

    Raises
    ------
    AppRunError
        When the run ended failed or canceled (``status`` says which), when polling was stopped (``status`` None)
        or when the run could not be followed (polling gave up, the platform failed to answer).
    """
    try:
        result = app.run_result_with_polling(run_id, polling, output_dir)
    # A user's stop callback returning True makes the SDK's poll return None, which it then fails to read.
    except (PollingStopped, AttributeError):
        raise AppRunError(f"run {run_id} of app {app.app_id} was stopped", app.app_id, run_id) from None
    except Exception as error:
        raise AppRunError(
            f"run {run_id} of app {app.app_id} could not be followed: {type(error).__name__}: {error}",
            app.app_id,
            run_id,
        ) from error
    status = result.metadata.status_v2
    status = getattr(status, "value", str(status))
    if status in _FINAL_FAILURE_STATES:
        error_log = getattr(result, "error_log", None)
        error = result.metadata.error or getattr(error_log, "error", None) or "no error message"
        raise AppRunError(
            f"run {run_id} of app {app.app_id} ended {status}: {error}{app.failure_details(run_id, logs_shown)}",
            app.app_id,
            run_id,
            status,
        )
    return result


def run_request(node_id: str, settings: Any, app_input: Any) -> tuple[str, str, dict[str, Any]]:
    """
    The run a node asks for: its app id, instance id and the keyword arguments of the SDK's ``new_run``.

    Parameters
    ----------
    node_id : str
        The node (names the default run).
    settings : App
        The step's ``@app`` settings.
    app_input : Any
        The node's input: an ``AppRunConfig``, an upstream ``RunResult``, a directory path or a JSON value.

    Returns
    -------
    tuple of (str, str, dict)
        The app id, the instance id ("" for the default) and the request.

    Raises
    ------
    TypeError
        When the input is none of the kinds an app run takes.
    """
    app_id = settings.app_id
    options = dict(settings.options)
    run_configuration = settings.run_configuration
    instance_id = settings.instance_id
    name = default_run_name(node_id, app_id)
    description = default_run_description(app_id)
    kinds = "a JSON object (dict), a string, a directory path, an AppRunConfig or an upstream RunResult"
    what = f"the input of app {app_id}"
    if isinstance(app_input, AppRunConfig):
        options.update(app_input.get_options())
        name = app_input.name or name
        description = app_input.description or description
        run_configuration = app_input.run_configuration or run_configuration
        instance_id = app_input.instance_id or instance_id
        app_input = app_input.input
        kinds = "a JSON object (dict), a string, a directory path or an upstream RunResult"
        what = f"the input of the AppRunConfig for app {app_id}"
    if isinstance(app_input, nextmv.RunResult):  # also inside an AppRunConfig: an upstream run with other options
        app_input = app_input.output
    request: dict[str, Any] = {"options": options, "name": name, "description": description}
    if isinstance(app_input, pydantic.BaseModel):
        # As the SDK turns its own models into JSON (``to_dict``); it would send any other model as null.
        app_input = app_input.model_dump(mode="json", exclude_none=True, by_alias=True)
    if isinstance(app_input, str) and os.path.isdir(app_input):
        request["input_dir_path"] = app_input
    elif isinstance(app_input, dict | str | nextmv.Input):
        request["input"] = app_input
    else:
        # The SDK would silently send such an input as null.
        raise TypeError(f"{what} must be {kinds}; got {type(app_input).__name__}")
    if run_configuration is not None:
        request["configuration"] = run_configuration
    return app_id, instance_id or "", request


class _RunHandle:
    """A node's run: its output directory, and stopping it (once, from the worker or from the runner)."""

    def __init__(self, app: App, run_id: str):
        self.app = app
        self.run_id = run_id
        self.ended = False  # the run reached a final state: nothing to cancel
        self.output_dir = ""
        self.stop = _once(self._stop)
        try:
            self.output_dir = new_output_dir()
        except BaseException:
            self.stop()
            raise

    def _stop(self) -> None:
        if not self.ended:
            self.app.cancel(self.run_id)
        if self.output_dir:
            shutil.rmtree(self.output_dir, ignore_errors=True)


def run_app(flow_spec: Any, node: FlowNode, app_input: Any) -> Any:
    """
    Run an app step's application for one node and return the node's result.

    Parameters
    ----------
    flow_spec : FlowSpec
        The flow.
    node : FlowNode
        The node; its ``run_id`` and ``cancel_run`` are set as soon as the run exists.
    app_input : Any
        An ``AppRunConfig``, an upstream ``RunResult``, a directory path, or a JSON value.

    Returns
    -------
    Any
        See the contract's section 5.

    Raises
    ------
    AppRunError
        When the run ends failed or canceled, or cannot be followed, naming the app, the run and the error.
    """
    settings = node.parent.definition.app
    if settings.bypass_result is not None:
        log_internal(f"Bypassing app step {node.id} run, using bypass result")
        return _bypass(settings)
    app_id, instance_id, request = run_request(node.id, settings, app_input)
    app = _open_app(flow_spec, app_id, instance_id)
    cache_key, reused = lookup_run(flow_spec, node, app, instance_id, request)
    if reused is not None:
        return _node_result(node, *reused, settings.full_result)
    node.run_created = threading.Event()  # the runner waits on it before it gives up on this run
    try:
        run_id = create_run(app, request)
        node.run_id = run_id
        run = _RunHandle(app, run_id)
        node.cancel_run = run.stop
    finally:
        node.run_created.set()
    try:
        log_internal(f"Started app step {node.id} run, find it at {app.run_url(run_id)}")
        if flow_spec.uplink.active:
            flow_spec.uplink.notify_changed()
        polling = _polling_options(node, settings.polling_options, app)
        relay = None
        if settings.emit_live_logs:
            log_internal(f"Emitting live logs for app step {node.id} ...")
            # Its own copy of the polling options, taken before fetching the result adds to them.
            relay = threading.Thread(
                target=_relay_logs,
                args=(app, run_id, node, copy.copy(polling)),
                name=f"nextpipe-logs-{node.id}",
                daemon=True,
            )
            relay.start()
        try:
            if node.cancel:  # the flow stopped while the run was being created
                raise AppRunError(f"run {run_id} of app {app_id} was stopped", app_id, run_id)
            result = fetch_result(app, run_id, polling, run.output_dir, settings.emit_live_logs)
            run.ended = True
        except AppRunError as error:
            run.ended = error.status is not None
            raise
        finally:
            if relay is not None and run.ended:  # its last lines come before the node's end
                relay.join(LOG_RELAY_GRACE)
        if node.cancel:  # a result that comes after the flow stopped is not used
            raise AppRunError(f"run {run_id} of app {app_id} ended after the flow stopped", app_id, run_id)
    except BaseException:
        run.stop()
        raise
    if cache_key is not None:
        record_run(flow_spec, node, app, cache_key, run_id)
    return _node_result(node, result, run.output_dir, settings.full_result)


def _node_result(node: FlowNode, result: nextmv.RunResult, output_dir: str, full_result: bool) -> Any:
    """The node's result: the output directory replaces the output when the run wrote files."""
    # The platform's side of the node's timing, as far as the run's metadata tells it (duration in ms).
    created_at = getattr(result.metadata, "created_at", None)
    if isinstance(created_at, datetime.datetime):
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=datetime.timezone.utc)
        node.run_created_at = created_at
        duration = getattr(result.metadata, "duration", None)
        if isinstance(duration, int | float) and duration >= 0:
            node.run_finished_at = created_at + datetime.timedelta(milliseconds=duration)
    if os.listdir(output_dir):
        os.chmod(output_dir, 0o700)  # private as made: the SDK copies a local run's outputs with the source's mode
        result.output = output_dir
    else:
        os.rmdir(output_dir)
    return result if full_result else result.output


def _polling_options(node: FlowNode, options: nextmv.PollingOptions | None, app: App) -> nextmv.PollingOptions:
    """A private copy: the SDK mutates the options it is given, and the stop callback is this node's."""
    if options is None or options is nextmv.DEFAULT_POLLING_OPTIONS:
        polling = app.default_polling_options()
    else:
        polling = copy.deepcopy(options)
    if polling.stop is None:
        polling.stop = functools.partial(_stop_when_canceled, node)
    return polling


def _stop_when_canceled(node: FlowNode) -> bool:
    if node.cancel:
        raise PollingStopped
    return False


def _bypass(settings: Any) -> Any:
    """The node's result without a run: ``bypass_result``, a directory of it copied into a fresh one."""
    from nextmv.run import Format, FormatInput, FormatOutput, Metadata

    metadata = Metadata(
        application_id=settings.app_id,
        application_instance_id=settings.instance_id or "",
        application_version_id="",
        created_at=datetime.datetime.now(datetime.timezone.utc),
        duration=0,
        error="",
        format=Format(format_input=FormatInput(), format_output=FormatOutput()),
        input_size=0,
        output_size=0,
        status_v2=nextmv.StatusV2.succeeded,
    )
    result = nextmv.RunResult(id="bypassed-run", name="bypassed-run", description="", user_email="", metadata=metadata)
    result.output = settings.bypass_result  # assigned, not validated: a bypass output may be any value
    if isinstance(result.output, str) and os.path.isdir(result.output):
        output_dir = new_output_dir()
        try:
            _copy_tree(result.output, output_dir)
        except BaseException:
            shutil.rmtree(output_dir, ignore_errors=True)
            raise
        result.output = output_dir
    return result if settings.full_result else result.output


def _copy_tree(source: str, destination: str) -> None:
    """
    Copy a directory's files into ``destination``, which stays private (0700).

    A symbolic link to a file inside ``source`` is copied as that file; any other link (to a directory, out of
    ``source``, dangling) is refused, so that nothing in the copy leads out of it.

    Raises
    ------
    ValueError
        Naming the first link refused.
    """
    root = os.path.realpath(source)
    for directory, directories, files in os.walk(source):
        for name in directories + files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                continue
            target = os.path.realpath(path)
            if not os.path.isfile(target) or os.path.commonpath([root, target]) != root:
                raise ValueError(
                    f"the bypass_result directory {source} holds the symbolic link {os.path.relpath(path, source)} "
                    f"to {os.readlink(path)}: only links to files inside the directory are copied. "
                    f"Replace the link by a copy of what it points to, or remove it."
                )
    shutil.copytree(source, destination, dirs_exist_ok=True)
    os.chmod(destination, 0o700)  # copytree gave it the source's mode


def _once(action: Callable[[], None]) -> Callable[[], None]:
    """
    A callable doing ``action`` the first time only, whichever thread calls it (the worker or the runner).

    A later call returns once the action is done: the runner must not return while the worker is still canceling.
    """
    lock = threading.Lock()
    pending = [action]

    def call() -> None:
        with lock:
            if pending:
                pending.pop()()

    return call


def _open_app(flow_spec: Any, app_id: str, instance_id: str) -> App:
    src = flow_spec.local_apps.get(app_id)
    if src is not None:
        return LocalApp(app_id, src, instance_id)
    return CloudApp(flow_spec, app_id, instance_id)


def _relay_logs(app: App, run_id: str, node: FlowNode, polling: nextmv.PollingOptions) -> None:
    try:
        app.run_logs_with_polling(run_id, polling, lambda entry: log(app.log_text(entry), step_name=node.id))
    except Exception as error:  # logs are a convenience: never fail the node for them
        if not node.cancel:
            log(f"Live logs of run {run_id} stopped: {error}", step_name=node.id)
