"""Power controllers: the management node's out-of-band view of whether a host has power.

The HA manager asks ``bmc/HOST`` (``PowerQuery``); an answer of "off" proves every guest
of that host gone, so a controller answers only what it knows: ``True`` (on), ``False``
(off) or ``None`` (no answer, e.g. the BMC is unreachable), and HA waits for evidence.

- ``ipmi``: ``ipmitool chassis power status`` against the host's BMC (production).
- ``command``: any program; exit 0 = on, 1 = off, anything else = unknown.
- ``pidfile``: the lab's knowledge: a host is on while the process recorded in its pid
  file lives (the lab's power-off kills every process of the host at once).
- ``none``: no controller; the host's ``power_controller`` is then false.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class PowerController(Protocol):
    def powered_on(self, host: str) -> bool | None: ...


@dataclass(frozen=True)
class PowerSpec:
    """One host's controller as the cluster file describes it (``[real.power.HOST]``)."""

    type: str = "none"
    address: str = ""
    user: str = ""
    password_file: str = ""
    interface: str = "lanplus"
    command: tuple[str, ...] = ()
    pidfile: str = ""
    timeout_s: float = 5.0
    extra: dict[str, str] = field(default_factory=dict)


TYPES = ("none", "ipmi", "command", "pidfile")


class NoController:
    def powered_on(self, host: str) -> bool | None:
        return None


@dataclass(frozen=True)
class IpmiController:
    address: str
    user: str
    password_file: str
    interface: str = "lanplus"
    timeout_s: float = 5.0

    def argv(self) -> list[str]:
        return ["ipmitool", "-I", self.interface, "-H", self.address, "-U", self.user,
                "-f", self.password_file, "chassis", "power", "status"]

    def powered_on(self, host: str) -> bool | None:
        try:
            out = subprocess.run(self.argv(), capture_output=True, text=True, timeout=self.timeout_s,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return parse_ipmi(out.stdout) if out.returncode == 0 else None


def parse_ipmi(text: str) -> bool | None:
    """``Chassis Power is on`` / ``Chassis Power is off``; anything else is no answer."""
    words = text.strip().lower().split()
    if words[:3] == ["chassis", "power", "is"] and len(words) == 4:
        return {"on": True, "off": False}.get(words[3])
    return None


@dataclass(frozen=True)
class CommandController:
    argv: tuple[str, ...]
    timeout_s: float = 5.0

    def powered_on(self, host: str) -> bool | None:
        cmd = [a.replace("{host}", host) for a in self.argv]
        try:
            code = subprocess.run(cmd, capture_output=True, timeout=self.timeout_s, check=False).returncode
        except (OSError, subprocess.TimeoutExpired):
            return None
        return {0: True, 1: False}.get(code)


@dataclass(frozen=True)
class PidfileController:
    """``pidfile`` holds "PID STARTTIME": the start time guards against a reused pid."""

    path: str

    def powered_on(self, host: str) -> bool | None:
        try:
            pid_text, start = Path(self.path.replace("{host}", host)).read_text().split()[:2]
        except (OSError, ValueError):
            return False
        return process_start_time(int(pid_text)) == start


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] if fields[0] not in ("Z", "X") else None


def make_controller(spec: PowerSpec) -> PowerController:
    if spec.type == "ipmi":
        return IpmiController(spec.address, spec.user, spec.password_file, spec.interface, spec.timeout_s)
    if spec.type == "command":
        return CommandController(spec.command, spec.timeout_s)
    if spec.type == "pidfile":
        return PidfileController(spec.pidfile)
    return NoController()


def pidfile_line(pid: int) -> str:
    start = process_start_time(pid)
    if start is None:
        raise ProcessLookupError(pid)
    return f"{pid} {start}\n"
