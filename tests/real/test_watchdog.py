"""The host watchdog: the agent's half (``FileWatchdog``), the daemon's decisions, the daemon
as a real process killing a stand-in for qemu, and the agent petting it on loopback.

No test here opens a kernel watchdog device or loads softdog: an armed device that stops
being petted resets the machine the tests run on. The device protocol is checked against
a regular file, and the reboot action against a file standing in for /proc/sysrq-trigger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from real.keys import keygen, load_key
from real.qemu import guest_name, guest_qemu_pids, kill_qemu, qemu_pid
from real.watchdog import (
    ARMED,
    DISARMED,
    FIRED,
    RECORD_BYTES,
    WATCHDOG_KEY,
    FileWatchdog,
    StateError,
    WatchdogDaemon,
    WatchdogLogic,
    WatchdogRecord,
    boot_id,
    daemon_pidfile,
    describe,
    read_state,
    write_state,
)


def host_key(directory: Path) -> tuple[str, bytes]:
    """host-1's key file in ``directory``, and the MAC key of its watchdog state file."""
    path = directory / "host-1.key"
    if not path.exists():
        keygen(str(directory / "cluster.key"))
        keygen(str(path), "host-1", str(directory / "cluster.key"))
    return str(path), load_key(str(path)).host("host-1").local_key(WATCHDOG_KEY)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def dummy_qemu(vm: str) -> subprocess.Popen[bytes]:
    """A process that looks like guest ``vm``'s qemu in /proc (argv[0] and ``-name``)."""
    return subprocess.Popen(["qemu-system-x86_64", "-c", "import time; time.sleep(120)", "-name",
                             f"guest={vm},debug-threads=on"], executable=sys.executable)


