"""
The documentation site: every code example runs, and ``mkdocs build --strict`` passes.

How the pages under ``docs/`` are executed, one subprocess per page, in a fresh
temporary directory holding a copy of ``examples/``:

- ```` ```python ```` blocks run in order as one script, so a page's blocks
  share one namespace. The script keeps the page's line numbers (everything
  that is not Python is blanked), so a traceback's line is the Markdown line.
- ```` ```text title="Output" ```` right after a python block is that block's
  standard output, compared exactly.
- A block with ``title="some/file"`` (python, yaml, json, csv) is written to that
  file before anything runs; a titled Python file must be run by a console
  command of its page.
- ```` ```console ```` blocks run after the script: each ``$ command`` line in its
  own ``bash -c``, with ``python`` and ``nextpipe`` from this environment, and
  the lines below it are its standard output. A command ending in
  ``# exit status N`` must exit with N, its standard error following its
  output; any other command must succeed.
- ``<!-- docs: skip REASON -->`` on the line before a python block keeps it from
  running (it is still compiled). Keep these rare: they are for examples that
  need a Nextmv account.
- ``bash`` blocks (install and shell instructions), ``mermaid``, ``text``,
  ``yaml``, ``json`` and ``csv`` blocks are not run. Any other language is refused.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import require_program

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if not any(part.startswith("_") for part in p.relative_to(DOCS).parts))
BLOCK_END = "<<nextpipe-docs-block-end>>"
NOT_RUN = {"bash", "mermaid", "text", "yaml", "json", "csv"}
FILE_LANGUAGES = {"python", "yaml", "json", "csv"}
PLATFORM_VARIABLES = (
    "NEXTMV_API_KEY",
    "NEXTMV_APP_ID",
    "NEXTMV_RUN_ID",
    "NEXTMV_ENDPOINT",
    "NEXTPIPE_LOCAL_APPS",
    "NEXTPIPE_CACHE_DIR",
    "XDG_CACHE_HOME",
)
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
SKIP = re.compile(r"^\s*<!-- docs: skip (?P<reason>\S.{10,}?) -->\s*$")
EXIT_STATUS = re.compile(r"\s+# exit status (?P<status>\d+)\s*$")
TIMEOUT = 180

# The public names of the contract's section 1, each of which the API reference must document.
PUBLIC_NAMES = {
    "nextpipe": "__version__ VERSION Configuration app foreach join needs optional repeat step FlowGraph FlowSpec "
    "AppOption AppRunConfig log",
    "nextpipe.__about__": "__version__",
    "nextpipe.flow": "FlowSpec FlowGraph FlowStep FlowNode StepVisitor Runner STATUS_PENDING STATUS_RUNNING "
    "STATUS_SUCCEEDED STATUS_FAILED",
    "nextpipe.decorators": "InputType StepType Step Needs Optional Repeat Foreach Join App step needs optional repeat "
    "foreach join app",
    "nextpipe.config": "Configuration",
    "nextpipe.schema": "AppOption AppRunConfig",
    "nextpipe.uplink": "UplinkConfig StepDTO NodeDTO FlowDTO FlowUpdateDTO UplinkClient FAILED_UPDATES_THRESHOLD "
    "UPDATE_INTERVAL MAX_DOCS_LENGTH",
    "nextpipe.threads": "Job Pool DEFAULT_MAX_THREADS",
    "nextpipe.graph": "check_cycle",
    "nextpipe.utils": "THREAD_NAME_PREFIX log log_internal wrap_func convert_to_string_values get_ast_root",
    "nextpipe.constants": "ENV_APP_ID ENV_RUN_ID",
    "nextpipe.cli": "main",
}


@dataclass
class Block:
    """A fenced code block of a page."""

    language: str
    title: str | None
    fence_line: int  # 1-based line of the opening fence
    end_line: int  # 1-based line of the closing fence
    lines: list[str]
    skip_reason: str | None = None
    expected_output: Block | None = None

    @property
    def code(self) -> str:
        return "".join(line + "\n" for line in self.lines)


@dataclass
class Page:
    """A page's code blocks, classified."""

    path: Path
    line_count: int
    blocks: list[Block] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT)) if self.path.is_relative_to(ROOT) else str(self.path)

    def where(self, block: Block) -> str:
        return f"{self.name}:{block.fence_line}"

    @property
    def script_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.language == "python" and b.title is None and b.skip_reason is None]

    @property
    def files(self) -> list[Block]:
        return [b for b in self.blocks if b.title is not None and b.language in FILE_LANGUAGES]

    @property
    def consoles(self) -> list[Block]:
        return [b for b in self.blocks if b.language == "console"]


