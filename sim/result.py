"""What one simulated run produced: the HA view, the ground truth and the verdicts.

``as_json`` is the documented machine-readable format of ``neverstop sim run --json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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

    def as_json(self) -> dict[str, Any]:
        """The documented JSON of a run. ``recovery`` holds the per-VM, per-incident
        figures of ``sim.recovery`` (imported here, not at the top: it imports this module)."""
        from sim.recovery import recovery

        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "profile": self.profile,
            "duration_s": self.duration_s,
            "ok": self.ok,
            "transitions": [asdict(t) for t in self.transitions],
            "runs": [{"vm": r.vm, "host": r.host, "start": r.start, "end": r.end, "cause": r.cause}
                     for r in self.runs],
            "expectations": [asdict(e) for e in self.expectations],
            "violations": [asdict(v) for v in self.violations],
            "final": [asdict(f) for f in self.final],
            "faults": [asdict(f) for f in self.faults],
            "recovery": [r.as_json() for r in recovery(self)],
        }
