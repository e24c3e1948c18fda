"""The management node's shell: the HA manager, its VM actors, and what surrounds them.

Besides hosting the behaviours (``real.shell``), it
- places a host agent on every compute host whose actor system joins the convention
  (``createActor`` with the capability requirement ``neverstop.host = NAME``), and tells
  every agent where its peers are;
- is the API layer: a user command's change (``actors.durable.command_change``) is
  committed to the store in one transaction, then applied to memory and handed to the
  manager, so a command answered "ok" survives a restart of the management node;
- keeps the durable record through store failures: published VM views change memory at
  once and are written at the end of each batch; a write that fails (full disk, locked
  or read-only file) is kept and retried every few seconds while HA goes on, the status
  shows the store degraded with the error, and commands that must be durable are refused
  at once with a one-line reason until the retry succeeds;
- answers ``bmc/HOST`` from the host's power controller, in a thread;
- keeps the live VM and host tables for ``neverstop real status``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from thespian.actors import ActorSystemConventionUpdate, ChildActorExited

from actors.config import DURATION_KEYS, ConfigError, HaConfig
from actors.durable import Change, DurableState, command_change, restore, stored_config_value, view_change
from actors.host_agent import HostAgent
from actors.inventory import MANAGER, Inventory, host_addr
from actors.manager import HaManager
from actors.messages import (
    HostViewChanged,
    PowerQuery,
    PowerStatus,
    UserMaintenance,
    UserSetConfig,
    UserSetHa,
    UserStartVm,
    UserStopVm,
    VmViewChanged,
)
from actors.states import HaLevel
from formats.units import UnitError, parse_duration
from real.agent import AgentBoot, AgentShell, HostSpec
from real.authz import HOST_CAPABILITY, MGMT_LOG
from real.cluster import Cluster
from real.heartbeat import UntrustedRecord
from real.power import PowerController, make_controller
from real.shell import MGMT, Boot, Booted, Nodes, NodeShell, Published
from real.store import Store
from real.watchdog import WatchdogTrouble

LIBVIRT_CAPABILITY = "neverstop.libvirt"
ADDRESS_CAPABILITY = "neverstop.address"
WATCHDOG_CAPABILITY = "neverstop.watchdog"  # the agent's --watchdog-state ("" for none)
INCARNATION_CAPABILITY = "neverstop.incarnation"  # new at every start of an agent daemon
MANAGER_GLOBAL_NAME = "neverstop-manager"
TRANSITIONS_KEPT = 1000  # recent VM state changes shown by the status (wall-clock times)
STORE_RETRY_S = 2.0  # a failed store write is tried again this often
PLACING_MAX = 8  # agent shells being placed at once
BOOT_RESEND_S = 2.0  # a placed shell's boot message goes again this often until it answers: a
# transmit to a shell still being created waits for its address, and Thespian gives it up (5 s)
AGENT_BOOT_TIMEOUT_S = 15.0  # a placement not booted by then is made again (the creation itself
# may be lost); each new attempt for the same host waits twice as long, up to 8 times: a host too
# busy to start a process in time is not helped by a second one
NODES_FLUSH_S = 1.0  # new agent shells' addresses go out to the other nodes at most this often
RECONCILE_S = 5.0  # how often joining hosts are looked at again


@dataclass(frozen=True)
class _Reconcile:
    """Wake-up payload: look again at hosts whose agent does not run (``_reconcile``)."""


@dataclass(frozen=True)
class _BootResend:
    """Wake-up payload: send the boot message of every shell not booted yet again."""


@dataclass(frozen=True)
class _NodesFlush:
    """Wake-up payload: tell every agent shell the addresses placed since the last flush."""


@dataclass(frozen=True)
class _StoreRetry:
    """Wake-up payload: try the writes a failure left in memory again."""


@dataclass(frozen=True)
class MgmtBoot(Boot):
    cluster: Cluster | None = None


@dataclass(frozen=True)
class Control:
    """A user command from the control socket (``real.daemon``)."""

    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    req: int = 0  # echoed in the reply: the daemon tells its answer from a late one


@dataclass(frozen=True)
class ControlReply:
    ok: bool
    error: str = ""
    data: Any = None
    req: int = 0


class ManagementShell(NodeShell):
    agent_shell: type[AgentShell] = AgentShell  # what is placed on a host that joins

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.cluster: Cluster | None = None
        self.inventory: Inventory | None = None
        self.config = HaConfig()
        self.store: Store | None = None
        self.durable = DurableState()  # what is committed, plus ``unsaved``
        self.unsaved: list[Change] = []  # view changes in memory, not yet in the store
        self.store_error = ""  # the last write's failure while degraded ("" when writable)
        self.retry_armed = False
        self.views: dict[str, tuple[str, str | None]] = {}
        self.vm_names: set[str] = set()
        self.host_status: dict[str, str] = {}
        self.agents: dict[str, str] = {}  # host -> "booting" | "up"
        self.members: dict[str, str] = {}  # host -> the admin address it joined from
        self.member_caps: dict[str, dict[str, Any]] = {}  # host -> the capabilities it joined with
        self.to_place: list[str] = []  # hosts waiting for an agent shell, in join order
        self.placing: dict[str, float] = {}  # host -> when its shell was placed (monotonic), until it boots
        self.attempts: dict[str, int] = {}  # host -> placements made since its shell last booted
        self.boots: dict[str, tuple[Any, AgentBoot]] = {}  # host -> (shell, boot message) until it boots
        self.nodes_news: dict[str, Any] = {}  # shells placed since the last _NodesFlush
        self.watchdogs: dict[str, bool] = {}  # host -> its agent runs with a watchdog
        self.watchdog_errors: dict[str, str] = {}  # host -> why its pets fail ("" when they work)
        self.host_ips: dict[str, str] = {}
        self.maintenance: set[str] = set()
        self.power: dict[str, PowerController] = {}
        self.transitions: deque[tuple[float, str, str, str | None]] = deque(maxlen=TRANSITIONS_KEPT)

    # -- boot ------------------------------------------------------------------------------------

    def boot(self, msg: Boot) -> bool:
        assert isinstance(msg, MgmtBoot) and msg.cluster is not None
        cluster = self.cluster = msg.cluster
        self.node = MGMT
        self.seed = msg.seed
        self.nodes[MGMT] = self.myAddress
        store = self.store = Store(cluster.settings.state)
        self.durable = store.load()
        for line in store.skipped:
            self.log(f"state file {store.path}: {line}")
        inventory, config, maintenance = restore(cluster.inventory, cluster.config, self.durable)
        try:
            store.save_inventory(cluster.inventory)  # a record of what it ran with, for people
        except (sqlite3.Error, OSError) as err:
            self.store_error = f"{type(err).__name__}: {err}"
            self.log(f"state file {store.path}: write failed at start ({self.store_error}); HA goes on, "
                     f"commands are refused until it can be written")
            self._arm_retry()
        self.inventory, self.config = inventory, config
        self.vm_names = {init.vm.name for init in inventory.vms}
        restored = Counter(init.state.value for init in inventory.vms)
        counts = ", ".join(f"{n} {state}" for state, n in sorted(restored.items())) or "none"
        self.log(f"VMs restored: {counts} (Unknown ones are asked on their hosts)")
        for host in inventory.hosts:
            self.host_ips[host.name] = host.ip
            self.power[host.name] = make_controller(cluster.settings.power_for(host.name))
        self.ensure_mailbox()
        self.log(f"management shell: {len(inventory.hosts)} hosts, {len(inventory.vms)} VMs, "
                 f"profile {cluster.profile}, strategy {config.strategy.value}, state in {store.path}")
        self.maintenance = set(maintenance)
        self.spawn(MANAGER, HaManager(inventory, config, maintenance=maintenance))
        self.notifyOnSystemRegistrationChanges(True)
        self.wakeupAfter(timedelta(seconds=RECONCILE_S), payload=_Reconcile())
        return True

    # -- compute hosts joining ---------------------------------------------------------------------

    def _shared_pools(self, host: str) -> tuple[str, ...]:
        assert self.inventory is not None
        shared = {p.name for p in self.inventory.pools if p.shared}
        return tuple(p for p in self.inventory.host(host).pools if p in shared)

    def _host_spec(self, host: str, uri: str, watchdog_state: str = "") -> HostSpec:
        assert self.cluster is not None and self.inventory is not None
        s = self.cluster.settings
        migration = {}
        for other in self.inventory.hosts:
            ip = self.host_ips.get(other.name) or other.name
            migration[other.name] = (s.migration_uri.format(ip=ip, host=other.name),
                                     s.migration_stream.format(ip=ip, host=other.name))
        mounts = {p: s.mounts[p] for p in self._shared_pools(host) if p in s.mounts}
        return HostSpec(host, uri, s.template(), mounts, migration, s.shutdown_timeout_s,
                        s.libvirt_refresh_s, s.run_dir, watchdog_state)

    def _host_joined(self, msg: Any) -> None:
        """A host's actor system is in the convention (a first registration, or the full
        member list that ``_reconcile`` asks for): queue an agent shell for it unless it
        has one that runs, placed through the same admin."""
        caps = msg.remoteCapabilities or {}
        host = caps.get(HOST_CAPABILITY)
        if host is None:
            return
        assert self.inventory is not None
        if host not in self.host_ips:
            self.log(f"an actor system for unknown host {host!r} joined: ignored")
            return
        if not msg.remoteAdded:
            # Thespian's membership is no evidence of anything: HA judges by its own pings.
            self.log(f"convention: {host}'s actor system left or timed out (no HA action)")
            return
        # The same daemon (address and incarnation) seen again is a re-sent member list; a
        # restarted one (an agent on a fixed admin port comes back on the same address)
        # needs a new agent shell.
        member = f"{msg.remoteAdminAddress}#{caps.get(INCARNATION_CAPABILITY, '')}"
        same = self.members.get(host) == member
        if same and (self.agents.get(host) == "up" or host in self.placing or host in self.to_place):
            return  # known: a re-sent member list, or it is being placed already
        self.members[host] = member
        self.member_caps[host] = dict(caps)
        if host not in self.to_place:
            self.to_place.append(host)
        self._place_next()

    def _place_next(self) -> None:
        """Place queued agent shells, at most PLACING_MAX at once: a cluster that starts
        all together must not time out its own placements (each is a process start and a
        libvirt connection on the host), and the manager's cost per moment stays bounded."""
        while self.to_place and len(self.placing) < PLACING_MAX:
            self._place(self.to_place.pop(0))

    def _place(self, host: str) -> None:
        caps = self.member_caps[host]
        if not self.host_ips.get(host) and caps.get(ADDRESS_CAPABILITY):
            self.host_ips[host] = caps[ADDRESS_CAPABILITY]
        uri = caps.get(LIBVIRT_CAPABILITY, "qemu:///system")
        watchdog_state = str(caps.get(WATCHDOG_CAPABILITY) or "")
        self.watchdogs[host] = bool(watchdog_state)
        addr = self.createActor(self.agent_shell, targetActorRequirements={HOST_CAPABILITY: host})
        self.nodes[host] = addr
        self.agents[host] = "booting"
        self.placing[host] = time.monotonic()
        self.attempts[host] = self.attempts.get(host, 0) + 1
        agent = HostAgent(host, self._shared_pools(host), self.config)
        boot = AgentBoot(node=host, cells=((host_addr(host), agent),), nodes=dict(self.nodes),
                         seed=self.seed, spec=self._host_spec(host, uri, watchdog_state))
        self.send(addr, boot)
        if not self.boots:
            self.wakeupAfter(timedelta(seconds=BOOT_RESEND_S), payload=_BootResend())
        self.boots[host] = (addr, boot)
        # The other shells learn of it with the next flush: one message per shell per second
        # while a whole cluster joins, not one per shell per placement.
        if not self.nodes_news:
            self.wakeupAfter(timedelta(seconds=NODES_FLUSH_S), payload=_NodesFlush())
        self.nodes_news[host] = addr
        self.log(f"{host} joined: agent shell placed there (libvirt {uri}, "
                 f"watchdog {watchdog_state or 'none'})")

    def _booted(self, host: str) -> None:
        first = self.agents.get(host) != "up"
        self.agents[host] = "up"
        self.placing.pop(host, None)
        self.attempts.pop(host, None)
        self.boots.pop(host, None)
        if first:  # the addresses placed since its boot message was made
            self.send(self.nodes[host], Nodes({h: a for h, a in self.nodes.items() if h != host}))
        self._place_next()

    def _resend_boots(self) -> None:
        for addr, boot in self.boots.values():
            self.send(addr, boot)
        if self.boots:
            self.wakeupAfter(timedelta(seconds=BOOT_RESEND_S), payload=_BootResend())

    def _flush_nodes(self) -> None:
        """News goes to booted shells; one still booting hears the whole table when it boots."""
        news, self.nodes_news = self.nodes_news, {}
        for node, addr in self.nodes.items():
            if node != MGMT and self.agents.get(node) == "up":
                told = {h: a for h, a in news.items() if h != node}
                if told:
                    self.send(addr, Nodes(told))

    def _boot_timeout_s(self, host: str) -> float:
        return AGENT_BOOT_TIMEOUT_S * 2 ** min(self.attempts.get(host, 1) - 1, 3)

    def _reconcile(self) -> None:
        """Every RECONCILE_S: a placement that has not booted in AGENT_BOOT_TIMEOUT_S is
        made again (its messages may have been lost; the older shell gives way to the
        newer one on the host), and while any host has no agent that runs, Thespian is
        asked for the convention's member list again: a registration whose notice was
        lost (a transmit that timed out under load) is otherwise never seen again."""
        now = time.monotonic()
        for host, since in list(self.placing.items()):
            timeout_s = self._boot_timeout_s(host)
            if now - since > timeout_s:
                self.log(f"{host}: its agent shell did not boot within {timeout_s:g} s: placing it again")
                del self.placing[host]
                self.boots.pop(host, None)
                self.to_place.append(host)
        self._place_next()
        if any(self._agent_state(h) != "up" for h in self.host_ips):
            self.notifyOnSystemRegistrationChanges(False)
            self.notifyOnSystemRegistrationChanges(True)  # the admin answers with every member
        self.wakeupAfter(timedelta(seconds=RECONCILE_S), payload=_Reconcile())

    # -- devices: power controllers ----------------------------------------------------------------

    def device(self, to: str, msg: object) -> bool:
        if to == MGMT_LOG:
            if isinstance(msg, UntrustedRecord):
                self.log(f"heartbeat record of {msg.host} on pool {msg.pool} (read by {msg.reporter}) not "
                         f"trusted: {msg.reason}; it counts as no reading")
            elif isinstance(msg, WatchdogTrouble):
                self.watchdog_errors[msg.host] = msg.error
                self.log(f"{msg.host}: watchdog pet failing ({msg.error}): its self-fence is not trusted"
                         if msg.error else f"{msg.host}: watchdog petted again")
            return True
        if not to.startswith("bmc/"):
            return False
        if isinstance(msg, PowerQuery):
            controller = self.power.get(msg.host)
            mailbox = self.mailbox
            if controller is not None and mailbox is not None:
                def ask(c: PowerController = controller, q: PowerQuery = msg) -> None:
                    on = c.powered_on(q.host)
                    if on is not None:
                        mailbox.post(q.reply_to, PowerStatus(q.host, q.req, on))

                threading.Thread(target=ask, name=f"power-{msg.host}", daemon=True).start()
        return True

    # -- published events --------------------------------------------------------------------------

    def on_published(self, event: Published) -> None:
        e = event.event
        if isinstance(e, VmViewChanged):
            change = view_change(e)
            self.durable.apply(change)
            self.unsaved.append(change)  # written at the end of the batch (after_messages)
            old = self.views.get(e.vm, ("-", None))[0]
            if (old, self.views.get(e.vm, ("", None))[1]) == (e.state.value, e.host):
                return super().on_published(event)
            self.views[e.vm] = (e.state.value, e.host)
            self.transitions.append((event.t, e.vm, e.state.value, e.host))  # a first view: how it came back
            if old != "-":
                self.log(f"{e.vm}: {old} -> {e.state.value} {e.host or '-'}")
        elif isinstance(e, HostViewChanged):
            self.host_status[e.host] = e.status
        super().on_published(event)

    # -- other messages ----------------------------------------------------------------------------

    def on_other(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, ActorSystemConventionUpdate):
            self._host_joined(msg)
        elif isinstance(msg, Control):
            try:
                reply = self.control(msg)
            except StoreUnavailable as err:
                reply = ControlReply(False, str(err))
            except KeyError as err:
                reply = ControlReply(False, str(err.args[0]) if err.args else "not found")
            except (ConfigError, UnitError, ValueError) as err:
                reply = ControlReply(False, str(err))
            self.send(sender, replace(reply, req=msg.req))
        elif isinstance(msg, Booted):
            self._booted(msg.node)
        elif isinstance(msg, ChildActorExited):
            for host, addr in list(self.nodes.items()):
                if addr == msg.childAddress and host != MGMT:
                    self.log(f"Thespian reports {host}'s agent shell gone (no HA action)")

    # -- the store: writes, failures, retries ----------------------------------------------------

    def _commit(self, changes: list[Change]) -> bool:
        """Write ``changes`` in one transaction; on failure the store is degraded."""
        assert self.store is not None
        try:
            self.store.commit(changes)
        except (sqlite3.Error, OSError) as err:
            error = f"{type(err).__name__}: {err}"
            if error != self.store_error:
                self.log(f"state file {self.store.path}: write failed ({error}); HA goes on, "
                         f"{len(self.unsaved)} changes kept in memory and retried every {STORE_RETRY_S:g} s")
            self.store_error = error
            self._arm_retry()
            return False
        return True

    def _arm_retry(self) -> None:
        if not self.retry_armed:
            self.retry_armed = True
            self.wakeupAfter(timedelta(seconds=STORE_RETRY_S), payload=_StoreRetry())

    def _flush(self) -> None:
        if self.unsaved and self._commit(self.unsaved):
            if self.store_error:
                assert self.store is not None
                self.log(f"state file {self.store.path}: writable again, {len(self.unsaved)} changes written")
                self.store_error = ""
            self.unsaved.clear()
        elif not self.unsaved and self.store_error:
            self.store_error = ""  # nothing left to write: the next command finds out for itself

    def after_messages(self) -> None:
        if self.store is not None and not self.store_error:
            self._flush()  # while degraded only the retry timer writes: no batch waits on a bad disk

    def on_wakeup(self, payload: Any) -> None:
        if isinstance(payload, _Reconcile):
            self._reconcile()
        elif isinstance(payload, _NodesFlush):
            self._flush_nodes()
        elif isinstance(payload, _BootResend):
            self._resend_boots()
        elif isinstance(payload, _StoreRetry):
            self.retry_armed = False
            if self.store is not None:
                if self.store_error and not self.unsaved:
                    self._probe_store()
                else:
                    self._flush()

    def _probe_store(self) -> None:
        """Degraded with nothing to write (a command's write failed): try an empty
        transaction, so commands are accepted again once the file is writable."""
        if self._commit([Change()]):
            assert self.store is not None
            self.log(f"state file {self.store.path}: writable again")
            self.store_error = ""

    def _durable(self, cmd: object) -> None:
        """Make a user command durable (with any view changes still unsaved, in one
        transaction), then apply it to memory and hand it to the manager. Raises
        StoreUnavailable, leaving memory as it was, when it cannot be written."""
        if self.store_error:
            raise StoreUnavailable(f"the state file cannot be written ({self.store_error}); nothing was "
                                   "changed. HA goes on; commands are accepted again once it can be written")
        change = command_change(cmd)
        if not self._commit([*self.unsaved, change]):
            raise StoreUnavailable(f"the state file cannot be written ({self.store_error}); "
                                   "nothing was changed")
        self.unsaved.clear()
        self.durable.apply(change)
        self.route(MANAGER, cmd)

    def on_exit(self) -> None:
        super().on_exit()
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- the API layer -----------------------------------------------------------------------------

    def _vm(self, args: dict[str, Any]) -> str:
        vm = str(args.get("vm", ""))
        if vm not in self.vm_names:
            raise KeyError(f"no VM named {vm!r}")
        return vm

    def _host(self, args: dict[str, Any]) -> str:
        host = str(args.get("host", ""))
        if host not in self.host_ips:
            raise KeyError(f"no host named {host!r}")
        return host

    def control(self, msg: Control) -> ControlReply:
        store = self.store
        assert store is not None
        cmd, args = msg.cmd, msg.args
        if cmd == "ping":  # the daemon's liveness probe
            return ControlReply(True)
        if cmd == "status":
            return ControlReply(True, data=self.status())
        if cmd == "set-ha":
            self._durable(UserSetHa(self._vm(args), HaLevel(str(args.get("level")))))
        elif cmd == "stop":
            self._durable(UserStopVm(self._vm(args), bool(args.get("no_restart", False))))
        elif cmd == "start":
            self._durable(UserStartVm(self._vm(args)))
        elif cmd == "maintenance":
            host, enter = self._host(args), bool(args.get("enter"))
            self._durable(UserMaintenance(host, enter))
            (self.maintenance.add if enter else self.maintenance.discard)(host)
        elif cmd == "config-set":
            key = str(args.get("key", ""))
            value = config_value(key, args.get("value"))
            config = self.config.with_key(key, value)  # checked before anything is written
            self._durable(UserSetConfig(key, stored_config_value(value)))
            self.config = config
        else:
            return self.other_command(cmd, args)
        return ControlReply(True)

    def other_command(self, cmd: str, args: dict[str, Any]) -> ControlReply:
        return ControlReply(False, f"unknown command {cmd!r}")

    def status(self) -> dict[str, Any]:
        assert self.inventory is not None
        host_info = {h.name: h for h in self.inventory.hosts}
        vms = []
        for init in self.inventory.vms:
            name = init.vm.name
            state, host = self.views.get(name, ("-", None))
            rec = self.durable.record(name)
            level = rec.level if rec.level is not None else init.level
            no_restart = rec.no_restart if rec.no_restart is not None else init.no_restart
            vms.append({
                "name": name, "cpu": init.vm.cpu, "memory_mib": init.vm.memory_mib, "ip": init.vm.ip,
                "host": host, "host_ip": self.host_ips.get(host or "", ""), "cluster": init.vm.cluster,
                "state": state, "ha": level.value, "no_restart": no_restart,
                "pool": init.vm.pool, "pending": "stop" if rec.stop_pending else "",
            })
        hosts = [{
            "name": h, "ip": self.host_ips.get(h, ""), "cluster": host_info[h].cluster,
            "status": self.host_status.get(h, "Booting"), "maintenance": h in self.maintenance,
            "agent": self._agent_state(h), "watchdog": self.watchdogs.get(h, False),
            "watchdog_error": self.watchdog_errors.get(h, ""),
        } for h in sorted(host_info)]
        assert self.store is not None
        store = {"path": self.store.path, "degraded": bool(self.store_error), "error": self.store_error,
                 "unsaved": len(self.unsaved)}
        return {"vms": vms, "hosts": hosts, "config": self.config.as_keys(), "store": store,
                "transitions": list(self.transitions), "join_grace_s": self.config.host_join_grace_s}

    def _agent_state(self, host: str) -> str:
        """"absent" (never joined), "booting" (placed, not booted yet), "up" (booted and
        answering pings), or "unreachable" (booted once; the manager's pings go unanswered)."""
        state = self.agents.get(host, "absent")
        if state == "up" and self.host_status.get(host, "Booting") not in ("Connected", "Booting"):
            return "unreachable"
        return state


class StoreUnavailable(Exception):
    """A durable command refused: the state file cannot be written right now."""


def config_value(key: str, raw: Any) -> Any:
    """A user's value for ``key``: durations as "2s" or seconds, booleans, numbers, words."""
    if not isinstance(raw, str):
        return raw
    if key in DURATION_KEYS:
        return parse_duration(raw, key)
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        number = float(raw)
    except ValueError:
        return raw
    return int(number) if number.is_integer() and "." not in raw else number