def parse_page(path: Path) -> Page:
    """Split a Markdown page into its fenced blocks; fail on a language that is neither run nor known."""
    text = path.read_text(encoding="utf-8").splitlines()
    page = Page(path, len(text))
    index = 0
    previous: Block | None = None
    while index < len(text):
        match = FENCE.match(text[index])
        if match is None:
            index += 1
            continue
        indent, fence, info = len(match["indent"]), match["fence"], match["info"].strip()
        end = index + 1
        while end < len(text) and text[end].strip() != fence:
            end += 1
        assert end < len(text), f"{path}:{index + 1}: unclosed code block"
        language = info.split()[0] if info else ""
        title_match = re.search(r'title="([^"]*)"', info)
        block = Block(
            language=language,
            title=title_match[1] if title_match else None,
            fence_line=index + 1,
            end_line=end + 1,
            lines=[line[indent:] for line in text[index + 1 : end]],
        )
        where = page.where(block)
        assert language in NOT_RUN | {"python", "console"}, f"{where}: code block language {language!r} is not run"
        skip = next((SKIP.match(line) for line in reversed(text[:index]) if line.strip()), None)
        if skip is not None:
            assert language == "python", f"{where}: only python blocks can be skipped"
            block.skip_reason = skip["reason"]
        between = text[previous.end_line : index] if previous is not None else []
        if language == "text" and block.title == "Output":
            assert previous is not None and previous.language == "python" and not any(s.strip() for s in between), (
                f"{where}: an Output block must follow a python block directly"
            )
            assert previous.title is None and previous.skip_reason is None, f"{where}: that python block does not run"
            previous.expected_output = block
        page.blocks.append(block)
        previous = block
        index = end + 1
    return page


def page_script(page: Page) -> str:
    """The page's runnable Python blocks as one script whose line numbers are the page's."""
    lines = [""] * (page.line_count + 1)
    for block in page.script_blocks:
        for offset, line in enumerate(block.lines):
            lines[block.fence_line + offset] = line
        lines[block.end_line - 1] = f"print({BLOCK_END!r}, flush=True)"
    return "\n".join(lines[:-1]) + "\n"


