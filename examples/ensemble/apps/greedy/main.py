"""Greedy 0/1 knapsack heuristic.

Reads `{"weight_capacity": int, "items": [{"id", "weight", "value"}, ...]}` from
stdin, packs the items in the order given by the `-sort` option and skips every
item that no longer fits. Fast, but not optimal in general.
"""

import time
from collections.abc import Callable
from typing import Any

import nextmv

SORT_KEYS: dict[str, Callable[[dict[str, Any]], float]] = {
    "ratio": lambda item: item["value"] / item["weight"],
    "value": lambda item: item["value"],
    "weight": lambda item: -item["weight"],
}


def solve(items: list[dict[str, Any]], capacity: float, sort: str) -> list[dict[str, Any]]:
    """Returns the items packed greedily in `sort` order (stable for ties)."""
    chosen = []
    load = 0
    for item in sorted(items, key=SORT_KEYS[sort], reverse=True):
        if load + item["weight"] <= capacity:
            chosen.append(item)
            load += item["weight"]
    return chosen


def main() -> None:
    start = time.perf_counter()
    run_input = nextmv.load()  # Options come from app.yaml (`-sort`).
    sort = run_input.options.sort
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown -sort {sort!r}, expected one of {sorted(SORT_KEYS)}")

    items = run_input.data["items"]
    capacity = run_input.data["weight_capacity"]
    nextmv.log(f"greedy knapsack: {len(items)} items, capacity {capacity}, sort by {sort}")
    chosen = solve(items, capacity, sort)

    value = sum(item["value"] for item in chosen)
    weight = sum(item["weight"] for item in chosen)
    duration = time.perf_counter() - start
    nextmv.write(
        nextmv.Output(
            options=run_input.options,
            solution={"items": chosen, "value": value, "weight": weight},
            metrics={
                "result_value": value,
                "status": "feasible",
                "solver": f"greedy-{sort}",
                "items_selected": len(chosen),
                "weight": weight,
                "capacity": capacity,
                "duration": duration,
            },
            statistics={
                "schema": "v1",
                "run": {"duration": duration},
                "result": {"value": value, "custom": {"solver": f"greedy-{sort}", "items_selected": len(chosen)}},
            },
        )
    )


if __name__ == "__main__":
    main()
