"""Recovery figures and false failovers, on hand-built traces with known answers and on
shipped scenarios cross-checked against their own transitions and ground truth."""

from __future__ import annotations

import json

import pytest

from formats.scenario import load_scenario, parse_scenario
from sim.recovery import Recovery, false_failovers, neverstop_recoveries, recovery, spurious_unknowns
from sim.result import FaultMark, Run, RunResult, Transition
from sim.run_json import run_json
from sim.runner import run_scenario


def _result(transitions: list[Transition], runs: list[Run], faults: list[FaultMark],
            vms: tuple[str, ...] = ("vm-a", "vm-b"), ha: str = "NeverStop") -> RunResult:
    return RunResult(
        scenario="hand-built", seed=1, profile="default", duration_s=600.0,
        transitions=transitions, runs=runs, faults=faults,
        vm_table=[{"name": vm, "ha": ha} for vm in vms],
    )


def _power_loss() -> RunResult:
    """vm-a on host-1 loses its host at 100 s and comes back on host-2; vm-b on host-2 is untouched."""
    return _result(
        transitions=[
            Transition(0.0, "vm-a", "Running", "host-1"),
            Transition(0.0, "vm-b", "Running", "host-2"),
            Transition(130.0, "vm-a", "Unknown", "host-1"),
            Transition(131.0, "vm-a", "Recovering", "host-1"),
            Transition(131.5, "vm-a", "Starting", "host-2"),
            Transition(134.0, "vm-a", "Running", "host-2"),
        ],
        runs=[
            Run("vm-a", "host-1", 0.0, 100.0, "initial"),
            Run("vm-b", "host-2", 0.0, None, "initial"),
            Run("vm-a", "host-2", 133.5, None, "ha"),
        ],
        faults=[FaultMark(100.0, "power-off", "host-1")],
    )


def test_host_power_loss_figures_are_the_first_occurrences() -> None:
    [rec] = recovery(_power_loss())
    assert rec == Recovery(
        vm="vm-a", fault="power-off", target="host-1", fault_t=100.0, host="host-1",
        detected_t=130.0, decided_t=131.0, ordered_t=131.5, ordered_host="host-2",
        started_t=133.5, new_host="host-2", running_t=134.0,
        repaired_t=None, state_before="Running", final_state="Running",
    )
    figures = (rec.detect_s, rec.decide_s, rec.order_s, rec.restart_s, rec.downtime_s)
    assert figures == (30.0, 31.0, 31.5, 33.5, 34.0)
    assert rec.failover and rec.recovered_by_ha and not rec.waited and not rec.unrecovered


def test_a_host_fault_affects_only_the_guests_that_really_ran_there() -> None:
    """vm-b was ordered to host-1 but still booting at the fault: no run there, not affected."""
    result = _power_loss()
    result.transitions.append(Transition(99.0, "vm-b", "Starting", "host-1"))
    result.runs[1] = Run("vm-b", "host-2", 0.0, 98.0, "initial")
    assert [r.vm for r in recovery(result)] == ["vm-a"]


def test_a_crash_affects_only_its_vm_and_set_ha_only_a_vm_that_runs_nowhere() -> None:
    result = _result(
        transitions=[
            Transition(0.0, "vm-a", "Running", "host-1"),
            Transition(0.0, "vm-b", "Stopped", None),
            Transition(50.2, "vm-a", "Stopping", "host-1"),
            Transition(50.2, "vm-a", "Stopped", None),
            Transition(50.3, "vm-a", "Starting", "host-1"),
            Transition(53.0, "vm-a", "Running", "host-1"),
            Transition(120.0, "vm-b", "Starting", "host-2"),
            Transition(123.0, "vm-b", "Running", "host-2"),
        ],
        runs=[Run("vm-a", "host-1", 0.0, 50.0, "initial"), Run("vm-a", "host-1", 52.9, None, "ha"),
              Run("vm-b", "host-2", 122.9, None, "ha")],
        faults=[FaultMark(50.0, "vm-crash", "vm-a"), FaultMark(60.0, "set-ha", "vm-b"),
                FaultMark(200.0, "set-ha", "vm-a")],  # vm-a runs at 200 s: nothing for HA to do
    )
    crash, switch = recovery(result)
    assert (crash.vm, crash.fault, crash.host) == ("vm-a", "vm-crash", "host-1")
    assert crash.detected_t == 50.2  # Stopping: noticed, but not yet a decision to restart
    assert crash.decided_t == crash.ordered_t == 50.3 and crash.ordered_host == "host-1"
    assert crash.started_t == 52.9 and crash.downtime_s == pytest.approx(3.0)
    assert not crash.failover
    assert (switch.vm, switch.fault, switch.host) == ("vm-b", "set-ha", None)
    assert switch.disrupted and switch.ordered_t == 120.0 and switch.downtime_s == pytest.approx(63.0)


