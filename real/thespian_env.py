"""Thespian settings neverstop needs, applied before Thespian is first imported.

- Convention membership: Thespian 4.0.1 members do not re-register on their own timer
  (seen on this platform), so ``neverstop real agent`` re-registers every few seconds by
  updating a capability (``real.daemon``); that is also how a compute host joins a
  restarted management node. The leader forgets a member after 6 missed periods of 10 s.
  Membership says nothing to HA: liveness comes from neverstop's own pings, probes and
  heartbeats.
- Bind to the configured address only. Thespian listens on every interface for
  externally reachable actors; its messages are unauthenticated pickles, so neverstop
  binds each socket to the management address given on the command line instead.

- Transmits give up after 5 s (Thespian: 5 min) and up to 500 may be in flight (20): a
  host that cannot be reached must not hold up messages to every other host. Thespian
  keeps one queue per actor, so 20 messages stuck retrying towards a host whose link is
  down stalled the manager's pings to all hosts (seen in the lab). Delivery is not
  guaranteed anyway; the behaviours resend what matters. Not less than 5 s: the answer
  that tells a creator where a new remote actor lives is a transmit too, and on a loaded
  machine (64 agents starting on 2 cores) 2 s lost it, and with it the agent shell.

``real/__init__.py`` imports this module, so the environment is set before any module of
``real`` imports Thespian (Thespian reads it at import time).
"""

from __future__ import annotations

import os
from typing import Any

REREGISTRATION_PERIOD = "0:10"  # minutes:seconds, Thespian's format

REGISTRATION_MISS_MAX = "6"

os.environ.setdefault("CONVENTION_REREGISTRATION_PERIOD", REREGISTRATION_PERIOD)
os.environ.setdefault("CONVENTION_REGISTRATION_MISS_MAX", REGISTRATION_MISS_MAX)
os.environ.setdefault("THESPIAN_TRANSMIT_TIMEOUT_PERIOD", "0:05")
os.environ.setdefault("THESPIAN_MAX_PENDING_TRANSMITS", "500")

_patched = False


def bind_strictly() -> None:
    """Make every Thespian socket bind to THESPIAN_BASE_IPADDR rather than all interfaces."""
    global _patched
    if _patched:
        return
    from thespian.system.transport import IPBase

    original = IPBase.IPActorAddress.__init__

    def init(self: Any, *args: Any, **kw: Any) -> None:
        original(self, *args, **kw)
        base = os.getenv("THESPIAN_BASE_IPADDR")
        bindname = getattr(self, "bindname", None)
        if base and isinstance(bindname, tuple) and bindname[0] == "":
            self.bindname = (base, bindname[1])

    IPBase.IPActorAddress.__init__ = init
    _patched = True

