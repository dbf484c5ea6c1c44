"""
Cost of constructing a flow (reading its declaration, building and logging the graph) next to running it.

Each flow class is written to a fresh module in a temporary directory and imported, so its source is
a real file, as in a user's project. "first" is the first construction of a freshly imported class
("first cpu" its CPU time); "again" constructs the same class once more. Seconds are the best of the repeats.
Run: ``python benchmarks/bench_construction.py`` (``--quick`` skips the 10,000-step chain).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import os
import subprocess
import sys
import tempfile
import time

from nextpipe import Configuration

_counter = itertools.count()


def chain_source(n: int) -> str:
    lines = ["from nextpipe import FlowSpec, needs, step", "", "", "class Flow(FlowSpec):"]
    lines += ["    @step", "    def s0(data):", '        """The first link."""', "        return data", ""]
    for i in range(1, n):
        lines += [f"    @needs(predecessors=[s{i - 1}])", "    @step", f"    def s{i}(value):"]
        lines += ["        return value", ""]
    return "\n".join(lines)


def wide_source(n: int) -> str:
    lines = ["from nextpipe import FlowSpec, join, needs, step", "", "", "class Flow(FlowSpec):"]
    for i in range(n):
        lines += ["    @step", f"    def w{i}(data):", f"        return data + {i}", ""]
    predecessors = ", ".join(f"w{i}" for i in range(n))
    lines += ["    @join()", f"    @needs(predecessors=[{predecessors}])", "    @step", "    def collect(items):"]
    lines += ["        return len(items)", ""]
    return "\n".join(lines)


def import_flow_class(source: str, directory: str) -> type:
    """Write the source to a new module and import it; a new module name each time gives a new class."""
    name = f"bench_flow_{next(_counter)}"
    path = os.path.join(directory, f"{name}.py")
    with open(path, "w") as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.Flow


def measure(source: str, directory: str, repeats: int) -> dict[str, float]:
    """Best seconds of: first construction (wall clock and CPU), construction again, run, and both."""
    best = dict.fromkeys(("first", "first cpu", "again", "run", "first+run"), float("inf"))
    config = Configuration(max_step_inputs=10**9)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        for _ in range(repeats):
            flow_class = import_flow_class(source, directory)
            start, start_cpu = time.perf_counter(), time.process_time()
            flow = flow_class("bench", 1, conf=config)
            constructed, cpu = time.perf_counter(), time.process_time() - start_cpu
            flow.run()
            ran = time.perf_counter()
            flow_class("bench", 1, conf=config)
            again = time.perf_counter() - ran
            for key, seconds in (
                ("first", constructed - start),
                ("first cpu", cpu),
                ("again", again),
                ("run", ran - constructed),
                ("first+run", ran - start),
            ):
                best[key] = min(best[key], seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="skip the 10,000-step chain")
    args = parser.parse_args()
    cases = [("chain", 50, 5), ("wide", 100, 5), ("chain", 100, 5), ("chain", 1000, 3)]
    if not args.quick:
        cases.append(("chain", 10000, 1))
    results = {}
    print(f"{'shape':<6} {'steps':>6} {'first':>9} {'first cpu':>9} {'again':>9} {'run':>9} {'first+run':>10}  (s)")
    with tempfile.TemporaryDirectory(prefix="nextpipe-bench-") as directory:
        for shape, n, repeats in cases:
            source = chain_source(n) if shape == "chain" else wide_source(n)
            best = results[shape, n] = measure(source, directory, repeats)
            print(
                f"{shape:<6} {n:>6} {best['first']:>9.4f} {best['first cpu']:>9.4f} {best['again']:>9.4f} "
                f"{best['run']:>9.4f} "
                f"{best['first+run']:>10.4f}"
            )
    for key in ("first", "first cpu"):  # CPU time is the steadier on a busy machine
        ratio = results["chain", 1000][key] / results["chain", 100][key]
        print(f"{key} construction, chain 1000 / chain 100: {ratio:.1f}x (linear: 10x)")
    print(f"of which logging the graph, chain 1000: {log_seconds(chain_source(1000)):.4f} s")
    print(f"nextmv version lookup, once per process: {version_lookup_seconds():.4f} s")
    print(f"first construction of chain 50 in a fresh process: {fresh_process_seconds(50):.4f} s")


def log_seconds(source: str) -> float:
    """Best seconds of writing a constructed flow's log lines (to /dev/null)."""
    with tempfile.TemporaryDirectory(prefix="nextpipe-bench-") as directory:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            flow = import_flow_class(source, directory)("bench", 1)
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                flow.graph._log_definition(type(flow))
                best = min(best, time.perf_counter() - start)
    return best


def version_lookup_seconds() -> float:
    """Seconds of the first lookup in a fresh process (cached afterwards)."""
    code = (
        "import time; from nextpipe.graph import _nextmv_version; t = time.perf_counter(); _nextmv_version();"
        "print(time.perf_counter() - t)"
    )
    return min(float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(3))


def fresh_process_seconds(n: int) -> float:
    """Best seconds of the first construction of an n-step chain in a fresh process (one-time costs included)."""
    code = (
        "import contextlib, os, sys, tempfile, time; sys.path.insert(0, sys.argv[1]);"
        "from bench_construction import chain_source, import_flow_class;"
        f"d = tempfile.mkdtemp(); flow_class = import_flow_class(chain_source({n}), d);"
        "devnull = open(os.devnull, 'w'); ctx = contextlib.redirect_stderr(devnull); ctx.__enter__();"
        "t = time.perf_counter(); flow_class('bench', 1); print(time.perf_counter() - t, file=sys.__stdout__)"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    runs = [subprocess.check_output([sys.executable, "-c", code, here], text=True) for _ in range(3)]
    return min(float(out) for out in runs)


if __name__ == "__main__":
    main()
