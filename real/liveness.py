"""A daemon that knows it is alive, and that it is the only one.

- ``Liveness``: the daemon's main loop asks its actor system (the admin, and for the
  manager its shell) every ``PROBE_EVERY_S``; after ``MISSES`` probes in a row without an
  answer it says so and the daemon exits non-zero, so that systemd's ``Restart=`` starts
  it again. An actor system whose processes died would otherwise leave a main process
  that does nothing, forever, and a status that says the agent is up. Each answered
  probe also pets systemd's watchdog (``WatchdogSec=``) through ``sd_notify``.
- ``sd_notify``: systemd's notification protocol (a datagram to ``$NOTIFY_SOCKET``); a
  no-op outside systemd.
- ``refuse_if_listening`` / ``StateLock``: a second manager on the same admin port would
  join the running one's actor system and take over its shell; a second one on the same
  state file would write it too. Both are refused with one line naming what is in use.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable

PROBE_EVERY_S = 3.0
PROBE_TIMEOUT_S = 3.0
MISSES = 3  # a dead actor system is noticed within about MISSES * PROBE_EVERY_S
SHELL_MISSES = 20  # a management shell busy for about 2 minutes is taken for dead


class DeadActorSystem(Exception):
    """The daemon's actor system stopped answering: the daemon must exit."""


def sd_notify(state: str) -> bool:
    """Tell systemd ``state`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``); False outside systemd."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), address)
        return True
    return False


class Liveness:
    """Probes the actor system now and then; raises DeadActorSystem when it is gone.

    Each probe has its own patience (misses in a row): a dead Thespian admin is dead at
    once, but the management shell of a large cluster can be busy for many seconds
    (a thousand VM actors asking their hosts at once), and a busy shell must not get the
    whole management node restarted. systemd's watchdog is fed every round: it watches
    this loop; whether the actor system lives is decided here."""

    def __init__(self, probes: dict[str, Callable[[], bool]], log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic,
                 patience: dict[str, int] | None = None) -> None:
        self.probes = probes  # what -> True if it answered
        self.patience = {what: (patience or {}).get(what, MISSES) for what in probes}
        self.log = log
        self.clock = clock
        self.misses = dict.fromkeys(probes, 0)
        self.next_s = clock() + PROBE_EVERY_S

    def check(self) -> None:
        """Probe if it is time; DeadActorSystem once a probe's patience ran out."""
        if self.clock() < self.next_s:
            return
        for what, probe in self.probes.items():
            if probe():
                if self.misses[what]:
                    self.log(f"{what} answers again")
                self.misses[what] = 0
                continue
            self.misses[what] += 1
            n, limit = self.misses[what], self.patience[what]
            if n >= limit:
                raise DeadActorSystem(f"{what} did not answer {n} probes in a row "
                                      f"({PROBE_EVERY_S:g} s apart): exiting so that the daemon is restarted")
            self.log(f"{what} did not answer a probe ({n} of {limit})")
            break  # what comes after it depends on it: asked again next round
        self.next_s = self.clock() + PROBE_EVERY_S
        sd_notify("WATCHDOG=1")


def admin_probe(asys: object) -> Callable[[], bool]:
    """Asks Thespian's admin of ``asys`` for its status."""
    from thespian.system.messages.status import Thespian_StatusReq, Thespian_SystemStatus

    def probe() -> bool:
        admin = asys._systemBase.adminAddr  # type: ignore[attr-defined]
        reply = asys.ask(admin, Thespian_StatusReq(), PROBE_TIMEOUT_S)  # type: ignore[attr-defined]
        return isinstance(reply, Thespian_SystemStatus)

    return probe


def connect_error(ip: str, port: int, timeout_s: float = 1.0) -> str | None:
    """Why a TCP connection to ip:port fails; None when something answers there."""
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect((ip, port))
        except OSError as err:
            return err.strerror or str(err)
    return None


def refuse_if_listening(ip: str, port: int, what: str) -> str | None:
    """A reason to refuse when something answers on ip:port already."""
    if connect_error(ip, port) is not None:
        return None
    return (f"{ip}:{port} is in use (another {what} runs there?): a second one would take over its "
            "actor system; stop the other first")


class StateLock:
    """An exclusive lock on ``<state>.lock`` for the manager's lifetime (its processes
    inherit the descriptor, so the lock lasts as long as any of them)."""

    def __init__(self, state: str) -> None:
        self.path = f"{state}.lock"
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise OSError(f"{self.path}: cannot open the state lock: {err.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise OSError(f"{state}: in use by another manager (pid {holder}); one manager per state "
                          "file") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
