"""Sections of a generated Markdown report that another command owns.

``docs/benchmarks.md`` is rewritten by ``make bench`` (the simulator's figures), while its
real-mode table comes from ``make bench-real``, which takes ten minutes and real processes.
Each command replaces only what it measured: a section sits between two HTML comments that
name it, and a rewrite of the rest of the file carries it over unchanged.
"""

from __future__ import annotations

import re


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- section {name}: written by its own command -->", f"<!-- end of section {name} -->"


def section(text: str, name: str) -> str | None:
    """The section ``name`` of ``text`` with its markers, or None if it has none."""
    start, end = _markers(name)
    found = re.search(re.escape(start) + r".*?" + re.escape(end), text, flags=re.S)
    return found.group(0) if found else None


def with_section(text: str, name: str, body: str) -> str:
    """``text`` with section ``name`` set to ``body`` (appended when it has none)."""
    start, end = _markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    old = section(text, name)
    if old is not None:
        return text.replace(old, block)
    return text.rstrip("\n") + "\n\n" + block + "\n"

REAL_LOAD_SECTION = "real-load"  # python -m bench.real_load --docs (make bench-real)
