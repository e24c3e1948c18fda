"""Simulated devices that answer like actors but read the ground truth."""

from __future__ import annotations

from actors.context import Behaviour, Context
from actors.messages import PowerQuery, PowerStatus
from sim.hypervisor import SimHypervisor


class PowerController(Behaviour):
    """A host's BMC: on its own management link, it tells whether the host has power."""

    def __init__(self, hypervisor: SimHypervisor) -> None:
        self.hypervisor = hypervisor

    def receive(self, ctx: Context, msg: object) -> None:
        if isinstance(msg, PowerQuery):
            ctx.send(msg.reply_to, PowerStatus(msg.host, msg.req, self.hypervisor.powered))
