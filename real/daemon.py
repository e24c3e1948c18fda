"""The two long-running processes of real mode, and the control socket between users and
the manager.

Both daemons start the same way (``_secure``): a key (``--key``, ``real.keys``) that only
root can read, every Thespian frame signed and checked (``real.wire``, ``real.authz``),
a umask that makes every file they write private, Thespian's log in systemd's
``LogsDirectory``, and never a listening socket on every interface. Control requests
carry an HMAC made with the cluster key, so that the control socket obeys only whoever
holds it, even if its file permissions were loosened.

``run_manager``: the convention leader's actor system on ``--listen ADDR:PORT`` (bound to
that address only), the management shell with the HA manager, and a control socket (a
Unix socket, root only) through which ``neverstop real status|vm|host|config`` talk to it
as one JSON line each way. ``run_agent``: a compute host's actor system, joined to the
manager's convention, advertising the capability ``neverstop.host = NAME`` so that the
management shell places the host agent there. Both stay in the foreground (for systemd)
until SIGTERM or SIGINT, then shut their actor system down; guests keep running.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from real.keys import DEFAULT_KEY, Identity, KeyFile, KeyFileError, load_key

DEFAULT_SOCKET = "/run/neverstop/manager.sock"
DEFAULT_LOGS = "/var/log/neverstop"  # systemd's LogsDirectory=neverstop sets $LOGS_DIRECTORY to it
CONTROL_SKEW_S = 60.0  # a control request older than this is refused (and a replay of one)
ANY_ADDRESS = ("", "0.0.0.0", "::", "*")
DEFAULT_PORT = 1900
ASK_TIMEOUT_S = 10.0
REJOIN_S = 5.0  # an agent re-registers with the convention leader this often
REJOIN_CAPABILITY = "neverstop.rejoin"


class DaemonError(Exception):
    """Cannot start or reach a daemon: one line for the user."""


def split_addr(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        host, port = text, str(default_port)
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise DaemonError(f"bad address {text!r}: expected ADDR:PORT") from None


def source_address_towards(addr: tuple[str, int]) -> str:
    """The local address this machine uses to reach ``addr`` (no packet is sent)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(addr)
        return str(s.getsockname()[0])
    finally:
        s.close()


def _refuse_any_address(ip: str, flag: str) -> None:
    if ip in ANY_ADDRESS:
        raise DaemonError(f"{flag} {ip or '(empty)'}: that binds every interface and opens neverstop's ports "
                          "to every network; give the management address "
                          "(docs/real-mode.md, 'What to firewall')")


def _identity(key_path: str, host: str | None) -> tuple[KeyFile, Identity]:
    """This node's key and identity: the manager's, or host ``host``'s."""
    try:
        key = load_key(key_path)
        return key, key.manager() if host is None else key.host(host)
    except KeyFileError as err:
        raise DaemonError(str(err)) from None


def _secure(identity: Identity) -> None:
    """Sign and check every Thespian frame as ``identity``; private files from here on.
    Before the ActorSystem: Thespian's processes fork from this one."""
    from real import authz, wire

    os.umask(0o077)
    logs = (os.environ.get("LOGS_DIRECTORY") or DEFAULT_LOGS).split(":")[0]
    try:
        os.makedirs(logs, mode=0o700, exist_ok=True)
    except OSError as err:
        raise DaemonError(f"cannot create the log directory {logs}: {err.strerror} "
                          "(set LOGS_DIRECTORY)") from None
    os.environ.setdefault("THESPLOG_FILE", os.path.join(logs, "thespian.log"))
    wire.install(identity, authz.admit)


