"""What the management node keeps durable, and the two rules both runtimes apply to it.

No host keeps a VM's HA level, its "do not restart" flag, a user's stop that has not been
carried out yet, the HA settings users changed or the hosts in maintenance: a restarted
management node must find them where it left them. The simulator keeps this record in
memory (it outlives a simulated manager crash); real mode keeps it in SQLite. Both
derive every change from the same two functions here, and both restart the manager
through ``restore``, so the runtimes cannot drift apart again:

- ``command_change``: what an accepted user command changes in the record. The API layer
  makes the change durable first and only then hands the command to the HA manager, so a
  command answered "ok" survives a crash of the management node.
- ``view_change``: what a VM's published view changes (its state, home host, a migration
  target, the end of a pending stop).
- ``restore``: how each VM comes back after a restart. A VM that was not Stopped comes
  back Unknown on its last host and the VM actor asks that host (and a migration target)
  what really runs: nothing is assumed running, nothing is assumed gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from actors.config import HaConfig
from actors.inventory import Inventory
from actors.messages import (
    UserMaintenance,
    UserSetConfig,
    UserSetHa,
    UserStartVm,
    UserStopVm,
    VmViewChanged,
)
from actors.states import HaLevel, Strategy, VmState

# A view that proves no copy runs ends a pending user stop: the stop has taken effect.
STOP_DONE = frozenset({VmState.STOPPED, VmState.RECOVERING})


@dataclass(frozen=True)
class VmRecord:
    """One VM's durable part. ``None`` means "as the inventory declares it"."""

    level: HaLevel | None = None
    no_restart: bool | None = None
    state: VmState | None = None
    host: str | None = None  # where it last ran (or its home while stopped)
    target: str | None = None  # a migration in flight: it may run there too
    stop_pending: bool = False  # a user's stop, accepted and not yet seen carried out


# The columns of a VmRecord a change may set, in a fixed order (stores iterate it).
VM_FIELDS = ("level", "no_restart", "state", "host", "target", "stop_pending")


@dataclass(frozen=True)
class Change:
    """What one command or one view changes: stores write it in one transaction, then
    apply it to memory. ``vm`` holds (vm, field, value) with field one of VM_FIELDS;
    ``config`` (key, stored value); ``maintenance`` (host, in maintenance)."""

    vm: tuple[tuple[str, str, Any], ...] = ()
    config: tuple[tuple[str, Any], ...] = ()
    maintenance: tuple[tuple[str, bool], ...] = ()

    def __post_init__(self) -> None:
        assert all(f in VM_FIELDS for _, f, _ in self.vm), self.vm

    def __bool__(self) -> bool:
        return bool(self.vm or self.config or self.maintenance)

    def __add__(self, other: Change) -> Change:
        return Change(self.vm + other.vm, self.config + other.config, self.maintenance + other.maintenance)


@dataclass
class DurableState:
    """The record itself, as memory holds it (the simulator's store, real mode's cache)."""

    vms: dict[str, VmRecord] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # ZStack key -> value users set
    maintenance: set[str] = field(default_factory=set)

    def apply(self, change: Change) -> None:
        for vm, name, value in change.vm:
            self.vms[vm] = replace(self.vms.get(vm, VmRecord()), **{name: value})
        for key, value in change.config:
            self.config[key] = value
        for host, on in change.maintenance:
            if on:
                self.maintenance.add(host)
            else:
                self.maintenance.discard(host)

    def record(self, vm: str) -> VmRecord:
        return self.vms.get(vm, VmRecord())

    def stop_pending(self, vm: str) -> bool:
        return self.record(vm).stop_pending


UserCommand = UserStopVm | UserStartVm | UserSetHa | UserSetConfig | UserMaintenance


def stored_config_value(value: object) -> object:
    """A config value as a store keeps it (JSON-able; ``HaConfig.with_key`` reads it back)."""
    return value.value if isinstance(value, Strategy) else value


def command_change(cmd: object) -> Change:
    """What an accepted user command changes in the durable record (empty for commands
    that leave nothing to remember, such as detaching a NIC)."""
    if isinstance(cmd, UserStopVm):
        return Change(vm=((cmd.vm, "no_restart", cmd.no_restart), (cmd.vm, "stop_pending", True)))
    if isinstance(cmd, UserStartVm):
        # A start clears "do not restart" and any stop still waiting for its host.
        return Change(vm=((cmd.vm, "no_restart", False), (cmd.vm, "stop_pending", False)))
    if isinstance(cmd, UserSetHa):
        return Change(vm=((cmd.vm, "level", cmd.level),))
    if isinstance(cmd, UserSetConfig):
        return Change(config=((cmd.key, stored_config_value(cmd.value)),))
    if isinstance(cmd, UserMaintenance):
        return Change(maintenance=((cmd.host, cmd.enter),))
    return Change()


def view_change(event: VmViewChanged) -> Change:
    """What a VM's published view changes: a stopped VM keeps its last host as its home."""
    vm = event.vm
    cols: list[tuple[str, str, Any]] = [(vm, "state", event.state), (vm, "target", event.target)]
    if event.host is not None:
        cols.append((vm, "host", event.host))
    if event.state in STOP_DONE:
        cols.append((vm, "stop_pending", False))
    return Change(vm=tuple(cols))


def restore(inventory: Inventory, config: HaConfig, durable: DurableState
            ) -> tuple[Inventory, HaConfig, frozenset[str]]:
    """The inventory, config and maintenance set a restarted manager starts from.

    A VM with no record is as the inventory declares it (a first boot). A VM recorded
    Stopped stays Stopped; any other comes back Unknown on its last host, with a pending
    stop still pending and a migration target still to be ruled out. Records of hosts
    the inventory no longer has are not trusted as a home."""
    hosts = {h.name for h in inventory.hosts}
    vms = []
    for init in inventory.vms:
        rec = durable.vms.get(init.vm.name)
        if rec is None:
            vms.append(init)
            continue
        level = rec.level if rec.level is not None else init.level
        no_restart = rec.no_restart if rec.no_restart is not None else init.no_restart
        host = rec.host if rec.host in hosts else init.host
        known = rec.state if rec.state is not None else init.state
        stopped = known is VmState.STOPPED
        also_on = (rec.target,) if rec.target in hosts and rec.target != host and not stopped else ()
        vms.append(replace(init, level=level, no_restart=no_restart, host=host,
                           state=VmState.STOPPED if stopped else VmState.UNKNOWN,
                           stop_pending=rec.stop_pending and not stopped, also_on=also_on))
    for key, value in sorted(durable.config.items()):
        config = config.with_key(key, value)
    return replace(inventory, vms=tuple(vms)), config, frozenset(durable.maintenance & hosts)
