"""The run summary: `flow.summary()` after success, failure and interruption, and the table logged at the end."""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

import pytest

pytest.register_assert_rewrite("emulator_fixtures")

from emulator_fixtures import fast_polling  # noqa: E402
from platform_emulator import PlatformEmulator  # noqa: E402

from nextpipe import Configuration, FlowSpec, app, foreach, join, needs, optional, step  # noqa: E402
from nextpipe.summary import RunSummary, SummaryHook, summarize  # noqa: E402

pytest_plugins = ["emulator_fixtures"]


class Batches(FlowSpec):
    @foreach()
    @step
    def split(data: dict) -> list:
        return list(range(data["n"]))

    @needs(predecessors=[split])
    @step
    def work(item: int) -> int:
        if item == 2:
            raise ValueError("item 2 is bad")
        return item

    @optional(condition=lambda _: False)
    @needs(predecessors=[work])
    @join()
    @step
    def report(items: list) -> int:
        return len(items)

    @needs(predecessors=[work])
    @join()
    @step
    def total(items: list) -> int:
        return sum(value for [value] in items)


def by_step(summary: RunSummary) -> dict[str, Any]:
    return {s.step: s for s in summary.steps}


def test_before_any_run_the_summary_is_pending() -> None:
    flow = Batches("batches", {"n": 2})
    summary = flow.summary()
    assert (summary.flow, summary.status, summary.started_at, summary.duration, summary.steps) == (
        "batches",
        "pending",
        None,
        None,
        [],
    )


def test_summary_after_success(capsys: pytest.CaptureFixture[str]) -> None:
    flow = Batches("batches", {"n": 2}, conf=Configuration(summary=False))
    before = datetime.datetime.now(datetime.timezone.utc)
    flow.run()
    after = datetime.datetime.now(datetime.timezone.utc)
    summary = flow.summary()
    assert summary.status == "succeeded" and summary.error is None
    assert before <= summary.started_at <= summary.finished_at <= after
    assert 0 < summary.duration <= (after - before).total_seconds()
    steps = by_step(summary)
    assert list(steps) == ["split", "work", "report", "total"]
    assert steps["work"].status == "succeeded"
    assert steps["work"].nodes == {"pending": 0, "running": 0, "succeeded": 2, "failed": 0, "skipped": 0}
    work_nodes = flow.graph.get_step(flow.work.step).nodes
    durations = sorted(n.duration for n in work_nodes)
    assert (steps["work"].duration_min, steps["work"].duration_max) == (durations[0], durations[-1])
    assert steps["work"].duration_median == sum(durations) / 2
    assert steps["report"].status == "skipped" and steps["report"].nodes["skipped"] == 1
    assert steps["report"].duration_max is None  # a skipped step did not run
    assert steps["total"].status == "succeeded"
    # Configuration(summary=False): no table in the output.
    assert "Flow batches succeeded" not in capsys.readouterr().err


def test_summary_after_failure_names_the_errors() -> None:
    flow = Batches("batches", {"n": 4}, conf=Configuration(thread_count=1))
    with pytest.raises(RuntimeError) as raised:
        flow.run()
    summary = flow.summary()
    assert summary.status == "failed"
    assert summary.error == str(raised.value) == "Flow failed: Step work failed: item 2 is bad"
    steps = by_step(summary)
    assert steps["split"].status == "succeeded"
    work = steps["work"]
    assert work.status == "failed"
    assert work.errors["work_2"] == "item 2 is bad"
    assert work.nodes["succeeded"] == 2 and work.nodes["failed"] >= 1
    assert sum(work.nodes.values()) == 4
    # The steps after the failure never started.
    assert steps["total"].status == "waiting" and sum(steps["total"].nodes.values()) == 0


def test_json_round_trip() -> None:
    flow = Batches("batches", {"n": 2}, conf=Configuration(summary=False))
    flow.run()
    summary = flow.summary()
    data = summary.to_dict()
    assert data["started_at"] == summary.started_at.isoformat()
    assert data["steps"][1]["nodes"]["succeeded"] == 2
    assert RunSummary.from_json(summary.to_json()) == summary


