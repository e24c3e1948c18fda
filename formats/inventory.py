"""The behaviours' inventory from a parsed cluster or scenario file: what the HA manager
is given at start, by the simulator and by the real manager alike."""

from __future__ import annotations

from actors.inventory import HostInfo, Inventory, PoolInfo, VmDef, VmInit
from formats.spec import Scenario


def build_inventory(scenario: Scenario) -> Inventory:
    pools = tuple(PoolInfo(s.name, s.type.shared, s.host) for s in scenario.storage)
    shared = {p.name: p.shared for p in pools}
    hosts = tuple(
        HostInfo(h.name, h.cluster, h.cpu, h.memory_mib, h.storage, h.networks, h.power_controller, h.ip)
        for h in scenario.hosts
    )
    cluster = {h.name: h.cluster for h in scenario.hosts}
    vms = tuple(
        VmInit(VmDef(v.name, v.cpu, v.memory_mib, v.storage, shared[v.storage], cluster[v.host], v.ip),
               v.ha, v.state, v.host)
        for v in scenario.vms
    )
    return Inventory(hosts, pools, vms)
