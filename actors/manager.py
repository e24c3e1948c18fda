"""The HA manager: the management node's brain.

It watches hosts (pings, then peer probes, storage heartbeats and power controllers
once a host stops answering), turns that evidence into a verdict per host, hands out
capacity, relays user requests to the VM actors and scans for stopped NeverStop VMs.

A host's verdict moves Connected -> Disconnected -> gone (all its guests, when its
power controller says it is off; the guests of some pools, under Force, once the
self-fencing window passed without a heartbeat) and back to Connected when it answers
``ha.host.check.successTimes`` pings in a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from actors.config import ConfigError, HaConfig
from actors.context import Behaviour, Context
from actors.inventory import MANAGER, Inventory, bmc_addr, host_addr, vm_addr
from actors.messages import (
    CheckHost,
    CheckHostReply,
    Claim,
    ConfigPush,
    Evacuate,
    HostBooted,
    HostEvent,
    HostViewChanged,
    Kick,
    Ping,
    PlaceReply,
    PlaceRequest,
    Pong,
    PowerQuery,
    PowerStatus,
    Release,
    Scan,
    Scannable,
    StopVm,
    UserDeleteNetwork,
    UserDetachNic,
    UserMaintenance,
    UserSetConfig,
    UserSetHa,
    UserStartVm,
    UserStopVm,
    Verdict,
    VerdictRequest,
    Verify,
)
from actors.placement import Capacity, NoPlace, choose_host
from actors.policy import manager_fence_window_s, self_fencing_on
from actors.states import VmState

PEERS_PER_CHECK = 3  # peers asked to probe a suspect host each round: bounded cost
PING_RETRY_S = 1.0  # pause before re-pinging after one failed ping


@dataclass(frozen=True)
class _PingTick:
    host: str
    epoch: int


@dataclass(frozen=True)
class _PingTimeout:
    host: str
    seq: int


@dataclass(frozen=True)
class _CheckTick:
    host: str
    epoch: int


@dataclass(frozen=True)
class _ScanTick:
    pass


@dataclass
class HostTracker:
    """What the manager knows about one host's liveness."""

    name: str
    connected: bool = True
    all_gone: bool = False
    gone_pools: set[str] = field(default_factory=set)
    pools_ok: tuple[str, ...] = ()
    ping_seq: int = 0
    ping_outstanding: int | None = None
    ping_epoch: int = 0
    failures: int = 0
    confirms: int = 0
    check_epoch: int = 0
    check_req: int = 0
    first_check_req: int = 0  # first check request of the current disconnection
    round_sent_t: float = 0.0
    replies: list[CheckHostReply] = field(default_factory=list)
    round_advanced: bool = False
    failed_rounds: int = 0
    hb_seq: dict[str, int] = field(default_factory=dict)  # pool -> last seq seen
    hb_seen_t: dict[str, float] = field(default_factory=dict)  # when that seq was first seen
    hb_read_t: dict[str, float] = field(default_factory=dict)  # latest read still showing it
    hb_armed: dict[str, int | None] = field(default_factory=dict)  # revision its fencer is armed under
    boot: str | None = None  # its current boot, from its last pong or boot announcement
    joined: bool = False  # it has answered a ping since this manager started
    grace_power_t: float = -1e9  # when its power controller was last asked while it was Booting

    def usable(self) -> bool:
        """It may be given VMs and asked about its peers: connected, and heard since the
        manager started (a host still booting has not said what its pools can do)."""
        return self.connected and self.joined

    def status(self) -> str:
        if self.connected:
            return "Connected" if self.joined else "Booting"
        if self.all_gone:
            return "PoweredOff"
        if self.gone_pools:
            return f"Fenced({','.join(sorted(self.gone_pools))})"
        return "Disconnected"


