"""The host watchdog: a dead-man switch outside the agent process.

Why. Under Force, the manager restarts a cut-off host's VMs elsewhere once the host's
self-fencing deadline has passed since its last storage heartbeat, trusting that the
host killed its own guests. The self-fencer lives in the agent's process: if that
process dies or hangs while the host and its qemu guests live on, the heartbeat stops,
nothing fences, and the manager would start a second copy of every VM. So the agent
also pets a watchdog that does not live in its process (``actors.context.WatchdogPort``),
and its heartbeat claims "armed" only when it did; the manager trusts the self-fence of
a host only under that claim.

Two halves, one small state file between them (on the host's /run, a tmpfs):

- ``FileWatchdog`` is the agent's ``WatchdogPort``. ``pet(timeout_s)`` writes the file
  with ``armed`` and a deadline in CLOCK_MONOTONIC seconds, which every
  process of the machine shares (``time.monotonic()``; the agent and the daemon must not
  sit in different time namespaces), plus the agent's pid, the timeout and the kernel's
  boot id. ``disarm()`` writes ``disarmed``. A pet is one small write in place, into
  the file's reserved space: a /run that fills up cannot fail it.
- ``WatchdogDaemon`` (``neverstop real watchdog``) is a separate long-running process
  per compute host. It polls the file. When an arming's deadline passes without a newer
  pet, it acts once for that arming: ``kill-guests`` SIGKILLs the qemu process of every
  guest of this host (found as the self-fencer finds them: libvirt's pid files, checked
  against /proc, never through libvirtd, which may be what hangs) and keeps killing any
  that appears until the agent arms again (the host stays fenced, as after a reset);
  ``reboot`` resets the host at once through /proc/sysrq-trigger, as a hardware watchdog
  would. Either way it marks the file ``fired`` so that a restarted daemon does not act
  twice.
- ``--device /dev/watchdog`` chains the daemon to a kernel watchdog (hardware, or
  softdog): it writes to the device on every poll while it is itself healthy, so that a
  daemon that dies, hangs, or cannot kill a guest leaves the kernel to reset the host;
  a clean stop (SIGTERM) writes the magic 'V' first, which stands the device down.

A state file that cannot be read or parsed does not stop the daemon: it keeps the last
state it read (an arming stays an arming) and says so once. A file from an earlier boot
(another boot id: its monotonic deadlines mean nothing now) counts as disarmed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from real.qemu import QEMU_PID_DIR, cmdline_of, guest_name, guest_qemu_pids, kill_if_guest

ARMED, DISARMED, FIRED = "armed", "disarmed", "fired"
WATCHDOG_KEY = "watchdog"  # the label of the state file's MAC key (real.keys.Identity.local_key)
STATES = (ARMED, DISARMED, FIRED)
ACTIONS = ("kill-guests", "reboot")
STATE_MAX_BYTES = 4096
RECORD_BYTES = 1024  # the record, padded with spaces: the file's fixed size, written in place
TORN_READ_RETRY_S = 0.002
DEFAULT_POLL_S = 0.25
SURVIVOR_GRACE_S = 10.0  # a qemu still there this long after SIGKILL is stuck in the kernel
SYNC_TIMEOUT_S = 2.0  # before a reset: a sync that hangs on dead storage must not stop it
DAEMON_CHECK_S = 5.0  # how often an agent checks that a daemon watches its state file (cheap)
SYSRQ_TRIGGER = "/proc/sysrq-trigger"

Log = Callable[[str], None]


class StateError(Exception):
    """The state file exists but cannot be read or parsed."""


@dataclass(frozen=True)
class WatchdogTrouble:
    """From a host's agent shell to the management shell's log device: its watchdog's
    state file cannot be written (``error``), or can again (``error`` empty). Shown in
    ``real status``: the host's self-fence is not trusted meanwhile."""

    host: str
    error: str


