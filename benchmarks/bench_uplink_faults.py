"""
How long a flow's end waits for the uplink when the platform misbehaves, over HTTPS with the real bounds.

The test suite's platform emulator speaks TLS with a throw-away certificate (made with ``openssl``); a two-step
flow reports to it, the platform accepts the first update and then answers every request with 429, drops the
connection, stops answering, or is gone. Prints, per fault, the seconds ``run()`` took beyond the steps' own time
(the end-of-run wait), and the same for an interrupted run (Ctrl-C).
Run: ``python benchmarks/bench_uplink_faults.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time

from nextmv.cloud import Client

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from platform_emulator import PlatformEmulator  # noqa: E402

import nextpipe.uplink  # noqa: E402
from nextpipe import FlowSpec, needs, step  # noqa: E402
from nextpipe.uplink import UplinkConfig  # noqa: E402

STEP_SECONDS = 0.3
FAULTS = {
    "429 (Too Many Requests)": lambda emu: emu.fail_next(10_000, status=429, path_prefix="/v1/internal/"),
    "connection reset": lambda emu: emu.drop_next(10_000, path_prefix="/v1/internal/"),
    "no answer (hang)": lambda emu: emu.set_delay(600, path_prefix="/v1/internal/"),
    "server gone": lambda emu: emu.stop_listening(),
}


def tls_context(folder: str) -> ssl.SSLContext:
    certificate, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", key, "-out", certificate, "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    os.environ["REQUESTS_CA_BUNDLE"] = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    return context


def end_wait(context: ssl.SSLContext, fault, interrupt: bool) -> float:
    with PlatformEmulator(api_key="bench-key", tls=context) as emu:

        class Flow(FlowSpec):
            @step
            def a(data):
                emu.wait_for(lambda: len(emu.flow_updates) >= 1, timeout=10)
                fault(emu)
                return data

            @needs(predecessors=[a])
            @step
            def b(data):
                time.sleep(STEP_SECONDS)
                if interrupt:
                    signal.raise_signal(signal.SIGINT)
                    time.sleep(STEP_SECONDS)
                return data

        with contextlib.redirect_stderr(io.StringIO()):
            client = Client(api_key="bench-key", url=emu.url)
            flow = Flow("bench", 1, client=client, uplink_config=UplinkConfig("a", "r"))
            started = time.monotonic()
            try:
                flow.run()
            except KeyboardInterrupt:
                pass
            elapsed = time.monotonic() - started
        emu.clear_faults()
        return elapsed - STEP_SECONDS


def main() -> None:
    uplink = nextpipe.uplink
    print(f"FINAL_UPDATE_DEADLINE = {uplink.FINAL_UPDATE_DEADLINE} s, REQUEST_TIMEOUT = {uplink.REQUEST_TIMEOUT} s")
    with tempfile.TemporaryDirectory() as folder:
        context = tls_context(folder)
        print(f"{'fault (over https)':<26} {'end of run':>11} {'Ctrl-C':>9}")
        for name, fault in FAULTS.items():
            normal, interrupted = end_wait(context, fault, False), end_wait(context, fault, True)
            print(f"{name:<26} {normal:>9.2f} s {interrupted:>7.2f} s")


if __name__ == "__main__":
    main()
