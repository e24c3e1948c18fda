"""Signed frames for Thespian's TCP transport: nothing a peer sends is unpickled unchecked.

Thespian frames a message as ``<length>>`` and a pickle of (sender address, message), and
unpickles whatever arrives: one frame to any of its ports runs code. ``install`` replaces
both ends of its TCP transport in this process (and in every actor process it forks):

- sending: the pickle is wrapped in a frame signed with this node's Ed25519 key
  (``real.keys``), naming the sender's identity, a random stream id per process, a
  counter, the wall-clock time and the address it is meant for;
- receiving, in this order, each step before the next costs anything: a declared
  length above ``MAX_FRAME_BYTES`` closes the socket before anything is buffered; then the
  identity (the manager's public key, or a host's key with the manager's certificate),
  the signature, the time (within ``SKEW_S``), the target (this process's own address:
  a frame captured on its way to one node is no use against another), the counter (each
  one once per stream: a replayed frame is refused); only then the pickle, through an
  allow-list (``real.allowlist``) that admits Thespian's own messages and neverstop's
  message classes and nothing callable; then the claimed sender address, which one
  identity cannot take over from another (Thespian reuses a connection by the sender
  address a frame claims); and last the role policy (``real.authz``): who may send what.

A refused frame changes nothing: Thespian answers it with its data-error acknowledgement
and closes the socket. It is logged on standard error with the peer's address, at most
once per peer and second.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from real.allowlist import SafeUnpickler, UnpicklingRefused
from real.keys import MANAGER, Identity, host_of, verify_certificate

MAGIC = b"NSW1"
MAX_FRAME_BYTES = 4 * 1024 * 1024
SKEW_S = 60.0  # frames older or newer than this (wall clock) are refused: keep clocks in NTP
REPLAY_WINDOW = 4096  # counters this far below a stream's highest are still accepted once
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1
STREAM_IDLE_S = 4 * SKEW_S  # a stream silent this long is forgotten (its frames are stale anyway)
CLAIM_HOLD_S = 60.0  # an address one identity used is not another's until this long unused
LOG_EVERY_S = 1.0
LOG_BURST = 100  # refusal lines per second at most, whatever the number of peers

Policy = Callable[[str, str, Any], "str | None"]  # (sender, receiver, message) -> refusal or None
_Signed = tuple[str, bytes, int, int, tuple[str, int], bytes]  # sender, stream, counter, ms, target, body


class FrameRejected(Exception):
    """A frame that is not let in; the reason is logged."""


@dataclass
class _Window:
    """The counters seen on one stream: the highest, and which of the ones below it."""

    high: int = -1
    seen: int = 0  # bit i: counter high - i was seen
    last_s: float = 0.0

    def admit(self, counter: int) -> bool:
        if counter > self.high:
            shift = counter - self.high
            self.seen = ((self.seen << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.high = counter
            return True
        back = self.high - counter
        if back >= REPLAY_WINDOW or self.seen >> back & 1:
            return False
        self.seen |= 1 << back
        return True


@dataclass
class Wire:
    """This process's side of the signed transport."""

    identity: Identity
    policy: Policy
    local_addrs: set[tuple[str, int]] = field(default_factory=set)  # this process's transports
    _pid: int = -1
    _stream: bytes = b""
    _counter: int = 0
    _certs: set[tuple[str, bytes, bytes]] = field(default_factory=set)  # verified certificates
    _verifiers: dict[bytes, Ed25519PublicKey] = field(default_factory=dict)
    _windows: dict[tuple[str, bytes], _Window] = field(default_factory=dict)
    _claims: dict[tuple[str, int], tuple[str, float]] = field(default_factory=dict)
    _logged: dict[str, float] = field(default_factory=dict)
    _burst_start: float = 0.0
    _burst: int = 0
    _held_back: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- sending ---------------------------------------------------------------------------

    def seal(self, body: bytes, target: tuple[str, int], sent_s: float | None = None) -> bytes:
        with self._lock:
            if self._pid != os.getpid():  # a forked actor process is a stream of its own
                self._pid, self._stream, self._counter = os.getpid(), os.urandom(16), 0
            self._counter += 1
            counter, stream = self._counter, self._stream
        ident = self.identity
        name = ident.name.encode()
        ip = target[0].encode()
        header = b"".join((
            struct.pack("!B", len(name)), name, ident.public, struct.pack("!B", len(ident.certificate)),
            ident.certificate, stream, struct.pack("!Qq", counter, int((sent_s or time.time()) * 1000)),
            struct.pack("!B", len(ip)), ip, struct.pack("!H", target[1]),
        ))
        signed = MAGIC + struct.pack("!H", len(header)) + header
        return signed + ident.sign(signed + body) + body

    # -- receiving -------------------------------------------------------------------------

    def open(self, frame: bytes, peer: str) -> Any:
        """The (sender address, message) in ``frame``, or FrameRejected."""
        sender, stream, counter, sent_ms, target, body = self._check_signature(frame, peer)
        skew = abs(time.time() - sent_ms / 1000)
        if skew > SKEW_S:
            raise self.reject(peer, f"stale frame from {sender} ({skew:.0f} s off: clocks in sync?)")
        if target not in self.local_addrs:
            raise self.reject(peer, f"frame from {sender} meant for {target[0]}:{target[1]}, not for me")
        now = time.monotonic()
        with self._lock:
            window = self._windows.get((sender, stream))
            if window is None:
                self._forget_idle(now)
                window = self._windows[(sender, stream)] = _Window()
            window.last_s = now
            if not window.admit(counter):
                raise self.reject(peer, f"replayed frame from {sender} (counter {counter})")
        try:
            envelope = SafeUnpickler(io.BytesIO(body)).load()
        except UnpicklingRefused as err:
            raise self.reject(peer, f"frame from {sender} refused: {err}") from None
        except Exception as err:  # a signed but broken pickle: a bug, or a key in bad hands
            raise self.reject(peer, f"frame from {sender} does not unpickle: {type(err).__name__}") from None
        if not (isinstance(envelope, tuple) and len(envelope) == 2):
            raise self.reject(peer, f"frame from {sender} is not a Thespian envelope")
        self._check_claim(sender, envelope[0], peer, now)
        refusal = self.policy(sender, self.identity.name, envelope[1])
        if refusal is not None:
            raise self.reject(peer, f"{sender} may not send {refusal}")
        return envelope

    def _check_signature(self, frame: bytes, peer: str) -> _Signed:
        if frame[:4] != MAGIC:
            raise self.reject(peer, "not a signed neverstop frame (no key, or an older neverstop?)")
        try:
            (hlen,) = struct.unpack_from("!H", frame, 4)
            header = frame[6:6 + hlen]
            at = 0
            nlen = header[at]
            name = header[at + 1:at + 1 + nlen].decode()
            at += 1 + nlen
            public = header[at:at + 32]
            clen = header[at + 32]
            cert = header[at + 33:at + 33 + clen]
            at += 33 + clen
            stream = header[at:at + 16]
            counter, sent_ms = struct.unpack_from("!Qq", header, at + 16)
            at += 32
            iplen = header[at]
            ip = header[at + 1:at + 1 + iplen].decode()
            (port,) = struct.unpack_from("!H", header, at + 1 + iplen)
            if at + 3 + iplen != hlen or len(header) != hlen or len(public) != 32 or len(stream) != 16:
                raise ValueError("length mismatch")
        except (IndexError, struct.error, UnicodeDecodeError, ValueError):
            raise self.reject(peer, "malformed frame header") from None
        signed_end = 6 + hlen
        signature, body = frame[signed_end:signed_end + 64], frame[signed_end + 64:]
        if not self._known(name, public, cert):
            raise self.reject(peer, f"frame signed as {name!r} with a key this cluster did not issue")
        try:
            self._verifier(public).verify(signature, frame[:signed_end] + body)
        except (InvalidSignature, ValueError):
            raise self.reject(peer, f"bad signature on a frame claiming to be from {name!r}") from None
        return name, stream, counter, sent_ms, (ip, port), body

    def _verifier(self, public: bytes) -> Ed25519PublicKey:
        key = self._verifiers.get(public)
        if key is None:
            if len(self._verifiers) > 10_000:
                self._verifiers.clear()
            key = self._verifiers[public] = Ed25519PublicKey.from_public_bytes(public)
        return key

    def _known(self, name: str, public: bytes, cert: bytes) -> bool:
        if name == MANAGER:
            return public == self.identity.manager_public and not cert
        host = host_of(name)
        if not host:
            return False
        key = (name, public, cert)
        if key in self._certs:
            return True
        if not verify_certificate(self.identity.manager_public, host, public, cert):
            return False
        with self._lock:
            if len(self._certs) > 100_000:
                self._certs.clear()
            self._certs.add(key)
        return True

    def _check_claim(self, sender: str, address: Any, peer: str, now: float) -> None:
        sockname = getattr(getattr(address, "addressDetails", None), "sockname", None)
        if not isinstance(sockname, tuple) or len(sockname) < 2:
            return
        key = (str(sockname[0]), int(sockname[1]))
        with self._lock:
            holder = self._claims.get(key)
            if holder is not None and holder[0] != sender and now - holder[1] < CLAIM_HOLD_S:
                raise self.reject(peer, f"{sender} claims the address {key[0]}:{key[1]} of {holder[0]}")
            if len(self._claims) > 100_000:
                self._claims = {k: v for k, v in self._claims.items() if now - v[1] < CLAIM_HOLD_S}
            self._claims[key] = (sender, now)

    def _forget_idle(self, now: float) -> None:
        if len(self._windows) > 1024:
            self._windows = {k: w for k, w in self._windows.items() if now - w.last_s < STREAM_IDLE_S}

    def reject(self, peer: str, reason: str) -> FrameRejected:
        """Log a refusal: once per peer and second, and at most LOG_BURST lines a second in all
        (a flood of refusals must not fill the disk); the lines held back are counted."""
        now = time.monotonic()
        lines = []
        with self._lock:
            if now - self._burst_start >= LOG_EVERY_S:
                if self._held_back:
                    lines.append(f"{self._held_back} more refused frames in the last second")
                self._burst_start, self._burst, self._held_back = now, 0, 0
            last = self._logged.get(peer)
            if last is None or now - last >= LOG_EVERY_S:
                if self._burst < LOG_BURST:
                    self._burst += 1
                    self._logged[peer] = now
                    lines.append(f"refused from {peer}: {reason}")
                else:
                    self._held_back += 1
            if len(self._logged) > 10_000:
                self._logged = {p: t for p, t in self._logged.items() if now - t < LOG_EVERY_S}
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in lines:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"{stamp} neverstop[{self.identity.name}] {line}\n")
                sys.stderr.flush()
        return FrameRejected(reason)


