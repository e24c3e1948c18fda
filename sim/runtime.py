"""Behaviours from ``actors`` on simpy virtual time.

Every message and timer is one entry in simpy's event queue with a plain callback: no
simpy process per actor or per timer (a process costs 4-5x). An actor lives on a node; a
message between nodes crosses the network model, a message within a node is delivered at
once. When a node loses power its actors die with it: everything addressed to them is
dropped, and their timers never fire, because each carries the incarnation it was set in.

A delivery is the cheapest object simpy's ``Environment.step`` accepts: a slotted
``_Arrival`` sharing one callback list, pushed onto the queue exactly as
``Environment.schedule`` would push a ``Timeout`` (same time, priority and sequence
number), so runs are event-for-event the same as with ``env.timeout`` at a third of the
cost per message.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from heapq import heappush
from random import Random
from typing import Any

import simpy
from simpy.events import NORMAL

from actors.context import Behaviour, HypervisorPort
from actors.states import Network
from sim.network import NetworkModel

PublishHook = Callable[[float, str, object], None]


def seeded(seed: int, name: str) -> Random:
    """A generator for one actor that depends only on the run's seed and the name."""
    return Random(seed * 1_000_003 + zlib.crc32(name.encode()))


class Cell:
    """One actor's slot in the runtime: its behaviour, node and incarnation."""

    __slots__ = ("address", "node", "behaviour", "ctx", "alive", "incarnation", "hypervisor")

    def __init__(self, address: str, node: str, behaviour: Behaviour,
                 hypervisor: HypervisorPort | None) -> None:
        self.address = address
        self.node = node
        self.behaviour = behaviour
        self.alive = True
        self.incarnation = 0
        self.hypervisor = hypervisor
        self.ctx: SimContext


class _Arrival:
    """One message in flight, as an event of simpy's queue (see the module docstring)."""

    __slots__ = ("callbacks", "target", "incarnation", "msg")
    _ok = True  # read by Environment.step: a processed arrival never fails

    def __init__(self, callbacks: list[Callable[[_Arrival], None]], target: Cell,
                 incarnation: int, msg: object) -> None:
        self.callbacks: list[Callable[[_Arrival], None]] | None = callbacks
        self.target = target
        self.incarnation = incarnation
        self.msg = msg


class SimContext:
    """The ``actors.context.Context`` of one actor in the simulator."""

    __slots__ = ("_runtime", "_cell", "_random")

    def __init__(self, runtime: SimRuntime, cell: Cell, rng: Random) -> None:
        self._runtime = runtime
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

    def now(self) -> float:
        return self._runtime.clock(self._cell.node)

    def send(self, to: str, msg: object, network: Network = Network.MANAGEMENT) -> None:
        self._runtime.send(self._cell, to, msg, network)

    def set_timer(self, delay_s: float, msg: object) -> None:
        self._runtime.timer(self._cell, delay_s, msg)

    def spawn(self, address: str, behaviour: Behaviour) -> None:
        self._runtime.spawn(address, self._cell.node, behaviour)

    def publish(self, event: object) -> None:
        self._runtime.publish(self._cell.address, event)

    def log(self, text: str) -> None:
        self._runtime.log(self._cell.address, text)


class SimRuntime:
    def __init__(self, env: simpy.Environment, network: NetworkModel, seed: int) -> None:
        self.env = env
        self.network = network
        self.seed = seed
        self.cells: dict[str, Cell] = {}
        self.on_publish: list[PublishHook] = []
        self.logs: list[tuple[float, str, str]] = []
        self.messages = 0
        # node -> (virtual time, node clock reading, rate) since its rate last changed; a
        # node's clock is continuous and monotonic, only its speed changes.
        self.clocks: dict[str, tuple[float, float, float]] = {}
        self._arrivals: list[Callable[[_Arrival], None]] = [self._arrive]  # shared, never mutated

    # -- time --------------------------------------------------------------------------------

    def clock(self, node: str) -> float:
        now = float(self.env._now)
        anchor = self.clocks.get(node) if self.clocks else None
        if anchor is None:
            return now
        since, reading, rate = anchor
        return reading + (now - since) * rate

    def set_clock_rate(self, node: str, rate: float) -> None:
        """From now on ``node``'s clock runs at ``rate`` (1.01 = 1% fast), without a jump."""
        self.clocks[node] = (float(self.env.now), self.clock(node), rate)

    def clock_rate(self, node: str) -> float:
        anchor = self.clocks.get(node) if self.clocks else None
        return 1.0 if anchor is None else anchor[2]

    def _later(self, delay_s: float, callback: Callable[[Any], None]) -> None:
        self.env.timeout(delay_s).callbacks.append(callback)

    # -- actors --------------------------------------------------------------------------------

    def spawn(self, address: str, node: str, behaviour: Behaviour,
              hypervisor: HypervisorPort | None = None) -> Cell:
        old = self.cells.get(address)
        cell = Cell(address, node, behaviour, hypervisor)
        if old is not None:
            cell.incarnation = old.incarnation + 1
        cell.ctx = SimContext(self, cell, seeded(self.seed, f"{address}#{cell.incarnation}"))
        self.cells[address] = cell
        behaviour.on_start(cell.ctx)
        return cell

    def kill_node(self, node: str) -> None:
        for cell in self.cells.values():
            if cell.node == node and cell.alive:
                cell.alive = False
                cell.incarnation += 1

    # -- messages ------------------------------------------------------------------------------

    def send(self, sender: Cell, to: str, msg: object, network: Network) -> None:
        target = self.cells.get(to)
        if target is None:
            return
        if target.node == sender.node:
            delay: float | None = 0.0
        else:
            delay = self.network.transit(network, sender.node, target.node)
        if delay is None or not target.alive:
            return
        self._push(target, msg, delay)

    def deliver(self, to: str, msg: object, delay_s: float = 0.0) -> None:
        """Deliver ``msg`` to the actor now at ``to`` after ``delay_s``, if it still lives."""
        target = self.cells.get(to)
        if target is None or not target.alive:
            return
        self._push(target, msg, delay_s)

    def _push(self, target: Cell, msg: object, delay_s: float) -> None:
        """Queue an arrival where ``Environment.schedule`` would queue ``Timeout(delay_s)``."""
        if delay_s < 0:
            raise ValueError(f"negative delay {delay_s}")
        env = self.env
        heappush(env._queue, (env._now + delay_s, NORMAL, next(env._eid),
                              _Arrival(self._arrivals, target, target.incarnation, msg)))

    def _arrive(self, arrival: _Arrival) -> None:
        target = arrival.target
        if target.alive and target.incarnation == arrival.incarnation:
            self.messages += 1
            target.behaviour.receive(target.ctx, arrival.msg)

    def timer(self, cell: Cell, delay_s: float, msg: object) -> None:
        if self.clocks and cell.node in self.clocks:
            delay_s /= self.clocks[cell.node][2]
        self.deliver(cell.address, msg, delay_s if delay_s > 0.0 else 0.0)

    # -- observation ---------------------------------------------------------------------------

    def publish(self, address: str, event: object) -> None:
        for hook in self.on_publish:
            hook(float(self.env.now), address, event)

    def log(self, address: str, text: str) -> None:
        self.logs.append((float(self.env.now), address, text))
