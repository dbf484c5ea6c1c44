"""
App runs on this machine, through ``nextmv.local.Application``: no account and no network needed.

A local run behaves as the same run on Nextmv Cloud: inputs are sent as the cloud path sends them, every
output file comes back, the result's metadata names the app. The SDK starts each run's executor detached, in
a new session, and keeps no handle on it; for the runs it creates, nextpipe starts its own executor
(``local_executor.py``) in its place and keeps the process, so that a run can be stopped (its whole process
group ends and its state reads ``canceled``) and an executor that dies is noticed instead of polled forever.

Both rely on private parts of the SDK. With a nextmv that lacks one of them, local runs still work as the SDK
makes them, with less: nextpipe logs once what is missing and what it costs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import nextmv
from nextmv import local
from nextmv.local import runner
from nextmv.local.local import NEXTMV_DIR, RUNS_KEY

from ..utils import log, log_internal
from .local_executor import FINAL_STATES, missing_sdk_names, record_end

try:
    from nextmv._serialization import deflated_serialize_json
except ImportError:  # reported by LocalApp.new_run: a dict input then goes to the SDK as it is
    deflated_serialize_json = None

FAILURE_LOG_LINES = 10
"""How many of its last log lines a failed local run's error shows."""

_SDK_EXECUTOR = os.path.join(os.path.dirname(runner.__file__), "executor.py")
_EXECUTOR = os.path.join(os.path.dirname(__file__), "local_executor.py")
STOP_GRACE = 2.0
"""Seconds a stopped run's processes get to end on SIGTERM before they are killed."""
TORN_READ_RETRIES = 20
"""How often a read of a run's state is tried in all: the executor rewrites the file in place."""
_logged: set[str] = set()
_logged_lock = threading.Lock()
_started = threading.local()  # in a thread creating a run for nextpipe: ``waiting``, then the executor ``process``


class _Subprocess:
    """
    Stands in for ``subprocess`` in ``nextmv.local.runner``: for a run nextpipe creates, it starts nextpipe's
    executor and keeps its process; other runs (a program's own use of the SDK) start as the SDK starts them.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(args: list[str], **options: Any) -> subprocess.Popen:  # noqa: N802 (the name the SDK calls)
        ours = getattr(_started, "waiting", False) and args[-1] == _SDK_EXECUTOR
        process = subprocess.Popen([*args[:-1], _EXECUTOR] if ours and _sdk_support() else args, **options)
        if ours:
            _started.process = process
        return process


if hasattr(runner, "subprocess"):  # else no run is ours: the SDK's behaviour, reported by LocalApp.new_run
    runner.subprocess = _Subprocess()


@functools.cache
def _sdk_support() -> bool:
    """Whether local runs start in nextpipe's executor; when this nextmv lacks a part of it, log so, once."""
    missing = missing_sdk_names()
    if missing:
        _log_once(
            f"nextmv {nextmv.__version__} lacks {', '.join(missing)}: local app runs start in the SDK's own executor, "
            "so their outputs leave out files named like an input or an app file, their output size reads 0, and a "
            "run whose flow process died goes on. nextmv 1.10.3 to 1.13 have what nextpipe's executor needs."
        )
    return not missing


def _local_polling_interval() -> Callable[[], float]:
    """Poll every 20 ms at first, then at most 5 % of the run's age later (at most every second)."""
    started = time.monotonic()
    return lambda: min(1.0, max(0.02, 0.05 * (time.monotonic() - started)))