@contextlib.contextmanager
def dummies(pid_dir: Path, *vms: str) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    pid_dir.mkdir(parents=True, exist_ok=True)
    procs = {vm: dummy_qemu(vm) for vm in vms}
    try:
        for vm, proc in procs.items():
            (pid_dir / f"{vm}.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 10
        while guest_qemu_pids(str(pid_dir)).keys() != set(vms):  # until exec'd
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


# -- finding qemu processes --------------------------------------------------------------------------


def test_guest_name_reads_qemu_command_lines_only() -> None:
    qemu = b"/usr/bin/qemu-system-x86_64\0-name\0guest=vm-1,debug-threads=on\0-S\0"
    assert guest_name(qemu) == "vm-1"
    assert guest_name(b"qemu-kvm\0-name\0guest=a,,b\0") == "a,b"  # libvirt doubles commas in names
    assert guest_name(b"qemu-kvm\0-name\0plain\0") == "plain"
    assert guest_name(b"/bin/sh\0-c\0qemu -name guest=vm-1\0-name\0guest=vm-1\0") is None  # not a qemu
    assert guest_name(b"qemu-system-x86_64\0-m\0512\0") is None
    assert guest_name(b"") is None
    assert guest_name(b"qemu-system-x86_64\0-name\0guest=vm-10\0") != "vm-1"


def test_pid_files_are_checked_against_proc(tmp_path: Path) -> None:
    pid_dir = tmp_path / "qemu"
    with dummies(pid_dir, "vm-a", "vm-b") as procs:
        (pid_dir / "vm-stale.pid").write_text("999999999\n")  # a guest that died long ago
        (pid_dir / "vm-other.pid").write_text(f"{os.getpid()}\n")  # a reused pid: not a qemu
        (pid_dir / "vm-a.xml").write_text("<domstatus/>")
        (pid_dir / "garbage.pid").write_text("not a pid")
        assert guest_qemu_pids(str(pid_dir)) == {vm: p.pid for vm, p in procs.items()}
        assert qemu_pid(str(pid_dir), "vm-b") == procs["vm-b"].pid
        (pid_dir / "vm-b.pid").write_text(f"{procs['vm-a'].pid}\n")  # names another guest's qemu
        assert qemu_pid(str(pid_dir), "vm-b") is None
        lines: list[str] = []
        assert kill_qemu(str(pid_dir), "vm-a", lines.append) == procs["vm-a"].pid
        assert procs["vm-a"].wait(5) == -signal.SIGKILL
        assert lines == [f"killed qemu {procs['vm-a'].pid} of vm-a"]
        assert kill_qemu(str(pid_dir), "vm-b") is None and procs["vm-b"].poll() is None
    assert guest_qemu_pids(str(tmp_path / "missing")) == {}


# -- the agent's half ---------------------------------------------------------------------------------


def test_file_watchdog_writes_armed_and_disarmed_atomically(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "watchdog.state")
    clock = Clock(500.0)
    wd = FileWatchdog(path, clock=clock)
    made = read_state(path)  # made at once, its space reserved, disarmed
    assert made is not None and made.state == DISARMED and os.path.getsize(path) == RECORD_BYTES
    wd.pet(15.0)
    rec = read_state(path)
    assert rec == WatchdogRecord(ARMED, 515.0, 15.0, os.getpid(), boot_id())
    clock.t = 505.0
    wd.pet(3.0)
    assert read_state(path) == WatchdogRecord(ARMED, 508.0, 3.0, os.getpid(), boot_id())
    wd.disarm()
    assert read_state(path) is not None and read_state(path).state == DISARMED  # type: ignore[union-attr]
    assert os.listdir(tmp_path / "run") == ["watchdog.state"]  # no temporary file left
    assert os.path.getsize(path) == RECORD_BYTES  # written in place, never longer or shorter


def test_file_watchdog_is_cheap(tmp_path: Path) -> None:
    """Called in the agent's actor every heartbeat interval: one write in place."""
    wd = FileWatchdog(str(tmp_path / "watchdog.state"))
    t0 = time.perf_counter()
    for _ in range(200):
        wd.pet(3.0)
    per_pet = (time.perf_counter() - t0) / 200
    assert per_pet < 0.005, f"{per_pet * 1e3:.2f} ms per pet"


def test_file_watchdog_says_once_when_it_cannot_write_or_nobody_watches(tmp_path: Path) -> None:
    lines: list[str] = []
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    wd = FileWatchdog(str(blocker / "watchdog.state"), log=lines.append)
    assert wd.pet(3.0) is False  # nothing written, nobody watching
    wd.pet(3.0)
    assert len([x for x in lines if "cannot write" in x]) == 1
    assert len([x for x in lines if "NO watchdog daemon" in x]) == 1

    lines.clear()
    path = str(tmp_path / "watchdog.state")
    clock = Clock()
    wd = FileWatchdog(path, log=lines.append, clock=clock, daemon_check_s=1.0)
    assert wd.pet(3.0) is False  # written, but no daemon: the agent must not claim it
    assert any("NO watchdog daemon" in x for x in lines)
    Path(daemon_pidfile(path)).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    clock.t += 0.5
    assert wd.pet(3.0) is False  # not checked again yet
    assert not any("again" in x for x in lines)
    clock.t += 1.0
    assert wd.pet(3.0) is True
    assert lines[-1].endswith(f"watches {path} again")


def _start_time(pid: int) -> str:
    from real.power import process_start_time

    start = process_start_time(pid)
    assert start is not None
    return start


# -- the daemon's decisions -------------------------------------------------------------------------------


def armed(deadline: float, pid: int = 42, timeout_s: float = 3.0) -> WatchdogRecord:
    return WatchdogRecord(ARMED, deadline, timeout_s, pid, "boot-1")


def test_logic_fires_once_per_arming() -> None:
    logic = WatchdogLogic("boot-1")
    assert not logic.due(0.0) and not logic.fenced()  # nothing read yet: disarmed
    assert logic.observe(None) is None and not logic.due(1e9)  # no file yet: never armed
    logic.observe(WatchdogRecord(DISARMED, boot="boot-1"))
    assert not logic.due(1e9)
    logic.observe(armed(100.0))
    assert not logic.due(99.9) and logic.due(100.0)
    logic.observe(armed(103.0))  # petted in time: the deadline moves
    assert not logic.due(101.0) and logic.due(103.5)
    fired = logic.mark_fired(103.5)
    assert fired.state == FIRED and fired.fired_at == 103.5 and fired.arming == (42, 103.0)
    assert not logic.due(200.0) and logic.fenced()
    logic.observe(armed(103.0))  # the fired mark was not written: still the same arming
    assert not logic.due(200.0) and logic.fenced()
    logic.observe(armed(210.0))  # a new pet: a new arming
    assert not logic.fenced() and not logic.due(209.0) and logic.due(210.0)
    logic.observe(WatchdogRecord(DISARMED, boot="boot-1"))
    assert not logic.due(1e9) and not logic.fenced()


def test_logic_learns_a_fired_arming_from_the_file() -> None:
    """A restarted daemon does not act again on an arming an earlier one acted on."""
    logic = WatchdogLogic("boot-1")
    logic.observe(WatchdogRecord(FIRED, 100.0, 3.0, 42, "boot-1", fired_at=100.2))
    assert logic.fenced() and not logic.due(1e9)
    logic.observe(armed(100.0))
    assert not logic.due(1e9)


def test_logic_keeps_the_last_known_state_through_a_bad_file() -> None:
    logic = WatchdogLogic("boot-1")
    logic.observe(armed(100.0))
    line = logic.observe(None, "bad state record: Expecting value")
    assert line is not None and "keeping the last known state (armed)" in line
    assert logic.observe(None, "bad state record: again") is None  # said once
    assert logic.observe(None) is None  # the file vanished: still the last known state
    assert logic.due(100.0)  # an arming stays an arming
    assert logic.observe(armed(105.0)) == "state file usable again"
    assert not logic.due(104.0)


def test_logic_ignores_a_record_from_an_earlier_boot() -> None:
    logic = WatchdogLogic("boot-2")
    line = logic.observe(armed(100.0))  # written under boot-1: its deadline means nothing now
    assert line is not None and "earlier boot" in line
    assert not logic.due(1e9) and not logic.fenced()
    assert logic.observe(armed(100.0)) is None  # said once


def test_state_records_round_trip_and_garbage_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    rec = WatchdogRecord(FIRED, 12.5, 3.0, 7, "b", 13.0)
    write_state(path, rec)
    assert read_state(path) == rec
    for garbage in (b"", b"{", b"[]", b'{"state": "sleeping"}', b'{"deadline": 3}', b'{"state": "armed", '
                    b'"deadline": "soon"}', b"x" * 5000):
        Path(path).write_bytes(garbage)
        with pytest.raises(StateError):
            read_state(path)


# -- the daemon, in process (fake guests, fake clock) ------------------------------------------------------


class Guests:
    """Stand-in for this host's qemu processes: find, kill, and whether each still runs."""

    def __init__(self, **running: int) -> None:
        self.running = dict(running)
        self.killed: list[tuple[str, int]] = []
        self.unkillable: set[int] = set()

    def find(self) -> dict[str, int]:
        return dict(self.running)

    def kill(self, pid: int, vm: str) -> bool:
        if self.running.get(vm) != pid:
            return False
        self.killed.append((vm, pid))
        if pid not in self.unkillable:
            del self.running[vm]
        return True

    def alive(self, pid: int, vm: str) -> bool:
        return self.running.get(vm) == pid


def make_daemon(tmp_path: Path, guests: Guests, clock: Clock, action: str = "kill-guests",
                device: str | None = None, **kw: object) -> tuple[WatchdogDaemon, list[str]]:
    lines: list[str] = []
    daemon = WatchdogDaemon(str(tmp_path / "watchdog.state"), action, device=device, find_guests=guests.find,
                            kill_guest=guests.kill, still_running=guests.alive, clock=clock,
                            log=lines.append, **kw)  # type: ignore[arg-type]
    return daemon, lines


def test_daemon_kills_every_guest_once_when_the_deadline_passes(tmp_path: Path) -> None:
    clock, guests = Clock(), Guests(**{"vm-a": 11, "vm-b": 12})
    daemon, lines = make_daemon(tmp_path, guests, clock)
    agent = FileWatchdog(daemon.state_path, clock=clock)
    daemon.poll_once()
    assert guests.killed == []  # never armed
    agent.pet(3.0)
    clock.t += 2.9
    daemon.poll_once()
    assert guests.killed == []
    clock.t += 0.2
    daemon.poll_once()
    assert guests.killed == [("vm-a", 11), ("vm-b", 12)]
    assert [x for x in lines if x.startswith("FIRED")] == [
        f"FIRED: agent {os.getpid()} did not pet within 3 s (deadline passed 0.10 s ago): killed this "
        "host's guests: vm-a (qemu 11), vm-b (qemu 12)"]
    assert read_state(daemon.state_path).state == FIRED  # type: ignore[union-attr]
    clock.t += 5
    daemon.poll_once()
    assert len([x for x in lines if x.startswith("FIRED")]) == 1  # once per arming
    # fenced until the agent pets again: a guest libvirtd still starts dies too
    guests.running["vm-c"] = 13
    daemon.poll_once()
    assert guests.killed[-1] == ("vm-c", 13) and "started after the watchdog fired" in lines[-1]
    agent.pet(3.0)  # the agent is back: a new arming, and guests may run again
    guests.running["vm-d"] = 14
    clock.t += 1
    daemon.poll_once()
    assert "vm-d" in guests.running
    clock.t += 2.5
    daemon.poll_once()
    assert guests.killed[-1] == ("vm-d", 14)
    assert len([x for x in lines if x.startswith("FIRED")]) == 2


def test_disarmed_never_fires_and_a_restarted_daemon_does_not_fire_twice(tmp_path: Path) -> None:
    clock, guests = Clock(), Guests(**{"vm-a": 11})
    daemon, _ = make_daemon(tmp_path, guests, clock)
    agent = FileWatchdog(daemon.state_path, clock=clock)
    agent.pet(3.0)
    agent.disarm()  # self-fencing switched off: nothing will pet
    clock.t += 100
    daemon.poll_once()
    assert guests.killed == []
    agent.pet(3.0)
    clock.t += 4
    daemon.poll_once()
    assert guests.killed == [("vm-a", 11)]
    again, lines = make_daemon(tmp_path, guests, clock)  # systemd restarted the daemon
    again.poll_once()
    assert not [x for x in lines if x.startswith("FIRED")]


def test_a_corrupt_state_file_does_not_stop_the_daemon(tmp_path: Path) -> None:
    clock, guests = Clock(), Guests(**{"vm-a": 11})
    daemon, lines = make_daemon(tmp_path, guests, clock)
    FileWatchdog(daemon.state_path, clock=clock).pet(3.0)
    daemon.poll_once()
    Path(daemon.state_path).write_bytes(b"\x00garbage")
    for _ in range(3):
        daemon.poll_once()
    assert len([x for x in lines if "unusable" in x]) == 1
    clock.t += 3.5
    daemon.poll_once()  # the last known arming expired: it acts on it
    assert guests.killed == [("vm-a", 11)]


def test_device_is_petted_every_poll_and_stood_down_with_v_on_a_clean_stop(tmp_path: Path) -> None:
    device = tmp_path / "watchdog-device"  # a regular file: never a real /dev/watchdog in a test
    device.write_bytes(b"")
    clock, guests = Clock(), Guests()
    daemon, lines = make_daemon(tmp_path, guests, clock, device=str(device), poll_s=0.001)
    polls = iter(range(5))
    assert daemon.run(lambda: next(polls, None) is None) == 0
    assert device.read_bytes() == b"\0" * 5 + b"V"
    assert any("chained to" in x for x in lines)
    assert not Path(daemon_pidfile(daemon.state_path)).exists()  # gone with the daemon


def test_a_guest_that_survives_sigkill_stops_the_device_petting(tmp_path: Path) -> None:
    """A qemu stuck in the kernel (dead NFS) is still a running guest: the daemon stops
    petting the device, so the kernel resets the host, and no 'V' stands it down."""
    device = tmp_path / "watchdog-device"
    device.write_bytes(b"")
    clock, guests = Clock(), Guests(**{"vm-a": 11})
    guests.unkillable.add(11)
    daemon, lines = make_daemon(tmp_path, guests, clock, device=str(device), survivor_grace_s=10.0)
    FileWatchdog(daemon.state_path, clock=clock).pet(3.0)
    daemon.poll_once()
    clock.t += 4
    daemon.poll_once()  # fires
    clock.t += 9
    daemon.poll_once()
    assert daemon.healthy
    clock.t += 2
    daemon.poll_once()
    assert not daemon.healthy and "survived SIGKILL" in lines[-1] and "reset this host" in lines[-1]
    daemon.poll_once()
    polls = iter(range(1))
    daemon.run(lambda: next(polls, None) is None)
    assert device.read_bytes() == b"\0" * 3  # no more pets after the survivor, and no 'V'


def test_reboot_action_syncs_then_writes_b_to_sysrq(tmp_path: Path) -> None:
    sysrq = tmp_path / "sysrq-trigger"  # stands in for /proc/sysrq-trigger
    sysrq.write_bytes(b"")
    calls: list[str] = []
    clock, guests = Clock(), Guests(**{"vm-a": 11})
    daemon, lines = make_daemon(tmp_path, guests, clock, action="reboot", sysrq_path=str(sysrq),
                                sync=lambda: calls.append("sync"))
    FileWatchdog(daemon.state_path, clock=clock).pet(3.0)
    daemon.poll_once()
    clock.t += 3
    daemon.poll_once()
    assert calls == ["sync"] and sysrq.read_bytes() == b"b"
    assert guests.killed == []  # a reset kills them all at once
    assert "resetting this host now" in lines[-1]
    assert read_state(daemon.state_path).state == FIRED  # type: ignore[union-attr]


def test_a_reset_that_fails_falls_back_to_killing_the_guests(tmp_path: Path) -> None:
    clock, guests = Clock(), Guests(**{"vm-a": 11})
    daemon, lines = make_daemon(tmp_path, guests, clock, action="reboot",
                                sysrq_path=str(tmp_path / "no" / "sysrq"), sync=lambda: None)
    FileWatchdog(daemon.state_path, clock=clock).pet(3.0)
    clock.t += 3
    daemon.poll_once()
    assert guests.killed == [("vm-a", 11)] and not daemon.healthy
    assert any("the reset failed" in x for x in lines)


def test_a_hanging_sync_does_not_hold_the_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sync`` blocks on the dead storage that may be why the agent stopped petting."""
    import real.watchdog as wd

    sysrq = tmp_path / "sysrq-trigger"
    sysrq.write_bytes(b"")
    clock, guests = Clock(), Guests()
    daemon, _ = make_daemon(tmp_path, guests, clock, action="reboot", sysrq_path=str(sysrq),
                            sync=lambda: time.sleep(30))
    FileWatchdog(daemon.state_path, clock=clock).pet(3.0)
    clock.t += 3
    monkeypatch.setattr(wd, "SYNC_TIMEOUT_S", 0.2)
    t0 = time.monotonic()
    daemon.poll_once()
    assert time.monotonic() - t0 < 5 and sysrq.read_bytes() == b"b"


# -- the daemon as a process: the production path, a stand-in for qemu ---------------------------------


def start_daemon(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    state = tmp_path / "watchdog.state"
    proc = subprocess.Popen([sys.executable, "-m", "neverstop", "real", "watchdog", "--state", str(state),
                             "--action", "kill-guests", "--poll", "0.05", "--qemu-pid-dir",
                             str(tmp_path / "qemu"), "--key", host_key(tmp_path)[0], *extra],
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 20
    while not Path(daemon_pidfile(str(state))).exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc


def stop_daemon(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def test_the_daemon_process_kills_a_guest_whose_agent_stopped_petting(tmp_path: Path) -> None:
    state = str(tmp_path / "watchdog.state")
    device = tmp_path / "device"
    device.write_bytes(b"")
    with dummies(tmp_path / "qemu", "vm-a", "vm-b") as procs:
        Path(state).write_bytes(b"{garbage")  # a corrupt file must not stop it
        daemon = start_daemon(tmp_path, "--device", str(device))
        key = host_key(tmp_path)[1]
        try:
            assert "daemon " in describe(state, key=key) and "unreadable" in describe(state, key=key)
            FileWatchdog(state).pet(60.0)  # written without this host's key: not believed, not armed
            time.sleep(0.3)
            assert "unreadable" in describe(state, key=key) and "not written by this host" in describe(state,
                                                                                                       key=key)
            agent = FileWatchdog(state, key=key)
            agent.pet(0.5)
            t_pet = time.monotonic()
            assert "armed by agent" in describe(state, key=key)
            for proc in procs.values():
                proc.wait(timeout=10)
            killed_after = time.monotonic() - t_pet
            assert all(p.returncode == -signal.SIGKILL for p in procs.values())
            assert 0.5 <= killed_after < 2.0, killed_after
            deadline = time.monotonic() + 5
            while read_state(state, key).state != FIRED:  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert "FIRED" in describe(state, key=key)
            agent.pet(60.0)  # back: a new arming far out; a new guest lives
            time.sleep(0.3)
            with dummies(tmp_path / "qemu", "vm-c") as again:
                time.sleep(0.3)
                assert again["vm-c"].poll() is None
        finally:
            err = stop_daemon(daemon)
    lines = [x for x in err.splitlines() if "FIRED" in x]
    assert len(lines) == 1 and "vm-a (qemu" in lines[0] and "vm-b (qemu" in lines[0], err
    assert err.count("state file unusable") == 1, err  # the garbage, and the record without the key
    data = device.read_bytes()
    assert len(data) > 5 and data.endswith(b"V") and set(data[:-1]) == {0}
    assert not Path(daemon_pidfile(state)).exists()


@pytest.mark.parametrize("args, message", [
    (["--action", "explode"], "invalid choice: 'explode'"),
    (["--action", "reboot", "--poll", "0"], "--poll 0: expected seconds between 0 and 5"),
    (["--action", "reboot", "--poll", "soon"], "invalid float value: 'soon'"),
    (["--action", "reboot", "--device", "/nonexistent/wd"], "--device /nonexistent/wd: cannot open"),
    (["--action", "reboot", "--state", "/proc/neverstop/x/state"], "cannot create /proc/neverstop/x"),
])
def test_bad_arguments_get_one_line(args: list[str], message: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from neverstop.cli import main

    base = ["real", "watchdog", "--state", str(tmp_path / "s"), "--key", host_key(tmp_path)[0]]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_state_that_is_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from neverstop.cli import main

    assert main(["real", "watchdog", "--state", str(tmp_path), "--action", "kill-guests",
                 "--key", host_key(tmp_path)[0]]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_help_explains_the_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    from neverstop.cli import main

    with pytest.raises(SystemExit):
        main(["real", "watchdog", "--help"])
    out = capsys.readouterr().out
    assert "kill-guests" in out and "reboot" in out and "--device" in out and "agent" in out


# -- the agent pets it: real mode on loopback, under Force and Permissive ------------------------------------


def test_the_agent_pets_its_watchdog_under_force_and_disarms_it_under_permissive(tmp_path: Path) -> None:
    from real_harness import LoopbackCluster
    from test_conformance import CLUSTER

    force = CLUSTER.replace('profile = "tuned"\n', 'profile = "tuned"\n\n[ha]\nstrategy = "Force"\n', 1)
    cluster = LoopbackCluster(tmp_path, force, shared_pools=("nfs-1",), watchdog=True)
    key = load_key(cluster.host_key("host-1")).host("host-1").local_key(WATCHDOG_KEY)
    try:
        cluster.start()
        state = cluster.watchdog_state("host-1")

        def wait_for(armed_claimed: bool) -> WatchdogRecord:
            deadline = time.monotonic() + 20
            while True:
                rec = cluster.heartbeat("nfs-1", "host-1")
                wd = read_state(state, key) if os.path.exists(state) else None
                claimed = rec is not None and rec[1] is not None
                if wd is not None and wd.state == ARMED and rec is not None and claimed == armed_claimed:
                    return wd
                assert time.monotonic() < deadline, (rec, wd, cluster.log("host-1"))
                time.sleep(0.1)

        wait_for(armed_claimed=False)  # petted, but no daemon watches: the heartbeat claims nothing
        assert "NO watchdog daemon watches" in cluster.log("host-1")
        # This test process stands in for the daemon (a live pid with its start time).
        Path(daemon_pidfile(state)).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        wd = wait_for(armed_claimed=True)
        assert 0 < wd.deadline - time.monotonic() <= 3.0 and wd.timeout_s == 3.0  # tuned: 3 x 1 s
        cluster.cmd("config-set", key="ha.strategy", value="Permissive")
        deadline = time.monotonic() + 10
        while read_state(state, key).state != DISARMED:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, cluster.log("host-1")
            time.sleep(0.1)
        time.sleep(1.5)
        rec = cluster.heartbeat("nfs-1", "host-1")
        assert rec is not None and rec[1] is None  # the heartbeat no longer claims a fence
        host = next(h for h in cluster.status()["hosts"] if h["name"] == "host-1")
        assert host["watchdog"] is True
    finally:
        cluster.stop()


def test_without_a_watchdog_the_agent_never_claims_armed(tmp_path: Path) -> None:
    from real_harness import LoopbackCluster
    from test_conformance import CLUSTER

    from real.cli import format_status

    force = CLUSTER.replace('profile = "tuned"\n', 'profile = "tuned"\n\n[ha]\nstrategy = "Force"\n', 1)
    cluster = LoopbackCluster(tmp_path, force, shared_pools=("nfs-1",))
    try:
        cluster.start()
        time.sleep(3)
        rec = cluster.heartbeat("nfs-1", "host-1")
        assert rec is not None and rec[0] > 1 and rec[1] is None
        assert "under Force the manager will not trust this host's self-fencing" in cluster.log("host-1")
        assert "up, no watchdog" in format_status(cluster.status())
    finally:
        cluster.stop()
