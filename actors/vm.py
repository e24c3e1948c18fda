"""One actor per VM, on the management node: the VM's lifecycle as users see it.

It owns the VM's HA intent (level, "do not restart") and drives guest operations on
host agents directly; the manager tells it about hosts and hands out capacity. The
invariant it keeps: it orders a start on another host only after the manager has said
that the previous host's copy is provably gone (powered off, or fenced).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from actors.config import HaConfig
from actors.context import Behaviour, Context
from actors.durable import STOP_DONE
from actors.inventory import MANAGER, VmInit, host_addr
from actors.messages import (
    Claim,
    ConfigPush,
    Evacuate,
    FailureAck,
    GuestFailed,
    HostEvent,
    Kick,
    MigrateVm,
    OpReply,
    PlaceReply,
    PlaceRequest,
    QueryVm,
    Release,
    Scan,
    Scannable,
    StartVm,
    StopVm,
    UserSetHa,
    UserStartVm,
    UserStopVm,
    Verdict,
    VerdictRequest,
    Verify,
    VmViewChanged,
)
from actors.placement import NoPlace
from actors.states import HaLevel, StopReason, VmState

START_TIMEOUT_S = 120.0  # a start not answered by then: the guest may or may not run
STOP_TIMEOUT_S = 60.0
MIGRATE_TIMEOUT_S = 600.0
SCANNABLE = frozenset({VmState.STOPPED, VmState.UNKNOWN})  # states a Scan can act on
RESEND_S = 1.0  # an order not yet answered is sent again: links lose messages; agents dedupe


class Op(Enum):
    """The one operation a VM actor may have in flight."""

    NONE = "none"
    PLACE = "place"  # waiting for the manager to pick a host for a start
    START = "start"
    STOP = "stop"  # a user's (or maintenance) stop
    PLACE_MIGRATE = "place-migrate"
    MIGRATE = "migrate"
    QUERY = "query"  # asking the host whether the guest runs there
    VERDICT = "verdict"  # asking the manager what it knows of the host


@dataclass(frozen=True)
class _Timeout:
    req: int


@dataclass(frozen=True)
class _Resend:
    req: int


@dataclass(frozen=True)
class _Retry:
    epoch: int


@dataclass(frozen=True)
class _Poll:
    epoch: int


class VmActor(Behaviour):
    def __init__(self, init: VmInit, config: HaConfig) -> None:
        self.vm = init.vm
        self.name = init.vm.name
        self.level = init.level
        self.config = config
        self.state = init.state
        self.host = init.host  # where it runs, or its home host while stopped
        self.no_restart = init.no_restart
        self.op = Op.NONE
        self.req = 0  # no operation yet; the first draws a random start (see _begin)
        self.cause = "ha"
        self.migrate_dest = ""
        self.retry_delay_s = config.retry_delay_s
        self.retry_epoch = 0
        self.retry_pending = False
        self.host_down_cycle = False  # its only host is down: repeat Unknown->Recovering->Stopped
        self.stop_requested = init.stop_pending
        self.evacuate_requested = False
        self.poll_epoch = 0
        self.order: tuple[str, object] | None = None  # the order in flight, for resending
        self.last_failure: tuple[str, int] | None = None  # (host, seq) of the last failure handled
        self.running_since = float("-inf")  # found running: stable for as long as anyone knows
        # A restarted manager's VM may run on any of these (a migration was in flight): each
        # is examined, and the VM is taken for gone only once all are ruled out.
        self.maybe_on: list[str] = list(init.also_on)
        self.start_failures = 0  # in a row; the first failure retries at once on another host
        self.avoid_host: str | None = None  # a host that just fenced this VM

    # -- helpers -------------------------------------------------------------------------------

    def wants_ha_restart(self) -> bool:
        return self.config.enable and self.level is HaLevel.NEVER_STOP and not self.no_restart

    def _set(self, ctx: Context, state: VmState) -> None:
        if state in STOP_DONE:
            self.stop_requested = False  # no copy runs: a user's stop has taken effect
            self.evacuate_requested = False  # nor on the host being evacuated
        if state is not self.state:
            if (state in SCANNABLE) != (self.state in SCANNABLE):
                ctx.send(MANAGER, Scannable(self.name, state in SCANNABLE))
            self.state = state
            self._publish(ctx)
            if state is VmState.RUNNING:
                # Settled: the manager's home index and capacity follow where it runs
                # (a failed migration, for one, leaves it where it was).
                ctx.send(MANAGER, Claim(self.name, self.host))

    def _publish(self, ctx: Context) -> None:
        host = None if self.state is VmState.STOPPED else self.host
        target = self.migrate_dest if self.state is VmState.MIGRATING else None
        ctx.publish(VmViewChanged(self.name, self.state, host, target))

    def _begin(self, ctx: Context, op: Op, timeout_s: float | None) -> int:
        self.op = op
        if self.req == 0:
            # The first operation of this incarnation: request ids start at a random point,
            # since agents remember answered ids and a restarted VM actor must not be
            # mistaken for its previous incarnation. Drawn here rather than at start: most
            # VMs never operate, and an actor's generator is made on first use.
            self.req = ctx.random.randrange(1, 1 << 40)
        self.req += 1
        if timeout_s is not None:
            ctx.set_timer(timeout_s, _Timeout(self.req))
        return self.req

    def _end(self) -> None:
        self.op = Op.NONE
        if self.req:
            self.req += 1  # any late reply to the finished operation is now stale
        self.order = None

    def _order(self, ctx: Context, op: Op, timeout_s: float, to: str, make: Callable[[int], object]) -> None:
        """Send an idempotent order to a host agent and repeat it until it is answered or
        times out; the agent answers a repeat without doing the work twice."""
        req = self._begin(ctx, op, timeout_s)
        self.order = (to, make(req))
        ctx.send(to, self.order[1])
        ctx.set_timer(RESEND_S, _Resend(req))

    # -- entry -----------------------------------------------------------------------------------

    def on_start(self, ctx: Context) -> None:
        self._publish(ctx)
        if self.state is VmState.UNKNOWN:
            self._query(ctx)  # a restarted manager: find out what really runs

    def receive(self, ctx: Context, msg: object) -> None:
        if isinstance(msg, OpReply):
            if msg.req == self.req:
                self._op_reply(ctx, msg)
        elif isinstance(msg, PlaceReply):
            if msg.req == self.req:
                self._placed(ctx, msg)
            elif msg.host is not None and msg.host != self.host:
                ctx.send(MANAGER, Release(self.name, msg.host))  # an abandoned placement's slot
        elif isinstance(msg, Verdict):
            if msg.req == self.req and self.op is Op.VERDICT:
                self._end()
                self._judge(ctx, msg.connected, msg.all_gone or self.vm.pool in msg.gone_pools)
        elif isinstance(msg, _Timeout):
            if msg.req == self.req:
                self._timed_out(ctx)
        elif isinstance(msg, _Resend):
            # An HA start the rules no longer allow (switched off, level None, stopped with
            # no-restart) is not repeated: a host that takes it later would break them.
            halted = self.op is Op.START and self.cause == "ha" and not self.wants_ha_restart()
            if msg.req == self.req and self.order is not None and not halted:
                ctx.send(*self.order)
                ctx.set_timer(RESEND_S, _Resend(msg.req))
        elif isinstance(msg, _Retry):
            if msg.epoch == self.retry_epoch:
                self.retry_pending = False
                self._retry(ctx)
        elif isinstance(msg, _Poll):
            if msg.epoch == self.poll_epoch and self.state is VmState.UNKNOWN and self.op is Op.NONE:
                self._query(ctx)
        elif isinstance(msg, GuestFailed):
            ctx.send(host_addr(msg.host), FailureAck(self.name, msg.seq))
            if (msg.host, msg.seq) != self.last_failure:  # a repeat whose ack was lost
                self.last_failure = (msg.host, msg.seq)
                self._guest_failed(ctx, msg)
        elif isinstance(msg, Verify):
            if msg.host == self.host and self.state is VmState.RUNNING and self.op is Op.NONE:
                self._query(ctx)
        elif isinstance(msg, HostEvent):
            self._host_event(ctx, msg)
        else:
            self._command(ctx, msg)

    def _command(self, ctx: Context, msg: object) -> None:
        if isinstance(msg, UserStopVm):
            self.no_restart = msg.no_restart
            self.stop_requested = self.state is not VmState.STOPPED
            self._follow_up(ctx)
        elif isinstance(msg, UserStartVm):
            self.no_restart = False
            self.stop_requested = False
            if self.state is VmState.STOPPED and self.op is Op.NONE:
                self._try_start(ctx, "user")
        elif isinstance(msg, UserSetHa):
            self.level = msg.level
        elif isinstance(msg, ConfigPush):
            was_enabled = self.config.enable
            self.config = msg.config
            if self.config.enable and not was_enabled:
                self._resume(ctx)
        elif isinstance(msg, Scan):
            if not self.retry_pending:
                self._resume(ctx)
        elif isinstance(msg, Kick):
            self.host_down_cycle = False  # its host may be back: ask for a place first
            self._resume(ctx)
        elif isinstance(msg, Evacuate) and msg.host == self.host:
            self.evacuate_requested = self.state is not VmState.STOPPED and not msg.cancel
            self._follow_up(ctx)

    def _resume(self, ctx: Context) -> None:
        """Start a stopped NeverStop VM now, or look again at an Unknown one."""
        if self.op is not Op.NONE:
            return
        if self.state is VmState.STOPPED and self.wants_ha_restart():
            self.retry_epoch += 1
            self.retry_pending = False
            self._retry(ctx)
        elif self.state is VmState.UNKNOWN:
            self._query(ctx)

    def _follow_up(self, ctx: Context) -> None:
        """Carry out a stop or an evacuation that had to wait for a running guest."""
        if self.op is not Op.NONE or self.state is not VmState.RUNNING:
            return
        if self.stop_requested:
            # Kept until a view proves the guest gone (STOP_DONE): a stop that times out
            # because the host cannot be reached is carried out once it can be again.
            self.evacuate_requested = False
            self._stop_guest(ctx)
        elif self.evacuate_requested:
            # Kept until the VM has left the host (or a migration was answered "failed"):
            # one that times out on an unreachable host is tried again once it is back.
            if self.vm.pool_shared:
                req = self._begin(ctx, Op.PLACE_MIGRATE, None)
                ctx.send(MANAGER, PlaceRequest(self.name, req, None, (self.host,)))
            else:
                self._stop_guest(ctx)

    def _stop_guest(self, ctx: Context) -> None:
        self._set(ctx, VmState.STOPPING)
        self._order(ctx, Op.STOP, STOP_TIMEOUT_S, host_addr(self.host),
                    lambda req: StopVm(self.name, req, ctx.address, force=False))

    # -- starting --------------------------------------------------------------------------------

    def _try_start(self, ctx: Context, cause: str, exclude: tuple[str, ...] = ()) -> None:
        self.cause = cause
        req = self._begin(ctx, Op.PLACE, None)
        ctx.send(MANAGER, PlaceRequest(self.name, req, self.host, exclude))

    def _placed(self, ctx: Context, msg: PlaceReply) -> None:
        if self.op is Op.PLACE_MIGRATE:
            self._end()
            if msg.host is None:
                self.evacuate_requested = False
                self.stop_requested = True  # nowhere to go: stop it, as for local storage
                self._follow_up(ctx)
                return
            self.migrate_dest = msg.host
            self._set(ctx, VmState.MIGRATING)
            dest = msg.host
            self._order(ctx, Op.MIGRATE, MIGRATE_TIMEOUT_S, host_addr(self.host),
                        lambda req: MigrateVm(self.name, dest, req, ctx.address))
            return
        self._end()
        if msg.host is not None and (self.no_restart or (self.cause == "ha" and not self.wants_ha_restart())):
            # A user stopped it, or HA was switched off, while the placement was in flight.
            ctx.send(MANAGER, Release(self.name, msg.host))
            self._set(ctx, VmState.STOPPED)
            return
        if msg.host is None:
            self.host_down_cycle = msg.reason == NoPlace.HOST_DOWN.value
            self._set(ctx, VmState.STOPPED)
            self._schedule_retry(ctx)
            return
        self.host = msg.host
        self.host_down_cycle = False
        self._set(ctx, VmState.STARTING)
        cause, boot = self.cause, msg.boot
        self._order(ctx, Op.START, START_TIMEOUT_S, host_addr(self.host),
                    lambda req: StartVm(self.vm, req, ctx.address, cause, boot))

    def _schedule_retry(self, ctx: Context) -> None:
        if self.retry_pending:
            return
        self.retry_epoch += 1
        self.retry_pending = True
        ctx.set_timer(self.retry_delay_s, _Retry(self.retry_epoch))
        self.retry_delay_s = min(self.retry_delay_s * 2, self.config.retry_max_interval_s)

    def _retry(self, ctx: Context) -> None:
        if self.state is not VmState.STOPPED or self.op is not Op.NONE or not self.wants_ha_restart():
            return
        if self.host_down_cycle:
            # Its only host is down: look at that host again before trying to start.
            self._set(ctx, VmState.UNKNOWN)
            self._query(ctx)
        else:
            self._try_start(ctx, "ha")

    # -- replies and timeouts ----------------------------------------------------------------------

    def _op_reply(self, ctx: Context, msg: OpReply) -> None:
        op = self.op
        self._end()
        if op is Op.START:
            if msg.ok:
                self.start_failures = 0
                self.running_since = ctx.now()
                self._set(ctx, VmState.RUNNING)
                self._follow_up(ctx)
            else:
                ctx.log(f"{self.name}: start on {self.host} failed: {msg.error}")
                failed_host = self.host
                self._stopped(ctx, restart=False)
                self.start_failures += 1
                if self.start_failures == 1 and self.wants_ha_restart():
                    self._try_start(ctx, "ha", exclude=(failed_host,))  # at once, elsewhere
                else:
                    self._schedule_retry(ctx)
        elif op is Op.STOP:
            if msg.ok:
                self._stopped(ctx, restart=True)
            else:
                self._unknown(ctx)
        elif op is Op.MIGRATE:
            self.evacuate_requested = False  # answered: it left, or it stays after a failure
            if msg.ok:
                ctx.send(MANAGER, Release(self.name, self.host))
                self.host = self.migrate_dest
                self._set(ctx, VmState.RUNNING)
                self._follow_up(ctx)
            else:
                # Usually the guest stayed on the source. But an agent restarted since it
                # carried the migration out has forgotten it and answers a repeat with "not
                # running here": look on the source, then on the destination (which keeps
                # its slot until then), before believing either.
                self.maybe_on = [self.migrate_dest]
                self._set(ctx, VmState.RUNNING)
                self._query(ctx)
        elif op is Op.QUERY:
            if msg.ok:
                self._settle_candidates(ctx)
                self._set(ctx, VmState.RUNNING)
                self._follow_up(ctx)
            elif not self._next_candidate(ctx):
                if self.state is VmState.RUNNING:
                    self._set(ctx, VmState.STOPPING)  # found dead unseen: as a crash shows it
                self._stopped(ctx, restart=True)

    def _timed_out(self, ctx: Context) -> None:
        op = self.op
        self._end()
        if op is Op.QUERY:
            req = self._begin(ctx, Op.VERDICT, None)
            ctx.send(MANAGER, VerdictRequest(self.name, self.host, req))
        elif op is Op.MIGRATE:
            ctx.send(MANAGER, Release(self.name, self.migrate_dest))
            self._unknown(ctx)
        else:
            self._unknown(ctx)

    def _stopped(self, ctx: Context, restart: bool) -> None:
        """The guest is provably not running on ``self.host`` any more."""
        ctx.send(MANAGER, Release(self.name, self.host))
        self._set(ctx, VmState.STOPPED)
        avoid, self.avoid_host = self.avoid_host, None
        if restart and self.wants_ha_restart():
            self._try_start(ctx, "ha", exclude=(avoid,) if avoid else ())

    # -- Unknown: finding out whether the guest still runs --------------------------------------------

    def _unknown(self, ctx: Context) -> None:
        self._set(ctx, VmState.UNKNOWN)
        self._schedule_poll(ctx, self.config.host_check_interval_s)

    def _schedule_poll(self, ctx: Context, delay_s: float) -> None:
        self.poll_epoch += 1
        ctx.set_timer(delay_s, _Poll(self.poll_epoch))

    def _query(self, ctx: Context) -> None:
        self._order(ctx, Op.QUERY, self.config.ping_timeout_s, host_addr(self.host),
                    lambda req: QueryVm(self.name, req, ctx.address))

    def _judge(self, ctx: Context, connected: bool, gone: bool) -> None:
        """Act on the manager's verdict about the host of an Unknown VM."""
        if gone:
            self._host_gone(ctx)
        elif connected:
            self._schedule_poll(ctx, 1.0)
        else:
            self._schedule_poll(ctx, self.config.host_check_interval_s)

    def _next_candidate(self, ctx: Context) -> bool:
        """Rule out the current host and look at the next one it may run on, if any."""
        if not self.maybe_on:
            return False
        ctx.send(MANAGER, Release(self.name, self.host))
        self.host = self.maybe_on.pop(0)
        self._end()
        self._set(ctx, VmState.UNKNOWN)
        self._query(ctx)
        return True

    def _settle_candidates(self, ctx: Context) -> None:
        """Found: the other hosts it might have been on give their slots back."""
        for host in self.maybe_on:
            if host != self.host:
                ctx.send(MANAGER, Release(self.name, host))
        self.maybe_on = []

    def _host_gone(self, ctx: Context) -> None:
        """Its host is powered off or has fenced it: no copy runs anywhere."""
        if self._next_candidate(ctx):
            return
        if self.op is Op.MIGRATE:
            ctx.send(MANAGER, Release(self.name, self.migrate_dest))
        self._end()
        if self.wants_ha_restart():
            ctx.send(MANAGER, Release(self.name, self.host))
            self._set(ctx, VmState.RECOVERING)
            self._try_start(ctx, "ha", exclude=(self.host,) if self.vm.pool_shared else ())
        else:
            self._stopped(ctx, restart=False)

    def _host_event(self, ctx: Context, msg: HostEvent) -> None:
        if msg.host != self.host or self.state is VmState.STOPPED:
            return
        gone = msg.all_gone or self.vm.pool in msg.gone_pools
        if gone:
            if self.state is VmState.RUNNING:
                self._set(ctx, VmState.UNKNOWN)
            if self.state is not VmState.RECOVERING and self.op is not Op.PLACE:
                self._host_gone(ctx)
        elif not msg.connected:
            if self.state is VmState.RUNNING and self.op is Op.NONE:
                self._unknown(ctx)
        elif self.state in (VmState.UNKNOWN, VmState.RUNNING) and self.op is Op.NONE:
            self._query(ctx)  # back, or rebooted: ask what really runs there

    def _guest_failed(self, ctx: Context, msg: GuestFailed) -> None:
        """The guest died on its host (crash, or the host's self-fencer). The host saw it
        die, so no copy runs: Stopping -> Stopped at once, then restart. A VM that keeps
        crashing soon after each start is restarted with a doubling delay instead."""
        if msg.host != self.host or self.state in (VmState.STOPPED, VmState.STOPPING):
            return
        if self.state is VmState.RECOVERING:
            return
        if self.op is Op.START and msg.started_by != self.req:
            # About a run before this start, repeated until acknowledged, so it can come
            # after the new order was taken: the start's own answer says how that went.
            return
        ctx.log(f"{self.name}: guest failed on {msg.host}: {msg.reason.value}")
        if self.op is Op.MIGRATE:
            ctx.send(MANAGER, Release(self.name, self.migrate_dest))
        was_running = self.state is VmState.RUNNING
        self._end()
        self._set(ctx, VmState.STOPPING)
        if msg.reason is StopReason.FENCED:
            self.avoid_host = msg.host  # it lost the VM's storage: restart elsewhere
            self._stopped(ctx, restart=True)
            return
        stable = was_running and ctx.now() - self.running_since >= self.config.retry_delay_s
        if stable:
            self.retry_delay_s = self.config.retry_delay_s  # it had been stable: a fresh crash
            self._stopped(ctx, restart=True)
        else:
            self._stopped(ctx, restart=False)  # crashing in a loop: back off
            if self.wants_ha_restart():
                self._schedule_retry(ctx)