def test_an_incident_ends_where_the_next_one_of_the_same_vm_begins() -> None:
    """The second crash's restart must not be credited to the first crash."""
    result = _result(
        transitions=[
            Transition(0.0, "vm-a", "Running", "host-1"),
            Transition(10.0, "vm-a", "Stopping", "host-1"),
            Transition(20.0, "vm-a", "Stopping", "host-1"),  # second crash, first never restarted
            Transition(20.5, "vm-a", "Starting", "host-1"),
            Transition(23.0, "vm-a", "Running", "host-1"),
        ],
        runs=[Run("vm-a", "host-1", 0.0, 10.0, "initial"), Run("vm-a", "host-1", 22.9, None, "ha")],
        faults=[FaultMark(10.0, "vm-crash", "vm-a"), FaultMark(20.0, "vm-crash", "vm-a")],
    )
    first, second = recovery(result)
    assert first.detected_t == 10.0 and first.ordered_t is None and first.running_t is None
    assert first.unrecovered
    assert second.ordered_t == 20.5 and second.started_t == 22.9 and second.downtime_s == pytest.approx(3.0)


def test_two_events_at_one_instant_make_one_incident() -> None:
    result = _power_loss()
    result.faults.append(FaultMark(100.0, "network-down", "host-1"))
    assert [(r.vm, r.fault) for r in recovery(result)] == [("vm-a", "power-off")]


def test_a_vm_back_only_after_the_repair_waited_for_it() -> None:
    """Permissive isolation: Unknown until the network returns; the guest never stopped."""
    result = _result(
        transitions=[
            Transition(0.0, "vm-a", "Running", "host-1"),
            Transition(100.0, "vm-a", "Unknown", "host-1"),
            Transition(600.001, "vm-a", "Running", "host-1"),
        ],
        runs=[Run("vm-a", "host-1", 0.0, None, "initial")],
        faults=[FaultMark(60.0, "network-down", "host-1"), FaultMark(600.0, "network-up", "host-1")],
    )
    [rec] = recovery(result)
    assert rec.repaired_t == 600.0 and rec.downtime_s == pytest.approx(540.001)
    assert rec.waited and not rec.recovered_by_ha and not rec.unrecovered


def test_only_neverstop_vms_are_expected_back() -> None:
    result = _power_loss()
    result.vm_table = [{"name": "vm-a", "ha": "None"}, {"name": "vm-b", "ha": "NeverStop"}]
    assert neverstop_recoveries(result) == []


def test_spurious_unknown_counts_only_hosts_and_vms_nothing_happened_to() -> None:
    result = _power_loss()  # vm-a Unknown on host-1 at 130 s: host-1 lost power, a true alarm
    assert spurious_unknowns(result) == 0
    result.transitions += [
        Transition(20.0, "vm-b", "Unknown", "host-2"),  # nothing ever happened to host-2 or vm-b
        Transition(21.0, "vm-b", "Running", "host-2"),
        Transition(300.0, "vm-a", "Unknown", "host-2"),  # vm-a, restarted on healthy host-2
    ]
    assert spurious_unknowns(result) == 2
    result.faults.append(FaultMark(250.0, "network-down", "host-2"))  # now host-2 did fail first
    assert spurious_unknowns(result) == 1


# -- false failovers ---------------------------------------------------------------------------------

SCENARIO = """
name = "x"
description = ""
duration = "10m"
[[storage]]
name = "nfs-1"
type = "NFS"
[[host]]
name = "host-1"
cpu = 4
memory = "8GiB"
storage = ["nfs-1"]
[[host]]
name = "host-2"
cpu = 4
memory = "8GiB"
storage = ["nfs-1"]
[[vm]]
name = "vm-a"
cpu = 1
memory = "1GiB"
host = "host-1"
storage = "nfs-1"
ha = "NeverStop"
"""


def _event(at: str, action: str, extra: str = "") -> str:
    return f'[[event]]\nat = "{at}"\naction = "{action}"\ntarget = "host-1"\n{extra}\n'


def _moved(faults: list[FaultMark]) -> RunResult:
    """vm-a's guest on host-1 ends at 100 s and HA starts it on host-2 at 120 s."""
    runs = [Run("vm-a", "host-1", 0.0, 100.0, "initial"), Run("vm-a", "host-2", 120.0, None, "ha")]
    return _result([], runs, faults, vms=("vm-a",))


