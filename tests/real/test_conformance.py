"""One set of behavioural cases, run on the simulated runtime and on the Thespian runtime.

Each case is a cluster, one action and an expected outcome. The simulator runs it as a
scenario (simpy virtual time); the Thespian runtime runs it as a real deployment on
loopback (``real_harness.LoopbackCluster``: manager and agents as processes, libvirt's test
driver as the hypervisor). Same behaviours, same outcome: that is the contract of the
``Context`` seam. The Thespian side also reports its wall-clock recovery time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from real_harness import LoopbackCluster, record_recovery

from formats.scenario import parse_scenario
from sim.runner import run_scenario

CLUSTER = """
name = "conformance"
description = "shared by the simulated and the Thespian runtime"
duration = "2m"
profile = "tuned"

[[storage]]
name = "nfs-1"
type = "NFS"

[[storage]]
name = "local-1"
type = "LocalStorage"
host = "host-1"

[[host]]
name = "host-1"
cpu = 8
memory = "8GiB"
storage = ["nfs-1", "local-1"]

[[host]]
name = "host-2"
cpu = 8
memory = "8GiB"
storage = ["nfs-1"]

[[vm]]
name = "vm-shared"
cpu = 1
memory = "32MiB"
host = "host-1"
storage = "nfs-1"
ha = "NeverStop"

[[vm]]
name = "vm-local"
cpu = 1
memory = "32MiB"
host = "host-1"
storage = "local-1"
ha = "NeverStop"

