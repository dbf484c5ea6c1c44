"""Findings of a last new-user pass over the features working together (issue 14)."""

from __future__ import annotations

import pathlib
import shutil

import nextmv
import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import fast_polling  # noqa: E402
from platform_emulator import PlatformEmulator  # noqa: E402

from nextpipe import Configuration, FlowSpec, app, step, timeout  # noqa: E402
from nextpipe.errors import StepTimeoutError  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

PROBE = pathlib.Path(__file__).resolve().parent / "apps" / "probe"
POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.02, backoff=0, jitter=0, max_duration=120)


def test_a_timed_out_local_run_prints_no_sdk_polling_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Stopping a node's polling went through the SDK's "stop" callback returning True, on which the SDK prints
    # "polling | stop condition met, stopping polling" on stderr: a line naming no step, once per canceled run.
    monkeypatch.setenv("UV_NO_PROJECT", "1")
    probe = shutil.copytree(PROBE, tmp_path / "probe", ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))

    class Flow(FlowSpec):
        @timeout(seconds=0.5)
        @app(app_id="probe", polling_options=POLLING)
        @step
        def solve() -> None:
            pass

    flow = Flow("stopped", {"sleep": 60}, conf=Configuration(local_apps={"probe": str(probe)}))
    with pytest.raises(RuntimeError, match="Step solve failed: node solve_0 ran longer") as caught:
        flow.run()
    assert isinstance(caught.value.__cause__, StepTimeoutError)
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
