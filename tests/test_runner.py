"""
The runner's edges: its documented attributes, log lines, helpful errors, bounded inputs, re-runs, two flows at
once, and SIGTERM (in a subprocess, against the platform emulator).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import pytest

pytest.register_assert_rewrite("emulator_fixtures")  # before its import: it is also loaded as a pytest plugin

from emulator_fixtures import API_KEY, fast_polling, last_graph, nodes_by_id  # noqa: E402
from platform_emulator import PlatformEmulator, RunFailure  # noqa: E402

from nextpipe import Configuration, FlowSpec, app, foreach, join, needs, optional, step  # noqa: E402
from nextpipe.constants import STATUS_FAILED, STATUS_SUCCEEDED  # noqa: E402
from nextpipe.threads import Pool  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

WAIT = 10  # seconds: upper bound for events, only hit when something is broken
LOCK_TYPE = type(threading.Lock())


class Chain(FlowSpec):
    @step
    def first(data):
        return data + 1

    @needs(predecessors=[first])
    @step
    def second(data):
        if data < 0:
            raise ValueError("negative input")
        return data * 2


# ---------------------------------------------------------------------------------------------------------------------
# Runner attributes (SPEC section 10)
# ---------------------------------------------------------------------------------------------------------------------


def test_runner_has_its_documented_attributes_from_construction_on():
    flow = Chain("chain", 1, conf=Configuration(thread_count=3))
    runner = flow.runner
    assert runner.spec is flow and runner.graph is flow.graph and runner.uplink is flow.uplink
    assert isinstance(runner.pool, Pool) and runner.pool.max_threads == 3
    assert runner.jobs == [] and runner.node_idxs == {}
    assert runner.fail is False and runner.fail_reason is None
    assert isinstance(runner.lock_fail, LOCK_TYPE) and isinstance(runner.lock_running, LOCK_TYPE)
    flow.run()
    assert runner.fail is False and runner.fail_reason is None and runner.jobs == []
    assert {step.definition.get_id(): count for step, count in runner.node_idxs.items()} == {"first": 1, "second": 1}


def test_failed_run_says_why_and_a_successful_rerun_clears_it():
    flow = Chain("chain", -5)
    with pytest.raises(RuntimeError, match="^Flow failed: Step second failed: negative input$"):
        flow.run()
    assert flow.runner.fail is True
    assert flow.runner.fail_reason == "Step second failed: negative input"
    flow.input = 5
    flow.run()
    assert flow.runner.fail is False and flow.runner.fail_reason is None
    assert flow.get_result(flow.second) == 12


# ---------------------------------------------------------------------------------------------------------------------
# Log lines and errors that help
# ---------------------------------------------------------------------------------------------------------------------


class WithOptional(FlowSpec):
    @foreach()
    @step
    def fan(data):
        return [1, 2]

    @needs(predecessors=[fan])
    @step
    def work(item):
        return item

    @optional(condition=lambda _step: False)
    @needs(predecessors=[work])
    @step
    def maybe(value):
        return value


def test_running_and_skipping_are_logged(capfd):
    flow = WithOptional("optional", None)
    capfd.readouterr()
    flow.run()
    lines = capfd.readouterr().err.splitlines()
    running = sorted(line for line in lines if line.startswith("[nextpipe] Running node "))
    assert running == [
        "[nextpipe] Running node fan_0",
        "[nextpipe] Running node work_0",
        "[nextpipe] Running node work_1",
    ]
    assert lines.count("[nextpipe] Skipping step maybe") == 1


def _user_helper(value):
    return {"key": value}["missing"]


class Deep(FlowSpec):
    @step
    def parse(data):
        return _user_helper(data)


def test_failure_log_names_node_and_type_and_shows_the_users_traceback_once(capfd):
    flow = Deep("deep", 1)
    capfd.readouterr()
    with pytest.raises(RuntimeError, match=r"^Flow failed: Step parse failed: 'missing'$"):
        flow.run()
    err = capfd.readouterr().err
    assert "[nextpipe] Step parse failed in node parse_0 with KeyError:" in err
    assert err.count("Traceback (most recent call last)") == 1
    block = err[err.index("Traceback (most recent call last)") :]
    assert "in parse" in block and "in _user_helper" in block and "KeyError: 'missing'" in block
    assert os.sep + "nextpipe" + os.sep not in block  # no frame of nextpipe itself
    assert block.index("in parse") < block.index("in _user_helper")


def test_failure_with_an_empty_message_reports_the_type():
    class Silent(FlowSpec):
        @step
        def quiet(data):
            raise ValueError()

    flow = Silent("silent", None)
    with pytest.raises(RuntimeError, match="^Flow failed: Step quiet failed: ValueError$"):
        flow.run()
    assert flow.graph.get_step(Silent.quiet.step).nodes[0].error == "ValueError"
    assert flow.runner.fail_reason == "Step quiet failed: ValueError"


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


def test_failure_whose_message_cannot_be_read_still_fails_cleanly(capfd):
    class Odd(FlowSpec):
        @step
        def odd(data):
            raise Unprintable()

    flow = Odd("odd", None)
    capfd.readouterr()
    with pytest.raises(RuntimeError) as raised:
        flow.run()
    assert str(raised.value).startswith("Flow failed: Step odd failed: Unprintable")
    node = flow.graph.get_step(Odd.odd.step).nodes[0]
    assert node.status == STATUS_FAILED and node.error.startswith("Unprintable")
    assert isinstance(raised.value.__cause__, Unprintable)
    err = capfd.readouterr().err
    assert "[nextpipe] Step odd failed in node odd_0 with Unprintable:" in err
    assert "Exception in thread" not in err


def test_foreach_not_returning_a_list_logs_the_type_and_raises_the_contract_text(capfd):
    class NotAList(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return {"a": 1}

        @needs(predecessors=[fan])
        @step
        def work(item):
            return item

    flow = NotAList("not a list", None)
    capfd.readouterr()
    with pytest.raises(Exception) as raised:
        flow.run()
    assert str(raised.value) == "Predecessor step fan declared as 'foreach' must return a list, but returned [{'a': 1}]"
    assert type(raised.value) is Exception
    err = capfd.readouterr().err
    assert (
        "[nextpipe] Step fan is declared @foreach, so it must run once and return a list, but it returned dict" in err
    )
    assert flow.runner.fail is True and flow.runner.fail_reason == str(raised.value)


class Product(FlowSpec):
    @foreach()
    @step
    def left(n):
        return list(range(n))

    @foreach()
    @step
    def right(n):
        return list(range(n))

    @needs(predecessors=[left, right])
    @step
    def pair(a, b):
        return a * b


def test_too_many_inputs_log_names_the_fix(capfd):
    flow = Product("product", 8)
    capfd.readouterr()
    with pytest.raises(Exception, match=r"^Step pair has too many inputs \(64\)\. Maximum allowed is 50\.$"):
        flow.run()
    err = capfd.readouterr().err
    assert "Configuration(max_step_inputs=64)" in err
    assert Product("product", 8, conf=Configuration(max_step_inputs=64)).run() is None


def test_input_limit_refuses_a_huge_product_before_building_it():
    flow = Product("huge", 5000)
    tracemalloc.start()
    try:
        with pytest.raises(Exception, match=r"^Step pair has too many inputs \(25000000\)\. Maximum allowed is 50\.$"):
            flow.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB: the product was built"  # 25 million inputs: gigabytes
    assert flow.graph.get_step(Product.pair.step).nodes == []


def test_join_and_repeat_count_as_the_contract_says():
    class Joined(FlowSpec):
        @foreach()
        @step
        def fan(data):
            return list(range(60))

        @join()
        @needs(predecessors=[fan])
        @step
        def gather(items):
            return len(items)

    flow = Joined("joined", None)
    flow.run()  # one input: the joined list of 60 items
    assert flow.get_result(flow.gather) == 60


# ---------------------------------------------------------------------------------------------------------------------
# Re-runs and concurrent runs
# ---------------------------------------------------------------------------------------------------------------------


def test_rerun_starts_clean_a_step_skipped_before_runs_now():
    switch = {"run": False}

    class Optional(FlowSpec):
        @step
        def base(data):
            return data

        @optional(condition=lambda _step: switch["run"])
        @needs(predecessors=[base])
        @step
        def maybe(value):
            return value + 1

        @needs(predecessors=[maybe])
        @step
        def after(value):
            return value

    flow = Optional("optional", 41)
    flow.run()
    assert flow.get_result(flow.after) is None  # the skipped step passes None on
    switch["run"] = True
    flow.run()
    assert flow.get_result(flow.maybe) == 42 and flow.get_result(flow.after) == 42
    assert not flow.graph.get_step(Optional.maybe.step).skipped
    switch["run"] = False
    flow.run()
    assert flow.get_result(flow.after) is None


def test_a_late_node_of_a_failed_run_cannot_touch_the_next_run():
    first_run = {"on": True}
    stale_started = threading.Event()
    release_stale = threading.Event()
    stale_thread = []

    def wait_for_stale_node():
        release_stale.set()
        stale_thread[0].join(WAIT)  # the old node's worker ended: its completion was handled
        assert not stale_thread[0].is_alive()

    class Straggler(FlowSpec):
        @step
        def slow(data):
            if first_run["on"]:
                stale_thread.append(threading.current_thread())
                stale_started.set()
                release_stale.wait(WAIT)
                return "stale"
            wait_for_stale_node()
            return "fresh"

        @step
        def boom(data):
            if first_run["on"]:
                stale_started.wait(WAIT)
                raise ValueError("first run fails")
            return "ok"

        @needs(predecessors=[slow, boom])
        @step
        def after(slow, boom):
            return (slow, boom)

    flow = Straggler("straggler", None)
    with pytest.raises(RuntimeError, match="^Flow failed: Step boom failed: first run fails$"):
        flow.run()
    first_run["on"] = False
    flow.run()
    assert flow.get_result(flow.slow) == "fresh"
    assert flow.get_result(flow.after) == ("fresh", "ok")
    assert [n.status for s in flow.graph.steps for n in s.nodes] == [STATUS_SUCCEEDED] * 3
    assert flow.runner.fail is False


def test_run_while_running_raises_a_clear_error():
    started = threading.Event()
    release = threading.Event()

    class Blocking(FlowSpec):
        @step
        def block(data):
            started.set()
            release.wait(WAIT)
            return "done"

    flow = Blocking("blocking", None)
    first = threading.Thread(target=flow.run)
    first.start()
    try:
        assert started.wait(WAIT)
        with pytest.raises(RuntimeError, match="^Flow blocking is already running: run\\(\\) was called again"):
            flow.run()
    finally:
        release.set()
        first.join(WAIT)
    assert flow.get_result(flow.block) == "done"


def test_two_flows_in_two_threads_do_not_interfere():
    barrier = threading.Barrier(2, timeout=WAIT)

    class Fan(FlowSpec):
        @foreach()
        @step
        def fan(data):
            barrier.wait()  # both flows run at once from here on
            return [data + i for i in range(20)]

        @needs(predecessors=[fan])
        @step
        def work(item):
            if item == -1:
                raise ValueError("the failing flow's item")
            time.sleep(0.001)
            return item * 2

        @join()
        @needs(predecessors=[work])
        @step
        def total(items):
            return sum(i[0] for i in items)

    good, bad = Fan("good", 1000), Fan("bad", -5)
    errors = {}

    def run(flow):
        try:
            flow.run()
        except RuntimeError as error:
            errors[flow.name] = str(error)

    threads = [threading.Thread(target=run, args=(flow,)) for flow in (good, bad)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert good.get_result(good.total) == sum(2 * (1000 + i) for i in range(20))
    assert good.runner.fail is False and "good" not in errors
    assert errors["bad"] == "Flow failed: Step work failed: the failing flow's item"
    assert bad.runner.fail is True and bad.get_result(bad.total) is None


# ---------------------------------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------------------------------


def test_run_in_the_main_thread_restores_the_sigterm_handler():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set from the main thread only")
    seen = []

    class Look(FlowSpec):
        @step
        def look(data):
            seen.append(signal.getsignal(signal.SIGTERM))

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        Look("look", None).run()
        assert signal.getsignal(signal.SIGTERM) is mine
        other = threading.Thread(target=Look("look", None).run)  # not the main thread: no handler is installed
        other.start()
        other.join(WAIT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen[0] is not mine and seen[1] is mine


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import signal, sys
    import nextmv
    from nextpipe import FlowSpec, app, needs, step
    from nextpipe.hooks import FlowHooks

    class Solve(FlowSpec):
        @step
        def prepare(data):
            return data

        @app(app_id="slow", polling_options=nextmv.PollingOptions(
            initial_delay=0, delay=0.01, backoff=0, jitter=0, max_duration=60))
        @needs(predecessors=[prepare])
        @step
        def solve():
            pass

    class Report(FlowHooks):
        def flow_end(self, flow, error):
            node = flow.graph.steps[1].nodes[0]
            print(f"flow_end {type(error).__name__} {node.status} cancel={node.cancel}", flush=True)

    if sys.argv[1] == "handler":
        def previous(signum, frame):
            print("previous handler called", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, previous)

    flow = Solve("sigterm", {"x": 1})
    flow.add_hook(Report())
    flow.run()
    print("not reached", flush=True)
    """
)


