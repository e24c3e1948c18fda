"""Real mode at scale on loopback (issue 19): a cluster of 16 agents comes back whole
from a pause of every agent, and nothing is started twice.

A paused agent (SIGSTOP) is what a short management-network outage looks like to the
manager: no pongs, no reports, then everything at once. The manager must judge each host
on fresh evidence when it resumes, not drown in what piled up. The figures for larger
clusters are ``make bench-real``'s (docs/benchmarks.md); this test holds the behaviour.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from real_harness import LoopbackCluster

from real.loopback import cluster_toml, settled, summary

HOSTS, VMS_PER_HOST, PAUSE_S = 16, 25, 15.0


def test_sixteen_agents_paused_together_come_back_whole(tmp_path: Path) -> None:
    c = LoopbackCluster(tmp_path, cluster_toml(HOSTS, VMS_PER_HOST), shared_pools=("nfs-1",))
    try:
        c.start(timeout_s=120)
        c.wait_for(settled, 120, "every host Connected and every VM Running")
        before = {v["name"]: v["host"] for v in c.status()["vms"]}
        t_pause = time.time()
        assert c.signal_agents(signal.SIGSTOP) >= HOSTS
        time.sleep(PAUSE_S)
        during: dict[str, Any] = c.status()
        assert any(h["status"] != "Connected" for h in during["hosts"]), "the pause went unnoticed"
        c.signal_agents(signal.SIGCONT)
        t_resume = time.monotonic()
        c.wait_for(settled, 60, "whole again after the pause")
        print(f"\n{HOSTS} agents paused {PAUSE_S:g} s: whole again {time.monotonic() - t_resume:.1f} s "
              "after the resume")
        time.sleep(3)  # a few ping rounds more: it stays whole
        status = c.status()
        assert settled(status), summary(status)
        assert {v["name"]: v["host"] for v in status["vms"]} == before  # nothing moved
        started = [t for t in status["transitions"] if t[0] >= t_pause and t[2] in ("Starting", "Recovering")]
        assert started == [], started  # the guests never died: nothing may be started again
    finally:
        c.stop()
