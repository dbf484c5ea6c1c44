"""
App steps: running a Nextmv application for a node.

``run.py`` holds what every backend shares (the run request, creating a run,
fetching its result, stopping it, the node's result); ``cloud.py`` and
``local.py`` are the backends, and ``local_executor.py`` is the process a local
run executes in. This package's own module stays free of SDK imports, so that
checking a flow's local app mapping costs nothing.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ..constants import ENV_LOCAL_APPS
from ..graph import FlowDefinitionError, FlowGraph, FlowNode


class PollingStopped(Exception):
    """
    Raised by nextpipe's polling ``stop`` callbacks to end the SDK's polling of a run.

    The SDK's own way, a callback returning True, prints "polling | stop condition met" on stderr for every run.
    """


OUTPUT_DIR_PREFIX = "nextpipe_output_"
"""Prefix of the temporary directories that receive an app node's output files (as in the original)."""


def new_output_dir() -> str:
    """A fresh private (0700) temporary directory for an app node's output files; the caller removes it."""
    return tempfile.mkdtemp(prefix=OUTPUT_DIR_PREFIX)


def parse_local_apps(value: str) -> dict[str, str]:
    """
    Parse a ``NEXTPIPE_LOCAL_APPS`` value.

    Parameters
    ----------
    value : str
        ``app_id=directory`` pairs separated by ``;``.

    Returns
    -------
    dict of str to str
        App ids mapped to directories, as written.

    Raises
    ------
    ValueError
        When a pair has no ``=`` or an empty side.
    """
    mapping = {}
    for entry in value.split(";"):
        if not entry.strip():
            continue
        app_id, sep, directory = entry.partition("=")
        if not sep or not app_id.strip() or not directory.strip():
            raise ValueError(f"{ENV_LOCAL_APPS} entries must look like 'app_id=directory', got {entry!r}.")
        mapping[app_id.strip()] = directory.strip()
    return mapping


def check_local_apps(graph: FlowGraph, config: Any) -> dict[str, str]:
    """
    Resolve the local app directories of a flow's app steps.

    Parameters
    ----------
    graph : FlowGraph
        The flow's graph.
    config : Configuration
        Its ``local_apps`` complete ``NEXTPIPE_LOCAL_APPS`` and win over it.

    Returns
    -------
    dict of str to str
        App ids of the flow's app steps that run locally, mapped to absolute directories.

    Raises
    ------
    FlowDefinitionError
        When a mapped directory does not exist, is a file or holds no ``app.yaml``; the message names the step.
    ValueError
        When the flow has app steps and ``NEXTPIPE_LOCAL_APPS`` is malformed.
    """
    app_steps = [step for step in graph.steps if step.definition.is_app()]
    if not app_steps:  # the variable is meant for app steps: a malformed value must not break other flows
        return {}
    mapping = parse_local_apps(os.environ.get(ENV_LOCAL_APPS, ""))
    mapping.update(config.local_apps or {})
    resolved = {}
    for step in app_steps:
        app_id = step.definition.get_app_id()
        if app_id not in mapping:
            continue
        directory = os.path.abspath(os.path.expanduser(mapping[app_id]))
        if not os.path.exists(directory):
            problem = "does not exist"
        elif not os.path.isdir(directory):
            problem = "is not a directory (map the app id to the directory that holds app.yaml)"
        elif not os.path.isfile(os.path.join(directory, "app.yaml")):
            problem = "holds no app.yaml manifest"
        else:
            resolved[app_id] = directory
            continue
        raise FlowDefinitionError(
            f"Step {step.definition.get_id()}: app {app_id!r} is mapped to the local app directory "
            f"{directory}, which {problem}."
        )
    return resolved


def run_app_node(flow_spec: Any, node: FlowNode, app_input: Any) -> Any:
    """
    Run the application of an app step's node and return the node's result.

    Parameters
    ----------
    flow_spec : FlowSpec
        The flow; gives the client and the local app mapping.
    node : FlowNode
        The node.
    app_input : Any
        The node's single input.

    Returns
    -------
    Any
        The run's output, a directory of output files, or the whole ``RunResult`` (``full_result``).
    """
    from .run import run_app

    return run_app(flow_spec, node, app_input)
