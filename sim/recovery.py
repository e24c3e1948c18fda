"""Recovery figures: per VM and per incident, how long HA took at each step of a recovery.

An operator asks "with my network, how fast does HA bring my VMs back?". This module
answers it for one run, from the run's record alone: the HA view (``transitions``), the
ground truth (``runs``) and the injected events (``faults``). Nothing here re-runs or
re-implements the simulator, so the figures are exactly what a run showed.

Incident attribution (documented in docs/tuning.md, and relied on by sweeps and notebooks):

* An incident starts with an injected event that HA has to repair:

  - a host fault, ``power-off``, ``network-down`` or ``storage-down``, affects every VM
    whose guest really ran on that host at that instant (a ground-truth run with
    ``start <= t <= end``; a guest still booting there is not affected, it was not
    running yet). The HA view is not consulted: it is what is being measured;
  - ``vm-crash`` affects the VM it names, whether or not it ran (a crash of a stopped
    VM is an incident with nothing to do, and every figure stays empty);
  - ``set-ha`` affects the VM it names when no copy of it ran at that instant: HA must
    now start it. This is the case ZStack's "within 5 min (default) / 3 min (tuned)"
    bound is about.

  Repairs (``power-on``, ``network-up``, ``storage-up``) and the other user actions
  (stops, maintenance, configuration) start no incident: they are not failures.
* An incident of a VM lasts until that VM's next incident, or the end of the run. Two
  events at the same instant that both affect a VM make one incident, named after the
  first of them in the run's fault list.
* Each figure is the first occurrence inside that window, as an absolute time:

  - ``detected_t``: the VM's first state change in the HA view (the manager noticed);
  - ``decided_t``: its first change to Recovering or Starting (HA decided to restart);
  - ``ordered_t``: its first change to Starting, the start order (``ordered_host`` is
    where it was ordered to start);
  - ``started_t``: the start of its first ground-truth run that begins in the window,
    when the guest really booted (``new_host`` is where);
  - ``running_t``: its first change to Running.

  ``downtime_s`` is ``running_t - fault_t``: the time until users see it Running again.
  A figure that never happened in the window is ``None``.
* Who brought it back. ``repaired_t`` is the first repair of the faulty host in the window
  (``power-on``, ``network-up`` or ``storage-up`` of the host a host fault named). An
  incident is *recovered by HA* when the VM was Running again before any repair: HA did
  it on its own. A VM that was Running again only after the repair *waited* for it, which
  is the documented behaviour when no copy can be proven gone (Permissive, a host cut off
  but maybe alive) or when the disk is only on the failed host (LocalStorage). An
  incident is *disrupted* when the view left Running (or the VM ran nowhere at the
  event); one that is not (a LocalStorage VM on a host that lost only its NFS path)
  counts neither as recovered nor as a wait. It is *unrecovered* when it was disrupted
  and the VM was never Running again in the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from actors.states import HaLevel, Network, VmState
from formats.spec import EventSpec, Scenario
from sim.result import FaultMark, Run, RunResult, Transition

HOST_FAULTS = frozenset({"power-off", "network-down", "storage-down", "agent-crash"})
HOST_REPAIRS = frozenset({"power-on", "network-up", "storage-up", "agent-restart"})
VM_FAULTS = frozenset({"vm-crash"})
USER_INCIDENTS = frozenset({"set-ha"})
INCIDENT_ACTIONS = HOST_FAULTS | VM_FAULTS | USER_INCIDENTS
ALL_NETWORKS: tuple[str, ...] = tuple(n.value for n in Network)


@dataclass(frozen=True)
class Recovery:
    """One VM's path through one incident; times are absolute simulated seconds."""

    vm: str
    fault: str  # the failure type: the action that started the incident
    target: str | None  # the host or VM the action named
    fault_t: float
    host: str | None  # where its guest really ran at the fault (None: it ran nowhere)
    detected_t: float | None = None
    decided_t: float | None = None
    ordered_t: float | None = None
    ordered_host: str | None = None
    started_t: float | None = None
    new_host: str | None = None
    running_t: float | None = None
    repaired_t: float | None = None  # first repair of the faulty host in the window
    state_before: str | None = None  # the VM's view state just before the event
    final_state: str | None = None  # the VM's view state at the end of the window

    def _since(self, t: float | None) -> float | None:
        return None if t is None else t - self.fault_t

    @property
    def detect_s(self) -> float | None:
        return self._since(self.detected_t)

    @property
    def decide_s(self) -> float | None:
        return self._since(self.decided_t)

    @property
    def order_s(self) -> float | None:
        return self._since(self.ordered_t)

    @property
    def restart_s(self) -> float | None:
        return self._since(self.started_t)

    @property
    def downtime_s(self) -> float | None:
        return self._since(self.running_t)

    @property
    def disrupted(self) -> bool:
        """Users saw it leave Running, or it ran nowhere when the event happened."""
        return self.detected_t is not None or self.host is None

    @property
    def recovered_by_ha(self) -> bool:
        """Running again before any repair of the fault: HA's own doing."""
        return self.running_t is not None and (self.repaired_t is None or self.running_t < self.repaired_t)

    @property
    def waited(self) -> bool:
        """Running again, but only once the fault itself was repaired."""
        return self.running_t is not None and not self.recovered_by_ha

    @property
    def unrecovered(self) -> bool:
        """Disrupted and never Running again in the window (a later false alarm on a
        healthy host is counted by ``spurious_unknowns``, not here)."""
        return self.disrupted and self.running_t is None

    @property
    def failover(self) -> bool:
        """The start was ordered on another host than the one the guest ran on."""
        return self.ordered_host is not None and self.host is not None and self.ordered_host != self.host

    def as_json(self) -> dict[str, Any]:
        """The ``recovery`` entries of ``neverstop sim run --json``."""
        return {
            "vm": self.vm,
            "fault": self.fault,
            "target": self.target,
            "host": self.host,
            "fault_t": self.fault_t,
            "detected_t": self.detected_t,
            "decided_t": self.decided_t,
            "ordered_t": self.ordered_t,
            "ordered_host": self.ordered_host,
            "started_t": self.started_t,
            "new_host": self.new_host,
            "running_t": self.running_t,
            "downtime_s": self.downtime_s,
            "repaired_t": self.repaired_t,
            "final_state": self.final_state,
            "recovered_by_ha": self.recovered_by_ha,
        }


