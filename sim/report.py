"""What ``neverstop sim run`` prints: state changes as they happen, the VM list, verdicts."""

from __future__ import annotations

from typing import TextIO

from formats.table import memory, table
from sim.result import RunResult, Transition


def format_time(t: float) -> str:
    minutes, seconds = divmod(t, 60)
    return f"{int(minutes):3d}m{seconds:06.3f}s"


def transition_line(tr: Transition, old: str) -> str:
    arrow = f"{old} -> {tr.state}" if old != "-" else f"{tr.state}"
    return f"  [{format_time(tr.t)}] {tr.vm:<12} {arrow:<26} {tr.host or '-'}"


def print_summary(result: RunResult, out: TextIO) -> None:
    """The ZStack-like VM list, then each expectation and each checker finding."""
    rows = [
        (r["name"], str(r["cpu"]), memory(r["memory_mib"]), r["ip"] or "-", r["host_ip"] or r["host"] or "-",
         r["cluster"], r["state"], r["ha"])
        for r in result.vm_table
    ]
    print(f"\n  VM list at {format_time(result.duration_s).strip()}:", file=out)
    print(table(rows, ("Name", "CPU", "Memory", "IP", "Host IP", "Cluster", "State", "HA level")), file=out)
    if result.expectations:
        print("\n  Expectations:", file=out)
        for e in result.expectations:
            print(f"    {'PASS' if e.ok else 'FAIL'}  {e.vm:<12} {e.detail}", file=out)
    if result.violations:
        print("\n  Checker findings:", file=out)
        for v in result.violations:
            print(f"    VIOLATION [{format_time(v.t)}] {v.checker}: {v.detail}", file=out)
    else:
        print("\n  Checkers: no violation (two-running, capacity, HA level, no-restart, ha.enable)",
              file=out)
    print(f"\n  Result: {'PASS' if result.ok else 'FAIL'}", file=out)