def boot_id() -> str:
    """This boot's id: monotonic deadlines written under another one mean nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class WatchdogRecord:
    """The state file's content."""

    state: str = DISARMED
    deadline: float = 0.0  # CLOCK_MONOTONIC seconds: reset the host unless petted before
    timeout_s: float = 0.0
    pid: int = 0  # the agent process that wrote it
    boot: str = ""
    fired_at: float = 0.0  # CLOCK_MONOTONIC seconds the daemon acted (state fired)

    @property
    def arming(self) -> tuple[int, float]:
        """What identifies one arming: a new pet moves the deadline."""
        return (self.pid, self.deadline)

    def encode(self, key: bytes = b"") -> bytes:
        body = json.dumps(asdict(self), separators=(",", ":"))
        return (body[:-1] + f',"mac":"{_mac(key, body)}"}}\n').encode()

    @staticmethod
    def decode(data: bytes, key: bytes = b"") -> WatchdogRecord:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            mac = str(raw.pop("mac", ""))
            if not hmac.compare_digest(mac, _mac(key, json.dumps(raw, separators=(",", ":")))):
                raise StateError("not written by this host's agent or daemon (its MAC does not match "
                                 "this --key)")
            record = WatchdogRecord(state=str(raw["state"]), deadline=float(raw.get("deadline", 0.0)),
                                    timeout_s=float(raw.get("timeout_s", 0.0)), pid=int(raw.get("pid", 0)),
                                    boot=str(raw.get("boot", "")), fired_at=float(raw.get("fired_at", 0.0)))
        except (ValueError, KeyError, TypeError) as err:
            raise StateError(f"bad state record: {err}") from None
        if record.state not in STATES:
            raise StateError(f"bad state {record.state!r}")
        return record


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def read_state(path: str, key: bytes = b"") -> WatchdogRecord | None:
    """The record in ``path``; None if there is no file; StateError if it is unusable.
    A record that does not check is read once more: it may have been caught mid-write."""
    try:
        return _read_state(path, key)
    except StateError:
        time.sleep(TORN_READ_RETRY_S)
        return _read_state(path, key)


