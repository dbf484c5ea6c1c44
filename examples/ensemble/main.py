"""Ensemble: one knapsack instance, solved in parallel by several solver apps; the best solution wins.

Reads a knapsack instance (`{"weight_capacity": int, "items": [{"id", "weight", "value"}, ...]}`)
as JSON on stdin and runs this flow, entirely on this machine (the solver apps
are local Nextmv apps under `apps/`, run through `nextmv.local`):

    prepare ─┬─ greedy_configs ══ solve_greedy ─┐   (one greedy run per sort order)
             ├─ solve_mip ──────────────────────┼─ pick_best
             └─ solve_dp ───────────────────────┘

`pick_best` writes the best solution and every solver's value as JSON on stdout.

Usage:
    python examples/ensemble/main.py < examples/ensemble/input.json
"""

from __future__ import annotations

import os
from typing import Any

import nextmv

from nextpipe import AppRunConfig, Configuration, FlowSpec, app, foreach, join, log, needs, step

HERE = os.path.dirname(os.path.abspath(__file__))
LOCAL_APPS = {name: os.path.join(HERE, "apps", name) for name in ("greedy", "mip", "dp")}
GREEDY_SORTS = ("ratio", "value", "weight")
MIP_TIME_LIMIT = 5
# Local runs take about a second: poll them tightly instead of the SDK's default back-off.
POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.05, backoff=0, jitter=0, max_duration=120)


class EnsembleFlow(FlowSpec):
    """Solves a knapsack instance with every solver app and keeps the best solution."""

    @step
    def prepare(instance: dict[str, Any]) -> dict[str, Any]:
        """Validates the instance and normalizes it: integer weights and values, unique item ids."""
        capacity = instance.get("weight_capacity")
        items = instance.get("items")
        if not isinstance(capacity, int | float) or capacity < 0:
            raise ValueError(f"weight_capacity must be a number of 0 or more, got {capacity!r}")
        if not isinstance(items, list) or not items:
            raise ValueError("items must be a non-empty list")
        normalized, seen = [], set()
        for index, item in enumerate(items):
            item_id = str(item.get("id", f"item-{index + 1}"))
            if item_id in seen:
                raise ValueError(f"duplicate item id {item_id!r}")
            seen.add(item_id)
            weight, value = int(item["weight"]), int(item["value"])
            if weight < 0 or value < 0:
                raise ValueError(f"item {item_id!r}: weight and value must be 0 or more")
            normalized.append({"id": item_id, "weight": weight, "value": value})
        return {"weight_capacity": int(capacity), "items": normalized}

    @foreach()
    @needs(predecessors=[prepare])
    @step
    def greedy_configs(instance: dict[str, Any]) -> list[AppRunConfig]:
        """Fans out: one greedy run per item order."""
        return [
            AppRunConfig(input=instance, options={"sort": sort}, name=f"greedy-{sort}", description=f"sort by {sort}")
            for sort in GREEDY_SORTS
        ]

    @app(app_id="greedy", full_result=True, polling_options=POLLING)
    @needs(predecessors=[greedy_configs])
    @step
    def solve_greedy() -> None:
        """Greedy heuristic (local app `apps/greedy`), once per item order."""

    @app(app_id="mip", options={"time_limit": MIP_TIME_LIMIT}, full_result=True, polling_options=POLLING)
    @needs(predecessors=[prepare])
    @step
    def solve_mip() -> None:
        """Exact MIP solved with HiGHS (local app `apps/mip`)."""

    @app(app_id="dp", full_result=True, polling_options=POLLING)
    @needs(predecessors=[prepare])
    @step
    def solve_dp() -> None:
        """Exact dynamic program (local app `apps/dp`)."""

    @join()
    @needs(predecessors=[solve_greedy, solve_mip, solve_dp])
    @step
    def pick_best(combinations: list[list[nextmv.RunResult]]) -> dict[str, Any]:
        """
        Picks the solution of highest value; a tie goes to the solver listed first (mip, dp, greedy).

        The join receives the product of its predecessors' results: one
        `[greedy run, mip run, dp run]` list per greedy run.
        """
        runs = {"mip": combinations[0][1], "dp": combinations[0][2]}
        runs.update((greedy.name, greedy) for greedy, _, _ in combinations)  # named greedy-<sort>
        solver, best = max(runs.items(), key=lambda entry: entry[1].output["solution"]["value"])
        solution = best.output["solution"]
        log(f"best: {solver} (value {solution['value']}) among {', '.join(runs)}")
        return {
            "best": {
                "solver": solver,
                "run_id": best.id,
                "value": solution["value"],
                "weight": solution["weight"],
                "items": [item["id"] for item in solution["items"]],
            },
            "solvers": {
                name: {
                    "value": run.output["solution"]["value"],
                    "status": run.metadata.metrics.get("status"),
                    "run_id": run.id,
                }
                for name, run in runs.items()
            },
        }


def main() -> None:
    """Reads the instance on stdin, runs the flow and writes the best solution on stdout."""
    # Local apps run with `uv run`: keep uv from taking an enclosing pyproject.toml for the app's project.
    os.environ.setdefault("UV_NO_PROJECT", "1")
    instance = nextmv.load()
    flow = EnsembleFlow("ensemble", instance.data, conf=Configuration(local_apps=LOCAL_APPS))
    flow.run()
    result = flow.get_result(flow.pick_best)
    nextmv.write(nextmv.Output(solution=result["best"], metrics={"solvers": result["solvers"]}))


if __name__ == "__main__":
    main()