def _live_at(runs: Iterable[Run], vm: str, t: float, host: str | None = None) -> Run | None:
    """The ground-truth run of ``vm`` (on ``host``, if given) that covers instant ``t``."""
    for run in runs:
        if run.vm == vm and (host is None or run.host == host) and run.start <= t and (
            run.end is None or run.end >= t
        ):
            return run
    return None


def _affected(fault: FaultMark, runs: Sequence[Run], vms: Sequence[str]) -> list[tuple[str, str | None]]:
    """(vm, host it ran on) for each VM the event affects, by the rules of the module doc."""
    if fault.action in HOST_FAULTS:
        hit = {r.vm for r in runs if r.host == fault.target and r.start <= fault.t
               and (r.end is None or r.end >= fault.t)}
        return [(vm, fault.target) for vm in sorted(hit)]
    if fault.target is None or fault.target not in vms:
        return []
    run = _live_at(runs, fault.target, fault.t)
    if fault.action in VM_FAULTS:
        return [(fault.target, run.host if run else None)]
    if fault.action in USER_INCIDENTS and run is None:
        return [(fault.target, None)]
    return []


def _first(changes: Iterable[Transition], states: frozenset[str]) -> Transition | None:
    return next((tr for tr in changes if tr.state in states), None)


def _vm_names(result: RunResult) -> list[str]:
    names = {str(row["name"]) for row in result.vm_table if row.get("name")}
    names |= {t.vm for t in result.transitions} | {r.vm for r in result.runs}
    return sorted(names)


