"""Read a scenario file (TOML) into a ``formats.spec.Scenario``, or say exactly what is wrong.

Scenario files are written by hand, so every mistake must come back as one line an
editor can jump to: ``FILE: LOCATION: what is wrong``, for example
``scenarios/x.toml: vm[2].host: unknown host 'host-9'``. Locations name the TOML
table and key; ``[[tables]]`` and list items are counted from 1, as a person counts
them when reading the file. Nothing but ``ScenarioError`` leaves this module for bad
input: the CLI prints ``str(error)`` and exits, and the fuzzers treat any other
exception as a bug.

Everything that can be checked without running the simulation is checked here
(names resolve, pools are reachable, events fall within the run), so a simulation
never fails half-way through on a typo.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from actors.config import DURATION_KEYS, KEY_TO_FIELD, PROFILES, ConfigError, HaConfig
from actors.states import HaLevel, Network, StorageType, VmState
from formats.spec import (
    ACTIONS,
    ALL_NETWORKS,
    EventSpec,
    ExpectSpec,
    HostSpec,
    NetworkCondition,
    Scenario,
    StorageSpec,
    VmSpec,
)
from formats.units import UnitError, describe, format_duration, parse_duration, parse_memory

__all__ = ["ScenarioError", "load_scenario", "parse_scenario"]

T = TypeVar("T")
D = TypeVar("D")
E = TypeVar("E", bound=Enum)

_TOP_REQUIRED = ("name", "description", "duration")
_TOP_OPTIONAL = ("seed", "profile", "ha", "network", "storage", "host", "vm", "event", "expect")
_NETWORK_OPTIONAL = ("loss", "latency", "jitter", "clock_drift")
CLOCK_DRIFT_MAX = 0.1
_POOL_REQUIRED = ("name", "type")
_POOL_OPTIONAL = ("host",)
_HOST_REQUIRED = ("name", "cpu", "memory", "storage")
_HOST_OPTIONAL = ("cluster", "ip", "networks", "power_controller", "watchdog")
_VM_REQUIRED = ("name", "cpu", "memory", "host", "storage")
_VM_OPTIONAL = ("ip", "ha", "state")
_EXPECT_REQUIRED = ("vm",)
_EXPECT_CHECKS = ("states", "final_state", "host_not", "host", "never")
_EXPECT_OPTIONAL = ("after", "until", "within", *_EXPECT_CHECKS)

DEFAULT_CLUSTER = "Cluster-1"
# `[ha] enable = ...` and `strategy = ...` are the two keys everybody sets; spelling
# them in full ("ha.enable") is allowed too, but not both at once.
_HA_SHORTHANDS = {"enable": "ha.enable", "strategy": "ha.strategy"}

# Which kind of thing each targeted action acts on (formats.spec.ACTIONS says which have one).
HOST_ACTIONS = frozenset(
    {
        "power-off",
        "power-on",
        "maintenance-enter",
        "maintenance-exit",
        "network-down",
        "network-up",
        "storage-down",
        "storage-up",
        "link-loss",
        "clock-drift",
        "libvirt-hang",
        "libvirt-resume",
        "agent-crash",
        "agent-restart",
    }
)
VM_ACTIONS = frozenset({"vm-crash", "vm-stop", "vm-start", "set-ha", "detach-network"})
# The extra keys of formats.spec.ACTIONS that an event of that action must give.
_REQUIRED_ARGS: dict[str, frozenset[str]] = {
    "storage-down": frozenset({"pool"}),
    "storage-up": frozenset({"pool"}),
    "set-ha": frozenset({"level"}),
    "set-config": frozenset({"key", "value"}),
    "delete-network": frozenset({"network"}),
    "link-loss": frozenset({"loss"}),
    "clock-drift": frozenset({"rate"}),
}
DIRECTIONS = ("in", "out", "both")
_NETWORK_NAMES = tuple(n.value for n in Network)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")


class ScenarioError(Exception):
    """A scenario file that cannot be used; ``str()`` is one line ``FILE: LOCATION: reason``.

    The parts are kept as attributes (``path``, ``location``, ``reason``) so that tools
    such as an editor plug-in or a test can use them without parsing the message.
    """

    def __init__(self, path: str, location: str, reason: str) -> None:
        self.path = _one_line(path)
        self.location = _one_line(location)
        self.reason = _one_line(reason)
        super().__init__(f"{self.path}: {self.location}: {self.reason}")


class _Invalid(Exception):
    """A problem found inside the document, before the file name is known to be added."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def _one_line(text: str) -> str:
    """Fold line breaks into spaces: a message must stay greppable and fit one log line."""
    return " ".join(text.splitlines())


