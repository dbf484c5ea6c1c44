"""App runs on this machine, through ``nextmv.local.Application``: no account and no network needed."""

from __future__ import annotations

from typing import Any

from ..utils import log

FAILURE_LOG_LINES = 10
"""How many of its last log lines a failed local run's error shows."""


class LocalApp:
    """
    A local Nextmv application directory, as the shared run code uses it.

    Parameters
    ----------
    app_id : str
        The id the flow uses for the application.
    src : str
        The application's directory (holding ``app.yaml``).
    instance_id : str
        Ignored: local apps have no instances.
    """

    where = "this machine"

    def __init__(self, app_id: str, src: str, instance_id: str = ""):
        from nextmv import local

        self.app_id = app_id
        self.src = src
        self.sdk_app = local.Application(src=src)
        if instance_id:
            log(f"Instance {instance_id!r} is ignored: app {app_id} runs locally from {src}.")

    def new_run(self, **request: Any) -> str:
        """Start a run; ``request`` holds the keyword arguments of the SDK's ``new_run``."""
        return self.sdk_app.new_run(**request)

    def run_url(self, run_id: str) -> str:
        """Where the run's files are."""
        return f"{self.src}/.nextmv/runs/{run_id}"

    def cancel(self, run_id: str) -> None:
        """The SDK cannot stop a local run: polling stops and the run is left to finish on its own."""
        log(f"Stopped waiting for local run {run_id} of app {self.app_id}.")

    def failure_details(self, run_id: str) -> str:
        """The end of a failed local run's logs (the SDK's error text is generic) and where to read them all."""
        try:
            lines = self.sdk_app.run_logs(run_id).rstrip().splitlines()[-FAILURE_LOG_LINES:]
        except Exception:  # the logs are a help for the reader, never a second failure
            lines = []
        tail = "".join(f"\n  {line}" for line in lines)
        return f"{tail}\n(logs: {self.run_url(run_id)}/logs)"

    @staticmethod
    def log_text(entry: Any) -> str:
        """The text of one live log line."""
        return str(entry).rstrip("\n")
