"""Output through the standard `logging`: the original's lines by default, and every way a user configures it.

Cases that depend on the process's logging setup (basicConfig, NEXTPIPE_LOG_LEVEL)
run a script in a fresh interpreter; the rest run here, with the `nextpipe`
logger's level and handlers restored after each test.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytest.register_assert_rewrite("emulator_fixtures")

import nextmv  # noqa: E402
from emulator_fixtures import fast_polling  # noqa: E402
from platform_emulator import PlatformEmulator  # noqa: E402

import nextpipe  # noqa: E402
from nextpipe import FlowSpec, app, foreach, log, needs, step  # noqa: E402
from nextpipe.utils import LOG_LEVEL_ENV, ConsoleHandler, log_internal  # noqa: E402

pytest_plugins = ["emulator_fixtures"]

ROOT = Path(__file__).resolve().parent.parent

FLOW_SCRIPT = textwrap.dedent(
    """
    from nextpipe import Configuration, FlowSpec, log, needs, step

    class Chain(FlowSpec):
        @step
        def prepare(data: dict) -> dict:
            log("preparing")
            return data

        @needs(predecessors=[prepare])
        @step
        def finish(data: dict) -> dict:
            log("finishing")
            return data

    log("before")
    Chain("chain", {"a": 1}, conf=Configuration(summary={summary})).run()
    log("after")
    """
)


def script_env(**env: str) -> dict[str, str]:
    """This environment with this worktree's nextpipe, no Nextmv or nextpipe variables, as in CI."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTMV_", "NEXTPIPE_"))}
    environment.update(PYTHONPATH=str(ROOT), CI="1", **env)
    return environment


