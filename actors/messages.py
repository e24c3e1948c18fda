"""Every message the behaviours exchange: frozen, picklable dataclasses.

Replies carry the ``req`` of their request so that late answers to abandoned requests
are recognised and ignored; senders put their own address in ``reply_to`` because a
runtime may not tell a behaviour who sent a message.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.config import HaConfig
from actors.inventory import VmDef
from actors.states import HaLevel, Network, StopReason, VmState

# --- manager <-> host agent: liveness -------------------------------------------------


@dataclass(frozen=True)
class Ping:
    seq: int


@dataclass(frozen=True)
class Pong:
    host: str
    seq: int
    running: tuple[str, ...]
    pools_ok: tuple[str, ...]  # shared pools whose heartbeat is fresh on this host
    config_revision: int = 0  # the config the host runs by: a stale one is pushed again
    guests_known: bool = True  # False while the hypervisor does not answer: `running` may lag
    boot: str = ""  # this boot of the host (HypervisorPort.boot_id): orders name it


@dataclass(frozen=True)
class HostBooted:
    host: str
    boot: str = ""  # this boot of the host: the same after an agent restart, new after a reboot


@dataclass(frozen=True)
class ConfigPush:
    config: HaConfig


@dataclass(frozen=True)
class CheckHost:
    """Manager asks a peer to probe ``target`` over each network and read its heartbeats."""

    target: str
    req: int
    networks: tuple[Network, ...]
    pools: tuple[str, ...]


@dataclass(frozen=True)
class CheckHostReply:
    peer: str
    target: str
    req: int
    reachable: tuple[Network, ...]
    heartbeats: tuple[tuple[str, int, int | None], ...]  # (pool, last seq, armed revision)


@dataclass(frozen=True)
class ProbePing:
    reply_to: str
    req: int
    network: Network


@dataclass(frozen=True)
class ProbePong:
    target: str
    req: int
    network: Network


@dataclass(frozen=True)
class PowerQuery:
    host: str
    req: int
    reply_to: str


@dataclass(frozen=True)
class PowerStatus:
    host: str
    req: int
    powered_on: bool


# --- storage heartbeat ------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatWrite:
    host: str
    seq: int
    armed: int | None = None  # config revision the host's self-fencer is armed under; None: off


@dataclass(frozen=True)
class HeartbeatAck:
    pool: str
    seq: int


@dataclass(frozen=True)
class HeartbeatRead:
    host: str
    req: int
    reply_to: str


@dataclass(frozen=True)
class HeartbeatValue:
    pool: str
    host: str
    req: int
    seq: int  # -1 when the host never wrote here
    armed: int | None = None


# --- VM actor <-> host agent: guest operations --------------------------------------------


@dataclass(frozen=True)
class StartVm:
    vm: VmDef
    req: int
    reply_to: str
    cause: str  # "ha" or "user": recorded by the runtime with the run
    # The boot of the host this order is for, as the manager last heard it (None: unknown).
    # A host that rebooted since refuses it: the order is resent until answered, and a
    # resend that reaches the host after its reboot may come after the manager judged the
    # earlier boot's guests gone and the VM was started elsewhere.
    for_boot: str | None = None


@dataclass(frozen=True)
class StopVm:
    vm: str
    req: int
    reply_to: str
    force: bool


@dataclass(frozen=True)
class MigrateVm:
    vm: str
    dest: str
    req: int
    reply_to: str


@dataclass(frozen=True)
class QueryVm:
    vm: str
    req: int
    reply_to: str


@dataclass(frozen=True)
class OpReply:
    """Answer to StartVm, StopVm, MigrateVm or QueryVm. For a query, ``ok`` means the
    guest is running there."""

    host: str
    vm: str
    req: int
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class GuestFailed:
    """A host tells a VM actor that its guest died without being asked to. Repeated
    until acknowledged with FailureAck: a lost one would leave a dead VM shown Running."""

    host: str
    vm: str
    reason: StopReason
    seq: int = 0  # the agent's number for this failure: a repeat carries the same one
    # The request id of the last start order this agent carried out for the VM before it
    # died (None: none): a VM actor that is starting it again tells a report about the run
    # it is starting from one about an earlier run, still being repeated.
    started_by: int | None = None


@dataclass(frozen=True)
class FailureAck:
    vm: str
    seq: int = 0


@dataclass(frozen=True)
class Verify:
    """Manager -> VM actor: the last ping of ``host`` did not list this guest although
    the VM holds capacity there: if you think it runs there, ask."""

    host: str


# --- hypervisor port -> host agent --------------------------------------------------------


@dataclass(frozen=True)
class HvDone:
    token: int
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class GuestStopped:
    vm: str
    reason: StopReason


# --- VM actor <-> manager -------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceRequest:
    vm: str
    req: int
    prefer: str | None
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlaceReply:
    vm: str
    req: int
    host: str | None
    reason: str = ""  # why no host: see actors.placement.NoPlace
    boot: str | None = None  # the host's boot, as the manager last heard it


@dataclass(frozen=True)
class Release:
    """The VM no longer uses ``host`` (stopped there, or migrated away)."""

    vm: str
    host: str


@dataclass(frozen=True)
class Claim:
    """The VM was found running on ``host``: account for it there."""

    vm: str
    host: str


@dataclass(frozen=True)
class VerdictRequest:
    vm: str
    host: str
    req: int


@dataclass(frozen=True)
class Verdict:
    """The manager's judgement of a host, as it stands."""

    host: str
    req: int
    connected: bool
    gone_pools: tuple[str, ...]  # pools whose guests on this host are provably not running
    all_gone: bool  # powered off: no guest of this host is running


