"""The lab: several real KVM-style hosts on one machine, with real libvirtd and qemu guests.

Each compute host is a Linux mount + network namespace held by one process (its
"power"). Inside: a tmpfs on /run and private bind mounts on /etc/libvirt,
/var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, its own virtlogd and libvirtd
(TCP on its own address for peer-to-peer migration), a shared directory
(the NFS pool) and a private one (its LocalStorage), both under the host's /run, and the neverstop
agent with its watchdog daemon (``neverstop real watchdog --action kill-guests``, never
a kernel watchdog device here: arming one would reset the machine). A veth pair joins
each host to a bridge, the management network; the manager runs outside, on the
bridge's address. Guests are tiny diskless TCG guests (32 MiB).

Faults are real: ``power-off`` SIGKILLs every process of the host's namespaces at once
(agent, libvirtd, qemu) and the namespaces vanish with them; ``vm-crash`` SIGKILLs a
guest's qemu; ``network-down`` takes the host's link down; ``agent-crash`` SIGKILLs the
agent's processes only, leaving libvirtd, the guests and the watchdog daemon running
(``agent-restart`` starts it again). The power controller is the lab's knowledge of
whether the host's holder process lives (a pid file).

``down`` removes everything: processes (found by namespace and by command line, since
Thespian daemonizes), the bridge, the directory. It runs on ``up`` failures, at exit of
the process that brought the lab up, and as ``neverstop lab down``.

Requires root, iproute2, util-linux (unshare, nsenter), libvirt and qemu (``make deps``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DIR = "/tmp/neverstop-lab"
DEFAULT_SUBNET = "10.213.47.0/24"
BRIDGE = "nslab0"
MANAGER_PORT = 1900
AGENT_PORT = 1900
LIBVIRT_TCP_PORT = 16509
GUEST_MEMORY = "32MiB"
SHARED_MOUNT = "/run/neverstop-lab/shared"  # inside each host
LOCAL_MOUNT = "/run/neverstop-lab/local"
QEMU_USER = "libvirt-qemu"
TOOLS = ("ip", "unshare", "nsenter", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64")


class LabError(Exception):
    """The lab cannot be built here (not root, a tool missing, a subnet in use)."""


@dataclass
class LabHost:
    name: str
    ip: str
    veth: str
    holder_pid: int = 0
    holder_start: str = ""
    netns: str = ""  # "net:[inode]": finds the host's processes even after its holder died


@dataclass
class LabState:
    dir: str
    subnet: str
    bridge_ip: str
    hosts: list[LabHost] = field(default_factory=list)
    manager_port: int = MANAGER_PORT
    profile: str = "tuned"
    strategy: str = "Permissive"

    @property
    def socket(self) -> str:
        return os.path.join(self.dir, "manager.sock")

    @property
    def cluster_file(self) -> str:
        return os.path.join(self.dir, "cluster.toml")

    @property
    def key(self) -> str:
        """The cluster key: the manager's, and the CLI's."""
        return os.path.join(self.dir, "keys", "cluster.key")

    def host_key(self, name: str) -> str:
        """Host ``name``'s own key (made from the cluster key), as a deployment would have it."""
        return os.path.join(self.dir, "keys", f"{name}.key")

    def watchdog_state(self, name: str) -> str:
        """Where host ``name``'s agent pets its watchdog daemon (outside the host's /run,
        so that ``lab status`` can read it from outside)."""
        return os.path.join(self.dir, "hosts", name, "watchdog.state")

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"no lab host {name!r} (hosts: {', '.join(h.name for h in self.hosts)})")

    def save(self) -> None:
        Path(self.dir, "lab.json").write_text(json.dumps(asdict(self), indent=2))

    @staticmethod
    def load(directory: str) -> LabState:
        try:
            raw = json.loads(Path(directory, "lab.json").read_text())
        except OSError:
            raise LabError(f"no lab in {directory}") from None
        hosts = [LabHost(**h) for h in raw.pop("hosts")]
        return LabState(hosts=hosts, **raw)


# -- small helpers ----------------------------------------------------------------------------------


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {out.stderr.strip() or out.stdout.strip()}")
    return out


