"""A progress bar on stderr for long commands (campaigns, sweeps): no dependency."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress(total, "seeds") as bar: bar.advance(note=...)``. Redraws at most
    ten times a second; prints a plain line per 10% when stderr is not a terminal."""

    def __init__(self, total: int, unit: str = "runs", out: TextIO | None = None, width: int = 30,
                 enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.unit = unit
        self.enabled = enabled and total > 0
        self.out = out or sys.stderr
        self.width = width
        self.done = 0
        self.started = time.monotonic()
        self.drawn_at = 0.0
        self.tty = self.out.isatty()
        self.next_tenth = 1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.enabled:
            return
        self._draw("", force=True)
        if self.tty:
            self.out.write("\n")
        self.out.flush()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self.enabled:
            self._draw(note)

    def _draw(self, note: str, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = f"{self.done}/{self.total} {self.unit}, {elapsed:.0f}s elapsed, ETA {eta:.0f}s {note}"
        if self.tty:
            if force or now - self.drawn_at >= 0.1:
                filled = int(self.width * self.done / self.total)
                self.out.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {text}\x1b[K")
                self.out.flush()
                self.drawn_at = now
        elif force or self.done * 10 >= self.next_tenth * self.total:
            self.out.write(text + "\n")
            self.next_tenth = self.done * 10 // self.total + 1
