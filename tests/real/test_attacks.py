"""Real mode under attack, on loopback: a stranger on the network, a compute host whose key
was stolen, and someone who can write the shared storage.

One production deployment (the installed command, not the test build), a manager and two
agents with libvirt's test driver, all keyed. Every attack is played against it and judged
by its effects: no marker file written, every VM still running where it was, every daemon
alive, the HA store unchanged, and a log line naming the peer that was refused. Two
control cases prove the frames the attacks forge are well made: the same bytes signed
with the manager's own key are obeyed once, and a replay of them is not.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from real_harness import LoopbackCluster, pids_with
from test_conformance import CLUSTER, view

from actors.messages import HostEvent, OpReply, StopVm, VmViewChanged
from actors.states import VmState
from real.control import read_reply
from real.heartbeat import encode_record, record_path
from real.keys import Identity, keygen, load_key
from real.management import Control
from real.shell import Envelope, Nodes, Published
from real.wire import MAX_FRAME_BYTES, Wire


@dataclass
class Attack:
    name: str
    refused_peers: list[tuple[str, int]] = field(default_factory=list)  # (log name, our source port)


@dataclass
class Target:
    daemon: str  # "manager", "host-1", "host-2": whose log says what it refused
    port: int
    prompt: bool = True  # False: the daemon's own process, which reads its port only when it asks

class Range:
    """The deployment, what it looked like before, and what an attacker has."""

    def __init__(self, cluster: LoopbackCluster) -> None:
        self.cluster = cluster
        self.marker_dir = cluster.dir / "markers"
        self.marker_dir.mkdir()
        key = load_key(cluster.key)
        self.manager = key.manager()
        self.host2 = load_key(cluster.host_key("host-2")).host("host-2")  # the stolen host key
        self.stranger = load_key(keygen(str(cluster.dir / "stranger.key"))).manager()
        self.targets: list[Target] = []
        for daemon, marker in self.markers().items():
            own = listening_ports([cluster.procs[daemon].pid])
            self.targets += [Target(daemon, p, p not in own) for p in listening_ports(pids_with(marker))]
        self.pids = {d: sorted(pids_with(m)) for d, m in self.markers().items()}
        self.placement = view(cluster.status())
        self.store = store_rows(cluster)

    def markers(self) -> dict[str, str]:
        out = {"manager": self.cluster.manager_marker()}
        out.update({h: self.cluster.agent_marker(h) for h in self.cluster.hosts})
        return out

    def ports(self, daemon: str) -> list[int]:
        return [t.port for t in self.targets if t.daemon == daemon]


def listening_ports(pids: list[int]) -> list[int]:
    """The TCP ports these processes listen on (from /proc: Thespian picks most at random)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and parts[9] in inodes:
            ports.add(int(parts[1].split(":")[1], 16))
    return sorted(ports)


def store_rows(cluster: LoopbackCluster) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(f"file:{cluster.dir / 'state.db'}?mode=ro", uri=True)
    try:
        tables = ("vm", "config", "maintenance")
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    finally:
        db.close()


def fake_sender(port: int) -> Any:
    """The address a forged frame claims to come from (nobody listens there)."""
    from thespian.actors import ActorAddress
    from thespian.system.transport.IPBase import TCPv4ActorAddress

    return ActorAddress(TCPv4ActorAddress("127.0.0.1", port, external=True))


_SENDER_PORTS: dict[bytes, int] = {}  # one claimed address per key: one identity may not take another's


def signed(identity: Identity, msg: object, port: int, sent_s: float | None = None,
           for_port: int | None = None) -> bytes:
    """A Thespian frame for ``msg`` signed as ``identity``, meant for 127.0.0.1:``for_port``."""
    sender = fake_sender(_SENDER_PORTS.setdefault(identity.public, 7 + 2 * len(_SENDER_PORTS)))
    body = pickle.dumps((sender, msg), pickle.HIGHEST_PROTOCOL)
    frame = Wire(identity, lambda *_: None).seal(body, ("127.0.0.1", for_port or port), sent_s)
    return f"{len(frame)}>".encode() + frame