def _in_host(host: LabHost, *argv: str, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return _run("nsenter", "-t", str(host.holder_pid), "-m", "-n", "--", *argv, check=check, timeout=timeout)


def _netns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _cmdline(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _start_time(pid: int) -> str:
    from real.power import process_start_time

    return process_start_time(pid) or ""


def _alive(host: LabHost) -> bool:
    return host.holder_pid > 0 and _start_time(host.holder_pid) == host.holder_start


def processes_of(host: LabHost) -> list[int]:
    """Every process in the host's network namespace (its holder's)."""
    if not _alive(host):
        return []
    ns = _netns(host.holder_pid)
    return [p for p in _pids() if p != os.getpid() and ns is not None and _netns(p) == ns]


def _kill_until_gone(find: Any, rounds: int = 100) -> None:
    for _ in range(rounds):
        pids = find()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def qemu_pids(vm: str) -> list[int]:
    """Every qemu process of guest ``vm``, on any host of this machine."""
    from real.qemu import cmdline_of, guest_name

    return [p for p in _pids() if guest_name(cmdline_of(p)) == vm]


# -- configuration files ----------------------------------------------------------------------------


def _libvirtd_conf(ip: str) -> str:
    return "\n".join([
        'listen_tls = 0', 'listen_tcp = 1', 'auth_tcp = "none"', f'tcp_port = "{LIBVIRT_TCP_PORT}"',
        f'listen_addr = "{ip}"', 'unix_sock_rw_perms = "0700"', 'log_outputs = "3:stderr"',
        'keepalive_interval = 5', 'keepalive_count = 3', 'max_clients = 200', ''])


def _qemu_conf(ip: str) -> str:
    return "\n".join([
        'user = "root"', 'group = "root"', 'dynamic_ownership = 0', 'remember_owner = 0',
        'security_driver = "none"', 'cgroup_controllers = [ ]', 'namespaces = [ ]',
        f'migration_address = "{ip}"', f'migration_host = "{ip}"', 'stdio_handler = "logd"', ''])


def cluster_toml(state: LabState) -> str:
    """Three hosts (or more) on one NFS-like shared pool; host-1 also has LocalStorage."""
    hosts = [h.name for h in state.hosts]
    lines = ['name = "lab"', 'description = "the neverstop lab"', f'profile = "{state.profile}"', "",
             "[ha]", f'strategy = "{state.strategy}"', "",
             "[[storage]]", 'name = "shared"', 'type = "NFS"', "",
             "[[storage]]", 'name = "local-1"', 'type = "LocalStorage"', f'host = "{hosts[0]}"', ""]
    for h in state.hosts:
        pools = '["shared", "local-1"]' if h.name == hosts[0] else '["shared"]'
        lines += ["[[host]]", f'name = "{h.name}"', "cpu = 4", 'memory = "1GiB"', f"storage = {pools}",
                  f'ip = "{h.ip}"', ""]
    vms = [("vm-shared-1", hosts[0], "shared"), ("vm-local-1", hosts[0], "local-1")]
    if len(hosts) > 1:
        vms.append(("vm-shared-2", hosts[1], "shared"))
    for name, host, pool in vms:
        lines += ["[[vm]]", f'name = "{name}"', "cpu = 1", f'memory = "{GUEST_MEMORY}"', f'host = "{host}"',
                  f'storage = "{pool}"', 'ha = "NeverStop"', ""]
    lines += ["[real]", f'state = "{state.dir}/state.db"', 'guest = "qemu"',
              'migration_uri = "qemu+tcp://{ip}/system"', 'migration_stream = "tcp://{ip}"',
              'shutdown_timeout = "2s"', 'libvirt_refresh = "1s"', 'run_dir = "/run/neverstop"', "",
              "[real.mounts]", f'shared = "{SHARED_MOUNT}"', "",
              '[real.power."*"]', 'type = "pidfile"', f'pidfile = "{state.dir}/power/{{host}}.pid"', ""]
    return "\n".join(lines)


# -- up ---------------------------------------------------------------------------------------------


def check_platform() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network and mount namespaces, libvirtd)")
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (run `make deps`)")
    # libvirt's qemu driver resolves its compiled-in user before reading qemu.conf; the
    # user comes with libvirt-daemon-system, which needs systemd: create it when missing.
    if _run("getent", "passwd", QEMU_USER, check=False).returncode != 0:
        _run("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/var/lib/libvirt",
             "--shell", "/usr/sbin/nologin", QEMU_USER)


def _subnet_free(subnet: ipaddress.IPv4Network) -> None:
    routes = _run("ip", "-4", "route", "show").stdout
    for line in routes.splitlines():
        word = line.split()[0]
        if word != "default" and "/" in word and ipaddress.ip_network(word, strict=False).overlaps(subnet):
            raise LabError(f"subnet {subnet} overlaps the route {word!r}: choose another (--subnet)")


def _python() -> list[str]:
    return [sys.executable, "-m", "neverstop"]


def up(directory: str = DEFAULT_DIR, hosts: int = 3, subnet: str = DEFAULT_SUBNET, profile: str = "tuned",
       strategy: str = "Permissive", log: Any = print) -> LabState:
    """Build the lab and start neverstop in it; on any failure, tear down what was built."""
    check_platform()
    if Path(directory, "lab.json").exists():
        down(directory, log=log)
    net = ipaddress.ip_network(subnet)
    _subnet_free(net)  # type: ignore[arg-type]
    addrs = list(net.hosts())
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.join(directory, "power"))
    os.makedirs(os.path.join(directory, "shared"))
    state = LabState(directory, subnet, str(addrs[0]), profile=profile, strategy=strategy)
    state.hosts = [LabHost(f"host-{i}", str(addrs[10 + i]), f"nslab-h{i}") for i in range(1, hosts + 1)]
    state.save()
    try:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{state.bridge_ip}/{net.prefixlen}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for h in state.hosts:
            _start_host(state, h, net.prefixlen)
            state.save()
        for h in state.hosts:
            _wait_libvirtd(h)
        Path(state.cluster_file).write_text(cluster_toml(state))
        _make_keys(state)
        _start_guests(state)
        _start_manager(state)
        for h in state.hosts:
            _start_watchdog(state, h)
        for h in state.hosts:
            _wait_watchdog(state, h)
            _start_agent(state, h)
        _wait_agents(state)
    except BaseException:
        down(directory, log=log)
        raise
    log(f"lab up in {directory}: manager {state.bridge_ip}:{state.manager_port}, hosts "
        + ", ".join(f"{h.name} {h.ip}" for h in state.hosts))
    return state


