"""The pieces of real mode's security, one at a time: key files, signed frames, the pickle
allow-list, the role policy, the control socket's MAC, and the refusals at start-up.
(``test_attacks`` plays them together against a running deployment.)"""

from __future__ import annotations

import io
import os
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

from actors.messages import CheckHostReply, HostEvent, OpReply, Pong, ProbePing, ProbePong, StopVm
from real.allowlist import SafeUnpickler, UnpicklingRefused
from real.authz import admit
from real.control import ControlGuard, control_mac
from real.keys import KeyFileError, keygen, load_key
from real.shell import Booted, Envelope, Nodes
from real.wire import REPLAY_WINDOW, FrameRejected, Wire


@pytest.fixture
def cluster_key(tmp_path: Path) -> str:
    return keygen(str(tmp_path / "cluster.key"))


def test_keygen_writes_a_private_key_once(tmp_path: Path, cluster_key: str) -> None:
    assert os.stat(cluster_key).st_mode & 0o777 == 0o600
    with pytest.raises(KeyFileError, match="exists; not overwritten"):
        keygen(cluster_key)
    other = keygen(str(tmp_path / "other.key"))
    assert load_key(other).secret != load_key(cluster_key).secret


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused(cluster_key: str, mode: int) -> None:
    os.chmod(cluster_key, mode)
    with pytest.raises(KeyFileError, match=r"readable or writable by group or others .*chmod 600"):
        load_key(cluster_key)


def test_bad_key_files_get_one_line(tmp_path: Path, cluster_key: str) -> None:
    with pytest.raises(KeyFileError, match="no such key file"):
        load_key(str(tmp_path / "missing.key"))
    link = tmp_path / "link.key"
    link.symlink_to(cluster_key)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key(str(link))
    bad = tmp_path / "bad.key"
    for text, why in (("garbage = [", "not a neverstop key file"), ('format = "x"', "format must be"),
                      ('format = "neverstop-key/1"\nkind = "cluster"\nsecret = "abcd"', "64 hex digits")):
        bad.unlink(missing_ok=True)
        bad.write_text(text)
        bad.chmod(0o600)
        with pytest.raises(KeyFileError, match=why):
            load_key(str(bad))


def test_a_host_key_speaks_for_its_host_only(tmp_path: Path, cluster_key: str) -> None:
    host_key = keygen(str(tmp_path / "host-1.key"), "host-1", cluster_key)
    key = load_key(host_key)
    assert key.kind == "host" and key.name == "host-1"
    mine = key.host("host-1")
    assert mine.public == load_key(cluster_key).host("host-1").public  # the same identity either way
    with pytest.raises(KeyFileError, match="cannot act as the manager"):
        key.manager()
    with pytest.raises(KeyFileError, match="not 'host-2'"):
        key.host("host-2")
    with pytest.raises(KeyFileError, match="cannot steer the manager"):
        key.control_key()
    text = Path(host_key).read_text().replace('name = "host-1"', 'name = "host-2"')
    forged = tmp_path / "forged.key"
    forged.write_text(text)
    forged.chmod(0o600)
    with pytest.raises(KeyFileError, match="certificate does not match"):
        load_key(str(forged))


# -- frames ----------------------------------------------------------------------------------------


def pair(cluster_key: str, sender: str = "manager", receiver: str = "host:host-1",
         policy: Any = None) -> tuple[Wire, Wire]:
    key = load_key(cluster_key)

    def identity(name: str) -> Any:
        return key.manager() if name == "manager" else key.host(name.split(":", 1)[1])

    tx = Wire(identity(sender), lambda *_: None)
    rx = Wire(identity(receiver), policy or (lambda *_: None))
    rx.local_addrs.add(("127.0.0.1", 4000))
    return tx, rx


def body(msg: object) -> bytes:
    return pickle.dumps(("sender", msg))


def test_a_signed_frame_opens_once(cluster_key: str) -> None:
    tx, rx = pair(cluster_key)
    frame = tx.seal(body(Pong("host-1", 1, (), ())), ("127.0.0.1", 4000))
    assert rx.open(frame, "peer") == ("sender", Pong("host-1", 1, (), ()))
    with pytest.raises(FrameRejected, match="replayed"):
        rx.open(frame, "peer")


