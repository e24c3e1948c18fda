"""The tree shows the architecture: behaviours (actors/) -> formats (formats/) -> the two
runtimes (sim/, real/), siblings -> the command line (neverstop/). A runtime never imports
the other, and a real-mode daemon never loads the simulator's engine (simpy) or its network
model (networkx): loading a production cluster file must not need them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
LAYERS = {"actors": 0, "formats": 1, "sim": 2, "real": 2, "neverstop": 3}
# The test build of the daemons is an entry point like ``neverstop/__main__.py``: it installs
# its hooks and then runs the front door. It lives in real/ because the hosts' Thespian
# processes import its shell classes by module name, and the wire admits real.* classes.
ENTRY_POINTS = {"real/hooks.py"}


def imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported_packages(path) & set(LAYERS):
            below = LAYERS[name] < LAYERS[package] or name == package
            if not below and str(path.relative_to(ROOT)) not in ENTRY_POINTS:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []


def module_imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at the top or inside a function (a deferred
    import is still a dependency)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                 else [])
        found |= {n for n in names if n.split(".")[0] in LAYERS}
    return found


def test_no_import_circles() -> None:
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p
               for package in LAYERS for p in (ROOT / package).rglob("*.py")}
    graph = {name: {m for m in module_imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    circles = []
    for start in sorted(graph):
        stack, seen = [(start, (start,))], set()
        while stack:
            here, trail = stack.pop()
            for nxt in sorted(graph[here]):
                if nxt == start:
                    circles.append(" -> ".join((*trail, nxt)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))
    assert circles == []


def test_a_runtime_never_imports_the_other() -> None:
    assert not any("sim" in imported_packages(p) for p in (ROOT / "real").rglob("*.py"))
    assert not any("real" in imported_packages(p) for p in (ROOT / "sim").rglob("*.py"))


def test_the_daemons_load_neither_simpy_nor_networkx(tmp_path: Path) -> None:
    """What ``neverstop real agent`` and ``real manager`` load before they start, with a
    cluster file parsed: no simulator engine, no network model, no simulator module."""
    cluster = tmp_path / "cluster.toml"
    cluster.write_text('name = "c"\n[[storage]]\nname = "nfs-1"\ntype = "NFS"\n[[host]]\nname = "h1"\n'
                       'cpu = 8\nmemory = "16GiB"\nstorage = ["nfs-1"]\n[[vm]]\nname = "v1"\ncpu = 1\n'
                       'memory = "1GiB"\nhost = "h1"\nstorage = "nfs-1"\nha = "NeverStop"\n')
    probe = f"""
import sys
from neverstop.cli import build_parser, named_group
argv = ["real", "agent", "--manager", "127.0.0.1:1900", "--name", "h1"]
build_parser(named_group(argv)).parse_args(argv)
import real.agent, real.daemon, real.management
from real.cluster import load_cluster
load_cluster({str(cluster)!r})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("simpy", "networkx", "matplotlib")
                or m.startswith("sim.") and m != "sim.cli")
print(",".join(loaded))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"loaded: {out.stdout.strip()}"