class LocalApp:
    """
    A local Nextmv application directory, as the shared run code uses it.

    Parameters
    ----------
    app_id : str
        The id the flow uses for the application; its runs' metadata name it.
    src : str
        The application's directory (holding ``app.yaml``).
    instance_id : str
        Ignored: local apps have no instances.
    """

    def __init__(self, app_id: str, src: str, instance_id: str = ""):
        self.app_id = app_id
        self.src = src
        self.sdk_app = local.Application(src=src, app_id=app_id)
        self._executors: dict[str, subprocess.Popen] = {}
        self._stopping = threading.Lock()  # a cancel and a poll noticing the ended executor record one end
        if instance_id:
            log(f"Instance {instance_id!r} is ignored: app {app_id} runs locally from {src}.")

    def new_run(self, **request: Any) -> str:
        """
        Start a run; ``request`` holds the keyword arguments of the SDK's ``new_run``.

        The input is first made what the cloud path would send: a JSON object is serialised by the SDK's
        encoder (dates become ISO 8601 text), and text (also a ``nextmv.Input`` holding text) is handed to the
        app unchanged, whatever the app's format, so that a JSON document held in a ``str`` reaches a JSON app.
        """
        value = request.get("input")
        if isinstance(value, nextmv.Input) and value.input_format in ("json", "text"):
            value = value.data
        if isinstance(value, dict) and deflated_serialize_json is None:
            _log_once(
                f"nextmv {nextmv.__version__} lacks nextmv._serialization.deflated_serialize_json: a JSON input "
                "goes to a local app as the SDK sends it (a date in it fails the run)."
            )
        elif isinstance(value, dict):
            request["input"] = json.loads(deflated_serialize_json(value))
        if isinstance(value, str):
            request["input"] = value
            request["configuration"] = _text_configuration(request.get("configuration"))
        elif request.get("configuration") is not None:  # the executor needs its format, which the cloud resolves
            request["configuration"] = _copy(request["configuration"])
            request["configuration"].resolve(input=request.get("input"), dir_path=request.get("input_dir_path"))
        _started.waiting, _started.process = True, None
        try:
            run_id = self.sdk_app.new_run(**request)
        finally:
            _started.waiting = False
        if _started.process is None:
            _log_once(
                f"nextmv {nextmv.__version__} starts local runs in a way nextpipe does not know: a local run cannot "
                "be stopped (its app runs on after the flow failed or was interrupted), and a run whose executor "
                "died is waited for until the polling's max_duration."
            )
        self._executors[run_id] = _started.process
        return run_id

    def run_url(self, run_id: str) -> str:
        """Where the run's files are."""
        return os.path.join(self.src, NEXTMV_DIR, RUNS_KEY, run_id)

    def run_result_with_polling(self, run_id: str, polling: nextmv.PollingOptions, output_dir: str) -> nextmv.RunResult:
        """
        Poll for the run's result (the SDK's ``run_result_with_polling``).

        Polling also stops when the run's executor ended: a run it left unfinished is recorded as failed.
        A poll that read the state half-written is tried again.

        Raises
        ------
        PollingStopped
            When nextpipe's polling ``stop`` callback stopped it.
        AttributeError
            When a user's polling ``stop`` callback returned True (the SDK's way to say it stopped).
        """
        executor = self._executors[run_id]
        if executor is not None:
            polling.stop = functools.partial(_stop_when_ended, polling.stop or (lambda: False), executor)
        try:
            result = _retrying_torn_reads(
                polling,
                lambda: self.sdk_app.run_result_with_polling(
                    run_id=run_id, polling_options=polling, output_dir_path=output_dir
                ),
            )
        except _ExecutorEnded:  # it records the run's final state before it ends
            with self._stopping:
                state = self._state(run_id)
                if state is None or state["metadata"]["status_v2"] not in FINAL_STATES:
                    _end_processes(executor)  # the app may outlive a killed executor
                    code = executor.returncode
                    error = f"its executor process ended (exit code {code}) unfinished"
                    record_end(self._state_file(run_id), "failed", error)
            result = self.sdk_app.run_result(run_id, output_dir_path=output_dir)
        result.console_url = self.run_url(run_id)
        return result

    def run_logs_with_polling(
        self, run_id: str, polling: nextmv.PollingOptions, log_func: Callable[[str], None]
    ) -> None:
        """Relay the run's log lines as they come (the SDK's ``run_logs_with_polling``), each line once."""
        relayed = seen = 0  # lines relayed so far, and seen by this poll: a poll tried again starts from the first

        def relay(line: str) -> None:
            nonlocal relayed, seen
            seen += 1
            if seen > relayed:
                relayed = seen
                log_func(line)

        def follow() -> None:
            nonlocal seen
            seen = 0
            self.sdk_app.run_logs_with_polling(run_id=run_id, polling_options=polling, log_func=relay)

        _retrying_torn_reads(polling, follow)

    def cancel(self, run_id: str) -> None:
        """End the run's processes (the executor, ``uv`` and the app) and record the run as canceled."""
        with self._stopping:
            before = self._state(run_id)
            if self._executors[run_id] is not None:
                _end_processes(self._executors[run_id])
            record_end(self._state_file(run_id), "canceled", "", before)
        log(f"Canceled local run {run_id} of app {self.app_id}.")

    def failure_details(self, run_id: str, logs_shown: bool = False) -> str:
        """
        Where to read a failed local run's logs, after their last lines unless ``logs_shown`` (the SDK's error
        text is generic: "Run failed, please check logs for details.").
        """
        lines = []
        if not logs_shown:
            try:
                lines = self.sdk_app.run_logs(run_id).rstrip().splitlines()[-FAILURE_LOG_LINES:]
            except Exception:  # the logs are a help for the reader, never a second failure
                pass
        tail = "".join(f"\n  {line}" for line in lines)
        return f"{tail}\n(logs: {self.run_url(run_id)}/logs)"

    @staticmethod
    def log_text(entry: Any) -> str:
        """The text of one live log line."""
        return str(entry).rstrip("\n")

    @staticmethod
    def default_polling_options() -> nextmv.PollingOptions:
        """Tight polling from the start (a local run has no platform to spare), slower as the run gets older."""
        return nextmv.PollingOptions(
            initial_delay=0, backoff=0, jitter=0, sleep_duration_func=_local_polling_interval()
        )

    def _state_file(self, run_id: str) -> str:
        return os.path.join(self.run_url(run_id), f"{run_id}.json")

    def _state(self, run_id: str) -> dict[str, Any] | None:
        """The run's recorded information, or None when it cannot be read whole."""
        for attempt in range(TORN_READ_RETRIES):
            try:
                with open(self._state_file(run_id), encoding="utf-8") as file:
                    return json.load(file)
            except json.JSONDecodeError:
                if attempt < TORN_READ_RETRIES - 1:
                    time.sleep(0.01)
            except OSError:
                return None
        return None