def run_script(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter."""
    environment = script_env(**(env or {}))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120, check=False
    )


def flow_script(summary: bool = True, before: str = "") -> str:
    return before + FLOW_SCRIPT.replace("{summary}", str(summary))


@pytest.fixture(autouse=True)
def restore_logger():
    """Each test may change the nextpipe logger: put its level and handlers back."""
    logger = logging.getLogger("nextpipe")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


class Fan(FlowSpec):
    @foreach()
    @step
    def items(data: dict) -> list:
        log("fanning out")
        return list(range(data["n"]))

    @needs(predecessors=[items])
    @step
    def work(item: int) -> int:
        for i in range(data_lines(item)):
            log(f"item {item} line {i} " + "x" * 200)
        return item


def data_lines(item: int) -> int:
    return 50


def test_default_output_keeps_the_original_format() -> None:
    proc = run_script(flow_script(summary=False))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[:11] == [
        "[main] before",
        "[nextpipe] Flow: Chain",
        f"[nextpipe] nextpipe: {nextpipe.__version__}",
        f"[nextpipe] nextmv: {nextmv.__version__}",
        "[nextpipe] Flow graph steps:",
        "[nextpipe] Step:",
        "[nextpipe]   Definition: Step(prepare)",
        "[nextpipe]   Docstring: None",
        "[nextpipe] Step:",
        "[nextpipe]   Definition: Step(finish, StepNeeds(prepare))",
        "[nextpipe]   Docstring: None",
    ]
    assert lines[-5:] == [
        "[nextpipe] Running node prepare_0",
        "[prepare_0] preparing",
        "[nextpipe] Running node finish_0",
        "[finish_0] finishing",
        "[main] after",
    ]
    # A multi-line message is written as it is, after one prefix: the Mermaid text.
    assert "[nextpipe] graph LR\n  prepare(prepare)\n  prepare --> finish\n  finish(finish)\n\n" in proc.stderr
    assert proc.stdout == ""


# "Before": the original's way, each line written straight to stderr, and no built-in hooks (no summary).
BEFORE = """
import runpy, sys
import nextpipe.reporting, nextpipe.utils

def write(source, step, message, attributes=None):
    sys.stderr.write(f"[{step}] {message}\\n")
    sys.stderr.flush()

nextpipe.utils._log = write
nextpipe.reporting.default_hooks = lambda flow: []
sys.argv = ["main.py"]
runpy.run_path("main.py", run_name="__main__")
"""


def test_an_example_prints_what_it_did_before_plus_the_summary(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples" / "chain", tmp_path / "chain", ignore=shutil.ignore_patterns(".nextmv"))
    outputs = {}
    for when, command in (("before", ["-c", BEFORE]), ("after", ["main.py"])):
        with open(tmp_path / "chain" / "input.json") as stdin:
            proc = subprocess.run(
                [sys.executable, *command],
                cwd=tmp_path / "chain",
                stdin=stdin,
                capture_output=True,
                text=True,
                env={**script_env(), "HOME": str(tmp_path), "UV_OFFLINE": "1", "UV_NO_PROJECT": "1"},
                timeout=180,
                check=False,
            )
        assert proc.returncode == 0, proc.stderr
        # Run ids and the run's folder differ from run to run.
        outputs[when] = re.sub(r"local-[a-z0-9]+", "local-ID", proc.stderr).splitlines()
    before, after = outputs["before"], outputs["after"]
    assert after[: len(before)] == before
    added = after[len(before) :]
    assert re.fullmatch(r"\[nextpipe\] Flow chain succeeded in .*: 3 steps, 3 nodes", added[0])
    assert [line.split()[1] for line in added[2:]] == ["prepare", "echo", "enhance"]
    assert added[3].endswith("local-ID") and len(added) == 5


def test_summary_table_comes_last_through_the_logger() -> None:
    with_summary = run_script(flow_script(summary=True)).stderr.splitlines()
    without = run_script(flow_script(summary=False)).stderr.splitlines()
    added = [line for line in with_summary if line not in without]
    # Only the summary table is added: a headline, a header row and one row per step, all `[nextpipe]` lines.
    assert len(added) == 4, added
    assert re.fullmatch(r"\[nextpipe\] Flow chain succeeded in \d+\.\d+m?s: 2 steps, 2 nodes", added[0])
    assert re.fullmatch(r"\[nextpipe\]   step +status +nodes +time \(min / median / max\) +runs", added[1])
    assert added[2].split()[:5] == ["[nextpipe]", "prepare", "succeeded", "1", "succeeded"]
    assert added[3].split()[:5] == ["[nextpipe]", "finish", "succeeded", "1", "succeeded"]
    assert with_summary[-5:-1] == added and with_summary[-1] == "[main] after"


def test_set_level_warning_silences_the_info_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("nextpipe").setLevel(logging.WARNING)
    flow = Fan("fan", {"n": 2})
    flow.run()
    log("from main")
    log_internal("internal")
    assert capsys.readouterr().err == ""
    assert flow.get_result(flow.work) == [0, 1]


def test_removing_the_default_handler_silences_the_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("nextpipe")
    (default,) = [h for h in logger.handlers if isinstance(h, ConsoleHandler)]
    logger.removeHandler(default)
    log("not shown")
    log_internal("not shown either")
    assert capsys.readouterr().err == ""


def test_a_formatter_on_the_default_handler_is_used(capsys: pytest.CaptureFixture[str]) -> None:
    (default,) = [h for h in logging.getLogger("nextpipe").handlers if isinstance(h, ConsoleHandler)]
    formatter = default.formatter
    default.setFormatter(logging.Formatter("%(levelname)s %(step)s: %(message)s"))
    try:
        log("formatted", step_name="mine")
    finally:
        default.setFormatter(formatter)
    assert capsys.readouterr().err == "INFO mine: formatted\n"


def test_user_handler_receives_structured_records(capsys: pytest.CaptureFixture[str]) -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger("nextpipe").addHandler(Collect())
    Fan("fan", {"n": 1}).run()
    by_message = {r.getMessage(): r for r in records}
    user = by_message["fanning out"]
    assert (user.name, user.levelno, user.step) == ("nextpipe.step", logging.INFO, "items_0")
    assert user.threadName == "nextpipe-items_0"
    assert user.pathname == __file__  # the record points at the step's line, not at nextpipe
    flow_line = by_message["Flow: Fan"]
    assert (flow_line.name, flow_line.step) == ("nextpipe", "nextpipe")
    # The default handler still prints, in the original's format.
    err = capsys.readouterr().err
    assert "[items_0] fanning out\n" in err and "[nextpipe] Flow: Fan\n" in err


def test_a_console_handler_elsewhere_means_no_line_twice(capsys: pytest.CaptureFixture[str]) -> None:
    # A user's handler writing to stderr (as logging.basicConfig sets up) shows the records: ours steps back.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        log("once", step_name="mine")
    finally:
        root.removeHandler(handler)
    assert capsys.readouterr().err == "INFO nextpipe.step once\n"
    log("back", step_name="mine")
    assert capsys.readouterr().err == "[mine] back\n"


def test_basic_config_prints_each_line_once() -> None:
    proc = run_script(flow_script(before="import logging\nlogging.basicConfig(level=logging.INFO)\n"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines.count("INFO:nextpipe.step:preparing") == 1
    assert lines.count("INFO:nextpipe:Flow: Chain") == 1
    assert not any(line.startswith("[") for line in lines), lines


def test_basic_config_to_a_file_keeps_the_console_lines(tmp_path: Path) -> None:
    logfile = tmp_path / "run.log"
    before = f"import logging\nlogging.basicConfig(filename={str(logfile)!r}, level=logging.INFO)\n"
    proc = run_script(flow_script(summary=False, before=before))
    assert proc.returncode == 0, proc.stderr
    assert "[prepare_0] preparing" in proc.stderr.splitlines()
    assert "INFO:nextpipe.step:preparing" in logfile.read_text().splitlines()


@pytest.mark.parametrize(("value", "shown"), [("WARNING", False), ("warning", False), ("30", False), ("DEBUG", True)])
def test_log_level_environment_variable(value: str, shown: bool) -> None:
    proc = run_script(flow_script(), env={LOG_LEVEL_ENV: value})
    assert proc.returncode == 0, proc.stderr
    assert ("[prepare_0] preparing" in proc.stderr.splitlines()) is shown
    assert ("[nextpipe] Flow: Chain" in proc.stderr.splitlines()) is shown


def test_a_bad_log_level_is_named_and_ignored() -> None:
    proc = run_script(flow_script(summary=False), env={LOG_LEVEL_ENV: "LOUD"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"[nextpipe] Ignoring {LOG_LEVEL_ENV}=LOUD: use a level name (DEBUG, INFO,")
    assert "[prepare_0] preparing" in lines


def test_no_stderr_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    # pythonw and embedded hosts have sys.stderr None: constructing and running a flow must work, even failing.
    monkeypatch.setattr(sys, "stderr", None)
    flow = Fan("fan", {"n": 3})
    flow.run()
    assert flow.get_result(flow.work) == [0, 1, 2]

    class Failing(FlowSpec):
        @step
        def boom() -> None:
            raise ValueError("no stderr")

    with pytest.raises(RuntimeError, match="Flow failed: Step boom failed: no stderr"):
        Failing("failing", None).run()


def test_no_stderr_with_an_app_step_and_live_logs(platform_env: PlatformEmulator, monkeypatch: pytest.MonkeyPatch):
    platform_env.set_app_behavior("echo", duration=0.1, logs=["a log line"])

    class Solve(FlowSpec):
        @app(app_id="echo", emit_live_logs=True, polling_options=fast_polling())
        @step
        def solve():
            pass

    monkeypatch.setattr(sys, "stderr", None)
    flow = Solve("solve", {"x": 1})
    flow.run()
    assert flow.get_result(flow.solve)["solution"] == {"x": 1}


def test_no_stderr_in_a_fresh_interpreter() -> None:
    proc = run_script(flow_script(before="import sys\nsys.stderr = None\n") + "print('done')\n")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "done\n", "")


def test_a_failing_handler_never_fails_the_flow(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(logging.Handler):
        def handle(self, record: logging.LogRecord) -> bool:
            raise OSError("disk full")

    logging.getLogger("nextpipe").addHandler(Broken())
    flow = Fan("fan", {"n": 2})
    flow.run()
    assert flow.get_result(flow.work) == [0, 1]


def test_a_broken_stderr_never_fails_the_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed:
        def write(self, text: str) -> int:
            raise BrokenPipeError("closed")

        def flush(self) -> None:
            raise BrokenPipeError("closed")

    monkeypatch.setattr(logging, "raiseExceptions", False)  # as in production: no traceback about the handler
    monkeypatch.setattr(sys, "stderr", Closed())
    flow = Fan("fan", {"n": 2})
    flow.run()
    assert flow.get_result(flow.work) == [0, 1]


def test_lines_of_concurrent_steps_never_interleave(capsys: pytest.CaptureFixture[str]) -> None:
    flow = Fan("fan", {"n": 8})
    flow.run()
    lines = capsys.readouterr().err.splitlines()
    work = [line for line in lines if line.startswith("[work_")]
    assert len(work) == 8 * data_lines(0)
    pattern = re.compile(r"\[work_(\d)\] item (\d) line \d+ x{200}")
    for line in work:
        match = pattern.fullmatch(line)
        assert match and match[1] == match[2], line


def test_the_default_handler_writes_to_stderr_at_emit_time(capsys: pytest.CaptureFixture[str]) -> None:
    handlers = [h for h in logging.getLogger("nextpipe").handlers if isinstance(h, ConsoleHandler)]
    assert len(handlers) == 1
    seen: list[str] = []

    class Sink:
        def write(self, text: str) -> int:
            seen.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    original = sys.stderr
    sys.stderr = Sink()
    try:
        done = threading.Event()
        threading.Thread(target=lambda: (log("in a thread", step_name="t"), done.set())).start()
        done.wait(10)
    finally:
        sys.stderr = original
    assert seen == ["[t] in a thread\n"]