@pytest.mark.parametrize(
    ("events", "faults", "false"),
    [
        ("", [], True),  # nothing happened to host-1: a false failover
        (_event("90s", "network-down"), [FaultMark(90.0, "network-down", "host-1")], False),  # cut off
        (_event("90s", "network-down", 'network = "management"'),
         [FaultMark(90.0, "network-down", "host-1")], True),  # still reachable on storage and business
        (_event("90s", "network-down") + _event("110s", "network-up"),
         [FaultMark(90.0, "network-down", "host-1"), FaultMark(110.0, "network-up", "host-1")], True),
        (_event("100s", "power-off"), [FaultMark(100.0, "power-off", "host-1")], False),
        (_event("100s", "power-off") + _event("110s", "power-on"),  # back on, but it did fail
         [FaultMark(100.0, "power-off", "host-1"), FaultMark(110.0, "power-on", "host-1")], False),
        (_event("90s", "storage-down", 'pool = "nfs-1"'),
         [FaultMark(90.0, "storage-down", "host-1")], False),  # lost the VM's disk: moving it is the repair
        (_event("90s", "network-down", 'network = "storage"'),
         [FaultMark(90.0, "network-down", "host-1")], False),  # same, through its storage link
    ],
)
def test_false_failover_needs_the_old_host_alive_and_reachable(events: str, faults: list[FaultMark],
                                                               false: bool) -> None:
    scenario = parse_scenario(SCENARIO + events)
    found = false_failovers(_moved(faults), scenario)
    assert bool(found) is false
    if false:
        assert found[0].vm == "vm-a" and found[0].old_host == "host-1" and found[0].new_host == "host-2"


def test_without_the_scenario_a_network_event_counts_for_every_network() -> None:
    """FaultMark does not say which network went down: the cautious reading is all of them."""
    assert false_failovers(_moved([FaultMark(90.0, "network-down", "host-1")])) == []
    assert len(false_failovers(_moved([]))) == 1


def test_a_restart_on_the_same_host_is_no_failover() -> None:
    runs = [Run("vm-a", "host-1", 0.0, 100.0, "initial"), Run("vm-a", "host-1", 103.0, None, "ha")]
    result = _result([], runs, [], vms=("vm-a",))
    assert false_failovers(result) == []


# -- shipped scenarios, cross-checked against their own record -----------------------------------------


def _first(result: RunResult, vm: str, state: str, after: float) -> Transition:
    return next(t for t in result.transitions if t.vm == vm and t.state == state and t.t >= after)


def test_shared_host_power_loss_recovery_matches_its_trace() -> None:
    result = run_scenario(load_scenario("scenarios/shared-host-power-loss.toml"))
    recs = {r.vm: r for r in recovery(result)}
    assert set(recs) == {"VM-1", "VM-2", "VM-3"}  # all three really ran on host-1
    for vm in ("VM-1", "VM-2"):
        rec = recs[vm]
        assert rec.fault == "power-off" and rec.fault_t == 60.0 and rec.host == "host-1"
        assert rec.detected_t == _first(result, vm, "Unknown", 60.0).t
        assert rec.decided_t == _first(result, vm, "Recovering", 60.0).t
        starting = _first(result, vm, "Starting", 60.0)
        assert rec.ordered_t == starting.t and rec.ordered_host == starting.host != "host-1"
        new_run = next(r for r in result.runs if r.vm == vm and r.cause == "ha")
        assert rec.started_t == new_run.start and rec.new_host == new_run.host == starting.host
        assert rec.running_t == _first(result, vm, "Running", 60.0).t
        assert rec.downtime_s == pytest.approx(rec.running_t - 60.0)
        assert 0 < rec.detect_s <= rec.decide_s <= rec.order_s <= rec.restart_s <= rec.downtime_s < 300
        assert rec.recovered_by_ha
    vm3 = recs["VM-3"]  # HA level None: noticed, never restarted
    assert vm3.detected_t is not None and vm3.decided_t is None and vm3.running_t is None
    assert [r.vm for r in neverstop_recoveries(result)] == ["VM-1", "VM-2"]
    assert false_failovers(result, load_scenario("scenarios/shared-host-power-loss.toml")) == []


def test_run_json_has_recovery_and_keeps_every_other_key() -> None:
    doc = run_json(run_scenario(load_scenario("scenarios/vm-crash-shared.toml")))
    for key in ("scenario", "seed", "profile", "transitions", "runs", "expectations", "violations",
                "final", "faults"):
        assert key in doc
    json.dumps(doc)  # plain JSON all the way down
    vm1 = next(r for r in doc["recovery"] if r["vm"] == "VM-1")
    assert {"vm", "fault", "fault_t", "detected_t", "decided_t", "started_t", "running_t",
            "downtime_s"} <= set(vm1)
    assert vm1["fault"] == "vm-crash" and vm1["fault_t"] == 60.0 and vm1["ordered_host"] == "host-1"
    assert vm1["downtime_s"] == pytest.approx(vm1["running_t"] - 60.0)
    run = next(r for r in doc["runs"] if r["vm"] == "VM-1" and r["cause"] == "ha")
    assert vm1["started_t"] == run["start"]


def test_total_isolation_under_force_the_shared_vm_recovers_and_the_local_one_waits() -> None:
    result = run_scenario(load_scenario("scenarios/total-isolation-force.toml"))
    recs = {r.vm: r for r in neverstop_recoveries(result)}
    killed = next(r for r in result.runs if r.vm == "VM-1" and r.host == "host-1").end
    assert killed is not None and recs["VM-1"].started_t is not None and recs["VM-1"].started_t > killed
    assert recs["VM-1"].recovered_by_ha and recs["VM-1"].failover
    assert recs["VM-2"].waited  # its disk is on host-1: back only once host-1 is reachable again
