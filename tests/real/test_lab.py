"""Real mode on real guests: three namespaced hosts with libvirtd and qemu, the tuned profile.

Each test injects one real fault, waits for the outcome the HA behaviour promises, checks
it with libvirt on every host (and by counting qemu processes: never two for one guest),
and prints the measured wall-clock recovery time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from real_harness import record_recovery

from real import lab as labmod
from real.control import DaemonError, control
from real.heartbeat import reading
from real.keys import load_key
from real.watchdog import ARMED, FIRED, WATCHDOG_KEY, read_state

pytestmark = pytest.mark.lab

HOSTS = ("host-1", "host-2", "host-3")


class Watch:
    """Polls the manager and libvirt while a fault plays out; keeps what it saw."""

    def __init__(self, state: labmod.LabState) -> None:
        self.state = state
        self.t0 = time.time()
        self.max_qemu: dict[str, int] = {}
        self.min_qemu: dict[str, int] = {}

    def status(self) -> dict[str, Any]:
        reply = control(self.state.socket, "status", key_path=self.state.key)
        assert reply["ok"], reply
        data: dict[str, Any] = reply["data"]
        return data

    def sample(self, vms: tuple[str, ...]) -> None:
        for vm in vms:
            n = len(labmod.qemu_pids(vm))
            self.max_qemu[vm] = max(self.max_qemu.get(vm, 0), n)
            self.min_qemu[vm] = min(self.min_qemu.get(vm, n), n)

    def until(self, cond: Callable[[dict[str, Any]], bool], timeout_s: float, what: str,
              vms: tuple[str, ...] = ()) -> float:
        """Seconds from the fault until ``cond(status)`` held, sampling qemu all along."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.sample(vms)
            try:
                last = self.status()
            except (DaemonError, AssertionError):
                continue
            if cond(last):
                return time.time() - self.t0
            time.sleep(0.05)
        log = Path(self.state.dir, "manager.log").read_text()[-3000:]
        raise AssertionError(f"not within {timeout_s} s: {what}\nstatus: {last}\nmanager log:\n{log}")

    def hold(self, cond: Callable[[dict[str, Any]], bool], seconds: float, what: str,
             vms: tuple[str, ...] = ()) -> None:
        """``cond(status)`` holds at every sample for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sample(vms)
            status = self.status()
            assert cond(status), f"{what}: {status}"
            time.sleep(0.1)

    def seen(self, status: dict[str, Any], vm: str) -> list[str]:
        return [s for t, v, s, _h in status["transitions"] if v == vm and t >= self.t0]


def vm(status: dict[str, Any], name: str) -> tuple[str, str | None]:
    row = next(v for v in status["vms"] if v["name"] == name)
    return row["state"], row["host"]


def libvirt_hosts(state: labmod.LabState, name: str) -> list[str]:
    """The hosts whose libvirtd lists ``name`` as running."""
    return [h for h in HOSTS if name in labmod.guests_on(state, h)]


def report(what: str, seconds: float) -> None:
    print(f"\n[lab] {what}: {seconds:.1f} s wall clock")
    record_recovery(f"lab: {what}", seconds)


def went(seen: list[str], *states: str) -> bool:
    it = iter(seen)
    return all(s in it for s in states)


def test_guest_crash_runs_again_on_the_same_host(lab: labmod.LabState) -> None:
    w = Watch(lab)
    killed = labmod.vm_crash(lab, "vm-shared-1")
    assert len(killed) == 1
    elapsed = w.until(lambda s: vm(s, "vm-shared-1") == ("Running", "host-1")
                      and went(w.seen(s, "vm-shared-1"), "Stopping", "Starting", "Running"),
                      30, "crashed guest Running again on host-1", ("vm-shared-1",))
    report("guest crash -> Running on the same host", elapsed)
    assert libvirt_hosts(lab, "vm-shared-1") == ["host-1"]
    assert labmod.qemu_pids("vm-shared-1") and labmod.qemu_pids("vm-shared-1") != killed
    assert w.max_qemu["vm-shared-1"] <= 1


def test_host_power_off(lab: labmod.LabState) -> None:
    w = Watch(lab)
    labmod.power_off(lab, "host-1")
    vms = ("vm-shared-1", "vm-local-1", "vm-shared-2")
    elapsed = w.until(lambda s: vm(s, "vm-shared-1")[0] == "Running" and vm(s, "vm-shared-1")[1] != "host-1"
                      and vm(s, "vm-local-1")[0] == "Stopped", 90,
                      "shared guest Running elsewhere, local guest Stopped", vms)
    report("host power-off -> shared-storage guest Running on another host", elapsed)
    status = w.status()
    new_host = vm(status, "vm-shared-1")[1]
    assert went(w.seen(status, "vm-shared-1"), "Unknown", "Recovering", "Starting", "Running")
    # Checked with libvirt on every host: one copy of each guest, the local one nowhere.
    assert libvirt_hosts(lab, "vm-shared-1") == [new_host]
    assert libvirt_hosts(lab, "vm-local-1") == []
    assert libvirt_hosts(lab, "vm-shared-2") == ["host-2"]
    w.hold(lambda s: vm(s, "vm-local-1")[0] in ("Stopped", "Unknown", "Recovering")
           and vm(s, "vm-shared-1") == ("Running", new_host), 5, "after recovery", vms)
    assert all(n <= 1 for n in w.max_qemu.values()), w.max_qemu
    assert labmod.qemu_pids("vm-local-1") == []


def test_maintenance_live_migrates_without_downtime(lab: labmod.LabState) -> None:
    w = Watch(lab)
    reply = control(lab.socket, "maintenance", {"host": "host-1", "enter": True}, key_path=lab.key)
    assert reply["ok"], reply
    elapsed = w.until(lambda s: vm(s, "vm-shared-1")[0] == "Running" and vm(s, "vm-shared-1")[1] != "host-1"
                      and vm(s, "vm-local-1")[0] == "Stopped", 60, "migrated away, local guest stopped",
                      ("vm-shared-1",))
    report("maintenance -> shared-storage guest live-migrated", elapsed)
    status = w.status()
    seen = w.seen(status, "vm-shared-1")
    assert went(seen, "Migrating", "Running") and not {"Stopping", "Stopped", "Starting"} & set(seen), seen
    assert w.min_qemu["vm-shared-1"] >= 1, "the guest had no qemu process at some point: downtime"
    new_host = vm(status, "vm-shared-1")[1]
    assert libvirt_hosts(lab, "vm-shared-1") == [new_host]
    w.hold(lambda s: vm(s, "vm-local-1")[0] == "Stopped", 12, "local guest stays Stopped in maintenance")
    assert libvirt_hosts(lab, "vm-local-1") == []


def test_plain_stop_restarts_and_no_restart_stop_does_not(lab: labmod.LabState) -> None:
    w = Watch(lab)
    assert control(lab.socket, "stop", {"vm": "vm-shared-2"}, key_path=lab.key)["ok"]
    elapsed = w.until(lambda s: vm(s, "vm-shared-2")[0] == "Running"
                      and went(w.seen(s, "vm-shared-2"), "Stopping", "Stopped", "Starting", "Running"),
                      30, "plain stop: Running again")
    report("plain stop of a NeverStop guest -> Running again", elapsed)
    assert len(libvirt_hosts(lab, "vm-shared-2")) == 1
    w2 = Watch(lab)
    assert control(lab.socket, "stop", {"vm": "vm-shared-2", "no_restart": True}, key_path=lab.key)["ok"]
    w2.until(lambda s: vm(s, "vm-shared-2")[0] == "Stopped", 30, "no-restart stop: Stopped")
    w2.hold(lambda s: vm(s, "vm-shared-2")[0] == "Stopped", 15, "stays Stopped (scan interval 10 s)",
            ("vm-shared-2",))
    assert w2.max_qemu["vm-shared-2"] == 0 and libvirt_hosts(lab, "vm-shared-2") == []


def test_losing_the_management_link_restarts_nothing_elsewhere(lab: labmod.LabState) -> None:
    w = Watch(lab)
    labmod.network(lab, "host-2", up_=False)
    try:
        w.until(lambda s: vm(s, "vm-shared-2")[0] == "Unknown", 30, "host-2's guest Unknown")
        w.hold(lambda s: vm(s, "vm-shared-2")[0] == "Unknown" and vm(s, "vm-shared-1")[0] == "Running", 20,
               "nothing restarted while host-2 is cut off", ("vm-shared-2",))
        assert libvirt_hosts(lab, "vm-shared-2") == ["host-2"]
        assert w.max_qemu["vm-shared-2"] == 1 and w.min_qemu["vm-shared-2"] == 1
    finally:
        labmod.network(lab, "host-2", up_=True)
    w_up = Watch(lab)
    elapsed = w_up.until(lambda s: vm(s, "vm-shared-2") == ("Running", "host-2"), 30,
                         "back Running on host-2", ("vm-shared-2",))
    report("management link back -> guest Running (it never stopped)", elapsed)
    status = w.status()
    assert "Starting" not in w.seen(status, "vm-shared-2")
    assert libvirt_hosts(lab, "vm-shared-2") == ["host-2"]


def test_agent_crash_under_force_is_fenced_by_the_watchdog(lab_force: labmod.LabState) -> None:
    """The agent of a host dies; the host, libvirtd and the guest live on. The host's
    watchdog daemon, no longer petted, kills the guest; the manager, seeing the heartbeat
    stop (armed), restarts the VM on another host. Never two qemu processes of the VM."""
    lab = lab_force
    shared = str(Path(lab.dir, "shared"))
    deadline = time.monotonic() + 15
    manager_public = load_key(lab.key).manager().public
    while (reading(shared, "host-2", manager_public) or (0, None))[1] is None:  # host-2 claims armed
        assert time.monotonic() < deadline, "host-2 never claimed an armed self-fencer"
        time.sleep(0.1)
    vms = ("vm-shared-2",)
    w = Watch(lab)
    assert labmod.agent_crash(lab, "host-2")
    t0 = time.monotonic()
    while labmod.qemu_pids("vm-shared-2"):
        w.sample(vms)
        assert time.monotonic() - t0 < 10, "the watchdog did not kill the guest"
        time.sleep(0.02)
    killed_s = time.monotonic() - t0
    report("agent crash (Force) -> the watchdog killed the guest", killed_s)
    # tuned: 3 heartbeat intervals after the last pet (before the crash), polled every 0.25 s; the
    # manager's window (about 13 s after the last heartbeat it saw change) is far behind
    assert killed_s <= 3.0 + 1.5
    elapsed = w.until(lambda s: vm(s, "vm-shared-2")[0] == "Running" and vm(s, "vm-shared-2")[1] != "host-2",
                      60, "vm-shared-2 Running on another host", vms)
    report("agent crash (Force) -> shared-storage guest Running on another host", elapsed)
    status = w.status()
    new_host = vm(status, "vm-shared-2")[1]
    assert went(w.seen(status, "vm-shared-2"), "Unknown", "Starting", "Running")
    assert libvirt_hosts(lab, "vm-shared-2") == [new_host]
    assert w.max_qemu["vm-shared-2"] <= 1, w.max_qemu
    log = Path(lab.dir, "host-2-watchdog.log").read_text()
    assert log.count("FIRED") == 1 and "vm-shared-2 (qemu" in log, log
    watchdog_key = load_key(lab.host_key("host-2")).host("host-2").local_key(WATCHDOG_KEY)
    fired = read_state(lab.watchdog_state("host-2"), watchdog_key)
    assert fired is not None and fired.state == FIRED
    # The agent comes back: it arms its watchdog again; nothing moves back or starts twice.
    w2 = Watch(lab)
    labmod.agent_restart(lab, "host-2")
    t1 = time.monotonic()
    while True:
        state = read_state(lab.watchdog_state("host-2"), watchdog_key)
        if state is not None and state.state == ARMED and state.pid != fired.pid:
            break
        w2.sample(vms)
        assert time.monotonic() - t1 < 30, Path(lab.dir, "host-2.log").read_text()[-2000:]
        time.sleep(0.05)
    report("agent restart (Force) -> watchdog armed again", time.monotonic() - t1)
    w2.until(lambda s: next(h for h in s["hosts"] if h["name"] == "host-2")["status"] == "Connected",
             30, "host-2 Connected again", vms)
    w2.hold(lambda s: vm(s, "vm-shared-2") == ("Running", new_host), 3, "stays where it was restarted", vms)
    assert w2.max_qemu["vm-shared-2"] <= 1 and libvirt_hosts(lab, "vm-shared-2") == [new_host]
