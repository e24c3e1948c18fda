"""The Thespian shell: hosts behaviours from ``actors/`` unchanged, one node per shell.

A node is the management node or one compute host; its shell is one Thespian actor (one
process under ``multiprocTCPBase``) hosting the behaviours that live there: the manager
and the VM actors it spawns, or a host agent. Messages between behaviours of one shell
are delivered in the shell, one at a time, run to completion; messages to another node
travel as an ``Envelope`` to that node's shell. (One process per VM actor, Thespian's
default, would cost a Python process per VM on the management node.)

The context a behaviour sees (``actors.context.Context``):
- ``now``: the monotonic clock of this machine;
- ``set_timer``: a heap in the shell, woken by Thespian's ``wakeupAfter`` for the earliest
  deadline; each timer carries the behaviour's incarnation: a timer set before a
  behaviour was replaced never reaches its successor;
- ``send``: local delivery, a device of this node (``pool/*`` heartbeat files on hosts,
  ``bmc/*`` power controllers on the management node) or an ``Envelope`` to the shell of
  the address's node (``host/X`` on X, everything else on the management node). Real
  mode has a single network, so the network argument is ignored; delivery is not
  guaranteed (a message to a node not known yet is dropped);
- ``spawn``: a child behaviour in the same shell; placement of host-bound behaviours on
  a named host is the management shell's job (``real.management``);
- ``publish``: recorded by the management shell (status, store); other nodes forward it;
- ``log``: one line on the process's standard error (journald under systemd).

Threads (libvirt's event loop, heartbeat writes, power queries) reach behaviours through
``real.bridge.Mailbox``: the shell returns ``ThespianWatch([fd])`` after each message.
"""

from __future__ import annotations

import heapq
import os
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from random import Random
from typing import Any

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from actors.context import Behaviour, HypervisorPort, WatchdogPort
from actors.states import Network
from real.bridge import Mailbox

MGMT = "mgmt"  # the management node's name
LOCAL_BATCH_MAX = 10_000  # local deliveries per Thespian message before yielding
TIMER_SLACK_S = 0.005  # timers this close together share one wake-up


@dataclass(frozen=True)
class Envelope:
    """A behaviour's message between shells."""

    to: str
    msg: object
    forwarded: bool = False


@dataclass(frozen=True)
class Batch:
    """Envelopes to one node from one batch of local deliveries, in one frame: 25 VM
    actors asking one host at once cost one transmit, not 25."""

    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True)
class Boot:
    """Make a shell the shell of ``node`` and start ``cells`` (address, behaviour) in it."""

    node: str
    cells: tuple[tuple[str, Behaviour], ...] = ()
    nodes: dict[str, Any] = field(default_factory=dict)  # node -> shell ActorAddress
    routes: dict[str, str] = field(default_factory=dict)  # address -> node, beyond the defaults
    seed: int | None = None  # None: fresh randomness (a restarted actor is a new incarnation)


@dataclass(frozen=True)
class Booted:
    node: str


@dataclass(frozen=True)
class Nodes:
    """The shells of the other nodes changed."""

    nodes: dict[str, Any]
    routes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    """A published domain event, forwarded to the management node."""

    node: str
    address: str
    event: object
    t: float


@dataclass(frozen=True)
class _TimerTick:
    """Wake-up payload: behaviour timers may be due (``NodeShell.timers``)."""

    at: float  # the deadline it was asked for (monotonic seconds)


@dataclass(frozen=True)
class _Continue:
    """The shell has more local deliveries: keep going after other input."""


def node_of(address: str) -> str:
    """The node an address lives on unless a route says otherwise."""
    if address.startswith("host/"):
        return address[len("host/"):]
    return MGMT


class Cell:
    __slots__ = ("address", "behaviour", "ctx", "incarnation", "hypervisor", "watchdog", "alive")

    def __init__(self, address: str, behaviour: Behaviour, incarnation: int,
                 hypervisor: HypervisorPort | None, watchdog: WatchdogPort | None = None) -> None:
        self.address = address
        self.behaviour = behaviour
        self.incarnation = incarnation
        self.hypervisor = hypervisor
        self.watchdog = watchdog
        self.alive = True
        self.ctx: ShellContext


class ShellContext:
    """``actors.context.Context`` for one behaviour hosted by a shell."""

    __slots__ = ("_shell", "_cell", "_random")

    def __init__(self, shell: NodeShell, cell: Cell, rng: Random) -> None:
        self._shell = shell
        self._cell = cell
        self._random = rng

    @property
    def address(self) -> str:
        return self._cell.address

    @property
    def random(self) -> Random:
        return self._random

    @property
    def hypervisor(self) -> HypervisorPort | None:
        return self._cell.hypervisor

    @property
    def watchdog(self) -> WatchdogPort | None:
        return self._cell.watchdog

    def now(self) -> float:
        return time.monotonic()

    def send(self, to: str, msg: object, network: Network = Network.MANAGEMENT) -> None:
        if self._cell.alive:
            self._shell.route(to, msg)

    def set_timer(self, delay_s: float, msg: object) -> None:
        if self._cell.alive:
            self._shell.timer(self._cell, delay_s, msg)

    def spawn(self, address: str, behaviour: Behaviour) -> None:
        self._shell.spawn(address, behaviour)

    def publish(self, event: object) -> None:
        self._shell.publish(self._cell.address, event)

    def log(self, text: str) -> None:
        self._shell.log(f"{self._cell.address}: {text}")


