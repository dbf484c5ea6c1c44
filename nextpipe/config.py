"""Configuration of a flow's execution."""

from __future__ import annotations

from dataclasses import dataclass

from ._dataclass_json import DataClassJsonMixin


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
        environment variable and wins over it for an id in both.
    summary : bool, default=True
        Log a table of the run (per step: node counts, durations, app runs) when
        it ends; ``FlowSpec.summary()`` works either way.
    progress : bool, default=True
        Show a live display of the steps while the flow runs, where it applies:
        on an interactive terminal, not in CI nor in a Nextmv run
        (``NEXTPIPE_PROGRESS=0`` turns it off too).

    Raises
    ------
    ValueError
        When ``thread_count`` is negative or ``max_step_inputs`` is below 1.
    """

    thread_count: int = 0
    max_step_inputs: int = 50
    local_apps: dict[str, str] | None = None
    summary: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for switch in ("summary", "progress"):
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