# -- installing into Thespian ------------------------------------------------------------------

_wire: Wire | None = None
_UNOPENED = object()


def active() -> Wire | None:
    return _wire


def install(identity: Identity, policy: Policy) -> Wire:
    """Sign and check every TCP frame of Thespian in this process and those it forks.
    Call before creating the ActorSystem."""
    global _wire
    from thespian.system.transport import TCPTransport as tcp
    from thespian.system.transport.streamBuffer import ReceiveBuffer

    wire = Wire(identity, policy)
    if _wire is not None:
        _wire = wire
        return wire
    _wire = wire
    acks = {_payload(tcp.ackMsg), _payload(tcp.ackDataErrMsg)}

    class CheckedBuffer(ReceiveBuffer):  # type: ignore[misc]
        """Thespian's receive buffer, with the size cap and the checks before unpickling."""

        peer = "?"

        def __init__(self, _serializer: Any = None) -> None:
            super().__init__(self._open)
            self._opened: Any = _UNOPENED

        def completed(self) -> Any:
            """Checked once: Thespian asks twice for a frame that arrives where it awaits an ACK,
            and a second check would take the frame for its own replay."""
            if self._size is None or self._blen != self._size:
                return None
            if self._opened is _UNOPENED:
                self._opened = self._deserialize(self._buf)
            return self._opened, self._extra

        def addMore(self, buf: bytes) -> None:
            super().addMore(buf)
            w = _wire
            assert w is not None
            if self._size is not None and self._size > MAX_FRAME_BYTES:
                raise w.reject(self.peer, f"frame declares {self._size} bytes (at most {MAX_FRAME_BYTES})")
            if self._size is None and len(self._buf) > 20:
                raise w.reject(self.peer, "no frame length in the first bytes")

        def _open(self, data: bytes) -> Any:
            if data in acks:  # Thespian's fixed acknowledgements carry nothing to check
                return pickle.loads(data)
            w = _wire
            assert w is not None
            return w.open(data, self.peer)

    original_incoming = tcp.TCPIncoming_Common.__init__

    def incoming_init(self: Any, rmtAddr: Any, baseSock: Any, rcvBuf: Any = None) -> None:
        original_incoming(self, rmtAddr, baseSock, rcvBuf)
        with contextlib.suppress(OSError, AttributeError, IndexError):
            host, port = baseSock.getpeername()[:2]
            self._rData.peer = f"{host}:{port}"

    original_transport = tcp.TCPTransport.__init__

    def transport_init(self: Any, *args: Any, **kw: Any) -> None:
        original_transport(self, *args, **kw)
        sockname = getattr(getattr(self.myAddress, "addressDetails", None), "sockname", None)
        w = _wire
        if w is not None and isinstance(sockname, tuple):
            w.local_addrs.add((str(sockname[0]), int(sockname[1])))

    def serializer(self: Any, intent: Any) -> bytes:
        w = _wire
        assert w is not None
        body = pickle.dumps((self.myAddress, intent.message), pickle.HIGHEST_PROTOCOL)
        target = intent.targetAddr.addressDetails.sockname
        frame = w.seal(body, (str(target[0]), int(target[1])))
        return f"{len(frame)}>".encode() + frame

    os.register_at_fork(after_in_child=_forked)
    tcp.ReceiveBuffer = CheckedBuffer
    tcp.TCPIncoming_Common.__init__ = incoming_init
    tcp.TCPTransport.__init__ = transport_init
    tcp.TCPTransport.serializer = serializer
    return wire


def _forked() -> None:
    """A forked process (a Thespian actor) listens on its own address, not its parent's."""
    if _wire is not None:
        _wire.local_addrs = set()


def _payload(framed: bytes) -> bytes:
    return framed[framed.index(b">") + 1:]
