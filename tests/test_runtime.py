"""The simulation runtime: per-actor generators, incarnations, and delivery to the living."""

from __future__ import annotations

import simpy

from actors.context import Context
from sim.network import NetworkModel
from sim.runtime import SimRuntime, seeded


class Recorder:
    """Keeps what it receives; draws nothing from its generator unless told to."""

    def __init__(self, draw_at_start: bool = False) -> None:
        self.draw_at_start = draw_at_start
        self.got: list[object] = []
        self.first_draw: float | None = None

    def on_start(self, ctx: Context) -> None:
        if self.draw_at_start:
            self.first_draw = ctx.random.random()

    def receive(self, ctx: Context, msg: object) -> None:
        self.got.append(msg)


def runtime(seed: int = 7) -> SimRuntime:
    return SimRuntime(simpy.Environment(), NetworkModel(seeded(seed, "network")), seed)


def test_a_generator_is_made_on_first_use_from_seed_address_and_incarnation() -> None:
    rt = runtime()
    cell = rt.spawn("vm/a", "mgmt", Recorder())
    assert cell._random is None  # nobody drew: no 2.5 KiB Mersenne Twister state
    assert cell.random.random() == seeded(7, "vm/a#0").random()
    assert cell.random is cell.random  # one stream per actor, not one per use


def test_a_respawned_actor_draws_a_new_stream_even_if_its_node_died_before_first_use() -> None:
    rt = runtime()
    first = rt.spawn("host/h1", "h1", Recorder())
    rt.kill_node("h1")  # bumps the dead cell's incarnation; its context keeps the one it had
    old_draw = first.random.random()
    assert old_draw == seeded(7, "host/h1#0").random()
    again = rt.spawn("host/h1", "h1", Recorder(draw_at_start=True))
    assert isinstance(again.behaviour, Recorder)
    assert again.behaviour.first_draw == seeded(7, "host/h1#2").random() != old_draw


def test_a_dead_actor_gets_nothing_sent_before_it_died() -> None:
    rt = runtime()
    old = rt.spawn("host/h1", "h1", Recorder())
    rt.deliver("host/h1", "before", delay_s=1.0)
    rt.kill_node("h1")
    new = rt.spawn("host/h1", "h1", Recorder())
    rt.deliver("host/h1", "after", delay_s=1.0)
    rt.env.run(until=2.0)
    assert isinstance(old.behaviour, Recorder) and isinstance(new.behaviour, Recorder)
    assert old.behaviour.got == [] and new.behaviour.got == ["after"]
    assert rt.messages == 1


def test_arrivals_come_out_in_simpys_order_whether_they_wait_in_lanes_or_not() -> None:
    """Ties on time go to the arrival queued first, as with ``env.timeout``: across lanes,
    and between a lane and the arrivals that found every lane taken."""
    orders = []
    queue_sizes = []
    for max_lanes in (0, 1, 2, 64):
        rt = SimRuntime(simpy.Environment(), NetworkModel(seeded(7, "network")), 7, max_lanes=max_lanes)
        rt.spawn("a", "n", Recorder())
        seen: list[object] = []
        rt.trace(lambda now, to, msg, seen=seen: seen.append((now, msg)))
        for i in range(3):
            rt.deliver("a", f"two-{i}", delay_s=2.0)
            rt.deliver("a", f"one-{i}", delay_s=1.0)
            rt.deliver("a", f"half-{i}", delay_s=0.5)
        rt.env.run(until=1.0)
        rt.deliver("a", "one-later", delay_s=1.0)  # due at 2.0, after the two-* queued before
        rt.deliver("a", "zero", delay_s=0.0)
        queue_sizes.append(len(rt.env._queue))
        rt.env.run()
        orders.append(seen)
    assert orders[0] == [(0.5, "half-0"), (0.5, "half-1"), (0.5, "half-2"), (1.0, "one-0"), (1.0, "one-1"),
                         (1.0, "one-2"), (1.0, "zero"), (2.0, "two-0"), (2.0, "two-1"), (2.0, "two-2"),
                         (2.0, "one-later")]
    assert all(order == orders[0] for order in orders)
    # Without lanes all eight arrivals are in simpy's queue; with them, one per delay (three).
    # Both queues also hold the event that ended run(until=1.0).
    assert queue_sizes[0] == 8 + 1 and queue_sizes[3] == 3 + 1


def test_a_dead_actor_s_timers_go_nowhere_even_if_a_successor_took_its_address() -> None:
    rt = runtime()
    old = rt.spawn("host/h1", "h1", Recorder())
    rt.kill_node("h1")
    new = rt.spawn("host/h1", "h1", Recorder())
    old.set_timer(1.0, "the old agent's tick")
    new.set_timer(1.0, "tick")
    rt.env.run()
    assert isinstance(old.behaviour, Recorder) and isinstance(new.behaviour, Recorder)
    assert old.behaviour.got == [] and new.behaviour.got == ["tick"]
