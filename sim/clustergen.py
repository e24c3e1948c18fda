"""Synthetic datacenters for benchmarks and fuzzing: hosts, pools, VMs and a fault stream.

``generate_cluster`` builds a valid cluster of any size from a seeded generator: each
cluster has one shared NFS pool, every host has its own LocalStorage pool, and VMs are
placed so that no host uses more than ``fill`` of its CPU or memory (the rest is room for
failover). ``to_scenario`` wraps it into a runnable ``Scenario`` and ``generate_faults``
draws a stream of power losses, guest crashes and partitions, all healed before the end.

Names are ``host-<n>``, ``vm-<n>``, ``Cluster-<n>``, ``nfs-<cluster>`` and
``local-<host>``, zero-padded to the width of the largest number, so that sorting them
by name sorts them by number. The same generator state always gives the same cluster.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from actors.config import DEFAULT, PROFILES, HaConfig
from actors.states import HaLevel, StorageType
from formats.spec import ALL_NETWORKS, EventSpec, HostSpec, Scenario, StorageSpec, VmSpec

# Host shapes (vCPU, MiB) and VM shapes (vCPU, MiB, weight): a mix of common instance sizes.
HOST_SHAPES: tuple[tuple[int, int], ...] = (
    (48, 256 * 1024),
    (64, 384 * 1024),
    (96, 512 * 1024),
    (128, 768 * 1024),
)
VM_SHAPES: tuple[tuple[int, int, int], ...] = (
    (1, 1024, 4),
    (1, 2048, 3),
    (2, 2048, 3),
    (2, 4096, 3),
    (4, 8192, 2),
    (8, 16384, 1),
)
SMALLEST_VM = (1, 512)

PARTITION_NETWORKS = ("management", "all")  # a cut uplink, or a host cut off entirely
OUTAGE_S = (120.0, 600.0)  # how long a power loss or a partition lasts
HEAL_MARGIN_S = 0.05  # share of the run left at the end with every fault healed


@dataclass(frozen=True)
class Cluster:
    storage: tuple[StorageSpec, ...]
    hosts: tuple[HostSpec, ...]
    vms: tuple[VmSpec, ...]


def _names(prefix: str, count: int) -> list[str]:
    width = len(str(count))
    return [f"{prefix}-{i:0{width}d}" for i in range(1, count + 1)]


def _ip(base: int, index: int) -> str:
    """A unique IPv4 address in the /8 ``base`` for ``index`` (up to 16 million)."""
    return f"{base}.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


def generate_cluster(rng: random.Random, hosts: int, clusters: int = 1, vms_per_host: float = 4.0,
                     neverstop_share: float = 0.5, local_share: float = 0.5, fill: float = 0.6,
                     power_controller_share: float = 1.0, watchdog_share: float = 1.0) -> Cluster:
    """A datacenter of ``hosts`` hosts in ``clusters`` clusters with about ``vms_per_host``
    running VMs per host. Raises ValueError when the VMs cannot fit within ``fill``."""
    if hosts < 1 or clusters < 1 or clusters > hosts:
        raise ValueError(f"need 1 <= clusters <= hosts, got {clusters} clusters, {hosts} hosts")
    if not 0.0 < fill <= 1.0 or vms_per_host < 0:
        raise ValueError(f"fill must be in (0, 1] and vms_per_host >= 0, got {fill}, {vms_per_host}")
    cluster_names = _names("Cluster", clusters)
    nfs = [f"nfs-{i:0{len(str(clusters))}d}" for i in range(1, clusters + 1)]
    host_names = _names("host", hosts)
    storage: list[StorageSpec] = [StorageSpec(name, StorageType.NFS) for name in nfs]
    host_specs: list[HostSpec] = []
    for i, name in enumerate(host_names):
        c = i * clusters // hosts  # contiguous, balanced blocks of hosts per cluster
        cpu, mem = rng.choice(HOST_SHAPES)
        local = f"local-{name}"
        storage.append(StorageSpec(local, StorageType.LOCAL, name))
        host_specs.append(HostSpec(
            name=name, cpu=cpu, memory_mib=mem, storage=(nfs[c], local), cluster=cluster_names[c],
            ip=_ip(10, i + 1), networks=ALL_NETWORKS,
            power_controller=rng.random() < power_controller_share,
            # Drawn only when some hosts lack one, so that a share of 1 keeps every
            # generated datacenter of earlier versions the same.
            watchdog=watchdog_share >= 1.0 or rng.random() < watchdog_share,
        ))
    budget_cpu = [int(h.cpu * fill) for h in host_specs]
    budget_mem = [int(h.memory_mib * fill) for h in host_specs]
    shapes = [(c, m) for c, m, _ in VM_SHAPES]
    weights = [w for _, _, w in VM_SHAPES]
    count = round(hosts * vms_per_host)
    vm_names = _names("vm", count)
    vms: list[VmSpec] = []
    for j, name in enumerate(vm_names):
        h = _host_with_room(j * hosts // max(count, 1), budget_cpu, budget_mem)
        if h is None:
            raise ValueError(f"{count} VMs do not fit in {hosts} hosts at fill {fill}")
        cpu, mem = rng.choices(shapes, weights)[0]
        if cpu > budget_cpu[h] or mem > budget_mem[h]:
            fitting = [(c, m) for c, m in shapes if c <= budget_cpu[h] and m <= budget_mem[h]]
            cpu, mem = rng.choice(fitting) if fitting else SMALLEST_VM
        budget_cpu[h] -= cpu
        budget_mem[h] -= mem
        host = host_specs[h]
        local = rng.random() < local_share
        ha = HaLevel.NEVER_STOP if rng.random() < neverstop_share else HaLevel.NONE
        vms.append(VmSpec(
            name=name, cpu=cpu, memory_mib=mem, host=host.name,
            storage=host.storage[1] if local else host.storage[0],
            ip=_ip(172, j + 1), ha=ha,
        ))
    return Cluster(tuple(storage), tuple(host_specs), tuple(vms))


def _host_with_room(start: int, budget_cpu: list[int], budget_mem: list[int]) -> int | None:
    """The first host from ``start`` on (wrapping) with room for the smallest VM."""
    n = len(budget_cpu)
    for k in range(n):
        h = (start + k) % n
        if budget_cpu[h] >= SMALLEST_VM[0] and budget_mem[h] >= SMALLEST_VM[1]:
            return h
    return None


def to_scenario(cluster: Cluster, name: str, duration_s: float, events: Sequence[EventSpec] = (),
                config: HaConfig = DEFAULT, seed: int = 1, profile: str = "default") -> Scenario:
    """A runnable scenario without expectations (the checkers still judge it). When
    ``config`` is left at the default, the named ``profile``'s settings are used."""
    if config is DEFAULT:
        config = PROFILES[profile]
    ordered = sorted(events, key=lambda e: e.at_s)
    return Scenario(
        name=name,
        description=f"generated: {len(cluster.hosts)} hosts, {len(cluster.vms)} VMs",
        duration_s=duration_s,
        storage=cluster.storage,
        hosts=cluster.hosts,
        vms=cluster.vms,
        events=tuple(replace(e, line=i + 1) for i, e in enumerate(ordered)),
        seed=seed,
        profile=profile,
        config=config,
    )


