"""Stats app (multi-file): summarizes sales orders per region.

Reads `inputs/orders.csv` (order_id, region, product, quantity, unit_price) and
`inputs/regions.csv` (region, manager, target) and writes, under
`outputs/solutions/`, `summary.csv` (one row per region) and `totals.json`.
"""

import time

import nextmv


def summarize(orders: list[dict[str, str]], regions: list[dict[str, str]]) -> list[dict[str, object]]:
    """Aggregates orders per region (regions without orders included)."""
    rows: dict[str, dict[str, object]] = {
        region["region"]: {
            "region": region["region"],
            "manager": region["manager"],
            "orders": 0,
            "units": 0,
            "revenue": 0.0,
            "target": float(region["target"]),
        }
        for region in regions
    }
    for order in orders:
        row = rows.setdefault(
            order["region"],
            {"region": order["region"], "manager": "", "orders": 0, "units": 0, "revenue": 0.0, "target": 0.0},
        )
        quantity = int(order["quantity"])
        row["orders"] += 1
        row["units"] += quantity
        row["revenue"] += quantity * float(order["unit_price"])
    for row in rows.values():
        row["revenue"] = round(row["revenue"], 2)
        row["attainment"] = round(row["revenue"] / row["target"], 4) if row["target"] else None
    return sorted(rows.values(), key=lambda row: row["revenue"], reverse=True)


def main() -> None:
    start = time.perf_counter()
    run_input = nextmv.load(data_files=[nextmv.csv_data_file("orders"), nextmv.csv_data_file("regions")])
    orders = run_input.data["orders.csv"]
    regions = run_input.data["regions.csv"]
    nextmv.log(f"stats: {len(orders)} orders in {len(regions)} regions")

    summary = summarize(orders, regions)
    totals = {
        "orders": len(orders),
        "regions": len(summary),
        "units": sum(row["units"] for row in summary),
        "revenue": round(sum(row["revenue"] for row in summary), 2),
        "best_region": summary[0]["region"] if summary else None,
    }
    nextmv.write(
        nextmv.Output(
            output_format=nextmv.ContentFormat.MULTI_FILE,
            solution_files=[
                nextmv.csv_solution_file("summary", summary),
                nextmv.json_solution_file("totals", totals),
            ],
            metrics={**totals, "result_value": totals["revenue"], "duration": time.perf_counter() - start},
        )
    )


if __name__ == "__main__":
    main()