class NodeShell(Actor):  # type: ignore[misc]
    """Hosts the behaviours of one node. Subclasses add the node's devices."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
        return all(capabilities.get(k) == v for k, v in requirements.items())

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.node = ""
        self.cells: dict[str, Cell] = {}
        self.incarnations: dict[str, int] = {}
        self.local: deque[tuple[Cell, int, object]] = deque()
        self.nodes: dict[str, Any] = {}
        self.routes: dict[str, str] = {}
        self.mailbox: Mailbox | None = None
        self.seed: int | None = None
        self.continuing = False
        self.exiting = False
        self.booter: Any = None  # who sent the Boot (once one came)
        self.booted = False  # Booted was sent
        # (deadline, seq, cell, incarnation, msg): a timer set before a behaviour was
        # replaced carries the old incarnation and never reaches its successor.
        self.timers: list[tuple[float, int, Cell, int, object]] = []
        self.timer_seq = 0
        self.outbox: dict[str, tuple[Any, list[Envelope]]] = {}  # node -> (shell address, envelopes)
        self.ticks: set[float] = set()  # deadlines of the Thespian wake-ups asked for, not yet come

    # -- Thespian entry ----------------------------------------------------------------------

    def receiveMessage(self, msg: Any, sender: Any) -> Any:
        if isinstance(msg, ActorExitRequest):
            self.exiting = True
            self.on_exit()
            return None
        try:
            self.dispatch(msg, sender)
            self.run_local()
        except Exception:
            self.log(f"shell error on {type(msg).__name__}:\n{traceback.format_exc()}")
        try:
            self.flush_outbox()
            self.after_messages()
        except Exception:
            self.log(f"shell error after {type(msg).__name__}:\n{traceback.format_exc()}")
        if self.mailbox is not None and not self.exiting:
            return ThespianWatch([self.mailbox.fd])
        return None

    def dispatch(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, Envelope):
            self.deliver(msg.to, msg.msg, msg.forwarded)
        elif isinstance(msg, Batch):
            for envelope in msg.envelopes:
                self.deliver(envelope.to, envelope.msg, envelope.forwarded)
        elif isinstance(msg, WakeupMessage):
            payload = msg.payload
            if isinstance(payload, _TimerTick):
                self._due_timers(payload)
            else:
                self.on_wakeup(payload)
        elif isinstance(msg, WatchMessage):
            if self.mailbox is not None:
                for to, m in self.mailbox.drain():
                    self.route(to, m)
        elif isinstance(msg, _Continue):
            self.continuing = False
        elif isinstance(msg, Boot):
            if self.booter is not None:  # a repeat: the manager sends it again until it hears Booted
                if self.booted:
                    self.send(sender, Booted(self.node))
                return
            self.booter = sender
            if self.boot(msg):
                self.booted = True
                self.send(sender, Booted(self.node))
        elif isinstance(msg, Nodes):
            self.nodes.update(msg.nodes)
            self.routes.update(msg.routes)
        elif isinstance(msg, Published):
            self.on_published(msg)
        else:
            self.on_other(msg, sender)

    # -- hooks for subclasses ----------------------------------------------------------------

    def boot(self, msg: Boot) -> bool:
        """Start the node's behaviours; False when ``Booted`` is to be sent later."""
        self.node = msg.node
        self.nodes.update(msg.nodes)
        self.routes.update(msg.routes)
        self.seed = msg.seed
        for address, behaviour in msg.cells:
            self.spawn(address, behaviour)
        return True

    def device(self, to: str, msg: object) -> bool:
        """Handle a message for a device of this node (pool, BMC); True if handled."""
        return False

    def on_published(self, event: Published) -> None:
        if self.node != MGMT and self.nodes.get(MGMT) is not None:
            self.send(self.nodes[MGMT], event)

    def on_wakeup(self, payload: Any) -> None:
        pass

    def after_messages(self) -> None:
        """After each Thespian message and the local deliveries it caused: a batch point
        (the management shell writes what the batch changed in one transaction)."""

    def on_other(self, msg: Any, sender: Any) -> None:
        pass

    def on_exit(self) -> None:
        for cell in self.cells.values():
            cell.alive = False
        if self.mailbox is not None:
            self.mailbox.close()
            self.mailbox = None

    # -- behaviours ------------------------------------------------------------------------------

    def spawn(self, address: str, behaviour: Behaviour, hypervisor: HypervisorPort | None = None,
              watchdog: WatchdogPort | None = None) -> Cell:
        """Start ``behaviour`` at ``address`` (replacing a previous incarnation) with this
        node's devices: a compute host's hypervisor and watchdog go to its agent only."""
        old = self.cells.get(address)
        if old is not None:
            old.alive = False
        incarnation = self.incarnations.get(address, -1) + 1
        self.incarnations[address] = incarnation
        cell = Cell(address, behaviour, incarnation, hypervisor, watchdog)
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "big")
        cell.ctx = ShellContext(self, cell, Random(f"{seed}:{address}#{incarnation}"))
        self.cells[address] = cell
        if self.node != MGMT and self.nodes.get(MGMT) is not None:
            self.send(self.nodes[MGMT], Nodes({}, {address: self.node}))
        try:
            behaviour.on_start(cell.ctx)
        except Exception:
            self.log(f"{address}: on_start failed:\n{traceback.format_exc()}")
        return cell

    def route(self, to: str, msg: object) -> None:
        """Where a behaviour's message goes: a local behaviour, a device or another node."""
        cell = self.cells.get(to)
        if cell is not None:
            self.local.append((cell, cell.incarnation, msg))
            return
        if self.device(to, msg):
            return
        node = self.routes.get(to) or node_of(to)
        if node == self.node:
            return  # nobody here by that address (yet): dropped, like a message to a dead host
        addr = self.nodes.get(node)
        if addr is not None:
            self.outbox.setdefault(node, (addr, []))[1].append(Envelope(to, msg))

    def flush_outbox(self) -> None:
        """Send what this batch routed to other nodes: one frame per node, in order."""
        outbox, self.outbox = self.outbox, {}
        for addr, envelopes in outbox.values():
            self.send(addr, envelopes[0] if len(envelopes) == 1 else Batch(tuple(envelopes)))

    def deliver(self, to: str, msg: object, forwarded: bool) -> None:
        """An envelope arrived: deliver it here, or forward it once if it lives elsewhere."""
        cell = self.cells.get(to)
        if cell is not None:
            self.local.append((cell, cell.incarnation, msg))
        elif self.device(to, msg):
            pass
        elif not forwarded:
            node = self.routes.get(to) or node_of(to)
            addr = self.nodes.get(node)
            if node != self.node and addr is not None:
                self.send(addr, Envelope(to, msg, forwarded=True))

    def timer(self, cell: Cell, delay_s: float, msg: object) -> None:
        """Behaviour timers live in this shell's heap; Thespian is asked for a wake-up only
        when the earliest deadline moves earlier. (Thespian keeps its wake-ups in a sorted
        list: one per behaviour timer cost O(n) per timer, most of a 400-VM manager's CPU.)"""
        if delay_s <= 0:
            self.local.append((cell, cell.incarnation, msg))
            return
        deadline = time.monotonic() + delay_s
        self.timer_seq += 1
        heapq.heappush(self.timers, (deadline, self.timer_seq, cell, cell.incarnation, msg))
        self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        """Ask Thespian for a wake-up at ``deadline`` unless one comes before it anyway."""
        if deadline < min(self.ticks, default=float("inf")) - TIMER_SLACK_S:
            self.ticks.add(deadline)
            delay_s = max(0.0, deadline - time.monotonic())
            self.wakeupAfter(timedelta(seconds=delay_s), payload=_TimerTick(deadline))

    def _due_timers(self, tick: _TimerTick) -> None:
        """A wake-up: queue every timer that is due, and make sure the next one has one."""
        self.ticks.discard(tick.at)
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now + TIMER_SLACK_S:
            _, _, cell, incarnation, msg = heapq.heappop(timers)
            if cell.alive and cell.incarnation == incarnation:
                self.local.append((cell, incarnation, msg))
        if timers:
            self._arm(timers[0][0])

    def run_local(self) -> None:
        """Deliver queued local messages one at a time, each run to completion."""
        n = 0
        while self.local and not self.exiting:
            if n >= LOCAL_BATCH_MAX:
                if not self.continuing:
                    self.continuing = True
                    self.send(self.myAddress, _Continue())
                return
            cell, incarnation, msg = self.local.popleft()
            n += 1
            if not cell.alive or cell.incarnation != incarnation:
                continue
            try:
                cell.behaviour.receive(cell.ctx, msg)
            except Exception:
                self.log(f"{cell.address}: error on {type(msg).__name__}:\n{traceback.format_exc()}")

    def publish(self, address: str, event: object) -> None:
        self.on_published(Published(self.node, address, event, time.time()))

    def log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        sys.stderr.write(f"{stamp} neverstop[{self.node or '?'}] {text}\n")
        sys.stderr.flush()

    def ensure_mailbox(self) -> Mailbox:
        if self.mailbox is None:
            self.mailbox = Mailbox()
        return self.mailbox


ActorAddressType = ActorAddress  # re-exported for type hints in the other real modules
