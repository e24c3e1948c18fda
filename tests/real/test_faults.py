"""Real mode's own failures (issue 13, first part): a second manager, a state file that is
missing, damaged or another cluster's, an actor system that died under its daemon, a
control request that is not one, a bad setting.

Loopback processes with libvirt's test driver, as in ``test_conformance``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from real_harness import LoopbackCluster, pids_with
from test_conformance import CLUSTER, view

from real.control import control, read_reply


def run_cli(cluster: LoopbackCluster, *argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LOGS_DIRECTORY=str(cluster.dir / "logs" / "cli"), PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "neverstop", *argv], capture_output=True, text=True,
                          timeout=timeout_s, env=env)


def manager_argv(cluster: LoopbackCluster, port: int, *extra: str) -> list[str]:
    return ["real", "manager", "--config", str(cluster.path), "--listen", f"127.0.0.1:{port}",
            "--socket", str(cluster.dir / f"other-{port}.sock"), "--key", cluster.key, *extra]


def one_line(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCluster:
    c = LoopbackCluster(tmp_path_factory.mktemp("faults"), CLUSTER, shared_pools=("nfs-1",))
    c.start()
    c.wait_for(lambda s: view(s)["vm-shared"] == ("Running", "host-1"), 20, "settled")
    yield c
    c.stop()


def test_a_second_manager_is_refused_on_the_port_and_on_the_state_file(cluster: LoopbackCluster) -> None:
    before = sorted(pids_with(cluster.manager_marker()))
    one_line(run_cli(cluster, *manager_argv(cluster, cluster.base)),
             f"--listen 127.0.0.1:{cluster.base} is in use (another manager")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    one_line(run_cli(cluster, *manager_argv(cluster, free)),
             "state.db: in use by another manager (pid", str(cluster.procs["manager"].pid))
    assert sorted(pids_with(cluster.manager_marker())) == before
    assert view(cluster.status())["vm-shared"] == ("Running", "host-1")


def test_a_state_file_that_is_missing_damaged_or_foreign_is_refused(cluster: LoopbackCluster,
                                                                    tmp_path: Path) -> None:
    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    missing = tmp_path / "typo" / "state.db"
    one_line(run_cli(cluster, *manager_argv(cluster, port(), "--state", str(missing))),
             "no state file", "--init-state")
    assert not missing.exists()
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"SQLite format 3\0" + os.urandom(4096))
    one_line(run_cli(cluster, *manager_argv(cluster, port(), "--state", str(damaged))),
             "not a usable state file", "backup")
    other = tmp_path / "other.db"
    import sqlite3

    db = sqlite3.connect(other)
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     "INSERT INTO meta VALUES ('cluster_id', 'production-east');")
    db.commit()
    db.close()
    one_line(run_cli(cluster, *manager_argv(cluster, port(), "--state", str(other))),
             "the state of cluster 'production-east'", "'conformance'")
    one_line(run_cli(cluster, *manager_argv(cluster, port(), "--state", str(other), "--init-state")),
             "exists; --init-state only makes a new")


def test_bad_flags_and_settings_get_one_line(cluster: LoopbackCluster, tmp_path: Path) -> None:
    one_line(run_cli(cluster, "real", "agent", "--manager", "10.0.0.1:99999", "--name", "host-1",
                     "--key", cluster.host_key("host-1")),
             "--manager 10.0.0.1:99999: the port must be 1-65535")
    one_line(run_cli(cluster, "real", "agent", "--manager", "127.0.0.1:x", "--name", "host-1",
                     "--key", cluster.host_key("host-1")), "--manager 127.0.0.1:x: expected ADDR:PORT")
    for timeout, message in (('"abc"', "invalid duration 'abc'"), ("inf", "got inf"), ("-1", "got -1")):
        path = tmp_path / "cluster.toml"
        path.write_text(cluster.path.read_text().replace('pidfile = "', f'timeout = {timeout}\npidfile = "'))
        one_line(run_cli(cluster, *manager_argv(cluster, 1, "--config", str(path))),
                 "real.power.*.timeout", message)


def test_every_malformed_control_request_gets_one_line_and_the_manager_serves_on(
        cluster: LoopbackCluster) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(cluster.socket)  # connects and says nothing
    try:
        t0 = time.monotonic()
        assert cluster.status()["hosts"]  # not held up by the silent client
        assert time.monotonic() - t0 < 1.5
        for junk in (b"[]\n", b'"x"\n', b"1\n", b"null\n", b'{"args":5}\n', b'{"cmd": 7}\n',
                     b"\xff\xfe\n", b"x" * (1 << 20)):
            reply = raw(cluster.socket, junk)
            assert reply["ok"] is False and "bad request" in reply["error"], (junk[:20], reply)
        silent.settimeout(5)
        answer = silent.recv(4096)  # dropped with one line after the client timeout
        assert b"bad request" in answer and answer.count(b"\n") == 1
    finally:
        silent.close()
    assert control(cluster.socket, "ping", key_path=cluster.key)["ok"]
    assert view(cluster.status())["vm-shared"] == ("Running", "host-1")


def raw(path: str, data: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        with contextlib.suppress(OSError):
            s.sendall(data)
        got = read_reply(s)
    reply: dict[str, object] = json.loads(got)
    return reply


def test_a_daemon_whose_actor_system_died_exits_non_zero(tmp_path: Path) -> None:
    cluster = LoopbackCluster(tmp_path, CLUSTER, shared_pools=("nfs-1",))
    try:
        cluster.start()
        daemons = (("host-2", cluster.agent_marker("host-2")), ("manager", cluster.manager_marker()))
        for daemon, marker in daemons:
            main = cluster.procs[daemon]
            for pid in pids_with(marker):
                if pid != main.pid:
                    os.kill(pid, signal.SIGKILL)  # Thespian's admin and actors: the main process lives on
            t0 = time.monotonic()
            code = main.wait(timeout=20)
            took = time.monotonic() - t0
            assert code == 1, (daemon, code, cluster.log(daemon))
            assert took < 12, (daemon, took)
            assert "did not answer 3 probes in a row" in cluster.log(daemon)
            print(f"\n{daemon}: its actor system killed, the daemon exited {code} after {took:.1f} s")
    finally:
        cluster.stop()


# -- a state file that cannot be written ---------------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "8m") -> Any:
    """A tmpfs of its own (root only): a disk the test can fill without filling the machine's."""
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                                            str(where)], capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(directory: Path, name: str = "filler") -> Path:
    """Write until the file system says it is full, to the last page."""
    filler = directory / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size) == size:
                    pass
    finally:
        os.close(fd)
    return filler


