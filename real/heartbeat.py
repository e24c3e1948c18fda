"""The storage heartbeat on a shared file system (NFS, SharedMountPoint).

In the simulator a storage pool is an actor; on real hosts it is a mounted directory.
Each host writes its own record, ``<mount>/.neverstop/heartbeat/<host>``, holding the
sequence number of its latest write and the config revision its self-fencer is armed
under (``-`` when it is not: self-fencing off, or no watchdog covers the host if its agent
dies); peers read it when the manager asks them to check a suspect host. The manager
trusts a host's self-fence only when the record says armed under its own revision.
Nobody compares clocks: the manager only watches the number change.

Anyone who can write the pool can write these files, so a record is signed with its
host's key (``real.keys``; the certificate travels with it) and a reader believes only a
record signed by the host it is named after. A reader also remembers, per host, the run
of the agent (a random epoch) and the highest number it read: a record from an earlier
run, or an older number of this run, is a replay. An untrusted record counts as no
reading, and the reader tells the management node, which logs it. Records are written
and read without following symlinks, to regular files only: a link planted in the pool
must not make a root process write, or block on, a file of its choosing.

Writes and reads run in threads because a dead NFS server blocks them indefinitely. At
most one write and one read per pool are in flight: while one hangs, later writes are
simply not acknowledged, which is exactly what the host agent counts towards
self-fencing.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from actors.inventory import host_addr
from actors.messages import HeartbeatAck, HeartbeatRead, HeartbeatValue, HeartbeatWrite
from real.keys import Identity, host_of, verify_certificate

RECORD_BYTES = 512  # one sector: written in one piece
RECORD_MAGIC = "nsh1"
HEARTBEAT_DIRS = (".neverstop", "heartbeat")
HEARTBEAT_DIR = os.path.join(*HEARTBEAT_DIRS)
EPOCHS_KEPT = 64  # earlier runs of a host's agent a reader remembers

Post = Callable[[str, object], None]


@dataclass(frozen=True)
class UntrustedRecord:
    """A host read a heartbeat record it does not believe (to the management shell's log)."""

    reporter: str
    host: str
    pool: str
    reason: str


@dataclass(frozen=True)
class Record:
    host: str
    epoch: int  # the run of the host's agent that wrote it
    seq: int
    armed: int | None


class RecordError(ValueError):
    """A record that is not to be trusted; the reason says why."""


def record_path(mount: str, host: str) -> str:
    return os.path.join(mount, HEARTBEAT_DIR, host)


def _signed_part(host: str, epoch: int, seq: int, armed: int | None) -> str:
    return f"{RECORD_MAGIC} {host} {epoch:016x} {seq} {'-' if armed is None else armed}"


def encode_record(identity: Identity, epoch: int, seq: int, armed: int | None = None) -> bytes:
    host = host_of(identity.name)
    assert host is not None, identity.name
    text = _signed_part(host, epoch, seq, armed)
    sig = identity.sign(text.encode())
    line = f"{text} {identity.public.hex()} {identity.certificate.hex()} {sig.hex()}\n".encode()
    assert len(line) <= RECORD_BYTES, len(line)
    return line.ljust(RECORD_BYTES, b" ")


def decode_record(data: bytes, host: str, manager_public: bytes) -> Record:
    """The record in ``data`` if ``host`` signed it; RecordError otherwise."""
    words = data.decode("ascii", "replace").split()
    if len(words) != 8 or words[0] != RECORD_MAGIC:
        raise RecordError("not a signed neverstop heartbeat record")
    _, name, epoch_hex, seq_text, armed_text, pub_hex, cert_hex, sig_hex = words
    if name != host:
        raise RecordError(f"the record names host {name!r}")
    try:
        epoch, seq = int(epoch_hex, 16), int(seq_text)
        armed = None if armed_text == "-" else int(armed_text)
        public, cert, sig = bytes.fromhex(pub_hex), bytes.fromhex(cert_hex), bytes.fromhex(sig_hex)
    except ValueError:
        raise RecordError("malformed record") from None
    if seq < 0 or not verify_certificate(manager_public, host, public, cert):
        raise RecordError(f"not signed with a key this cluster issued to {host}")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, _signed_part(host, epoch, seq, armed).encode())
    except (InvalidSignature, ValueError):
        raise RecordError(f"bad signature: not written by {host}") from None
    return Record(host, epoch, seq, armed)


