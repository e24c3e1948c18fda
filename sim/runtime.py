"""Behaviours from ``actors`` on simpy virtual time.

Every message and timer is one entry in simpy's event queue with a plain callback: no
simpy process per actor or per timer (a process costs 4-5x). An actor lives on a node; a
message between nodes crosses the network model, a message within a node is delivered at
once. When a node loses power its actors die with it: everything addressed to them is
dropped, and their timers never fire, because each carries the incarnation it was set in.

A delivery is the cheapest object simpy's ``Environment.step`` accepts: a slotted
``_Arrival`` sharing one callback list, pushed onto the queue exactly as
``Environment.schedule`` would push a ``Timeout`` (same time, priority and sequence
number), so runs are event-for-event the same as with ``env.timeout``, without a closure
and a ``Timeout`` per message. ``Cell.send`` and ``set_timer`` are the hot path;
``bench/overhead.py`` measures them against bare simpy.

Arrivals with the same delay wait in that delay's lane, a FIFO, and only each lane's head
is in simpy's queue. A cluster's arrivals use a handful of delays (a heartbeat interval,
a ping interval, a path's latency), and arrivals queued with one delay are due in the
order they were queued, with rising sequence numbers: so a lane is already sorted, and the
queue pops exactly what it would pop if every arrival were in it. The queue then holds a
handful of entries instead of two per host; each pop costs a fixed few comparisons on hot
entries instead of a descent through thousands of entries scattered over the heap, which
in a large cluster are out of the processor's caches. At most ``MAX_LANES`` lanes exist
at once (random delays, jitter and drifting clocks make many delays): an arrival whose
delay has no lane when all are taken goes into simpy's queue itself.
"""

from __future__ import annotations

import gc
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from heapq import heappush
from random import Random
from typing import Any

import simpy
from simpy.events import NORMAL

from actors.context import Behaviour, HypervisorPort, WatchdogPort
from actors.states import Network
from sim.network import NetworkModel

PublishHook = Callable[[float, str, object], None]
# (the runtime's and the network's tokens when it was found, the actor at the address or
# None, the network, the fixed delay or None)
_Route = tuple[object, object, "Cell | None", Network, "float | None"]
MAX_LANES = 64


def seeded(seed: int, name: str) -> Random:
    """A generator for one actor that depends only on the run's seed and the name."""
    return Random(seed * 1_000_003 + zlib.crc32(name.encode()))


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run a block with Python's cyclic garbage collector off (reference counting still
    frees every object that is dropped).

    A cluster is hundreds of thousands of long-lived objects (actors, their contexts and
    generators, specs, the inventory). While it is built, and while it runs with timers
    in flight for seconds, the collector keeps promoting objects and walks all of them
    again in dozens of full collections: about 40% of a 1,000-host hour, and more the
    larger the cluster. A run makes no cyclic garbage (``tests/test_bench_smoke.py``
    checks that), so nothing is lost by pausing the collector; whatever a future change
    leaves in cycles is collected as usual after the block. Meant for
    ``Simulation.run``: ``with collector_paused(): build, then env.run(...)``.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Arrival:
    """One message in flight, as an event of simpy's queue (see the module docstring)."""

    __slots__ = ("callbacks", "target", "incarnation", "msg", "lane", "at", "eid")
    _ok = True  # read by Environment.step: a processed arrival never fails

    def __init__(self, callbacks: list[Callable[[_Arrival], None]], target: Cell,
                 incarnation: int, msg: object, lane: float = -1.0, at: float = 0.0, eid: int = 0) -> None:
        self.callbacks: list[Callable[[_Arrival], None]] | None = callbacks
        self.target = target
        self.incarnation = incarnation
        self.msg = msg
        # While it waits in a lane (see SimRuntime.enqueue): the lane's delay, and the time
        # and sequence number of its entry in simpy's queue once it heads the lane.
        self.lane = lane
        self.at = at
        self.eid = eid


class _Lane(deque[_Arrival]):
    """The arrivals waiting with one delay, oldest first, and the due time of the last one
    queued: arrivals queued in one instant share that float instead of one each (a cluster
    whose hosts booted together queues a heartbeat per host in the same instant)."""

    __slots__ = ("queued_at", "due")

    def __init__(self) -> None:
        super().__init__()
        self.queued_at = -1.0
        self.due = 0.0