def store_row(path: Path, vm: str) -> tuple[Any, ...]:
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return tuple(db.execute("SELECT state, host, stop_pending FROM vm WHERE name = ?", (vm,)).fetchone())
    finally:
        db.close()


def test_a_full_disk_under_the_state_file_loses_no_vm(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "statefs") as fs:
        db = fs / "state.db"
        c = LoopbackCluster(tmp_path / "cluster", CLUSTER, shared_pools=("nfs-1",), state_path=db)
        try:
            c.start()
            c.wait_for(lambda s: view(s)["vm-shared"] == ("Running", "host-1"), 20, "settled")
            c.wait_for(lambda s: not s["store"]["unsaved"], 5, "first views written")
            filler = fill(fs)

            # HA goes on: a guest that crashes runs again, though nothing can be written
            t0 = time.time()
            c.cmd("crash", vm="vm-shared")
            c.wait_for(lambda s: view(s)["vm-shared"] == ("Running", "host-1")
                       and "Stopping" in [t[2] for t in s["transitions"] if t[0] >= t0], 30,
                       "crash recovered")
            c.wait_for(lambda s: s["store"]["degraded"], 10, "store degraded")
            status = c.status()
            assert "full" in status["store"]["error"] and status["store"]["unsaved"] > 0, status["store"]

            # a durable command is refused at once, with the reason, and changes nothing
            t1 = time.monotonic()
            reply = control(c.socket, "set-ha", {"vm": "vm-shared", "level": "None"}, key_path=c.key)
            answered_s = time.monotonic() - t1
            assert not reply["ok"] and "state file cannot be written" in reply["error"], reply
            assert "\n" not in reply["error"]
            print(f"\nset-ha on a full disk refused in {answered_s * 1000:.0f} ms")
            assert answered_s < 1.0, answered_s
            assert c.vm("vm-shared")["ha"] == "NeverStop"
            table = run_cli(c, "real", "status", "--socket", c.socket, "--key", c.key).stdout
            assert "Store DEGRADED" in table, table

            # the host dies meanwhile: HA moves the shared VM and stops the local one, in memory
            c.power_off("host-1")

            def moved(s: dict[str, Any]) -> bool:
                return view(s)["vm-shared"] == ("Running", "host-2") and view(s)["vm-local"][0] == "Stopped"

            c.wait_for(moved, 60, "host-1 recovered while the store is full")
            assert store_row(db, "vm-shared")[1] == "host-1"  # not written yet

            # space comes back: the kept changes land, commands are accepted again
            filler.unlink()
            c.wait_for(lambda s: not s["store"]["degraded"] and not s["store"]["unsaved"], 10,
                       "store writable")
            assert store_row(db, "vm-shared")[:2] == ("Running", "host-2")
            assert store_row(db, "vm-local")[0] == "Stopped"
            c.cmd("set-ha", vm="vm-none", level="NeverStop")

            # and a restarted manager starts from them
            c.kill_manager()
            c.start_manager()
            c.wait_for(lambda s: moved(s) and view(s)["vm-none"][0] == "Running", 60,
                       "restored from what landed")
            first = {}
            for _t, vm, state, host in c.status()["transitions"]:
                first.setdefault(vm, (state, host))
            # asked where it last ran (the loopback agents' test drivers start afresh with the
            # new manager's agent shells, so it is then started there again)
            assert first["vm-shared"] == ("Unknown", "host-2"), first
            assert first["vm-local"] == ("Stopped", None), first

            # a manager that starts on a full disk starts all the same, degraded
            filler = fill(fs)
            c.kill_manager()
            offset = len(c.log_full("manager"))
            c.start_manager()
            c.wait_for(lambda s: s["store"]["degraded"] and moved(s), 60, "started degraded")
            assert "write failed" in c.log_since("manager", offset)
            filler.unlink()
            c.wait_for(lambda s: not s["store"]["degraded"], 10, "store writable after the start")
        finally:
            c.stop()