def recovery(result: RunResult) -> list[Recovery]:
    """Every incident of ``result``, per VM, in order of fault time then VM name."""
    vms = _vm_names(result)
    starts: list[tuple[float, str, FaultMark, str | None]] = []
    seen: set[tuple[str, float]] = set()
    for fault in sorted(result.faults, key=lambda f: f.t):  # stable: keeps the run's order
        if fault.action not in INCIDENT_ACTIONS:
            continue
        for vm, host in _affected(fault, result.runs, vms):
            if (vm, fault.t) not in seen:
                seen.add((vm, fault.t))
                starts.append((fault.t, vm, fault, host))
    by_vm: dict[str, list[tuple[float, FaultMark, str | None]]] = {}
    for t, vm, fault, host in starts:
        by_vm.setdefault(vm, []).append((t, fault, host))
    repairs = sorted((f for f in result.faults if f.action in HOST_REPAIRS), key=lambda f: f.t)
    out: list[Recovery] = []
    for vm, incidents in by_vm.items():
        changes = sorted((tr for tr in result.transitions if tr.vm == vm), key=lambda tr: tr.t)
        runs = sorted((r for r in result.runs if r.vm == vm), key=lambda r: r.start)
        for i, (t, fault, host) in enumerate(incidents):
            end = incidents[i + 1][0] if i + 1 < len(incidents) else float("inf")
            window = [tr for tr in changes if t <= tr.t < end]
            before = [tr for tr in changes if tr.t < t]
            state_before = before[-1].state if before else None
            repair = next((f for f in repairs if fault.action in HOST_FAULTS and f.target == fault.target
                           and t <= f.t < end), None)
            decided = _first(window, frozenset({VmState.RECOVERING.value, VmState.STARTING.value}))
            ordered = _first(window, frozenset({VmState.STARTING.value}))
            running = _first(window, frozenset({VmState.RUNNING.value}))
            started = next((r for r in runs if t <= r.start < end), None)
            out.append(Recovery(
                vm=vm, fault=fault.action, target=fault.target, fault_t=t, host=host,
                detected_t=window[0].t if window else None,
                decided_t=decided.t if decided else None,
                ordered_t=ordered.t if ordered else None,
                ordered_host=ordered.host if ordered else None,
                started_t=started.start if started else None,
                new_host=started.host if started else None,
                running_t=running.t if running else None,
                repaired_t=repair.t if repair else None,
                state_before=state_before,
                final_state=window[-1].state if window else state_before,
            ))
    out.sort(key=lambda r: (r.fault_t, r.vm))
    return out


def ha_levels(result: RunResult) -> dict[str, str]:
    """Each VM's HA level at the end of the run, from the final VM list."""
    return {str(row["name"]): str(row.get("ha", "")) for row in result.vm_table if row.get("name")}


def neverstop_recoveries(result: RunResult) -> list[Recovery]:
    """The incidents HA is expected to repair: those of VMs that end the run NeverStop."""
    levels = ha_levels(result)
    return [r for r in recovery(result) if levels.get(r.vm) == HaLevel.NEVER_STOP.value]


def spurious_unknowns(result: RunResult) -> int:
    """Changes to Unknown on a host that nothing had happened to: false alarms of the
    liveness checks (pings lost on a lossy network, a timeout too short for the jitter).

    A change to Unknown counts when no event of the run up to that instant named its host
    or the VM itself. Users see such a VM as Unknown although nothing failed; it is not a
    false failover (HA restarts nothing while the host may be alive), but an operator
    tuning for speed wants it at zero too.
    """
    touched_at: dict[str, float] = {}
    for fault in result.faults:
        if fault.target is not None:
            touched_at[fault.target] = min(touched_at.get(fault.target, fault.t), fault.t)
    inf = float("inf")
    return sum(
        1 for tr in result.transitions
        if tr.state == VmState.UNKNOWN.value
        and tr.t < touched_at.get(tr.vm, inf) and tr.t < touched_at.get(tr.host or "", inf)
    )


# -- false failovers: HA moved a VM away from a host that was alive --------------------------------


@dataclass(frozen=True)
class FalseFailover:
    """An HA start of ``vm`` on ``new_host`` at ``t`` while ``old_host`` was alive and reachable."""

    vm: str
    t: float
    old_host: str
    new_host: str


