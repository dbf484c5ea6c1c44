"""What every app backend shares: the run request, live logs, polling, and the node's result."""

from __future__ import annotations

import copy
import datetime
import json
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import nextmv
import pydantic

from ..constants import ENV_APP_ID, ENV_RUN_ID
from ..errors import AppRunError
from ..graph import FlowNode
from ..schema import AppRunConfig
from ..utils import log
from .cloud import CloudApp
from .local import LocalApp

# The original spreads the first polls of many runs over this many seconds.
INITIAL_DELAY_SPREAD = 5.0
# How long the live log relay may outlive the run's result.
LOG_RELAY_GRACE = 2.0
# How often a poll that read a half-written local run state is tried in all.
TORN_READ_RETRIES = 20
_FINAL_FAILURE_STATES = ("failed", "canceled")


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


def _polling_options(node: FlowNode, options: nextmv.PollingOptions) -> nextmv.PollingOptions:
    """A private copy: the SDK mutates the options it is given, and the stop callback is this node's."""
    polling = copy.deepcopy(options) if options is not None else nextmv.default_polling_options()
    if options is nextmv.DEFAULT_POLLING_OPTIONS:
        polling.initial_delay = random.uniform(0, INITIAL_DELAY_SPREAD)
    if polling.stop is None:
        polling.stop = lambda: node.cancel
    return polling