class Cell:
    """One actor incarnation's slot in the runtime (behaviour, node, whether it lives) and
    the ``actors.context.Context`` it is given: one object, not two, because every
    delivery reads both and in a large cluster each is a cache miss of its own.

    Its generator is made on first use: a ``Random`` holds 2.5 KiB of Mersenne Twister
    state, more than the actor itself, and most actors (VMs that never crash-loop) never
    draw from it. Built eagerly, the generators were 43% of a run's memory and spread the
    actors that are used over twice the cache lines. It depends only on the seed, the
    address and the incarnation, so when it is made does not change a run.
    """

    # What a delivery reads comes first: it then fits in one cache line.
    __slots__ = ("alive", "incarnation", "behaviour", "node", "_routes", "_runtime", "address",
                 "born", "hypervisor", "watchdog", "_random")

    def __init__(self, runtime: SimRuntime, address: str, node: str, behaviour: Behaviour,
                 incarnation: int, hypervisor: HypervisorPort | None,
                 watchdog: WatchdogPort | None = None) -> None:
        self.alive = True
        self.incarnation = incarnation  # raised when the actor dies: what was sent it is void
        self.behaviour = behaviour
        self.node = node
        self._routes: dict[str, _Route] | None = None  # made at the first send
        self._runtime = runtime
        self.address = address
        self.born = incarnation  # the incarnation it was spawned as
        self.hypervisor = hypervisor
        self.watchdog = watchdog
        self._random: Random | None = None

    @property
    def random(self) -> Random:
        rng = self._random
        if rng is None:
            rng = self._random = seeded(self._runtime.seed, f"{self.address}#{self.born}")
        return rng

    def now(self) -> float:
        runtime = self._runtime
        if runtime.clocks:
            return runtime.clock(self.node)
        return float(runtime.env._now)

    def send(self, to: str, msg: object, network: Network = Network.MANAGEMENT) -> None:
        # The hot path of every run: SimRuntime.send comes here too.
        runtime = self._runtime
        routes = self._routes
        route = None if routes is None else routes.get(to)
        # Identity checks only: nothing of the route but the tuple is read from memory.
        if (route is None or route[0] is not runtime.cells_token
                or route[1] is not runtime.network.fixed_token or route[3] is not network):
            route = self._route(to, network)
        target = route[2]
        if target is None:
            return
        delay = route[4]
        if delay is None:  # a lossy or jittery path: each crossing is drawn
            delay = runtime.network.transit(network, self.node, target.node)
            if delay is None:
                return
        if target.alive:
            runtime.enqueue(target, msg, delay)

    def _route(self, to: str, network: Network) -> _Route:
        """Who is at ``to`` and the fixed delay to it over ``network``, kept until an actor
        is spawned or a link changes: a send then reads one small dict of its own instead
        of the runtime's and the network's, which hold an entry per actor and per pair and
        in a large cluster are out of the processor's caches."""
        runtime = self._runtime
        target = runtime.cells.get(to)
        delay: float | None = None
        if target is not None:
            node = self.node
            delay = 0.0 if target.node == node else runtime.network.fixed_delay(network, node, target.node)
        route = (runtime.cells_token, runtime.network.fixed_token, target, network, delay)
        if self._routes is None:
            self._routes = {}
        self._routes[to] = route
        return route

    def set_timer(self, delay_s: float, msg: object) -> None:
        runtime = self._runtime
        clocks = runtime.clocks
        if clocks and self.node in clocks:
            delay_s /= clocks[self.node][2]  # a fast clock's timers fire early
        if not delay_s > 0.0:
            delay_s = 0.0
        if self.alive:
            runtime.enqueue(self, msg, delay_s)  # a timer is its setter's, never a successor's

    def spawn(self, address: str, behaviour: Behaviour) -> None:
        self._runtime.spawn(address, self.node, behaviour)

    def publish(self, event: object) -> None:
        self._runtime.publish(self.address, event)

    def log(self, text: str) -> None:
        self._runtime.log(self.address, text)


