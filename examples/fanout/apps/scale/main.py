"""Scale app: multiplies every number of `{"numbers": [...]}` by `-factor`.

A tiny app whose output depends on an option, to fan one input out over several
option values. The solution holds the scaled numbers and their total.
"""

import time

import nextmv


def main() -> None:
    start = time.perf_counter()
    run_input = nextmv.load()  # Options come from app.yaml (`-factor`).
    factor = float(run_input.options.factor)
    numbers = run_input.data["numbers"]
    scaled = [number * factor for number in numbers]
    total = sum(scaled)
    nextmv.log(f"scale: {len(numbers)} numbers by {factor}, total {total}")
    duration = time.perf_counter() - start
    nextmv.write(
        nextmv.Output(
            options=run_input.options,
            solution={"numbers": scaled, "total": total},
            metrics={"result_value": total, "factor": factor, "count": len(scaled), "duration": duration},
            statistics={"schema": "v1", "run": {"duration": duration}, "result": {"value": total}},
        )
    )


if __name__ == "__main__":
    main()
