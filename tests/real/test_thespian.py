"""The Thespian runtime on loopback: what only a real deployment shows.

A restart of the management node keeps every HA intent (the SQLite store) and touches no
running guest; compute hosts rejoin the new convention leader by themselves.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from real_harness import LoopbackCluster, pids_with
from test_conformance import CLUSTER, seen_since, view


def test_manager_restart_keeps_intents_and_guests(tmp_path: Path) -> None:
    cluster = LoopbackCluster(tmp_path, CLUSTER, shared_pools=("nfs-1",))
    try:
        cluster.start()
        cluster.cmd("stop", vm="vm-local", no_restart=True)
        cluster.cmd("set-ha", vm="vm-none", level="None")
        cluster.cmd("config-set", key="ha.neverStopVm.scan.interval", value="5s")
        cluster.wait_for(lambda s: view(s)["vm-local"][0] == "Stopped", 20, "vm-local stopped")

        cluster.kill_manager()  # SIGKILL of every process of the management node
        t0 = time.time()
        cluster.start_manager()
        elapsed = cluster.wait_for(lambda s: all(h["agent"] == "up" for h in s["hosts"]), 30,
                                   "agents rejoined the restarted manager")
        print(f"\nhosts rejoined a restarted manager after {elapsed:.1f} s")
        time.sleep(8)  # several ping rounds and a scan: nothing may move
        status: dict[str, Any] = cluster.status()
        v = view(status)
        assert v["vm-shared"] == ("Running", "host-1")
        assert v["vm-local"][0] == "Stopped"
        vm_local = next(x for x in status["vms"] if x["name"] == "vm-local")
        assert vm_local["no_restart"] is True
        assert status["config"]["ha.neverStopVm.scan.interval"] == 5.0
        seen = seen_since(status, t0)
        assert "Starting" not in seen.get("vm-shared", []) and "Starting" not in seen.get("vm-local", [])
        # one agent shell per host: the ones the old manager placed have given way
        for host in cluster.hosts:
            shells = [p for p in pids_with(cluster.agent_marker(host))]
            assert shells, host
        cluster.cmd("start", vm="vm-local")
        cluster.wait_for(lambda s: view(s)["vm-local"] == ("Running", "host-1"), 20, "vm-local started")
    finally:
        cluster.stop()


def test_a_host_agent_pickled_by_an_older_manager_is_built_again_on_the_host() -> None:
    """Rolling upgrades go agents first: an older manager's pickle lacks the attributes
    this version's __init__ sets (here the boot id and the watchdog bookkeeping)."""
    import pickle

    from actors.config import DEFAULT
    from actors.host_agent import HostAgent
    from real.agent import rebuilt

    old = HostAgent("host-1", ("nfs-1",), DEFAULT)
    for newer in ("boot", "beats", "started_by"):
        delattr(old, newer)
    received = pickle.loads(pickle.dumps(old))
    assert not hasattr(received, "beats")
    agent = rebuilt(received)
    assert isinstance(agent, HostAgent) and agent is not received
    assert (agent.name, agent.shared_pools, agent.config) == ("host-1", ("nfs-1",), DEFAULT)
    assert agent.beats == () and agent.started_by == {} and agent.boot == ""