def environment(home: Path) -> dict[str, str]:
    """Offline, accountless environment with this interpreter's ``python`` and ``nextpipe`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_VARIABLES}
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        NO_MKDOCS_2_WARNING="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _normalize(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def _prepare_workdir(tmp_path: Path, page: Page) -> Path:
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns(".nextmv", "__pycache__"))
    (tmp_path / "home").mkdir()
    for block in page.files:
        target = work / block.title
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code, encoding="utf-8")
    return work


def _run_script(page: Page, work: Path, env: dict[str, str]) -> None:
    script = work / f"{page.path.name}.py"
    script.write_text(page_script(page), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, script.name], cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    report = f"\n--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr[-6000:]}"
    assert completed.returncode == 0, f"{page.name}: the page's Python code failed{report}"
    outputs = completed.stdout.split(BLOCK_END + "\n")
    assert len(outputs) == len(page.script_blocks) + 1, f"unexpected block markers{report}"
    for block, output in zip(page.script_blocks, outputs, strict=False):
        if block.expected_output is not None:
            assert _normalize(output) == _normalize(block.expected_output.code), (
                f"{page.where(block)}: the block's output differs from the Output block below it"
                f"\n--- actual ---\n{output}\n--- documented ---\n{block.expected_output.code}"
            )


def _console_commands(block: Block) -> list[tuple[str, list[str]]]:
    commands: list[tuple[str, list[str]]] = []
    for line in block.lines:
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            assert commands, f"console block at line {block.fence_line} must start with a '$ ' command"
            commands[-1][1].append(line)
    return commands


def _run_console(page: Page, block: Block, work: Path, env: dict[str, str]) -> list[str]:
    """Run the block's commands; return those left out because they need Graphviz's ``dot``, which is missing."""
    without_dot = []
    for command, expected in _console_commands(block):
        if "--format svg" in command and shutil.which("dot") is None:
            without_dot.append(command)
            continue
        status_match = EXIT_STATUS.search(command)
        status = int(status_match["status"]) if status_match else 0
        completed = subprocess.run(
            ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        actual = completed.stdout + (completed.stderr if status else "")
        assert completed.returncode == status, (
            f"{page.where(block)}: '{command}' exited {completed.returncode}, expected {status}"
            f"\n--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr[-6000:]}"
        )
        assert _normalize(actual) == _normalize("\n".join(expected)), (
            f"{page.where(block)}: the output of '{command}' differs from the page"
            f"\n--- actual ---\n{actual}\n--- documented ---\n" + "\n".join(expected)
        )
    return without_dot


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run(path: Path, tmp_path: Path) -> None:
    page = parse_page(path)
    for block in page.blocks:
        if block.language == "python":
            compile(block.code, page.where(block), "exec")  # skipped blocks and files too
    commands = " ".join(command for block in page.consoles for command, _ in _console_commands(block))
    for block in page.files:
        if block.language == "python":
            assert block.title in commands, f"{page.where(block)}: no console command of the page runs {block.title}"
    if not (page.script_blocks or page.consoles):
        return
    work = _prepare_workdir(tmp_path, page)
    env = environment(tmp_path / "home")
    if page.script_blocks:
        _run_script(page, work, env)
    without_dot = [command for block in page.consoles for command in _run_console(page, block, work, env)]
    if without_dot:  # everything else on the page ran and passed
        require_program("dot", f"{page.name}: '{without_dot[0]}'")


def test_docs_cover_the_issue() -> None:
    """The pages the site promises exist, and each decorator page has a runnable example with its output."""
    names = {str(p.relative_to(DOCS)) for p in PAGES}
    expected = {
        "index.md",
        "getting-started.md",
        "app-steps.md",
        "decision-app.md",
        "notebooks.md",
        "configuration.md",
        "errors.md",
        "performance.md",
        "cli.md",
    }
    decorators = {f"decorators/{name}.md" for name in ("step", "needs", "foreach", "join", "repeat", "optional", "app")}
    reference = {f"reference/{name}.md" for name in ("flow", "decorators", "config", "schema", "uplink", "threads")}
    reference |= {f"reference/{name}.md" for name in ("graph", "utils", "constants", "nextpipe", "about", "cli")}
    assert expected | decorators | reference <= names
    for name in sorted(decorators):
        page = parse_page(DOCS / name)
        assert any(b.expected_output for b in page.script_blocks), f"{name} has no runnable example with its output"
    skipped = [parse_page(p).where(b) for p in PAGES for b in parse_page(p).blocks if b.skip_reason]
    assert len(skipped) <= 3, f"too many skipped examples: {skipped}"


def test_parse_page_keeps_line_numbers(tmp_path: Path) -> None:
    page_path = tmp_path / "page.md"
    page_path.write_text(
        '# Title\n\n```python\nx = 1\nprint(x)\n```\n\n```text title="Output"\n1\n```\n\n'
        "<!-- docs: skip needs a Nextmv account -->\n```python\nimport cloud_only\n```\n"
    )
    page = parse_page(page_path)
    script = page_script(page)
    assert script.splitlines()[3:6] == ["x = 1", "print(x)", f"print({BLOCK_END!r}, flush=True)"]
    assert "cloud_only" not in script
    assert page.blocks[0].expected_output is page.blocks[1]
    assert page.blocks[2].skip_reason == "needs a Nextmv account"
    page_path.write_text("```py\nx = 1\n```\n")
    with pytest.raises(AssertionError, match="language 'py' is not run"):
        parse_page(page_path)


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` passes, and the API reference documents every public name of the contract."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        assert importlib.util.find_spec(module) is not None, f"{module} is missing: pip install -e '.[docs]'"
    site = tmp_path / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert completed.returncode == 0, f"mkdocs build --strict failed:\n{completed.stdout}\n{completed.stderr}"
    built = "".join(page.read_text(encoding="utf-8") for page in (site / "reference").rglob("*.html"))
    anchors = set(re.findall(r'id="(nextpipe[\w.]*)"', built))
    public = [f"{module}.{name}" for module, names in PUBLIC_NAMES.items() for name in names.split()]
    missing = [identifier for identifier in public if identifier not in anchors]
    assert not missing, f"not documented in the API reference: {missing}"
    assert ":class:" not in html.unescape(built), "a Sphinx role was left unconverted in the API reference"


def test_public_callables_have_docstrings() -> None:
    """Every public class and function of the contract's modules explains itself in its docstring."""
    undocumented = []
    for module_name, names in PUBLIC_NAMES.items():
        module = importlib.import_module(module_name)
        for name in names.split():
            value = getattr(module, name)
            if callable(value) and not (value.__doc__ or "").strip():
                undocumented.append(f"{module_name}.{name}")
            if isinstance(value, type):
                undocumented += [
                    f"{module_name}.{name}.{member}"
                    for member, attribute in vars(value).items()
                    if not member.startswith("_") and callable(attribute) and not (attribute.__doc__ or "").strip()
                ]
    assert not undocumented, f"public names without a docstring: {undocumented}"
