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

from real.cli import format_status
from real.loopback import cluster_toml, settled, summary

HOSTS, VMS_PER_HOST, PAUSE_S = 16, 25, 15.0


def test_sixteen_agents_paused_together_come_back_whole(tmp_path: Path) -> None:
    c = LoopbackCluster(tmp_path, cluster_toml(HOSTS, VMS_PER_HOST), shared_pools=("nfs-1",))
    booting: dict[str, Any] = {}
    try:
        c.start(timeout_s=120, before_agents=lambda: booting.update(c.status()))
        # before any agent joined: every host Booting, not judged, and the status says so
        assert {(h["status"], h["agent"]) for h in booting["hosts"]} == {("Booting", "absent")}
        assert booting["join_grace_s"] == 60.0
        assert "16 host(s) Booting: not judged until their agent answers" in format_status(booting)
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

        # a killed agent is not shown up: the manager's pings go unanswered
        c.power_off("host-1")
        c.wait_for(lambda s: next(h for h in s["hosts"] if h["name"] == "host-1")["agent"] == "unreachable",
                   30, "a killed agent shown unreachable")
    finally:
        c.stop()
