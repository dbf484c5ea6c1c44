"""Configuration of a flow's execution."""

import os
from dataclasses import dataclass

from dataclasses_json import DataClassJsonMixin

from .constants import DEFAULT_CACHE_MAX_AGE


@dataclass
class Configuration(DataClassJsonMixin):
    """
    How a flow is executed.

    Parameters
    ----------
    thread_count : int, default=0
        Number of worker threads running nodes; 0 means
        ``nextpipe.threads.DEFAULT_MAX_THREADS`` (24).
    max_step_inputs : int, default=50
        Most inputs (and so nodes) a step with predecessors may get; more fails the run.
    local_apps : dict of str to str, optional
        Maps app ids to local app directories (holding an ``app.yaml``). App
        steps of a mapped app run on this machine through ``nextmv.local``
        instead of Nextmv Cloud. Completes the ``NEXTPIPE_LOCAL_APPS``
        environment variable and wins over it for an id in both. Directories
        given as ``pathlib.Path`` are kept as strings.
    summary : bool, default=True
        Log a table of the run (per step: node counts, durations, app runs) when
        it ends; ``FlowSpec.summary()`` works either way.
    progress : bool, default=True
        Show a live display of the steps while the flow runs, where it applies:
        on an interactive terminal, not in CI nor in a Nextmv run
        (``NEXTPIPE_PROGRESS=0`` turns it off too).
    cache : bool, default=False
        Whether every app step uses the run cache (``@cache`` decides per
        step): a step whose run was made before with the same inputs reuses
        that run instead of paying for a new one.
    cache_dir : str, optional
        Directory of the run cache (a ``pathlib.Path`` is kept as a string;
        a relative path is resolved when the flow is constructed); by default
        ``$NEXTPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/nextpipe``, else
        ``~/.cache/nextpipe``.
    cache_max_age : float or None, default=604800
        Seconds (7 days by default) after which a stored run is no longer
        reused; ``None`` for never.
    app_concurrency : dict of str to int, optional
        Most runs of an application that the flow's nodes have in progress at
        once, by app id (an account's parallel-run quota), shared by every
        step running that app. Nodes over the limit wait, ``pending``, without
        holding a worker thread.
    tolerate_failed_app_runs : bool, default=False
        Restore nextpipe 0.7.3's handling of app runs that end failed or
        canceled: the node is marked ``failed``, its successors receive
        ``None`` and the flow goes on. By default such a run fails the flow.

    Raises
    ------
    ValueError
        When ``thread_count`` is negative, ``max_step_inputs`` is below 1, ``local_apps`` holds an
        empty app id or directory, ``cache`` is not a bool, ``cache_max_age`` is not a positive number,
        or an ``app_concurrency`` limit is not a whole number of 1 or more.
    TypeError
        When ``local_apps`` is not a dict of app ids to directory paths,
        ``cache_dir`` is not a path, or ``app_concurrency`` not a dict.
    """

    thread_count: int = 0
    max_step_inputs: int = 50
    local_apps: dict[str, str] | None = None
    summary: bool = True
    progress: bool = True
    cache: bool = False
    cache_dir: str | None = None
    cache_max_age: float | None = DEFAULT_CACHE_MAX_AGE
    app_concurrency: dict[str, int] | None = None
    tolerate_failed_app_runs: bool = False

    def __post_init__(self) -> None:
        for switch in ("summary", "progress", "cache", "tolerate_failed_app_runs"):
            if not isinstance(getattr(self, switch), bool):
                raise ValueError(f"Configuration.{switch} must be True or False, got {getattr(self, switch)!r}.")
        if isinstance(self.thread_count, bool) or not isinstance(self.thread_count, int) or self.thread_count < 0:
            raise ValueError(
                f"Configuration.thread_count must be a whole number of 0 (the default of 24 threads) or more, "
                f"got {self.thread_count!r}."
            )
        if (
            isinstance(self.max_step_inputs, bool)
            or not isinstance(self.max_step_inputs, int)
            or self.max_step_inputs < 1
        ):
            raise ValueError(
                f"Configuration.max_step_inputs must be a whole number of 1 or more, got {self.max_step_inputs!r}."
            )
        local_apps = self.local_apps
        if local_apps is not None and (
            not isinstance(local_apps, dict)
            or not all(isinstance(k, str) and isinstance(v, str | os.PathLike) for k, v in local_apps.items())
        ):
            raise TypeError(
                "Configuration.local_apps must be a dict of app ids to local app directories, "
                f'e.g. {{"echo": "apps/echo"}}, got {type(local_apps).__name__} {local_apps!r}.'
            )
        if local_apps is not None:
            self.local_apps = {app_id: os.fspath(directory) for app_id, directory in local_apps.items()}
            empty = [
                app_id for app_id, directory in self.local_apps.items() if not app_id.strip() or not directory.strip()
            ]
            if empty:  # an empty path would silently be the working directory
                raise ValueError(
                    f"Configuration.local_apps maps {empty[0]!r} to {self.local_apps[empty[0]]!r}: give a non-empty "
                    'app id and its local app directory, e.g. {"echo": "apps/echo"}.'
                )
        if self.cache_max_age is not None and (
            isinstance(self.cache_max_age, bool)
            or not isinstance(self.cache_max_age, int | float)
            or not self.cache_max_age > 0
        ):
            raise ValueError(
                f"Configuration.cache_max_age must be a number of seconds above 0, or None for no limit, "
                f"got {self.cache_max_age!r}."
            )
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, str | os.PathLike):
                raise TypeError(f"Configuration.cache_dir must be a directory path, got {self.cache_dir!r}.")
            self.cache_dir = os.fspath(self.cache_dir)
        if self.app_concurrency is not None and not isinstance(self.app_concurrency, dict):
            raise TypeError(
                'Configuration.app_concurrency must be a dict of app ids to limits, e.g. {"routing": 4}, '
                f"got {type(self.app_concurrency).__name__} {self.app_concurrency!r}."
            )
        for app_id, limit in (self.app_concurrency or {}).items():
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(
                    f"Configuration.app_concurrency[{app_id!r}] must be a whole number of 1 or more, got {limit!r}."
                )
