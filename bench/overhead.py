"""Runtime overhead: actor messages per second against bare simpy callbacks.

Both sides move the same number of events through one simpy ``Environment`` in this
process, in ``chains`` concurrent ping-pong chains (so that the event queue holds as many
entries as in a busy cluster), each hop taking a LAN crossing's delay.

- runtime: two trivial behaviours per chain on two nodes of the network model; each
  message is received and answered (the same message object sent back, so that only the
  runtime's cost is measured) through ``SimRuntime``: context, network transit,
  incarnation check, delivery. A same-node variant skips the network model.
- bare simpy: a callback that counts and schedules the next ``env.timeout`` the idiomatic
  way; nothing else. The ratio is runtime rate / bare rate.

Bare simpy's queue holds one entry per chain; the runtime's holds one per delay (its lanes,
see ``sim/runtime.py``), so within a node the runtime can beat the bare loop it is built on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from random import Random

import simpy

from actors.context import Behaviour, Context
from actors.states import Network
from sim.network import Link, NetworkModel
from sim.runtime import SimRuntime

HOP_S = 0.0005  # two LAN links, as between two hosts


@dataclass(frozen=True)
class Ball:
    """The message the two behaviours throw at each other."""

    chain: int


class Player(Behaviour):
    """Sends every ball back to its peer until the shared budget is spent."""

    def __init__(self, peer: str, budget: list[int]) -> None:
        self.peer = peer
        self.budget = budget

    def receive(self, ctx: Context, msg: object) -> None:
        if self.budget[0] > 0:
            self.budget[0] -= 1
            ctx.send(self.peer, msg)


def runtime_rate(messages: int, chains: int, same_node: bool = False) -> tuple[float, int]:
    """Messages per second through the runtime, and how many were delivered."""
    env = simpy.Environment()
    net = NetworkModel(Random(1))
    runtime = SimRuntime(env, net, seed=1)
    budget = [messages]
    link = Link(latency_s=HOP_S / 2)
    for i in range(chains):
        a, b = f"node-a{i}", ("node-a" if same_node else "node-b") + str(i)
        net.attach(a, [Network.MANAGEMENT], link)
        if b != a:
            net.attach(b, [Network.MANAGEMENT], link)
        runtime.spawn(f"ping/{i}", a, Player(f"pong/{i}", budget))
        runtime.spawn(f"pong/{i}", b, Player(f"ping/{i}", budget))
    for i in range(chains):
        budget[0] -= 1
        runtime.deliver(f"pong/{i}", Ball(i), HOP_S)
    start = time.perf_counter()
    env.run()
    elapsed = time.perf_counter() - start
    return runtime.messages / elapsed, runtime.messages


def bare_rate(messages: int, chains: int) -> tuple[float, int]:
    """Callbacks per second of a bare simpy loop doing the same number of hops."""
    env = simpy.Environment()
    left = [messages]
    done = [0]

    def hop(_: object) -> None:
        done[0] += 1
        if left[0] > 0:
            left[0] -= 1
            env.timeout(HOP_S).callbacks.append(hop)

    for _ in range(chains):
        left[0] -= 1
        env.timeout(HOP_S).callbacks.append(hop)
    start = time.perf_counter()
    env.run()
    elapsed = time.perf_counter() - start
    return done[0] / elapsed, done[0]


@dataclass(frozen=True)
class OverheadResult:
    messages: int
    chains: int
    repeats: int
    bare: float  # callbacks per second (best of the repeats)
    runtime: float  # messages per second, across nodes (best of the repeats)
    same_node: float  # messages per second, within a node (best of the repeats)

    @property
    def ratio(self) -> float:
        return self.runtime / self.bare


def measure(messages: int = 500_000, chains: int = 1000, repeats: int = 3) -> OverheadResult:
    """Best of ``repeats`` for each side, interleaved so that machine load hits both alike."""
    bare = runtime = same = 0.0
    for _ in range(repeats):
        bare = max(bare, bare_rate(messages, chains)[0])
        runtime = max(runtime, runtime_rate(messages, chains)[0])
        same = max(same, runtime_rate(messages, chains, same_node=True)[0])
    return OverheadResult(messages, chains, repeats, bare, runtime, same)
