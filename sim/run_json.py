"""The documented JSON of a run (``neverstop sim run --json``): the result and, in
``recovery``, the per-VM, per-incident figures of ``sim.recovery``. Its own module, so that
the result does not import the figures computed from it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sim.recovery import recovery
from sim.result import RunResult


def run_json(result: RunResult) -> dict[str, Any]:
    return {
        "scenario": result.scenario,
        "seed": result.seed,
        "profile": result.profile,
        "duration_s": result.duration_s,
        "ok": result.ok,
        "transitions": [asdict(t) for t in result.transitions],
        "runs": [{"vm": r.vm, "host": r.host, "start": r.start, "end": r.end, "cause": r.cause}
                 for r in result.runs],
        "expectations": [asdict(e) for e in result.expectations],
        "violations": [asdict(v) for v in result.violations],
        "final": [asdict(f) for f in result.final],
        "faults": [asdict(f) for f in result.faults],
        "recovery": [r.as_json() for r in recovery(result)],
    }