def send(port: int, data: bytes, wait_s: float = 3.0) -> tuple[int, bytes]:
    """Send ``data`` to 127.0.0.1:``port``; (our source port, what came back before it closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        source = s.getsockname()[1]
        with contextlib.suppress(OSError):
            s.sendall(data)
        got = b""
        deadline = time.monotonic() + wait_s
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
                if b"ACK" in got:
                    break
    return source, got


def os_system_pickle(command: str) -> bytes:
    """The issue's 99-byte exploit: a protocol-0 pickle that calls os.system."""
    payload = f"cos\nsystem\n(V{command}\ntR.".encode()
    return f"{len(payload)}>".encode() + payload


@pytest.fixture(scope="module")
def rng(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Range]:
    cluster = LoopbackCluster(tmp_path_factory.mktemp("attacks"), CLUSTER, shared_pools=("nfs-1",),
                              hooks=False)
    try:
        cluster.start()
        cluster.wait_for(lambda s: view(s)["vm-shared"] == ("Running", "host-1"), 20, "settled")
        time.sleep(2)
        yield Range(cluster)
    finally:
        cluster.stop()


def test_every_attack_is_refused_and_changes_nothing(rng: Range) -> None:
    c = rng.cluster
    attacks: list[Attack] = []
    assert len(rng.ports("manager")) >= 2 and all(len(rng.ports(h)) >= 2 for h in c.hosts), rng.targets

    def play(name: str, frames: Callable[[Target], bytes | None], expect_ack_error: bool = True,
             insider: str = "") -> None:
        """Send ``frames(target)`` to every port (but the insider's own: a host broken into
        can do anything to itself); each must be refused."""
        attack = Attack(name)
        for target in rng.targets:
            data = frames(target) if target.daemon != insider else None
            if data is None:
                continue
            source, answer = send(target.port, data, 3.0 if target.prompt else 0.3)
            assert b"ACK" not in answer or b"ACK+DATAERR" in answer, (name, target, answer)
            if expect_ack_error and target.prompt:
                assert b"ACK+DATAERR" in answer, (name, target, answer)
            if target.prompt or target.daemon == "manager":
                # An agent's own process never reads its port (it asks nothing): what is sent
                # there waits in the kernel, unread, and is judged by its effects only.
                attack.refused_peers.append((target.daemon, source))
        attacks.append(attack)

    # -- a stranger on the network: no key ---------------------------------------------------
    play("a pickle calling os.system, to every port",
         lambda t: os_system_pickle(f"touch {rng.marker_dir}/ran-{t.port}"))
    stop_shared = Control("stop", {"vm": "vm-shared", "no_restart": True})
    play("a Control frame signed with another cluster's key",
         lambda t: signed(rng.stranger, stop_shared, t.port))
    play("SystemShutdown signed with another cluster's key",
         lambda t: signed(rng.stranger, shutdown(), t.port))
    play("a frame that declares 1 GB", lambda t: b"1000000000>" + b"x" * 65536, expect_ack_error=False)
    play(f"a frame over the {MAX_FRAME_BYTES}-byte cap", lambda t: f"{MAX_FRAME_BYTES + 1}>".encode()
         + b"y" * 65536, expect_ack_error=False)
    play("bytes with no frame length", lambda t: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4,
         expect_ack_error=False)

    # -- a compute host whose key was stolen (host-2's) ------------------------------------------
    h2 = rng.host2
    play("host-2 forges a user command", lambda t: signed(h2, stop_shared, t.port), insider="host-2")
    play("host-2 declares host-1's guests gone (HostEvent)",
         lambda t: signed(h2, Envelope("vm/vm-shared", HostEvent("host-1", False, (), True)), t.port),
         insider="host-2")
    play("host-2 answers in host-1's name (OpReply)",
         lambda t: signed(h2, Envelope("vm/vm-shared", OpReply("host-1", "vm-shared", 1, False)), t.port),
         insider="host-2")
    play("host-2 orders host-1 to stop a guest (StopVm)",
         lambda t: signed(h2, Envelope("host/host-1", StopVm("vm-shared", 99, "vm/vm-shared", True)), t.port),
         insider="host-2")
    stopped_view = VmViewChanged("vm-shared", VmState.STOPPED, None)
    play("host-2 publishes a view of host-1's VM",
         lambda t: signed(h2, Published("host-2", "host/host-2", stopped_view, time.time()), t.port),
         insider="host-2")
    play("host-2 claims host-1's address (routes)",
         lambda t: signed(h2, Nodes({}, {"host/host-1": "host-2", "manager": "host-2"}), t.port),
         insider="host-2")
    play("host-2 shuts an actor system down (SystemShutdown)", lambda t: signed(h2, shutdown(), t.port),
         insider="host-2")
    play("host-2 joins the convention as host-1",
         lambda t: signed(h2, register_as("host-1"), t.port) if t.daemon == "manager" else None)
    play("host-2 signs as the manager with its own key",
         lambda t: signed(host_as_manager(h2), stop_shared, t.port), insider="host-2")

    # -- frames signed with the real manager key, but not fresh or not for this port ------------------
    m = rng.manager
    play("a manager frame ten minutes old",
         lambda t: signed(m, stop_shared, t.port, sent_s=time.time() - 600))
    play("a manager frame meant for another port",
         lambda t: signed(m, stop_shared, t.port, for_port=other_port(rng, t.port)))

    # the control case: the manager's key is obeyed once; the very same bytes again are not
    shell_frames = {t.port: signed(m, Control("maintenance", {"host": "host-2", "enter": True}), t.port)
                    for t in rng.targets if t.daemon == "manager" and t.prompt}
    for port, frame in shell_frames.items():
        send(port, frame)
    c.wait_for(lambda s: next(h for h in s["hosts"] if h["name"] == "host-2")["maintenance"], 10,
               "the manager obeys a frame signed with its own key")
    c.cmd("maintenance", host="host-2", enter=False)
    c.wait_for(lambda s: not next(h for h in s["hosts"] if h["name"] == "host-2")["maintenance"], 10,
               "maintenance left")
    replay = Attack("a replay of a valid manager frame")
    for port, frame in shell_frames.items():
        source, answer = send(port, frame)
        assert b"ACK+DATAERR" in answer, (port, answer)
        replay.refused_peers.append(("manager", source))
    attacks.append(replay)

    # -- the control socket ----------------------------------------------------------------------
    for name, request in (("a control request with no MAC", {"cmd": "stop", "args": {"vm": "vm-shared"}}),
                          ("a control request with a forged MAC", {"cmd": "stop", "args": {"vm": "vm-shared"},
                                                                   "t": time.time(), "nonce": "00",
                                                                   "mac": "0" * 64})):
        assert "not authenticated" in raw_control(c.socket, request)
        attacks.append(Attack(name))
    stranger_key = str(c.dir / "stranger.key")
    from real.control import control

    refused = control(c.socket, "stop", {"vm": "vm-shared"}, key_path=stranger_key)
    assert "not authenticated" in refused["error"]
    attacks.append(Attack("a control request signed with another cluster's key"))
    reply = control(c.socket, "crash", {"vm": "vm-shared"}, key_path=c.key)  # a test hook, in production
    assert not reply["ok"] and "unknown command" in reply["error"]
    attacks.append(Attack("the test hook 'crash' on a production manager"))

    time.sleep(2)  # let anything that got in take effect
    judge(rng, attacks)
    print(f"\nattacks: {len(attacks)} tried, 0 succeeded")


