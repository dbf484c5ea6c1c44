"""
The uplink's time bound over HTTPS, as the real platform is reached (SPEC section 6).

Over ``https://`` the SDK's client retries a 429 or a dropped connection up to 10 times with backoff inside one
``client.request`` call; the uplink sends through a session of its own, so every request is one bounded attempt and
the flow's end waits at most ``FINAL_UPDATE_DEADLINE`` whatever the platform does. The emulator speaks TLS with a
certificate made for the test (``tls_emu``); the bounds are shortened so that the suite stays quick.
``benchmarks/bench_uplink_faults.py`` measures the same cases with the real bounds.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

import nextmv
import nextmv.cloud
import pytest
import requests

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import API_KEY, WF_APP, WF_RUN, client_for, flow_puts, last_graph, nodes_by_id  # noqa: E402
from platform_emulator import PlatformEmulator  # noqa: E402

import nextpipe.uplink  # noqa: E402
from nextpipe import FlowSpec, needs, step  # noqa: E402
from nextpipe.uplink import FlowDTO, FlowUpdateDTO, NodeDTO, StepDTO, UplinkClient, UplinkConfig  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

DEADLINE = 1.5
"""The shortened ``FINAL_UPDATE_DEADLINE`` of these tests (seconds)."""

SLACK = 2.0
"""Seconds the flow's end may take beyond the deadline (thread start, TLS handshakes, a loaded machine)."""