def test_tampered_stale_misdirected_or_foreign_frames_are_refused(tmp_path: Path, cluster_key: str) -> None:
    tx, rx = pair(cluster_key)
    good = tx.seal(body("x"), ("127.0.0.1", 4000))
    flipped = good[:-3] + bytes([good[-3] ^ 1]) + good[-2:]
    with pytest.raises(FrameRejected, match="bad signature"):
        rx.open(flipped, "peer")
    with pytest.raises(FrameRejected, match="stale"):
        rx.open(tx.seal(body("x"), ("127.0.0.1", 4000), sent_s=time.time() - 120), "peer")
    with pytest.raises(FrameRejected, match="meant for 127.0.0.1:4001"):
        rx.open(tx.seal(body("x"), ("127.0.0.1", 4001)), "peer")
    stranger = load_key(keygen(str(tmp_path / "stranger.key"))).manager()
    with pytest.raises(FrameRejected, match="did not issue"):
        rx.open(Wire(stranger, lambda *_: None).seal(body("x"), ("127.0.0.1", 4000)), "peer")
    for junk in (b"", b"NSW1", b"NSW1\xff\xff" + b"\0" * 50, pickle.dumps("x")):
        with pytest.raises(FrameRejected):
            rx.open(junk, "peer")


def test_the_replay_window_takes_late_frames_once(cluster_key: str) -> None:
    tx, rx = pair(cluster_key)
    frames = [tx.seal(body(i), ("127.0.0.1", 4000)) for i in range(REPLAY_WINDOW + 10)]
    rx.open(frames[-1], "peer")
    assert rx.open(frames[20], "peer")[1] == 20  # late, within the window: taken
    for late in (frames[20], frames[5]):  # again; or too old to tell
        with pytest.raises(FrameRejected, match="replayed"):
            rx.open(late, "peer")


def test_the_policy_decides_after_the_signature(cluster_key: str) -> None:
    seen: list[tuple[str, str, object]] = []

    def policy(sender: str, receiver: str, msg: object) -> str | None:
        seen.append((sender, receiver, msg))
        return "it" if msg == "no" else None

    tx, rx = pair(cluster_key, "host:host-2", "manager", policy)
    assert rx.open(tx.seal(body("yes"), ("127.0.0.1", 4000)), "peer")[1] == "yes"
    with pytest.raises(FrameRejected, match="host:host-2 may not send it"):
        rx.open(tx.seal(body("no"), ("127.0.0.1", 4000)), "peer")
    assert [s[:2] for s in seen] == [("host:host-2", "manager")] * 2


# -- the allow-list --------------------------------------------------------------------------------


def unpickle(data: bytes) -> Any:
    return SafeUnpickler(io.BytesIO(data)).load()


@pytest.mark.parametrize("exploit", [
    b"cos\nsystem\n(Vtouch /tmp/neverstop-pwned\ntR.",
    b"cbuiltins\ngetattr\n(cbuiltins\nobject\nV__subclasses__\ntR.",
    b"creal.power\nmake_controller\n(tR.",  # a function of neverstop's own
    b"creal.store\nStore\n(V/tmp/x.db\ntR.",  # a class that touches the disk
    b"cthespian.actors\nActorSystem\n(tR.",
    b"csubprocess\nPopen\n(Vtrue\ntR.",
])
def test_the_allow_list_admits_no_callable_that_acts(exploit: bytes) -> None:
    with pytest.raises(UnpicklingRefused):
        unpickle(exploit)
    assert not Path("/tmp/neverstop-pwned").exists()


def test_the_allow_list_admits_what_neverstop_sends() -> None:
    from thespian.system.messages.convention import ConventionRegister

    from actors.config import DEFAULT
    from actors.host_agent import HostAgent
    from real.agent import AgentBoot

    msgs = [Envelope("manager", Pong("host-1", 3, ("vm-a",), ("nfs-1",))), ConventionRegister(None, {"a": 1}),
            AgentBoot(node="host-1", cells=(("host/host-1", HostAgent("host-1", ("nfs-1",), DEFAULT)),)),
            {1, 2}, frozenset({"x"}), (b"bytes", 1.5, None)]
    for msg in msgs:
        got = unpickle(pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))
        assert type(got) is type(msg)


# -- the role policy -------------------------------------------------------------------------------


def test_a_host_reports_in_its_own_name_only() -> None:
    def vm(msg: object) -> str | None:
        return admit("host:host-2", "manager", Envelope("vm/vm-a", msg))

    pong = Pong("host-2", 1, (), ())
    assert admit("host:host-2", "manager", Envelope("manager", pong)) is None
    assert admit("host:host-2", "manager", Envelope("manager", Pong("host-1", 1, (), ()))) is not None
    assert vm(OpReply("host-2", "vm-a", 1, True)) is None
    assert vm(OpReply("host-1", "vm-a", 1, True)) is not None
    assert admit("host:host-2", "manager",
                 Envelope("manager", CheckHostReply("host-1", "host-3", 1, (), ()))) is not None
    assert vm(HostEvent("host-1", False, (), True)) is not None
    assert admit("host:host-2", "manager", Booted("host-2")) is None
    assert admit("host:host-2", "manager", Booted("host-1")) is not None
    assert admit("host:host-2", "manager", Nodes({}, {"host/host-2": "host-2"})) is None
    assert admit("host:host-2", "manager", Nodes({}, {"host/host-1": "host-2"})) is not None


