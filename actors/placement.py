"""Where a VM may start: capacity accounting and the choice of host.

The manager holds one ``Capacity`` and is the only writer, so two VMs can never be
given the same free slot: placement reserves as it chooses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from actors.inventory import HostInfo, VmDef


class NoPlace(StrEnum):
    """Why no host could take a VM."""

    HOST_DOWN = "host-down"  # its local-storage host is not connected
    MAINTENANCE = "maintenance"  # its local-storage host is in maintenance
    NO_CAPACITY = "no-capacity"  # no eligible host has room


@dataclass
class Capacity:
    """CPU and memory in use per host, which hosts each VM holds a slot on, and the same
    the other way round: a pong's guests are checked against their host's holders, one
    small set, instead of a lookup per guest in a table of every VM."""

    hosts: dict[str, HostInfo]
    used_cpu: dict[str, int] = field(default_factory=dict)
    used_mem: dict[str, int] = field(default_factory=dict)
    slots: dict[str, set[str]] = field(default_factory=dict)  # vm -> hosts
    holders: dict[str, set[str]] = field(default_factory=dict)  # host -> vms, as in slots

    def fits(self, host: str, vm: VmDef) -> bool:
        info = self.hosts[host]
        return (self.used_cpu.get(host, 0) + vm.cpu <= info.cpu
                and self.used_mem.get(host, 0) + vm.memory_mib <= info.memory_mib)

    def reserve(self, vm: VmDef, host: str) -> None:
        held = self.slots.setdefault(vm.name, set())
        if host in held:
            return
        held.add(host)
        self.holders.setdefault(host, set()).add(vm.name)
        self.used_cpu[host] = self.used_cpu.get(host, 0) + vm.cpu
        self.used_mem[host] = self.used_mem.get(host, 0) + vm.memory_mib

    def release(self, vm: VmDef, host: str) -> bool:
        held = self.slots.get(vm.name)
        if not held or host not in held:
            return False
        held.discard(host)
        self.holders[host].discard(vm.name)
        self.used_cpu[host] -= vm.cpu
        self.used_mem[host] -= vm.memory_mib
        return True

    def free_mem(self, host: str) -> int:
        return self.hosts[host].memory_mib - self.used_mem.get(host, 0)


def choose_host(
    vm: VmDef,
    capacity: Capacity,
    candidates: Iterable[str],
    prefer: str | None,
) -> str | None:
    """The preferred host if it fits, else the eligible host with most free memory
    (ties broken by name, so that a seed always gives the same answer)."""
    pool = [h for h in candidates if capacity.fits(h, vm)]
    if not pool:
        return None
    if prefer in pool:
        return prefer
    return min(pool, key=lambda h: (-capacity.free_mem(h), h))
