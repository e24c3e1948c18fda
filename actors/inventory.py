"""The cluster inventory the HA manager is configured with: hosts, pools, VMs.

This is the management node's static knowledge (what ZStack keeps in its database);
liveness and placement are tracked separately, by the manager, at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from actors.states import HaLevel, Network, VmState

MANAGER = "manager"


def host_addr(host: str) -> str:
    return f"host/{host}"


def vm_addr(vm: str) -> str:
    return f"vm/{vm}"


def pool_addr(pool: str) -> str:
    return f"pool/{pool}"


def bmc_addr(host: str) -> str:
    """The out-of-band power controller (BMC/IPMI) of a host."""
    return f"bmc/{host}"


@dataclass(frozen=True)
class PoolInfo:
    name: str
    shared: bool
    host: str | None = None  # the owner of a local pool


@dataclass(frozen=True)
class HostInfo:
    name: str
    cluster: str
    cpu: int
    memory_mib: int
    pools: tuple[str, ...]
    networks: tuple[Network, ...]
    power_controller: bool
    ip: str = ""


@dataclass(frozen=True)
class VmDef:
    """What it takes to start a VM somewhere."""

    name: str
    cpu: int
    memory_mib: int
    pool: str
    pool_shared: bool
    cluster: str
    ip: str = ""


@dataclass(frozen=True)
class VmInit:
    """A VM as the manager first learns of it."""

    vm: VmDef
    level: HaLevel
    state: VmState  # RUNNING or STOPPED
    host: str  # where it runs, or its home host when stopped
    no_restart: bool = False  # a user stopped it with "do not restart" (restored from a store)
    stop_pending: bool = False  # a user asked to stop it and it was not seen Stopped yet
    also_on: tuple[str, ...] = ()  # other hosts it may run on (a migration in flight), to rule out


@dataclass(frozen=True)
class Inventory:
    hosts: tuple[HostInfo, ...]
    pools: tuple[PoolInfo, ...]
    vms: tuple[VmInit, ...]

    def host(self, name: str) -> HostInfo:
        return self._hosts_by_name[name]

    @cached_property
    def _hosts_by_name(self) -> dict[str, HostInfo]:
        """Built once: a lookup per VM must not scan every host (1,000s of them)."""
        return {h.name: h for h in self.hosts}
