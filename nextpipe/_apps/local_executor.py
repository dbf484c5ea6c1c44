"""
The executor of a local run as nextpipe starts it: the SDK's ``nextmv.local.executor`` with four changes.

- Every file the app wrote or changed under its solutions directory is an output, whatever its name, as on
  Nextmv Cloud. (The SDK leaves out files named like an input file, a statistics, metrics or assets file, or a
  file of the app's source anywhere in it.)
- The run's metadata holds its output size (the SDK records it, then overwrites it with 0).
- SIGTERM, which nextpipe sends to stop a run, unwinds the executor, so that its working copy of the app is
  removed, and the run is recorded as canceled.
- A run whose nextpipe process ended without stopping it (killed, crashed) stops: nothing else would.

``local.py`` starts this file by path instead of the SDK's executor (only when :func:`missing_sdk_names` finds
nothing missing); it reads the same payload on stdin. Imported, the module imports nothing of the SDK's: it
defines :func:`record_end` and :func:`missing_sdk_names`, which ``local.py`` shares.
"""

import filecmp
import importlib
import inspect
import json
import os
import shutil
import signal
import threading
import time
from typing import Any

SDK_NAMES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "nextmv.local.executor": {
        "main": (),
        "execute_run": ("run_id", "run_dir"),
        "process_run_output": ("temp_src",),
        "_process_run_information": ("run_id", "run_dir", "result"),
        "_copy_new_or_modified_files": ("runtime_dir", "dst_dir", "original_src_dir", "manifest", "exclusion_dirs"),
    },
    "nextmv.local.local": {"calculate_files_size": ("run_dir", "run_id", "dir_path", "metadata_key")},
    "nextmv.manifest": {"MANIFEST_FILE_NAME": None, "find_files": ("app_dir", "filters")},
    "nextmv.output": {"OUTPUTS_KEY": None, "SOLUTIONS_KEY": None},
}
"""The SDK's (mostly private) names this executor relies on, by module: a function with the parameters it uses."""
PARENT_CHECK = 0.2
"""Seconds between two checks that nextpipe's process still runs."""
FINAL_STATES = ("succeeded", "failed", "canceled")
_working_copy = ""  # the run's copy of the app (the app's working directory), known once the app ran


def record_end(state_file: str, status: str, error: str, fallback: dict[str, Any] | None = None) -> None:
    """
    Record an unfinished run as ended: ``status`` (``canceled``, ``failed``) and ``error`` in its state file.

    Parameters
    ----------
    state_file : str
        The run's ``<run id>.json``.
    status, error : str
        What to record.
    fallback : dict, optional
        The state to record them in when the file holds none that can be read (left half-written).
    """
    try:
        with open(state_file, encoding="utf-8") as file:
            state = json.load(file)
    except (OSError, ValueError):
        state = fallback
    if state is None or state["metadata"]["status_v2"] in FINAL_STATES:
        return
    state["metadata"].update(status_v2=status, error=error)
    with open(f"{state_file}.nextpipe", "w", encoding="utf-8") as file:
        json.dump(state, file, indent=2)
    os.replace(f"{state_file}.nextpipe", state_file)  # a poll reads the old state or the new one, never a mix


def missing_sdk_names() -> list[str]:
    """
    Name what this executor relies on (:data:`SDK_NAMES`) that the installed nextmv lacks.

    Returns
    -------
    list of str
        The dotted names missing, or found without a parameter this executor passes or receives; empty when
        the executor can run.
    """
    missing = []
    for module_name, names in SDK_NAMES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
            continue
        for name, parameters in names.items():
            value = getattr(module, name, None)
            if value is None or (parameters and not set(parameters) <= inspect.signature(value).parameters.keys()):
                missing.append(f"{module_name}.{name}")
    return missing


_sdk: dict[str, Any] = {}  # the SDK executor's functions this module replaces, by name


def _execute_run(**arguments: Any) -> None:
    try:
        _sdk["execute_run"](**arguments)
    except SystemExit:  # stopped
        record_end(os.path.join(arguments["run_dir"], f"{arguments['run_id']}.json"), "canceled", "")
        raise


def _end_when_orphaned(parent: int) -> None:
    """Stop the run (this process group: the SDK starts the executor in a session of its own) once ``parent`` ended."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    os.killpg(0, signal.SIGTERM)


def _process_run_output(**arguments) -> None:
    global _working_copy
    _working_copy = arguments["temp_src"]
    _sdk["process_run_output"](**arguments)


def _process_run_information(run_id: str, run_dir: str, result: object) -> None:
    from nextmv.local.local import calculate_files_size
    from nextmv.output import OUTPUTS_KEY, SOLUTIONS_KEY

    solutions = os.path.join(run_dir, OUTPUTS_KEY, SOLUTIONS_KEY)
    calculate_files_size(run_dir, run_id, solutions, metadata_key="output_size")
    _sdk["_process_run_information"](run_id=run_id, run_dir=run_dir, result=result)


def _copy_outputs(
    runtime_dir: str, dst_dir: str, original_src_dir: str, manifest: Any, exclusion_dirs: object = None
) -> None:
    """Copy every file under ``runtime_dir`` but the app's own files left unchanged (and compiled modules)."""
    from nextmv.manifest import MANIFEST_FILE_NAME, find_files

    unchanged = {os.path.normpath(os.path.join(_working_copy, MANIFEST_FILE_NAME))}  # the executor wrote it
    for source in find_files(original_src_dir, manifest.files)[2]:
        copy = os.path.normpath(os.path.join(_working_copy, source["interior_path"]))
        # shallow: equal when size and modification time are (the executor's copy2 keeps them), else by content
        if os.path.isfile(copy) and filecmp.cmp(copy, source["absolute_path"]):
            unchanged.add(copy)
    for root, directories, files in os.walk(runtime_dir):
        directories[:] = [name for name in directories if name != "__pycache__"]
        for name in files:
            path = os.path.normpath(os.path.join(root, name))
            if path in unchanged or name.endswith(".pyc"):
                continue
            target = os.path.join(dst_dir, os.path.relpath(path, runtime_dir))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(path, target)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    threading.Thread(target=_end_when_orphaned, args=(os.getppid(),), daemon=True).start()
    from nextmv.local import executor

    for name, replacement in {
        "execute_run": _execute_run,
        "process_run_output": _process_run_output,
        "_process_run_information": _process_run_information,
        "_copy_new_or_modified_files": _copy_outputs,
    }.items():
        _sdk[name] = getattr(executor, name)
        setattr(executor, name, replacement)
    executor.main()
