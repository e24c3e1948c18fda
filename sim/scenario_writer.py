"""Scenarios back to TOML: a generated or shrunk case becomes a file anyone can run.

The output is the format ``formats.scenario`` reads, so ``load_scenario(dump(s))`` gives the
same scenario back (tests check that round trip).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import Enum
from typing import Any

from actors.config import DURATION_KEYS, PROFILES
from formats.spec import ALL_NETWORKS, ExpectSpec, NetworkCondition, Scenario
from formats.units import format_duration


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def _table(header: str, pairs: Iterable[tuple[str, Any]]) -> str:
    lines = [header] if header else []
    lines += [f"{key} = {_value(v)}" for key, v in pairs if v is not None]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str | float:
    """A readable duration when that is exact, else plain seconds (sub-millisecond)."""
    text = format_duration(seconds)
    return text if abs(round(seconds, 3) - seconds) < 1e-12 else seconds


def dump_scenario(sc: Scenario, comment: str = "") -> str:
    """The scenario as a TOML document, with ``comment`` lines at the top."""
    parts = ["".join(f"# {line}\n" for line in comment.splitlines())]
    parts.append(_table("", [("name", sc.name), ("description", sc.description),
                             ("seed", sc.seed), ("duration", _duration(sc.duration_s)),
                             ("profile", sc.profile)]))
    base = PROFILES[sc.profile].as_keys()
    overrides = [(json.dumps(k), _duration(v) if k in DURATION_KEYS else v)
                 for k, v in sc.config.as_keys().items() if base[k] != v]
    if overrides:
        parts.append(_table("[ha]", overrides))
    if sc.network != NetworkCondition():
        n = sc.network
        parts.append(_table("[network]", [("loss", n.loss), ("latency", _duration(n.latency_s)),
                                          ("jitter", _duration(n.jitter_s)), ("clock_drift", n.clock_drift)]))
    for pool in sc.storage:
        parts.append(_table("[[storage]]", [("name", pool.name), ("type", pool.type), ("host", pool.host)]))
    for h in sc.hosts:
        parts.append(_table("[[host]]", [
            ("name", h.name), ("cluster", h.cluster), ("ip", h.ip or None), ("cpu", h.cpu),
            ("memory", f"{h.memory_mib}MiB"), ("storage", list(h.storage)),
            ("networks", None if h.networks == ALL_NETWORKS else [n.value for n in h.networks]),
            ("power_controller", h.power_controller), ("watchdog", None if h.watchdog else False)]))
    for v in sc.vms:
        parts.append(_table("[[vm]]", [
            ("name", v.name), ("cpu", v.cpu), ("memory", f"{v.memory_mib}MiB"), ("ip", v.ip or None),
            ("host", v.host), ("storage", v.storage), ("ha", v.ha), ("state", v.state)]))
    for e in sc.events:
        args = [(k, _duration(v) if k == "latency" else v) for k, v in sorted(e.args.items())]
        if e.action == "set-config" and e.args.get("key") in DURATION_KEYS:
            args = [(k, _duration(v) if k == "value" else v) for k, v in args]
        parts.append(_table("[[event]]", [("at", _duration(e.at_s)), ("action", e.action),
                                          ("target", e.target), *args]))
    for x in sc.expects:
        parts.append(_expect(x))
    return "\n".join(p for p in parts if p)


def _expect(x: ExpectSpec) -> str:
    return _table("[[expect]]", [
        ("vm", x.vm), ("after", _duration(x.after_s)),
        ("until", None if x.until_s is None else _duration(x.until_s)),
        ("states", [s.value for s in x.states] or None),
        ("within", None if x.within_s is None else _duration(x.within_s)),
        ("final_state", x.final_state), ("host", x.host), ("host_not", x.host_not),
        ("never", [s.value for s in x.never] or None)])
