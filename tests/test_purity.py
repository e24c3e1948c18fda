"""The import contract of the pure core: ``actors/`` touches no runtime, clock or global RNG.

The behaviours must run unchanged on simulated time and on real hosts; one stray
``time.time()`` or ``random.random()`` would make a simulated run unrepeatable and a
real one untestable. A seeded ``random.Random`` passed in from outside is fine.
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
    random_names: set[str] = set()  # names the random module is bound to (import random [as r])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in FORBIDDEN:
                    found.append(f"{filename}:{node.lineno}: import {alias.name}")
                elif alias.name == "random":
                    random_names.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            root = node.module.split(".")[0]
            if root in FORBIDDEN:
                names = ", ".join(a.name for a in node.names)
                found.append(f"{filename}:{node.lineno}: from {node.module} import {names}")
            elif root == "random":
                found += [f"{filename}:{node.lineno}: from {node.module} import {a.name}"
                          for a in node.names if a.name != "Random" or node.module != "random"]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append(f"{filename}:{node.lineno}: __import__(...)")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in random_names and node.attr != "Random"):
            found.append(f"{filename}:{node.lineno}: {node.value.id}.{node.attr} (module-level generator)")
    return sorted(found, key=lambda p: int(p.split(":")[-2]))


def test_actors_are_pure() -> None:
    files = sorted(ACTORS.rglob("*.py"))
    assert files
    problems = [p for f in files for p in impurities(f.read_text(), str(f.relative_to(ACTORS.parent)))]
    assert not problems, "actors/ must stay pure:\n" + "\n".join(problems)


def test_checker_catches_violations() -> None:
    assert impurities("import time\n") == ["<string>:1: import time"]
    assert impurities("import random\nx = random.random()\n") == [
        "<string>:2: random.random (module-level generator)"]
    assert impurities("from simpy import Environment\n")
    assert impurities("import thespian.actors\n")
    assert impurities("import os, datetime as dt\n")
    assert impurities("from asyncio.tasks import sleep\n")
    assert impurities("from sim.runtime import SimRuntime\n")
    assert impurities("from real import hosts\n")
    assert impurities("from random import choice\n")
    assert impurities("from random import Random, shuffle\n")
    assert impurities("import random as rnd\nrnd.seed(1)\n")
    assert impurities("def f():\n    import subprocess\n")  # nested imports count too
    assert impurities("m = __import__('time')\n")


def test_checker_allows_seeded_generators() -> None:
    assert not impurities("from random import Random\nr = Random(1)\n")
    assert not impurities("import random\nr = random.Random(1)\n")
    assert not impurities("from . import states\nfrom .messages import Tick\nimport dataclasses\n")
    assert not impurities("def f(rng):\n    return rng.random()\n")
