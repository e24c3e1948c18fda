"""The cluster file of real mode: a scenario file's cluster tables plus a ``[real]`` table.

``[[host]]``, ``[[storage]]``, ``[[vm]]``, ``[ha]`` and ``profile`` mean exactly what they
mean in a scenario, and are checked by the same parser (``formats.scenario``), so a cluster
that runs in the simulator runs on real hosts. ``name``, ``description`` and
``duration`` are optional here; ``[[event]]`` and ``[[expect]]`` are refused. What only
real hosts need lives in ``[real]``::

    [real]
    state = "/var/lib/neverstop/state.db"     # SQLite file of the HA state
    guest = "kvm"                              # libvirt domain type: kvm, qemu (TCG) or test
    migration_uri = "qemu+tls://{ip}/system"   # how a source libvirtd reaches a destination
    migration_stream = ""                      # qemu's stream, e.g. "tcp://{ip}" ("" = libvirt's)
    shutdown_timeout = "30s"                   # graceful stop, then destroy
    [real.mounts]                              # shared pool -> mount point on every host
    nfs-1 = "/mnt/nfs-1"
    [real.power.host-1]                        # a host's power controller (see real.power)
    type = "ipmi"
    address = "10.0.0.101"
    user = "admin"
    password_file = "/etc/neverstop/ipmi-host-1"

A ``[real.power."*"]`` table applies to hosts without their own. A host without a
controller is built with ``power_controller = false``: HA then relies on the other
evidence (peers, storage heartbeats).
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from actors.config import HaConfig
from actors.inventory import Inventory
from formats.scenario import ScenarioError, scenario_from_document
from formats.units import UnitError, parse_duration, parse_memory
from real.domain import GuestTemplate
from real.power import TYPES, PowerSpec

_REAL_KEYS = ("state", "guest", "emulator", "guest_memory", "migration_uri", "migration_stream",
              "shutdown_timeout", "libvirt_refresh", "run_dir", "mounts", "power")
_POWER_KEYS = ("type", "address", "user", "password_file", "interface", "command", "pidfile", "timeout")
_GUESTS = ("kvm", "qemu", "test")
POWER_TIMEOUT_MAX_S = 60.0  # a power query that takes longer holds up a verdict for nothing


class ClusterError(ValueError):
    """A cluster file that cannot be used: one line, ``FILE: LOCATION: reason``."""


@dataclass(frozen=True)
class RealSettings:
    state: str = "/var/lib/neverstop/state.db"
    guest: str = "kvm"
    emulator: str = ""
    guest_memory_mib: int = 0
    migration_uri: str = "qemu+tls://{ip}/system"
    migration_stream: str = ""
    shutdown_timeout_s: float = 30.0
    libvirt_refresh_s: float = 2.0
    run_dir: str = "/run/neverstop"
    mounts: dict[str, str] = field(default_factory=dict)
    power: dict[str, PowerSpec] = field(default_factory=dict)

    def template(self) -> GuestTemplate:
        return GuestTemplate(self.guest, self.emulator, dict(self.mounts), self.guest_memory_mib)

    def power_for(self, host: str) -> PowerSpec:
        return self.power.get(host) or self.power.get("*") or PowerSpec()


@dataclass(frozen=True)
class Cluster:
    name: str
    inventory: Inventory
    config: HaConfig
    profile: str
    settings: RealSettings
    path: str = ""


def load_cluster(path: str | Path) -> Cluster:
    """Read, check and parse a cluster file. It can name programs that run as root (command
    power controllers), so it must be root's and writable by nobody else; so must the
    IPMI password files it names, which nobody else may read."""
    name = str(path)
    try:
        st = os.stat(path)
        text = Path(path).read_text()
    except OSError as err:
        raise ClusterError(f"{name}: file: cannot read: {err.strerror or err}") from None
    if st.st_uid not in (0, os.geteuid()):
        raise ClusterError(f"{name}: file: owned by uid {st.st_uid}, not root (it names programs root runs)")
    if st.st_mode & 0o022:
        raise ClusterError(f"{name}: file: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}; "
                           f"it names programs root runs); run: chmod go-w {name}")
    cluster = parse_cluster(text, name)
    for host, spec in cluster.settings.power.items():
        if spec.type == "ipmi":
            _check_password_file(spec.password_file, f"{name}: real.power.{host}.password_file")
    return cluster


def _check_password_file(path: str, where: str) -> None:
    try:
        st = os.stat(path)
    except OSError as err:
        raise ClusterError(f"{where}: {path}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ClusterError(f"{where}: {path}: not a regular file")
    if st.st_mode & 0o007:
        raise ClusterError(f"{where}: {path}: readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                           f"run: chmod o-rwx {path}")


def parse_cluster(text: str, path: str = "<string>") -> Cluster:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ClusterError(f"{path}: invalid TOML: {err}") from None
    for key in ("event", "expect"):
        if key in doc:
            raise ClusterError(f"{path}: {key}: a cluster file has no [[{key}]] tables (scenarios do)")
    real = doc.pop("real", {})
    if not isinstance(real, dict):
        raise ClusterError(f"{path}: real: expected a table ([real])")
    doc.setdefault("name", Path(path).stem)
    doc.setdefault("description", "")
    doc.setdefault("duration", "1h")
    from formats.inventory import build_inventory

    try:
        scenario = scenario_from_document(doc, path)
    except ScenarioError as err:
        raise ClusterError(str(err)) from None
    settings = _settings(real, path)
    inventory = build_inventory(scenario)
    pools = {p.name: p for p in inventory.pools}
    for pool in settings.mounts:
        if pool not in pools:
            raise ClusterError(f"{path}: real.mounts.{pool}: unknown pool {pool!r}")
    for host in settings.power:
        if host != "*" and host not in {h.name for h in inventory.hosts}:
            raise ClusterError(f"{path}: real.power.{host}: unknown host {host!r}")
    hosts = tuple(replace(h, power_controller=h.power_controller
                          and settings.power_for(h.name).type != "none") for h in inventory.hosts)
    inventory = replace(inventory, hosts=hosts)
    return Cluster(scenario.name, inventory, scenario.config, scenario.profile, settings, path)


def _settings(real: dict[str, Any], path: str) -> RealSettings:
    def bad(where: str, why: str) -> ClusterError:
        return ClusterError(f"{path}: real.{where}: {why}")

    for key in real:
        if key not in _REAL_KEYS:
            raise bad(key, f"unknown key (known: {', '.join(_REAL_KEYS)})")

    def text(key: str, default: str) -> str:
        value = real.get(key, default)
        if not isinstance(value, str):
            raise bad(key, f"expected a string, got {value!r}")
        return value

    def seconds(key: str, default: float) -> float:
        if key not in real:
            return default
        try:
            value = parse_duration(real[key], f"real.{key}")
        except UnitError as err:
            raise bad(key, err.reason) from None
        if value <= 0:
            raise bad(key, "must be longer than zero")
        return value

    guest = text("guest", "kvm")
    if guest not in _GUESTS:
        raise bad("guest", f"unknown guest type {guest!r} (known: {', '.join(_GUESTS)})")
    memory = 0
    if "guest_memory" in real:
        try:
            memory = parse_memory(real["guest_memory"], "real.guest_memory")
        except UnitError as err:
            raise bad("guest_memory", err.reason) from None
    mounts = real.get("mounts", {})
    if not isinstance(mounts, dict) or not all(isinstance(v, str) for v in mounts.values()):
        raise bad("mounts", "expected a table of pool = \"/mount/point\"")
    power_raw = real.get("power", {})
    if not isinstance(power_raw, dict):
        raise bad("power", "expected a table of [real.power.HOST] tables")
    power = {host: _power(spec, f"power.{host}", bad) for host, spec in power_raw.items()}
    for key in ("migration_uri", "migration_stream"):
        _check_template(text(key, getattr(RealSettings, key)), key, bad)
    return RealSettings(
        state=text("state", RealSettings.state),
        guest=guest,
        emulator=text("emulator", ""),
        guest_memory_mib=memory,
        migration_uri=text("migration_uri", RealSettings.migration_uri),
        migration_stream=text("migration_stream", ""),
        shutdown_timeout_s=seconds("shutdown_timeout", RealSettings.shutdown_timeout_s),
        libvirt_refresh_s=seconds("libvirt_refresh", RealSettings.libvirt_refresh_s),
        run_dir=text("run_dir", RealSettings.run_dir),
        mounts=dict(mounts),
        power=power,
    )


def _check_template(template: str, key: str, bad: Any) -> None:
    """A migration template is filled in for every host that joins: find its mistakes now."""
    if not template and key == "migration_stream":
        return
    try:
        uri = template.format(ip="192.0.2.1", host="host-1")
    except (KeyError, IndexError, ValueError) as err:
        raise bad(key, f"bad template {template!r} ({err}): only {{ip}} and {{host}} "
                       "may be filled in") from None
    if "://" not in uri or any(c.isspace() for c in uri):
        raise bad(key, f"{template!r} is not a URI template such as qemu+tls://{{ip}}/system")


def _power(spec: Any, where: str, bad: Any) -> PowerSpec:
    if not isinstance(spec, dict):
        raise bad(where, "expected a table")
    for key in spec:
        if key not in _POWER_KEYS:
            raise bad(f"{where}.{key}", f"unknown key (known: {', '.join(_POWER_KEYS)})")
    kind = spec.get("type", "none")
    if kind not in TYPES:
        raise bad(f"{where}.type", f"unknown controller {kind!r} (known: {', '.join(TYPES)})")
    command = spec.get("command", [])
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise bad(f"{where}.command", "expected an array of strings")
    required = {"ipmi": ("address", "user", "password_file"), "command": ("command",),
                "pidfile": ("pidfile",)}
    for key in required.get(kind, ()):
        if not spec.get(key):
            raise bad(where, f"a {kind} controller needs {key!r}")
    if kind == "ipmi" and spec.get("interface", "lanplus") == "lan":
        raise bad(f"{where}.interface", "'lan' (IPMI 1.5) sends the password in the clear: use lanplus")
    raw_timeout = timeout = spec.get("timeout", 5)
    if isinstance(timeout, str):
        try:
            timeout = parse_duration(timeout, f"real.{where}.timeout")
        except UnitError as err:
            raise bad(f"{where}.timeout", err.reason) from None
    number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    if not number or not 0 < timeout <= POWER_TIMEOUT_MAX_S:
        raise bad(f"{where}.timeout", f"expected a duration above 0 and at most {POWER_TIMEOUT_MAX_S:g} s, "
                  f"got {raw_timeout!r}")
    return PowerSpec(type=kind, address=str(spec.get("address", "")), user=str(spec.get("user", "")),
                     password_file=str(spec.get("password_file", "")),
                     interface=str(spec.get("interface", "lanplus")), command=tuple(command),
                     pidfile=str(spec.get("pidfile", "")), timeout_s=float(timeout))
