"""``neverstop real ...`` (run and steer real mode) and ``neverstop lab ...`` (the lab).

Registered by the front door, ``neverstop.cli``. Exit codes as everywhere in
neverstop: 0 good, 1 the command ran but failed, 2 bad input or nothing to talk to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from actors.config import KEY_TO_FIELD
from formats.errors import EXIT_FAILED, EXIT_OK, UsageError

DEFAULT_SOCKET_ENV = "NEVERSTOP_SOCKET"
KEY_ENV = "NEVERSTOP_KEY"


def _socket(args: argparse.Namespace) -> str:
    from real.daemon import DEFAULT_SOCKET

    return str(args.socket or os.environ.get(DEFAULT_SOCKET_ENV) or DEFAULT_SOCKET)


def register(groups: Any) -> None:
    from real.daemon import DEFAULT_JOIN_JITTER_S

    real = groups.add_parser("real", help="run HA on real KVM hosts (Thespian + libvirt)",
                             description="Real mode: the same actors on Thespian and libvirt.")
    sub = real.add_subparsers(dest="command", required=True, parser_class=type(real))

    kg = sub.add_parser(
        "keygen", help="write a new cluster key, or a host's key made from it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a key file (mode 0600; an existing file is never overwritten).\n\n"
        "  neverstop real keygen /etc/neverstop/cluster.key\n"
        "      a new random cluster key: the manager's, and the CLI's on the management node\n"
        "  neverstop real keygen --host kvm1 --from /etc/neverstop/cluster.key kvm1.key\n"
        "      host kvm1's key: copy it to kvm1 as /etc/neverstop/cluster.key (its agent and\n"
        "      watchdog read it). It signs as kvm1 only: a host that is broken into cannot\n"
        "      speak as the manager or as another host.\n"
        "See docs/real-mode.md, 'Keys' and 'Rotating the cluster key'.")
    kg.add_argument("path", metavar="PATH", help="the key file to create")
    kg.add_argument("--host", metavar="NAME", help="make host NAME's key (needs --from)")
    kg.add_argument("--from", dest="cluster_key", metavar="CLUSTER_KEY",
                    help="the cluster key a host key is made from")
    kg.set_defaults(func=cmd_keygen)

    m = sub.add_parser("manager", help="run the HA manager (management node)",
                       description="Run the convention leader with the HA manager, in the foreground.")
    m.add_argument("--config", required=True, metavar="TOML", help="cluster file ([[host]], [[storage]], "
                   "[[vm]], [ha], [real])")
    m.add_argument("--listen", required=True, metavar="ADDR:PORT",
                   help="management address and port to bind (never 0.0.0.0: see docs/real-mode.md)")
    m.add_argument("--state", metavar="PATH", help="SQLite file of the HA state (default: [real] state)")
    m.add_argument("--init-state", action="store_true",
                   help="make a new state file (once, for a new cluster); without it a missing state "
                   "file is refused, so that a wrong path cannot forget every HA level and no-restart flag")
    m.add_argument("--socket", metavar="PATH", help="control socket (default /run/neverstop/manager.sock)")
    m.add_argument("--ready-file", metavar="PATH", help=argparse.SUPPRESS)
    _key_option(m, "the cluster key")
    m.set_defaults(func=cmd_manager)

    a = sub.add_parser("agent", help="run a compute host's agent",
                       description="Join the manager's convention as host NAME, in the foreground.")
    a.add_argument("--manager", required=True, metavar="ADDR:PORT")
    a.add_argument("--name", required=True, help="this host's name in the cluster file")
    a.add_argument("--libvirt", default="qemu:///system", metavar="URI")
    a.add_argument("--address", help="this host's management address (default: the one routing to "
                   "the manager)")
    a.add_argument("--admin-port", type=int, default=1900, help="this host's Thespian port (1900)")
    a.add_argument("--watchdog-state", metavar="FILE",
                   help="the state file of this host's watchdog daemon (neverstop real watchdog --state): "
                   "the agent pets it while self-fencing is on. Without it, under Force the manager never "
                   "trusts this host's self-fencing")
    a.add_argument("--join-jitter", type=float, default=DEFAULT_JOIN_JITTER_S, metavar="SECONDS",
                   help="wait a random 0..SECONDS before joining, so that hosts that boot together "
                   f"do not all join at once ({DEFAULT_JOIN_JITTER_S:g}; the manager's ha.host.joinGrace "
                   "covers the wait)")
    a.add_argument("--ready-file", metavar="PATH", help=argparse.SUPPRESS)
    _key_option(a, "this host's key (or the cluster key)")
    a.set_defaults(func=cmd_agent)

    w = sub.add_parser(
        "watchdog", help="run a compute host's watchdog daemon (a dead-man switch outside the agent)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run this host's watchdog daemon in the foreground, next to the agent.\n\n"
        "Under Force the manager restarts a cut-off host's VMs elsewhere once the host's self-fencing\n"
        "deadline has passed, trusting that its agent killed its guests. If the agent process dies or\n"
        "hangs, nothing in it can. While self-fencing is on, the agent (--watchdog-state FILE) pets\n"
        "FILE every heartbeat interval with a deadline; when a deadline passes without a new pet,\n"
        "this daemon acts once:\n"
        "  kill-guests  SIGKILL the qemu process of every guest of this host (libvirt's pid files,\n"
        "               not libvirtd), and keep killing any that appears until the agent pets again\n"
        "  reboot       sync, then reset the host at once (sysrq b), as a hardware watchdog would\n"
        "With --device (a hardware watchdog or softdog), it writes to the device on every poll while\n"
        "it is healthy, so the kernel resets the host if the daemon itself dies or hangs; SIGTERM\n"
        "stands the device down (magic close). See docs/real-mode.md, 'The host watchdog'.")
    w.add_argument("--state", required=True, metavar="FILE",
                   help="the state file the agent pets (the agent's --watchdog-state)")
    w.add_argument("--action", required=True, choices=["kill-guests", "reboot"],
                   help="what to do when the agent stops petting")
    w.add_argument("--device", metavar="DEV", help="a kernel watchdog device to pet while healthy, "
                   "e.g. /dev/watchdog (never in a test: it resets the machine when not petted)")
    w.add_argument("--poll", type=float, default=0.25, metavar="SECONDS",
                   help="how often to read the state file (0.25; at most 5)")
    w.add_argument("--qemu-pid-dir", default="/run/libvirt/qemu", metavar="DIR",
                   help="libvirt's qemu pid files (/run/libvirt/qemu, for qemu:///system)")
    _key_option(w, "this host's key (or the cluster key, with --name): the state file is MACed with it")
    w.add_argument("--name", help="this host's name (only with a cluster key; a host key names its host)")
    w.set_defaults(func=cmd_watchdog)

    st = sub.add_parser("status", help="the VM and host tables, live from the manager")
    st.add_argument("--json", action="store_true", help="print the raw status as JSON")
    st.set_defaults(func=cmd_status)

    vm = sub.add_parser("vm", help="steer one VM").add_subparsers(dest="vm_command", required=True,
                                                                   parser_class=type(real))
    sh = vm.add_parser("set-ha", help="set a VM's HA level")
    sh.add_argument("vm")
    sh.add_argument("level", choices=["NeverStop", "None"])
    sh.set_defaults(func=lambda args: _command(args, "set-ha", {"vm": args.vm, "level": args.level}))
    sp = vm.add_parser("stop", help="stop a VM (NeverStop restarts it unless --no-restart)")
    sp.add_argument("vm")
    sp.add_argument("--no-restart", action="store_true", help="do not restart it this time")
    sp.set_defaults(func=lambda args: _command(args, "stop", {"vm": args.vm, "no_restart": args.no_restart}))
    sa = vm.add_parser("start", help="start a VM (clears --no-restart)")
    sa.add_argument("vm")
    sa.set_defaults(func=lambda args: _command(args, "start", {"vm": args.vm}))

    host = sub.add_parser("host", help="steer one host").add_subparsers(dest="host_command", required=True,
                                                                         parser_class=type(real))
    mt = host.add_parser("maintenance", help="enter or leave maintenance mode")
    mt.add_argument("host")
    mt.add_argument("action", choices=["enter", "exit"])
    mt.set_defaults(func=lambda args: _command(args, "maintenance",
                                               {"host": args.host, "enter": args.action == "enter"}))

    cfg = sub.add_parser("config", help="HA settings").add_subparsers(dest="config_command", required=True,
                                                                       parser_class=type(real))
    cs = cfg.add_parser("set", help="set one ZStack key, e.g. ha.strategy Force or host.ping.interval 2s")
    cs.add_argument("key", choices=sorted(KEY_TO_FIELD), metavar="KEY")
    cs.add_argument("value")
    cs.set_defaults(func=lambda args: _command(args, "config-set", {"key": args.key, "value": args.value}))

    for p in (st, sh, sp, sa, mt, cs):
        p.add_argument("--socket", metavar="PATH", help=f"control socket (default ${DEFAULT_SOCKET_ENV} or "
                       "/run/neverstop/manager.sock)")
        _key_option(p, "the cluster key: requests are signed with it")

    from real.lab import register as register_lab

    register_lab(groups)


def _key_option(parser: argparse.ArgumentParser, what: str) -> None:
    from real.keys import DEFAULT_KEY

    parser.add_argument("--key", metavar="PATH", default=os.environ.get(KEY_ENV) or DEFAULT_KEY,
                        help=f"{what} (default ${KEY_ENV} or {DEFAULT_KEY}; mode 0600)")


def cmd_keygen(args: argparse.Namespace) -> int:
    from real.keys import KeyFileError, keygen

    if args.cluster_key and not args.host:
        raise UsageError("neverstop real keygen: --from needs --host NAME")
    try:
        path = keygen(args.path, args.host, args.cluster_key)
    except KeyFileError as err:
        raise UsageError(str(err)) from None
    print(f"{'host ' + args.host if args.host else 'cluster'} key written to {path} (mode 0600)")
    return EXIT_OK


def cmd_manager(args: argparse.Namespace) -> int:
    from real.cluster import ClusterError
    from real.daemon import DaemonError, run_manager
    from real.liveness import DeadActorSystem

    try:
        return run_manager(args.config, args.listen, args.state, _socket(args), args.key, args.ready_file,
                           args.init_state)
    except (ClusterError, DaemonError) as err:
        raise UsageError(str(err)) from None
    except DeadActorSystem as err:  # a machine's failure, not the user's: exit 1, to be restarted
        print(f"neverstop: manager: {err}", file=sys.stderr)
        return EXIT_FAILED


def cmd_agent(args: argparse.Namespace) -> int:
    from real.daemon import DaemonError, run_agent
    from real.liveness import DeadActorSystem

    try:
        return run_agent(args.manager, args.name, args.libvirt, args.address, args.admin_port,
                         args.ready_file, args.watchdog_state, args.key, args.join_jitter)
    except DaemonError as err:
        raise UsageError(str(err)) from None
    except DeadActorSystem as err:  # a machine's failure, not the user's: exit 1, to be restarted
        print(f"neverstop: agent {args.name}: {err}", file=sys.stderr)
        return EXIT_FAILED


def cmd_watchdog(args: argparse.Namespace) -> int:
    from real.keys import KeyFileError, load_key
    from real.watchdog import WATCHDOG_KEY, run_daemon

    try:
        key = load_key(args.key)
        name = args.name or key.name
        if not name:
            raise UsageError("neverstop real watchdog: with a cluster key, say which host this is (--name)")
        mac_key = key.host(name).local_key(WATCHDOG_KEY)
    except KeyFileError as err:
        raise UsageError(f"neverstop real watchdog: {err}") from None
    try:
        return run_daemon(args.state, args.action, args.device, args.poll, args.qemu_pid_dir, mac_key)
    except ValueError as err:
        raise UsageError(f"neverstop real watchdog: {err}") from None


def _request(args: argparse.Namespace, cmd: str, payload: dict[str, Any]) -> dict[str, Any]:
    from real.control import DaemonError, control

    try:
        return control(_socket(args), cmd, payload, key_path=args.key)
    except DaemonError as err:
        raise UsageError(str(err)) from None


def _command(args: argparse.Namespace, cmd: str, payload: dict[str, Any]) -> int:
    reply = _request(args, cmd, payload)
    if not reply.get("ok"):
        print(f"neverstop: {reply.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    print("ok")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    reply = _request(args, "status", {})
    if not reply.get("ok"):
        print(f"neverstop: {reply.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    data = reply["data"]
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(format_status(data))
    return EXIT_OK


def format_status(data: dict[str, Any]) -> str:
    from formats.table import memory, table

    vm_rows = [
        (v["name"], str(v["cpu"]), memory(v["memory_mib"]), v["ip"] or "-", v["host_ip"] or v["host"] or "-",
         v["cluster"], v["state"] + (" (no restart)" if v.get("no_restart") else "")
         + (f", {v['pending']} pending" if v.get("pending") else ""), v["ha"])
        for v in data["vms"]
    ]
    force = (data.get("config") or {}).get("ha.strategy") == "Force"

    def agent(h: dict[str, Any]) -> str:
        # Under Force, a host with no watchdog is one whose self-fence the manager never trusts.
        bare = force and h["agent"] == "up" and not h.get("watchdog", True)
        failing = f", WATCHDOG PET FAILING: {h['watchdog_error']}" if h.get("watchdog_error") else ""
        return str(h["agent"]) + (", no watchdog" if bare else "") + failing

    host_rows = [
        (h["name"], h["ip"] or "-", h["cluster"], h["status"] + (", maintenance" if h["maintenance"] else ""),
         agent(h))
        for h in data["hosts"]
    ]
    store = data.get("store") or {}
    lines = []
    booting = sum(1 for h in data["hosts"] if h["status"] == "Booting")
    if booting:
        lines += [f"  {booting} host(s) Booting: not judged until their agent answers, for at most "
                  f"{data.get('join_grace_s', 0):g} s after the manager started (ha.host.joinGrace)", ""]
    if store.get("degraded"):
        lines += [f"  Store DEGRADED: {store.get('path')}: {store.get('error')}; {store.get('unsaved', 0)} "
                  "changes kept in memory and retried; durable commands are refused until it can be written",
                  ""]
    return "\n".join([
        *lines,
        "  VMs:",
        table(vm_rows, ("Name", "CPU", "Memory", "IP", "Host IP", "Cluster", "State", "HA level")),
        "",
        "  Hosts:",
        table(host_rows, ("Name", "IP", "Cluster", "Status", "Agent")),
    ])