def _start_host(state: LabState, h: LabHost, prefix: int) -> None:
    root = Path(state.dir, "hosts", h.name)
    dirs = {"/etc/libvirt": root / "etc-libvirt", "/var/lib/libvirt": root / "var-lib-libvirt",
            "/var/log/libvirt": root / "var-log-libvirt", "/var/cache/libvirt": root / "var-cache-libvirt",
            LOCAL_MOUNT: root / "local"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    (root / "etc-libvirt" / "libvirtd.conf").write_text(_libvirtd_conf(h.ip))
    (root / "etc-libvirt" / "qemu.conf").write_text(_qemu_conf(h.ip))
    (root / "etc-libvirt" / "virtlogd.conf").write_text('log_outputs = "3:stderr"\n')
    (root / "var-lib-libvirt" / "qemu").mkdir(exist_ok=True)
    ready = root / "ready"
    # libvirt's own directories may be missing where only its client side was installed;
    # the pools' mount points live in the host's private /run and leave nothing behind.
    setup = ["mkdir -p /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt",
             "mount -t tmpfs -o mode=0755 tmpfs /run",
             f"mkdir -p /run/neverstop /run/libvirt {SHARED_MOUNT} {LOCAL_MOUNT}"]
    setup += [f"mount --bind '{src}' '{dst}'" for dst, src in dirs.items()]
    # The holder stays a shell whose command line names the lab: found even by a `down` that
    # lost the lab's state file.
    setup += [f"mount --bind '{state.dir}/shared' {SHARED_MOUNT}", "ip link set lo up", f"touch '{ready}'",
              "while :; do sleep 3600; done"]
    log = open(root / "holder.log", "ab")  # noqa: SIM115 - the holder keeps it
    holder = subprocess.Popen(["unshare", "--mount", "--net", "--propagation", "private", "--",
                               "sh", "-ec", "; ".join(setup)], stdout=log, stderr=log,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    h.holder_pid = holder.pid
    state.save()
    deadline = time.monotonic() + 10
    while not ready.exists():
        if holder.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"{h.name}: namespace set-up failed: {(root / 'holder.log').read_text()[-500:]}")
        time.sleep(0.02)
    h.holder_start = _start_time(holder.pid)
    h.netns = _netns(holder.pid) or ""
    state.save()
    Path(state.dir, "power", f"{h.name}.pid").write_text(f"{h.holder_pid} {h.holder_start}\n")
    _run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", str(h.holder_pid))
    _run("ip", "link", "set", h.veth, "master", BRIDGE)
    _run("ip", "link", "set", h.veth, "up")
    _in_host(h, "ip", "addr", "add", f"{h.ip}/{prefix}", "dev", "eth0")
    _in_host(h, "ip", "link", "set", "eth0", "up")
    _in_host(h, "virtlogd", "-d")
    _in_host(h, "libvirtd", "-d", "--listen")


def _wait_libvirtd(h: LabHost) -> None:
    deadline = time.monotonic() + 30
    while _in_host(h, "virsh", "-c", "qemu:///system", "version", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise LabError(f"{h.name}: libvirtd did not start")
        time.sleep(0.2)


def _start_guests(state: LabState) -> None:
    from real.cluster import load_cluster
    from real.domain import domain_xml

    cluster = load_cluster(state.cluster_file)
    template = cluster.settings.template()
    for init in cluster.inventory.vms:
        h = state.host(init.host)
        xml = Path(state.dir, "hosts", h.name, f"{init.vm.name}.xml")
        xml.write_text(domain_xml(init.vm, template))
        _in_host(h, "virsh", "-c", "qemu:///system", "define", str(xml))
        _in_host(h, "virsh", "-c", "qemu:///system", "start", init.vm.name)


def _make_keys(state: LabState) -> None:
    from real.keys import keygen

    os.makedirs(os.path.dirname(state.key), mode=0o700, exist_ok=True)
    keygen(state.key)
    for h in state.hosts:
        keygen(state.host_key(h.name), h.name, state.key)


def _spawn(state: LabState, name: str, argv: list[str]) -> None:
    log = open(Path(state.dir, f"{name}.log"), "ab")  # noqa: SIM115 - the process keeps it
    env = dict(os.environ, PYTHONUNBUFFERED="1", LOGS_DIRECTORY=os.path.join(state.dir, "logs", name))
    subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                     start_new_session=True)


def manager_marker(state: LabState) -> str:
    return f"--listen {state.bridge_ip}:{state.manager_port}"


def _start_manager(state: LabState) -> None:
    _spawn(state, "manager", [*_python(), "real", "manager", "--config", state.cluster_file, "--listen",
                              f"{state.bridge_ip}:{state.manager_port}", "--socket", state.socket,
                              "--key", state.key, "--init-state"])
    from real.control import DaemonError, control

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(DaemonError):
            if control(state.socket, "status", timeout_s=2, key_path=state.key).get("ok"):
                return
        time.sleep(0.2)
    raise LabError(f"the manager did not start: {Path(state.dir, 'manager.log').read_text()[-2000:]}")


def _start_agent(state: LabState, h: LabHost) -> None:
    _spawn(state, h.name, ["nsenter", "-t", str(h.holder_pid), "-m", "-n", "--", *_python(), "real", "agent",
                           "--manager", f"{state.bridge_ip}:{state.manager_port}", "--name", h.name,
                           "--libvirt", "qemu:///system", "--address", h.ip, "--admin-port", str(AGENT_PORT),
                           "--watchdog-state", state.watchdog_state(h.name), "--key", state.host_key(h.name)])


def _start_watchdog(state: LabState, h: LabHost) -> None:
    """The host's watchdog daemon, inside its namespaces like the agent: it must see the
    host's own /run/libvirt/qemu pid files, and kill only this host's guests."""
    _spawn(state, f"{h.name}-watchdog", ["nsenter", "-t", str(h.holder_pid), "-m", "-n", "--", *_python(),
                                         "real", "watchdog", "--state", state.watchdog_state(h.name),
                                         "--action", "kill-guests", "--key", state.host_key(h.name)])


def _wait_watchdog(state: LabState, h: LabHost, timeout_s: float = 20) -> None:
    from real.watchdog import daemon_running

    deadline = time.monotonic() + timeout_s
    while daemon_running(state.watchdog_state(h.name)) is None:
        if time.monotonic() > deadline:
            log = Path(state.dir, f"{h.name}-watchdog.log").read_text()[-1000:]
            raise LabError(f"{h.name}: the watchdog daemon did not start: {log}")
        time.sleep(0.05)


def agent_pids(state: LabState, host: str) -> list[int]:
    """The agent's processes on ``host``: the command and the Thespian processes it forked
    (they keep its command line), not libvirtd, qemu or the watchdog daemon."""
    h = state.host(host)
    marker = f"real agent --manager {state.bridge_ip}:{state.manager_port} --name {host} "
    return [p for p in processes_of(h) if marker in _cmdline(p) + " "]


def _wait_agents(state: LabState, timeout_s: float = 60) -> None:
    from real.control import DaemonError, control

    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(DaemonError):
            last = control(state.socket, "status", timeout_s=5, key_path=state.key)
            data = last.get("data") or {}
            if all(h["agent"] == "up" for h in data.get("hosts", [])) and all(
                    v["state"] == "Running" for v in data.get("vms", [])):
                return
        time.sleep(0.3)
    raise LabError(f"agents did not come up: {last}")


# -- faults -----------------------------------------------------------------------------------------


def power_off(state: LabState, host: str) -> None:
    """Every process of the host dies at once: agent, libvirtd, virtlogd, qemu, holder."""
    h = state.host(host)
    ns = h.netns or (_netns(h.holder_pid) if _alive(h) else None)
    if not ns or ns == _netns(os.getpid()):
        return
    _kill_until_gone(lambda: [p for p in _pids() if p != os.getpid() and _netns(p) == ns])


def vm_crash(state: LabState, vm: str) -> list[int]:
    pids = qemu_pids(vm)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def agent_crash(state: LabState, host: str) -> list[int]:
    """SIGKILL the host's agent (every process of it at once); its guests, libvirtd and
    watchdog daemon run on. The pids killed."""
    killed = agent_pids(state, host)
    _kill_until_gone(lambda: agent_pids(state, host))
    return killed


def agent_restart(state: LabState, host: str) -> None:
    """Start the host's agent again (after ``agent_crash``); it rejoins the manager."""
    h = state.host(host)
    if not _alive(h):
        raise LabError(f"{host} is powered off")
    if agent_pids(state, host):
        raise LabError(f"{host}'s agent is running")
    _start_agent(state, h)


def network(state: LabState, host: str, up_: bool) -> None:
    _run("ip", "link", "set", state.host(host).veth, "up" if up_ else "down")


def guests_on(state: LabState, host: str) -> list[str]:
    """The running guests libvirt reports on ``host`` ([] when the host is off)."""
    h = state.host(host)
    if not _alive(h):
        return []
    out = _in_host(h, "virsh", "-c", "qemu:///system", "list", "--name", check=False, timeout=10)
    return sorted(line.strip() for line in out.stdout.splitlines() if line.strip())


# -- down -------------------------------------------------------------------------------------------


def down(directory: str = DEFAULT_DIR, log: Any = print) -> None:
    """Remove every trace of the lab in ``directory``: processes, links, files."""
    try:
        state: LabState | None = LabState.load(directory)
    except LabError:
        state = None
    if state is not None:
        marker = manager_marker(state)
        _kill_until_gone(lambda: [p for p in _pids() if p != os.getpid() and marker in _cmdline(p)])
        for h in state.hosts:
            power_off(state, h.name)
        for h in state.hosts:
            _run("ip", "link", "del", h.veth, check=False)
    # Whatever a crashed run left: agents and daemons started in lab hosts carry the
    # lab's paths or addresses in their command lines.
    stray = [p for p in _pids() if p != os.getpid() and (f"{directory}/" in _cmdline(p) or (
        state is not None and f"--manager {state.bridge_ip}:" in _cmdline(p)))]
    _kill_until_gone(lambda: [p for p in stray if _cmdline(p)])
    _run("ip", "link", "del", BRIDGE, check=False)
    shutil.rmtree(directory, ignore_errors=True)
    log(f"lab in {directory} is down")


def leftovers(directory: str = DEFAULT_DIR) -> list[str]:
    """What a torn-down lab must not leave: for tests and `lab status`."""
    found = []
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    links = _run("ip", "-o", "link", "show", check=False).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if "nslab-h" in line]
    for p in _pids():
        cmd = _cmdline(p)
        if p != os.getpid() and (f"{directory}/" in cmd or f"{directory} " in cmd or "nslab" in cmd):
            found.append(f"process {p}: {cmd[:80]}")
    if Path(directory).exists():
        found.append(f"directory {directory}")
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if directory in line]
    return found