# --- entry points -------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    """Read and check the scenario file at ``path``.

    A file that is missing, unreadable or not UTF-8 is a ScenarioError like any other
    mistake, so callers need a single ``except``.
    """
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ScenarioError(name, "file", "no such file") from None
    except IsADirectoryError:
        raise ScenarioError(name, "file", "is a directory, not a scenario file") from None
    except OSError as error:
        raise ScenarioError(name, "file", f"cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        reason = f"not UTF-8 text (byte 0x{data[error.start]:02x})"
        raise ScenarioError(name, f"line {line}", reason) from None
    return parse_scenario(text, name)


def load_each(paths: Sequence[str | Path]) -> tuple[list[Scenario], list[str]]:
    """Every file read and checked, before any is run: the scenarios, and one line per
    file that failed, so that a typo in the last file is found before the first run."""
    loaded: list[Scenario] = []
    errors: list[str] = []
    for path in paths:
        try:
            loaded.append(load_scenario(path))
        except ScenarioError as err:
            errors.append(str(err))
    return loaded, errors


def parse_scenario(text: str, path: str = "<string>") -> Scenario:
    """Check a scenario given as TOML text; ``path`` is only used in messages."""
    return scenario_from_document(_parse_toml(text, path), path)


def scenario_from_document(document: dict[str, Any], path: str = "<string>") -> Scenario:
    """Check a scenario already read from TOML (a cluster file, once its ``[real]`` table is
    taken out, is read this way: the same checks, the same messages)."""
    try:
        return _build(document, path)
    except (_Invalid, UnitError) as error:
        raise ScenarioError(path, error.where, error.reason) from None


def _parse_toml(text: str, path: str) -> dict[str, Any]:
    """Parse TOML, turning tomllib's trailing ``(at line L, column C)`` into the location.

    Python 3.11's TOMLDecodeError carries the position only in its message, so it is
    read back from there; an error at the end of the input points at the last line.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        position = _TOML_POSITION.search(message)
        if position is not None:
            line, column = position.groups()
            detail = f"{message[: position.start()]} (column {column})"
        else:
            line = str(len(text.splitlines()) or 1)
            detail = f"{_TOML_AT_END.sub('', message)} (at end of file)"
        raise ScenarioError(path, f"line {line}", f"invalid TOML: {detail}") from None
    except RecursionError:
        raise ScenarioError(path, "file", "invalid TOML: nested too deeply") from None


# --- tables and typed values --------------------------------------------------------


def _join(where: str, key: str) -> str:
    """Extend a location by one key, quoting keys that contain dots as TOML does."""
    shown = key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{where}.{shown}" if where else shown


class _Table:
    """One TOML table and its location, so that each value can be checked where it stands."""

    def __init__(self, data: Mapping[str, object], where: str) -> None:
        self.data = data
        self.where = where

    @property
    def label(self) -> str:
        """The table itself in a message; the document root has no name of its own."""
        return self.where or "top level"

    def place(self, key: str) -> str:
        """The location of one of this table's keys."""
        return _join(self.where, key)

    def check_keys(self, required: Collection[str], optional: Collection[str]) -> None:
        """Refuse unknown keys first (usually a typo of a known one), then missing ones."""
        known = {*required, *optional}
        for key in self.data:
            if key not in known:
                listing = ", ".join(sorted(known))
                raise _Invalid(self.label, f"unknown key {key!r} (known: {listing})")
        for key in required:
            if key not in self.data:
                raise _Invalid(self.label, f"missing required key {key!r}")

    def get(self, key: str, convert: Callable[[object, str], T]) -> T:
        """A required value, checked and converted by ``convert``."""
        if key not in self.data:
            raise _Invalid(self.label, f"missing required key {key!r}")
        return convert(self.data[key], self.place(key))

    def get_or(self, key: str, convert: Callable[[object, str], T], default: D) -> T | D:
        """An optional value, or ``default`` when the key is absent."""
        if key not in self.data:
            return default
        return convert(self.data[key], self.place(key))


