"""Echo app: writes its JSON input back, unchanged, as the solution.

The output's `solution` is exactly the input, so the output of one echo run can
be fed to the next (`result.output["solution"]`). Metrics describe the input.
"""

import json
import sys
import time

import nextmv


def main() -> None:
    start = time.perf_counter()
    run_input = nextmv.load()  # Options come from app.yaml (`-label`).
    data = run_input.data
    size = len(json.dumps(data, separators=(",", ":")).encode())
    nextmv.log(f"echo [{run_input.options.label}]: {size} bytes, args {sys.argv[1:]}")
    duration = time.perf_counter() - start
    nextmv.write(
        nextmv.Output(
            options=run_input.options,
            solution=data,
            metrics={
                "label": run_input.options.label,
                "keys": len(data) if isinstance(data, dict) else 0,
                "input_bytes": size,
                "duration": duration,
            },
            statistics={"schema": "v1", "run": {"duration": duration}, "result": {"custom": {"input_bytes": size}}},
        )
    )


if __name__ == "__main__":
    main()