class _ExecutorEnded(Exception):
    """The run's executor process ended: the run's state is final, or the executor died."""


def _stop_when_ended(stop: Callable[[], bool], executor: subprocess.Popen) -> bool:
    if stop():
        return True
    if executor.poll() is not None:
        raise _ExecutorEnded
    return False


def _retrying_torn_reads(polling: nextmv.PollingOptions, poll: Callable[[], Any]) -> Any:
    """Return what ``poll`` returns, polling again at once while it reads the run's state half-written."""
    for attempt in range(TORN_READ_RETRIES):
        try:
            return poll()
        except json.JSONDecodeError:
            if attempt == TORN_READ_RETRIES - 1:
                raise
            polling.initial_delay = 0.01


def _log_once(text: str) -> None:
    """Log a text the first time only: it says what a whole process loses."""
    with _logged_lock:
        if text in _logged:
            return
        _logged.add(text)
    log_internal(text)


def _copy(configuration: Any) -> nextmv.RunConfiguration:
    """A copy of a run configuration (a ``RunConfiguration``, its dict, or ``None`` for an empty one)."""
    if isinstance(configuration, dict):
        return nextmv.RunConfiguration.from_dict(configuration)
    return copy.deepcopy(configuration) if configuration is not None else nextmv.RunConfiguration()


def _text_configuration(configuration: Any) -> nextmv.RunConfiguration:
    """The run configuration with which the local executor hands text to the app unchanged."""
    configuration = _copy(configuration)
    if configuration.format is None:
        configuration.resolve(input="")  # text in, JSON out
    configuration.format.format_input.input_type = nextmv.InputFormat.TEXT
    return configuration


def _end_processes(executor: subprocess.Popen) -> None:
    """End the process group of a run's executor: the SDK starts it in a session of its own, with uv and the app."""
    if not hasattr(os, "killpg"):
        executor.kill()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(executor.pid, signal.SIGTERM)
        try:
            executor.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(executor.pid, signal.SIGKILL)
            executor.wait()