def _tables(top: _Table, key: str) -> list[_Table]:
    """The ``[[key]]`` array of tables, each with its 1-based location (``host[2]``)."""
    raw = top.data.get(key, [])
    if isinstance(raw, dict):
        raise _Invalid(key, f"write [[{key}]] (an array of tables), not [{key}]")
    if not isinstance(raw, list):
        raise _Invalid(key, f"expected an array of tables ([[{key}]]), got {describe(raw)}")
    tables = []
    for number, item in enumerate(raw, 1):
        where = f"{key}[{number}]"
        if not isinstance(item, dict):
            raise _Invalid(where, f"expected a table, got {describe(item)}")
        tables.append(_Table(item, where))
    return tables


def _text(value: object, where: str) -> str:
    """Any string, possibly empty (descriptions)."""
    if not isinstance(value, str):
        raise _Invalid(where, f"expected a string, got {describe(value)}")
    return value


def _name(value: object, where: str) -> str:
    """A name that other tables refer to: a non-empty string."""
    text = _text(value, where)
    if not text.strip():
        raise _Invalid(where, "must not be empty")
    return text


def _flag(value: object, where: str) -> bool:
    """A TOML boolean; the strings "true"/"false" are refused to keep files uniform."""
    if not isinstance(value, bool):
        raise _Invalid(where, f"expected true or false, got {describe(value)}")
    return value


