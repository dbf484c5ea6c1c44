"""Findings of a last pass as a new user: each test failed before its fix."""

from __future__ import annotations

import logging
import time

import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import fast_polling  # noqa: E402
from platform_emulator import PlatformEmulator  # noqa: E402

from nextpipe import FlowSpec, app, foreach, needs, step  # noqa: E402

pytest_plugins = ["emulator_fixtures"]


def _slow_creation_flow(emu: PlatformEmulator) -> type[FlowSpec]:
    class SlowCreation(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return [{"item": 1}, {"item": 2}, {"item": 3}]

        @app(app_id="slow", polling_options=fast_polling(max_duration=60))
        @needs(predecessors=[fan])
        @step
        def slow():
            pass

        @step
        def boom(data):
            emu.wait_for(lambda: len(emu.requests_for("POST", "/v1/applications/slow/runs")) == 3, timeout=5)
            raise ValueError("boom")

    return SlowCreation


def test_slow_run_creation_and_hanging_cancels_do_not_add_up(
    platform_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/app-steps.md: "run() waits for them at most 5 s". With run creation answered after 1.5 s and cancels
    # hanging, run() waited the creation (up to 5 s) and then a full RUN_CANCEL_GRACE on top:
    # ~7 s with the defaults and creation 2 s late, up to 10 s.
    emu = platform_env
    emu.hold_runs(True, app_id="slow")
    emu.set_delay(2.5, method="POST", path_regex=r"^/v1/applications/slow/runs$")
    emu.set_delay(3, method="PATCH", path_regex=r".*/cancel$")  # answered, but after the grace
    monkeypatch.setattr("nextpipe._runner.RUN_CANCEL_GRACE", 3.0)

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step boom failed: boom$"):
        _slow_creation_flow(emu)("slow-creation", {}).run()
    elapsed = time.monotonic() - started
    assert elapsed < 4.5, f"run() took {elapsed:.2f} s: the creation wait and the cancel grace added up"
    emu.wait_for(lambda: sum(r.cancel_requests for r in emu.runs_for("slow")) == 3, timeout=10)


def test_giving_up_on_a_run_still_being_created_is_logged(
    platform_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A run whose creation outlasts RUN_CANCEL_GRACE is canceled only later, if the process still lives; run()
    # returned silently, while a hanging cancel is logged ("Gave up waiting for the cancel request of node ...").
    emu = platform_env
    emu.hold_runs(True, app_id="slow")
    emu.set_delay(3, method="POST", path_regex=r"^/v1/applications/slow/runs$")
    monkeypatch.setattr("nextpipe._runner.RUN_CANCEL_GRACE", 0.5)

    with caplog.at_level(logging.DEBUG), pytest.raises(RuntimeError, match=r"^Flow failed: Step boom failed: boom$"):
        _slow_creation_flow(emu)("slow-creation", {}).run()
    gave_up = "\n".join(r.getMessage() for r in caplog.records)
    for node_id in ("slow_0", "slow_1", "slow_2"):
        assert node_id in gave_up and "Gave up" in gave_up, f"nothing logged about {node_id}'s run: {gave_up}"
    emu.wait_for(lambda: sum(r.cancel_requests for r in emu.runs_for("slow")) == 3, timeout=10)
