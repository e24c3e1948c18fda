"""VmActor driven by hand through a FakeContext: the test plays the manager and the hosts."""

from __future__ import annotations

from dataclasses import replace
from itertools import count
from random import Random

import pytest
from fakes import FakeContext

from actors.config import DEFAULT, HaConfig
from actors.inventory import VmDef, VmInit
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
from actors.states import HaLevel, Network, StopReason, VmState
from actors.vm import (
    MIGRATE_TIMEOUT_S,
    RESEND_S,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    VmActor,
    _Resend,
    _Retry,
    _Timeout,
)

RUNNING, STOPPING, STOPPED = VmState.RUNNING, VmState.STOPPING, VmState.STOPPED
STARTING, UNKNOWN, RECOVERING = VmState.STARTING, VmState.UNKNOWN, VmState.RECOVERING
MIGRATING = VmState.MIGRATING

SHARED = VmDef("vm1", cpu=1, memory_mib=1024, pool="nfs", pool_shared=True, cluster="c1")
LOCAL = VmDef("vm1", cpu=1, memory_mib=1024, pool="local-h1", pool_shared=False, cluster="c1")
ME = "vm/vm1"


def make(vm: VmDef = SHARED, level: HaLevel = HaLevel.NEVER_STOP, state: VmState = RUNNING,
         host: str = "h1", config: HaConfig = DEFAULT) -> tuple[VmActor, FakeContext]:
    actor = VmActor(VmInit(vm, level, state, host), config)
    ctx = FakeContext(address=ME)
    actor.on_start(ctx)
    assert ctx.published == [VmViewChanged("vm1", state, None if state is STOPPED else host)]
    ctx.published.clear()
    return actor, ctx


def drain(ctx: FakeContext) -> list[tuple[str, object]]:
    """Everything sent since the last drain, as (to, msg), and forget it."""
    out = [(to, msg) for to, msg, _ in ctx.sent]
    ctx.sent.clear()
    return out