def test_shared_storage_cannot_steer_a_host_or_the_manager(rng: Range) -> None:
    """Someone who can write the pool plants a symlink where a heartbeat file belongs, and
    forges an 'armed' record for a host the manager is about to check."""
    c = rng.cluster
    attacks: list[Attack] = []
    victim = c.dir / "victim"
    victim.write_text("precious\n")
    record = Path(record_path(str(c.dir / "nfs-1"), "host-2"))
    record.unlink()
    os.symlink(victim, record)
    deadline = time.monotonic() + 10
    while "heartbeat write on nfs-1 failed" not in c.log("host-2"):
        assert time.monotonic() < deadline, c.log("host-2")
        time.sleep(0.2)
    assert victim.read_text() == "precious\n" and record.is_symlink()
    attacks.append(Attack("a symlinked heartbeat file"))
    record.unlink()

    # host-2 freezes (the manager will ask host-1 to check it); its record is replaced by a
    # forgery: armed, a high number, signed by host-1's key, by a stranger, or tampered with
    h2_pids = pids_with(c.agent_marker("host-2"))
    genuine = c.heartbeat("nfs-1", "host-2")
    for pid in h2_pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        host1 = load_key(c.key).host("host-1")  # armed, a high number, signed with host-1's key
        record.write_bytes(encode_record(host1, 1, 10**6, 1).replace(b"host-1", b"host-2", 1))
        start = len(c.log_full("manager"))
        deadline = time.monotonic() + 40
        while "heartbeat record of host-2 on pool nfs-1 (read by host-1) not trusted" not in \
                c.log_since("manager", start):
            assert time.monotonic() < deadline, c.log("manager")
            time.sleep(0.2)
        attacks.append(Attack("a forged armed heartbeat record"))
    finally:
        for pid in h2_pids:
            os.kill(pid, signal.SIGCONT)
    assert genuine is not None and genuine[1] is None
    deadline = time.monotonic() + 20
    while (c.heartbeat("nfs-1", "host-2") or (0, 0))[0] < 1:
        assert time.monotonic() < deadline, c.log("host-2")  # host-2 writes a genuine record again
        time.sleep(0.2)
    judge(rng, attacks, logs=False)
    print(f"\nattacks: {len(attacks)} tried, 0 succeeded")