def _open_dir(mount: str, create: bool) -> int:
    """The heartbeat directory of ``mount``, reached without following any symlink in it."""
    fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in HEARTBEAT_DIRS:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_name(host: str) -> None:
    if not host or "/" in host or host.startswith("."):
        raise RecordError(f"no heartbeat file for a host named {host!r}")


def _open_regular(dir_fd: int, host: str, flags: int) -> int:
    fd = os.open(host, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "a hard-linked file" if stat.S_ISREG(st.st_mode) else "not a regular file"
        raise RecordError(f"{host}'s heartbeat file is {what}: left alone")
    return fd


def write_record(mount: str, host: str, data: bytes) -> None:
    """Overwrite the record in place (no rename: NFS clients may cache the old name)."""
    _check_name(host)
    dir_fd = _open_dir(mount, create=True)
    try:
        fd = _open_regular(dir_fd, host, os.O_WRONLY | os.O_CREAT)
    finally:
        os.close(dir_fd)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_record(mount: str, host: str) -> bytes | None:
    """The raw record of ``host`` in ``mount``; None when the host never wrote there."""
    _check_name(host)
    try:
        dir_fd = _open_dir(mount, create=False)
    except FileNotFoundError:
        return None
    try:
        fd = _open_regular(dir_fd, host, os.O_RDONLY)
    except FileNotFoundError:
        return None
    finally:
        os.close(dir_fd)
    try:
        return os.pread(fd, RECORD_BYTES, 0)
    finally:
        os.close(fd)


def reading(mount: str, host: str, manager_public: bytes) -> tuple[int, int | None] | None:
    """(sequence number, armed revision) of ``host``'s record in ``mount``; (-1, None) when it
    never wrote there; None when the record is not to be trusted (tools and tests)."""
    try:
        data = read_record(mount, host)
        if data is None:
            return -1, None
        record = decode_record(data, host, manager_public)
    except (OSError, RecordError):
        return None
    return record.seq, record.armed


class FileHeartbeat:
    """Answers a host agent's ``pool/NAME`` messages from the pool's mount point."""

    def __init__(self, pool_paths: dict[str, str], post: Post, log: Callable[[str], None],
                 identity: Identity, untrusted_to: str) -> None:
        self.pool_paths = pool_paths
        self.post = post
        self.log = log
        self.identity = identity
        self.host = host_of(identity.name) or ""
        self.untrusted_to = untrusted_to  # where a record not believed is reported
        self.epoch = int.from_bytes(os.urandom(8), "big")  # this run of the agent
        self._runs: dict[tuple[str, str], list[tuple[int, int]]] = {}  # (pool, host) -> [(epoch, seq)]
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
            except (OSError, RecordError) as err:
                self.log(f"heartbeat {kind} on {pool} failed: {err}")
            finally:
                with self._lock:
                    self._busy.discard(key)

        threading.Thread(target=run, name=f"heartbeat-{pool}-{kind}", daemon=True).start()

    def _write(self, pool: str, mount: str, msg: HeartbeatWrite) -> None:
        if msg.host != self.host:
            raise RecordError(f"{self.host} does not write {msg.host}'s record")
        write_record(mount, msg.host, encode_record(self.identity, self.epoch, msg.seq, msg.armed))
        self.post(host_addr(msg.host), HeartbeatAck(pool, msg.seq))

    def _read(self, pool: str, mount: str, msg: HeartbeatRead) -> None:
        try:
            data = read_record(mount, msg.host)
            if data is None:
                self.post(msg.reply_to, HeartbeatValue(pool, msg.host, msg.req, -1, None))
                return
            record = decode_record(data, msg.host, self.identity.manager_public)
            self._not_replayed(pool, record)
        except RecordError as err:
            self.log(f"heartbeat record of {msg.host} on {pool} not trusted: {err}")
            self.post(self.untrusted_to, UntrustedRecord(self.host, msg.host, pool, str(err)))
            return
        self.post(msg.reply_to, HeartbeatValue(pool, msg.host, msg.req, record.seq, record.armed))

    def _not_replayed(self, pool: str, record: Record) -> None:
        with self._lock:
            runs = self._runs.setdefault((pool, record.host), [])
            for i, (epoch, seq) in enumerate(runs):
                if epoch != record.epoch:
                    continue
                if i != len(runs) - 1:
                    raise RecordError("a record of an earlier run of its agent: replayed")
                if record.seq < seq:
                    raise RecordError(f"number {record.seq} after {seq}: replayed")
                runs[i] = (epoch, record.seq)
                return
            runs.append((record.epoch, record.seq))
            del runs[:-EPOCHS_KEPT]