[[vm]]
name = "vm-none"
cpu = 1
memory = "32MiB"
host = "host-2"
storage = "nfs-1"
ha = "None"
state = "Stopped"
"""

View = dict[str, tuple[str, str | None]]  # vm -> (state, host)
Seen = dict[str, list[str]]  # vm -> states it went through after the action, in order


@dataclass(frozen=True)
class Case:
    name: str
    action: str  # a scenario event action
    target: str
    args: dict[str, Any] = field(default_factory=dict)
    expect: Callable[[View, Seen], bool] = lambda v, s: True
    timeout_s: float = 40.0
    settle_s: float = 0.0  # the outcome must still hold this long after it first held


def went(seen: Seen, vm: str, *states: str) -> bool:
    """``vm`` went through ``states`` in this order (others may sit between)."""
    it = iter(seen.get(vm, []))
    return all(state in it for state in states)


CASES = [
    Case("guest crash: Running again on the same host", "vm-crash", "vm-shared",
         expect=lambda v, s: v["vm-shared"] == ("Running", "host-1")
         and went(s, "vm-shared", "Stopping", "Starting", "Running")),
    Case("plain stop of a NeverStop VM: it comes back", "vm-stop", "vm-shared",
         expect=lambda v, s: v["vm-shared"] == ("Running", "host-1")
         and went(s, "vm-shared", "Stopping", "Stopped", "Starting", "Running")),
    Case("stop with no-restart: it stays Stopped", "vm-stop", "vm-local", {"no_restart": True},
         expect=lambda v, s: v["vm-local"][0] == "Stopped" and went(s, "vm-local", "Stopping", "Stopped")
         and "Starting" not in s.get("vm-local", []) and v["vm-shared"] == ("Running", "host-1"),
         settle_s=12.0),
    Case("None -> NeverStop on a stopped VM: it starts", "set-ha", "vm-none", {"level": "NeverStop"},
         expect=lambda v, s: v["vm-none"][0] == "Running" and went(s, "vm-none", "Starting", "Running")),
    Case("host power-off: shared VM elsewhere, local VM Stopped", "power-off", "host-1",
         expect=lambda v, s: v["vm-shared"] == ("Running", "host-2") and v["vm-local"][0] == "Stopped"
         and went(s, "vm-shared", "Unknown", "Recovering", "Starting", "Running")
         and went(s, "vm-local", "Unknown", "Stopped"),
         timeout_s=60.0),
]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"'


ACTION_AT_S = 30.0


def simulate(case: Case) -> tuple[View, Seen]:
    extra = "".join(f"{k} = {toml_value(v)}\n" for k, v in case.args.items())
    text = (CLUSTER + f'\n[[event]]\nat = "{ACTION_AT_S}s"\naction = "{case.action}"\n'
            f'target = "{case.target}"\n{extra}')
    return run_and_watch(text, case.name, ACTION_AT_S)


def run_and_watch(text: str, name: str, since_s: float) -> tuple[View, Seen]:
    """Simulate ``text``: the final views, and the states each VM went through from ``since_s``."""
    result = run_scenario(parse_scenario(text, f"<{name}>"))
    assert not result.violations, result.violations
    seen: Seen = {}
    for tr in result.transitions:
        if tr.t >= since_s:
            seen.setdefault(tr.vm, []).append(tr.state)
    return {f.vm: (f.state, f.host) for f in result.final}, seen


def view(status: dict[str, Any]) -> View:
    return {v["name"]: (v["state"], v["host"]) for v in status["vms"]}


def seen_since(status: dict[str, Any], t0: float) -> Seen:
    seen: Seen = {}
    for t, vm, state, _host in status["transitions"]:
        if t >= t0:
            seen.setdefault(vm, []).append(state)
    return seen


def act(cluster: LoopbackCluster, case: Case) -> None:
    if case.action == "power-off":
        cluster.power_off(case.target)
    elif case.action == "vm-crash":
        cluster.cmd("crash", vm=case.target)
    elif case.action == "vm-stop":
        cluster.cmd("stop", vm=case.target, no_restart=bool(case.args.get("no_restart")))
    elif case.action == "set-ha":
        cluster.cmd("set-ha", vm=case.target, level=case.args["level"])
    else:
        raise AssertionError(f"no real-mode action for {case.action}")


@pytest.mark.parametrize("case", CASES, ids=[c.action + ":" + c.target for c in CASES])
def test_simulated_runtime(case: Case) -> None:
    final, seen = simulate(case)
    assert case.expect(final, seen), (final, seen)


@pytest.mark.parametrize("case", CASES, ids=[c.action + ":" + c.target for c in CASES])
def test_thespian_runtime(case: Case, tmp_path: Path, record_property: Any) -> None:
    cluster = LoopbackCluster(tmp_path, CLUSTER, shared_pools=("nfs-1",))
    try:
        cluster.start()
        cluster.wait_for(lambda s: view(s)["vm-shared"] == ("Running", "host-1"), 10, "initial state")
        t0 = time.time()
        act(cluster, case)
        elapsed = cluster.wait_for(lambda s: case.expect(view(s), seen_since(s, t0)), case.timeout_s,
                                   case.name)
        print(f"\n{case.name}: {elapsed:.1f} s wall clock (Thespian, loopback, test driver)")
        record_recovery(f"loopback: {case.name}", elapsed)
        record_property("recovery_s", round(elapsed, 2))
        if case.settle_s:
            time.sleep(case.settle_s)
            status = cluster.status()
            assert case.expect(view(status), seen_since(status, t0)), status
        assert case.expect(*simulate(case)), "the simulator disagrees"
    finally:
        cluster.stop()


# -- manager restarts: the same restore rule (actors.durable) in both runtimes -------------------

@dataclass(frozen=True)
class RestartCase:
    """Actions before the management node dies, actions while it is down, then a restart:
    both runtimes must bring every VM back the same way and end with the same views."""

    name: str
    before: tuple[tuple[str, str, dict[str, Any]], ...]  # (action, target, args)
    settled: Callable[[View], bool]  # the real cluster has carried out ``before``
    down: tuple[tuple[str, str], ...] = ()  # (action, target) while the manager is down
    expect: Callable[[View, Seen], bool] = lambda v, s: True
    timeout_s: float = 60.0


RESTART_CASES = [
    RestartCase("restart: running VMs come back Unknown, are asked, and stay where they run", (),
                lambda v: True,
                expect=lambda v, s: v["vm-shared"] == ("Running", "host-1")
                and v["vm-local"] == ("Running", "host-1") and went(s, "vm-shared", "Unknown", "Running")
                and "Starting" not in s.get("vm-shared", [])),
    RestartCase("restart: a stop with no-restart outlives it",
                (("vm-stop", "vm-local", {"no_restart": True}),), lambda v: v["vm-local"][0] == "Stopped",
                expect=lambda v, s: v["vm-local"][0] == "Stopped" and "Starting" not in s.get("vm-local", [])
                and v["vm-shared"] == ("Running", "host-1")),
    RestartCase("restart: a host lost while the manager was down is recovered after it",
                (), lambda v: True, down=(("power-off", "host-1"),),
                expect=lambda v, s: v["vm-shared"] == ("Running", "host-2") and v["vm-local"][0] == "Stopped"
                and went(s, "vm-shared", "Unknown", "Starting", "Running"), timeout_s=90.0),
]

CRASH_AT_S, DOWN_AT_S, RESTART_AT_S = 30.0, 31.0, 40.0


def simulate_restart(case: RestartCase) -> tuple[View, Seen]:
    events = [(20.0, action, target, args) for action, target, args in case.before]
    events += [(CRASH_AT_S, "manager-crash", "", {})]
    events += [(DOWN_AT_S, action, target, {}) for action, target in case.down]
    events += [(RESTART_AT_S, "manager-restart", "", {})]
    text = CLUSTER
    for at, action, target, args in events:
        text += f'\n[[event]]\nat = "{at}s"\naction = "{action}"\n'
        text += f'target = "{target}"\n' if target else ""
        text += "".join(f"{k} = {toml_value(v)}\n" for k, v in args.items())
    return run_and_watch(text, case.name, RESTART_AT_S)


@pytest.mark.parametrize("case", RESTART_CASES, ids=[c.name.split(": ", 1)[1] for c in RESTART_CASES])
def test_restart_restores_alike_in_both_runtimes(case: RestartCase, tmp_path: Path) -> None:
    sim_final, sim_seen = simulate_restart(case)
    assert case.expect(sim_final, sim_seen), ("simulator", sim_final, sim_seen)
    cluster = LoopbackCluster(tmp_path, CLUSTER, shared_pools=("nfs-1",))
    try:
        cluster.start()
        cluster.wait_for(lambda s: view(s)["vm-shared"] == ("Running", "host-1"), 10, "initial state")
        for action, target, args in case.before:
            act(cluster, Case("", action, target, args))
        cluster.wait_for(lambda s: case.settled(view(s)), 30, "actions before the restart")
        cluster.kill_manager()
        for action, target in case.down:
            act(cluster, Case("", action, target))
        t0 = time.time()
        cluster.start_manager()
        cluster.wait_for(lambda s: case.expect(view(s), seen_since(s, t0)), case.timeout_s, case.name)
        time.sleep(5)  # several ping rounds: nothing may move any more
        status = cluster.status()
        real_final = view(status)
        assert case.expect(real_final, seen_since(status, t0)), status
        # the same restore (Stopped stays Stopped, anything else is Unknown until asked) ...
        real_seen = seen_since(status, t0)
        assert {vm: states[0] for vm, states in real_seen.items()} == {
            vm: states[0] for vm, states in sim_seen.items()}, (real_seen, sim_seen)
        # ... and the same outcome
        assert real_final == sim_final, (real_final, sim_final)
    finally:
        cluster.stop()
