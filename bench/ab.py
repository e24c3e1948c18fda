"""A/B: the cost per delivery of this tree against a git revision, in alternating runs.

On a shared machine the speed of memory changes from minute to minute (see the memory
latency line of ``docs/benchmarks.md``): two runs minutes apart differ by more than most
changes gain. So both trees run the same workload in fresh processes, one after the other,
for several rounds; a change is real when it wins in every round, not when one run says so.

    python -m bench.run ab --base 258e98b                 3,000 hosts, 20 simulated minutes, 4 rounds
    python -m bench.run ab --base HEAD~1 --hosts 100 --duration 3600

The revision is exported with ``git archive`` into a temporary directory (the checkout and
its worktrees are left alone); each run is ``python -m bench.measure`` in that tree or in
this one, with the same interpreter.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from bench.measure import ROOT, Measurement

AB_HOSTS = 3000
AB_DURATION_S = 1200.0
AB_ROUNDS = 4


class RevisionError(ValueError):
    """The base revision cannot be measured: not a git checkout, no such revision, or its
    ``bench.measure`` fails or reports other figures (a revision older than the bench)."""


@dataclass(frozen=True)
class AbResult:
    base: str
    hosts: int
    duration_s: float
    rounds: list[tuple[Measurement, Measurement]]  # (base, this tree) per round

    @property
    def change(self) -> float:
        """This tree's median cost per delivery over the base's, minus one (-0.08: 8% faster)."""
        base = statistics.median(b.us_per_delivery for b, _ in self.rounds)
        this = statistics.median(t.us_per_delivery for _, t in self.rounds)
        return this / base - 1.0

    @property
    def wins(self) -> int:
        """Rounds in which this tree was cheaper per delivery than the base."""
        return sum(t.us_per_delivery < b.us_per_delivery for b, t in self.rounds)


def export(revision: str, into: Path) -> None:
    """Write the tree of ``revision`` into ``into`` (git archive), or raise RevisionError."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision],
                              capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise RevisionError("git is not installed") from exc
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise RevisionError(f"cannot export revision {revision!r}: {reason[-1] if reason else 'git failed'}")
    archive = into / "tree.tar"
    archive.write_bytes(done.stdout)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()


def measure_in(tree: Path, hosts: int, duration_s: float, seed: int) -> Measurement:
    """One run of the benchmark workload with the code of ``tree``, in a fresh process."""
    cmd = [sys.executable, "-m", "bench.measure", "--hosts", str(hosts), "--duration", str(duration_s),
           "--seed", str(seed)]
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False)
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0:
        last = lines[-1] if lines else "no output"
        raise RevisionError(f"python -m bench.measure failed in {tree}: {last}")
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
        return Measurement(**{f.name: data[f.name] for f in fields(Measurement)})
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise RevisionError(f"python -m bench.measure in {tree} reports other figures ({exc})") from exc


def compare(base: str, hosts: int, duration_s: float, rounds: int, seed: int,
            progress: Callable[[str], None]) -> AbResult:
    results = []
    with tempfile.TemporaryDirectory(prefix="neverstop-ab-") as tmp:
        tree = Path(tmp)
        export(base, tree)
        for i in range(1, rounds + 1):
            progress(f"ab: round {i} of {rounds}: {base} ...")
            b = measure_in(tree, hosts, duration_s, seed)
            progress(f"ab: round {i} of {rounds}: this tree ...")
            t = measure_in(ROOT, hosts, duration_s, seed)
            results.append((b, t))
    return AbResult(base, hosts, duration_s, results)