@pytest.mark.parametrize("previous", ["default", "handler"])
def test_sigterm_cancels_sub_runs_reports_state_and_ends_the_process(
    emu: PlatformEmulator, tmp_path: pathlib.Path, previous: str
) -> None:
    emu.hold_runs(True, app_id="slow")
    script = tmp_path / "flow.py"
    script.write_text(SIGTERM_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTMV_", "NEXTPIPE_"))}
    env.update(
        HOME=str(tmp_path),
        NEXTMV_APP_ID="wf-app",
        NEXTMV_RUN_ID="wf-run",
        NEXTMV_ENDPOINT=emu.url,
        NEXTMV_API_KEY=API_KEY,
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        [sys.executable, str(script), previous], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        (run,) = emu.wait_for_runs(1, timeout=WAIT)
        emu.wait_for(lambda: bool(emu.requests_for("GET", f"/v1/applications/slow/runs/{run.run_id}")), timeout=WAIT)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
    stdout = out.decode()
    assert "flow_end _Terminated failed cancel=True" in stdout, err.decode()
    assert "not reached" not in stdout
    if previous == "default":
        assert process.returncode == -signal.SIGTERM  # as if the flow had not handled SIGTERM (143 in a shell)
    else:
        assert "previous handler called" in stdout and process.returncode == 3
    assert emu.run(run.run_id).canceled and emu.run(run.run_id).status == "canceled"
    nodes = nodes_by_id(last_graph(emu))  # the final state reached the platform before the process ended
    assert nodes["solve_0"]["status"] == STATUS_FAILED and nodes["prepare_0"]["status"] == STATUS_SUCCEEDED


def test_a_failed_app_runs_error_is_logged_once(platform_env: PlatformEmulator, capfd) -> None:
    platform_env.set_app_behavior("echo", lambda input, options, files: RunFailure("distinctive solver trouble"))

    class Failing(FlowSpec):
        @app(app_id="echo", polling_options=fast_polling())
        @step
        def solve():
            pass

    flow = Failing("failing app", {"x": 1})
    capfd.readouterr()
    with pytest.raises(RuntimeError, match="^Flow failed: Step solve failed: run .* ended failed: distinctive solver"):
        flow.run()
    err = capfd.readouterr().err
    assert err.count("distinctive solver trouble") == 1
    assert "[nextpipe] Step solve failed in node solve_0 with" in err
