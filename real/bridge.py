"""From threads into an actor: a queue plus a pipe the actor watches.

libvirt's event loop, operation workers, heartbeat writers and power queries run in
threads; an actor handles one message at a time in its own thread. A thread ``post``s a
(recipient, message) pair and writes one byte to a pipe; the Thespian shell returns
``ThespianWatch([fd])`` after every message, so the pipe turning readable wakes it with a
``WatchMessage`` and it ``drain``s the queue. Posting never blocks: the pipe is
non-blocking and one unread byte is enough to wake the actor.
"""

from __future__ import annotations

import contextlib
import os
import queue


class Mailbox:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    @property
    def fd(self) -> int:
        return self._read_fd

    def post(self, to: str, msg: object) -> None:
        """Thread-safe: queue ``msg`` for the actor at ``to`` and wake the shell."""
        self._queue.put((to, msg))
        with contextlib.suppress(BlockingIOError):  # full of wake-ups already: all gets drained
            os.write(self._write_fd, b"x")

    def drain(self, limit: int = 10_000) -> list[tuple[str, object]]:
        """Everything posted so far (at most ``limit``; the rest wakes the shell again)."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        out: list[tuple[str, object]] = []
        while len(out) < limit:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if len(out) == limit:
            with contextlib.suppress(BlockingIOError):
                os.write(self._write_fd, b"x")
        return out

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
