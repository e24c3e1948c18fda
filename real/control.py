"""The control socket: how ``neverstop real status|vm|host|config`` talk to the manager.

One JSON line each way over a Unix socket that only root can reach (mode 0600, in a
root-only directory). A request is ``{"cmd", "args", "t", "nonce", "mac"}``: the MAC is
an HMAC-SHA256 with the control key derived from the cluster key, over the command, its
arguments, the time and a random nonce, so that the socket obeys only whoever holds the
cluster key, even if its permissions were loosened, and a recorded request cannot be
played again.

The server (``ControlServer``) answers every request with one line, whatever it is:
not JSON, not an object, arguments that are not an object, too long, a wrong MAC. It reads
all clients at once without blocking on any: a client that connects and says nothing,
or too slowly, is dropped after ``CLIENT_TIMEOUT_S`` and holds up nobody else. Complete
requests are carried out one at a time, in the order they arrived.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from real.keys import DEFAULT_KEY, KeyFileError, load_key

CONTROL_SKEW_S = 60.0  # a control request older than this is refused (and a replay of one)
CLIENT_TIMEOUT_S = 2.0  # a client must have sent its whole request by then
REQUEST_MAX_BYTES = 65536
ASK_TIMEOUT_S = 10.0

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


class DaemonError(Exception):
    """Cannot start or reach a daemon: one line for the user."""


def _log(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} neverstop: {text}\n")
    sys.stderr.flush()


def control_mac(key: bytes, request: dict[str, Any]) -> str:
    signed = {k: request.get(k) for k in ("cmd", "args", "t", "nonce")}
    body = json.dumps(signed, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


class ControlGuard:
    """Checks a control request's HMAC (the cluster key's control key), age and nonce."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.nonces: dict[str, float] = {}

    def refusal(self, request: dict[str, Any]) -> str | None:
        mac = str(request.get("mac", ""))
        if not hmac.compare_digest(mac, control_mac(self.key, request)):
            return "not authenticated: the request is not signed with this cluster's key (--key)"
        try:
            age = abs(time.time() - float(request.get("t", 0)))
        except (TypeError, ValueError):
            age = float("inf")
        nonce = str(request.get("nonce", ""))
        if age > CONTROL_SKEW_S or nonce in self.nonces:
            return "not authenticated: a stale or replayed request"
        now = time.monotonic()
        self.nonces = {n: t for n, t in self.nonces.items() if now - t < 2 * CONTROL_SKEW_S}
        self.nonces[nonce] = now
        return None


def parse_request(data: bytes) -> dict[str, Any]:
    """The request in ``data``; ValueError (the reason, one line) if it is not one."""
    if len(data) > REQUEST_MAX_BYTES or not data.endswith(b"\n"):
        raise ValueError(f"expected one JSON line of at most {REQUEST_MAX_BYTES} bytes")
    try:
        request = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(request, dict):
        raise ValueError(f"expected a JSON object, got {type(request).__name__}")
    if not isinstance(request.get("cmd", ""), str) or not isinstance(request.get("args", {}), dict):
        raise ValueError('expected {"cmd": "...", "args": {...}}')
    return request


class _Client:
    __slots__ = ("conn", "data", "deadline")

    def __init__(self, conn: socket.socket, deadline: float) -> None:
        self.conn = conn
        self.data = b""
        self.deadline = deadline


class ControlServer:
    """The manager's end of the control socket."""

    def __init__(self, path: str, guard: ControlGuard) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.path = path
        self.guard = guard
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)  # root only: whoever reaches it controls HA
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.clients: dict[int, _Client] = {}

    def serve(self, handle: Handler, wait_s: float = 0.5) -> None:
        """Read what is ready (at most ``wait_s``), answer every complete request, drop
        clients that took too long."""
        for key, _ in self.selector.select(wait_s):
            if key.fileobj is self.sock:
                self._accept()
            else:
                self._read(self.clients[key.fd], handle)
        now = time.monotonic()
        for client in [c for c in self.clients.values() if c.deadline < now]:
            self._answer(client, {"ok": False, "error": f"bad request: nothing complete within "
                                                         f"{CLIENT_TIMEOUT_S:g} s"})

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                conn, _ = self.sock.accept()
                conn.setblocking(False)
                self.clients[conn.fileno()] = _Client(conn, time.monotonic() + CLIENT_TIMEOUT_S)
                self.selector.register(conn, selectors.EVENT_READ)

    def _read(self, client: _Client, handle: Handler) -> None:
        try:
            chunk = client.conn.recv(REQUEST_MAX_BYTES + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        client.data += chunk
        if chunk and not client.data.endswith(b"\n") and len(client.data) <= REQUEST_MAX_BYTES:
            return  # more to come
        self._answer(client, self._reply(client.data, handle))

    def _reply(self, data: bytes, handle: Handler) -> dict[str, Any]:
        try:
            request = parse_request(data)
        except ValueError as err:
            return {"ok": False, "error": f"bad request: {err}"}
        refused = self.guard.refusal(request)
        if refused is not None:
            _log(f"control request refused: {refused}")
            return {"ok": False, "error": refused}
        try:
            return handle(str(request.get("cmd", "")), dict(request.get("args", {})))
        except Exception as err:  # the manager keeps serving whatever one request does
            _log(f"control request failed: {type(err).__name__}: {err}")
            return {"ok": False, "error": f"the manager failed on this request: {type(err).__name__}"}

    def _answer(self, client: _Client, reply: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            client.conn.setblocking(True)
            client.conn.settimeout(1.0)  # a client that does not read its answer is dropped
            client.conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
        self._close(client)

    def _close(self, client: _Client) -> None:
        self.clients.pop(client.conn.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.conn)
        client.conn.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._close(client)
        self.selector.close()
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def read_reply(s: socket.socket) -> bytes:
    """Read one reply line (or what came before the manager closed the connection)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def control(socket_path: str, cmd: str, args: dict[str, Any] | None = None,
            timeout_s: float = ASK_TIMEOUT_S + 5, key_path: str = DEFAULT_KEY) -> dict[str, Any]:
    """Send one command to a running manager; raises DaemonError if none answers."""
    try:
        key = load_key(key_path).control_key()
    except KeyFileError as err:
        raise DaemonError(str(err)) from None
    request: dict[str, Any] = {"cmd": cmd, "args": args or {}, "t": time.time(),
                               "nonce": os.urandom(16).hex()}
    request["mac"] = control_mac(key, request)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(socket_path)
        s.sendall(json.dumps(request).encode() + b"\n")
        data = read_reply(s)
    except OSError as err:
        raise DaemonError(f"cannot reach the manager at {socket_path}: {err.strerror or err}") from None
    finally:
        s.close()
    try:
        reply: dict[str, Any] = json.loads(data)
    except ValueError:
        raise DaemonError(f"the manager at {socket_path} gave no answer") from None
    return reply


