"""What one simulated run produced: the HA view, the ground truth and the verdicts.

``sim.run_json`` renders it as the documented JSON of ``neverstop sim run --json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Transition:
    """A state change in the HA manager's view (what users see)."""

    t: float
    vm: str
    state: str
    host: str | None


@dataclass
class Run:
    """Ground truth: an interval in which a guest really executed on a host."""

    vm: str
    host: str
    start: float
    end: float | None = None
    cause: str = ""  # who started it: "initial", "ha", "user", "migration"


@dataclass(frozen=True)
class Violation:
    """A checker finding: a rule of the ground truth that a run broke."""

    t: float
    checker: str
    detail: str


@dataclass(frozen=True)
class ExpectationResult:
    vm: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class FaultMark:
    """An injected event, for the timeline plot and the recovery figures."""

    t: float
    action: str
    target: str | None


@dataclass(frozen=True)
class FinalVm:
    vm: str
    state: str
    host: str | None


@dataclass
class RunResult:
    scenario: str
    seed: int
    profile: str
    duration_s: float
    transitions: list[Transition] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    expectations: list[ExpectationResult] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    final: list[FinalVm] = field(default_factory=list)
    faults: list[FaultMark] = field(default_factory=list)
    vm_table: list[dict[str, Any]] = field(default_factory=list)  # rows of the final VM list

    @property
    def ok(self) -> bool:
        return not self.violations and all(e.ok for e in self.expectations)
