"""App runs on Nextmv Cloud, through ``nextmv.cloud.Application``."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import nextmv

from ..utils import log

INITIAL_DELAY_SPREAD = 5.0
"""Seconds over which the first polls of runs with the SDK's default polling options are spread (as the original)."""


class CloudApp:
    """
    A Nextmv Cloud application, as the shared run code uses it.

    Parameters
    ----------
    flow_spec : FlowSpec
        Gives the client (created on first use).
    app_id : str
        The application's id.
    instance_id : str
        The instance to run; empty for the application's default.
    """

    def __init__(self, flow_spec: Any, app_id: str, instance_id: str):
        from nextmv import cloud

        try:
            client = flow_spec._nextmv_client()
        except ValueError as error:  # the SDK's "API key is missing"
            raise RuntimeError(
                f"app {app_id!r} is not mapped to a local app and no Nextmv API key is configured. "
                f"Map it to a local app directory with Configuration(local_apps={{{app_id!r}: 'path/to/app'}}) "
                f"or NEXTPIPE_LOCAL_APPS='{app_id}=path/to/app', or set NEXTMV_API_KEY to run it on Nextmv Cloud."
            ) from error
        self.app_id = app_id
        self.client = client
        self.sdk_app = cloud.Application(client=client, id=app_id)
        if instance_id:
            self.sdk_app.default_instance_id = instance_id

    def new_run(self, **request: Any) -> str:
        """Start a run; ``request`` holds the keyword arguments of the SDK's ``new_run``."""
        return self.sdk_app.new_run(**request)

    def run_result_with_polling(self, run_id: str, polling: nextmv.PollingOptions, output_dir: str) -> nextmv.RunResult:
        """
        Poll for the run's result (the SDK's ``run_result_with_polling``).

        Raises
        ------
        PollingStopped
            When nextpipe's polling ``stop`` callback stopped it.
        AttributeError
            When a user's polling ``stop`` callback returned True (the SDK's way to say it stopped).
        """
        return self.sdk_app.run_result_with_polling(run_id=run_id, polling_options=polling, output_dir_path=output_dir)

    def run_logs_with_polling(
        self, run_id: str, polling: nextmv.PollingOptions, log_func: Callable[[Any], None]
    ) -> None:
        """Relay the run's log entries as they come (the SDK's ``run_logs_with_polling``)."""
        self.sdk_app.run_logs_with_polling(run_id=run_id, polling_options=polling, log_func=log_func)

    @staticmethod
    def default_polling_options() -> nextmv.PollingOptions:
        """The SDK's defaults, with a random first delay that spreads the load of many runs on the platform."""
        polling = nextmv.default_polling_options()
        polling.initial_delay = random.uniform(0, INITIAL_DELAY_SPREAD)
        return polling

    def run_url(self, run_id: str) -> str:
        """The run's page in the Nextmv console."""
        return f"{self.client.console_url}/app/{self.sdk_app.id}/run/{run_id}?view=details"

    def cancel(self, run_id: str) -> None:
        """Cancel the run on the platform; a failure is logged, never raised."""
        try:
            self.sdk_app.cancel_run(run_id)
            log(f"Canceled run {run_id} of app {self.sdk_app.id}.")
        except Exception as error:
            log(f"Could not cancel run {run_id} of app {self.sdk_app.id}: {error}")

    def failure_details(self, run_id: str, logs_shown: bool = False) -> str:
        """Nothing to add: the platform's error text says why a cloud run failed."""
        return ""

    @staticmethod
    def log_text(entry: Any) -> str:
        """The text of one live log entry (the SDK's ``TimestampedRunLog``)."""
        return getattr(entry, "log", str(entry)).rstrip("\n")
