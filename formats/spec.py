"""A scenario as data: the cluster, the fault timeline and the expectations.

The TOML parser (``formats.scenario``) produces these; the simulator and the fuzzers
consume them. Times are seconds of simulated time, memory is MiB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.config import HaConfig
from actors.states import HaLevel, Network, StorageType, VmState

ALL_NETWORKS: tuple[Network, ...] = (Network.MANAGEMENT, Network.STORAGE, Network.BUSINESS)

# Event actions and the keys each takes besides `at`, `action` (and `target` when it has one).
ACTIONS: dict[str, tuple[bool, frozenset[str]]] = {
    # action: (needs target, optional/required extra keys)
    "power-off": (True, frozenset()),
    "power-on": (True, frozenset()),
    "vm-crash": (True, frozenset()),
    "vm-stop": (True, frozenset({"no_restart"})),
    "vm-start": (True, frozenset()),
    "network-down": (True, frozenset({"network", "direction"})),
    "network-up": (True, frozenset({"network", "direction"})),
    "link-loss": (True, frozenset({"network", "loss", "latency"})),
    "clock-drift": (True, frozenset({"rate"})),
    "libvirt-hang": (True, frozenset()),
    "libvirt-resume": (True, frozenset()),
    "agent-crash": (True, frozenset()),
    "agent-restart": (True, frozenset()),
    "manager-crash": (False, frozenset()),
    "manager-restart": (False, frozenset()),
    "storage-down": (True, frozenset({"pool"})),
    "storage-up": (True, frozenset({"pool"})),
    "maintenance-enter": (True, frozenset()),
    "maintenance-exit": (True, frozenset()),
    "set-ha": (True, frozenset({"level"})),
    "set-config": (False, frozenset({"key", "value"})),
    "detach-network": (True, frozenset({"network"})),
    "delete-network": (False, frozenset({"network", "cluster"})),
}


@dataclass(frozen=True)
class NetworkCondition:
    """How every link and clock of the cluster behaves (a scenario's ``[network]`` table).

    Loss and jitter apply per link crossed, so a message between two hosts (two links)
    is dropped with probability about 2 x loss. Each node's clock runs at a rate drawn
    once per run from [1 - clock_drift, 1 + clock_drift].
    """

    loss: float = 0.0
    latency_s: float = 0.00025
    jitter_s: float = 0.0
    clock_drift: float = 0.0


@dataclass(frozen=True)
class StorageSpec:
    name: str
    type: StorageType
    host: str | None = None  # the one host of a LocalStorage pool


@dataclass(frozen=True)
class HostSpec:
    name: str
    cpu: int
    memory_mib: int
    storage: tuple[str, ...]
    cluster: str = "Cluster-1"
    ip: str = ""
    networks: tuple[Network, ...] = ALL_NETWORKS
    power_controller: bool = True
    watchdog: bool = True  # a hardware watchdog the agent pets (see actors.context.WatchdogPort)


@dataclass(frozen=True)
class VmSpec:
    name: str
    cpu: int
    memory_mib: int
    host: str
    storage: str
    ip: str = ""
    ha: HaLevel = HaLevel.NONE
    state: VmState = VmState.RUNNING  # initial: RUNNING or STOPPED


@dataclass(frozen=True)
class EventSpec:
    """One fault or user action. `args` holds the action's extra keys, already typed:
    network -> str ("management"|"storage"|"business"|"all"), direction -> "in"|"out"|"both",
    pool -> str, no_restart -> bool, level -> HaLevel, key -> str, value -> Any (durations
    in s), loss -> float, latency -> float (s), rate -> float (clock rate, 1.01 = 1% fast)."""

    at_s: float
    action: str
    target: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    line: int = 0  # 1-based index of the [[event]] table, for messages


@dataclass(frozen=True)
class ExpectSpec:
    vm: str
    after_s: float = 0.0
    until_s: float | None = None  # look only at transitions before this time (default: the end)
    states: tuple[VmState, ...] = ()
    within_s: float | None = None
    final_state: VmState | None = None
    host: str | None = None
    host_not: str | None = None
    never: tuple[VmState, ...] = ()
    index: int = 0  # 1-based index of the [[expect]] table, for messages


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    storage: tuple[StorageSpec, ...]
    hosts: tuple[HostSpec, ...]
    vms: tuple[VmSpec, ...]
    events: tuple[EventSpec, ...] = ()
    expects: tuple[ExpectSpec, ...] = ()
    seed: int = 1
    profile: str = "default"
    config: HaConfig = field(default_factory=HaConfig)  # profile with [ha] overrides applied
    ha_overrides: dict[str, Any] = field(default_factory=dict)  # the [ha] table as typed values
    network: NetworkCondition = field(default_factory=NetworkCondition)
    path: str = ""
