"""SPEC section 7: a flow declared in one notebook cell and run from another, executed in a real IPython kernel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

KERNEL_NAME = "nextpipe-test-python"

IMPORT_CELL = "from nextpipe import FlowSpec, foreach, join, log, needs, step\nimport json"

FLOW_CELL = '''
class NotebookFlow(FlowSpec):
    """A flow declared in a notebook cell."""

    @step
    def prepare(data):
        """Double the input."""
        return data * 2

    @foreach()
    @needs(predecessors=[prepare])
    @step
    def fan(value):
        return [value, value + 1, value + 2]

    @needs(predecessors=[fan])
    @step
    def square(item):
        log(f"squaring {item}")
        return item * item

    @join()
    @needs(predecessors=[square])
    @step
    def total(items):
        return sum(i[0] for i in items)
'''

RUN_CELL = """
flow = NotebookFlow("notebook-flow", 3)
flow.run()
print("RESULT " + json.dumps({
    "prepare": flow.get_result(flow.prepare),
    "fan": flow.get_result(flow.fan),
    "square": flow.get_result(flow.square),
    "total": flow.get_result(flow.total),
    "steps": [s.definition.get_id() for s in flow.graph.steps],
    "definitions": [s.step_function.name for s in flow.graph.steps],
    "docstring": flow.graph.steps[0].docstring,
    "client_created": flow._client is not None,
}))
"""

MAGIC_CELL = """
%time timed = NotebookFlow("timed", 1); timed.run()
print("TIMED " + json.dumps(timed.get_result(timed.total)))
"""

# A later cell redefines the class: the newest definition is the one that runs.
REDEFINE_CELL = '''
class NotebookFlow(FlowSpec):
    @step
    def only(data):
        """The redefined flow has one step."""
        return data + 100

flow2 = NotebookFlow("redefined", 1)
flow2.run()
print("REDEFINED " + json.dumps({"steps": [s.definition.get_id() for s in flow2.graph.steps],
                                 "docs": [s.step_function.body[0].value.value for s in flow2.graph.steps],
                                 "only": flow2.get_result(flow2.only)}))
'''

FAILING_CELL = """
class FailingNotebookFlow(FlowSpec):
    @step
    def broken(data):
        raise ValueError("notebook failure")

try:
    FailingNotebookFlow("failing", 1).run()
except RuntimeError as error:
    print("FAILED " + str(error))
"""


def _kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel running this test's interpreter (the venv's), whatever the default python3 spec points to."""
    kernel_dir = tmp_path / "kernels" / KERNEL_NAME
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "nextpipe tests",
                "language": "python",
            }
        )
    )
    spec_manager = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    assert KERNEL_NAME in spec_manager.find_kernel_specs()
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=spec_manager)


def _outputs(cell, name: str) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == name)


def _line_after(text: str, prefix: str) -> str:
    lines = [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def executed_notebook(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("notebook")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(IMPORT_CELL),
        nbformat.v4.new_code_cell(FLOW_CELL),
        nbformat.v4.new_code_cell(RUN_CELL),
        nbformat.v4.new_code_cell(MAGIC_CELL),
        nbformat.v4.new_code_cell(REDEFINE_CELL),
        nbformat.v4.new_code_cell(FAILING_CELL),
    ]
    nbformat.validate(nb)
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # Module-scoped, so it runs before the per-test offline fixture: keep the kernel offline too.
    with pytest.MonkeyPatch.context() as patch:
        for name in ("NEXTMV_API_KEY", "NEXTMV_APP_ID", "NEXTMV_RUN_ID", "NEXTMV_ENDPOINT", "NEXTPIPE_LOCAL_APPS"):
            patch.delenv(name, raising=False)
        client.execute()
    path = tmp_path / "flow.ipynb"
    nbformat.write(nb, str(path))
    return nbformat.read(str(path), as_version=4)


def test_no_cell_raised(executed_notebook):
    for cell in executed_notebook.cells:
        assert all(o.get("output_type") != "error" for o in cell.get("outputs", [])), cell.outputs


def test_flow_declared_in_one_cell_runs_from_another(executed_notebook):
    run_cell = executed_notebook.cells[2]
    result = json.loads(_line_after(_outputs(run_cell, "stdout"), "RESULT "))
    assert result == {
        "prepare": 6,
        "fan": [6, 7, 8],
        "square": [36, 49, 64],
        "total": 149,
        "steps": ["prepare", "fan", "square", "total"],
        # The cell's source is found (IPython registers cells in linecache): the parsed definitions too.
        "definitions": ["prepare", "fan", "square", "total"],
        "docstring": "Double the input.",
        "client_created": False,
    }


def test_flow_logs_go_to_the_cell_stderr(executed_notebook):
    run_cell = executed_notebook.cells[2]
    err = _outputs(run_cell, "stderr")
    assert "[nextpipe] " in err
    assert "NotebookFlow" in err
    assert "  fan -- foreach --> square\n" in err
    assert "  square -- join --> total\n" in err
    assert "[square_0] squaring 6" in err
    assert "[square_2] squaring 8" in err


def test_magic_cell(executed_notebook):
    cell = executed_notebook.cells[3]
    assert json.loads(_line_after(_outputs(cell, "stdout"), "TIMED ")) == 2 * 2 + 3 * 3 + 4 * 4
    assert "Wall time" in _outputs(cell, "stdout")


def test_redefined_class_uses_newest_definition(executed_notebook):
    cell = executed_notebook.cells[4]
    assert json.loads(_line_after(_outputs(cell, "stdout"), "REDEFINED ")) == {
        "steps": ["only"],
        "docs": ["The redefined flow has one step."],
        "only": 101,
    }


def test_failing_flow_in_notebook(executed_notebook):
    cell = executed_notebook.cells[5]
    out = _outputs(cell, "stdout")
    assert _line_after(out, "FAILED ") == "Flow failed: Step broken failed: notebook failure"
    assert "Exception in thread" not in _outputs(cell, "stderr")