def test_a_locked_state_file_degrades_the_store_and_then_recovers(cluster: LoopbackCluster) -> None:
    import sqlite3

    other = sqlite3.connect(str(cluster.state_path), isolation_level=None, timeout=5)
    other.execute("BEGIN EXCLUSIVE")  # someone holds a write lock (a backup tool done wrong)
    try:
        t0 = time.monotonic()
        enter = {"host": "host-2", "enter": True}
        reply = control(cluster.socket, "maintenance", enter, key_path=cluster.key)
        assert not reply["ok"] and "locked" in reply["error"], reply
        assert time.monotonic() - t0 < 1.5  # the store waits half a second for a lock, not five
        assert cluster.status()["store"]["degraded"]
        assert not any(h["maintenance"] for h in cluster.status()["hosts"])  # memory untouched
    finally:
        other.execute("ROLLBACK")
        other.close()
    cluster.wait_for(lambda s: not s["store"]["degraded"], 10, "store writable again")
    cluster.cmd("maintenance", host="host-2", enter=True)
    cluster.cmd("maintenance", host="host-2", enter=False)


# -- a full /run under the watchdog's state file --------------------------------------------------

def test_a_full_watchdog_directory_kills_no_guest_of_a_healthy_agent(tmp_path: Path) -> None:
    from test_watchdog import dummies, stop_daemon

    from real.cli import format_status
    from real.watchdog import daemon_pidfile

    force = CLUSTER.replace('profile = "tuned"\n', 'profile = "tuned"\n\n[ha]\nstrategy = "Force"\n', 1)
    with small_tmpfs(tmp_path / "run", size="1m") as run:
        c = LoopbackCluster(tmp_path / "cluster", force, shared_pools=("nfs-1",), watchdog=True,
                            watchdog_dir=run)
        state = c.watchdog_state("host-1")
        daemon = None

        def armed_claimed() -> bool:
            beat = c.heartbeat("nfs-1", "host-1")
            return beat is not None and beat[1] is not None

        def host_1(s: dict[str, Any]) -> dict[str, Any]:
            return next(h for h in s["hosts"] if h["name"] == "host-1")

        with dummies(tmp_path / "qemu", "vm-shared") as guests:  # stand-ins for host-1's qemu
            try:
                c.start()
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "neverstop", "real", "watchdog", "--state", state, "--action",
                     "kill-guests", "--poll", "0.05", "--qemu-pid-dir", str(tmp_path / "qemu"),
                     "--key", c.host_key("host-1")], stderr=subprocess.PIPE, text=True,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
                deadline = time.monotonic() + 20
                while not (os.path.exists(daemon_pidfile(state)) and armed_claimed()):
                    assert time.monotonic() < deadline and daemon.poll() is None, c.log("host-1")
                    time.sleep(0.1)

                filler = fill(run)
                time.sleep(8)  # over twice the watchdog's 3 s timeout (tuned): pets go on in place
                assert guests["vm-shared"].poll() is None, "the watchdog killed a guest of a healthy host"
                assert armed_claimed() and host_1(c.status())["watchdog_error"] == ""
                assert "cannot write" not in c.log("host-1")

                # A pet that really cannot be written: the file is gone and the full disk has no
                # room for a new one. The agent says so (log, status, heartbeat); the daemon says
                # why before it acts on the last arming it could read.
                os.unlink(state)
                more = fill(run, "filler-2")  # the page the state file gave back
                c.wait_for(lambda s: "cannot write" in host_1(s)["watchdog_error"], 10,
                           "pet failure reported")
                assert "WATCHDOG PET FAILING" in format_status(c.status())
                deadline = time.monotonic() + 10
                while armed_claimed():
                    assert time.monotonic() < deadline, "the heartbeat still claims a fence"
                    time.sleep(0.1)
                guests["vm-shared"].wait(timeout=10)

                filler.unlink()
                more.unlink()
                c.wait_for(lambda s: host_1(s)["watchdog_error"] == "", 10, "pets written again")
            finally:
                err = stop_daemon(daemon) if daemon is not None else ""
                c.stop()
    lines = err.splitlines()
    unusable = next(i for i, x in enumerate(lines) if "state file unusable (the file is gone)" in x)
    fired = next(i for i, x in enumerate(lines) if "FIRED" in x)
    assert unusable < fired and "unusable" in lines[fired], err