# -- the command line -------------------------------------------------------------------------------


def register(groups: Any) -> None:
    lab = groups.add_parser("lab", help="a lab of namespaced hosts with real libvirtd and qemu guests",
                            description="Build, break and remove the lab (root only).")
    sub = lab.add_subparsers(dest="command", required=True, parser_class=type(lab))
    u = sub.add_parser("up", help="build the lab and start neverstop in it")
    u.add_argument("--hosts", type=int, default=3)
    u.add_argument("--profile", choices=["default", "tuned"], default="tuned")
    u.add_argument("--strategy", choices=["Permissive", "Force"], default="Permissive")
    u.add_argument("--subnet", default=DEFAULT_SUBNET)
    d = sub.add_parser("down", help="remove the lab and everything it started")
    f = sub.add_parser("fault", help="inject a real fault")
    f.add_argument("fault", choices=["power-off", "vm-crash", "network-down", "network-up", "agent-crash",
                                     "agent-restart"])
    f.add_argument("target", help="a host (power-off, network-*, agent-*) or a VM (vm-crash)")
    s = sub.add_parser("status", help="guests per host as libvirt sees them, agents and watchdogs")
    for p in (u, d, f, s):
        p.add_argument("--dir", default=DEFAULT_DIR, help=f"lab directory ({DEFAULT_DIR})")
    u.set_defaults(func=_cmd_up)
    d.set_defaults(func=_cmd_down)
    f.set_defaults(func=_cmd_fault)
    s.set_defaults(func=_cmd_status)