def test_a_rerun_replaces_the_summary() -> None:
    flow = Batches("batches", {"n": 3}, conf=Configuration(summary=False))
    with pytest.raises(RuntimeError):
        flow.run()
    assert flow.summary().status == "failed"
    flow.input = {"n": 2}
    flow.run()
    assert flow.summary().status == "succeeded"
    assert by_step(flow.summary())["work"].nodes["succeeded"] == 2


def test_an_interrupted_run_is_canceled() -> None:
    flow = Batches("batches", {"n": 1})
    hook = SummaryHook(log_table=False)
    hook.flow_start(flow)
    assert summarize(flow).status == "running"
    hook.flow_end(flow, KeyboardInterrupt())
    summary = summarize(flow)
    assert (summary.status, summary.error) == ("canceled", "KeyboardInterrupt")


def test_summary_during_the_run() -> None:
    seen: list[RunSummary] = []

    class Watched(FlowSpec):
        @step
        def first() -> int:
            return 1

        @needs(predecessors=[first])
        @step
        def look(self, value: int) -> int:
            seen.append(self.summary())
            return value

    Watched("watched", None, conf=Configuration(summary=False)).run()
    (summary,) = seen
    assert summary.status == "running" and summary.duration is None
    assert [(s.step, s.status) for s in summary.steps] == [("first", "succeeded"), ("look", "running")]


def test_the_table_goes_to_the_logger_once_per_run(capsys: pytest.CaptureFixture[str]) -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    logging.getLogger("nextpipe").addHandler(handler)
    try:
        flow = Batches("batches", {"n": 2})
        flow.run()
    finally:
        logging.getLogger("nextpipe").removeHandler(handler)
    table = flow.summary().table()
    headline = next(r for r in records if r.getMessage().startswith("Flow batches"))
    assert headline.summary.status == "succeeded"
    assert [s.step for s in headline.summary.steps] == ["split", "work", "report", "total"]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[:2] for line in lines[-len(table) :]] == [
        ["[nextpipe]", "Flow"],
        ["[nextpipe]", "step"],
        ["[nextpipe]", "split"],
        ["[nextpipe]", "work"],
        ["[nextpipe]", "report"],
        ["[nextpipe]", "total"],
    ]
    assert lines[-3].split()[2:5] == ["succeeded", "2", "succeeded"]
    assert lines[-2].split()[2:5] == ["skipped", "1", "skipped"]


def test_no_table_above_info(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("nextpipe")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        flow = Batches("batches", {"n": 2})
        flow.run()
    finally:
        logger.setLevel(level)
    assert capsys.readouterr().err == ""
    assert flow.summary().status == "succeeded"


class Solve(FlowSpec):
    @foreach()
    @step
    def inputs(data: dict) -> list:
        return [{"items": [i]} for i in range(data["n"])]

    @app(app_id="echo", polling_options=fast_polling())
    @needs(predecessors=[inputs])
    @step
    def solve():
        pass


def test_app_run_ids_and_the_table(platform_env: PlatformEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    flow = Solve("solve", {"n": 3})
    flow.run()
    solve = by_step(flow.summary())["solve"]
    nodes = flow.graph.get_step(flow.solve.step).nodes
    assert solve.app_id == "echo"
    assert solve.run_ids == [n.run_id for n in nodes] and len(set(solve.run_ids)) == 3
    assert set(solve.run_ids) == set(platform_env.runs)
    row = capsys.readouterr().err.splitlines()[-1]
    assert row.split()[1:5] == ["solve", "succeeded", "3", "succeeded"]
    assert row.endswith(f"{solve.run_ids[0]} (+2)")


def test_two_flows_at_once_keep_their_own_summaries() -> None:
    flows = [Batches(f"batches{n}", {"n": n}, conf=Configuration(summary=False)) for n in (1, 2)]
    threads = [threading.Thread(target=f.run) for f in flows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [by_step(f.summary())["work"].nodes["succeeded"] for f in flows] == [1, 2]