@dataclass(frozen=True)
class HostEvent:
    """Manager -> VM actors whose home is ``host``: its verdict changed."""

    host: str
    connected: bool
    gone_pools: tuple[str, ...]
    all_gone: bool


@dataclass(frozen=True)
class Evacuate:
    """The VM's host enters maintenance: migrate away (shared) or stop (local). The VM
    keeps the request until it has left the host, however long the host is away;
    ``cancel`` (the host left maintenance first) withdraws it."""

    host: str
    cancel: bool = False


@dataclass(frozen=True)
class Kick:
    """Something changed that may let a waiting VM start: try again now."""


@dataclass(frozen=True)
class Scan:
    """Periodic scan (ha.neverStopVm.scan.interval) for stopped NeverStop VMs."""


@dataclass(frozen=True)
class Scannable:
    """VM actor -> manager: whether it is now Stopped or Unknown, the only states in
    which a scan can make it act. The scan goes to those VMs only."""

    vm: str
    scannable: bool


@dataclass(frozen=True)
class VmViewChanged:
    """Published by VM actors: the state users see."""

    vm: str
    state: VmState
    host: str | None
    target: str | None = None  # while Migrating: where to; a store keeps it (the VM may be there)


# --- users -> manager (API) ------------------------------------------------------------------


@dataclass(frozen=True)
class UserStopVm:
    vm: str
    no_restart: bool = False


@dataclass(frozen=True)
class UserStartVm:
    vm: str


@dataclass(frozen=True)
class UserSetHa:
    vm: str
    level: HaLevel


@dataclass(frozen=True)
class UserSetConfig:
    key: str
    value: object


@dataclass(frozen=True)
class UserMaintenance:
    host: str
    enter: bool


@dataclass(frozen=True)
class UserDetachNic:
    vm: str
    network: str


@dataclass(frozen=True)
class UserDeleteNetwork:
    cluster: str
    network: str


@dataclass(frozen=True)
class HostViewChanged:
    """Published by the manager: its judgement of a host changed."""

    host: str
    status: str  # "Connected", "Disconnected", "PoweredOff", "Fenced(pools)"
