"""A shared storage pool as an actor: the place where hosts leave heartbeats.

It keeps, per host, the last heartbeat sequence number written (not the highest: a
restarted host counts from 1 again, and that too is a sign of life). Readers watch the
value change over time; nobody compares clocks across machines.
"""

from __future__ import annotations

from actors.context import Behaviour, Context
from actors.inventory import host_addr
from actors.messages import HeartbeatAck, HeartbeatRead, HeartbeatValue, HeartbeatWrite
from actors.states import Network


class StoragePool(Behaviour):
    def __init__(self, name: str) -> None:
        self.name = name
        self.heartbeats: dict[str, tuple[int, int | None]] = {}  # host -> (seq, armed revision)

    def receive(self, ctx: Context, msg: object) -> None:
        if isinstance(msg, HeartbeatWrite):
            self.heartbeats[msg.host] = (msg.seq, msg.armed)
            ctx.send(host_addr(msg.host), HeartbeatAck(self.name, msg.seq), Network.STORAGE)
        elif isinstance(msg, HeartbeatRead):
            seq, armed = self.heartbeats.get(msg.host, (-1, None))
            ctx.send(msg.reply_to, HeartbeatValue(self.name, msg.host, msg.req, seq, armed), Network.STORAGE)