def _whole(value: object, where: str) -> int:
    """A TOML integer (not a float, not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(where, f"expected an integer, got {describe(value)}")
    return value


def _positive(value: object, where: str) -> int:
    """A count such as vCPUs: an integer of at least 1."""
    number = _whole(value, where)
    if number < 1:
        raise _Invalid(where, f"must be a positive integer, not {number}")
    return number


def _seed(value: object, where: str) -> int:
    """A random seed: an integer of at least 0."""
    number = _whole(value, where)
    if number < 0:
        raise _Invalid(where, f"must be an integer of at least 0, not {number}")
    return number


def _memory(value: object, where: str) -> int:
    """A memory size in MiB; zero is refused because nothing runs in no memory."""
    mib = parse_memory(value, where)
    if mib < 1:
        raise _Invalid(where, f"must be positive, not {describe(value)}")
    return mib


def _duration(value: object, where: str) -> float:
    """A point in time or a delay of zero or more seconds."""
    return parse_duration(value, where)


def _positive_duration(value: object, where: str) -> float:
    """A span that must be longer than zero (a run's length, a deadline)."""
    seconds = parse_duration(value, where)
    if seconds <= 0:
        raise _Invalid(where, f"must be longer than zero, not {describe(value)}")
    return seconds


def _ip(value: object, where: str) -> str:
    """An IPv4 or IPv6 address, checked so that a typo does not reach a report."""
    text = _text(value, where)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise _Invalid(where, f"invalid IP address {text!r}") from None
    return text


def _choice(kind: type[E], what: str) -> Callable[[object, str], E]:
    """A converter to one member of ``kind``, spelled as its value (e.g. "NeverStop")."""

    def convert(value: object, where: str) -> E:
        text = _text(value, where)
        for member in kind:
            if member.value == text:
                return member
        known = ", ".join(str(m.value) for m in kind)
        raise _Invalid(where, f"unknown {what} {text!r} (known: {known})")

    return convert


def _word(choices: Sequence[str], what: str) -> Callable[[object, str], str]:
    """A converter to one of a fixed set of strings (network names in events)."""

    def convert(value: object, where: str) -> str:
        text = _text(value, where)
        if text not in choices:
            raise _Invalid(where, f"unknown {what} {text!r} (known: {', '.join(choices)})")
        return text

    return convert


def _list_of(convert: Callable[[object, str], T]) -> Callable[[object, str], tuple[T, ...]]:
    """A converter to a tuple of items; duplicates are refused as almost surely a slip."""

    def convert_all(value: object, where: str) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _Invalid(where, f"expected an array, got {describe(value)}")
        items: list[T] = []
        for number, raw in enumerate(value, 1):
            item = convert(raw, f"{where}[{number}]")
            if item in items:
                raise _Invalid(f"{where}[{number}]", f"{raw!r} is listed twice")
            items.append(item)
        return tuple(items)

    return convert_all


_storage_type = _choice(StorageType, "storage type")
_network = _choice(Network, "network")
_ha_level = _choice(HaLevel, "HA level")
_vm_state = _choice(VmState, "VM state")
_names = _list_of(_name)
_networks = _list_of(_network)
_states = _list_of(_vm_state)


def _initial_state(value: object, where: str) -> VmState:
    """A VM starts either running or stopped; transient states cannot be set up."""
    state = _vm_state(value, where)
    if state not in (VmState.RUNNING, VmState.STOPPED):
        raise _Invalid(where, f"initial state must be Running or Stopped, not {state.value!r}")
    return state


def _profile(value: object, where: str) -> str:
    """The name of a parameter set in ``actors.config.PROFILES``."""
    name = _text(value, where)
    if name not in PROFILES:
        raise _Invalid(where, f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
    return name


def _ha_key(value: object, where: str) -> str:
    """A full HA key name as ZStack spells it (``ha.host.check.interval``)."""
    key = _text(value, where)
    if key not in KEY_TO_FIELD:
        raise _Invalid(where, f"unknown HA key {key!r} (known: {', '.join(sorted(KEY_TO_FIELD))})")
    return key


def _config_value(key: str, value: object, where: str) -> Any:
    """Check one HA value and return it typed as HaConfig stores it.

    Duration keys also take ``"2s"``-style strings; HaConfig itself only takes seconds.
    """
    if key in DURATION_KEYS:
        value = parse_duration(value, where)
    try:
        config = HaConfig().with_key(key, value)
    except ConfigError as error:
        raise _Invalid(where, str(error)) from None
    return getattr(config, KEY_TO_FIELD[key])


# --- the document -------------------------------------------------------------------


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def _by_name(specs: Sequence[N], tables: Sequence[_Table], kind: str) -> dict[str, N]:
    """Index specs by name, refusing a name given twice (references would be ambiguous)."""
    found: dict[str, N] = {}
    first: dict[str, str] = {}
    for spec, table in zip(specs, tables, strict=True):
        if spec.name in found:
            reason = f"duplicate {kind} name {spec.name!r} (also {first[spec.name]})"
            raise _Invalid(table.place("name"), reason)
        found[spec.name] = spec
        first[spec.name] = table.where
    return found


@dataclass(frozen=True)
class _World:
    """What events and expectations may refer to, once the cluster is known."""

    duration_s: float
    hosts: Mapping[str, HostSpec]
    vms: Mapping[str, VmSpec]

    @property
    def clusters(self) -> list[str]:
        """Clusters in order of first appearance."""
        return list(dict.fromkeys(h.cluster for h in self.hosts.values()))


def _build(document: dict[str, Any], path: str) -> Scenario:
    """Check the whole document, in the order a reader would fix it: top, cluster, timeline."""
    top = _Table(document, "")
    top.check_keys(_TOP_REQUIRED, _TOP_OPTIONAL)
    name = top.get("name", _name)
    description = top.get("description", _text)
    duration_s = top.get("duration", _positive_duration)
    seed = top.get_or("seed", _seed, 1)
    profile = top.get_or("profile", _profile, "default")
    config, overrides = _parse_ha(top, PROFILES[profile])
    network = _parse_network(top)
    pools, hosts = _parse_cluster(top)
    vm_tables = _tables(top, "vm")
    vms = _by_name([_parse_vm(t, hosts, pools) for t in vm_tables], vm_tables, "VM")
    world = _World(duration_s, hosts, vms)
    events = [_parse_event(t, n, world) for n, t in enumerate(_tables(top, "event"), 1)]
    expects = [_parse_expect(t, n, world) for n, t in enumerate(_tables(top, "expect"), 1)]
    return Scenario(
        name=name,
        description=description,
        duration_s=duration_s,
        storage=tuple(pools.values()),
        hosts=tuple(hosts.values()),
        vms=tuple(vms.values()),
        events=tuple(sorted(events, key=lambda event: event.at_s)),
        expects=tuple(expects),
        seed=seed,
        profile=profile,
        config=config,
        ha_overrides=overrides,
        network=network,
        path=path,
    )


def _parse_network(top: _Table) -> NetworkCondition:
    """The optional ``[network]`` table: loss, latency and jitter per link, clock drift."""
    raw = top.data.get("network", {})
    if not isinstance(raw, dict):
        raise _Invalid("network", f"expected a table ([network]), got {describe(raw)}")
    table = _Table(raw, "network")
    table.check_keys((), _NETWORK_OPTIONAL)
    default = NetworkCondition()
    return NetworkCondition(
        loss=table.get_or("loss", _ratio(1.0), default.loss),
        latency_s=table.get_or("latency", _duration, default.latency_s),
        jitter_s=table.get_or("jitter", _duration, default.jitter_s),
        clock_drift=table.get_or("clock_drift", _ratio(CLOCK_DRIFT_MAX), default.clock_drift),
    )


def parse_network_table(doc: dict[str, Any], path: str) -> NetworkCondition:
    """The ``[network]`` table of a parsed TOML document, checked by the rules of a scenario
    file: for files that hold only a network condition (``profiles/lossy-lan.toml``).
    Raises ScenarioError."""
    try:
        return _parse_network(_Table(doc, ""))
    except (_Invalid, UnitError) as err:
        raise ScenarioError(path, err.where, err.reason) from None


def _ratio(limit: float) -> Callable[[object, str], float]:
    """A number from 0 to ``limit`` (a probability, a clock-rate error)."""

    def convert(value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= limit:
            raise _Invalid(where, f"must be a number from 0 to {limit}, not {describe(value)}")
        return float(value)

    return convert


def _parse_ha(top: _Table, base: HaConfig) -> tuple[HaConfig, dict[str, Any]]:
    """Apply the ``[ha]`` overrides to the profile; return the config and the typed overrides."""
    raw = top.data.get("ha", {})
    if not isinstance(raw, dict):
        raise _Invalid("ha", f"expected a table ([ha]), got {describe(raw)}")
    config = base
    overrides: dict[str, Any] = {}
    for given, value in raw.items():
        where = _join("ha", given)
        key = _HA_SHORTHANDS.get(given, given)
        if key not in KEY_TO_FIELD:
            raise _Invalid("ha", _unknown_ha_key(given, value))
        if key in overrides:
            short = key.removeprefix("ha.")
            raise _Invalid(where, f"{key} is set twice (as {short!r} and as {key!r})")
        overrides[key] = _config_value(key, value, where)
        config = config.with_key(key, overrides[key])
    return config, overrides


def _unknown_ha_key(given: str, value: object) -> str:
    """Explain an unknown [ha] key; an unquoted dotted key shows up as a nested table."""
    if isinstance(value, dict):
        return (
            f"unknown key {given!r}: quote dotted keys in full,"
            ' e.g. "ha.host.check.interval" = "2s"'
        )
    known = ", ".join([*_HA_SHORTHANDS, *sorted(KEY_TO_FIELD)])
    return f"unknown key {given!r} (known: {known})"


def _parse_cluster(top: _Table) -> tuple[dict[str, StorageSpec], dict[str, HostSpec]]:
    """Pools and hosts, with every pool reference resolved in both directions."""
    pool_tables = _tables(top, "storage")
    pools = _by_name([_parse_pool(t) for t in pool_tables], pool_tables, "pool")
    host_tables = _tables(top, "host")
    if not host_tables:
        raise _Invalid("host", "no [[host]] tables: a scenario needs at least one host")
    hosts = _by_name([_parse_host(t, pools) for t in host_tables], host_tables, "host")
    for pool, table in zip(pools.values(), pool_tables, strict=True):
        if pool.host is not None and pool.host not in hosts:
            raise _Invalid(table.place("host"), f"unknown host {pool.host!r}")
    for host, table in zip(hosts.values(), host_tables, strict=True):
        _check_local_pools(host, table, pools)
    return pools, {name: _add_local_pools(host, pools) for name, host in hosts.items()}


def _parse_pool(table: _Table) -> StorageSpec:
    """One ``[[storage]]`` pool; only LocalStorage belongs to a single host."""
    table.check_keys(_POOL_REQUIRED, _POOL_OPTIONAL)
    name = table.get("name", _name)
    kind = table.get("type", _storage_type)
    host = table.get_or("host", _name, None)
    if kind is StorageType.LOCAL and host is None:
        raise _Invalid(
            table.label, "missing required key 'host' (a LocalStorage pool has one host)"
        )
    if kind is not StorageType.LOCAL and host is not None:
        reason = f"only a LocalStorage pool has a host; {kind.value} is shared by a cluster"
        raise _Invalid(table.place("host"), reason)
    return StorageSpec(name=name, type=kind, host=host)


def _parse_host(table: _Table, pools: Mapping[str, StorageSpec]) -> HostSpec:
    """One ``[[host]]``; its pools must exist (ownership is checked once hosts are known)."""
    table.check_keys(_HOST_REQUIRED, _HOST_OPTIONAL)
    storage = table.get("storage", _names)
    for number, pool in enumerate(storage, 1):
        if pool not in pools:
            raise _Invalid(f"{table.place('storage')}[{number}]", f"unknown pool {pool!r}")
    return HostSpec(
        name=table.get("name", _name),
        cpu=table.get("cpu", _positive),
        memory_mib=table.get("memory", _memory),
        storage=storage,
        cluster=table.get_or("cluster", _name, DEFAULT_CLUSTER),
        ip=table.get_or("ip", _ip, ""),
        networks=table.get_or("networks", _networks, ALL_NETWORKS),
        power_controller=table.get_or("power_controller", _flag, True),
        watchdog=table.get_or("watchdog", _flag, True),
    )


def _check_local_pools(host: HostSpec, table: _Table, pools: Mapping[str, StorageSpec]) -> None:
    """A LocalStorage pool is a disk inside one host: no other host can reach it."""
    for number, name in enumerate(host.storage, 1):
        owner = pools[name].host
        if owner is not None and owner != host.name:
            reason = (
                f"pool {name!r} is the LocalStorage of host {owner!r}; only that host may list it"
            )
            raise _Invalid(f"{table.place('storage')}[{number}]", reason)


def _add_local_pools(host: HostSpec, pools: Mapping[str, StorageSpec]) -> HostSpec:
    """List a host's own LocalStorage pools even where the file left them out."""
    own = [p.name for p in pools.values() if p.host == host.name and p.name not in host.storage]
    return replace(host, storage=(*host.storage, *own)) if own else host


def _parse_vm(
    table: _Table, hosts: Mapping[str, HostSpec], pools: Mapping[str, StorageSpec]
) -> VmSpec:
    """One ``[[vm]]``: its host must exist and reach its pool. Capacity is not checked here;
    an over-committed host is a situation the simulator is meant to show."""
    table.check_keys(_VM_REQUIRED, _VM_OPTIONAL)
    name = table.get("name", _name)
    cpu = table.get("cpu", _positive)
    memory_mib = table.get("memory", _memory)
    host = table.get("host", _name)
    if host not in hosts:
        raise _Invalid(table.place("host"), f"unknown host {host!r}")
    storage = table.get("storage", _name)
    if storage not in pools:
        raise _Invalid(table.place("storage"), f"unknown pool {storage!r}")
    if storage not in hosts[host].storage:
        raise _Invalid(table.place("storage"), f"host {host!r} does not list pool {storage!r}")
    return VmSpec(
        name=name,
        cpu=cpu,
        memory_mib=memory_mib,
        host=host,
        storage=storage,
        ip=table.get_or("ip", _ip, ""),
        ha=table.get_or("ha", _ha_level, HaLevel.NONE),
        state=table.get_or("state", _initial_state, VmState.RUNNING),
    )


# --- events -------------------------------------------------------------------------


def _action(value: object, where: str) -> str:
    """An event action from ``formats.spec.ACTIONS``."""
    action = _text(value, where)
    if action not in ACTIONS:
        raise _Invalid(where, f"unknown action {action!r} (known: {', '.join(sorted(ACTIONS))})")
    return action


def _parse_event(table: _Table, number: int, world: _World) -> EventSpec:
    """One ``[[event]]``: when, what, on which host or VM, with its action's own keys."""
    action = table.get("action", _action)
    needs_target, extras = ACTIONS[action]
    fixed = {"at", "action", "target"} if needs_target else {"at", "action"}
    required = fixed | _REQUIRED_ARGS.get(action, frozenset())
    table.check_keys(sorted(required), sorted(extras - required))
    at_s = table.get("at", _duration)
    if at_s > world.duration_s:
        reason = (
            f"{format_duration(at_s)} is after the end of the run"
            f" (duration {format_duration(world.duration_s)})"
        )
        raise _Invalid(table.place("at"), reason)
    target = _target(table, action, world) if needs_target else None
    args = _ARGS[action](table, target, world)
    return EventSpec(at_s=at_s, action=action, target=target, args=args, line=number)


def _target(table: _Table, action: str, world: _World) -> str:
    """The host or VM an action acts on; naming the other kind is called out as such."""
    name = table.get("target", _name)
    wants_host = action in HOST_ACTIONS
    wanted, other = (world.hosts, world.vms) if wants_host else (world.vms, world.hosts)
    kind, other_kind = ("host", "VM") if wants_host else ("VM", "host")
    if name in wanted:
        return name
    if name in other:
        raise _Invalid(
            table.place("target"), f"{name!r} is a {other_kind}; {action} acts on a {kind}"
        )
    raise _Invalid(table.place("target"), f"unknown {kind} {name!r}")


_Args = Callable[[_Table, "str | None", _World], dict[str, Any]]


def _no_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """Actions that need nothing but their target."""
    return {}


def _stop_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """vm-stop: ``no_restart`` stops a NeverStop VM for good, as a user's stop does."""
    return {"no_restart": table.get_or("no_restart", _flag, False)}


def _host_network_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """network-down/up: one network of the host, or all of them at once; ``direction``
    makes a one-way partition (``in``: the host hears nothing, ``out``: it is not heard)."""
    choices = (*_NETWORK_NAMES, "all")
    return {
        "network": table.get_or("network", _word(choices, "network"), "all"),
        "direction": table.get_or("direction", _word(DIRECTIONS, "direction"), "both"),
    }


def _link_loss_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """link-loss: the host's link(s) drop a share of messages and add latency to each;
    ``loss = 0`` (with no latency) sets the link back."""
    choices = (*_NETWORK_NAMES, "all")
    return {
        "network": table.get_or("network", _word(choices, "network"), "all"),
        "loss": table.get("loss", _ratio(1.0)),
        "latency": table.get_or("latency", _duration, 0.0),
    }


def _clock_drift_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """clock-drift: the host's clock rate from now on (1.01 runs 1% fast)."""

    def rate(value: object, where: str) -> float:
        low, high = 1 - CLOCK_DRIFT_MAX, 1 + CLOCK_DRIFT_MAX
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise _Invalid(where, f"must be a clock rate from {low:g} to {high:g}, not {describe(value)}")
        return float(value)

    return {"rate": table.get("rate", rate)}


def _storage_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """storage-down/up: the pool must be one the host can reach, or the event means nothing."""
    pool = table.get("pool", _name)
    if target is not None and pool not in world.hosts[target].storage:
        raise _Invalid(table.place("pool"), f"host {target!r} does not list pool {pool!r}")
    return {"pool": pool}


def _set_ha_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """set-ha: the VM's new HA level."""
    return {"level": table.get("level", _ha_level)}


def _set_config_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """set-config: one HA key changed mid-run, checked now rather than when it fires."""
    key = table.get("key", _ha_key)
    return {"key": key, "value": table.get("value", lambda v, w: _config_value(key, v, w))}


def _detach_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """detach-network: which of the VM's networks to unplug (the business one by default)."""
    return {"network": table.get_or("network", _word(_NETWORK_NAMES, "network"), "business")}


def _delete_network_args(table: _Table, target: str | None, world: _World) -> dict[str, Any]:
    """delete-network: a network removed from a whole cluster, which must exist."""
    network = table.get("network", _word(_NETWORK_NAMES, "network"))
    clusters = world.clusters
    return {
        "network": network,
        "cluster": table.get_or("cluster", _word(clusters, "cluster"), DEFAULT_CLUSTER),
    }


_ARGS: dict[str, _Args] = {
    "power-off": _no_args,
    "power-on": _no_args,
    "vm-crash": _no_args,
    "vm-stop": _stop_args,
    "vm-start": _no_args,
    "network-down": _host_network_args,
    "network-up": _host_network_args,
    "storage-down": _storage_args,
    "storage-up": _storage_args,
    "maintenance-enter": _no_args,
    "maintenance-exit": _no_args,
    "set-ha": _set_ha_args,
    "set-config": _set_config_args,
    "detach-network": _detach_args,
    "delete-network": _delete_network_args,
    "link-loss": _link_loss_args,
    "clock-drift": _clock_drift_args,
    "libvirt-hang": _no_args,
    "libvirt-resume": _no_args,
    "agent-crash": _no_args,
    "agent-restart": _no_args,
    "manager-crash": _no_args,
    "manager-restart": _no_args,
}


# --- expectations -------------------------------------------------------------------


def _parse_expect(table: _Table, number: int, world: _World) -> ExpectSpec:
    """One ``[[expect]]``: what must be true of a VM; it must check at least one thing."""
    table.check_keys(_EXPECT_REQUIRED, _EXPECT_OPTIONAL)
    vm = table.get("vm", _name)
    if vm not in world.vms:
        raise _Invalid(table.place("vm"), f"unknown VM {vm!r}")
    if not any(key in table.data for key in _EXPECT_CHECKS):
        raise _Invalid(table.label, f"nothing to check: give one of {', '.join(_EXPECT_CHECKS)}")
    after_s = table.get_or("after", _duration, 0.0)
    if after_s > world.duration_s:
        reason = (
            f"{format_duration(after_s)} is after the end of the run"
            f" (duration {format_duration(world.duration_s)})"
        )
        raise _Invalid(table.place("after"), reason)
    until_s = table.get_or("until", _positive_duration, None)
    if until_s is not None and until_s <= after_s:
        raise _Invalid(table.place("until"), f"{format_duration(until_s)} is not after `after`")
    return ExpectSpec(
        vm=vm,
        after_s=after_s,
        until_s=until_s,
        states=table.get_or("states", _expected_states, ()),
        within_s=table.get_or("within", _positive_duration, None),
        final_state=table.get_or("final_state", _vm_state, None),
        host=table.get_or("host", _host_of(world), None),
        host_not=table.get_or("host_not", _host_of(world), None),
        never=table.get_or("never", _states, ()),
        index=number,
    )


def _expected_states(value: object, where: str) -> tuple[VmState, ...]:
    """A sequence of states to pass through; a state may recur (Running, Unknown, Running)."""
    if not isinstance(value, list):
        raise _Invalid(where, f"expected an array, got {describe(value)}")
    return tuple(_vm_state(item, f"{where}[{n}]") for n, item in enumerate(value, 1))


def _host_of(world: _World) -> Callable[[object, str], str]:
    """A converter to the name of a host of this scenario."""

    def convert(value: object, where: str) -> str:
        name = _name(value, where)
        if name not in world.hosts:
            raise _Invalid(where, f"unknown host {name!r}")
        return name

    return convert
