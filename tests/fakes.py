"""A hand-driven ``Context`` for unit tests of the behaviours: no simulator, no network.

The test is the world: it reads what a behaviour sent (``sent``, ``take``), hands it
replies by calling ``receive`` itself, and moves time with ``advance``, which delivers
due timers in order by calling ``actor.receive(ctx, msg)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from random import Random
from typing import TypeVar

from actors.context import Behaviour
from actors.inventory import VmDef
from actors.messages import Scannable, VmViewChanged
from actors.states import Network, VmState

T = TypeVar("T")


@dataclass
class FakeHypervisor:
    """Records the calls of a host agent; ``guests`` (vm -> pool) is what ``running()`` says.
    Nothing changes by itself: the test edits ``guests`` and delivers ``HvDone`` and
    ``GuestStopped`` (a fenced guest's included) when it wants them."""

    guests: dict[str, str] = field(default_factory=dict)
    starts: list[tuple[VmDef, int, str]] = field(default_factory=list)  # (vm, token, cause)
    stops: list[tuple[str, int, bool]] = field(default_factory=list)  # (vm, token, force)
    migrations: list[tuple[str, str, int]] = field(default_factory=list)  # (vm, dest, token)
    fences: list[str] = field(default_factory=list)  # the pool of each fence() call
    answers: bool = True  # False: the daemon hangs (answering() is False)
    boot: str = "boot-1"  # what boot_id() says: change it to model a reboot

    def start(self, vm: VmDef, token: int, cause: str) -> None:
        self.starts.append((vm, token, cause))

    def stop(self, vm: str, token: int, force: bool) -> None:
        self.stops.append((vm, token, force))

    def migrate(self, vm: str, dest_host: str, token: int) -> None:
        self.migrations.append((vm, dest_host, token))

    def fence(self, pool: str) -> None:
        self.fences.append(pool)

    def running(self) -> Mapping[str, str]:
        return dict(self.guests)

    def answering(self) -> bool:
        return self.answers

    def boot_id(self) -> str:
        return self.boot



@dataclass
class FakeWatchdog:
    """Records pets (their timeouts) and disarms; it never fires by itself. ``watching``
    is what a pet answers: whether anything would act on a missed deadline."""

    pets: list[float] = field(default_factory=list)
    disarms: int = 0
    watching: bool = True

    def pet(self, timeout_s: float) -> bool:
        self.pets.append(timeout_s)
        return self.watching

    def disarm(self) -> None:
        self.disarms += 1


@dataclass
class FakeContext:
    """Implements ``actors.context.Context``; every effect is recorded for assertions."""

    address: str = "test"
    clock: float = 0.0
    hypervisor: FakeHypervisor | None = None
    watchdog: FakeWatchdog | None = field(default_factory=FakeWatchdog)
    random: Random = field(default_factory=lambda: Random(0))
    sent: list[tuple[str, object, Network]] = field(default_factory=list)
    timers: list[tuple[float, object]] = field(default_factory=list)  # every set_timer, as asked
    published: list[object] = field(default_factory=list)
    scannable: list[Scannable] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    spawned: list[tuple[str, Behaviour]] = field(default_factory=list)
    _due: list[tuple[float, int, object]] = field(default_factory=list)  # (due, order, msg)
    _order: int = 0

    # -- the Context protocol ------------------------------------------------------------------

    def now(self) -> float:
        return self.clock

    def send(self, to: str, msg: object, network: Network = Network.MANAGEMENT) -> None:
        if isinstance(msg, Scannable):  # scan bookkeeping, kept apart: tests of it read `scannable`
            self.scannable.append(msg)
            return
        self.sent.append((to, msg, network))

    def set_timer(self, delay_s: float, msg: object) -> None:
        self.timers.append((delay_s, msg))
        self.deliver_later(delay_s, msg)

    def spawn(self, address: str, behaviour: Behaviour) -> None:
        self.spawned.append((address, behaviour))

    def publish(self, event: object) -> None:
        self.published.append(event)

    def log(self, text: str) -> None:
        self.logs.append(text)

    # -- reading what was sent -----------------------------------------------------------------

    def take_sent(self, kind: type[T]) -> list[tuple[str, T, Network]]:
        """Remove and return the sent messages of type ``kind``, with address and network."""
        out: list[tuple[str, T, Network]] = []
        rest: list[tuple[str, object, Network]] = []
        for to, msg, net in self.sent:
            if isinstance(msg, kind):
                out.append((to, msg, net))
            else:
                rest.append((to, msg, net))
        self.sent = rest
        return out

    def take(self, kind: type[T]) -> list[T]:
        """Remove and return the sent messages of type ``kind``."""
        return [msg for _, msg, _ in self.take_sent(kind)]

    def take_one(self, kind: type[T], to: str | None = None) -> T:
        """The single message of type ``kind`` sent (to ``to``, if given); fails otherwise."""
        found = self.take_sent(kind)
        assert len(found) == 1, f"expected one {kind.__name__}, got {found}"
        dest, msg, _ = found[0]
        if to is not None:
            assert dest == to, f"{kind.__name__} went to {dest}, not {to}"
        return msg

    def take_copies(self, kind: type[T], to: str | None = None) -> tuple[T, int]:
        """The one message of type ``kind`` sent one or more times (an order and its
        resends), all alike and over the same network (to ``to``, if given): the message
        and how many times it was sent. Fails if none was sent or if they differ."""
        found = self.take_sent(kind)
        assert found, f"expected a {kind.__name__}, got none"
        first = found[0]
        assert all(f == first for f in found), f"{kind.__name__} copies differ: {found}"
        if to is not None:
            assert first[0] == to, f"{kind.__name__} went to {first[0]}, not {to}"
        return first[1], len(found)

    def timers_of(self, kind: type[T]) -> list[tuple[float, T]]:
        """Every timer of type ``kind`` ever set, as (delay_s, msg)."""
        return [(d, m) for d, m in self.timers if isinstance(m, kind)]

    def states(self) -> list[VmState]:
        """The states of the VmViewChanged events published so far."""
        return [e.state for e in self.published if isinstance(e, VmViewChanged)]

    # -- time ------------------------------------------------------------------------------------

    def deliver_later(self, delay_s: float, msg: object) -> None:
        """A message from the world, delivered by ``advance`` once ``delay_s`` passed
        (like a timer, but not recorded in ``timers``)."""
        self._order += 1
        self._due.append((self.clock + delay_s, self._order, msg))

    def pending(self) -> list[tuple[float, object]]:
        """Timers not yet delivered, as (due time, msg), soonest first."""
        return [(due, msg) for due, _, msg in sorted(self._due, key=lambda d: (d[0], d[1]))]

    def fire_timers(self, actor: Behaviour) -> int:
        """Deliver every timer due now (including ones set while delivering); return how many."""
        return self._run_until(actor, self.clock)

    def advance(self, actor: Behaviour, seconds: float) -> int:
        """Move the clock ``seconds`` forward, delivering due timers at their due times."""
        return self._run_until(actor, self.clock + seconds)

    def _run_until(self, actor: Behaviour, until: float) -> int:
        fired = 0
        while True:
            due = [d for d in self._due if d[0] <= until]
            if not due:
                break
            first = min(due, key=lambda d: (d[0], d[1]))
            self._due.remove(first)
            self.clock = max(self.clock, first[0])
            actor.receive(self, first[2])
            fired += 1
        self.clock = max(self.clock, until)
        return fired
