"""Exact 0/1 knapsack by dynamic programming over the (integer) capacity.

Reads `{"weight_capacity": int, "items": [{"id", "weight", "value"}, ...]}` from
stdin. Runs in O(items x capacity) time and memory, so it suits small integer
capacities; weights and the capacity must be non-negative integers.
"""

import time
from typing import Any

import nextmv


def solve(items: list[dict[str, Any]], capacity: int) -> list[dict[str, Any]]:
    """Returns a value-maximizing subset of `items` whose weight fits in `capacity`."""
    if not isinstance(capacity, int) or capacity < 0:
        raise ValueError(f"weight_capacity must be a non-negative integer, got {capacity!r}")
    for item in items:
        if not isinstance(item["weight"], int) or item["weight"] < 0:
            raise ValueError(f"item {item.get('id')!r}: weight must be a non-negative integer")

    best = [0] * (capacity + 1)  # best[c]: best value with total weight <= c.
    took: list[list[bool]] = []  # took[i][c]: item i improves best[c] in round i.
    for item in items:
        weight, value = item["weight"], item["value"]
        row = [False] * (capacity + 1)
        for c in range(capacity, weight - 1, -1):
            if best[c - weight] + value > best[c]:
                best[c] = best[c - weight] + value
                row[c] = True
        took.append(row)

    chosen = []
    c = capacity
    for i in range(len(items) - 1, -1, -1):
        if took[i][c]:
            chosen.append(items[i])
            c -= items[i]["weight"]
    chosen.reverse()
    return chosen


def main() -> None:
    start = time.perf_counter()
    run_input = nextmv.load()
    items = run_input.data["items"]
    capacity = run_input.data["weight_capacity"]
    nextmv.log(f"DP knapsack: {len(items)} items, capacity {capacity}")
    chosen = solve(items, capacity)

    value = sum(item["value"] for item in chosen)
    weight = sum(item["weight"] for item in chosen)
    duration = time.perf_counter() - start
    nextmv.write(
        nextmv.Output(
            options=run_input.options,
            solution={"items": chosen, "value": value, "weight": weight},
            metrics={
                "result_value": value,
                "status": "optimal",
                "solver": "dynamic-programming",
                "items_selected": len(chosen),
                "weight": weight,
                "capacity": capacity,
                "duration": duration,
            },
            statistics={
                "schema": "v1",
                "run": {"duration": duration},
                "result": {"value": value, "custom": {"solver": "dynamic-programming", "items_selected": len(chosen)}},
            },
        )
    )


if __name__ == "__main__":
    main()
