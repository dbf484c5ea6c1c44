"""Chain: a Python step, a local Nextmv app, then another Python step.

Reads any JSON object on stdin and runs `prepare → echo → enhance` on this
machine: `prepare` adds a `summary` of the input's numbers, the `echo` app
(a local Nextmv app under `apps/echo`, run through `nextmv.local`) sends its
input back as the solution, and `enhance` adds fields from the app's run
(its run id and label) before the result is written as JSON on stdout.

Usage:
    python examples/chain/main.py < examples/chain/input.json
"""

from __future__ import annotations

import os
from typing import Any

import nextmv

from nextpipe import Configuration, FlowSpec, app, log, needs, step

HERE = os.path.dirname(os.path.abspath(__file__))
LOCAL_APPS = {"echo": os.path.join(HERE, "apps", "echo")}
POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.05, backoff=0, jitter=0, max_duration=60)


class ChainFlow(FlowSpec):
    """prepare → echo (local app) → enhance."""

    @step
    def prepare(data: dict[str, Any]) -> dict[str, Any]:
        """Copies the input and adds a summary of its `numbers` (if any)."""
        if not isinstance(data, dict):
            raise ValueError(f"the input must be a JSON object, got {type(data).__name__}")
        numbers = data.get("numbers", [])
        summary = {"count": len(numbers), "sum": sum(numbers), "max": max(numbers, default=None)}
        return {**data, "summary": summary}

    @app(app_id="echo", options={"label": "chain"}, full_result=True, polling_options=POLLING)
    @needs(predecessors=[prepare])
    @step
    def echo() -> None:
        """Runs the local echo app, which returns its input as the solution."""

    @needs(predecessors=[echo])
    @step
    def enhance(result: nextmv.RunResult) -> dict[str, Any]:
        """Adds the echo run's id and label and the sorted numbers to the echoed data."""
        data = result.output["solution"]
        log(f"echo run {result.id} returned {len(data)} fields")
        return {
            **data,
            "sorted_numbers": sorted(data.get("numbers", [])),
            "echo": {"run_id": result.id, "label": result.metadata.metrics["label"]},
            "enhanced": True,
        }


def main() -> None:
    """Reads the input on stdin, runs the flow and writes the enhanced data on stdout."""
    # Local apps run with `uv run`: keep uv from taking an enclosing pyproject.toml for the app's project.
    os.environ.setdefault("UV_NO_PROJECT", "1")
    flow = ChainFlow("chain", nextmv.load().data, conf=Configuration(local_apps=LOCAL_APPS))
    flow.run()
    nextmv.write(nextmv.Output(solution=flow.get_result(flow.enhance)))


if __name__ == "__main__":
    main()
