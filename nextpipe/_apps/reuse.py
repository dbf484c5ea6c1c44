"""
The run cache's side of an app run: the run's cache key, reusing a stored run, and storing a new one.

A stored run is reused only when it still exists where it ran, succeeded, and
(on Nextmv Cloud) was made by the app version that its instance runs now.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import nextmv
from nextmv.base_model import BaseModel as SdkModel

from ..graph import FlowNode
from ..run_cache import CacheEntry, cache_key, directory_digest
from ..utils import log
from .cloud import CloudApp
from .local import LocalApp


def _location(app: CloudApp | LocalApp) -> str:
    return app.src if isinstance(app, LocalApp) else app.client.url


def _sent_input(request: dict[str, Any]) -> dict[str, Any]:
    """The input as the SDK sends it (``new_run`` extracts the same data)."""
    if "input_dir_path" in request:
        return {"files": directory_digest(request["input_dir_path"])}
    value = request["input"]
    if isinstance(value, nextmv.Input):
        value = value.data
    elif isinstance(value, SdkModel):
        value = value.to_dict()
    elif not isinstance(value, dict | str):
        value = None  # the SDK sends other models as null
    return {"text": value} if isinstance(value, str) else {"json": value}


def lookup_run(
    flow_spec: Any, node: FlowNode, app: CloudApp | LocalApp, request: dict[str, Any], instance_id: str, output_dir: str
) -> tuple[str | None, nextmv.RunResult | None]:
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
    request : dict
        The keyword arguments of ``new_run`` (``options``, ``input`` or ``input_dir_path``, ``configuration``).
    instance_id : str
        The instance the step asks for.
    output_dir : str
        Where a reused multi-file output is written.

    Returns
    -------
    tuple of (str or None, nextmv.RunResult or None)
        The cache key (``None`` when the step does not use the cache) and the
        reused run's result (``None`` when a new run is needed).
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
        )
    except (TypeError, ValueError, OSError):  # an input the SDK cannot send either: the run reports it
        return None, None
    if refresh:
        return key, None
    entry = cache.get(key)
    if entry is None:
        return key, None
    try:
        result = app.sdk_app.run_result(entry.run_id, output_dir_path=output_dir)
        problem = _not_reusable(app, result)
    except Exception as error:  # gone, or the platform cannot tell: make a new run
        problem = f"it cannot be fetched ({type(error).__name__}: {error})"
    if problem is not None:
        log(f"Not reusing run {entry.run_id} of app {entry.app_id}: {problem}. Making a new run.")
        shutil.rmtree(output_dir, ignore_errors=True)
        os.makedirs(output_dir, exist_ok=True)
        return key, None
    node.run_id = entry.run_id
    log(f"Reused run {entry.run_id} of app {entry.app_id} on {app.where}: {app.run_url(entry.run_id)}")
    if flow_spec.uplink.active:
        flow_spec.uplink.notify_changed()
    return key, result


def _not_reusable(app: CloudApp | LocalApp, result: nextmv.RunResult) -> str | None:
    """Why a stored run's result cannot stand for a new run, or ``None`` when it can."""
    status = getattr(result.metadata.status_v2, "value", result.metadata.status_v2)
    if status != "succeeded":
        return f"it ended {status}"
    if isinstance(app, LocalApp):
        return None  # the key holds the digest of the app's files
    instance_id = app.sdk_app.default_instance_id
    if not instance_id:
        # The platform runs the application's default instance; the stored run tells the one it ran on.
        from nextmv import cloud

        default = cloud.Application.get(client=app.client, id=app.sdk_app.id).default_instance_id
        instance_id = default or result.metadata.application_instance_id
    version = app.sdk_app.instance(instance_id).version_id if instance_id else ""
    made_by = result.metadata.application_version_id or ""
    if made_by != version:
        return f"it was made by app version {made_by!r}, and instance {instance_id!r} now runs version {version!r}"
    return None


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