def _stop_on_signals() -> Callable[[], bool]:
    stopping = {"now": False}

    def handler(_sig: int, _frame: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return lambda: stopping["now"]


def _log(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} neverstop: {text}\n")
    sys.stderr.flush()


# -- the manager ---------------------------------------------------------------------------------


_management_shell: type | None = None


def use_management_shell(cls: type) -> None:
    """Run the manager with this management shell class (``real.hooks``, the test build)."""
    global _management_shell
    _management_shell = cls


def run_manager(cluster_path: str | None, listen: str, state: str | None, socket_path: str,
                key_path: str = DEFAULT_KEY, ready_file: str | None = None) -> int:
    from real.cluster import load_cluster

    if cluster_path is None:
        raise DaemonError("--config is required")
    ip, port = split_addr(listen)
    _refuse_any_address(ip, "--listen")
    key, identity = _identity(key_path, None)
    cluster = load_cluster(cluster_path)
    if state:
        from dataclasses import replace

        cluster = replace(cluster, settings=replace(cluster.settings, state=state))
    os.environ["THESPIAN_BASE_IPADDR"] = ip
    from thespian.actors import ActorSystem

    from real.management import MANAGER_GLOBAL_NAME, Control, ManagementShell, MgmtBoot
    from real.thespian_env import bind_strictly

    _secure(identity)
    bind_strictly()
    stopping = _stop_on_signals()
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": port, "neverstop.role": "manager"})
    server = _control_socket(socket_path)  # after the fork of Thespian's processes
    guard = ControlGuard(key.control_key())
    try:
        shell = asys.createActor(_management_shell or ManagementShell, globalName=MANAGER_GLOBAL_NAME)
        if asys.ask(shell, MgmtBoot(node="mgmt", cluster=cluster), ASK_TIMEOUT_S) is None:
            raise DaemonError("the management shell did not boot")
        _log(f"manager listening on {ip}:{port}; control socket {socket_path}; frames signed with {key_path}")
        if ready_file:
            with open(ready_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        while not stopping():
            _serve_one(server, guard, lambda cmd, args: _ask(asys, shell, Control(cmd, args)))
    finally:
        server.close()
        with contextlib.suppress(OSError):
            os.unlink(socket_path)
        asys.shutdown()
    _log("manager stopped")
    return 0


def _ask(asys: Any, shell: Any, msg: Any) -> dict[str, Any]:
    from real.management import ControlReply

    reply = asys.ask(shell, msg, ASK_TIMEOUT_S)
    if reply is None:
        return {"ok": False, "error": "the manager did not answer"}
    if not isinstance(reply, ControlReply):  # whatever else reached this process's port
        _log(f"control: {type(reply).__name__} arrived instead of the shell's answer: dropped")
        return {"ok": False, "error": "the manager's answer was lost: try again"}
    return {"ok": reply.ok, "error": reply.error, "data": reply.data}


def _control_socket(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)  # root only: whoever reaches it controls HA
    try:
        server.bind(path)
    finally:
        os.umask(old)
    server.listen(16)
    server.settimeout(0.5)
    return server


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


def control_mac(key: bytes, request: dict[str, Any]) -> str:
    signed = {k: request.get(k) for k in ("cmd", "args", "t", "nonce")}
    body = json.dumps(signed, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def _serve_one(server: socket.socket, guard: ControlGuard,
               handle: Callable[[str, dict[str, Any]], dict[str, Any]]) -> None:
    try:
        conn, _ = server.accept()
    except (TimeoutError, InterruptedError):
        return
    with conn:
        conn.settimeout(5)
        try:
            data = b""
            while not data.endswith(b"\n") and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            request = json.loads(data or b"{}")
            if not isinstance(request, dict) or not isinstance(request.get("args", {}), dict):
                raise ValueError("expected a JSON object with an object of args")
            refused = guard.refusal(request)
            if refused is not None:
                _log(f"control request refused: {refused}")
                reply = {"ok": False, "error": refused}
            else:
                reply = handle(str(request.get("cmd", "")), dict(request.get("args", {})))
        except (OSError, ValueError) as err:
            reply = {"ok": False, "error": f"bad request: {err}"}
        except Exception as err:  # the manager keeps serving whatever one request does
            _log(f"control request failed: {type(err).__name__}: {err}")
            reply = {"ok": False, "error": f"the manager failed on this request: {type(err).__name__}"}
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply, default=str).encode() + b"\n")


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
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as err:
        raise DaemonError(f"cannot reach the manager at {socket_path}: {err.strerror or err}") from None
    finally:
        s.close()
    try:
        reply: dict[str, Any] = json.loads(data)
    except ValueError:
        raise DaemonError(f"the manager at {socket_path} gave no answer") from None
    return reply


# -- the agent -----------------------------------------------------------------------------------


def run_agent(manager: str, name: str, libvirt_uri: str, address: str | None, admin_port: int,
              ready_file: str | None = None, watchdog_state: str | None = None,
              key_path: str = DEFAULT_KEY) -> int:
    mgr = split_addr(manager)
    _refuse_any_address(mgr[0], "--manager")
    if address is not None:
        _refuse_any_address(address, "--address")
    _, identity = _identity(key_path, name)
    if watchdog_state:
        watchdog_state = os.path.abspath(watchdog_state)  # the agent shell runs elsewhere (cwd)
        if not os.path.isdir(os.path.dirname(watchdog_state)):
            raise DaemonError(f"--watchdog-state {watchdog_state}: no such directory (start the "
                              "watchdog daemon first: it creates it)")
    ip = address or source_address_towards(mgr)
    os.environ["THESPIAN_BASE_IPADDR"] = ip
    from thespian.actors import ActorSystem

    from real.authz import HOST_CAPABILITY
    from real.management import ADDRESS_CAPABILITY, LIBVIRT_CAPABILITY, WATCHDOG_CAPABILITY
    from real.thespian_env import bind_strictly

    _secure(identity)
    bind_strictly()

    stopping = _stop_on_signals()
    caps = {
        "Admin Port": admin_port,
        "Convention Address.IPv4": mgr,
        HOST_CAPABILITY: name,
        LIBVIRT_CAPABILITY: libvirt_uri,
        ADDRESS_CAPABILITY: ip,
        WATCHDOG_CAPABILITY: watchdog_state or "",
    }
    asys = ActorSystem("multiprocTCPBase", caps)
    _log(f"agent for {name} on {ip}:{admin_port}, joining the manager at {mgr[0]}:{mgr[1]}; "
         f"libvirt {libvirt_uri}; watchdog {watchdog_state or 'none'}; frames signed as {identity.name}")
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    rejoins = 0
    next_rejoin = time.monotonic() + REJOIN_S
    try:
        while not stopping():
            time.sleep(0.2)
            if time.monotonic() >= next_rejoin:
                # Re-register with the convention leader (a restarted manager learns of
                # this host this way); the value only has to change.
                rejoins += 1
                asys.updateCapability(REJOIN_CAPABILITY, rejoins)
                next_rejoin = time.monotonic() + REJOIN_S
    finally:
        asys.shutdown()
    _log(f"agent for {name} stopped (guests keep running)")
    return 0
