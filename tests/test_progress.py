"""The live progress display: where it applies, what it draws (into a recording rich Console), and its cleanup."""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time

import pytest
from rich.console import Console

from nextpipe import Configuration, FlowSpec, foreach, log, needs, step
from nextpipe.progress import PROGRESS_ENV, ProgressHook, _Board, progress_applies
from nextpipe.reporting import default_hooks
from nextpipe.summary import SummaryHook


class Terminal(io.StringIO):
    """A stand-in for an interactive terminal."""

    def isatty(self) -> bool:
        return True


class Work(FlowSpec):
    @foreach()
    @step
    def items(data: dict) -> list:
        return list(range(data["n"]))

    @needs(predecessors=[items])
    @step
    def work(item: int) -> int:
        log(f"working on {item}")
        time.sleep(0.3)
        return item


def recording_console() -> Console:
    return Console(file=io.StringIO(), record=True, force_terminal=True, width=100, color_system=None)


@pytest.fixture(autouse=True)
def no_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable turns the display off."""
    for name in ("CI", PROGRESS_ENV, "NEXTMV_RUN_ID", "TERM"):
        monkeypatch.delenv(name, raising=False)


def on_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sys.stderr an interactive terminal (in the test itself: pytest's capture resets it after fixtures)."""
    monkeypatch.setattr(sys, "stderr", Terminal())


def test_applies_on_an_interactive_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    on_terminal(monkeypatch)
    flow = Work("work", {"n": 1})
    assert progress_applies(flow)
    assert [type(h) for h in default_hooks(flow)] == [ProgressHook, SummaryHook]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CI", "true"),
        ("CI", "1"),
        (PROGRESS_ENV, "0"),
        (PROGRESS_ENV, "off"),
        ("NEXTMV_RUN_ID", "run-1"),
        ("TERM", "dumb"),
    ],
)
def test_a_variable_turns_it_off(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    on_terminal(monkeypatch)
    monkeypatch.setenv(variable, value)
    assert not progress_applies(Work("work", {"n": 1}))


def test_ci_false_does_not_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    on_terminal(monkeypatch)
    monkeypatch.setenv("CI", "false")
    assert progress_applies(Work("work", {"n": 1}))


def test_configuration_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    on_terminal(monkeypatch)
    assert not progress_applies(Work("work", {"n": 1}, conf=Configuration(progress=False)))


def test_off_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress_applies(Work("work", {"n": 1}))
    monkeypatch.setattr(sys, "stderr", None)
    assert not progress_applies(Work("work", {"n": 1}))
    assert [type(h) for h in default_hooks(Work("work", {"n": 1}))] == [SummaryHook]


def test_off_while_another_live_display_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.file_proxy import FileProxy

    on_terminal(monkeypatch)
    monkeypatch.setattr(sys, "stderr", FileProxy(recording_console(), sys.stderr))
    assert not progress_applies(Work("work", {"n": 1}))


def test_off_above_info(monkeypatch: pytest.MonkeyPatch) -> None:
    on_terminal(monkeypatch)
    logger = logging.getLogger("nextpipe")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        assert not progress_applies(Work("work", {"n": 1}))
    finally:
        logger.setLevel(level)


all_three = threading.Barrier(3, timeout=30)


class Together(FlowSpec):
    @foreach()
    @step
    def items(data: dict) -> list:
        return list(range(3))

    @needs(predecessors=[items])
    @step
    def work(item: int) -> int:
        all_three.wait()  # so that the line below redraws the display with the three nodes running
        log(f"working on {item}")
        return item


def test_draws_the_steps_and_keeps_log_lines_readable(capsys: pytest.CaptureFixture[str]) -> None:
    console = recording_console()
    flow = Together("work", None)
    flow.add_hook(ProgressHook(console=console, refresh_per_second=50))
    stderr = sys.stderr
    flow.run()
    assert sys.stderr is stderr  # the display gave stderr back
    text = console.export_text()
    # It redrew while the nodes ran: the header, the steps and their counts.
    assert re.search(r"step +status +done +running +failed +waiting +time", text)
    assert re.search(r"work +running +0 +3 +0 +0", text)
    # Log lines went through the display's console, whole, above it.
    for item in range(3):
        assert f"[work_{item}] working on {item}\n" in text
    # Nothing reached the real stderr while the display ran; the summary table came after it.
    err = capsys.readouterr().err
    assert "working on" not in err and "[nextpipe] Flow work succeeded" in err


def test_the_final_board_counts_every_node() -> None:
    flow = Work("work", {"n": 4})
    flow.run()
    console = recording_console()
    console.print(_Board(flow))
    rows = {line.split()[0]: line.split()[1:] for line in console.export_text().splitlines()[2:]}
    assert rows["items"][:5] == ["succeeded", "1", "0", "0", "0"]
    assert rows["work"][:5] == ["succeeded", "4", "0", "0", "0"]


class Failing(FlowSpec):
    @step
    def boom() -> None:
        time.sleep(0.1)
        raise ValueError("bad item")


def test_failure_stops_the_display() -> None:
    hook = ProgressHook(console=recording_console(), refresh_per_second=50)
    flow = Failing("failing", None)
    flow.add_hook(hook)
    stderr = sys.stderr
    with pytest.raises(RuntimeError, match="bad item"):
        flow.run()
    assert sys.stderr is stderr and hook._live is None
    # The display can start again: the next run shows it.
    other = recording_console()
    second = Work("second", {"n": 1})
    second.add_hook(ProgressHook(console=other, refresh_per_second=50))
    second.run()
    assert "work" in other.export_text()


def test_one_display_at_a_time() -> None:
    first, second = ProgressHook(console=recording_console()), ProgressHook(console=recording_console())
    flow_a, flow_b = Work("a", {"n": 1}), Work("b", {"n": 1})
    first.flow_start(flow_a)
    try:
        second.flow_start(flow_b)
        assert second._live is None  # the second flow prints plain lines
        second.flow_end(flow_b, None)
    finally:
        first.flow_end(flow_a, None)
    third = ProgressHook(console=recording_console())
    third.flow_start(flow_b)
    assert third._live is not None
    third.flow_end(flow_b, None)


def test_two_flows_at_once_with_displays_both_finish() -> None:
    flows = [Work(f"w{i}", {"n": 2}) for i in range(2)]
    for flow in flows:
        flow.add_hook(ProgressHook(console=recording_console(), refresh_per_second=50))
    threads = [threading.Thread(target=f.run) for f in flows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [f.get_result(f.work) for f in flows] == [[0, 1], [0, 1]]