def _usage(err: Exception) -> int:
    from formats.errors import UsageError

    raise UsageError(f"neverstop lab: {err}")


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        state = up(args.dir, args.hosts, args.subnet, args.profile, args.strategy)
    except LabError as err:
        return _usage(err)
    print(f"manager control socket: {state.socket}\n"
          f"try: NEVERSTOP_SOCKET={state.socket} NEVERSTOP_KEY={state.key} neverstop real status")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    down(args.dir)
    return 0


def _cmd_fault(args: argparse.Namespace) -> int:
    try:
        state = LabState.load(args.dir)
        if args.fault == "power-off":
            power_off(state, args.target)
        elif args.fault == "vm-crash":
            if not vm_crash(state, args.target):
                raise LabError(f"no qemu process of {args.target}")
        elif args.fault == "agent-crash":
            if not agent_crash(state, args.target):
                raise LabError(f"no agent process on {args.target}")
        elif args.fault == "agent-restart":
            agent_restart(state, args.target)
        else:
            network(state, args.target, args.fault == "network-up")
    except LabError as err:
        return _usage(err)
    print("ok")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        state = LabState.load(args.dir)
    except LabError as err:
        return _usage(err)
    from real.keys import load_key
    from real.watchdog import WATCHDOG_KEY, describe

    for h in state.hosts:
        on = _alive(h)
        print(f"{h.name} {h.ip} {'on' if on else 'off'}: {', '.join(guests_on(state, h.name)) or '-'}")
        if on:
            agent = f"agent {min(pids)}" if (pids := agent_pids(state, h.name)) else "NO agent"
            key = load_key(state.host_key(h.name)).host(h.name).local_key(WATCHDOG_KEY)
            print(f"    {agent}; watchdog: {describe(state.watchdog_state(h.name), key=key)}")
    return 0


def bring_up_for_process(directory: str = DEFAULT_DIR, **kw: Any) -> LabState:
    """``up``, with ``down`` registered to run when this process exits."""
    atexit.register(down, directory, lambda _t: None)
    return up(directory, **kw)
