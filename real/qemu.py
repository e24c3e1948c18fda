"""Finding a host's qemu processes without asking libvirtd.

Both killers of guests need this: the agent's self-fencer (``real.libvirt_port``) and the
host watchdog daemon (``real.watchdog``). Neither may depend on libvirtd, which may be
the very thing that hangs, and the watchdog daemon must not even depend on the agent's
process being alive. So they read libvirt's pid files (``/run/libvirt/qemu/NAME.pid`` for
``qemu:///system``) and check each pid against ``/proc/PID/cmdline``: a pid file left by
a guest that died names a pid that may belong to somebody else by now.

No libvirt import here: the watchdog daemon stays a small process with no C binding.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

QEMU_PID_DIR = "/run/libvirt/qemu"  # qemu:///system's pid files; per host (a lab host has its own /run)


def guest_name(cmdline: bytes) -> str | None:
    """The guest a qemu command line runs (``-name guest=NAME,...``), or None when the
    process is not a qemu (its argv[0] names no qemu) or names no guest.

    libvirt writes a comma in a name as ``,,``; a single comma ends the name.
    """
    args = cmdline.rstrip(b"\0").split(b"\0")
    if not args or b"qemu" not in os.path.basename(args[0]):
        return None
    for flag, value in zip(args, args[1:], strict=False):
        if flag != b"-name":
            continue
        if value.startswith(b"guest="):
            value = value[len(b"guest="):]
        name = bytearray()
        i = 0
        while i < len(value):
            if value[i:i + 1] == b",":
                if value[i + 1:i + 2] != b",":
                    break
                i += 1
            name += value[i:i + 1]
            i += 1
        return name.decode(errors="replace") or None
    return None


def cmdline_of(pid: int) -> bytes:
    """The raw command line of ``pid`` (NUL-separated); b"" when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def qemu_pid(pid_dir: str, vm: str) -> int | None:
    """The pid of guest ``vm``'s qemu per libvirt's pid file, if that pid still is it."""
    try:
        pid = int(Path(pid_dir, f"{vm}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and guest_name(cmdline_of(pid)) == vm else None


def guest_qemu_pids(pid_dir: str = QEMU_PID_DIR) -> dict[str, int]:
    """Every guest of this host with a live qemu process: guest name -> pid.

    Only guests whose pid file names a live qemu of that guest count; a missing pid
    directory (libvirtd never ran here, or its /run is gone) means no guests.
    """
    found: dict[str, int] = {}
    try:
        entries = sorted(os.listdir(pid_dir))
    except OSError:
        return found
    for entry in entries:
        if entry.endswith(".pid") and len(entry) > len(".pid"):
            vm = entry[:-len(".pid")]
            pid = qemu_pid(pid_dir, vm)
            if pid is not None:
                found[vm] = pid
    return found


def kill_qemu(pid_dir: str, vm: str, log: Callable[[str], None] | None = None,
              what: str = "killed") -> int | None:
    """SIGKILL guest ``vm``'s qemu, found through libvirt's pid file; its pid, or None
    when it has no live qemu (then there is nothing to kill, or the pid file is stale)."""
    pid = qemu_pid(pid_dir, vm)
    if pid is None or not kill_if_guest(pid, vm):
        return None
    if log is not None:
        log(f"{what} qemu {pid} of {vm}")
    return pid


def kill_if_guest(pid: int, vm: str) -> bool:
    """SIGKILL ``pid`` if it is (still) guest ``vm``'s qemu; whether it was.

    Through a pidfd where the kernel has them: the check and the kill then concern the
    same process even if the pid is reused in between.
    """
    fd: int | None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfd here: a plain kill right after the check
        fd = None
    try:
        if guest_name(cmdline_of(pid)) != vm:
            return False
        with contextlib.suppress(ProcessLookupError):
            if fd is None:
                os.kill(pid, signal.SIGKILL)
            else:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    finally:
        if fd is not None:
            os.close(fd)
