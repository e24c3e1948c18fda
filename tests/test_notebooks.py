"""The notebooks run top to bottom against the current code, with a few seeds, and are
stored without outputs; so a change that breaks one fails ``make test`` instead of
leaving a stale picture behind."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
FIGURES = {  # notebook -> figures it must write
    "recovery_timeline.ipynb": ("timeline-shared-host-power-loss.png", "timeline-vm-crash-shared.png",
                                "timeline-total-isolation-force.png"),
    "recovery_times.ipynb": ("recovery-cdf.png", "recovery-boxes.png"),
    "tuning.ipynb": ("tuning-heatmaps.png", "tuning-pareto.png"),
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _runner() -> ModuleType:
    """notebooks/run.py, the same code ``make notebooks`` uses (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("notebook_runner", NOTEBOOK_DIR / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_is_run_here_and_by_make_notebooks() -> None:
    found = {p.name for p in NOTEBOOK_DIR.glob("*.ipynb")}
    assert found == set(FIGURES)
    assert set(_runner().NOTEBOOKS) == found


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_is_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs"


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_and_draws_its_figures(name: str, tmp_path: Path) -> None:
    executed = _runner().execute(NOTEBOOK_DIR / name, tmp_path, seeds=2)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    for figure in FIGURES[name]:
        data = (tmp_path / figure).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, figure
