"""Findings of a last new-user pass over the features working together (issue 14)."""

from __future__ import annotations

import pathlib
import shutil
import time

import nextmv
import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import fast_polling  # noqa: E402
from platform_emulator import PlatformEmulator  # noqa: E402

from nextpipe import Configuration, FlowSpec, app, cache, retry, step, timeout  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

PROBE = pathlib.Path(__file__).resolve().parent / "apps" / "probe"
POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.02, backoff=0, jitter=0, max_duration=120)


def test_a_canceled_local_run_prints_no_sdk_polling_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Stopping a node's polling went through the SDK's "stop" callback returning True, on which the SDK prints
    # "polling | stop condition met, stopping polling" on stderr: a line naming no step, once per canceled run.
    monkeypatch.setenv("UV_NO_PROJECT", "1")
    probe = shutil.copytree(PROBE, tmp_path / "probe", ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
    pid_file = tmp_path / "app.pid"

    class Flow(FlowSpec):
        @app(app_id="probe", polling_options=POLLING)
        @step
        def solve() -> None:
            pass

        @step
        def watch() -> None:
            deadline = time.monotonic() + 60
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise ValueError("the app is running: stop the flow")

    flow = Flow(
        "stopped", {"pid_file": str(pid_file), "sleep": 60}, conf=Configuration(local_apps={"probe": str(probe)})
    )
    with pytest.raises(RuntimeError, match="Step watch failed: the app is running"):
        flow.run()
    err = capfd.readouterr().err
    assert "Canceled local run" in err
    assert "polling |" not in err


def test_a_timed_out_cloud_run_prints_no_sdk_polling_line(
    platform_env: PlatformEmulator, capfd: pytest.CaptureFixture[str]
) -> None:
    platform_env.set_app_behavior("slow", duration=60)

    class Flow(FlowSpec):
        @timeout(seconds=0.3)
        @app(app_id="slow", polling_options=fast_polling())
        @step
        def solve() -> None:
            pass

    with pytest.raises(RuntimeError, match="Step solve failed: node solve_0 ran longer"):
        Flow("stopped", {"x": 1}).run()
    assert "polling |" not in capfd.readouterr().err


def test_an_attempt_that_timed_out_while_reading_a_stored_run_does_not_reuse_it(
    platform_env: PlatformEmulator, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The platform answers reads of runs after the attempt's time limit: the abandoned attempt went on to log
    # "Reused run ..." and set the node's run id after "Attempt 1 of 2 failed (StepTimeoutError ...)".
    class Flow(FlowSpec):
        @retry(attempts=2, delay=0)
        @timeout(seconds=0.3)
        @cache()
        @app(app_id="echo", polling_options=fast_polling())
        @step
        def solve() -> None:
            pass

    conf = Configuration(cache_dir=str(tmp_path / "cache"))
    Flow("stored", {"x": 1}, conf=conf).run()
    platform_env.set_delay(0.8, path_regex=r"/runs/", method="GET")
    flow = Flow("stored", {"x": 1}, conf=conf)
    caplog.clear()
    with pytest.raises(RuntimeError, match="Step solve failed: node solve_0 ran longer"):
        flow.run()
    messages = [record.getMessage() for record in caplog.records]
    assert any("Attempt 1 of 2 failed (StepTimeoutError" in message for message in messages)
    assert not [message for message in messages if "Reused run" in message or "Not reusing run" in message]
    assert flow.summary().steps[0].run_ids == []  # the stored run was not the node's
    assert len(platform_env.runs_for("echo")) == 1
