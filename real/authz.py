"""Who may send what, once a frame's signature says who sent it (``real.wire``).

- A node's own processes (its admin, its shell) trust each other.
- The manager may send anything: it gives the orders.
- A host speaks only for itself. To the management node: its agent's reports (pongs,
  boots, check replies, operation answers, guest failures), each naming this host as
  the one reporting; its shell's bookkeeping (booted, its own route, its own published
  events); and Thespian's convention traffic, registering under its own name only. To
  another host: a probe, or the answer to one, under its own name.
- Nothing else: not a user command (``Control`` reaches the manager only through the
  control socket), not an order to a guest, not a shutdown, not an event about another
  host. A refusal is a short description of what was refused, for the log.
"""

from __future__ import annotations

from typing import Any

from actors.inventory import MANAGER as MANAGER_ADDR
from actors.inventory import host_addr
from actors.messages import (
    CheckHostReply,
    ConfigPush,
    GuestFailed,
    HostBooted,
    OpReply,
    Pong,
    ProbePing,
    ProbePong,
)
from real.heartbeat import UntrustedRecord
from real.keys import MANAGER, host_of
from real.shell import Batch, Booted, Envelope, Nodes, Published
from real.watchdog import WatchdogTrouble

HOST_CAPABILITY = "neverstop.host"  # the capability a host's actor system joins under
MGMT_LOG = "mgmt/log"  # the management shell's log device: hosts report what they refused

# What a host's agent sends, and the field that must name the host sending it.
_REPORTS: dict[type, str] = {
    Pong: "host", HostBooted: "host", CheckHostReply: "peer", OpReply: "host", GuestFailed: "host",
    UntrustedRecord: "reporter", WatchdogTrouble: "host",
}
_HOST_EVENTS = (ConfigPush,)  # what a host agent publishes
# Thespian's own messages between a member's admin and the convention leader's.
_CONVENTION = {"ConventionRegister", "ConventionDeRegister", "PendingActorResponse", "ChildActorExited",
               "EndpointConnected"}


def admit(sender: str, receiver: str, msg: Any) -> str | None:
    """None if ``sender`` may send ``msg`` to a process of ``receiver``, else what was refused."""
    if sender in (receiver, MANAGER):
        return None
    host = host_of(sender)
    if host is None:
        return f"anything ({sender} is not a known identity)"
    from thespian.system.transport import ForwardMessage

    while isinstance(msg, ForwardMessage):
        msg = msg.fwdMessage
    peer = None if receiver == MANAGER else host_of(receiver)
    assert receiver == MANAGER or peer is not None, receiver
    if isinstance(msg, Batch) and not (isinstance(msg.envelopes, tuple)
                                       and all(isinstance(e, Envelope) for e in msg.envelopes)):
        return "a Batch of something other than envelopes"
    for one in msg.envelopes if isinstance(msg, Batch) else (msg,):  # a batch: each, or none
        refused = _to_manager(host, one) if peer is None else _to_host(host, peer, one)
        if refused is not None:
            return refused
    return None


def _name(msg: Any) -> str:
    if isinstance(msg, Envelope):
        return f"Envelope({msg.to!r}, {type(msg.msg).__name__})"
    return type(msg).__name__


def _to_manager(host: str, msg: Any) -> str | None:
    if isinstance(msg, Envelope):
        to_ok = msg.to in (MANAGER_ADDR, MGMT_LOG) or msg.to.startswith("vm/")
        field = _REPORTS.get(type(msg.msg))
        if to_ok and field is not None and getattr(msg.msg, field) == host:
            return None
        if to_ok and field is not None:
            return f"{_name(msg)} in the name of {getattr(msg.msg, field)!r}"
        return _name(msg)
    if isinstance(msg, Published):
        if msg.node == host and msg.address == host_addr(host) and isinstance(msg.event, _HOST_EVENTS):
            return None
        return f"Published({msg.node!r}, {msg.address!r}, {type(msg.event).__name__})"
    if isinstance(msg, Nodes):
        if not msg.nodes and all(k == host_addr(host) and v == host for k, v in msg.routes.items()):
            return None
        return f"Nodes({sorted(msg.nodes)}, {msg.routes})"
    if isinstance(msg, Booted):
        return None if msg.node == host else f"Booted({msg.node!r})"
    kind = type(msg).__name__
    if type(msg).__module__.startswith("thespian.") and kind in _CONVENTION:
        caps = getattr(msg, "capabilities", None)
        if kind == "ConventionRegister" and (not isinstance(caps, dict) or caps.get(HOST_CAPABILITY) != host):
            registered = caps.get(HOST_CAPABILITY) if isinstance(caps, dict) else None
            return f"a convention registration as host {registered!r}"
        return None
    return kind


def _to_host(host: str, peer: str, msg: Any) -> str | None:
    if isinstance(msg, Envelope) and msg.to == host_addr(peer):
        inner = msg.msg
        if isinstance(inner, ProbePing) and inner.reply_to == host_addr(host):
            return None
        if isinstance(inner, ProbePong) and inner.target == host:
            return None
    return _name(msg)
