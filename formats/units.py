"""Durations and memory sizes as people write them in scenario files.

A scenario says ``"90s"`` or ``"16GiB"`` because that is how operators think; the
simulator wants plain numbers (seconds as ``float``, MiB as ``int``). Parsing lives
here, apart from the TOML reader, so that the CLI, the fuzzers and the report
printer share one spelling of a unit, and ``format_duration`` prints back what
``parse_duration`` reads.

Every bad value raises ``UnitError`` naming where it came from and what it was, so the
caller can turn it into a one-line message without re-describing the value.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time
from fractions import Fraction

__all__ = ["UnitError", "describe", "format_duration", "parse_duration", "parse_memory"]

# Largest unit first: a compound duration must list its parts in this order ("2h30m").
_DURATION_UNITS: dict[str, Fraction] = {
    "h": Fraction(3600),
    "m": Fraction(60),
    "s": Fraction(1),
    "ms": Fraction(1, 1000),
}
_UNIT_ORDER = tuple(_DURATION_UNITS)
# "ms" before "m" so that "5ms" is not read as five minutes followed by junk.
_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|h|m|s)\s*")
_DURATION_HINT = "write a number with a unit: 500ms, 1.5s, 90s, 5m, 1h or 2h30m"

_MEMORY_UNITS: dict[str, int] = {"MiB": 1, "GiB": 1024, "TiB": 1024 * 1024}
_MEMORY = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)")
_MEMORY_HINT = "write a size with a unit: 512MiB, 16GiB or 1TiB, or a whole number of MiB"


class UnitError(ValueError):
    """A duration or memory size that cannot be read.

    ``where`` is the caller's name for the value (e.g. ``vm[2].memory``) and ``reason``
    says what was wrong with it, quoting the value; ``str()`` is ``"where: reason"``.
    """

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def describe(value: object) -> str:
    """Name a parsed TOML value's type and show it, as a TOML user would write it.

    Messages say ``got boolean true`` rather than ``got True`` because the reader of
    the message wrote TOML, not Python.
    """
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime, date, time)):
        return f"date/time {value.isoformat()}"
    return f"{type(value).__name__} {value!r}"


def parse_duration(value: object, where: str) -> float:
    """Read a duration in seconds from ``"500ms"``, ``"1.5s"``, ``"2h30m"`` or a number.

    A plain number is seconds, so that configs copied from ZStack (which stores
    seconds) keep working. A string must carry a unit: ``"90"`` is refused because a
    reader cannot tell whether it meant seconds or minutes. Negative, infinite and
    NaN durations are refused; zero is allowed and the caller decides if it fits.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError(where, f"expected a duration, got {describe(value)} ({_DURATION_HINT})")
    if isinstance(value, str):
        return _duration_from_text(value, where)
    if not math.isfinite(value):
        raise UnitError(where, f"invalid duration {value!r}: must be finite")
    if value < 0:
        raise UnitError(where, f"invalid duration {value!r}: must not be negative")
    return float(value)


def _duration_from_text(text: str, where: str) -> float:
    """Sum the ``NUMBERunit`` parts of a duration string, largest unit first.

    Exact fractions avoid float noise, so ``"100ms"`` is exactly ``0.1``.
    """
    body = text.strip()
    if body.startswith("-"):
        raise UnitError(where, f"invalid duration {text!r}: must not be negative")
    if not body:
        raise UnitError(where, f"invalid duration {text!r}: empty ({_DURATION_HINT})")
    if _NUMBER.fullmatch(body):
        raise UnitError(
            where,
            f"invalid duration {text!r}: missing unit (write {body}s, or {body} without quotes"
            " for seconds)",
        )
    total = Fraction(0)
    pos = 0
    last_rank = -1
    while pos < len(body):
        part = _DURATION_PART.match(body, pos)
        if part is None:
            raise UnitError(where, f"invalid duration {text!r} ({_DURATION_HINT})")
        rank = _UNIT_ORDER.index(part.group(2))
        if rank <= last_rank:
            raise UnitError(where, f"invalid duration {text!r}: give each unit once, largest first")
        total += Fraction(part.group(1)) * _DURATION_UNITS[part.group(2)]
        last_rank = rank
        pos = part.end()
    seconds = float(total)
    if not math.isfinite(seconds):
        raise UnitError(where, f"invalid duration {text!r}: too large")
    return seconds


def parse_memory(value: object, where: str) -> int:
    """Read a memory size in MiB from ``"512MiB"``, ``"16GiB"``, ``"1TiB"`` or an integer.

    Only binary units are accepted: ``"16GB"`` or ``"16G"`` is refused rather than
    guessed, because a 7% difference in host capacity changes where VMs fit. The
    result must be a whole number of MiB and not negative; the caller decides
    whether zero fits.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError(where, f"expected a memory size, got {describe(value)} ({_MEMORY_HINT})")
    if isinstance(value, str):
        return _memory_from_text(value, where)
    if not math.isfinite(value) or value != int(value):
        raise UnitError(where, f"invalid memory size {value!r}: {_MEMORY_HINT}")
    if value < 0:
        raise UnitError(where, f"invalid memory size {value!r}: must not be negative")
    return int(value)


def _memory_from_text(text: str, where: str) -> int:
    """Convert ``NUMBERunit`` to MiB, refusing units that are not MiB/GiB/TiB."""
    body = text.strip()
    if body.startswith("-"):
        raise UnitError(where, f"invalid memory size {text!r}: must not be negative")
    match = _MEMORY.fullmatch(body)
    if match is None:
        raise UnitError(where, f"invalid memory size {text!r} ({_MEMORY_HINT})")
    number, unit = match.groups()
    if unit not in _MEMORY_UNITS:
        found = f"unknown unit {unit!r}" if unit else "missing unit"
        raise UnitError(where, f"invalid memory size {text!r}: {found} ({_MEMORY_HINT})")
    mib = Fraction(number) * _MEMORY_UNITS[unit]
    if mib.denominator != 1:
        raise UnitError(where, f"invalid memory size {text!r}: not a whole number of MiB")
    return int(mib)


def format_duration(seconds: float) -> str:
    """Print seconds the way a scenario would write them: ``1m30s``, ``5m``, ``500ms``.

    Rounded to the millisecond, which is finer than any HA timer, so the output reads
    back through ``parse_duration`` to the same value for any whole number of ms.
    Under a second it prints milliseconds (``500ms``); otherwise hours and minutes
    followed by seconds with a decimal fraction (``1.5s``). Negative durations (a
    difference of two times) get a leading ``-``; inf and NaN print as Python does.
    """
    if not math.isfinite(seconds * 1000):  # inf, NaN, or too large to count in ms
        return str(seconds) if not math.isfinite(seconds) else f"{seconds:g}s"
    total_ms = round(seconds * 1000)
    if total_ms == 0:
        return "0s"
    sign = "-" if total_ms < 0 else ""
    hours, rest = divmod(abs(total_ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    if hours == minutes == secs == 0:
        return f"{sign}{millis}ms"
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if millis:
        parts.append(f"{secs}.{millis:03d}".rstrip("0") + "s")
    elif secs:
        parts.append(f"{secs}s")
    return sign + "".join(parts)
