"""The storage heartbeat on a shared file system (NFS, SharedMountPoint).

In the simulator a storage pool is an actor; on real hosts it is a mounted directory.
Each host writes its own record, ``<mount>/.neverstop/heartbeat/<host>``, holding the
sequence number of its latest write and the config revision its self-fencer is armed
under (``-`` when it is not: self-fencing off, or no watchdog covers the host if its agent
dies); peers read it when the manager asks them to check a suspect host. The manager
trusts a host's self-fence only when the record says armed under its own revision.
Nobody compares clocks: the manager only watches the number change.

Writes and reads run in threads because a dead NFS server blocks them indefinitely. At
most one write and one read per pool are in flight: while one hangs, later writes are
simply not acknowledged, which is exactly what the host agent counts towards
self-fencing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from actors.inventory import host_addr
from actors.messages import HeartbeatAck, HeartbeatRead, HeartbeatValue, HeartbeatWrite

RECORD_BYTES = 32
HEARTBEAT_DIR = os.path.join(".neverstop", "heartbeat")

Post = Callable[[str, object], None]


def record_path(mount: str, host: str) -> str:
    return os.path.join(mount, HEARTBEAT_DIR, host)


def write_record(path: str, seq: int, armed: int | None = None) -> None:
    """Overwrite the record in place (no rename: NFS clients may cache the old name)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = f"{seq} {'-' if armed is None else armed}\n".encode().ljust(RECORD_BYTES, b" ")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_record(path: str) -> tuple[int, int | None] | None:
    """(sequence number, armed revision or None) in a record; (-1, None) when the host
    never wrote; None if unreadable. A record with no revision (an older agent) is not
    armed."""
    try:
        with open(path, "rb") as f:
            data = f.read(RECORD_BYTES)
    except FileNotFoundError:
        return -1, None
    words = data.decode("ascii", "replace").split()
    if not words or not words[0].isdigit() or len(words) > 2:
        return None
    armed = words[1] if len(words) == 2 else "-"
    if armed != "-" and not armed.isdigit():
        return None
    return int(words[0]), None if armed == "-" else int(armed)


class FileHeartbeat:
    """Answers a host agent's ``pool/NAME`` messages from the pool's mount point."""

    def __init__(self, pool_paths: dict[str, str], post: Post, log: Callable[[str], None]) -> None:
        self.pool_paths = pool_paths
        self.post = post
        self.log = log
        self._busy: set[tuple[str, str]] = set()  # (pool, "write" | "read") in flight
        self._lock = threading.Lock()

    def handle(self, pool: str, msg: object) -> bool:
        """Carry out ``msg`` for ``pool``; False when it is not a heartbeat message."""
        mount = self.pool_paths.get(pool)
        if isinstance(msg, HeartbeatWrite):
            if mount is not None:
                self._run(pool, "write", lambda: self._write(pool, mount, msg))
            return True
        if isinstance(msg, HeartbeatRead):
            if mount is not None:
                self._run(pool, "read", lambda: self._read(pool, mount, msg))
            return True
        return False

    def _run(self, pool: str, kind: str, job: Callable[[], None]) -> None:
        key = (pool, kind)
        with self._lock:
            if key in self._busy:
                return  # the previous one still hangs: this one is lost, as on a dead server
            self._busy.add(key)

        def run() -> None:
            try:
                job()
            except OSError as err:
                self.log(f"heartbeat {kind} on {pool} failed: {err}")
            finally:
                with self._lock:
                    self._busy.discard(key)

        threading.Thread(target=run, name=f"heartbeat-{pool}-{kind}", daemon=True).start()

    def _write(self, pool: str, mount: str, msg: HeartbeatWrite) -> None:
        write_record(record_path(mount, msg.host), msg.seq, msg.armed)
        self.post(host_addr(msg.host), HeartbeatAck(pool, msg.seq))

    def _read(self, pool: str, mount: str, msg: HeartbeatRead) -> None:
        record = read_record(record_path(mount, msg.host))
        if record is not None:
            self.post(msg.reply_to, HeartbeatValue(pool, msg.host, msg.req, *record))