def generate_faults(rng: random.Random, cluster: Cluster, duration_s: float,
                    host_power_loss_share: float, vm_crash_share: float,
                    partitions: int) -> list[EventSpec]:
    """A fault stream over ``duration_s``: ``host_power_loss_share`` of the hosts lose power
    and come back, ``vm_crash_share`` of the VMs crash once, and ``partitions`` hosts are cut
    off a network for a while. Each host suffers at most one fault; every power loss and
    partition is healed before the last ``HEAL_MARGIN_S`` of the run. Sorted by time."""
    end = duration_s * (1.0 - HEAL_MARGIN_S)
    host_names = [h.name for h in cluster.hosts]
    n_power = round(len(host_names) * host_power_loss_share)
    n_crash = round(len(cluster.vms) * vm_crash_share)
    if n_power + partitions > len(host_names):
        raise ValueError(f"{n_power} power losses and {partitions} partitions need distinct hosts, "
                         f"only {len(host_names)} exist")
    victims = rng.sample(host_names, n_power + partitions)
    events: list[EventSpec] = []
    for i, host in enumerate(victims):
        down, up = _outage(rng, end)
        if i < n_power:
            events.append(EventSpec(down, "power-off", host))
            events.append(EventSpec(up, "power-on", host))
        else:
            args = {"network": rng.choice(PARTITION_NETWORKS)}
            events.append(EventSpec(down, "network-down", host, dict(args)))
            events.append(EventSpec(up, "network-up", host, dict(args)))
    for vm in rng.sample([v.name for v in cluster.vms], n_crash):
        events.append(EventSpec(round(rng.uniform(0.0, end), 3), "vm-crash", vm))
    events.sort(key=lambda e: (e.at_s, e.action, e.target or ""))
    return events


def _outage(rng: random.Random, end: float) -> tuple[float, float]:
    """When a fault starts and when it heals, both before ``end``."""
    length = min(rng.uniform(*OUTAGE_S), end / 2)
    down = rng.uniform(0.0, end - length)
    return round(down, 3), round(down + length, 3)
