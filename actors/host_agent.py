"""The agent on every compute host: guest operations, liveness answers, probes of
peers, and the storage heartbeat with its self-fencer.

It holds no HA intent: that lives with the manager. A host that restarts starts this
behaviour afresh; what it knows about guests comes from its hypervisor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.config import HaConfig
from actors.context import Behaviour, Context, HypervisorPort
from actors.inventory import MANAGER, host_addr, pool_addr, vm_addr
from actors.messages import (
    CheckHost,
    CheckHostReply,
    ConfigPush,
    GuestFailed,
    GuestStopped,
    HeartbeatAck,
    HeartbeatRead,
    HeartbeatValue,
    HeartbeatWrite,
    HostBooted,
    HvDone,
    MigrateVm,
    OpReply,
    Ping,
    Pong,
    ProbePing,
    ProbePong,
    QueryVm,
    StartVm,
    StopVm,
)
from actors.policy import host_fence_after_s, self_fencing_on
from actors.states import Network, StopReason


@dataclass(frozen=True)
class _HeartbeatTick:
    epoch: int


@dataclass(frozen=True)
class _CheckDone:
    req: int


@dataclass
class _PendingCheck:
    reply_to_req: int
    target: str
    pools: tuple[str, ...]
    reachable: set[Network] = field(default_factory=set)
    heartbeats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _PendingOp:
    reply_to: str
    vm: str
    req: int


class HostAgent(Behaviour):
    def __init__(self, name: str, shared_pools: tuple[str, ...], config: HaConfig) -> None:
        self.name = name
        self.shared_pools = shared_pools
        self.config = config
        self.epoch = 0
        self.hb_seq = 0
        self.hb_pending: dict[str, dict[int, float]] = {}  # pool -> seq -> sent at, in flight
        self.hb_last_ok: dict[str, float] = {}  # pool -> send time of last acked write
        self.checks: dict[int, _PendingCheck] = {}
        self.next_check = 0
        self.ops: dict[int, _PendingOp] = {}
        self.next_token = 0
        self.expected_stops: set[str] = set()  # guests we are stopping or moving on purpose

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self, ctx: Context) -> None:
        now = ctx.now()
        self.hb_last_ok = {p: now for p in self.shared_pools}
        ctx.send(MANAGER, HostBooted(self.name))
        if self.shared_pools:
            self._heartbeat(ctx)

    def receive(self, ctx: Context, msg: object) -> None:
        if isinstance(msg, Ping):
            ctx.send(MANAGER, Pong(self.name, msg.seq, tuple(sorted(self._hv(ctx).running())),
                                   self._pools_ok(ctx)))
        elif isinstance(msg, _HeartbeatTick):
            if msg.epoch == self.epoch:
                self._heartbeat(ctx)
        elif isinstance(msg, HeartbeatAck):
            sent_at = self.hb_pending.get(msg.pool, {}).pop(msg.seq, None)
            if sent_at is not None and ctx.now() - sent_at <= self.config.self_fencer_storage_timeout_s:
                self.hb_last_ok[msg.pool] = max(self.hb_last_ok[msg.pool], sent_at)
        elif isinstance(msg, (StartVm, StopVm, MigrateVm, QueryVm)):
            self._guest_op(ctx, msg)
        elif isinstance(msg, HvDone):
            self._op_done(ctx, msg)
        elif isinstance(msg, GuestStopped):
            self._guest_stopped(ctx, msg)
        elif isinstance(msg, CheckHost):
            self._start_check(ctx, msg)
        elif isinstance(msg, ProbePing):
            ctx.send(msg.reply_to, ProbePong(self.name, msg.req, msg.network), msg.network)
        elif isinstance(msg, ProbePong):
            check = self.checks.get(msg.req)
            if check is not None:
                check.reachable.add(msg.network)
        elif isinstance(msg, HeartbeatValue):
            check = self.checks.get(msg.req)
            if check is not None:
                check.heartbeats[msg.pool] = msg.seq
        elif isinstance(msg, _CheckDone):
            self._finish_check(ctx, msg.req)
        elif isinstance(msg, ConfigPush):
            self.config = msg.config

    # -- storage heartbeat and self-fencing --------------------------------------------------

    def _heartbeat(self, ctx: Context) -> None:
        """One heartbeat round: fence if a pool went silent too long, then write again."""
        now = ctx.now()
        fence_after_s = host_fence_after_s(self.config)
        for pool in self.shared_pools:
            stale = now - self.hb_last_ok[pool] >= fence_after_s
            if stale and self_fencing_on(self.config):
                self._fence(ctx, pool)
            pending = self.hb_pending.setdefault(pool, {})
            timeout_s = self.config.self_fencer_storage_timeout_s
            for seq in [q for q, sent in pending.items() if now - sent > timeout_s]:
                del pending[seq]  # too late to count: bounded by timeout / interval entries
            self.hb_seq += 1
            pending[self.hb_seq] = now
            ctx.send(pool_addr(pool), HeartbeatWrite(self.name, self.hb_seq), Network.STORAGE)
        ctx.set_timer(self.config.self_fencer_interval_s, _HeartbeatTick(self.epoch))

    def _fence(self, ctx: Context, pool: str) -> None:
        """Kill every guest whose disk is on ``pool``: another host may soon start it."""
        hv = self._hv(ctx)
        for vm, vm_pool in sorted(hv.running().items()):
            if vm_pool == pool and vm not in self.expected_stops:
                ctx.log(f"{self.name}: self-fencer kills {vm}: no heartbeat on {pool}")
                self.expected_stops.add(vm)
                hv.stop(vm, self._token(), force=True, fence=True)
                ctx.send(vm_addr(vm), GuestFailed(self.name, vm, StopReason.FENCED))

    def _pools_ok(self, ctx: Context) -> tuple[str, ...]:
        now = ctx.now()
        limit_s = host_fence_after_s(self.config)
        return tuple(p for p in self.shared_pools if now - self.hb_last_ok[p] < limit_s)

    # -- guest operations ----------------------------------------------------------------------

    def _hv(self, ctx: Context) -> HypervisorPort:
        hv = ctx.hypervisor
        if hv is None:
            raise RuntimeError(f"{self.name}: host agent runs without a hypervisor port")
        return hv

    def _token(self) -> int:
        self.next_token += 1
        return self.next_token

    def _guest_op(self, ctx: Context, msg: StartVm | StopVm | MigrateVm | QueryVm) -> None:
        hv = self._hv(ctx)
        vm = msg.vm.name if isinstance(msg, StartVm) else msg.vm
        running = vm in hv.running()
        if isinstance(msg, QueryVm) or (isinstance(msg, StartVm) and running) or (
            isinstance(msg, StopVm) and not running
        ):
            ok = running if isinstance(msg, QueryVm) else True
            ctx.send(msg.reply_to, OpReply(self.name, vm, msg.req, ok))
            return
        if isinstance(msg, MigrateVm) and not running:
            ctx.send(msg.reply_to, OpReply(self.name, vm, msg.req, False, "not running here"))
            return
        if isinstance(msg, StartVm) and msg.vm.pool_shared and msg.vm.pool not in self._pools_ok(ctx):
            error = f"storage pool {msg.vm.pool} is not reachable from {self.name}"
            ctx.send(msg.reply_to, OpReply(self.name, vm, msg.req, False, error))
            return
        token = self._token()
        self.ops[token] = _PendingOp(msg.reply_to, vm, msg.req)
        if isinstance(msg, StartVm):
            self.expected_stops.discard(vm)
            hv.start(msg.vm, token, msg.cause)
        elif isinstance(msg, StopVm):
            self.expected_stops.add(vm)
            hv.stop(vm, token, force=msg.force)
        else:
            self.expected_stops.add(vm)
            hv.migrate(vm, msg.dest, token)

    def _op_done(self, ctx: Context, msg: HvDone) -> None:
        op = self.ops.pop(msg.token, None)
        if op is not None:
            ctx.send(op.reply_to, OpReply(self.name, op.vm, op.req, msg.ok, msg.error))

    def _guest_stopped(self, ctx: Context, msg: GuestStopped) -> None:
        """Only failures are news: deliberate stops are answered through their operation."""
        if msg.vm in self.expected_stops:
            self.expected_stops.discard(msg.vm)
            return
        if msg.reason.is_failure:
            ctx.send(vm_addr(msg.vm), GuestFailed(self.name, msg.vm, msg.reason))

    # -- probing a suspect peer ------------------------------------------------------------------

    def _start_check(self, ctx: Context, msg: CheckHost) -> None:
        self.next_check += 1
        req = self.next_check
        self.checks[req] = _PendingCheck(msg.req, msg.target, msg.pools)
        for network in msg.networks:
            ctx.send(host_addr(msg.target), ProbePing(ctx.address, req, network), network)
        for pool in msg.pools:
            ctx.send(pool_addr(pool), HeartbeatRead(msg.target, req, ctx.address), Network.STORAGE)
        timeout_s = min(self.config.ping_timeout_s, self.config.host_check_interval_s * 0.8)
        ctx.set_timer(timeout_s, _CheckDone(req))

    def _finish_check(self, ctx: Context, req: int) -> None:
        check = self.checks.pop(req, None)
        if check is None:
            return
        reply = CheckHostReply(
            peer=self.name,
            target=check.target,
            req=check.reply_to_req,
            reachable=tuple(sorted(check.reachable, key=lambda n: n.value)),
            heartbeats=tuple(sorted(check.heartbeats.items())),
        )
        ctx.send(MANAGER, reply)
