"""Run real mode on one machine: ``neverstop real manager`` and one ``neverstop real agent``
per host as processes on loopback ports, each agent on its own ``test:///`` libvirt file.
The tests drive it, and so does the load benchmark (``bench/real_load.py``).

This is the deployment path users run (the ``neverstop`` command line, Thespian's
multiprocTCPBase with a convention, the control socket, a cluster key for the manager and
a host key for each agent), minus real guests: the test driver's guests live inside the
agent's process, so killing an agent's processes is a power-off of that host (its guests
die with it), and a pid file is its power controller. By default the daemons are the test
build (``real.hooks``: one more control command, ``crash``); ``hooks=False`` runs the
production command, as the attack tests do.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from real.cluster import load_cluster
from real.control import DaemonError, control
from real.domain import domain_xml
from real.heartbeat import reading
from real.keys import keygen, load_key
from real.power import pidfile_line

_LIVE: list[LoopbackCluster] = []


def _cleanup_all() -> None:
    for cluster in list(_LIVE):
        cluster.stop()


atexit.register(_cleanup_all)


def first_ephemeral_port() -> int:
    """The lowest port the kernel hands out to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(n: int) -> int:
    """A base port with ``n`` consecutive free ports on 127.0.0.1, below the ephemeral
    range: hundreds of processes talking to each other take ephemeral ports for their
    outgoing connections, and one of them on an agent's fixed admin port keeps that
    agent's Thespian admin from starting (seen at 32 and 64 agents)."""
    top = min(first_ephemeral_port(), 65000) - n
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, max(10001, top))
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


def pids_with(marker: str) -> list[int]:
    """Every process whose command line contains ``marker`` (Thespian daemonizes its
    processes, so they are not our children; they keep our command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def kill_all(marker: str) -> None:
    for _ in range(20):
        pids = pids_with(marker)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


REAL_TABLE = """
[real]
state = "{state}"
guest = "test"
run_dir = "{dir}/run"
shutdown_timeout = "2s"
libvirt_refresh = "1s"
[real.mounts]
{mounts}
[real.power."*"]
type = "pidfile"
pidfile = "{dir}/power/{{host}}.pid"
"""


def cluster_toml(hosts: int, vms: int) -> str:
    """A cluster file of ``hosts`` hosts with ``vms`` NeverStop VMs each on one shared pool."""
    lines = ['name = "load"', 'duration = "10m"', 'profile = "tuned"', "",
             "[[storage]]", 'name = "nfs-1"', 'type = "NFS"']
    for h in range(1, hosts + 1):
        lines += ["", "[[host]]", f'name = "host-{h}"', "cpu = 64", 'memory = "64GiB"', 'storage = ["nfs-1"]']
    for h in range(1, hosts + 1):
        for v in range(vms):
            lines += ["", "[[vm]]", f'name = "vm-{h}-{v}"', "cpu = 1", 'memory = "32MiB"',
                      f'host = "host-{h}"', 'storage = "nfs-1"', 'ha = "NeverStop"']
    return "\n".join(lines) + "\n"


def settled(s: dict[str, Any]) -> bool:
    """Every host's agent up and Connected, every VM Running."""
    return (all(h["agent"] == "up" and h["status"] == "Connected" for h in s["hosts"])
            and all(v["state"] == "Running" for v in s["vms"]))


def summary(s: dict[str, Any]) -> str:
    hosts = sum(h["agent"] == "up" and h["status"] == "Connected" for h in s["hosts"])
    running = sum(v["state"] == "Running" for v in s["vms"])
    return f"{hosts}/{len(s['hosts'])} hosts Connected, {running}/{len(s['vms'])} VMs Running"