def test_hosts_only_probe_each_other_and_obey_only_the_manager() -> None:
    from actors.states import Network

    ping = Envelope("host/host-1", ProbePing("host/host-2", 1, Network.MANAGEMENT))
    assert admit("host:host-2", "host:host-1", ping) is None
    assert admit("host:host-3", "host:host-1", ping) is not None  # a ping that names another as sender
    assert admit("host:host-2", "host:host-1",
                 Envelope("host/host-1", ProbePong("host-2", 1, Network.MANAGEMENT))) is None
    stop = Envelope("host/host-1", StopVm("vm-a", 1, "vm/vm-a", True))
    assert admit("host:host-2", "host:host-1", stop) is not None
    assert admit("manager", "host:host-1", stop) is None
    assert admit("host:host-1", "host:host-1", stop) is None  # a node's own processes


def test_a_host_registers_under_its_own_name_only() -> None:
    from thespian.system.messages.admin import SystemShutdown
    from thespian.system.messages.convention import ConventionRegister

    assert admit("host:host-2", "manager", ConventionRegister(None, {"neverstop.host": "host-2"})) is None
    assert "as host 'host-1'" in str(admit("host:host-2", "manager",
                                           ConventionRegister(None, {"neverstop.host": "host-1"})))
    assert admit("host:host-2", "manager", SystemShutdown()) is not None
    assert admit("host:host-2", "host:host-1", SystemShutdown()) is not None


# -- the control socket and start-up ------------------------------------------------------------


def test_control_requests_need_the_cluster_keys_mac(cluster_key: str) -> None:
    key = load_key(cluster_key).control_key()
    guard = ControlGuard(key)
    request: dict[str, Any] = {"cmd": "stop", "args": {"vm": "vm-a"}, "t": time.time(), "nonce": "n1"}
    request["mac"] = control_mac(key, request)
    assert guard.refusal(request) is None
    assert "replayed" in str(guard.refusal(request))
    changed = dict(request, args={"vm": "vm-b"}, nonce="n2")
    assert "not signed" in str(guard.refusal(changed))
    old = dict(request, t=time.time() - 300, nonce="n3")
    old["mac"] = control_mac(key, old)
    assert "stale" in str(guard.refusal(old))


def test_daemons_refuse_to_start_unsafely(tmp_path: Path, cluster_key: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from neverstop.cli import main

    cluster = tmp_path / "cluster.toml"
    cluster.write_text("[[host]]\nname = \"h\"\ncpu = 1\nmemory = \"1GiB\"\n")
    cases = [
        (["real", "manager", "--config", str(cluster), "--listen", "0.0.0.0:1900", "--key", cluster_key],
         "--listen 0.0.0.0: that binds every interface"),
        (["real", "manager", "--config", str(cluster), "--listen", "[::]:1900", "--key", cluster_key],
         "--listen ::"),
        (["real", "manager", "--config", str(cluster), "--listen", "127.0.0.1:1", "--key",
          str(tmp_path / "none.key")], "none.key: no such key file"),
        (["real", "agent", "--manager", "127.0.0.1:1", "--name", "h", "--address", "0.0.0.0", "--key",
          cluster_key], "--address 0.0.0.0"),
        (["real", "status", "--socket", str(tmp_path / "s"), "--key", str(tmp_path / "none.key")],
         "no such key file"),
        (["real", "watchdog", "--state", str(tmp_path / "w"), "--action", "kill-guests", "--key",
          str(tmp_path / "none.key")], "none.key: no such key file"),
        (["real", "watchdog", "--state", str(tmp_path / "w"), "--action", "kill-guests",
          "--key", cluster_key],
         "with a cluster key, say which host this is (--name)"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    os.chmod(cluster_key, 0o644)
    assert main(["real", "agent", "--manager", "127.0.0.1:1", "--name", "h", "--address", "127.0.0.1",
                 "--key", cluster_key]) == 2
    assert "readable or writable by group or others" in capsys.readouterr().err


def test_keygen_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from neverstop.cli import main

    path = str(tmp_path / "c.key")
    assert main(["real", "keygen", path]) == 0
    assert main(["real", "keygen", "--host", "kvm1", "--from", path, str(tmp_path / "kvm1.key")]) == 0
    assert "host kvm1 key written" in capsys.readouterr().out
    assert load_key(str(tmp_path / "kvm1.key")).name == "kvm1"
    assert main(["real", "keygen", path]) == 2
    assert "exists; not overwritten" in capsys.readouterr().err