class HaManager(Behaviour):
    def __init__(self, inventory: Inventory, config: HaConfig,
                 maintenance: frozenset[str] = frozenset()) -> None:
        self.inventory = inventory
        self.config = config
        self.hosts = {h.name: h for h in inventory.hosts}
        self.pools = {p.name: p for p in inventory.pools}
        self.vms = {v.vm.name: v for v in inventory.vms}
        self.cluster_hosts: dict[str, list[str]] = {}
        for h in inventory.hosts:
            self.cluster_hosts.setdefault(h.cluster, []).append(h.name)
        self.trackers = {h.name: HostTracker(h.name, pools_ok=self._shared_pools(h.name))
                         for h in inventory.hosts}
        self.capacity = Capacity(self.hosts)
        self.home: dict[str, str] = {}
        self.by_home: dict[str, set[str]] = {h.name: set() for h in inventory.hosts}
        self.maintenance: set[str] = set(maintenance)
        self.evacuating: dict[str, set[str]] = {}  # host in maintenance -> VMs asked to leave it
        # VMs no host could take, by what they wait for: their own host (local storage) or
        # room in their cluster (shared). A change wakes only the VMs it can help.
        self.waiting: dict[str, set[str]] = {}  # "host:NAME" or "cluster:NAME" -> vms
        self.waiting_on: dict[str, str] = {}  # vm -> its key in waiting
        # VMs a scan can make act (Stopped or Unknown): a scan of a 20,000-VM datacenter
        # goes to these few, not to all. VM actors keep it current (Scannable).
        self.scannable: set[str] = {v.vm.name for v in inventory.vms
                                    if v.state in (VmState.STOPPED, VmState.UNKNOWN)}
        self.deleted_networks: set[tuple[str, str]] = set()
        self.next_req = 0
        self.started_t = 0.0  # when this manager started: the join grace counts from it

    def _shared_pools(self, host: str) -> tuple[str, ...]:
        return tuple(p for p in self.hosts[host].pools if self.pools[p].shared)

    # -- start ---------------------------------------------------------------------------------

    def on_start(self, ctx: Context) -> None:
        from actors.vm import VmActor  # the manager spawns its VM actors

        for init in self.inventory.vms:
            self._set_home(init.vm.name, init.host)
            if init.state in (VmState.RUNNING, VmState.UNKNOWN):
                for host in (init.host, *init.also_on):
                    self.capacity.reserve(init.vm, host)
            ctx.spawn(vm_addr(init.vm.name), VmActor(init, self.config))
        self.started_t = ctx.now()
        for name in sorted(self.hosts):
            tracker = self.trackers[name]
            # An agent that starts announces itself (HostBooted) and is pinged at once; beside
            # agents that already run (a restarted manager), the first pings are spread.
            ctx.set_timer(ctx.random.uniform(0, self.config.ping_interval_s), _PingTick(name, 0))
            tracker.ping_epoch = 0
            self._publish(ctx, tracker, quiet=True)  # Booting until its first pong
        ctx.set_timer(self.config.scan_interval_s, _ScanTick())
        for host in sorted(self.maintenance):  # a restart finishes the evacuations under way
            self._evacuate(ctx, host)
        push = ConfigPush(self.config)  # after a restart, hosts may hold an older config
        for name in sorted(self.hosts):
            ctx.send(host_addr(name), push)

    def _evacuate(self, ctx: Context, host: str) -> None:
        """Ask every VM homed on ``host`` to leave it; remembered, so that leaving
        maintenance can withdraw the request from those that could not leave yet."""
        vms = self.evacuating.setdefault(host, set())
        for vm in sorted(self.by_home[host]):
            vms.add(vm)
            ctx.send(vm_addr(vm), Evacuate(host))

    def _set_home(self, vm: str, host: str) -> None:
        old = self.home.get(vm)
        if old is not None:
            self.by_home[old].discard(vm)
        self.home[vm] = host
        self.by_home[host].add(vm)

    # -- dispatch ------------------------------------------------------------------------------

    def receive(self, ctx: Context, msg: object) -> None:
        if isinstance(msg, _PingTick):
            tracker = self.trackers[msg.host]
            if msg.epoch == tracker.ping_epoch:
                self._ping(ctx, tracker)
        elif isinstance(msg, Pong):
            self._pong(ctx, msg)
        elif isinstance(msg, _PingTimeout):
            self._ping_timeout(ctx, msg)
        elif isinstance(msg, HostBooted):
            self.trackers[msg.host].boot = msg.boot
            self._host_booted(ctx, msg.host)
        elif isinstance(msg, _CheckTick):
            self._check_tick(ctx, msg)
        elif isinstance(msg, CheckHostReply):
            self._check_reply(ctx, msg)
        elif isinstance(msg, PowerStatus):
            self._power_status(ctx, msg)
        elif isinstance(msg, PlaceRequest):
            self._place(ctx, msg)
        elif isinstance(msg, Release):
            if self.capacity.release(self.vms[msg.vm].vm, msg.host):
                self._kick_waiting(ctx, msg.host)
        elif isinstance(msg, Claim):
            self.capacity.reserve(self.vms[msg.vm].vm, msg.host)
            self._set_home(msg.vm, msg.host)
        elif isinstance(msg, VerdictRequest):
            t = self.trackers[msg.host]
            ctx.send(vm_addr(msg.vm), Verdict(msg.host, msg.req, t.connected,
                                              tuple(sorted(t.gone_pools)), t.all_gone))
        elif isinstance(msg, _ScanTick):
            for vm in sorted(self.scannable):
                ctx.send(vm_addr(vm), Scan())
            ctx.set_timer(self.config.scan_interval_s, _ScanTick())
        elif isinstance(msg, Scannable):
            if msg.scannable:
                self.scannable.add(msg.vm)
            else:
                self.scannable.discard(msg.vm)
        else:
            self._user(ctx, msg)

    # -- users ---------------------------------------------------------------------------------

    def _user(self, ctx: Context, msg: object) -> None:
        if isinstance(msg, (UserStopVm, UserStartVm, UserSetHa)):
            if msg.vm not in self.vms:
                ctx.log(f"manager: no VM named {msg.vm!r}")
                return
            if isinstance(msg, UserSetHa):
                init = self.vms[msg.vm]
                self.vms[msg.vm] = replace(init, level=msg.level)
            ctx.send(vm_addr(msg.vm), msg)
        elif isinstance(msg, UserSetConfig):
            try:
                self.config = self.config.with_key(msg.key, msg.value)
            except ConfigError as err:
                ctx.log(f"manager: config not changed: {err}")
                return
            push = ConfigPush(self.config)
            for vm in sorted(self.vms):
                ctx.send(vm_addr(vm), push)
            for host in sorted(self.hosts):
                ctx.send(host_addr(host), push)
        elif isinstance(msg, UserMaintenance):
            if msg.enter:
                self.maintenance.add(msg.host)
                self._evacuate(ctx, msg.host)
            elif msg.host in self.maintenance:
                self.maintenance.discard(msg.host)
                for vm in sorted(self.evacuating.pop(msg.host, set())):
                    ctx.send(vm_addr(vm), Evacuate(msg.host, cancel=True))  # one still under way stops
                self._kick_waiting(ctx, msg.host)
        elif isinstance(msg, UserDetachNic):
            ctx.log(f"manager: {msg.vm} detached from {msg.network}: no HA action")
        elif isinstance(msg, UserDeleteNetwork):
            self.deleted_networks.add((msg.cluster, msg.network))
            ctx.log(f"manager: {msg.network} deleted from {msg.cluster}: not probed any more")

    # -- placement -----------------------------------------------------------------------------

    def _place(self, ctx: Context, msg: PlaceRequest) -> None:
        init = self.vms[msg.vm]
        vm = init.vm
        reason = NoPlace.NO_CAPACITY
        candidates: list[str]
        if not vm.pool_shared:
            owner = self.pools[vm.pool].host or ""
            if owner in self.maintenance:
                reason, candidates = NoPlace.MAINTENANCE, []
            elif not self.trackers[owner].usable():
                reason, candidates = NoPlace.HOST_DOWN, []
            else:
                candidates = [owner]
        else:
            candidates = [
                h for h in self.cluster_hosts[vm.cluster]
                if h not in msg.exclude and h not in self.maintenance
                and self.trackers[h].usable() and vm.pool in self.trackers[h].pools_ok
            ]
        host = choose_host(vm, self.capacity, candidates, msg.prefer)
        if host is None:
            self._wait(msg.vm, f"host:{self.pools[vm.pool].host}" if not vm.pool_shared
                       else f"cluster:{vm.cluster}")
            ctx.send(vm_addr(msg.vm), PlaceReply(msg.vm, msg.req, None, reason.value))
            return
        self._unwait(msg.vm)
        self.capacity.reserve(vm, host)
        self._set_home(msg.vm, host)
        ctx.send(vm_addr(msg.vm), PlaceReply(msg.vm, msg.req, host, boot=self.trackers[host].boot))

    def _wait(self, vm: str, key: str) -> None:
        self._unwait(vm)
        self.waiting.setdefault(key, set()).add(vm)
        self.waiting_on[vm] = key

    def _unwait(self, vm: str) -> None:
        key = self.waiting_on.pop(vm, None)
        if key is not None:
            self.waiting[key].discard(vm)

    def _kick_waiting(self, ctx: Context, host: str) -> None:
        """``host`` has room now, or is usable again: wake the VMs waiting for it."""
        for key in (f"host:{host}", f"cluster:{self.hosts[host].cluster}"):
            for vm in sorted(self.waiting.pop(key, set())):
                del self.waiting_on[vm]
                ctx.send(vm_addr(vm), Kick())

    # -- pings ---------------------------------------------------------------------------------

    def _schedule_ping(self, ctx: Context, t: HostTracker, delay_s: float) -> None:
        t.ping_epoch += 1
        ctx.set_timer(delay_s, _PingTick(t.name, t.ping_epoch))

    def _ping(self, ctx: Context, t: HostTracker) -> None:
        t.ping_seq += 1
        t.ping_outstanding = t.ping_seq
        ctx.send(host_addr(t.name), Ping(t.ping_seq))
        ctx.set_timer(self.config.ping_timeout_s, _PingTimeout(t.name, t.ping_seq))

    def _pong(self, ctx: Context, msg: Pong) -> None:
        t = self.trackers[msg.host]
        if msg.seq != t.ping_outstanding:
            return
        t.ping_outstanding = None
        t.failures = 0
        t.pools_ok = msg.pools_ok
        t.boot = msg.boot
        if not t.joined:
            t.joined = True
            if t.connected:
                self._publish(ctx, t, quiet=True)
                self._kick_waiting(ctx, t.name)  # VMs that found no usable host may go there now
        if msg.config_revision != self.config.revision:
            ctx.send(host_addr(msg.host), ConfigPush(self.config))  # the last push was lost
        if msg.guests_known:  # a hung hypervisor's list proves nothing
            self._destroy_strays(ctx, msg)
            self._cross_check(ctx, msg)
        if t.connected:
            self._schedule_ping(ctx, t, self.config.ping_interval_s)
            return
        t.confirms += 1
        if t.confirms >= self.config.host_check_success_times:
            self._reconnect(ctx, t)
        else:
            self._schedule_ping(ctx, t, self.config.host_check_success_interval_s)

    def _cross_check(self, ctx: Context, msg: Pong) -> None:
        """Polling backs up events: a VM holding capacity on this host that the host does
        not list may have died unseen; its actor asks the host if it believes it runs."""
        holders = self.capacity.holders.get(msg.host, set())
        for vm in sorted(self.by_home[msg.host].difference(msg.running)):  # sorted: not by hash
            if vm in holders:
                ctx.send(vm_addr(vm), Verify(msg.host))

    def _destroy_strays(self, ctx: Context, msg: Pong) -> None:
        """A guest running on a host where its VM holds no capacity is a copy HA gave up
        (its host was declared gone and the VM recovered elsewhere): destroy it. During a
        start or a migration the VM holds a slot on each host involved, so none is a stray."""
        holders = self.capacity.holders.get(msg.host, set())
        for vm in msg.running:
            if vm in holders or vm not in self.vms:
                continue
            slots = sorted(self.capacity.slots.get(vm, ()))
            ctx.log(f"manager: stray copy of {vm} on {msg.host} (holds {slots}): destroying")
            self.next_req += 1
            ctx.send(host_addr(msg.host), StopVm(vm, self.next_req, MANAGER, force=True))

    def _ping_timeout(self, ctx: Context, msg: _PingTimeout) -> None:
        t = self.trackers[msg.host]
        if msg.seq != t.ping_outstanding:
            return
        t.ping_outstanding = None
        if self._booting(ctx, t):
            self._schedule_ping(ctx, t, PING_RETRY_S)  # still booting: its silence is not counted
            if self.hosts[t.name].power_controller and \
                    ctx.now() - t.grace_power_t >= self.config.host_check_interval_s:
                # but a host that is off is not booting: its controller may say so at once
                t.grace_power_t = ctx.now()
                self.next_req += 1
                ctx.send(bmc_addr(t.name), PowerQuery(t.name, self.next_req, MANAGER))
            return
        t.failures += 1
        t.confirms = 0
        if not t.connected:
            self._schedule_ping(ctx, t, self.config.host_check_interval_s)
        elif t.failures >= self.config.ping_max_failure:
            self._disconnect(ctx, t)
        else:
            self._schedule_ping(ctx, t, PING_RETRY_S)

    def _booting(self, ctx: Context, t: HostTracker) -> bool:
        """Not heard since this manager started and within the join grace. A host its power
        controller proved off is disconnected, and only a pong, which joins it, reconnects it."""
        return t.connected and not t.joined and ctx.now() - self.started_t < self.config.host_join_grace_s

    def _host_booted(self, ctx: Context, host: str) -> None:
        """A host (re)started its agent: its guests may be gone; look at once."""
        t = self.trackers[host]
        if t.connected:
            self._broadcast(ctx, t)  # VM actors ask it what really runs
        self._schedule_ping(ctx, t, 0.0)

    def _publish(self, ctx: Context, t: HostTracker, quiet: bool = False) -> None:
        ctx.publish(HostViewChanged(t.name, t.status()))
        if not quiet:  # joining is routine; only verdicts are logged
            ctx.log(f"manager: {t.name} is {t.status()}")

    def _broadcast(self, ctx: Context, t: HostTracker) -> None:
        event = HostEvent(t.name, t.connected, tuple(sorted(t.gone_pools)), t.all_gone)
        for vm in sorted(self.by_home[t.name]):
            ctx.send(vm_addr(vm), event)

    def _disconnect(self, ctx: Context, t: HostTracker) -> None:
        t.connected = False
        t.failed_rounds = 0
        t.replies = []
        t.hb_seq.clear()
        t.hb_seen_t.clear()
        t.hb_read_t.clear()
        self._publish(ctx, t)
        self._broadcast(ctx, t)
        t.check_epoch += 1
        t.check_req = 0
        t.first_check_req = self.next_req + 1
        ctx.set_timer(0.0, _CheckTick(t.name, t.check_epoch))
        self._schedule_ping(ctx, t, self.config.host_check_interval_s)

    def _reconnect(self, ctx: Context, t: HostTracker) -> None:
        t.connected = True
        t.all_gone = False
        t.gone_pools.clear()
        t.check_epoch += 1  # ends the check rounds
        self._publish(ctx, t)
        self._broadcast(ctx, t)
        self._kick_waiting(ctx, t.name)
        self._schedule_ping(ctx, t, self.config.ping_interval_s)

    # -- checks of a disconnected host -----------------------------------------------------------

    def _check_tick(self, ctx: Context, msg: _CheckTick) -> None:
        t = self.trackers[msg.host]
        if msg.epoch != t.check_epoch or t.connected or t.all_gone:
            return
        if t.check_req:
            self._evaluate_round(ctx, t)
        self._start_round(ctx, t)
        ctx.set_timer(self.config.host_check_interval_s, _CheckTick(t.name, t.check_epoch))

    def _start_round(self, ctx: Context, t: HostTracker) -> None:
        info = self.hosts[t.name]
        self.next_req += 1
        t.check_req = self.next_req
        t.round_sent_t = ctx.now()
        t.replies = []
        t.round_advanced = False
        if info.power_controller:
            ctx.send(bmc_addr(t.name), PowerQuery(t.name, t.check_req, MANAGER))
        peers = [h for h in self.cluster_hosts[info.cluster]
                 if h != t.name and self.trackers[h].usable()]
        if len(peers) > PEERS_PER_CHECK:
            peers = sorted(ctx.random.sample(peers, PEERS_PER_CHECK))
        pools = self._shared_pools(t.name)
        for peer in peers:
            networks = tuple(
                n for n in info.networks
                if n in self.hosts[peer].networks and (info.cluster, n.value) not in self.deleted_networks
            )
            ctx.send(host_addr(peer), CheckHost(t.name, t.check_req, networks, pools))

    def _check_reply(self, ctx: Context, msg: CheckHostReply) -> None:
        t = self.trackers[msg.target]
        if msg.req != t.check_req or t.connected:
            return
        t.replies.append(msg)
        now = ctx.now()
        for pool, seq, armed in msg.heartbeats:
            t.hb_armed[pool] = armed
            seen = t.hb_seq.get(pool)
            if seq != seen:  # any change, even downwards (a rebooted host), is a write
                if seen is not None:
                    t.round_advanced = True
                t.hb_seq[pool] = seq
                t.hb_seen_t[pool] = now
                t.hb_read_t.pop(pool, None)
            else:
                t.hb_read_t[pool] = max(t.hb_read_t.get(pool, t.round_sent_t), t.round_sent_t)

    def _evaluate_round(self, ctx: Context, t: HostTracker) -> None:
        """Count a failed round when enough peers agree the host is unreachable and its
        heartbeat stood still; under Force, declare pools fenced once the window passed."""
        if t.replies:
            unreachable = sum(1 for r in t.replies if not r.reachable)
            if t.round_advanced or unreachable / len(t.replies) < self.config.host_check_success_ratio:
                t.failed_rounds = 0
            else:
                t.failed_rounds += 1
        if t.failed_rounds < self.config.host_check_max_attempts or not self_fencing_on(self.config):
            return
        window_s = manager_fence_window_s(self.config)
        timeout_s = self.config.self_fencer_storage_timeout_s
        newly = set()
        for pool in self._shared_pools(t.name):
            read_t = t.hb_read_t.get(pool)
            if read_t is None or pool in t.gone_pools:
                continue
            if t.hb_armed.get(pool) != self.config.revision:
                continue  # its fencer is off, or armed under settings we no longer hold
            if read_t - timeout_s - t.hb_seen_t[pool] >= window_s:
                newly.add(pool)
        if newly:
            t.gone_pools |= newly
            self._publish(ctx, t)
            self._broadcast(ctx, t)

    def _power_status(self, ctx: Context, msg: PowerStatus) -> None:
        t = self.trackers[msg.host]
        if not msg.powered_on and self._booting(ctx, t):
            # Off, not booting: judged now. The check round that starts asks the controller
            # again, and that answer, of this disconnection, is the proof.
            ctx.log(f"manager: {t.name} has not joined and its power controller says off")
            self._disconnect(ctx, t)
            return
        if msg.powered_on or t.connected or t.all_gone or msg.req < t.first_check_req:
            return  # an answer from an earlier disconnection says nothing about this one
        t.all_gone = True
        t.check_epoch += 1
        self._publish(ctx, t)
        self._broadcast(ctx, t)

