"""
The run cache: what a cache hit costs against the run it saves.

Prints, for one app step of the example echo app run locally through
``nextmv.local``: a fresh run (cache off), a miss with the cache on (key,
store write), and a hit (key, store read, the stored run's result read from
its folder); then a hit on Nextmv Cloud against the test suite's platform
emulator on 127.0.0.1 (requests made), and the key's cost on large inputs.
Seconds are the best of several ``flow.run()`` calls. Run:
``python benchmarks/bench_cache.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time

import nextmv

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from platform_emulator import PlatformEmulator  # noqa: E402

from nextpipe import Configuration, FlowSpec, app, step  # noqa: E402
from nextpipe.run_cache import APP_DIR_EXCLUDES, CacheEntry, RunStore, cache_key, directory_digest  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
POLLING = nextmv.PollingOptions(initial_delay=0, delay=0.05, backoff=0, jitter=0, max_duration=60)
REPEATS = 5


class Echo(FlowSpec):
    @app(app_id="echo", polling_options=POLLING)
    @step
    def solve() -> None:
        pass


def best(make_flow: object, repeats: int = REPEATS) -> float:
    """Best wall time (s) of ``flow.run()`` over fresh flows from ``make_flow(i)``."""
    times = []
    with contextlib.redirect_stderr(io.StringIO()):  # the flows' logs
        for i in range(repeats):
            flow = make_flow(i)
            start = time.perf_counter()
            flow.run()
            times.append(time.perf_counter() - start)
    return min(times)


def timed(action: object) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    os.environ.setdefault("UV_OFFLINE", "1")
    os.environ.setdefault("UV_NO_PROJECT", "1")
    work = tempfile.mkdtemp(prefix="bench-cache-")
    try:
        echo_dir = os.path.join(work, "echo")
        shutil.copytree(os.path.join(ROOT, "examples", "chain", "apps", "echo"), echo_dir)
        local = {"echo": echo_dir}
        off = Configuration(local_apps=local)
        on = Configuration(local_apps=local, cache=True, cache_dir=os.path.join(work, "cache"))

        fresh = best(lambda i: Echo("echo", {"fresh": i}, conf=off))
        miss = best(lambda i: Echo("echo", {"miss": i}, conf=on))
        best(lambda i: Echo("echo", {"hit": True}, conf=on), repeats=1)
        hit = best(lambda i: Echo("echo", {"hit": True}, conf=on), repeats=20)
        print(f"local echo app, one step (best of {REPEATS}; hit best of 20):")
        print(f"  fresh run, cache off : {fresh:8.4f} s")
        print(f"  miss, cache on       : {miss:8.4f} s")
        print(f"  hit                  : {hit:8.4f} s  ({fresh / hit:.0f}x faster than a fresh run)")

        with PlatformEmulator(api_key="bench-key") as emu:
            emu.set_app_behavior("echo", duration=0.5, logs=[])
            emu.set_instance("echo", "prod", "v1", default=True)
            os.environ.update(NEXTMV_ENDPOINT=emu.url, NEXTMV_API_KEY="bench-key")
            cloud = Configuration(cache=True, cache_dir=os.path.join(work, "cloud-cache"))
            cloud_fresh = best(lambda i: Echo("echo", {"fresh": i}, conf=cloud))
            before = len(emu.requests)
            cloud_hit = best(lambda i: Echo("echo", {"fresh": 0}, conf=cloud), repeats=20)
            requests = emu.requests[before:]
            print("Nextmv Cloud (emulator on 127.0.0.1, runs of 0.5 s, polling every 50 ms):")
            print(f"  fresh run (miss)     : {cloud_fresh:8.4f} s")
            print(f"  hit                  : {cloud_hit:8.4f} s  ({len(requests) / 20:.0f} requests per hit:")
            for method, path in sorted({(r.method, r.route) for r in requests}):
                print(f"                                     {method} {path})")

        store = RunStore(os.path.join(work, "store"))
        entry = CacheEntry("k" * 64, "echo", echo_dir, "local-x", "succeeded", time.time(), "solve_0")
        store.put(entry)
        puts = min(timed(lambda: store.put(entry)) for _ in range(50))
        gets = min(timed(lambda: store.get(entry.key)) for _ in range(50))
        print(f"store: write {puts * 1000:.2f} ms, read {gets * 1000:.2f} ms (best of 50)")
        print("key cost:")
        big = {"items": [{"id": i, "weight": i * 0.37, "tags": ["a", "b"]} for i in range(50_000)]}
        size = len(json.dumps(big))
        start = time.perf_counter()
        cache_key("solver", "", {}, None, {"json": big}, {"cloud": "https://api.cloud.nextmv.io"})
        print(f"  JSON input of {size / 1e6:.1f} MB : {time.perf_counter() - start:.4f} s")
        files = os.path.join(work, "files")
        os.makedirs(files)
        for i in range(100):
            with open(os.path.join(files, f"part-{i}.csv"), "wb") as file:
                file.write(os.urandom(100_000))
        start = time.perf_counter()
        directory_digest(files)
        print(f"  directory of 100 files, 10 MB : {time.perf_counter() - start:.4f} s")
        start = time.perf_counter()
        directory_digest(echo_dir, APP_DIR_EXCLUDES)
        print(
            f"  echo app code digest (after {len(os.listdir(os.path.join(echo_dir, '.nextmv', 'runs')))} runs): "
            f"{time.perf_counter() - start:.4f} s (once per flow and app)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
