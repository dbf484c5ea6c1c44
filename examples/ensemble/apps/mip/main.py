"""Exact 0/1 knapsack as a MIP, solved with HiGHS through `highspy`.

Reads `{"weight_capacity": int, "items": [{"id", "weight", "value"}, ...]}` from
stdin and maximizes the packed value with one binary variable per item under a
single capacity constraint. The `-time_limit` option bounds the solve (seconds).
"""

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import highspy
import nextmv

STATUS_BY_MODEL_STATUS = {
    "Optimal": "optimal",
    "Infeasible": "infeasible",
    "Unbounded": "unbounded",
    "Time limit reached": "suboptimal",
}


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Sends whatever native code prints to stdout (fd 1) to stderr instead.

    HiGHS prints a banner on stdout when a solver is created, even before it
    can be silenced, and a JSON app's stdout must hold nothing but its output.
    """
    try:
        libc_fflush = ctypes.CDLL(None).fflush
    except (OSError, AttributeError, TypeError):  # No C runtime to flush (e.g. Windows).
        libc_fflush = None

    def flush() -> None:
        sys.stdout.flush()
        if libc_fflush is not None:
            libc_fflush(None)

    flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        flush()
        os.dup2(saved, 1)
        os.close(saved)


def solve(items: list[dict[str, Any]], capacity: float, time_limit: float) -> tuple[list[dict[str, Any]], dict]:
    """Solves the knapsack MIP; returns the chosen items and solver information."""
    with native_stdout_to_stderr():
        solver = highspy.Highs()
        solver.silent()
        solver.setOptionValue("time_limit", float(time_limit))
        variables = [solver.addBinary(obj=item["value"]) for item in items]
        solver.addConstr(sum(item["weight"] * x for item, x in zip(items, variables, strict=True)) <= capacity)
        solver.changeObjectiveSense(highspy.ObjSense.kMaximize)
        solver.run()

        model_status = solver.modelStatusToString(solver.getModelStatus())
        info = solver.getInfo()
        has_solution = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
        chosen = [item for item, x in zip(items, variables, strict=True) if has_solution and solver.val(x) > 0.5]
        details = {
            "model_status": model_status,
            "status": STATUS_BY_MODEL_STATUS.get(model_status, "unknown") if has_solution else "infeasible",
            "mip_gap": info.mip_gap,
            "dual_bound": info.mip_dual_bound,
            "nodes": info.mip_node_count,
            "variables": solver.getNumCol(),
            "constraints": solver.getNumRow(),
        }
    return chosen, details


def main() -> None:
    start = time.perf_counter()
    run_input = nextmv.load()  # Options come from app.yaml (`-time_limit`).
    items = run_input.data["items"]
    capacity = run_input.data["weight_capacity"]
    time_limit = float(run_input.options.time_limit)
    nextmv.log(f"MIP knapsack (HiGHS): {len(items)} items, capacity {capacity}, time limit {time_limit}s")

    chosen, details = solve(items, capacity, time_limit)

    value = sum(item["value"] for item in chosen)
    weight = sum(item["weight"] for item in chosen)
    duration = time.perf_counter() - start
    nextmv.log(f"status {details['model_status']}, value {value}, weight {weight}")
    nextmv.write(
        nextmv.Output(
            options=run_input.options,
            solution={"items": chosen, "value": value, "weight": weight},
            metrics={
                "result_value": value,
                "status": details["status"],
                "solver": "highs",
                "solver_version": version("highspy"),
                "items_selected": len(chosen),
                "weight": weight,
                "capacity": capacity,
                "mip_gap": details["mip_gap"],
                "duration": duration,
            },
            statistics={
                "schema": "v1",
                "run": {"duration": duration},
                "result": {"value": value, "custom": {"solver": "highs", **details}},
            },
        )
    )


if __name__ == "__main__":
    main()