def _bypassed_result(app_id: str, instance_id: str, output: Any) -> nextmv.RunResult:
    from nextmv.run import Format, FormatInput, FormatOutput, Metadata

    metadata = Metadata(
        application_id=app_id,
        application_instance_id=instance_id or "",
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
    result.output = output  # assigned, not validated: a bypass output may be any value, not only a dict
    return result


def _copy_tree(source: str, destination: str) -> None:
    """Copy a directory's content without following symbolic links out of it."""
    shutil.copytree(source, destination, symlinks=True, dirs_exist_ok=True)


def _status(result: nextmv.RunResult) -> str:
    status = result.metadata.status_v2
    return getattr(status, "value", str(status))


def _once(action: Callable[[], None]) -> Callable[[], None]:
    """A callable doing ``action`` the first time only, whichever thread calls it (the worker or the runner)."""
    first = threading.Lock()

    def call() -> None:
        if first.acquire(blocking=False):
            action()

    return call


def _open_app(flow_spec: Any, app_id: str, instance_id: str) -> CloudApp | LocalApp:
    src = flow_spec.local_apps.get(app_id)
    if src is not None:
        return LocalApp(app_id, src, instance_id)
    return CloudApp(flow_spec, app_id, instance_id)


def _relay_logs(app: CloudApp | LocalApp, run_id: str, node: FlowNode, polling: nextmv.PollingOptions) -> None:
    try:
        app.sdk_app.run_logs_with_polling(
            run_id=run_id,
            polling_options=copy.copy(polling),
            log_func=lambda entry: log(app.log_text(entry), step_name=node.id),
        )
    except Exception as error:  # logs are a convenience: never fail the node for them
        if not node.cancel:
            log(f"Live logs of run {run_id} stopped: {error}", step_name=node.id)


def _result_with_polling(
    app: CloudApp | LocalApp, run_id: str, polling: nextmv.PollingOptions, output_dir: str
) -> nextmv.RunResult:
    # A local run's executor rewrites its state file in place, so a poll may read it half-written.
    for _ in range(TORN_READ_RETRIES - 1):
        try:
            return app.sdk_app.run_result_with_polling(
                run_id=run_id, polling_options=polling, output_dir_path=output_dir
            )
        except json.JSONDecodeError:
            polling.initial_delay = 0.05
    return app.sdk_app.run_result_with_polling(run_id=run_id, polling_options=polling, output_dir_path=output_dir)


def run_app(flow_spec: Any, node: FlowNode, app_input: Any) -> Any:
    """
    Run an app step's application for one node and return the node's result.

    Parameters
    ----------
    flow_spec : FlowSpec
        The flow.
    node : FlowNode
        The node; its ``run_id`` is set as soon as the run exists.
    app_input : Any
        An ``AppRunConfig``, an upstream ``RunResult``, a directory path, or a JSON value.

    Returns
    -------
    Any
        See the contract's section 5.

    Raises
    ------
    RuntimeError
        When the run ends failed or canceled, naming the app, the run and the platform's error.
    """
    settings = node.parent.definition.app
    app_id = settings.app_id
    options = dict(settings.options)
    run_configuration = settings.run_configuration
    instance_id = settings.instance_id
    name = default_run_name(node.id, app_id)
    description = default_run_description(app_id)
    if isinstance(app_input, AppRunConfig):
        options.update(app_input.get_options())
        name = app_input.name or name
        description = app_input.description or description
        run_configuration = app_input.run_configuration or run_configuration
        instance_id = app_input.instance_id or instance_id
        app_input = app_input.input
    elif isinstance(app_input, nextmv.RunResult):
        app_input = app_input.output

    output_dir = tempfile.mkdtemp(prefix="nextpipe_output_")
    try:
        if settings.bypass_result is not None:
            result = _bypassed_result(app_id, instance_id, settings.bypass_result)
            if isinstance(result.output, str) and os.path.isdir(result.output):
                _copy_tree(result.output, output_dir)
        else:
            result = _run(
                flow_spec,
                node,
                app_id,
                instance_id,
                options,
                name,
                description,
                run_configuration,
                app_input,
                output_dir,
            )
        if os.listdir(output_dir):
            result.output = output_dir
        else:
            os.rmdir(output_dir)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise
    return result if settings.full_result else result.output


def _run(
    flow_spec: Any,
    node: FlowNode,
    app_id: str,
    instance_id: str,
    options: dict[str, str],
    name: str,
    description: str,
    run_configuration: Any,
    app_input: Any,
    output_dir: str,
) -> nextmv.RunResult:
    settings = node.parent.definition.app
    app = _open_app(flow_spec, app_id, instance_id)
    request: dict[str, Any] = {"options": options, "name": name, "description": description}
    if isinstance(app_input, str) and os.path.isdir(app_input):
        request["input_dir_path"] = app_input
    elif isinstance(app_input, dict | str | nextmv.Input | pydantic.BaseModel):
        request["input"] = app_input
    else:
        # The SDK would silently send such an input as null.
        raise TypeError(
            f"the input of app {app_id} must be a JSON object (dict), a string, a directory path, an AppRunConfig "
            f"or an upstream RunResult; got {type(app_input).__name__}"
        )
    if run_configuration is not None:
        request["configuration"] = run_configuration
    node.run_created = threading.Event()  # the runner waits on it before it gives up on this run
    try:
        run_id = app.new_run(**request)
        node.run_id = run_id
        node.cancel_run = _once(lambda: app.cancel(run_id))
        if node.cancel:  # the flow stopped while the run was being created
            node.cancel_run()
    except TypeError as error:
        raise TypeError(f"the input of app {app_id} cannot be sent as JSON: {error}") from error
    finally:
        node.run_created.set()
    log(f"Started run {run_id} of app {app_id} on {app.where}: {app.run_url(run_id)}")
    if flow_spec.uplink.active:
        flow_spec.uplink.notify_changed()

    polling = _polling_options(node, settings.polling_options)
    relay = None
    if settings.emit_live_logs:
        relay = threading.Thread(
            target=_relay_logs, args=(app, run_id, node, polling), name=f"nextpipe-logs-{node.id}", daemon=True
        )
        relay.start()
    try:
        result = _result_with_polling(app, run_id, polling, output_dir)
    except AttributeError:
        # The SDK's poll returns None when our stop callback fired, then fails reading it.
        if node.cancel:
            raise RuntimeError(f"run {run_id} of app {app_id} was canceled because the flow stopped") from None
        raise
    finally:
        node.cancel_run = None
    if relay is not None:
        relay.join(LOG_RELAY_GRACE)

    status = _status(result)
    if status in _FINAL_FAILURE_STATES:
        error_log = getattr(result, "error_log", None)
        error = result.metadata.error or getattr(error_log, "error", None) or "no error message"
        error += app.failure_details(run_id)
        node.error = error
        raise AppRunError(f"run {run_id} of app {app_id} ended {status}: {error}", app_id, run_id, status)
    return result
