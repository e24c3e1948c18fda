"""The import contract of the pure core: ``actors/`` touches no runtime, clock or global RNG.

The behaviours must run unchanged on simulated time and on real hosts; one stray
``time.time()`` or ``random.random()`` would make a simulated run unrepeatable and a
real one untestable.
"""

from __future__ import annotations

import ast
from pathlib import Path

ACTORS = Path(__file__).parent.parent / "actors"
FORBIDDEN = {"simpy", "thespian", "libvirt", "asyncio", "time", "datetime", "threading", "socket",
             "subprocess", "multiprocessing", "sim", "real"}


def impurities(source: str, filename: str = "<string>") -> list[str]:
    """Every forbidden import or module-level random use in ``source``, as 'file:line: what'."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN:
                    found.append(f"{filename}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            root = node.module.split(".")[0]
            if root in FORBIDDEN:
                found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
            if root == "random":
                found += [f"{filename}:{node.lineno}: from random import {a.name}"
                          for a in node.names if a.name != "Random"]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "random" and node.attr != "Random"):
            found.append(f"{filename}:{node.lineno}: random.{node.attr} (module-level generator)")
    return found


def test_actors_are_pure() -> None:
    files = sorted(ACTORS.rglob("*.py"))
    assert files
    problems = [p for f in files for p in impurities(f.read_text(), str(f.relative_to(ACTORS.parent)))]
    assert not problems, "actors/ must stay pure:\n" + "\n".join(problems)


def test_checker_catches_violations() -> None:
    assert impurities("import time\n")
    assert impurities("from simpy import Environment\n")
    assert impurities("import thespian.actors\n")
    assert impurities("import random\nx = random.random()\n")
    assert impurities("from random import choice\n")
    assert impurities("from sim.runtime import SimRuntime\n")
    assert not impurities("from random import Random\nr = Random(1)\n")
    assert not impurities("import random\nr = random.Random(1)\n")
