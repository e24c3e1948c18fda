"""The two long-running processes of real mode, and the control socket between users and
the manager.

Both daemons start the same way (``_secure``): a key (``--key``, ``real.keys``) that only
root can read, every Thespian frame signed and checked (``real.wire``, ``real.authz``),
a umask that makes every file they write private, Thespian's log in systemd's
``LogsDirectory``, and never a listening socket on every interface. The control socket
is ``real.control``.

``run_manager``: the convention leader's actor system on ``--listen ADDR:PORT`` (bound to
that address only), the management shell with the HA manager, and a control socket (a
Unix socket, root only) through which ``neverstop real status|vm|host|config`` talk to it
as one JSON line each way. ``run_agent``: a compute host's actor system, joined to the
manager's convention, advertising the capability ``neverstop.host = NAME`` so that the
management shell places the host agent there. Both stay in the foreground (for systemd)
until SIGTERM or SIGINT, then shut their actor system down; guests keep running.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from real.control import ASK_TIMEOUT_S, ControlGuard, ControlServer, DaemonError
from real.keys import DEFAULT_KEY, Identity, KeyFile, KeyFileError, load_key
from real.liveness import (
    PROBE_TIMEOUT_S,
    SHELL_MISSES,
    DeadActorSystem,
    Liveness,
    StateLock,
    admin_probe,
    connect_error,
    refuse_if_listening,
    sd_notify,
)
from real.store import StoreError, check_state_file

__all__ = ["DaemonError", "run_agent", "run_manager", "split_addr"]

DEFAULT_SOCKET = "/run/neverstop/manager.sock"
DEFAULT_LOGS = "/var/log/neverstop"  # systemd's LogsDirectory=neverstop sets $LOGS_DIRECTORY to it
ANY_ADDRESS = ("", "0.0.0.0", "::", "*")
DEFAULT_PORT = 1900
REJOIN_S = 5.0  # an agent re-registers with the convention leader this often (jittered +-50%)
DEFAULT_JOIN_JITTER_S = 3.0  # an agent waits up to this long before it joins (--join-jitter)
REJOIN_CAPABILITY = "neverstop.rejoin"
MANAGER_UNREACHABLE_LOG_S = 60.0  # an agent that cannot reach the manager says so this often


def split_addr(text: str, default_port: int = DEFAULT_PORT, flag: str = "") -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        host, port = text, str(default_port)
    try:
        number = int(port)
    except ValueError:
        raise DaemonError(f"{flag or 'address'} {text}: expected ADDR:PORT") from None
    if not 0 < number < 65536:
        raise DaemonError(f"{flag or 'address'} {text}: the port must be 1-65535")
    return host.strip("[]"), number


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
                key_path: str = DEFAULT_KEY, ready_file: str | None = None, init_state: bool = False) -> int:
    from real.cluster import load_cluster

    if cluster_path is None:
        raise DaemonError("--config is required")
    ip, port = split_addr(listen, flag="--listen")
    _refuse_any_address(ip, "--listen")
    key, identity = _identity(key_path, None)
    cluster = load_cluster(cluster_path)
    if state:
        from dataclasses import replace

        cluster = replace(cluster, settings=replace(cluster.settings, state=state))
    busy = refuse_if_listening(ip, port, "manager")
    if busy:
        raise DaemonError(f"--listen {busy}")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(cluster.settings.state)), exist_ok=True)
        lock = StateLock(cluster.settings.state)
    except OSError as err:
        raise DaemonError(str(err)) from None
    try:
        _log(check_state_file(cluster.settings.state, cluster.name, init_state))
    except StoreError as err:
        os.close(lock.fd)
        raise DaemonError(str(err)) from None
    os.environ["THESPIAN_BASE_IPADDR"] = ip

    from real.management import MANAGER_GLOBAL_NAME, ManagementShell, MgmtBoot
    from real.thespian_env import bind_strictly

    _secure(identity)
    bind_strictly()
    stopping = _stop_on_signals()
    asys = start_actor_system({"Admin Port": port, "neverstop.role": "manager"})
    server = ControlServer(socket_path, ControlGuard(key.control_key()))  # after Thespian's forks
    try:
        shell = asys.createActor(_management_shell or ManagementShell, globalName=MANAGER_GLOBAL_NAME)
        if asys.ask(shell, MgmtBoot(node="mgmt", cluster=cluster), ASK_TIMEOUT_S) is None:
            raise DaemonError("the management shell did not boot")
        _log(f"manager listening on {ip}:{port}; control socket {socket_path}; frames signed with {key_path}")
        if ready_file:
            with open(ready_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        sd_notify("READY=1")
        liveness = Liveness({  # the admin first: while it does not answer, the shell is not asked
            "Thespian's admin": admin_probe(asys),
            "the management shell": lambda: bool(_ask(asys, shell, "ping", {}, PROBE_TIMEOUT_S)["ok"]),
        }, _log, patience={"the management shell": SHELL_MISSES})
        while not stopping():
            server.serve(lambda cmd, args: _ask(asys, shell, cmd, args))
            liveness.check()
    except DeadActorSystem as dead:
        _log(f"manager: {dead}")
        return 1
    finally:
        sd_notify("STOPPING=1")
        server.close()
        asys.shutdown()
        os.close(lock.fd)
    _log("manager stopped")
    return 0


_requests = itertools.count(1)


def _ask(asys: Any, shell: Any, cmd: str, args: dict[str, Any],
         timeout_s: float = ASK_TIMEOUT_S) -> dict[str, Any]:
    """The management shell's answer to one command. Anything else that reaches this
    process meanwhile (the late answer to an earlier command that timed out) is dropped."""
    from real.management import Control, ControlReply

    req = next(_requests)
    deadline = time.monotonic() + timeout_s
    reply = asys.ask(shell, Control(cmd, args, req), timeout_s)
    while reply is not None and not (isinstance(reply, ControlReply) and reply.req == req):
        _log(f"control: a late or stray {type(reply).__name__} dropped")
        left = deadline - time.monotonic()
        reply = asys.listen(left) if left > 0 else None
    if reply is None:
        return {"ok": False, "error": "the manager did not answer"}
    return {"ok": reply.ok, "error": reply.error, "data": reply.data}


# -- the agent -----------------------------------------------------------------------------------


ADMIN_START_TRIES = 3  # Thespian's admin may answer too late on a loaded machine: ask again


def start_actor_system(caps: dict[str, Any]) -> Any:
    """Thespian's actor system, or a one-line DeadActorSystem. Its admin process may not
    answer in Thespian's time on a loaded machine (64 agents starting on 2 cores); a second
    call finds the admin that came up late (or starts one), and only after the last try
    does the daemon exit 1, for systemd to start it again, rather than with a traceback."""
    from thespian.actors import ActorSystem, InvalidActorAddress

    port = caps.get("Admin Port")
    for attempt in range(1, ADMIN_START_TRIES + 1):
        try:
            return ActorSystem("multiprocTCPBase", caps)
        except InvalidActorAddress as err:
            if attempt == ADMIN_START_TRIES:
                raise DeadActorSystem(f"Thespian's admin did not start on port {port} ({err})") from None
            _log(f"Thespian's admin on port {port} did not answer in time (try {attempt} of "
                 f"{ADMIN_START_TRIES}): asking again")
            time.sleep(attempt)
    raise AssertionError("unreachable")


def _jittered(period_s: float) -> float:
    """``period_s`` +-50%: agents started together (a power restore, a resumed network)
    do not re-register with the manager in lockstep."""
    return period_s * random.uniform(0.5, 1.5)


def run_agent(manager: str, name: str, libvirt_uri: str, address: str | None, admin_port: int,
              ready_file: str | None = None, watchdog_state: str | None = None,
              key_path: str = DEFAULT_KEY, join_jitter_s: float = DEFAULT_JOIN_JITTER_S) -> int:
    mgr = split_addr(manager, flag="--manager")
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

    from real.authz import HOST_CAPABILITY
    from real.management import (
        ADDRESS_CAPABILITY,
        INCARNATION_CAPABILITY,
        LIBVIRT_CAPABILITY,
        WATCHDOG_CAPABILITY,
    )
    from real.thespian_env import bind_strictly

    busy = refuse_if_listening(ip, admin_port, "agent")
    if busy:
        raise DaemonError(f"--admin-port {busy}")
    if not 0 <= join_jitter_s <= 600:
        raise DaemonError(f"--join-jitter {join_jitter_s:g}: must be 0-600 seconds")
    # Hosts that boot together (a rack after a power cut) spread their joins: the manager
    # places their agent shells a few at a time anyway, and its join grace covers the wait.
    time.sleep(random.uniform(0, join_jitter_s))
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
        INCARNATION_CAPABILITY: f"{os.getpid()}-{time.time_ns()}",
    }
    asys = start_actor_system(caps)
    _log(f"agent for {name} on {ip}:{admin_port}, joining the manager at {mgr[0]}:{mgr[1]}; "
         f"libvirt {libvirt_uri}; watchdog {watchdog_state or 'none'}; frames signed as {identity.name}")
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    rejoins = 0
    next_rejoin = time.monotonic() + _jittered(REJOIN_S)
    next_reach = time.monotonic()
    sd_notify("READY=1")
    liveness = Liveness({"Thespian's admin": admin_probe(asys)}, _log)
    try:
        while not stopping():
            time.sleep(0.2)
            now = time.monotonic()
            if now >= next_rejoin:
                # Re-register with the convention leader (a restarted manager learns of
                # this host this way); the value only has to change.
                rejoins += 1
                asys.updateCapability(REJOIN_CAPABILITY, rejoins)
                next_rejoin = now + _jittered(REJOIN_S)
            if now >= next_reach:  # once a minute at most, the manager not answering is news
                why = connect_error(*mgr)
                next_reach = now + (MANAGER_UNREACHABLE_LOG_S if why else REJOIN_S)
                if why:
                    _log(f"agent for {name}: cannot reach the manager at {mgr[0]}:{mgr[1]}: {why}")
            liveness.check()
    except DeadActorSystem as dead:
        _log(f"agent for {name}: {dead} (guests keep running)")
        return 1
    finally:
        sd_notify("STOPPING=1")
        asys.shutdown()
    _log(f"agent for {name} stopped (guests keep running)")
    return 0
