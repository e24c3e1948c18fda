"""The tests' side of ``real.loopback``: the cluster launcher, and the recovery times the
real-mode tests measured (``conftest`` prints them at the end of the run)."""

from __future__ import annotations

from real.loopback import LoopbackCluster, free_port_block, kill_all, pids_with

__all__ = ["RECOVERY_TIMES", "LoopbackCluster", "free_port_block", "kill_all", "pids_with", "record_recovery"]

RECOVERY_TIMES: list[tuple[str, float]] = []  # (what, wall-clock seconds), for the summary


def record_recovery(what: str, seconds: float) -> None:
    """Keep a measured recovery time: conftest prints them at the end of the run."""
    RECOVERY_TIMES.append((what, seconds))