class LoopbackCluster:
    def __init__(self, workdir: Path, cluster_toml: str, shared_pools: tuple[str, ...] = (),
                 watchdog: bool = False, hooks: bool = True, state_path: Path | None = None,
                 watchdog_dir: Path | None = None, join_jitter_s: float | None = 0.0) -> None:
        self.entry = "real.hooks" if hooks else "neverstop"
        self.watchdog = watchdog  # agents pet <dir>/<host>.watchdog (no daemon watches it here)
        self.join_jitter_s = join_jitter_s  # None: the agent's own default (the load benchmark)
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "power").mkdir(exist_ok=True)
        mounts = []
        for pool in shared_pools:
            (self.dir / pool).mkdir(exist_ok=True)
            mounts.append(f'{pool} = "{self.dir / pool}"')
        self.path = self.dir / "cluster.toml"
        self.state_path = state_path or self.dir / "state.db"
        self.watchdog_dir = watchdog_dir or self.dir
        self.path.write_text(cluster_toml + REAL_TABLE.format(dir=self.dir, state=self.state_path,
                                                              mounts="\n".join(mounts)))
        self.cluster = load_cluster(self.path)
        self.hosts = [h.name for h in self.cluster.inventory.hosts]
        self.base = free_port_block(len(self.hosts) + 1)
        self.socket = str(self.dir / "manager.sock")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {h: self.base + 1 + i for i, h in enumerate(self.hosts)}
        self.key = str(self.dir / "cluster.key")
        if not os.path.exists(self.key):
            keygen(self.key)
            for host in self.hosts:
                keygen(self.host_key(host), host, self.key)
        self.manager_public = load_key(self.key).manager().public
        self.started = False

    def host_key(self, host: str) -> str:
        return str(self.dir / f"{host}.key")

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the process
        env = dict(os.environ, NEVERSTOP_SOCKET=self.socket, PYTHONUNBUFFERED="1",
                   LOGS_DIRECTORY=str(self.dir / "logs" / name))
        self.procs[name] = subprocess.Popen([sys.executable, "-m", self.entry, *args], stdout=log,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def manager_marker(self) -> str:
        return f"--listen 127.0.0.1:{self.base}"

    def agent_marker(self, host: str) -> str:
        return f"--admin-port {self.ports[host]}"

    def start(self, timeout_s: float = 40.0, before_agents: Callable[[], None] | None = None) -> None:
        """The manager, then every agent (``before_agents`` runs in between), until every
        agent is up."""
        _LIVE.append(self)
        self.started = True
        template = self.cluster.settings.template()
        for host in self.hosts:
            running = [v.vm for v in self.cluster.inventory.vms
                       if v.host == host and v.state.value == "Running"]
            node = "<node>" + "".join(domain_xml(vm, template) for vm in running) + "</node>"
            (self.dir / f"{host}.xml").write_text(node)
        # Every host has power from the start: until its agent is spawned (start_agent), this
        # process stands for it, so that a manager that asks first hears "on", as from a BMC.
        for host in self.hosts:
            (self.dir / "power" / f"{host}.pid").write_text(pidfile_line(os.getpid()))
        self.start_manager()
        if before_agents is not None:
            before_agents()
        for host in self.hosts:
            self.start_agent(host)
        self.wait_for(lambda s: all(h["agent"] == "up" for h in s["hosts"]), timeout_s, "agents up")

    def start_manager(self, timeout_s: float = 20.0) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        init = [] if self.state_path.exists() else ["--init-state"]
        self._spawn("manager", ["real", "manager", "--config", str(self.path), "--listen",
                                f"127.0.0.1:{self.base}", "--socket", self.socket, "--key", self.key, *init])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(DaemonError):
                if control(self.socket, "status", timeout_s=2, key_path=self.key).get("ok"):
                    return
            if self.procs["manager"].poll() is not None:
                raise RuntimeError(f"manager exited: {self.log('manager')}")
            time.sleep(0.2)
        raise RuntimeError(f"manager did not come up: {self.log('manager')}")

    def start_agent(self, host: str) -> None:
        self._spawn(host, ["real", "agent", "--manager", f"127.0.0.1:{self.base}", "--name", host,
                           "--libvirt", f"test://{self.dir}/{host}.xml", "--address", "127.0.0.1",
                           "--admin-port", str(self.ports[host]), "--key", self.host_key(host),
                           *(["--watchdog-state", self.watchdog_state(host)] if self.watchdog else []),
                           *([] if self.join_jitter_s is None
                             else ["--join-jitter", str(self.join_jitter_s)])])
        (self.dir / "power" / f"{host}.pid").write_text(pidfile_line(self.procs[host].pid))

    def watchdog_state(self, host: str) -> str:
        return str(self.watchdog_dir / f"{host}.watchdog")

    def power_off(self, host: str) -> None:
        """Every process of the host dies at once (its test-driver guests with it)."""
        kill_all(self.agent_marker(host))

    def agent_pids(self, host: str) -> list[int]:
        return pids_with(self.agent_marker(host))

    def manager_pids(self) -> list[int]:
        return pids_with(self.manager_marker())

    def signal_agents(self, sig: int, hosts: list[str] | None = None) -> int:
        """Send ``sig`` to every process of the agents of ``hosts`` (all by default): SIGSTOP
        is what a management-network outage looks like to the manager, SIGCONT its end."""
        n = 0
        for host in hosts or self.hosts:
            for pid in self.agent_pids(host):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                    n += 1
        return n

    def kill_manager(self) -> None:
        kill_all(self.manager_marker())

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        kill_all(self.manager_marker())
        for host in self.hosts:
            kill_all(self.agent_marker(host))
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        if self in _LIVE:
            _LIVE.remove(self)

    def log(self, name: str) -> str:
        return self.log_full(name)[-4000:]

    def log_full(self, name: str) -> str:
        try:
            return (self.dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def log_since(self, name: str, offset: int) -> str:
        return self.log_full(name)[offset:]

    # -- talking to the manager -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        reply = control(self.socket, "status", key_path=self.key)
        assert reply["ok"], reply
        data: dict[str, Any] = reply["data"]
        return data

    def cmd(self, cmd: str, **args: Any) -> None:
        reply = control(self.socket, cmd, args, key_path=self.key)
        assert reply["ok"], reply

    def heartbeat(self, pool: str, host: str) -> tuple[int, int | None] | None:
        """(seq, armed revision) of ``host``'s signed record in ``pool``; None if untrusted."""
        return reading(str(self.dir / pool), host, self.manager_public)

    def vm(self, name: str) -> dict[str, Any]:
        return next(v for v in self.status()["vms"] if v["name"] == name)

    def wait_for(self, cond: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> float:
        """Seconds until ``cond(status)`` held; fails with the last status and the logs."""
        t0 = time.monotonic()
        last: dict[str, Any] = {}
        while time.monotonic() - t0 < timeout_s:
            with contextlib.suppress(DaemonError, AssertionError):
                last = self.status()
                if cond(last):
                    return time.monotonic() - t0
            time.sleep(0.1)
        raise AssertionError(f"not within {timeout_s} s: {what}\nlast status: {last}\n"
                             f"manager log:\n{self.log('manager')}")
