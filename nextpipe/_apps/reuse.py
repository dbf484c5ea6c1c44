"""
The run cache's side of an app run: the run's cache key, reusing a stored run, and storing a new one.

A stored run is reused only when it still exists where it ran, succeeded, and
(on Nextmv Cloud) was made by the app version that its instance runs now.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import nextmv

from ..errors import AppRunError
from ..graph import FlowNode
from ..run_cache import CacheEntry, cache_key, directory_digest
from ..utils import log_internal
from . import new_output_dir
from .cloud import CloudApp
from .local import LocalApp


def _location(app: CloudApp | LocalApp) -> str:
    return app.src if isinstance(app, LocalApp) else app.client.url


def _sent_input(request: dict[str, Any]) -> dict[str, Any]:
    """The input as the SDK sends it: a directory's files, a ``nextmv.Input``'s data, text, or a JSON object."""
    if "input_dir_path" in request:
        return {"files": directory_digest(request["input_dir_path"])}
    value = request["input"]
    if isinstance(value, nextmv.Input):
        value = value.data
    return {"text": value} if isinstance(value, str) else {"json": value}


def lookup_run(
    flow_spec: Any, node: FlowNode, app: CloudApp | LocalApp, instance_id: str, request: dict[str, Any]
) -> tuple[str | None, tuple[nextmv.RunResult, str] | None]:
    """
    Compute an app node's cache key and reuse the stored run it names.

    Parameters
    ----------
    flow_spec : FlowSpec
        The flow; its ``run_cache`` is ``None`` when no step uses the cache.
    node : FlowNode
        The node; its ``run_id`` becomes the reused run's id.
    app : CloudApp or LocalApp
        Where the run would be made.
    instance_id : str
        The instance the step asks for.
    request : dict
        The keyword arguments of ``new_run`` (``options``, ``input`` or ``input_dir_path``, ``configuration``).

    Returns
    -------
    tuple of (str or None, tuple of (nextmv.RunResult, str) or None)
        The cache key (``None`` when the step does not use the cache), and the
        reused run's result with the fresh directory holding its output files
        (``None`` when a new run is needed).

    Raises
    ------
    AppRunError
        When the node was stopped (its attempt timed out, or the flow stopped) while the stored run was read.
    """
    cache = flow_spec.run_cache
    if cache is None:
        return None, None
    definition = node.parent.definition
    used, refresh = cache.settings(definition)
    if not used:
        return None, None
    if isinstance(app, LocalApp):
        code = {"local": app.src, "files": cache.code_digest(app.src)}
    else:
        code = {"cloud": app.client.url}
    try:
        key = cache_key(
            definition.app.app_id,
            instance_id,
            request["options"],
            request.get("configuration"),
            _sent_input(request),
            code,
            node.index if definition.is_repeat() else None,
        )
    except (TypeError, ValueError, OSError):  # an input the SDK cannot send either: the run reports it
        return None, None
    if refresh:
        return key, None
    entry = cache.get(key)
    if entry is None:
        return key, None
    output_dir = new_output_dir()
    try:
        result, problem = _fetch(app, entry.run_id, output_dir)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise
    if node.cancel:  # the attempt timed out, or the flow stopped, while the platform answered: reuse nothing
        shutil.rmtree(output_dir, ignore_errors=True)
        raise AppRunError(f"reusing run {entry.run_id} of app {entry.app_id} was stopped", entry.app_id)
    if problem is not None:
        log_internal(f"Not reusing run {entry.run_id} for app step {node.id}: {problem}. Making a new run.")
        shutil.rmtree(output_dir, ignore_errors=True)
        return key, None
    node.run_id = entry.run_id
    if isinstance(app, LocalApp):
        result.console_url = app.run_url(entry.run_id)  # as a new local run's result
    log_internal(f"Reused run {entry.run_id} for app step {node.id}, find it at {app.run_url(entry.run_id)}")
    if flow_spec.uplink.active:
        flow_spec.uplink.notify_changed()
    return key, (result, output_dir)


def _fetch(app: CloudApp | LocalApp, run_id: str, output_dir: str) -> tuple[Any, str | None]:
    """A stored run's result, or why it cannot stand for a new run (then the result is ``None``)."""
    try:
        result = app.sdk_app.run_result(run_id, output_dir_path=output_dir)
    except Exception as error:  # deleted, or the platform cannot be read: make a new run
        return None, f"it cannot be fetched ({type(error).__name__}: {error})"
    status = getattr(result.metadata.status_v2, "value", result.metadata.status_v2)
    if status != "succeeded":
        return None, f"it ended {status}"
    if isinstance(app, LocalApp):
        return result, None  # the key holds the digest of the app's files
    try:
        instance_id, version = _instance_version(app, result.metadata.application_instance_id)
    except Exception as error:
        return None, f"the app version its instance runs cannot be read ({type(error).__name__}: {error})"
    made_by = result.metadata.application_version_id or ""
    if made_by != version:
        return None, f"it was made by app version {made_by!r}, and instance {instance_id!r} now runs {version!r}"
    return result, None


def _instance_version(app: CloudApp, ran_on: str) -> tuple[str, str]:
    """
    The instance a new run would use and the app version it runs now ("" without an instance).

    The step's instance, else the application's default instance, else the one the stored run ran on (``ran_on``).
    """
    instance_id = app.sdk_app.default_instance_id
    if not instance_id:
        from nextmv import cloud

        instance_id = cloud.Application.get(client=app.client, id=app.app_id).default_instance_id or ran_on
    return instance_id, app.sdk_app.instance(instance_id).version_id if instance_id else ""


def record_run(flow_spec: Any, node: FlowNode, app: CloudApp | LocalApp, key: str, run_id: str) -> None:
    """
    Store a succeeded run under its cache key, in place of any earlier one.

    Parameters
    ----------
    flow_spec : FlowSpec
        The flow, whose ``run_cache`` is set.
    node : FlowNode
        The node that made the run.
    app : CloudApp or LocalApp
        Where the run was made.
    key : str
        The run's cache key, from :func:`lookup_run`.
    run_id : str
        The run.
    """
    app_id = node.parent.definition.app.app_id
    flow_spec.run_cache.put(CacheEntry(key, app_id, _location(app), run_id, "succeeded", time.time(), node.id))
