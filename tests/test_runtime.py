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
    assert cell.ctx._random is None  # nobody drew: no 2.5 KiB Mersenne Twister state
    assert cell.ctx.random.random() == seeded(7, "vm/a#0").random()
    assert cell.ctx.random is cell.ctx.random  # one stream per actor, not one per use


def test_a_respawned_actor_draws_a_new_stream_even_if_its_node_died_before_first_use() -> None:
    rt = runtime()
    first = rt.spawn("host/h1", "h1", Recorder())
    rt.kill_node("h1")  # bumps the dead cell's incarnation; its context keeps the one it had
    old_draw = first.ctx.random.random()
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
