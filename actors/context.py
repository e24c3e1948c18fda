"""The seam between a behaviour and the world it runs in.

A behaviour never calls a clock, a socket or a hypervisor library itself: it is handed a
``Context``. The simulator implements it on simpy virtual time, the real runtime on
Thespian and libvirt. This is the one place where side effects cross into ``actors/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Protocol

from actors.inventory import VmDef
from actors.states import Network


class HypervisorPort(Protocol):
    """A host's hypervisor. Calls return at once; results come back as messages.

    ``start``/``stop``/``migrate`` answer with ``actors.messages.HvDone`` carrying the
    same ``token``; guests that stop on their own produce ``actors.messages.GuestStopped``.
    """

    def start(self, vm: VmDef, token: int, cause: str) -> None: ...

    def stop(self, vm: str, token: int, force: bool) -> None: ...

    def migrate(self, vm: str, dest_host: str, token: int) -> None: ...

    def fence(self, pool: str) -> None:
        """Self-fencing: kill every guest whose disk is on ``pool`` now, without going
        through a daemon that may hang (kill the qemu processes), and make sure that no
        start or incoming migration on ``pool`` ordered before this call completes later
        (restart the daemon if it holds such a call). Guests killed here report
        GuestStopped(FENCED)."""
        ...

    def running(self) -> Mapping[str, str]:
        """Guests executing now: VM name -> storage pool name (while the daemon does not
        answer, the last list it gave: it may lag)."""
        ...

    def answering(self) -> bool:
        """Whether the hypervisor daemon answers (keepalive): while it does not, what it
        last said about guests proves nothing either way."""
        ...

    def boot_id(self) -> str:
        """This boot of the host: the same across restarts of the agent and of the daemon
        (guests and starts in progress live on), different once the host restarted (they
        are all gone)."""
        ...


class WatchdogPort(Protocol):
    """A host's dead-man switch, outside the agent: once armed, it resets the host (every
    guest dies) unless petted again within the timeout.

    It keeps the self-fencer's promise when the agent itself dies or hangs: a fencer that
    lives in the agent's process dies with it, while the host and its guests run on and
    the manager, seeing the heartbeat stop, takes the guests for fenced. The agent pets
    it on every heartbeat tick while self-fencing is on.
    """

    def pet(self, timeout_s: float) -> bool:
        """Arm, or re-arm: reset the host unless petted again within ``timeout_s``.
        Whether a watchdog is known to be watching: only then may the agent claim that its
        guests are covered if it dies (a daemon that was never started covers nothing)."""
        ...

    def disarm(self) -> None:
        """Stand down: self-fencing is off, nothing will pet any more."""
        ...


class Context(Protocol):
    """What a behaviour may do. One context per actor."""

    @property
    def address(self) -> str:
        """This actor's address (``manager``, ``host/NAME``, ``vm/NAME``, ``pool/NAME``)."""
        ...

    @property
    def random(self) -> Random:
        """A generator seeded for this actor: the only source of randomness allowed."""
        ...

    @property
    def hypervisor(self) -> HypervisorPort | None:
        """The local hypervisor, for actors that live on a compute host; else None."""
        ...

    @property
    def watchdog(self) -> WatchdogPort | None:
        """The host's watchdog, for the agent of a compute host; None where there is none
        (a host without one never claims that its guests are self-fenced)."""
        ...

    def now(self) -> float:
        """Seconds on this actor's own clock (it may drift from other nodes' clocks)."""
        ...

    def send(self, to: str, msg: object, network: Network = Network.MANAGEMENT) -> None:
        """Send without waiting; delivery is not guaranteed (links fail, hosts die)."""
        ...

    def set_timer(self, delay_s: float, msg: object) -> None:
        """Deliver ``msg`` to this actor after ``delay_s``. Timers cannot be cancelled:
        carry an epoch or request id in ``msg`` and ignore stale ones (as on Thespian)."""
        ...

    def spawn(self, address: str, behaviour: Behaviour) -> None:
        """Create a child actor on this actor's node."""
        ...

    def publish(self, event: object) -> None:
        """Hand a domain event (a VM view change, a host verdict) to the runtime, which
        records it (trace, status table, store). It is not a message to any actor."""
        ...

    def log(self, text: str) -> None:
        """A line for the operator's log."""
        ...


class Behaviour:
    """Base of every actor behaviour: react to one message at a time."""

    def on_start(self, ctx: Context) -> None:
        """Called once when the actor is created (and again after its node restarts)."""

    def receive(self, ctx: Context, msg: object) -> None:
        """Handle one message. Unknown messages are ignored by convention."""
