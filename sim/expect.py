"""Scenario expectations checked against a run's HA-view transitions."""

from __future__ import annotations

from actors.states import VmState
from formats.spec import ExpectSpec
from sim.result import ExpectationResult, FinalVm, Transition


def _fmt(t: float) -> str:
    return f"{t:.1f}s"


def evaluate(expect: ExpectSpec, transitions: list[Transition], final: FinalVm) -> ExpectationResult:
    """Check one [[expect]] table. The detail says what was seen, pass or fail."""
    end = float("inf") if expect.until_s is None else expect.until_s
    seen = [tr for tr in transitions if tr.vm == expect.vm and expect.after_s <= tr.t < end]
    problems: list[str] = []
    notes: list[str] = []
    if expect.states:
        idx = 0
        reached: list[Transition] = []
        for tr in seen:
            if idx < len(expect.states) and tr.state == expect.states[idx].value:
                reached.append(tr)
                idx += 1
        if idx < len(expect.states):
            got = " -> ".join(f"{tr.state}@{_fmt(tr.t)}" for tr in seen) or "no transition"
            want = " -> ".join(s.value for s in expect.states)
            problems.append(f"expected {want} after {_fmt(expect.after_s)}, saw {got}")
        else:
            last = reached[-1]
            path = " -> ".join(f"{tr.state}@{_fmt(tr.t)}" for tr in reached)
            took = last.t - expect.after_s
            notes.append(f"{path} ({took:.1f}s after {_fmt(expect.after_s)})")
            if expect.within_s is not None and took > expect.within_s:
                problems.append(f"{last.state} reached {took:.1f}s after {_fmt(expect.after_s)}, "
                                f"more than {_fmt(expect.within_s)}")
    for state in expect.never:
        hits = [tr for tr in seen if tr.state == state.value]
        if hits:
            problems.append(f"entered {state.value} at {_fmt(hits[0].t)} (never allowed)")
    if expect.final_state is not None and final.state != expect.final_state.value:
        problems.append(f"final state {final.state}, expected {expect.final_state.value}")
    if expect.host is not None and final.host != expect.host:
        problems.append(f"final host {final.host}, expected {expect.host}")
    if expect.host_not is not None and final.host == expect.host_not:
        problems.append(f"final host is {final.host}, expected another")
    if not problems and (expect.final_state or expect.host or expect.host_not):
        notes.append(f"final {final.state} on {final.host or '-'}")
    ok = not problems
    return ExpectationResult(expect.vm, ok, "; ".join(problems if problems else notes) or "holds")


def final_views(transitions: list[Transition], vms: list[str]) -> list[FinalVm]:
    last: dict[str, Transition] = {}
    for tr in transitions:
        last[tr.vm] = tr
    out = []
    for vm in vms:
        tr = last.get(vm)
        out.append(FinalVm(vm, tr.state if tr else VmState.STOPPED.value, tr.host if tr else None))
    return out
