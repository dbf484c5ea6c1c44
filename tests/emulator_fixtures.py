"""
Shared fixtures and helpers for the tests that run flows against the platform emulator.

Test modules load this file with ``pytest_plugins = ["emulator_fixtures"]`` (``tests/`` is on ``sys.path``
because it has no ``__init__.py``) and import the plain helpers directly.
"""

from __future__ import annotations

import datetime
import pathlib
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import nextmv
import nextmv.cloud
import pytest
from conftest import require_program
from platform_emulator import PlatformEmulator

import nextpipe.uplink
from nextpipe.utils import THREAD_NAME_PREFIX

API_KEY = "sk-nextpipe-test-3f9a1c7e52d84b06"
"""The dummy API key: long and unique, so that a leak is found by a plain substring search."""

WF_APP = "wf-app"
WF_RUN = "wf-run-123"
FLOW_PATH = f"/v1/internal/applications/{WF_APP}/runs/{WF_RUN}/flow"
FINAL_STATUSES = {"succeeded", "failed"}


def fast_polling(max_duration: float = 10) -> nextmv.PollingOptions:
    """Tight polling options: a fresh object each time (the SDK may assign to the one it gets)."""
    return nextmv.PollingOptions(initial_delay=0, delay=0.01, backoff=0, jitter=0, max_duration=max_duration)


@pytest.fixture
def emu() -> Iterator[PlatformEmulator]:
    """A running emulator that requires :data:`API_KEY`."""
    with PlatformEmulator(api_key=API_KEY) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed certificate for ``127.0.0.1`` and its key (made once per session with ``openssl``)."""
    openssl = require_program("openssl", "making the test TLS certificate")
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(certificate), "-days", "2", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return certificate, key


@pytest.fixture
def tls_emu(
    tls_certificate: tuple[pathlib.Path, pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[PlatformEmulator]:
    """A running emulator speaking HTTPS (``emu.url`` is ``https://...``), trusted through ``REQUESTS_CA_BUNDLE``."""
    certificate, key = tls_certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate))
    with PlatformEmulator(api_key=API_KEY, tls=context) as emulator:
        yield emulator


@pytest.fixture
def platform_env(emu: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> PlatformEmulator:
    """Point the SDK at the emulator through the environment (no workflow run ids: the uplink stays inactive)."""
    monkeypatch.setenv("NEXTMV_ENDPOINT", emu.url)
    monkeypatch.setenv("NEXTMV_API_KEY", API_KEY)
    return emu


@pytest.fixture
def workflow_env(platform_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> PlatformEmulator:
    """Like ``platform_env``, and the flow runs as the platform run ``WF_APP``/``WF_RUN`` (the uplink is active)."""
    monkeypatch.setenv("NEXTMV_APP_ID", WF_APP)
    monkeypatch.setenv("NEXTMV_RUN_ID", WF_RUN)
    return platform_env


@pytest.fixture
def fast_uplink(monkeypatch: pytest.MonkeyPatch) -> float:
    """A short uplink update interval, so that tests watching updates need not wait seconds."""
    interval = 0.05
    monkeypatch.setattr(nextpipe.uplink, "UPDATE_INTERVAL", interval)
    return interval


def client_for(emu: PlatformEmulator) -> nextmv.cloud.Client:
    """A real SDK client pointed at the emulator."""
    return nextmv.cloud.Client(api_key=API_KEY, url=emu.url)


def flow_puts(emu: PlatformEmulator, path: str = FLOW_PATH) -> list[Any]:
    """Every flow update request the emulator received on ``path`` (also the failed ones)."""
    return [r for r in emu.requests_for("PUT", "/v1/internal/") if r.path == path]


def last_graph(emu: PlatformEmulator) -> dict[str, Any]:
    """The ``pipeline_graph`` of the last flow update the emulator accepted."""
    assert emu.flow_updates, "the emulator received no flow update"
    return emu.flow_updates[-1]["pipeline_graph"]


def nodes_by_id(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The nodes of a ``pipeline_graph``, by id."""
    return {node["id"]: node for node in graph["nodes"]}


def parse_rfc3339_utc(value: str) -> datetime.datetime:
    """Parse an RFC 3339 timestamp (``Z`` or ``+00:00``) and check that it is UTC."""
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None and parsed.utcoffset() == datetime.timedelta(0), value
    return parsed


def nextpipe_threads() -> list[threading.Thread]:
    """Live threads of nextpipe (workers, uplink, log relays)."""
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX) and t.is_alive()]


def wait_for_no_nextpipe_threads(
    timeout: float = 2.0, ignore: set[threading.Thread] | None = None
) -> list[threading.Thread]:
    """Wait up to ``timeout`` seconds for the nextpipe threads not in ``ignore`` to end; return those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [t for t in nextpipe_threads() if t not in (ignore or set())]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.01)