@pytest.fixture(autouse=True)
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nextpipe.uplink, "FINAL_UPDATE_DEADLINE", DEADLINE)
    monkeypatch.setattr(nextpipe.uplink, "REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(nextpipe.uplink, "FINAL_UPDATE_FIRST_PAUSE", 0.1)
    monkeypatch.setattr(nextpipe.uplink, "UPDATE_INTERVAL", 0.05)


def _break_429(emu: PlatformEmulator) -> None:
    emu.fail_next(1000, status=429, path_prefix="/v1/internal/", message="slow down")


def _break_reset(emu: PlatformEmulator) -> None:
    emu.drop_next(1000, path_prefix="/v1/internal/")


def _break_hang(emu: PlatformEmulator) -> None:
    emu.set_delay(60, path_prefix="/v1/internal/")


def _break_dead(emu: PlatformEmulator) -> None:
    emu.stop_listening()


FAULTS: dict[str, Callable[[PlatformEmulator], None]] = {
    "429": _break_429,
    "reset": _break_reset,
    "hang": _break_hang,
    "dead": _break_dead,
}


def _flow_class(emu: PlatformEmulator, fault: Callable[[PlatformEmulator], None], interrupt: bool) -> type[FlowSpec]:
    class BrokenPlatformFlow(FlowSpec):
        @step
        def a(data):
            emu.wait_for(lambda: len(emu.flow_updates) >= 1, timeout=5)  # the platform took the first update
            fault(emu)
            time.sleep(0.2)  # updates go out (and fail) while the flow runs
            return data + 1

        @needs(predecessors=[a])
        @step
        def b(data):
            if interrupt:  # Ctrl-C: the main thread, waiting in run(), gets the KeyboardInterrupt
                signal.raise_signal(signal.SIGINT)
                time.sleep(0.5)
            return data * 2

    return BrokenPlatformFlow


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_flow_end_is_bounded_whatever_the_platform_does_over_https(
    tls_emu: PlatformEmulator, fault: str, capfd: pytest.CaptureFixture[str]
) -> None:
    emu = tls_emu
    assert emu.url.startswith("https://")
    flow = _flow_class(emu, FAULTS[fault], interrupt=False)(
        "broken", 1, client=client_for(emu), uplink_config=UplinkConfig(WF_APP, WF_RUN)
    )
    started = time.monotonic()
    flow.run()
    assert time.monotonic() - started < DEADLINE + SLACK
    assert flow.get_result(flow.b) == 4
    assert len(emu.flow_updates) == 1  # only the first one was accepted
    if fault == "429":  # one request per attempt: the SDK's retries would show as extra 429s
        assert len(flow_puts(emu)) == 1 + flow.uplink.failed_updates
    assert API_KEY not in capfd.readouterr().err


@pytest.mark.parametrize("fault", ["429", "hang"])
def test_interrupt_is_bounded_whatever_the_platform_does_over_https(tls_emu: PlatformEmulator, fault: str) -> None:
    emu = tls_emu
    flow = _flow_class(emu, FAULTS[fault], interrupt=True)(
        "interrupted", 1, client=client_for(emu), uplink_config=UplinkConfig(WF_APP, WF_RUN)
    )
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        flow.run()
    assert time.monotonic() - started < DEADLINE + SLACK


def test_final_state_is_delivered_over_https_after_transient_429s(tls_emu: PlatformEmulator) -> None:
    emu = tls_emu
    flow = _flow_class(emu, lambda emu: emu.fail_next(3, status=429, path_prefix="/v1/internal/"), False)(
        "transient", 1, client=client_for(emu), uplink_config=UplinkConfig(WF_APP, WF_RUN)
    )
    flow.run()
    nodes = nodes_by_id(last_graph(emu))
    assert {n["status"] for n in nodes.values()} == {"succeeded"}
    assert [r.status for r in flow_puts(emu)].count(429) == 3
    assert flow.uplink.failed_updates == 0


def _update() -> FlowUpdateDTO:
    return FlowUpdateDTO(
        pipeline_graph=FlowDTO(steps=[StepDTO(id="a")], nodes=[NodeDTO(id="a_0", parent_id="a", status="running")])
    )


def test_new_user_sequence_with_an_unreachable_platform_and_no_run_ids(capfd: pytest.CaptureFixture[str]) -> None:
    client = nextmv.cloud.Client(api_key="x", url="https://unreachable.invalid/")
    uplink = UplinkClient(client=client, config=None)
    assert uplink.inactive is True and uplink.active is False
    assert uplink.config == UplinkConfig()
    assert uplink.client is client
    assert uplink.flow == {} and uplink.changed is False
    uplink.run_async()
    uplink.submit_update(_update())
    uplink.submit_update("anything")  # type: ignore[arg-type]
    uplink.terminate()
    assert uplink.flow == {}
    err = capfd.readouterr().err
    assert err.count("No application ID or run ID found, uplink is inactive.") == 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_new_user_sequence_with_run_ids_and_a_dead_https_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTMV_APP_ID", WF_APP)
    monkeypatch.setenv("NEXTMV_RUN_ID", WF_RUN)
    client = nextmv.cloud.Client(api_key=API_KEY, url=f"https://127.0.0.1:{_closed_port()}/")
    uplink = UplinkClient(client=client, config=None)
    assert uplink.inactive is False
    assert uplink.config == UplinkConfig(application_id=WF_APP, run_id=WF_RUN)
    uplink.run_async()
    update = _update()
    uplink.submit_update(update)
    assert uplink.flow == update.to_dict()
    started = time.monotonic()
    uplink.terminate()
    assert time.monotonic() - started < DEADLINE + SLACK
    assert uplink.updates_sent == 0 and uplink.failed_updates >= 1


def test_uplink_puts_the_client_headers_and_body_over_https(tls_emu: PlatformEmulator) -> None:
    uplink = UplinkClient(client_for(tls_emu), UplinkConfig(WF_APP, WF_RUN))
    update = _update()
    uplink.submit_update(update)
    assert uplink.changed is True
    uplink.terminate()  # delivers without run_async too
    [put] = flow_puts(tls_emu)
    assert put.status == 204 and put.json == update.to_dict()
    assert put.headers["authorization"] == f"Bearer {API_KEY}"
    assert put.headers["content-type"].startswith("application/json")
    assert uplink.changed is False and uplink.flow == update.to_dict()


def test_a_flow_run_twice_reports_both_runs_over_https(tls_emu: PlatformEmulator) -> None:
    class Twice(FlowSpec):
        @step
        def a(data):
            return data + 1

    flow = Twice("twice", 1, client=client_for(tls_emu), uplink_config=UplinkConfig(WF_APP, WF_RUN))
    for run in (1, 2):
        flow.run()
        assert flow.get_result(flow.a) == 2
        assert nodes_by_id(last_graph(tls_emu))["a_0"]["status"] == "succeeded"
        assert flow.uplink.updates_sent == len(tls_emu.flow_updates) >= run
    assert {r.status for r in flow_puts(tls_emu)} == {204}


def test_emulator_over_https_runs_apps_with_uploads_and_refuses_untrusted_clients(
    tls_emu: PlatformEmulator, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = nextmv.cloud.Application(client=client_for(tls_emu), id="echo")
    run_id = app.new_run(input="a text input is uploaded to the presigned URL")  # POST uploadurl, then PUT there
    result = app.run_result_with_polling(
        run_id, polling_options=nextmv.PollingOptions(initial_delay=0, delay=0.01, backoff=0, jitter=0)
    )
    assert result.metadata.status_v2.value == "succeeded"
    assert tls_emu.requests_for("PUT", "/upload/")[0].status == 200
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # the self-signed certificate is no longer trusted
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_emu.url + "/v1/applications/echo", timeout=5)