class SimRuntime:
    def __init__(self, env: simpy.Environment, network: NetworkModel, seed: int,
                 max_lanes: int = MAX_LANES) -> None:
        self.env = env
        self.network = network
        self.seed = seed
        self.cells: dict[str, Cell] = {}
        self.cells_token = object()  # replaced when cells change: the routes cells keep are void
        self._on_node: dict[str, dict[str, Cell]] = {}  # node -> address -> cell, as in cells
        self.on_publish: list[PublishHook] = []
        self.logs: list[tuple[float, str, str]] = []
        self.messages = 0
        # node -> (virtual time, node clock reading, rate) since its rate last changed; a
        # node's clock is continuous and monotonic, only its speed changes.
        self.clocks: dict[str, tuple[float, float, float]] = {}
        self._arrivals: list[Callable[[_Arrival], None]] = [self._arrive]  # shared by arrivals
        # simpy calls an event's callbacks in order: a lane's head first lets the next one
        # in, then is delivered like any arrival
        self._lane_arrivals: list[Callable[[_Arrival], None]] = [self._advance_lane, self._arrive]
        # delay -> the arrivals with that delay waiting behind the one in simpy's queue
        self._lanes: dict[float, _Lane] = {}
        self.max_lanes = max_lanes

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

    def later(self, delay_s: float, callback: Callable[[Any], None]) -> None:
        """Call ``callback`` after ``delay_s`` of virtual time: the simulator's own devices
        and events (a plain simpy timeout; actors use their context's timers)."""
        self.env.timeout(delay_s).callbacks.append(callback)

    # -- actors --------------------------------------------------------------------------------

    def spawn(self, address: str, node: str, behaviour: Behaviour,
              hypervisor: HypervisorPort | None = None, watchdog: WatchdogPort | None = None) -> Cell:
        old = self.cells.get(address)
        cell = Cell(self, address, node, behaviour, 0 if old is None else old.incarnation + 1,
                    hypervisor, watchdog)
        self.cells[address] = cell
        self.cells_token = object()
        if old is not None and old.node != node:
            del self._on_node[old.node][address]
        self._on_node.setdefault(node, {})[address] = cell
        behaviour.on_start(cell)
        return cell

    def kill_node(self, node: str) -> None:
        for cell in self._on_node.get(node, {}).values():
            if cell.alive:
                cell.alive = False
                cell.incarnation += 1

    def kill(self, address: str) -> bool:
        """One actor dies, its node lives on (an agent process crashes); whether it lived."""
        cell = self.cells.get(address)
        if cell is None or not cell.alive:
            return False
        cell.alive = False
        cell.incarnation += 1
        return True

    # -- messages ------------------------------------------------------------------------------

    def send(self, sender: Cell, to: str, msg: object, network: Network) -> None:
        """``sender`` sends ``msg`` to the actor at ``to`` over ``network``."""
        sender.send(to, msg, network)

    def deliver(self, to: str, msg: object, delay_s: float = 0.0) -> None:
        """Deliver ``msg`` to the actor now at ``to`` after ``delay_s``, if it still lives."""
        target = self.cells.get(to)
        if target is None or not target.alive:
            return
        self._push(target, msg, delay_s)

    def _push(self, target: Cell, msg: object, delay_s: float) -> None:
        if delay_s < 0:
            raise ValueError(f"negative delay {delay_s}")
        self.enqueue(target, msg, delay_s)

    def enqueue(self, target: Cell, msg: object, delay_s: float) -> None:
        """Deliver ``msg`` to ``target`` in ``delay_s``: an arrival with the time, priority
        and sequence number ``Environment.schedule`` would give a ``Timeout(delay_s)``.

        Arrivals with the same delay wait in that delay's lane, a FIFO, and only each
        lane's head is in simpy's queue (see the module docstring)."""
        env = self.env
        lanes = self._lanes
        lane = lanes.get(delay_s)
        if lane is not None:  # one object per waiting arrival: it waits long, out of cache
            now = env._now
            if now == lane.queued_at:
                due = lane.due
            else:
                due = lane.due = now + delay_s
                lane.queued_at = now
            lane.append(_Arrival(self._lane_arrivals, target, target.incarnation, msg, delay_s,
                                 due, next(env._eid)))
        elif len(lanes) < self.max_lanes:
            lanes[delay_s] = _Lane()
            heappush(env._queue, (env._now + delay_s, NORMAL, next(env._eid),
                                  _Arrival(self._lane_arrivals, target, target.incarnation, msg, delay_s)))
        else:
            heappush(env._queue, (env._now + delay_s, NORMAL, next(env._eid),
                                  _Arrival(self._arrivals, target, target.incarnation, msg)))

    def _advance_lane(self, arrival: _Arrival) -> None:
        """The head of a lane arrives: the next one in the lane takes its place in the queue."""
        lanes = self._lanes
        lane = lanes[arrival.lane]
        if lane:
            head = lane.popleft()
            heappush(self.env._queue, (head.at, NORMAL, head.eid, head))
        else:
            del lanes[arrival.lane]

    def _arrive(self, arrival: _Arrival) -> None:
        target = arrival.target
        if target.alive and target.incarnation == arrival.incarnation:
            self.messages += 1
            target.behaviour.receive(target, arrival.msg)

    # -- observation ---------------------------------------------------------------------------

    def trace(self, hook: Callable[[float, str, object], None]) -> None:
        """Call ``hook(now, address, msg)`` for every arrival, in order, before it is
        delivered (or dropped, if its actor died): replay digests and debugging. Costs a
        call per arrival, so only runs that ask pay for it."""
        env = self.env
        arrive = self._arrive

        def traced(arrival: _Arrival) -> None:
            hook(float(env._now), arrival.target.address, arrival.msg)
            arrive(arrival)

        for callbacks in (self._arrivals, self._lane_arrivals):
            callbacks[-1] = traced  # the delivery, last of each list

    def publish(self, address: str, event: object) -> None:
        for hook in self.on_publish:
            hook(float(self.env.now), address, event)

    def log(self, address: str, text: str) -> None:
        self.logs.append((float(self.env.now), address, text))