def make_started(level: HaLevel = HaLevel.NEVER_STOP,
                 config: HaConfig = DEFAULT) -> tuple[VmActor, FakeContext]:
    """A VM that this actor itself started on h1 at 0 s (a user start, confirmed): a crash
    before ``retry_delay_s`` has passed is a crash loop."""
    vm, ctx = make(state=STOPPED, level=level, config=config)
    vm.receive(ctx, UserStartVm("vm1"))
    place = ctx.take_one(PlaceRequest, to="manager")
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    start = ctx.take_one(StartVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", start.req, True))
    assert ctx.states() == [STARTING, RUNNING]
    assert drain(ctx) == [("manager", Claim("vm1", "h1"))]  # settled in Running: claimed
    ctx.published.clear()
    return vm, ctx


def settle(vm: VmActor, ctx: FakeContext, config: HaConfig = DEFAULT) -> None:
    """Let the guest run long enough that a crash is no crash loop, however its run began
    (a VM the actor found running counts as stable already; one it started does not)."""
    ctx.advance(vm, config.retry_delay_s)


FAILURE_SEQ = count(1000)  # host agents number their failure reports; each crash is a new one


def crash(vm: VmActor, ctx: FakeContext, reason: StopReason = StopReason.CRASHED, host: str = "h1",
          started_by: int | None = None) -> int:
    """The guest dies on its host and the host says so (with a new failure number, which
    it returns): the actor acknowledges that very report and orders nothing of that host
    (no cleanup stop: the host saw the guest die). ``started_by``: the start order whose
    run died, if the host carried one out."""
    seq = next(FAILURE_SEQ)
    vm.receive(ctx, GuestFailed(host, "vm1", reason, seq, started_by))
    assert ctx.take_sent(FailureAck) == [(f"host/{host}", FailureAck("vm1", seq), Network.MANAGEMENT)]
    assert [(to, msg) for to, msg, _ in ctx.sent if to.startswith("host/")] == []
    return seq


def resends(seconds: float) -> int:
    """How many times an order left unanswered is sent again within ``seconds``."""
    return int(seconds / RESEND_S)


# -- crash of a guest on a healthy host -------------------------------------------------------------


def test_crash_on_healthy_host_restarts_there() -> None:
    vm, ctx = make()
    settle(vm, ctx)
    crash(vm, ctx)
    # The host saw the guest die: no cleanup stop, Stopping then Stopped at once.
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.published[-2] == VmViewChanged("vm1", STOPPING, "h1")
    assert ctx.published[-1] == VmViewChanged("vm1", STOPPED, None)
    sent = drain(ctx)
    assert len(sent) == 2
    assert sent[0] == ("manager", Release("vm1", "h1"))
    to, place = sent[1]
    assert to == "manager" and isinstance(place, PlaceRequest)
    assert place == PlaceRequest("vm1", place.req, prefer="h1", exclude=())
    assert ctx.timers_of(_Retry) == []  # restarted at once, not backed off

    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    assert ctx.states()[-1] is STARTING
    start = ctx.take_one(StartVm, to="host/h1")
    assert start == StartVm(SHARED, start.req, ME, "ha")
    assert drain(ctx) == []

    vm.receive(ctx, OpReply("h1", "vm1", start.req, True))
    assert ctx.states() == [STOPPING, STOPPED, STARTING, RUNNING]
    assert ctx.published[-1] == VmViewChanged("vm1", RUNNING, "h1")
    assert drain(ctx) == [("manager", Claim("vm1", "h1"))]
    ctx.advance(vm, START_TIMEOUT_S)  # answered: no resend, no timeout
    assert drain(ctx) == []
    assert ctx.states() == [STOPPING, STOPPED, STARTING, RUNNING]


def test_crash_restarts_without_waiting_for_the_host() -> None:
    """The host itself reported the guest dead: recovery waits for no answer from it."""
    vm, ctx = make()
    settle(vm, ctx)
    crash(vm, ctx)
    assert ctx.states() == [STOPPING, STOPPED]
    sent = drain(ctx)
    assert sent[0] == ("manager", Release("vm1", "h1"))
    assert [type(m) for _, m in sent] == [Release, PlaceRequest]
    # Nothing was ordered of h1: nothing to resend there, nothing to time out.
    ctx.advance(vm, STOP_TIMEOUT_S)
    assert drain(ctx) == []
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.timers_of(_Resend) == [] and ctx.timers_of(_Timeout) == []


def test_fenced_guest_restarts_on_another_host() -> None:
    vm, ctx = make()
    crash(vm, ctx, StopReason.FENCED)
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place == PlaceRequest("vm1", place.req, "h1", ("h1",))
    assert drain(ctx) == []


def test_guest_failed_on_another_host_is_ignored() -> None:
    vm, ctx = make()
    vm.receive(ctx, GuestFailed("h2", "vm1", StopReason.CRASHED, 5))
    # Acknowledged all the same, or h2 would keep repeating it.
    assert ctx.take_sent(FailureAck) == [("host/h2", FailureAck("vm1", 5), Network.MANAGEMENT)]
    assert ctx.published == [] and drain(ctx) == []


def test_failed_start_retries_once_elsewhere_then_backs_off() -> None:
    vm, ctx = make(state=STOPPED)
    vm.receive(ctx, Scan())
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    start = ctx.take_one(StartVm, to="host/h2")
    vm.receive(ctx, OpReply("h2", "vm1", start.req, False, "no disk"))
    assert ctx.take(Release) == [Release("vm1", "h2")]
    place = ctx.take_one(PlaceRequest)
    assert place.exclude == ("h2",)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h3"))
    start = ctx.take_one(StartVm, to="host/h3")
    vm.receive(ctx, OpReply("h3", "vm1", start.req, False, "no disk"))
    assert ctx.take(Release) == [Release("vm1", "h3")]
    assert drain(ctx) == []  # no third attempt at once
    assert ctx.timers_of(_Retry)[-1][0] == DEFAULT.retry_delay_s
    assert ctx.states() == [STARTING, STOPPED, STARTING, STOPPED]


# -- what stops a restart -----------------------------------------------------------------------------


def test_user_stop_with_no_restart_stays_stopped_until_user_start() -> None:
    vm, ctx = make()
    vm.receive(ctx, UserStopVm("vm1", no_restart=True))
    assert ctx.states() == [STOPPING]
    stop = ctx.take_one(StopVm, to="host/h1")
    assert stop == StopVm("vm1", stop.req, ME, force=False)

    vm.receive(ctx, OpReply("h1", "vm1", stop.req, True))
    assert ctx.states() == [STOPPING, STOPPED]
    assert drain(ctx) == [("manager", Release("vm1", "h1"))]

    vm.receive(ctx, Scan())
    vm.receive(ctx, Kick())
    ctx.advance(vm, 3600.0)
    vm.receive(ctx, Scan())
    assert drain(ctx) == []
    assert ctx.states() == [STOPPING, STOPPED]

    vm.receive(ctx, UserStartVm("vm1"))
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place == PlaceRequest("vm1", place.req, "h1", ())
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    start = ctx.take_one(StartVm, to="host/h1")
    assert start.cause == "user"
    vm.receive(ctx, OpReply("h1", "vm1", start.req, True))
    assert ctx.states() == [STOPPING, STOPPED, STARTING, RUNNING]

    # The flag is cleared: a later crash is recovered as usual.
    settle(vm, ctx)
    crash(vm, ctx)
    assert len(ctx.take(PlaceRequest)) == 1


def test_plain_user_stop_of_a_neverstop_vm_is_undone() -> None:
    vm, ctx = make()
    vm.receive(ctx, UserStopVm("vm1"))
    stop = ctx.take_one(StopVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", stop.req, True))
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    assert ctx.take_one(PlaceRequest).prefer == "h1"


@pytest.mark.parametrize("settled", [False, True], ids=["crash-loop", "after-a-stable-run"])
def test_level_none_is_not_restarted_after_a_crash(settled: bool) -> None:
    vm, ctx = make_started(level=HaLevel.NONE)
    if settled:
        settle(vm, ctx)
    crash(vm, ctx)
    assert ctx.states() == [STOPPING, STOPPED]
    assert drain(ctx) == [("manager", Release("vm1", "h1"))]
    assert ctx.timers_of(_Retry) == []
    vm.receive(ctx, Scan())
    ctx.advance(vm, 3600.0)
    assert drain(ctx) == []


@pytest.mark.parametrize("settled", [False, True], ids=["crash-loop", "after-a-stable-run"])
def test_ha_disabled_means_no_restart_and_enabling_restarts(settled: bool) -> None:
    vm, ctx = make_started()
    vm.receive(ctx, ConfigPush(replace(DEFAULT, enable=False)))
    if settled:
        settle(vm, ctx)
    crash(vm, ctx)
    assert ctx.states() == [STOPPING, STOPPED]
    assert drain(ctx) == [("manager", Release("vm1", "h1"))]
    assert ctx.timers_of(_Retry) == []
    vm.receive(ctx, Scan())
    ctx.advance(vm, 3600.0)
    assert drain(ctx) == []

    vm.receive(ctx, ConfigPush(DEFAULT))
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place == PlaceRequest("vm1", place.req, "h1", ())
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    assert ctx.take_one(StartVm, to="host/h1").cause == "ha"


# -- a host that stops answering --------------------------------------------------------------------


def test_disconnected_host_makes_the_vm_unknown_and_never_starts_it_elsewhere() -> None:
    vm, ctx = make()
    vm.receive(ctx, HostEvent("h1", connected=False, gone_pools=(), all_gone=False))
    assert ctx.states() == [UNKNOWN]
    assert ctx.published[-1] == VmViewChanged("vm1", UNKNOWN, "h1")
    assert drain(ctx) == []

    for _ in range(5):  # poll, query unanswered, verdict "disconnected", again
        ctx.advance(vm, DEFAULT.host_check_interval_s)
        query = ctx.take_one(QueryVm, to="host/h1")
        assert query == QueryVm("vm1", query.req, ME)
        ctx.advance(vm, DEFAULT.ping_timeout_s)
        # The query was sent again every second until it timed out.
        assert ctx.take_copies(QueryVm, to="host/h1") == (query, resends(DEFAULT.ping_timeout_s) - 1)
        ask = ctx.take_one(VerdictRequest, to="manager")
        assert ask == VerdictRequest("vm1", "h1", ask.req)
        vm.receive(ctx, Verdict("h1", ask.req, connected=False, gone_pools=(), all_gone=False))
        assert drain(ctx) == []
    assert ctx.states() == [UNKNOWN]
    assert ctx.take(PlaceRequest) == []


@pytest.mark.parametrize("event", [
    HostEvent("h1", connected=False, gone_pools=(), all_gone=True),
    HostEvent("h1", connected=False, gone_pools=("nfs",), all_gone=False),
], ids=["powered-off", "fenced"])
@pytest.mark.parametrize("via_unknown", [False, True], ids=["from-running", "from-unknown"])
def test_gone_host_recovers_a_shared_vm_elsewhere(event: HostEvent, via_unknown: bool) -> None:
    vm, ctx = make()
    if via_unknown:
        vm.receive(ctx, HostEvent("h1", connected=False, gone_pools=(), all_gone=False))
        assert drain(ctx) == []
    vm.receive(ctx, event)
    assert ctx.states() == [UNKNOWN, RECOVERING]
    sent = drain(ctx)
    assert sent[0] == ("manager", Release("vm1", "h1"))
    to, place = sent[1]
    assert to == "manager" and isinstance(place, PlaceRequest)
    assert place.exclude == ("h1",)
    assert len(sent) == 2

    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    start = ctx.take_one(StartVm, to="host/h2")
    assert start == StartVm(SHARED, start.req, ME, "ha")
    vm.receive(ctx, OpReply("h2", "vm1", start.req, True))
    assert ctx.published[-1] == VmViewChanged("vm1", RUNNING, "h2")
    assert ctx.states() == [UNKNOWN, RECOVERING, STARTING, RUNNING]


def test_gone_verdict_for_another_pool_keeps_the_vm_unknown() -> None:
    vm, ctx = make()
    other = HostEvent("h1", connected=False, gone_pools=("ceph",), all_gone=False)
    vm.receive(ctx, other)
    assert ctx.states() == [UNKNOWN]
    vm.receive(ctx, other)
    assert drain(ctx) == []

    ctx.advance(vm, DEFAULT.host_check_interval_s)
    query = ctx.take_one(QueryVm, to="host/h1")
    ctx.advance(vm, DEFAULT.ping_timeout_s)
    assert ctx.take_copies(QueryVm, to="host/h1") == (query, resends(DEFAULT.ping_timeout_s) - 1)
    ask = ctx.take_one(VerdictRequest)
    vm.receive(ctx, Verdict("h1", ask.req, connected=False, gone_pools=("ceph",), all_gone=False))
    assert drain(ctx) == []
    assert ctx.states() == [UNKNOWN]


def test_gone_verdict_answering_a_query_recovers() -> None:
    vm, ctx = make()
    vm.receive(ctx, HostEvent("h1", connected=False, gone_pools=(), all_gone=False))
    ctx.advance(vm, DEFAULT.host_check_interval_s)
    ctx.take_one(QueryVm)
    ctx.advance(vm, DEFAULT.ping_timeout_s)
    ask = ctx.take_one(VerdictRequest)
    vm.receive(ctx, Verdict("h1", ask.req, connected=False, gone_pools=("nfs",), all_gone=False))
    assert ctx.states() == [UNKNOWN, RECOVERING]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    assert ctx.take_one(PlaceRequest).exclude == ("h1",)


def test_host_back_makes_an_unknown_vm_ask_the_host() -> None:
    vm, ctx = make()
    vm.receive(ctx, HostEvent("h1", connected=False, gone_pools=(), all_gone=False))
    vm.receive(ctx, HostEvent("h1", connected=True, gone_pools=(), all_gone=False))
    query = ctx.take_one(QueryVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", query.req, True))
    assert ctx.states() == [UNKNOWN, RUNNING]
    assert drain(ctx) == [("manager", Claim("vm1", "h1"))]


def test_local_vm_with_its_host_down_backs_off_up_to_the_max_interval() -> None:
    config = replace(DEFAULT, retry_delay_s=10.0, retry_max_interval_s=50.0)
    vm, ctx = make(vm=LOCAL, config=config)
    vm.receive(ctx, HostEvent("h1", connected=False, gone_pools=(), all_gone=True))
    assert ctx.states() == [UNKNOWN, RECOVERING]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place == PlaceRequest("vm1", place.req, "h1", ())  # its disk is there: no exclusion
    vm.receive(ctx, PlaceReply("vm1", place.req, None, NoPlace.HOST_DOWN.value))
    assert ctx.states() == [UNKNOWN, RECOVERING, STOPPED]
    assert drain(ctx) == []

    delays = []
    for _ in range(5):
        delay, _msg = ctx.timers_of(_Retry)[-1]
        delays.append(delay)
        vm.receive(ctx, Scan())  # a retry is pending: the scan does not jump the queue
        ctx.advance(vm, delay - 0.5)
        assert drain(ctx) == []
        ctx.published.clear()
        ctx.advance(vm, 0.5)
        # The retry looks at the host first: Unknown, ask it, then ask the manager.
        assert ctx.states() == [UNKNOWN]
        query = ctx.take_one(QueryVm, to="host/h1")
        ctx.advance(vm, config.ping_timeout_s)
        assert ctx.take_copies(QueryVm, to="host/h1") == (query, resends(config.ping_timeout_s) - 1)
        ask = ctx.take_one(VerdictRequest, to="manager")
        vm.receive(ctx, Verdict("h1", ask.req, connected=False, gone_pools=(), all_gone=True))
        place = ctx.take_one(PlaceRequest, to="manager")
        assert place.exclude == ()
        vm.receive(ctx, PlaceReply("vm1", place.req, None, NoPlace.HOST_DOWN.value))
        assert ctx.states() == [UNKNOWN, RECOVERING, STOPPED]
        ctx.take(Release)
        assert drain(ctx) == []
    assert delays == [10.0, 20.0, 40.0, 50.0, 50.0]
    assert ctx.timers_of(_Retry)[-1][0] == 50.0
    assert not any(isinstance(m, StartVm) for _, m, _ in ctx.sent)


def test_no_capacity_waits_stopped_and_a_kick_retries_at_once() -> None:
    vm, ctx = make(state=STOPPED)
    vm.receive(ctx, Scan())
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, None, NoPlace.NO_CAPACITY.value))
    assert ctx.states() == []  # it was Stopped already
    assert ctx.timers_of(_Retry)[-1][0] == DEFAULT.retry_delay_s
    assert drain(ctx) == []
    vm.receive(ctx, Kick())
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h3"))
    assert ctx.take_one(StartVm, to="host/h3").cause == "ha"
    # The pending retry timer is now stale.
    ctx.advance(vm, DEFAULT.retry_delay_s)
    assert ctx.take(PlaceRequest) == []


def test_start_timeout_makes_the_vm_unknown_then_polls_the_host() -> None:
    vm, ctx = make(state=STOPPED)
    vm.receive(ctx, Scan())
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    start = ctx.take_one(StartVm, to="host/h2")
    ctx.advance(vm, START_TIMEOUT_S - 0.5)
    assert ctx.states() == [STARTING]
    assert ctx.take_copies(StartVm, to="host/h2") == (start, resends(START_TIMEOUT_S - 0.5))
    ctx.advance(vm, 0.5)
    assert ctx.states() == [STARTING, UNKNOWN]
    assert drain(ctx) == []  # no Release: the guest may be running there; no more resends

    ctx.advance(vm, DEFAULT.host_check_interval_s)
    query = ctx.take_one(QueryVm, to="host/h2")
    ctx.advance(vm, DEFAULT.ping_timeout_s)  # unanswered: ask the manager
    assert ctx.take_copies(QueryVm, to="host/h2") == (query, resends(DEFAULT.ping_timeout_s) - 1)
    ask = ctx.take_one(VerdictRequest, to="manager")
    assert ask.host == "h2"
    vm.receive(ctx, Verdict("h2", ask.req, connected=True, gone_pools=(), all_gone=False))
    assert drain(ctx) == []
    ctx.advance(vm, 1.0)
    query = ctx.take_one(QueryVm, to="host/h2")
    vm.receive(ctx, OpReply("h2", "vm1", query.req, True))
    assert ctx.states() == [STARTING, UNKNOWN, RUNNING]
    assert ctx.published[-1] == VmViewChanged("vm1", RUNNING, "h2")
    assert drain(ctx) == [("manager", Claim("vm1", "h2"))]


# -- maintenance ---------------------------------------------------------------------------------------


def test_evacuate_migrates_a_shared_vm() -> None:
    vm, ctx = make()
    vm.receive(ctx, Evacuate("h9"))  # not its host
    assert drain(ctx) == []
    vm.receive(ctx, Evacuate("h1"))
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place == PlaceRequest("vm1", place.req, None, ("h1",))
    assert ctx.states() == []

    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    assert ctx.states() == [MIGRATING]
    move = ctx.take_one(MigrateVm, to="host/h1")
    assert move == MigrateVm("vm1", "h2", move.req, ME)
    assert drain(ctx) == []

    vm.receive(ctx, OpReply("h1", "vm1", move.req, True))
    assert ctx.states() == [MIGRATING, RUNNING]
    assert ctx.published[-1] == VmViewChanged("vm1", RUNNING, "h2")
    assert drain(ctx) == [("manager", Release("vm1", "h1")), ("manager", Claim("vm1", "h2"))]

    # It lives on h2 now: news about h1 is not about it (the report is only acknowledged).
    vm.receive(ctx, GuestFailed("h1", "vm1", StopReason.CRASHED, 3))
    assert drain(ctx) == [("host/h1", FailureAck("vm1", 3))]
    vm.receive(ctx, HostEvent("h1", connected=False, gone_pools=(), all_gone=True))
    assert drain(ctx) == [] and ctx.states() == [MIGRATING, RUNNING]


def migrating_to_h2() -> tuple[VmActor, FakeContext, MigrateVm]:
    """A shared VM on h1 that maintenance moves to h2: the migration order is out."""
    vm, ctx = make()
    vm.receive(ctx, Evacuate("h1"))
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    return vm, ctx, ctx.take_one(MigrateVm)


def test_failed_migration_keeps_the_vm_on_its_host() -> None:
    vm, ctx, move = migrating_to_h2()
    vm.receive(ctx, OpReply("h1", "vm1", move.req, False, "migration failed"))
    # The VM claims h1 again (the manager's home index must not keep pointing at the
    # destination) and asks h1 whether the guest is there before it gives h2's slot back.
    assert ctx.take(Claim) == [Claim("vm1", "h1")]
    query = ctx.take_one(QueryVm, to="host/h1")
    assert drain(ctx) == []
    vm.receive(ctx, OpReply("h1", "vm1", query.req, True))
    assert drain(ctx) == [("manager", Release("vm1", "h2"))]
    assert ctx.published[-1] == VmViewChanged("vm1", RUNNING, "h1")
    assert vm.host == "h1" and vm.state is RUNNING


def test_a_migration_the_source_forgot_is_looked_for_on_the_destination() -> None:
    """The source's agent restarted after it carried the migration out: it answers a
    repeat of the order with "not running here". The guest is on h2, not gone."""
    vm, ctx, move = migrating_to_h2()
    vm.receive(ctx, OpReply("h1", "vm1", move.req, False, "not running here"))
    query = ctx.take_one(QueryVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", query.req, False))
    query = ctx.take_one(QueryVm, to="host/h2")
    vm.receive(ctx, OpReply("h2", "vm1", query.req, True))
    assert vm.host == "h2" and vm.state is RUNNING
    assert ctx.take(PlaceRequest) == [] and ctx.take(StartVm) == []  # nothing restarted


def test_an_evacuation_outlives_a_migration_that_timed_out_on_an_unreachable_host() -> None:
    vm, ctx, move = migrating_to_h2()
    ctx.advance(vm, MIGRATE_TIMEOUT_S)  # h1's agent is away: no answer
    assert ctx.states()[-1] is UNKNOWN
    drain(ctx)
    vm.receive(ctx, HostEvent("h1", connected=True, gone_pools=(), all_gone=False))  # back
    query = ctx.take_one(QueryVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", query.req, True))
    place = ctx.take_one(PlaceRequest, to="manager")  # found there: it leaves now
    assert place.exclude == ("h1",)


def test_leaving_maintenance_withdraws_an_evacuation_not_carried_out() -> None:
    vm, ctx, move = migrating_to_h2()
    ctx.advance(vm, MIGRATE_TIMEOUT_S)
    vm.receive(ctx, Evacuate("h1", cancel=True))
    drain(ctx)
    vm.receive(ctx, HostEvent("h1", connected=True, gone_pools=(), all_gone=False))
    query = ctx.take_one(QueryVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", query.req, True))
    assert ctx.take(PlaceRequest) == [] and vm.state is RUNNING and vm.host == "h1"


def test_a_user_stop_outlives_a_stop_that_timed_out_and_a_start_withdraws_it() -> None:
    vm, ctx = make()
    settle(vm, ctx)
    vm.receive(ctx, UserStopVm("vm1", no_restart=True))
    ctx.take_one(StopVm, to="host/h1")
    ctx.advance(vm, STOP_TIMEOUT_S)  # the agent is away
    assert ctx.states()[-2:] == [STOPPING, UNKNOWN]
    drain(ctx)
    vm.receive(ctx, HostEvent("h1", connected=True, gone_pools=(), all_gone=False))
    query = ctx.take_one(QueryVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", query.req, True))
    assert ctx.states()[-2:] == [RUNNING, STOPPING]  # found running: the stop is carried out
    stop = ctx.take_one(StopVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", stop.req, True))
    assert ctx.states()[-1] is STOPPED and not vm.stop_requested

    vm2, ctx2 = make()
    settle(vm2, ctx2)
    vm2.receive(ctx2, UserStopVm("vm1", no_restart=True))
    ctx2.advance(vm2, STOP_TIMEOUT_S)
    vm2.receive(ctx2, UserStartVm("vm1"))  # the user changed their mind meanwhile
    drain(ctx2)
    vm2.receive(ctx2, HostEvent("h1", connected=True, gone_pools=(), all_gone=False))
    query = ctx2.take_one(QueryVm, to="host/h1")
    vm2.receive(ctx2, OpReply("h1", "vm1", query.req, True))
    assert ctx2.take(StopVm) == [] and vm2.state is RUNNING


def test_evacuate_stops_a_local_vm() -> None:
    vm, ctx = make(vm=LOCAL)
    vm.receive(ctx, Evacuate("h1"))
    assert ctx.states() == [STOPPING]
    stop = ctx.take_one(StopVm, to="host/h1")
    assert stop.force is False
    assert drain(ctx) == []


# -- stale messages ------------------------------------------------------------------------------------


def test_stale_replies_and_timers_are_ignored() -> None:
    vm, ctx = make()
    vm.receive(ctx, UserStopVm("vm1"))  # a plain stop: HA starts it again
    stop = ctx.take_one(StopVm)
    for req in (stop.req - 1, stop.req + 1):
        vm.receive(ctx, OpReply("h1", "vm1", req, True))
        vm.receive(ctx, PlaceReply("vm1", req, "h3"))
    # A stale placement changes nothing but gives its reserved slot back.
    assert ctx.states() == [STOPPING]
    assert drain(ctx) == [("manager", Release("vm1", "h3"))] * 2

    vm.receive(ctx, OpReply("h1", "vm1", stop.req, True))
    place = ctx.take_one(PlaceRequest)
    ctx.take(Release)
    vm.receive(ctx, OpReply("h1", "vm1", stop.req, True))  # the same reply again
    vm.receive(ctx, PlaceReply("vm1", place.req - 1, "h3"))
    vm.receive(ctx, _Resend(stop.req))  # the answered stop is not sent again
    assert drain(ctx) == [("manager", Release("vm1", "h3"))] and ctx.states() == [STOPPING, STOPPED]

    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    start = ctx.take_one(StartVm, to="host/h2")
    vm.receive(ctx, PlaceReply("vm1", place.req, "h3"))  # duplicate placement: slot given back
    ctx.advance(vm, STOP_TIMEOUT_S)  # the stop's timeout and resend fire, stale
    # Only the start in flight is resent, once a second.
    assert ctx.take_copies(StartVm, to="host/h2") == (start, resends(STOP_TIMEOUT_S))
    assert drain(ctx) == [("manager", Release("vm1", "h3"))]
    assert ctx.states() == [STOPPING, STOPPED, STARTING]

    vm.receive(ctx, OpReply("h2", "vm1", start.req, True))
    assert drain(ctx) == [("manager", Claim("vm1", "h2"))]
    ctx.advance(vm, START_TIMEOUT_S)  # the start's timeout and resend fire, stale
    vm.receive(ctx, Verdict("h2", start.req, connected=False, gone_pools=("nfs",), all_gone=True))
    vm.receive(ctx, _Resend(start.req))
    vm.receive(ctx, OpReply("h2", "vm1", start.req, True))  # the same answer again: no new claim
    assert drain(ctx) == []
    assert ctx.states() == [STOPPING, STOPPED, STARTING, RUNNING]


# -- orders to host agents are resent until answered -------------------------------------------------


Order = StartVm | StopVm | MigrateVm | QueryVm


def order_start(vm: VmActor, ctx: FakeContext) -> Order:
    vm.receive(ctx, Scan())
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    start = ctx.take_one(StartVm, to="host/h2")
    assert start == StartVm(SHARED, start.req, ME, "ha")
    return start


def order_stop(vm: VmActor, ctx: FakeContext) -> Order:
    vm.receive(ctx, UserStopVm("vm1"))
    stop = ctx.take_one(StopVm, to="host/h1")
    assert stop == StopVm("vm1", stop.req, ME, force=False)
    return stop


def order_migrate(vm: VmActor, ctx: FakeContext) -> Order:
    vm.receive(ctx, Evacuate("h1"))
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    move = ctx.take_one(MigrateVm, to="host/h1")
    assert move == MigrateVm("vm1", "h2", move.req, ME)
    return move


def order_query(vm: VmActor, ctx: FakeContext) -> Order:
    vm.receive(ctx, HostEvent("h1", connected=False, gone_pools=(), all_gone=False))
    vm.receive(ctx, HostEvent("h1", connected=True, gone_pools=(), all_gone=False))
    query = ctx.take_one(QueryVm, to="host/h1")
    assert query == QueryVm("vm1", query.req, ME)
    return query


# kind -> (initial state, how to get the order sent, where it goes, its timeout)
ORDERS = {
    "start": (STOPPED, order_start, "host/h2", START_TIMEOUT_S),
    "stop": (RUNNING, order_stop, "host/h1", STOP_TIMEOUT_S),
    "migrate": (RUNNING, order_migrate, "host/h1", MIGRATE_TIMEOUT_S),
    "query": (RUNNING, order_query, "host/h1", DEFAULT.ping_timeout_s),
}


@pytest.mark.parametrize("kind", list(ORDERS))
@pytest.mark.parametrize("ok", [True, False], ids=["ok", "failed"])
def test_orders_are_resent_every_second_until_answered(kind: str, ok: bool) -> None:
    state, send_order, to, _ = ORDERS[kind]
    vm, ctx = make(state=state)
    order = send_order(vm, ctx)
    ctx.advance(vm, RESEND_S - 0.01)
    assert ctx.take(type(order)) == []
    ctx.advance(vm, 0.01)
    assert ctx.take_sent(type(order)) == [(to, order, Network.MANAGEMENT)]
    ctx.advance(vm, 2.5 * RESEND_S)  # the same order, same request id, every second
    assert ctx.take_sent(type(order)) == [(to, order, Network.MANAGEMENT)] * 2
    assert {d for d, _ in ctx.timers_of(_Resend)} == {RESEND_S}
    assert {m.req for _, m in ctx.timers_of(_Resend)} == {order.req}

    vm.receive(ctx, OpReply(to.removeprefix("host/"), "vm1", order.req, ok))
    ctx.advance(vm, 10 * RESEND_S)  # answered: the resend still pending fires, stale
    assert [m for _, m, _ in ctx.sent if m == order] == []
    # Armed with the order and after each of its 3 sends; not again after the answer.
    assert [m for _, m in ctx.timers_of(_Resend) if m.req == order.req] == [_Resend(order.req)] * 4


def test_a_placement_is_not_resent_and_a_resend_without_an_order_does_nothing() -> None:
    vm, ctx = make(state=STOPPED)
    vm.receive(ctx, Scan())
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, _Resend(place.req))  # a placement asks the manager: not an order to resend
    ctx.advance(vm, 10 * RESEND_S)
    assert drain(ctx) == [] and ctx.timers_of(_Resend) == []


@pytest.mark.parametrize("kind", list(ORDERS))
def test_orders_still_time_out_under_resends(kind: str) -> None:
    state, send_order, to, timeout_s = ORDERS[kind]
    vm, ctx = make(state=state)
    order = send_order(vm, ctx)
    states = ctx.states()
    ctx.advance(vm, timeout_s - 0.5)
    assert ctx.states() == states
    copies = ctx.take_sent(type(order))
    assert copies == [(to, order, Network.MANAGEMENT)] * resends(timeout_s - 0.5)
    assert drain(ctx) == []

    ctx.advance(vm, 0.5)  # the timeout fires; the resend due at the same instant is stale
    assert ctx.take(type(order)) == []
    if kind == "query":
        ask = ctx.take_one(VerdictRequest, to="manager")
        assert ask == VerdictRequest("vm1", "h1", ask.req)
        assert ctx.states() == states == [UNKNOWN]
    else:
        assert ctx.states() == [*states, UNKNOWN]
        expected = [("manager", Release("vm1", "h2"))] if kind == "migrate" else []
        assert drain(ctx) == expected  # only a migration gives its destination's slot back
    ctx.advance(vm, 3 * RESEND_S)
    assert ctx.take(type(order)) == []  # timed out: no more resends


# -- crash loops ------------------------------------------------------------------------------------------


def restart_on_h1(vm: VmActor, ctx: FakeContext) -> None:
    """Answer the placement and the start of an HA restart on h1."""
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place == PlaceRequest("vm1", place.req, "h1", ())
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    start = ctx.take_one(StartVm, to="host/h1")
    assert start == StartVm(SHARED, start.req, ME, "ha")
    vm.receive(ctx, OpReply("h1", "vm1", start.req, True))
    assert ctx.states()[-1] is RUNNING
    assert drain(ctx) == [("manager", Claim("vm1", "h1"))]


def test_crash_loop_backs_off_doubling_up_to_the_max_and_a_stable_run_resets() -> None:
    config = replace(DEFAULT, retry_delay_s=10.0, retry_max_interval_s=50.0)
    vm, ctx = make_started(config=config)
    delays = []
    for _ in range(5):
        ctx.advance(vm, 1.0)  # it ran for 1 s only since its start
        ctx.published.clear()
        crash(vm, ctx)
        assert ctx.states() == [STOPPING, STOPPED]
        assert drain(ctx) == [("manager", Release("vm1", "h1"))]  # no restart at once
        delay, _msg = ctx.timers_of(_Retry)[-1]
        delays.append(delay)
        vm.receive(ctx, Scan())  # a retry is pending: the scan does not jump the queue
        ctx.advance(vm, delay - 0.5)
        assert drain(ctx) == [] and ctx.states() == [STOPPING, STOPPED]
        ctx.advance(vm, 0.5)
        restart_on_h1(vm, ctx)
        assert ctx.states() == [STOPPING, STOPPED, STARTING, RUNNING]
    assert delays == [10.0, 20.0, 40.0, 50.0, 50.0]

    # A crash after a stable run restarts at once and resets the delay.
    retries = len(ctx.timers_of(_Retry))
    ctx.advance(vm, config.retry_delay_s)
    ctx.published.clear()
    crash(vm, ctx)
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    restart_on_h1(vm, ctx)
    assert len(ctx.timers_of(_Retry)) == retries

    ctx.advance(vm, 1.0)  # the next crash loop starts over from the configured delay
    crash(vm, ctx)
    assert ctx.take(Release) == [Release("vm1", "h1")] and drain(ctx) == []
    assert ctx.timers_of(_Retry)[-1][0] == config.retry_delay_s


def test_a_vm_found_running_counts_as_stable() -> None:
    """Nobody knows when a VM the actor found running started: its first crash is not
    taken for a crash loop."""
    vm, ctx = make()
    crash(vm, ctx)
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    place = ctx.take_one(PlaceRequest)
    assert place == PlaceRequest("vm1", place.req, "h1", ())
    assert ctx.timers_of(_Retry) == []


@pytest.mark.parametrize(("ran_s", "at_once"), [(DEFAULT.retry_delay_s - 0.1, False),
                                                (DEFAULT.retry_delay_s, True)],
                         ids=["just-short", "just-long-enough"])
def test_crash_loop_threshold_is_the_retry_delay_since_the_start(ran_s: float, at_once: bool) -> None:
    vm, ctx = make(state=STOPPED)
    order_start(vm, ctx)  # on h2
    ctx.advance(vm, 100.0)
    start = ctx.take(StartVm)[0]
    vm.receive(ctx, OpReply("h2", "vm1", start.req, True))  # Running from 100 s on
    ctx.advance(vm, ran_s)
    drain(ctx)
    crash(vm, ctx, host="h2")
    assert ctx.states() == [STARTING, RUNNING, STOPPING, STOPPED]
    assert ctx.take(Release) == [Release("vm1", "h2")]
    if at_once:
        place = ctx.take_one(PlaceRequest)
        assert place == PlaceRequest("vm1", place.req, "h2", ())
        assert ctx.timers_of(_Retry) == []
    else:
        assert drain(ctx) == []
        assert [d for d, _ in ctx.timers_of(_Retry)] == [DEFAULT.retry_delay_s]


# -- fencing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settled", [False, True], ids=["soon-after-start", "after-a-stable-run"])
def test_fenced_restart_excludes_the_fencing_host_once(settled: bool) -> None:
    vm, ctx = make_started()
    if settled:
        settle(vm, ctx)
    crash(vm, ctx, StopReason.FENCED)  # a fence is no crash loop: restart at once
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.published[-1] == VmViewChanged("vm1", STOPPED, None)
    assert [type(m) for _, m, _ in ctx.sent] == [Release, PlaceRequest]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place == PlaceRequest("vm1", place.req, "h1", ("h1",))
    assert drain(ctx) == []
    assert ctx.timers_of(_Retry) == []

    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    start = ctx.take_one(StartVm, to="host/h2")
    assert start == StartVm(SHARED, start.req, ME, "ha")
    vm.receive(ctx, OpReply("h2", "vm1", start.req, True))
    assert ctx.states() == [STOPPING, STOPPED, STARTING, RUNNING]
    assert ctx.published[-1] == VmViewChanged("vm1", RUNNING, "h2")
    assert drain(ctx) == [("manager", Claim("vm1", "h2"))]

    # The exclusion was for that one restart: a later crash on h2 may restart there.
    settle(vm, ctx)
    crash(vm, ctx, host="h2")
    assert ctx.take(Release) == [Release("vm1", "h2")]
    place = ctx.take_one(PlaceRequest)
    assert place == PlaceRequest("vm1", place.req, "h2", ())


# -- failure reports and the manager's cross-check --------------------------------------------------


def test_every_failure_report_is_acknowledged_even_when_ignored() -> None:
    vm, ctx = make(state=STOPPED)
    for host, seq in (("h1", 7), ("h2", 7), ("h1", 7), ("h1", 8)):
        vm.receive(ctx, GuestFailed(host, "vm1", StopReason.CRASHED, seq))
    # Each with the number of the report it answers: the host stops repeating that one.
    assert drain(ctx) == [("host/h1", FailureAck("vm1", 7)), ("host/h2", FailureAck("vm1", 7)),
                          ("host/h1", FailureAck("vm1", 7)), ("host/h1", FailureAck("vm1", 8))]
    assert ctx.published == []


def test_verify_asks_the_host_only_about_a_running_guest_there() -> None:
    vm, ctx = make()
    vm.receive(ctx, Verify("h2"))  # not its host
    assert drain(ctx) == []
    vm.receive(ctx, Verify("h1"))
    query = ctx.take_one(QueryVm, to="host/h1")
    assert query == QueryVm("vm1", query.req, ME)
    vm.receive(ctx, Verify("h1"))  # a query is in flight already
    assert drain(ctx) == []
    vm.receive(ctx, OpReply("h1", "vm1", query.req, True))
    assert ctx.states() == [] and drain(ctx) == []

    vm.receive(ctx, Verify("h1"))
    query = ctx.take_one(QueryVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", query.req, False))  # it died unseen
    assert ctx.states() == [STOPPING, STOPPED]  # shown as a crash is
    assert ctx.take(Release) == [Release("vm1", "h1")]
    assert ctx.take_one(PlaceRequest).prefer == "h1"

    stopped, sctx = make(state=STOPPED)
    stopped.receive(sctx, Verify("h1"))
    assert drain(sctx) == []


# -- bugs ------------------------------------------------------------------------------------------------


def test_user_stop_during_an_ha_placement_is_honoured() -> None:
    vm, ctx = make()
    settle(vm, ctx)
    crash(vm, ctx)
    place = ctx.take_one(PlaceRequest)
    ctx.take(Release)
    vm.receive(ctx, UserStopVm("vm1", no_restart=True))  # the user wants it to stay down
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    assert ctx.take(StartVm) == []
    assert ctx.states()[-1] is STOPPED

@pytest.mark.parametrize("confirmed", [False, True], ids=["while-starting", "running-again"])
def test_a_repeated_failure_report_does_not_stop_the_restarted_vm(confirmed: bool) -> None:
    vm, ctx = make()
    report = GuestFailed("h1", "vm1", StopReason.CRASHED, 41)
    vm.receive(ctx, report)  # our FailureAck for it is lost: h1 repeats the report
    assert ctx.take_sent(FailureAck) == [("host/h1", FailureAck("vm1", 41), Network.MANAGEMENT)]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    start = ctx.take_one(StartVm, to="host/h1")
    if confirmed:
        vm.receive(ctx, OpReply("h1", "vm1", start.req, True))
        assert ctx.take_sent(Claim) == [("manager", Claim("vm1", "h1"), Network.MANAGEMENT)]
    states = ctx.states()
    assert states == [STOPPING, STOPPED, STARTING, *([RUNNING] if confirmed else [])]

    ctx.advance(vm, 0.5)
    ctx.take(StartVm)  # resends of a start still in flight
    vm.receive(ctx, report)  # the repeat: acknowledge it again, and nothing more
    assert drain(ctx) == [("host/h1", FailureAck("vm1", 41))]
    assert ctx.states() == states
    if not confirmed:
        vm.receive(ctx, OpReply("h1", "vm1", start.req, True))  # the start is still awaited
        assert ctx.states() == [*states, RUNNING]
        assert drain(ctx) == [("manager", Claim("vm1", "h1"))]


# -- failure reports are numbered: a repeat is acknowledged, not acted on ------------------------------


def test_a_failure_report_is_acted_on_once_per_host_and_number() -> None:
    vm, ctx = make()  # found running: its first crash restarts at once
    first = GuestFailed("h1", "vm1", StopReason.CRASHED, 7)
    vm.receive(ctx, first)
    assert ctx.take_sent(FailureAck) == [("host/h1", FailureAck("vm1", 7), Network.MANAGEMENT)]
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    restart_on_h1(vm, ctx)
    settle(vm, ctx)
    ctx.published.clear()

    for _ in range(3):  # repeats of the report already handled (our acks were lost)
        vm.receive(ctx, first)
        assert drain(ctx) == [("host/h1", FailureAck("vm1", 7))]
    assert ctx.published == []

    vm.receive(ctx, GuestFailed("h1", "vm1", StopReason.CRASHED, 8))  # a new failure
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.take_sent(FailureAck) == [("host/h1", FailureAck("vm1", 8), Network.MANAGEMENT)]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    place = ctx.take_one(PlaceRequest)
    assert place == PlaceRequest("vm1", place.req, "h1", ())
    assert drain(ctx) == []

    # Another host numbers its own failures: the same number from h2 is news.
    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    start = ctx.take_one(StartVm, to="host/h2")
    vm.receive(ctx, OpReply("h2", "vm1", start.req, True))
    assert ctx.take(Claim) == [Claim("vm1", "h2")]
    settle(vm, ctx)
    ctx.published.clear()
    vm.receive(ctx, GuestFailed("h2", "vm1", StopReason.CRASHED, 8))
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.take_sent(FailureAck) == [("host/h2", FailureAck("vm1", 8), Network.MANAGEMENT)]
    assert ctx.take(Release) == [Release("vm1", "h2")]
    assert ctx.take_one(PlaceRequest).prefer == "h2"


# -- HA switched off while an HA start is in flight -------------------------------------------------------


def test_an_ha_start_is_not_resent_while_ha_is_switched_off_but_its_answer_counts() -> None:
    vm, ctx = make(state=STOPPED)
    start = order_start(vm, ctx)
    ctx.advance(vm, 2 * RESEND_S)
    assert ctx.take_copies(StartVm, to="host/h2") == (start, 2)
    vm.receive(ctx, ConfigPush(replace(DEFAULT, enable=False)))
    ctx.advance(vm, 10 * RESEND_S)
    assert ctx.take(StartVm) == []  # the host would refuse it now: do not press it
    assert drain(ctx) == []
    vm.receive(ctx, OpReply("h2", "vm1", start.req, True))  # the host took it before the switch
    assert ctx.states() == [STARTING, RUNNING]
    assert drain(ctx) == [("manager", Claim("vm1", "h2"))]
    ctx.advance(vm, START_TIMEOUT_S)
    assert drain(ctx) == [] and ctx.states() == [STARTING, RUNNING]


def test_an_unanswered_ha_start_still_times_out_while_ha_is_switched_off() -> None:
    vm, ctx = make(state=STOPPED)
    start = order_start(vm, ctx)
    vm.receive(ctx, ConfigPush(replace(DEFAULT, enable=False)))
    ctx.advance(vm, START_TIMEOUT_S)
    assert ctx.take(StartVm) == []
    assert ctx.states() == [STARTING, UNKNOWN]  # it may run there: find out, as usual
    assert drain(ctx) == []
    ctx.advance(vm, DEFAULT.host_check_interval_s)
    query = ctx.take_one(QueryVm, to="host/h2")
    vm.receive(ctx, OpReply("h2", "vm1", query.req, False))
    assert ctx.states() == [STARTING, UNKNOWN, STOPPED]
    assert drain(ctx) == [("manager", Release("vm1", "h2"))]  # no restart: HA is off
    assert start.cause == "ha"


def test_a_user_start_is_resent_while_ha_is_switched_off() -> None:
    vm, ctx = make(state=STOPPED, config=replace(DEFAULT, enable=False))
    vm.receive(ctx, UserStartVm("vm1"))
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    start = ctx.take_one(StartVm, to="host/h2")
    assert start == StartVm(SHARED, start.req, ME, "user")
    ctx.advance(vm, 3 * RESEND_S)
    assert ctx.take_copies(StartVm, to="host/h2") == (start, 3)


def test_a_refused_ha_start_waits_for_ha_to_be_switched_on() -> None:
    vm, ctx = make(state=STOPPED)
    start = order_start(vm, ctx)
    vm.receive(ctx, ConfigPush(replace(DEFAULT, enable=False)))
    vm.receive(ctx, OpReply("h2", "vm1", start.req, False, "HA is switched off"))
    assert ctx.states() == [STARTING, STOPPED]
    assert drain(ctx) == [("manager", Release("vm1", "h2"))]  # not tried elsewhere
    vm.receive(ctx, Scan())
    ctx.advance(vm, 3600.0)
    assert drain(ctx) == []
    vm.receive(ctx, ConfigPush(DEFAULT))
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place == PlaceRequest("vm1", place.req, "h2", ())


# -- a crash before the start was confirmed ------------------------------------------------------------


@pytest.mark.parametrize("ran_s", [0.0, DEFAULT.retry_delay_s + 1.0], ids=["at-once", "long-after-the-order"])
def test_a_crash_while_starting_backs_off(ran_s: float) -> None:
    """A guest that dies before its start was confirmed never ran stably, however long ago
    the VM last did: found running (stable as far as anyone knows), crashed, restarted on
    h1, and dead again while Starting: the restart waits retry_delay_s."""
    vm, ctx = make()
    crash(vm, ctx)
    place = ctx.take_one(PlaceRequest)
    ctx.take(Release)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    start = ctx.take_one(StartVm, to="host/h1")
    ctx.advance(vm, ran_s)
    assert ran_s < START_TIMEOUT_S and vm.state is STARTING
    ctx.take(StartVm)  # resends
    ctx.published.clear()
    crash(vm, ctx, started_by=start.req)  # the guest died before the start's answer came
    assert ctx.states() == [STOPPING, STOPPED]
    assert drain(ctx) == [("manager", Release("vm1", "h1"))]  # no restart at once
    assert [d for d, _ in ctx.timers_of(_Retry)] == [DEFAULT.retry_delay_s]
    vm.receive(ctx, OpReply("h1", "vm1", start.req, True))  # the start's answer, now stale
    ctx.advance(vm, DEFAULT.retry_delay_s - 0.5)
    assert drain(ctx) == [] and ctx.states() == [STOPPING, STOPPED]
    ctx.advance(vm, 0.5)
    place = ctx.take_one(PlaceRequest)
    assert place == PlaceRequest("vm1", place.req, "h1", ())


def test_the_vm_tells_the_manager_when_a_scan_can_make_it_act() -> None:
    """Scannable(True) on entering Stopped or Unknown, Scannable(False) on leaving them."""
    from actors.messages import Scannable

    vm, ctx = make()
    vm.receive(ctx, GuestFailed("h1", "vm1", StopReason.CRASHED, 1))
    assert ctx.scannable == [Scannable("vm1", True)]  # Running -> Stopping -> Stopped
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    assert ctx.scannable == [Scannable("vm1", True), Scannable("vm1", False)]  # -> Starting


def test_request_ids_start_at_a_random_point_drawn_at_the_first_operation() -> None:
    """Agents remember answered (sender, req) pairs, so a restarted VM actor must not reuse
    its previous incarnation's ids; the draw waits for the first operation, because most
    VMs never operate and a generator is made on first use."""
    vm, ctx = make(state=STOPPED)
    assert vm.req == 0  # nothing drawn at start
    vm.receive(ctx, UserStartVm("vm1"))
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place.req == Random(0).randrange(1, 1 << 40) + 1  # FakeContext draws from Random(0)
    other = VmActor(VmInit(SHARED, HaLevel.NEVER_STOP, STOPPED, "h1"), DEFAULT)
    other_ctx = FakeContext(address=ME, random=Random(1))  # the same VM, a later incarnation
    other.on_start(other_ctx)
    other.receive(other_ctx, UserStartVm("vm1"))
    assert other_ctx.take_one(PlaceRequest, to="manager").req != place.req


def test_a_start_names_the_boot_of_the_host_the_manager_placed_it_on() -> None:
    vm, ctx = make()
    crash(vm, ctx)
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1", boot="h1-boot-7"))
    assert ctx.take_one(StartVm, to="host/h1").for_boot == "h1-boot-7"


def test_a_report_about_the_run_before_a_start_does_not_end_the_start() -> None:
    """The guest was fenced, the VM is restarted on the same host, and the fence's report,
    repeated until acknowledged, comes after the new order: acknowledged, and nothing more."""
    vm, ctx = make()
    crash(vm, ctx, reason=StopReason.FENCED)
    place = ctx.take_one(PlaceRequest)
    ctx.take(Release)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    start = ctx.take_one(StartVm, to="host/h1")
    ctx.published.clear()
    crash(vm, ctx, reason=StopReason.FENCED)  # a repeat under a new number, about the old run
    assert ctx.states() == [] and vm.state is STARTING
    vm.receive(ctx, OpReply("h1", "vm1", start.req, True))
    assert ctx.states() == [RUNNING]


@pytest.mark.parametrize("change", [UserSetHa("vm1", HaLevel.NONE), UserStopVm("vm1", no_restart=True)],
                         ids=["level-none", "no-restart"])
def test_an_ha_start_is_not_repeated_once_the_rules_forbid_it(change: object) -> None:
    """A host cut off when the order went out may take a repeat much later, after it
    rebooted: by then HA must not start this VM."""
    vm, ctx = make()
    crash(vm, ctx)
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    ctx.take_one(StartVm, to="host/h1")
    vm.receive(ctx, change)
    ctx.take(StartVm)
    ctx.advance(vm, 5 * RESEND_S)
    assert ctx.take(StartVm) == []
