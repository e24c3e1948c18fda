"""A simulated hypervisor per host: guests boot, stop, migrate and crash in virtual time.

It implements ``actors.context.HypervisorPort`` for the host agent and writes every
guest start and end into the ground truth. A hung libvirt daemon (``hang``) answers
nothing until it resumes: orders wait, events wait, and the guest list the agent sees is
the one from before the hang, while the guests themselves keep running. The self-fencer
does not go through libvirt (it kills qemu processes), so it still works.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import TYPE_CHECKING, Any

from actors.inventory import VmDef, host_addr
from actors.messages import GuestStopped, HvDone
from actors.states import StopReason
from sim.truth import Truth

if TYPE_CHECKING:
    from sim.runtime import SimRuntime

BOOT_S = (2.0, 4.0)  # a guest's boot time is drawn from this range
SHUTDOWN_S = 2.0
DESTROY_S = 0.1
MIGRATE_BASE_S = 1.0
MIGRATE_S_PER_GIB = 1.0


class SimHypervisor:
    def __init__(self, host: str, runtime: SimRuntime, truth: Truth, rng: Random,
                 hypervisors: dict[str, SimHypervisor]) -> None:
        self.host = host
        self.runtime = runtime
        self.truth = truth
        self.rng = rng
        self.peers = hypervisors
        self.guests: dict[str, str] = {}  # vm -> pool
        self.powered = True
        self.booted = True  # powered and its daemon up: False from power loss until boot ends
        self.power_epoch = 0
        self.hung_view: dict[str, str] | None = None  # what libvirt last said, while hung
        self.waiting: list[Any] = []  # calls and events held back by a hung daemon
        self.fences: dict[str, int] = {}  # pool -> how often it was fenced: voids older orders

    # -- the port --------------------------------------------------------------------------------

    def running(self) -> Mapping[str, str]:
        return self.guests if self.hung_view is None else self.hung_view

    def answering(self) -> bool:
        return self.hung_view is None

    def boot_id(self) -> str:
        return f"{self.host}#{self.power_epoch}"  # a power cycle, a reset included, is a new boot

    def start(self, vm: VmDef, token: int, cause: str) -> None:
        ordered_at = float(self.runtime.env.now)
        fences = self.fences.get(vm.pool, 0)
        if self._held(lambda: self._start(vm, token, cause, ordered_at, fences)):
            return
        self._start(vm, token, cause, ordered_at, fences)

    def _start(self, vm: VmDef, token: int, cause: str, ordered_at: float, fences: int) -> None:
        epoch = self.power_epoch

        def booted(_: Any) -> None:
            if not self._alive(epoch):
                return
            if self.fences.get(vm.pool, 0) != fences:
                self._to_agent(HvDone(token, False, f"voided: {vm.pool} was fenced"))
                return
            if vm.name not in self.guests:
                self.guests[vm.name] = vm.pool
                self.truth.start_run(self.runtime.env.now, vm.name, self.host, cause, ordered_at)
            self._to_agent(HvDone(token, True))

        self.runtime.later(self.rng.uniform(*BOOT_S), booted)

    def stop(self, vm: str, token: int, force: bool) -> None:
        if self._held(lambda: self.stop(vm, token, force)):
            return
        epoch = self.power_epoch
        reason = StopReason.DESTROYED if force else StopReason.SHUTDOWN

        def stopped(_: Any) -> None:
            if not self._alive(epoch):
                return
            self._end(vm, reason)
            self._to_agent(HvDone(token, True))

        self.runtime.later(DESTROY_S if force else SHUTDOWN_S, stopped)

    def migrate(self, vm: str, dest_host: str, token: int) -> None:
        if self._held(lambda: self.migrate(vm, dest_host, token)):
            return
        epoch = self.power_epoch
        dest = self.peers[dest_host]
        pool = self.guests.get(vm, "")
        dest_fences = dest.fences.get(pool, 0)
        dest_epoch = dest.power_epoch
        dest_up = dest.booted  # a host still booting has no daemon to receive the guest
        mem_gib = self.truth.vm_mem[vm] / 1024

        def moved(_: Any) -> None:
            if not self._alive(epoch):
                return
            down = not dest_up or not dest._alive(dest_epoch)  # booting, or lost power/reset since
            if vm not in self.guests or down or dest.fences.get(pool, 0) != dest_fences:
                self._to_agent(HvDone(token, False, "migration failed"))
                return
            now = self.runtime.env.now
            self._end(vm, StopReason.MIGRATED)
            dest.guests[vm] = pool
            self.truth.start_run(now, vm, dest_host, "migration")
            self._to_agent(HvDone(token, True))

        self.runtime.later(MIGRATE_BASE_S + MIGRATE_S_PER_GIB * mem_gib, moved)

    # -- faults and set-up -------------------------------------------------------------------------

    def fence(self, pool: str) -> None:
        """Kill the pool's guests at once (qemu processes, not through libvirt, so a hung
        daemon does not stop it) and void every start or incoming migration on the pool
        ordered before now, as restarting the daemon would."""
        self.fences[pool] = self.fences.get(pool, 0) + 1
        now = self.runtime.env.now
        for vm in sorted(v for v, p in self.guests.items() if p == pool):
            self._end(vm, StopReason.FENCED)
            self.truth.fenced(now, vm, self.host)

    def place_initial(self, vm: str, pool: str) -> None:
        self.guests[vm] = pool
        self.truth.start_run(0.0, vm, self.host, "initial")

    def crash(self, vm: str) -> bool:
        return self._end(vm, StopReason.CRASHED)

    def power_off(self) -> None:
        now = self.runtime.env.now
        for vm in sorted(self.guests):
            self.truth.end_run(now, vm, self.host)
        self.guests.clear()
        self.powered = False
        self.booted = False
        self.power_epoch += 1
        self.hung_view = None  # a reboot brings a fresh daemon
        self.waiting.clear()

    def hang(self) -> None:
        if self.hung_view is None:
            self.hung_view = dict(self.guests)

    def resume(self) -> None:
        if self.hung_view is None:
            return
        self.hung_view = None
        waiting, self.waiting = self.waiting, []
        for call in waiting:
            call()

    def _held(self, call: Any) -> bool:
        """While the daemon hangs, keep the call for when it answers again."""
        if self.hung_view is None:
            return False
        self.waiting.append(call)
        return True

    def power_on(self) -> None:
        self.powered = True

    # -- internals --------------------------------------------------------------------------------

    def _alive(self, epoch: int) -> bool:
        return self.powered and epoch == self.power_epoch

    def _end(self, vm: str, reason: StopReason) -> bool:
        if vm not in self.guests:
            return False
        del self.guests[vm]
        self.truth.end_run(self.runtime.env.now, vm, self.host)
        self._to_agent(GuestStopped(vm, reason))
        return True

    def _to_agent(self, msg: object) -> None:
        if self.hung_view is not None:
            self.waiting.append(lambda: self.runtime.deliver(host_addr(self.host), msg))
            return
        self.runtime.deliver(host_addr(self.host), msg)
