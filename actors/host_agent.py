"""The agent on every compute host: guest operations, liveness answers, probes of
peers, and the storage heartbeat with its self-fencer and the watchdog that stands in for
the fencer if the agent itself dies.

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
    FailureAck,
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
from actors.policy import self_fencing_on
from actors.states import Network, StopReason

ANSWERS_KEPT = 1024  # answers remembered for repeated orders; bounded memory
FAILURE_RESEND_S = 0.5  # a failure report is repeated this often until acknowledged
FAILURE_RESENDS_MAX = 40  # then the manager's ping cross-check is the backstop


@dataclass(frozen=True)
class _ResendFailure:
    vm: str
    seq: int  # the report this chain repeats; a newer report runs its own chain
    left: int


@dataclass(frozen=True)
class _HeartbeatTick:
    """Time for the next heartbeat round. One instance serves every agent: a tick never
    reaches a later incarnation (the runtime drops what was meant for a dead one)."""


_HEARTBEAT_TICK = _HeartbeatTick()


@dataclass(frozen=True)
class _CheckDone:
    req: int


@dataclass
class _PendingCheck:
    reply_to_req: int
    target: str
    pools: tuple[str, ...]
    reachable: set[Network] = field(default_factory=set)
    heartbeats: dict[str, tuple[int, int | None]] = field(default_factory=dict)


@dataclass(slots=True)
class _PoolBeat:
    """The storage heartbeat on one shared pool, as this incarnation of the agent sees it.

    One small record per pool, with the newest write in flight in two fields, rather than
    a dict per field keyed by pool and a dict of writes in flight: a heartbeat round reads
    all of it, for every host in turn, and in a large cluster each record is out of the
    processor's caches by the time its host's turn comes again. A write is acknowledged
    within milliseconds and the next goes out seconds later, so older writes are in
    flight only while the storage is slow.
    """

    pool: str
    address: str  # the pool actor's, made once: a send finds it by identity
    failed: int = 0  # writes in a row not acknowledged in time
    acked: bool = False  # a write of this incarnation was acknowledged in time
    newest_seq: int | None = None  # the newest write in flight
    newest_sent_at: float = 0.0
    older: dict[int, float] | None = None  # seq -> sent at: writes in flight before it

    def sent(self, seq: int, now: float) -> None:
        if self.newest_seq is not None:
            if self.older is None:
                self.older = {}
            self.older[self.newest_seq] = self.newest_sent_at
        self.newest_seq, self.newest_sent_at = seq, now

    def acknowledged(self, seq: int) -> float | None:
        """When write ``seq`` was sent, if it was still in flight (it no longer is)."""
        if seq == self.newest_seq:
            self.newest_seq = None
            return self.newest_sent_at
        return None if self.older is None else self.older.pop(seq, None)

    def expire(self, now: float, timeout_s: float) -> None:
        """Count every write in flight for longer than ``timeout_s`` as failed: too late
        to count as written. At most timeout / interval writes are in flight."""
        if self.older:
            for seq in [q for q, sent_at in self.older.items() if now - sent_at > timeout_s]:
                del self.older[seq]
                self.failed += 1
        if self.newest_seq is not None and now - self.newest_sent_at > timeout_s:
            self.newest_seq = None
            self.failed += 1


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
        self.hb_seq = 0
        self.beats: tuple[_PoolBeat, ...] = ()  # one per shared pool, in order, from on_start
        self.checks: dict[int, _PendingCheck] = {}
        self.next_check = 0
        self.ops: dict[int, _PendingOp] = {}
        self.inflight: set[tuple[str, int]] = set()  # (reply_to, req) being worked on
        self.answered: dict[tuple[str, int], OpReply] = {}  # recent answers, for repeats
        self.next_token = 0
        self.expected_stops: set[str] = set()  # guests we are stopping or moving on purpose
        self.unacked: dict[str, GuestFailed] = {}  # failure reports not yet acknowledged
        self.fenced: set[str] = set()  # guests killed and reported by the fencer, until restarted here
        self.failure_seq = 0  # set to a random start in on_start: a rebooted host numbers anew
        self.boot = ""  # the host's boot, read in on_start
        self.started_by: dict[str, int] = {}  # vm -> req of the last start order carried out

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self, ctx: Context) -> None:
        self.beats = tuple(_PoolBeat(p, pool_addr(p)) for p in self.shared_pools)
        self.failure_seq = ctx.random.randrange(1 << 40)
        self.boot = self._hv(ctx).boot_id()
        ctx.send(MANAGER, HostBooted(self.name, self.boot))
        if self.shared_pools:
            self._heartbeat(ctx)

    def receive(self, ctx: Context, msg: object) -> None:
        if isinstance(msg, Ping):
            hv = self._hv(ctx)
            ctx.send(MANAGER, Pong(self.name, msg.seq, tuple(sorted(hv.running())),
                                   self._pools_ok(), self.config.revision, hv.answering(), self.boot))
        elif isinstance(msg, _HeartbeatTick):
            self._heartbeat(ctx)
        elif isinstance(msg, HeartbeatAck):
            beat = self._beat(msg.pool)
            sent_at = None if beat is None else beat.acknowledged(msg.seq)
            if beat is not None and sent_at is not None:
                if ctx.now() - sent_at <= self.config.self_fencer_storage_timeout_s:
                    beat.failed = 0
                    if not beat.acked:
                        beat.acked = True
                        if self_fencing_on(self.config):
                            # A restarted agent takes the watchdog over as soon as it may,
                            # not a heartbeat interval later: its predecessor's last pet
                            # may be running out.
                            self._pet_watchdog(ctx)
                else:
                    beat.failed += 1  # acknowledged too late: a failed write
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
                check.heartbeats[msg.pool] = (msg.seq, msg.armed)
        elif isinstance(msg, _CheckDone):
            self._finish_check(ctx, msg.req)
        elif isinstance(msg, ConfigPush):
            self.config = msg.config
            if not self_fencing_on(self.config) and ctx.watchdog is not None:
                ctx.watchdog.disarm()
            ctx.publish(msg)  # the runtime may record which config each host applied
        elif isinstance(msg, FailureAck):
            report = self.unacked.get(msg.vm)
            if report is not None and report.seq == msg.seq:
                del self.unacked[msg.vm]
        elif isinstance(msg, _ResendFailure):
            report = self.unacked.get(msg.vm)
            if report is None or report.seq != msg.seq:
                pass  # acknowledged, or superseded by a newer report with its own chain
            elif msg.left > 0:
                ctx.send(vm_addr(msg.vm), report)
                ctx.set_timer(FAILURE_RESEND_S, _ResendFailure(msg.vm, msg.seq, msg.left - 1))
            else:
                del self.unacked[msg.vm]

    # -- storage heartbeat and self-fencing --------------------------------------------------

    def _heartbeat(self, ctx: Context) -> None:
        """One heartbeat round: count writes whose timeout passed unacknowledged, fence
        after ``maxAttempts`` of them in a row, pet the watchdog, then write again."""
        now = ctx.now()
        timeout_s = self.config.self_fencer_storage_timeout_s
        fencing = self_fencing_on(self.config)
        for beat in self.beats:
            beat.expire(now, timeout_s)
            if fencing and not self._fresh(beat):
                self._fence(ctx, beat.pool)
        armed = self.config.revision if fencing and self._pet_watchdog(ctx) else None
        for beat in self.beats:
            self.hb_seq += 1
            beat.sent(self.hb_seq, now)
            ctx.send(beat.address, HeartbeatWrite(self.name, self.hb_seq, armed), Network.STORAGE)
        ctx.set_timer(self.config.self_fencer_interval_s, _HEARTBEAT_TICK)

    def _pet_watchdog(self, ctx: Context) -> bool:
        """Pet the watchdog if this incarnation may: whether the host's guests are now
        covered if the agent dies, which the heartbeat then claims (``armed``).

        Not before every pool has acknowledged a write of this incarnation, or been fenced:
        an agent that restarts while its storage is cut off knows nothing of its previous
        incarnation's last write, and a pet would push the reset that this incarnation's
        predecessor armed past the deadline the manager counts from that write.
        """
        watchdog = ctx.watchdog
        if watchdog is None:
            return False
        if any(not beat.acked and self._fresh(beat) for beat in self.beats):
            return False
        return watchdog.pet(self.config.watchdog_timeout_s)

    def _fence(self, ctx: Context, pool: str) -> None:
        """Kill every guest whose disk is on ``pool``, and void any start on it still in
        the hypervisor's hands: another host may soon start those VMs."""
        hv = self._hv(ctx)
        # Every guest on the pool, also one being stopped or migrated away: a migration
        # that fails now leaves a dead guest its VM actor would think alive.
        victims = [vm for vm, vm_pool in sorted(hv.running().items())
                   if vm_pool == pool and vm not in self.fenced]  # a hung daemon's list lags
        hv.fence(pool)
        for vm in victims:
            ctx.log(f"{self.name}: self-fencer kills {vm}: no heartbeat on {pool}")
            self.expected_stops.add(vm)
            self.fenced.add(vm)
            self._report_failure(ctx, vm, StopReason.FENCED)

    def _beat(self, pool: str) -> _PoolBeat | None:
        for beat in self.beats:  # one or two: a scan beats a dict's lookup
            if beat.pool == pool:
                return beat
        return None

    def _fresh(self, beat: _PoolBeat) -> bool:
        """Whether fewer than ``maxAttempts`` writes in a row failed on the pool."""
        return beat.failed < self.config.self_fencer_max_attempts

    def _pools_ok(self) -> tuple[str, ...]:
        return tuple(beat.pool for beat in self.beats if self._fresh(beat))

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
        """Carry out an order once. VM actors resend orders over lossy links: a repeat
        of one in progress is dropped, a repeat of one done gets the same answer again."""
        key = (msg.reply_to, msg.req)
        if not isinstance(msg, QueryVm):
            if key in self.inflight:
                return
            if key in self.answered:
                ctx.send(msg.reply_to, self.answered[key])
                return
        hv = self._hv(ctx)
        vm = msg.vm.name if isinstance(msg, StartVm) else msg.vm
        running = vm in hv.running()
        if isinstance(msg, QueryVm):
            # Say nothing while the answer would be stale: the daemon hangs, or an order
            # for this guest is still in its hands (a start may be booting it right now).
            busy = any(op.vm == vm for op in self.ops.values())
            if hv.answering() and not busy:
                ctx.send(msg.reply_to, OpReply(self.name, vm, msg.req, running))
            return
        if isinstance(msg, StartVm):
            self.unacked.pop(vm, None)  # a new start means the last failure was seen
            self.fenced.discard(vm)
        refusal = self._refusal(ctx, msg, running)
        if refusal is not None:
            self._answer(ctx, key, OpReply(self.name, vm, msg.req, refusal == "", refusal))
            return
        token = self._token()
        self.ops[token] = _PendingOp(msg.reply_to, vm, msg.req)
        self.inflight.add(key)
        if isinstance(msg, StartVm):
            self.expected_stops.discard(vm)
            self.started_by[vm] = msg.req
            hv.start(msg.vm, token, msg.cause)
        elif isinstance(msg, StopVm):
            self.expected_stops.add(vm)
            hv.stop(vm, token, force=msg.force)
        else:
            self.expected_stops.add(vm)
            hv.migrate(vm, msg.dest, token)

    def _refusal(self, ctx: Context, msg: StartVm | StopVm | MigrateVm, running: bool) -> str | None:
        """Answer an order at once when there is nothing to do ("") or it cannot be done
        (the reason); None when the hypervisor has work to do."""
        if isinstance(msg, StartVm):
            if running:
                return ""
            if msg.cause == "ha" and not self.config.enable:
                return "HA is switched off"
            if msg.vm.pool_shared and msg.vm.pool not in self._pools_ok():
                return f"storage pool {msg.vm.pool} is not reachable from {self.name}"
            if msg.for_boot is not None and msg.for_boot != self.boot:
                return f"ordered for an earlier boot of {self.name}"
        elif isinstance(msg, StopVm):
            return "" if not running else None
        elif not running:
            return "not running here"
        return None

    def _answer(self, ctx: Context, key: tuple[str, int], reply: OpReply) -> None:
        """Send an order's answer and remember it, so that a repeat gets the same one."""
        self.answered[key] = reply
        while len(self.answered) > ANSWERS_KEPT:
            del self.answered[next(iter(self.answered))]  # oldest first: dicts keep order
        ctx.send(key[0], reply)

    def _op_done(self, ctx: Context, msg: HvDone) -> None:
        op = self.ops.pop(msg.token, None)
        if op is None:
            return
        key = (op.reply_to, op.req)
        self.inflight.discard(key)
        self._answer(ctx, key, OpReply(self.name, op.vm, op.req, msg.ok, msg.error))

    def _guest_stopped(self, ctx: Context, msg: GuestStopped) -> None:
        """Only failures are news: deliberate stops are answered through their operation."""
        if msg.vm in self.expected_stops:
            self.expected_stops.discard(msg.vm)
            return
        if msg.reason.is_failure:
            self._report_failure(ctx, msg.vm, msg.reason)

    def _report_failure(self, ctx: Context, vm: str, reason: StopReason) -> None:
        self.failure_seq += 1
        report = GuestFailed(self.name, vm, reason, self.failure_seq, self.started_by.pop(vm, None))
        self.unacked[vm] = report
        ctx.send(vm_addr(vm), report)
        ctx.set_timer(FAILURE_RESEND_S, _ResendFailure(vm, report.seq, FAILURE_RESENDS_MAX))

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
            heartbeats=tuple((pool, seq, armed) for pool, (seq, armed) in sorted(check.heartbeats.items())),
        )
        ctx.send(MANAGER, reply)