class HostStates:
    """Which hosts were powered, which of their links were up, and which pools each could
    reach, at any instant: replayed from the run's faults, not read from the simulator.

    ``FaultMark`` does not say which network a ``network-down`` took or which pool a
    ``storage-down`` cut; those come from the scenario's events (matched by time,
    action and target). Without the scenario a network event counts for every network
    and a storage event for every pool, the cautious reading for "was it reachable".
    """

    def __init__(self, faults: Sequence[FaultMark], scenario: Scenario | None = None) -> None:
        self.faults = sorted(faults, key=lambda f: f.t)
        self.networks: dict[str, tuple[str, ...]] = {}
        self.events: dict[tuple[float, str, str | None], list[EventSpec]] = {}
        if scenario is not None:
            self.networks = {h.name: tuple(n.value for n in h.networks) for h in scenario.hosts}
            for ev in scenario.events:
                self.events.setdefault((ev.at_s, ev.action, ev.target), []).append(ev)

    def _arg(self, fault: FaultMark, used: dict[tuple[float, str, str | None], int], key: str) -> str | None:
        """The ``key`` argument of the scenario event behind ``fault`` (None: unknown)."""
        ident = (fault.t, fault.action, fault.target)
        candidates = self.events.get(ident, [])
        n = used.get(ident, 0)
        used[ident] = n + 1
        if n < len(candidates):
            value = candidates[n].args.get(key)
            return None if value is None else str(value)
        return None

    def state(self, host: str, t: float) -> tuple[bool, set[str], set[str] | None]:
        """(powered, networks up, pools cut off, None meaning every pool) after all
        faults up to and including instant ``t``."""
        powered = True
        mine = self.networks.get(host, ALL_NETWORKS)
        up = set(mine)
        cut: set[str] | None = set()
        used: dict[tuple[float, str, str | None], int] = {}
        for fault in self.faults:
            if fault.t > t:
                break
            if fault.action in ("network-down", "network-up", "storage-down", "storage-up"):
                arg = self._arg(fault, used, "network" if fault.action.startswith("network") else "pool")
            else:
                arg = None
            if fault.target != host:
                continue
            if fault.action == "power-off":
                powered = False
            elif fault.action == "power-on":
                powered = True
            elif fault.action in ("network-down", "network-up"):
                nets = set(mine) if arg in (None, "all") else {arg} & set(mine)
                up = up - nets if fault.action == "network-down" else up | nets
            elif fault.action == "storage-down":
                cut = None if arg is None or cut is None else cut | {arg}
            elif fault.action == "storage-up":
                cut = set() if arg is None else None if cut is None else cut - {arg}
        return powered, up, cut

    def powered_throughout(self, host: str, start: float, end: float) -> bool:
        """Powered at ``start`` (after the faults of that instant) and never off until ``end``."""
        if not self.state(host, start)[0]:
            return False
        return not any(f.action == "power-off" and f.target == host and start < f.t <= end
                       for f in self.faults)


def false_failovers(result: RunResult, scenario: Scenario | None = None) -> list[FalseFailover]:
    """HA starts on another host while the VM's previous host was alive and reachable.

    Derived from the ground truth: an HA start (a run with cause ``ha``) of a VM on a
    host other than the one its previous run was on, while that previous host

    * had been powered without interruption from the end of the previous run to the
      start (a host that lost power, even if it is back on, really failed), and
    * had at least one of its network links up at the start (reachable on some path),
    * and could still reach the VM's storage pool: its storage link was up and its path
      to the pool not cut. A host that lost the VM's disk cannot run it, so moving the
      VM is the repair, not a false alarm (needs ``scenario`` to know the VM's pool).
    """
    states = HostStates(result.faults, scenario)
    pool_of = {v.name: v.storage for v in scenario.vms} if scenario is not None else {}
    shared = {s.name: s.type.shared for s in scenario.storage} if scenario is not None else {}
    out: list[FalseFailover] = []
    by_vm: dict[str, list[Run]] = {}
    for run in sorted(result.runs, key=lambda r: r.start):
        by_vm.setdefault(run.vm, []).append(run)
    for vm, runs in by_vm.items():
        for i, run in enumerate(runs):
            if run.cause != "ha" or i == 0:
                continue
            prev = runs[i - 1]
            if prev.host == run.host:
                continue
            prev_end = run.start if prev.end is None else prev.end
            if not states.powered_throughout(prev.host, prev_end, run.start):
                continue
            _, up, cut = states.state(prev.host, run.start)
            if not up:
                continue
            pool = pool_of.get(vm)
            if pool is not None and shared.get(pool, False) and (
                Network.STORAGE.value not in up or cut is None or pool in cut
            ):
                continue
            out.append(FalseFailover(vm, run.start, prev.host, run.host))
    return out