def _read_state(path: str, key: bytes) -> WatchdogRecord | None:
    try:
        with open(path, "rb") as f:
            data = f.read(STATE_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateError(f"cannot read it: {err.strerror or err}") from None
    if len(data) > STATE_MAX_BYTES:
        raise StateError("larger than a state record")
    return WatchdogRecord.decode(data, key)


def write_state(path: str, record: WatchdogRecord, key: bytes = b"") -> None:
    """Write ``record`` in place, over the file's first RECORD_BYTES.

    The file is made once, with its blocks allocated (``posix_fallocate``), and every
    later write overwrites them: a full /run cannot fail a pet, and a healthy host is
    never fenced for want of a few bytes. A reader that catches a write half done sees a
    MAC that does not match (``read_state`` reads again once before it says so). Every
    writer (agent and daemon) writes in place: a rename would orphan the other's file."""
    data = record.encode(key)
    assert len(data) <= RECORD_BYTES, len(data)
    data += b" " * (RECORD_BYTES - len(data))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        _create_state(path, data)
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(errno.EIO, "short write")
        if st.st_size > RECORD_BYTES:
            os.ftruncate(fd, RECORD_BYTES)  # a longer file (garbage) must not keep a tail
    finally:
        os.close(fd)


def _create_state(path: str, data: bytes) -> None:
    """Make the state file with its space reserved, whole or not at all."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.posix_fallocate(fd, 0, RECORD_BYTES)
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(errno.EIO, "short write")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def daemon_pidfile(state_path: str) -> str:
    """Where the daemon watching ``state_path`` says it runs ("PID STARTTIME")."""
    return f"{state_path}.daemon"


def daemon_running(state_path: str) -> int | None:
    """The pid of the live daemon watching ``state_path``, or None."""
    from real.power import process_start_time

    try:
        pid_text, start = Path(daemon_pidfile(state_path)).read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if process_start_time(pid) == start else None


def describe(state_path: str, now: float | None = None, key: bytes = b"") -> str:
    """One line for people (``neverstop lab status``): the daemon and the state."""
    now = time.monotonic() if now is None else now
    pid = daemon_running(state_path)
    daemon = f"daemon {pid}" if pid else "NO daemon"
    try:
        record = read_state(state_path, key)
    except StateError as err:
        return f"{daemon}, state unreadable ({err})"
    if record is None or (record.boot and record.boot != boot_id()):
        return f"{daemon}, never armed"
    if record.state == ARMED:
        left = record.deadline - now
        when = f"fires in {left:.1f} s" if left >= 0 else f"deadline passed {-left:.1f} s ago"
        return f"{daemon}, armed by agent {record.pid} ({when})"
    if record.state == FIRED:
        return f"{daemon}, FIRED {now - record.fired_at:.1f} s ago (agent {record.pid} stopped petting)"
    return f"{daemon}, disarmed"


# -- the agent's half ------------------------------------------------------------------------------


class FileWatchdog:
    """``actors.context.WatchdogPort`` on the state file the daemon watches.

    Called in the agent's actor thread every heartbeat interval, so it does the least it
    can: one write in place on a tmpfs. The file is made (its space reserved) when the
    agent starts, so that a /run that fills up later cannot fail a pet. A pet that
    cannot be written all the same is logged, reported (``report``: the agent tells the
    manager, which shows it in ``real status``) and not claimed in the heartbeat; the
    daemon then fires at the previous deadline, the safe way to fail.
    """

    def __init__(self, path: str, log: Log | None = None, clock: Callable[[], float] = time.monotonic,
                 daemon_check_s: float = DAEMON_CHECK_S, key: bytes = b"",
                 report: Log | None = None) -> None:
        self.path = path
        self.key = key
        self.log = log or (lambda _text: None)
        self.report = report or (lambda _error: None)  # the write error, "" once writes work again
        self.clock = clock
        self.pid = os.getpid()
        self.boot = boot_id()
        self.daemon_check_s = daemon_check_s
        self._next_daemon_check = float("-inf")
        self._daemon_seen: bool | None = None
        self._write_failed = False
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if not os.path.lexists(path):
            self._write(WatchdogRecord(DISARMED, 0.0, 0.0, self.pid, self.boot))  # reserve its space now

    @property
    def failing(self) -> bool:
        """The last write failed."""
        return self._write_failed

    def pet(self, timeout_s: float) -> bool:
        """Write the deadline; True only if it was written and a daemon was seen watching
        the file at the last check (every ``daemon_check_s``): the agent claims its
        guests covered only then."""
        now = self.clock()
        self._write(WatchdogRecord(ARMED, now + timeout_s, timeout_s, self.pid, self.boot))
        if now >= self._next_daemon_check:
            self._next_daemon_check = now + self.daemon_check_s
            self._check_daemon()
        return bool(self._daemon_seen) and not self._write_failed

    def disarm(self) -> None:
        self._write(WatchdogRecord(DISARMED, 0.0, 0.0, self.pid, self.boot))

    def _write(self, record: WatchdogRecord) -> None:
        try:
            write_state(self.path, record, self.key)
        except OSError as err:
            if not self._write_failed:
                why = err.strerror or str(err)
                self.log(f"watchdog: cannot write {self.path} ({why}); the heartbeat no longer claims "
                         f"a fence, and the watchdog will act at its last deadline")
                self.report(f"cannot write {self.path}: {why}")
            self._write_failed = True
            return
        if self._write_failed:
            self.log(f"watchdog: {self.path} written again")
            self.report("")
        self._write_failed = False

    def _check_daemon(self) -> None:
        """Say so, once per change, when no daemon watches the file: the agent then does
        not claim its guests covered, and the manager does not trust its self-fence."""
        seen = daemon_running(self.path) is not None
        if seen != self._daemon_seen:
            if not seen:
                self.log(f"watchdog: NO watchdog daemon watches {self.path}: the manager will not "
                         "trust this host's self-fencing (start neverstop-watchdog)")
            elif self._daemon_seen is False:
                self.log(f"watchdog: a watchdog daemon watches {self.path} again")
        self._daemon_seen = seen


# -- the daemon's decisions --------------------------------------------------------------------------


class WatchdogLogic:
    """What the daemon knows and decides, without I/O: fed each read of the state file.

    ``known`` is the last usable record; an unreadable file or one that vanished leaves
    it as it was. ``fired`` is the arming the daemon acted on, also learned from a
    ``fired`` record left by an earlier daemon: one action per arming.
    """

    def __init__(self, boot: str) -> None:
        self.boot = boot
        self.known = WatchdogRecord(DISARMED)
        self.fired: tuple[int, float] | None = None
        self.ever_read = False
        self.trouble = ""  # why the file is not usable now ("" while it is)

    def observe(self, record: WatchdogRecord | None, error: str = "") -> str | None:
        """Take one read (a record, None for no file, or an error); a line to log, if any."""
        if error or (record is None and self.ever_read):
            why = error or "the file is gone"
            first = not self.trouble
            self.trouble = why
            if first:
                return f"state file unusable ({why}): keeping the last known state ({self.known.state})"
            return None
        if record is None:
            return None  # no agent armed it yet
        line = None
        if self.trouble:
            line = "state file usable again"
            self.trouble = ""
        self.ever_read = True
        if record.boot and self.boot and record.boot != self.boot:
            if self.known.state != DISARMED or self.known.boot != record.boot:
                line = "state file is from an earlier boot: disarmed"
            self.known = WatchdogRecord(DISARMED, boot=record.boot)
            return line
        self.known = record
        if record.state == FIRED:
            self.fired = record.arming
        return line

    def due(self, now: float) -> bool:
        """The current arming's deadline passed and it has not been acted on."""
        k = self.known
        return k.state == ARMED and now >= k.deadline and k.arming != self.fired

    def fenced(self) -> bool:
        """The daemon acted on the current arming and no new pet came since."""
        k = self.known
        return k.state == FIRED or (k.state == ARMED and k.arming == self.fired)

    def mark_fired(self, now: float) -> WatchdogRecord:
        """Remember the action; the record to write back."""
        self.fired = self.known.arming
        self.known = replace(self.known, state=FIRED, fired_at=now)
        return self.known


# -- the daemon --------------------------------------------------------------------------------------


class WatchdogDevice:
    """A kernel watchdog device (/dev/watchdog): any write pets it; 'V' just before
    close stands it down. Closed without the 'V' (the daemon died), it resets the host
    when its own timeout passes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = os.open(path, os.O_WRONLY | os.O_CLOEXEC)

    def keepalive(self) -> None:
        if self.fd is not None:
            os.write(self.fd, b"\0")

    def close(self, magic: bool) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if magic:
                os.write(fd, b"V")
        finally:
            os.close(fd)


def _log_line(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} neverstop-watchdog[{os.getpid()}]: {text}\n")
    sys.stderr.flush()


class WatchdogDaemon:
    """The daemon's loop: read the state, decide, act, pet the device.

    The production path finds guests with ``real.qemu.guest_qemu_pids`` in
    ``qemu_pid_dir``; ``find_guests``, ``kill_guest``, ``sync`` and ``sysrq_path`` are
    there for tests (a reset or a kill of the wrong process is not something a test may
    do on the machine it runs on).
    """

    def __init__(self, state_path: str, action: str, device: str | None = None,
                 poll_s: float = DEFAULT_POLL_S, qemu_pid_dir: str = QEMU_PID_DIR,
                 find_guests: Callable[[], Mapping[str, int]] | None = None,
                 kill_guest: Callable[[int, str], bool] = kill_if_guest,
                 still_running: Callable[[int, str], bool] | None = None,
                 sync: Callable[[], None] = os.sync, sysrq_path: str = SYSRQ_TRIGGER,
                 clock: Callable[[], float] = time.monotonic, log: Log = _log_line,
                 survivor_grace_s: float = SURVIVOR_GRACE_S, key: bytes = b"") -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        self.state_path = state_path
        self.key = key
        self.action = action
        self.poll_s = poll_s
        self.find_guests = find_guests or (lambda: guest_qemu_pids(qemu_pid_dir))
        self.kill_guest = kill_guest
        self.still_running = still_running or (lambda pid, vm: guest_name(cmdline_of(pid)) == vm)
        self.sync = sync
        self.sysrq_path = sysrq_path
        self.clock = clock
        self.log = log
        self.survivor_grace_s = survivor_grace_s
        self.logic = WatchdogLogic(boot_id())
        self.device = WatchdogDevice(device) if device else None
        self.killed: dict[int, tuple[str, float]] = {}  # pid -> (guest, when), until it is gone
        self.reset_failed = False
        self.healthy = True

    # -- one poll ----------------------------------------------------------------------------

    def poll_once(self) -> None:
        now = self.clock()
        try:
            record, error = read_state(self.state_path, self.key), ""
        except StateError as err:
            record, error = None, str(err)
        line = self.logic.observe(record, error)
        if line:
            self.log(line)
        if self.logic.due(now):
            self.fire(now)
        elif self.logic.fenced() and (self.action == "kill-guests" or self.reset_failed):
            self._sweep(now)
        self._check_survivors(now)
        if self.device is not None and self.healthy:
            try:
                self.device.keepalive()
            except OSError as err:
                self.healthy = False
                self.log(f"cannot write to watchdog device {self.device.path}: {err.strerror or err}")

    def fire(self, now: float) -> None:
        """The arming's deadline passed: act, once, and record that it did."""
        k = self.logic.known
        what = (f"agent {k.pid} did not pet within {k.timeout_s:g} s "
                f"(deadline passed {now - k.deadline:.2f} s ago)")
        if self.logic.trouble:  # said when it began; said again: this is why the arming stood
            what += f"; the state file is unusable ({self.logic.trouble}), so its last readable arming counts"
        record = self.logic.mark_fired(now)
        if self.action == "reboot":
            self._write_fired(record)  # first: the reset leaves no time after it
            self.log(f"FIRED: {what}: resetting this host now (sysrq b)")
            if self._reset():
                return
            self.reset_failed = True
            self.healthy = False  # with a device, the kernel resets the host
            self.log("FIRED: the reset failed: killing this host's guests instead")
        killed = self._kill_all(now)  # before anything else: this is what the manager counts on
        names = ", ".join(f"{vm} (qemu {pid})" for vm, pid in killed) or "none running"
        self.log(f"FIRED: {what}: killed this host's guests: {names}")
        self._write_fired(record)

    def _write_fired(self, record: WatchdogRecord) -> None:
        """Mark the file fired (a restarted daemon must not act again) unless a pet came
        in the meantime: a pet wins."""
        try:
            current = read_state(self.state_path, self.key)
            if current is None or current.arming == record.arming:
                write_state(self.state_path, record, self.key)
        except (OSError, StateError) as err:
            self.log(f"cannot mark {self.state_path} fired: {err}")

    def _kill_all(self, now: float) -> list[tuple[str, int]]:
        killed = []
        for vm, pid in sorted(self.find_guests().items()):
            if self.kill_guest(pid, vm):
                killed.append((vm, pid))
                self.killed.setdefault(pid, (vm, now))
        return killed

    def _sweep(self, now: float) -> None:
        """While fenced, a guest that appears (a start libvirtd still held) dies too."""
        for vm, pid in self._kill_all(now):
            if self.killed.get(pid, ("", now))[1] == now:
                self.log(f"fenced: killed qemu {pid} of {vm}, started after the watchdog fired")

    def _check_survivors(self, now: float) -> None:
        """A qemu that SIGKILL did not remove (stuck in the kernel on dead storage) is
        still a running guest: say so, and stop petting the device so that the kernel
        resets the host."""
        for pid, (vm, when) in list(self.killed.items()):
            if not self.still_running(pid, vm):
                del self.killed[pid]
            elif now - when > self.survivor_grace_s and self.healthy:
                self.healthy = False
                tail = ("no longer petting the watchdog device: the kernel will reset this host"
                        if self.device is not None else "it may still run (no --device to escalate to)")
                self.log(f"qemu {pid} of {vm} survived SIGKILL for {self.survivor_grace_s:g} s: {tail}")

    def _reset(self) -> bool:
        """``sync`` (bounded: it hangs on dead storage), then sysrq 'b': an immediate reset."""
        done = threading.Thread(target=self.sync, name="sync", daemon=True)
        done.start()
        done.join(SYNC_TIMEOUT_S)
        try:
            with open(self.sysrq_path, "wb", buffering=0) as f:
                f.write(b"b")
        except OSError as err:
            self.log(f"cannot write to {self.sysrq_path}: {err.strerror or err}")
            return False
        return True

    # -- the process ---------------------------------------------------------------------------

    def announce(self) -> None:
        """Write the daemon's pid file (agents and ``lab status`` check it)."""
        from real.power import pidfile_line

        path = daemon_pidfile(self.state_path)
        tmp = f"{path}.{os.getpid()}.tmp"
        Path(tmp).write_text(pidfile_line(os.getpid()))
        os.replace(tmp, path)

    def run(self, stopping: Callable[[], bool]) -> int:
        self.announce()
        device = f", chained to {self.device.path}" if self.device is not None else ""
        self.log(f"watching {self.state_path} every {self.poll_s:g} s; action {self.action}{device}")
        clean = False
        try:
            while not stopping():
                self.poll_once()
                time.sleep(self.poll_s)
            clean = True
        finally:
            if self.device is not None:
                with contextlib.suppress(OSError):
                    self.device.close(magic=clean and self.healthy)
            with contextlib.suppress(OSError):
                if Path(daemon_pidfile(self.state_path)).read_text().split()[0] == str(os.getpid()):
                    os.unlink(daemon_pidfile(self.state_path))
        if self.logic.known.state == ARMED and not self.logic.fenced():
            self.log("stopped while the agent's watchdog is ARMED: nothing watches this host's guests now")
        else:
            self.log("stopped")
        return 0


def run_daemon(state: str, action: str, device: str | None, poll_s: float, qemu_pid_dir: str,
               key: bytes = b"") -> int:
    """``neverstop real watchdog``: raise ValueError (one line) on bad input."""
    if not poll_s > 0 or poll_s > 5:
        raise ValueError(f"--poll {poll_s:g}: expected seconds between 0 and 5")
    if os.path.isdir(state):
        raise ValueError(f"--state {state}: is a directory, not a file")
    directory = os.path.dirname(os.path.abspath(state))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--state {state}: cannot create {directory}: {err.strerror or err}") from None
    if not os.access(directory, os.W_OK):
        raise ValueError(f"--state {state}: {directory} is not writable")
    try:
        daemon = WatchdogDaemon(state, action, device, poll_s, qemu_pid_dir, key=key)
    except OSError as err:
        raise ValueError(f"--device {device}: cannot open it: {err.strerror or err}") from None
    stop = {"now": False}

    def handler(_sig: int, _frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    os.umask(0o077)  # whatever it writes is root's alone
    return daemon.run(lambda: stop["now"])
