"""Decision app: a workflow that runs as a Nextmv application and calls another app.

This is the shape of a decision workflow deployed on Nextmv: the platform
starts `main.py` with the run's JSON input on stdin and sets `NEXTMV_APP_ID`
and `NEXTMV_RUN_ID` (so nextpipe reports the flow's graph and node states to
the run's Flow tab) and the API key. The flow is `prepare → solve → decide`:

- `prepare` keeps the orders with a positive quantity and totals them;
- `solve` runs the `echo` application on Nextmv Cloud (it returns its input as
  the solution), polling tightly;
- `decide` picks the largest order from the app's solution.

The result is written as JSON on stdout with `nextmv.write`.

Usage (against Nextmv Cloud, or any endpoint set in `NEXTMV_ENDPOINT`):
    NEXTMV_API_KEY=... python examples/decision_app/main.py < examples/decision_app/input.json
"""

from __future__ import annotations

from typing import Any

import nextmv

from nextpipe import FlowSpec, app, log, needs, step

POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.05, backoff=0, jitter=0, max_duration=120)


class DecisionFlow(FlowSpec):
    """prepare → echo (Nextmv Cloud app) → decide."""

    @step
    def prepare(data: dict[str, Any]) -> dict[str, Any]:
        """Keeps the orders with a positive quantity and adds their total."""
        if not isinstance(data, dict) or not isinstance(data.get("orders"), list):
            raise ValueError("the input must be a JSON object with a list of `orders`")
        orders = [order for order in data["orders"] if order.get("quantity", 0) > 0]
        return {"orders": orders, "total": sum(order["quantity"] for order in orders)}

    @app(app_id="echo", options={"label": "decision"}, polling_options=POLLING)
    @needs(predecessors=[prepare])
    @step
    def solve() -> None:
        """Runs the echo app on the prepared orders."""

    @needs(predecessors=[solve])
    @step
    def decide(result: dict[str, Any]) -> dict[str, Any]:
        """Picks the largest order of the app's solution."""
        solution = result["solution"]
        largest = max(solution["orders"], key=lambda order: order["quantity"], default=None)
        log(f"{len(solution['orders'])} orders, largest: {largest}")
        return {
            "orders": len(solution["orders"]),
            "total": solution["total"],
            "largest": largest["id"] if largest else None,
            "label": result.get("options", {}).get("label"),
        }


def main() -> None:
    """Reads the input on stdin, runs the flow and writes the decision on stdout."""
    flow = DecisionFlow("decision", nextmv.load().data)
    flow.run()
    nextmv.write(nextmv.Output(solution=flow.get_result(flow.decide)))


if __name__ == "__main__":
    main()