def judge(rng: Range, attacks: list[Attack], logs: bool = True) -> None:
    c = rng.cluster
    assert not list(rng.marker_dir.iterdir()), "a pickle ran code"
    assert view(c.status()) == rng.placement
    # every agent up again (a paused one is unreachable until it answers enough pings)
    c.wait_for(lambda s: all(h["agent"] == "up" for h in s["hosts"]), 30, "every agent up")
    for daemon, marker in rng.markers().items():
        assert set(rng.pids[daemon]) <= set(pids_with(marker)), f"a process of {daemon} is gone"
    assert store_rows(c) == rng.store
    if logs:
        missing = []
        deadline = time.monotonic() + 20  # a daemon's own port is read when it next asks its actors
        while True:
            c.status()
            missing = [(a.name, daemon, source) for a in attacks for daemon, source in a.refused_peers
                       if f"refused from 127.0.0.1:{source}:" not in c.log_full(daemon)]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not missing, missing


def shutdown() -> object:
    from thespian.system.messages.admin import SystemShutdown

    return SystemShutdown()


def register_as(host: str) -> object:
    from thespian.system.messages.convention import ConventionRegister

    from real.authz import HOST_CAPABILITY

    return ConventionRegister(fake_sender(5), {HOST_CAPABILITY: host, "Admin Port": 5}, firstTime=True)


def host_as_manager(host: Identity) -> Identity:
    return Identity("manager", host.signer, host.public, b"", host.manager_public)


def other_port(rng: Range, port: int) -> int:
    return next(t.port for t in rng.targets if t.port != port)


def raw_control(path: str, request: dict[str, Any]) -> str:
    import json

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        data = read_reply(s)
    return str(json.loads(data).get("error", ""))
