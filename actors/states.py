"""Enumerations shared by every behaviour: what a VM, a host or a pool can be."""

from __future__ import annotations

from enum import StrEnum


class VmState(StrEnum):
    """A VM's state as the HA manager shows it to users (ZStack's VM list)."""

    RUNNING = "Running"  # executing on its host, as far as the manager knows
    STOPPING = "Stopping"  # a stop (user, crash cleanup, maintenance) is under way
    STOPPED = "Stopped"  # provably not executing anywhere
    STARTING = "Starting"  # a start order was sent to a host
    UNKNOWN = "Unknown"  # its host stopped answering: it may or may not be running
    RECOVERING = "Recovering"  # its previous instance is provably gone; HA is placing it
    MIGRATING = "Migrating"  # a live migration to another host is under way


class HaLevel(StrEnum):
    """A VM's HA level."""

    NEVER_STOP = "NeverStop"  # keep it running
    NONE = "None"  # no HA: a stopped VM stays stopped


class Strategy(StrEnum):
    """Global HA strategy (ha.strategy)."""

    PERMISSIVE = "Permissive"  # recover only what is provably gone; never self-fence
    FORCE = "Force"  # hosts that lose shared storage fence their VMs; recover after the deadline


class StorageType(StrEnum):
    """Primary storage types; all but LocalStorage are shared by the hosts of a cluster."""

    LOCAL = "LocalStorage"
    NFS = "NFS"
    SHARED_MOUNT_POINT = "SharedMountPoint"
    CEPH = "Ceph"
    SHARED_BLOCK = "SharedBlock"

    @property
    def shared(self) -> bool:
        return self is not StorageType.LOCAL


class Network(StrEnum):
    """The networks a host may sit on."""

    MANAGEMENT = "management"
    STORAGE = "storage"
    BUSINESS = "business"


class StopReason(StrEnum):
    """Why a guest stopped, as the hypervisor reports it. Only some mean failure."""

    CRASHED = "crashed"  # the guest or its qemu died: a failure
    SHUTDOWN = "shutdown"  # orderly shutdown asked for
    DESTROYED = "destroyed"  # forced off on purpose
    MIGRATED = "migrated"  # moved to another host
    FENCED = "fenced"  # killed by its host's self-fencer

    @property
    def is_failure(self) -> bool:
        return self in (StopReason.CRASHED, StopReason.FENCED)
