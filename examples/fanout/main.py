"""Fan-out: one input, one app run per option value, then a join collecting the results.

Reads `{"numbers": [...], "factors": [...]}` as JSON on stdin (`factors` is
optional, default `[0.5, 1, 2, 10]`) and runs, on this machine:

    configs ══ scale (one run per factor) ══ collect

`configs` is a `@foreach` step returning one `AppRunConfig` per factor (its
option `factor` and a run name), `scale` runs the local Nextmv app under
`apps/scale` for each, and the `@join` step `collect` gathers the scaled totals.
The result is written as JSON on stdout.

Usage:
    python examples/fanout/main.py < examples/fanout/input.json
"""

from __future__ import annotations

import os
from typing import Any

import nextmv

from nextpipe import AppRunConfig, Configuration, FlowSpec, app, foreach, join, needs, step

HERE = os.path.dirname(os.path.abspath(__file__))
LOCAL_APPS = {"scale": os.path.join(HERE, "apps", "scale")}
DEFAULT_FACTORS = [0.5, 1, 2, 10]
POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.05, backoff=0, jitter=0, max_duration=60)


class FanoutFlow(FlowSpec):
    """configs (foreach) → scale (local app, once per factor) → collect (join)."""

    @foreach()
    @step
    def configs(data: dict[str, Any]) -> list[AppRunConfig]:
        """One run configuration per factor: the numbers, the `factor` option and a run name."""
        numbers = data["numbers"]
        return [
            AppRunConfig(input={"numbers": numbers}, options={"factor": factor}, name=f"scale-x{factor}")
            for factor in data.get("factors", DEFAULT_FACTORS)
        ]

    @app(app_id="scale", full_result=True, polling_options=POLLING)
    @needs(predecessors=[configs])
    @step
    def scale() -> None:
        """Runs the local scale app: every number multiplied by `factor`."""

    @join()
    @needs(predecessors=[scale])
    @step
    def collect(results: list[list[nextmv.RunResult]]) -> dict[str, Any]:
        """Collects the runs (one `[result]` list each, in factor order) into a table of totals."""
        runs = [
            {
                "name": result.name,
                "run_id": result.id,
                "factor": result.metadata.metrics["factor"],
                "total": result.output["solution"]["total"],
                "numbers": result.output["solution"]["numbers"],
            }
            for (result,) in results
        ]
        return {"runs": runs, "totals": {run["name"]: run["total"] for run in runs}}


def main() -> None:
    """Reads the input on stdin, runs the flow and writes the collected results on stdout."""
    # Local apps run with `uv run`: keep uv from taking an enclosing pyproject.toml for the app's project.
    os.environ.setdefault("UV_NO_PROJECT", "1")
    flow = FanoutFlow("fanout", nextmv.load().data, conf=Configuration(local_apps=LOCAL_APPS))
    flow.run()
    nextmv.write(nextmv.Output(solution=flow.get_result(flow.collect)))


if __name__ == "__main__":
    main()
