"""Simulated devices of a host: its power controller, which answers like an actor but
reads the ground truth, and its watchdog."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from actors.context import Behaviour, Context
from actors.messages import PowerQuery, PowerStatus
from sim.hypervisor import SimHypervisor

if TYPE_CHECKING:
    from sim.runtime import SimRuntime

DEADLINE_SLACK_S = 1e-9  # a check queued at the deadline may land a rounding error early


class PowerController(Behaviour):
    """A host's BMC: on its own management link, it tells whether the host has power."""

    def __init__(self, hypervisor: SimHypervisor) -> None:
        self.hypervisor = hypervisor

    def receive(self, ctx: Context, msg: object) -> None:
        if isinstance(msg, PowerQuery):
            ctx.send(msg.reply_to, PowerStatus(msg.host, msg.req, self.hypervisor.powered))


class Watchdog:
    """A host's hardware watchdog (``actors.context.WatchdogPort``), outside the agent:
    once armed, it resets the host unless the agent pets it again in time.

    Time is the host's clock, like the agent's timers. A reset is the hardware's: power
    off and on again at once (every guest dies), then the host boots. One check is queued
    at a time, at the deadline; a pet in between only moves the deadline, and the check
    looks again then, so a healthy host costs one event per timeout rather than one per pet.
    """

    def __init__(self, host: str, runtime: SimRuntime, reset: Callable[[str], None]) -> None:
        self.host = host
        self.runtime = runtime
        self.reset = reset
        self.deadline: float | None = None  # virtual time of the reset, while armed
        self.check_queued = False
        self.resets = 0

    def pet(self, timeout_s: float) -> bool:
        env = self.runtime.env
        self.deadline = float(env.now) + timeout_s / self.runtime.clock_rate(self.host)
        if not self.check_queued:
            self._check_at(self.deadline)
        return True  # the hardware is always there

    def disarm(self) -> None:
        """The agent stands it down; a power loss or a reset does the same to the hardware."""
        self.deadline = None

    def _check_at(self, at: float) -> None:
        self.check_queued = True
        self.runtime.later(max(0.0, at - float(self.runtime.env.now)), self._check)

    def _check(self, _: object) -> None:
        self.check_queued = False
        if self.deadline is None:
            return
        if float(self.runtime.env.now) >= self.deadline - DEADLINE_SLACK_S:
            self.deadline = None
            self.resets += 1
            self.reset(self.host)
        else:
            self._check_at(self.deadline)
