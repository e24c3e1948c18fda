"""Behaviours from ``actors`` on simpy virtual time.

Every message and timer is a simpy timeout with a plain callback: no simpy process per
actor or per timer (a process costs 4-5x). An actor lives on a node; a message between
nodes crosses the network model, a message within a node is delivered at once. When a
node loses power its actors die with it: everything addressed to them is dropped, and
their timers never fire, because each carries the incarnation it was set in.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from random import Random
from typing import Any

import simpy

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
        self.drift: dict[str, float] = {}  # node -> clock rate (1.0 = exact)

    # -- time --------------------------------------------------------------------------------

    def clock(self, node: str) -> float:
        return float(self.env.now) * self.drift.get(node, 1.0)

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
        if delay is None:
            return
        self.deliver(to, msg, delay)

    def deliver(self, to: str, msg: object, delay_s: float = 0.0) -> None:
        """Deliver ``msg`` to the actor now at ``to`` after ``delay_s``, if it still lives."""
        target = self.cells.get(to)
        if target is None or not target.alive:
            return
        incarnation = target.incarnation

        def arrive(_: Any) -> None:
            if target.alive and target.incarnation == incarnation:
                self.messages += 1
                target.behaviour.receive(target.ctx, msg)

        self._later(delay_s, arrive)

    def timer(self, cell: Cell, delay_s: float, msg: object) -> None:
        rate = self.drift.get(cell.node, 1.0)
        self.deliver(cell.address, msg, max(0.0, delay_s / rate))

    # -- observation ---------------------------------------------------------------------------

    def publish(self, address: str, event: object) -> None:
        for hook in self.on_publish:
            hook(float(self.env.now), address, event)

    def log(self, address: str, text: str) -> None:
        self.logs.append((float(self.env.now), address, text))
