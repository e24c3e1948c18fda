"""Execute the notebooks with nbclient and write their figures as PNG files.

``make notebooks`` runs this; ``tests/test_notebooks.py`` uses ``execute`` with a small seed
count. The .ipynb files stay as stored, without outputs: the executed copy is thrown away,
only the figures (``notebooks/figures/``, not versioned) are kept.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("recovery_timeline.ipynb", "recovery_times.ipynb", "tuning.ipynb")


def execute(path: Path, figures: Path, seeds: int | None = None,
            timeout_s: int = 900) -> nbformat.NotebookNode:
    """Run one notebook top to bottom in a fresh kernel, in its own folder; raise on any error.

    Its settings travel by environment variables, which the kernel inherits.
    """
    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    os.environ["NEVERSTOP_FIGURES"] = str(figures)
    if seeds is not None:
        os.environ["NEVERSTOP_SEEDS"] = str(seeds)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return nb


def main(argv: list[str]) -> int:
    figures = HERE / "figures"
    figures.mkdir(exist_ok=True)
    seeds = int(argv[0]) if argv else None
    for name in NOTEBOOKS:
        started = time.monotonic()
        execute(HERE / name, figures, seeds)
        print(f"{name}: ran in {time.monotonic() - started:.0f}s")
    pngs = sorted(p.name for p in figures.glob("*.png"))
    print(f"{len(pngs)} figures in {figures}: {', '.join(pngs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
