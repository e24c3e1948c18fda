"""VmActor driven by hand through a FakeContext: the test plays the manager and the hosts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakes import FakeContext

from actors.config import DEFAULT, HaConfig
from actors.inventory import VmDef, VmInit
from actors.messages import (
    ConfigPush,
    Evacuate,
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
    UserStartVm,
    UserStopVm,
    Verdict,
    VerdictRequest,
    VmViewChanged,
)
from actors.placement import NoPlace
from actors.states import HaLevel, StopReason, VmState
from actors.vm import START_TIMEOUT_S, STOP_TIMEOUT_S, VmActor, _Retry

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


def crash_and_clean(actor: VmActor, ctx: FakeContext, reason: StopReason = StopReason.CRASHED) -> None:
    """The guest dies on h1; the actor force-stops its remains and h1 confirms."""
    actor.receive(ctx, GuestFailed("h1", "vm1", reason))
    stop = ctx.take_one(StopVm, to="host/h1")
    assert stop == StopVm("vm1", stop.req, ME, force=True)
    actor.receive(ctx, OpReply("h1", "vm1", stop.req, True))


# -- crash of a guest on a healthy host -------------------------------------------------------------


def test_crash_on_healthy_host_restarts_there() -> None:
    vm, ctx = make()
    vm.receive(ctx, GuestFailed("h1", "vm1", StopReason.CRASHED))
    assert ctx.states() == [STOPPING]
    stop = ctx.take_one(StopVm, to="host/h1")
    assert stop == StopVm("vm1", stop.req, ME, force=True)
    assert drain(ctx) == []

    vm.receive(ctx, OpReply("h1", "vm1", stop.req, True))
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.published[-1] == VmViewChanged("vm1", STOPPED, None)
    sent = drain(ctx)
    assert len(sent) == 2
    assert sent[0] == ("manager", Release("vm1", "h1"))
    to, place = sent[1]
    assert to == "manager" and isinstance(place, PlaceRequest)
    assert place == PlaceRequest("vm1", place.req, prefer="h1", exclude=())

    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    assert ctx.states()[-1] is STARTING
    start = ctx.take_one(StartVm, to="host/h1")
    assert start == StartVm(SHARED, start.req, ME, "ha")
    assert drain(ctx) == []

    vm.receive(ctx, OpReply("h1", "vm1", start.req, True))
    assert ctx.states() == [STOPPING, STOPPED, STARTING, RUNNING]
    assert ctx.published[-1] == VmViewChanged("vm1", RUNNING, "h1")
    assert drain(ctx) == []


def test_crash_cleanup_unanswered_still_restarts() -> None:
    """The host itself reported the guest dead: a lost stop reply must not block recovery."""
    vm, ctx = make()
    vm.receive(ctx, GuestFailed("h1", "vm1", StopReason.CRASHED))
    ctx.take_one(StopVm, to="host/h1")
    ctx.advance(vm, STOP_TIMEOUT_S - 0.5)
    assert ctx.states() == [STOPPING] and drain(ctx) == []
    ctx.advance(vm, 0.5)
    assert ctx.states() == [STOPPING, STOPPED]
    sent = drain(ctx)
    assert sent[0] == ("manager", Release("vm1", "h1"))
    assert [type(m) for _, m in sent] == [Release, PlaceRequest]


def test_fenced_guest_restarts_on_another_host() -> None:
    vm, ctx = make()
    crash_and_clean(vm, ctx, StopReason.FENCED)
    assert ctx.take(Release) == [Release("vm1", "h1")]
    place = ctx.take_one(PlaceRequest, to="manager")
    assert place.exclude == ("h1",)
    assert ctx.states() == [STOPPING, STOPPED]


def test_guest_failed_on_another_host_is_ignored() -> None:
    vm, ctx = make()
    vm.receive(ctx, GuestFailed("h2", "vm1", StopReason.CRASHED))
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
    crash_and_clean(vm, ctx)
    assert len(ctx.take(PlaceRequest)) == 1


def test_plain_user_stop_of_a_neverstop_vm_is_undone() -> None:
    vm, ctx = make()
    vm.receive(ctx, UserStopVm("vm1"))
    stop = ctx.take_one(StopVm, to="host/h1")
    vm.receive(ctx, OpReply("h1", "vm1", stop.req, True))
    assert ctx.states() == [STOPPING, STOPPED]
    assert ctx.take(Release) == [Release("vm1", "h1")]
    assert ctx.take_one(PlaceRequest).prefer == "h1"


def test_level_none_is_not_restarted_after_a_crash() -> None:
    vm, ctx = make(level=HaLevel.NONE)
    crash_and_clean(vm, ctx)
    assert ctx.states() == [STOPPING, STOPPED]
    assert drain(ctx) == [("manager", Release("vm1", "h1"))]
    vm.receive(ctx, Scan())
    ctx.advance(vm, 3600.0)
    assert drain(ctx) == []


def test_ha_disabled_means_no_restart_and_enabling_restarts() -> None:
    vm, ctx = make()
    vm.receive(ctx, ConfigPush(replace(DEFAULT, enable=False)))
    crash_and_clean(vm, ctx)
    assert ctx.states() == [STOPPING, STOPPED]
    assert drain(ctx) == [("manager", Release("vm1", "h1"))]
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
    ctx.take_one(QueryVm, to="host/h1")
    ctx.advance(vm, DEFAULT.ping_timeout_s)
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
    assert drain(ctx) == []


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
        ctx.take_one(QueryVm, to="host/h1")
        ctx.advance(vm, config.ping_timeout_s)
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
    ctx.take_one(StartVm, to="host/h2")
    ctx.advance(vm, START_TIMEOUT_S - 0.5)
    assert ctx.states() == [STARTING]
    ctx.advance(vm, 0.5)
    assert ctx.states() == [STARTING, UNKNOWN]
    assert drain(ctx) == []  # no Release: the guest may be running there

    ctx.advance(vm, DEFAULT.host_check_interval_s)
    query = ctx.take_one(QueryVm, to="host/h2")
    ctx.advance(vm, DEFAULT.ping_timeout_s)  # unanswered: ask the manager
    ask = ctx.take_one(VerdictRequest, to="manager")
    assert ask.host == "h2"
    vm.receive(ctx, Verdict("h2", ask.req, connected=True, gone_pools=(), all_gone=False))
    assert drain(ctx) == []
    ctx.advance(vm, 1.0)
    query = ctx.take_one(QueryVm, to="host/h2")
    vm.receive(ctx, OpReply("h2", "vm1", query.req, True))
    assert ctx.states() == [STARTING, UNKNOWN, RUNNING]
    assert ctx.published[-1] == VmViewChanged("vm1", RUNNING, "h2")
    assert drain(ctx) == []


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
    assert drain(ctx) == [("manager", Release("vm1", "h1"))]

    # It lives on h2 now: news about h1 is not about it.
    vm.receive(ctx, GuestFailed("h1", "vm1", StopReason.CRASHED))
    vm.receive(ctx, HostEvent("h1", connected=False, gone_pools=(), all_gone=True))
    assert drain(ctx) == [] and ctx.states() == [MIGRATING, RUNNING]


def test_failed_migration_keeps_the_vm_on_its_host() -> None:
    vm, ctx = make()
    vm.receive(ctx, Evacuate("h1"))
    place = ctx.take_one(PlaceRequest)
    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    move = ctx.take_one(MigrateVm)
    vm.receive(ctx, OpReply("h1", "vm1", move.req, False, "migration failed"))
    assert drain(ctx) == [("manager", Release("vm1", "h2"))]
    assert ctx.published[-1] == VmViewChanged("vm1", RUNNING, "h1")


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
    vm.receive(ctx, GuestFailed("h1", "vm1", StopReason.CRASHED))
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
    assert drain(ctx) == [("manager", Release("vm1", "h3"))] and ctx.states() == [STOPPING, STOPPED]

    vm.receive(ctx, PlaceReply("vm1", place.req, "h2"))
    start = ctx.take_one(StartVm, to="host/h2")
    vm.receive(ctx, PlaceReply("vm1", place.req, "h3"))  # duplicate placement: slot given back
    ctx.advance(vm, STOP_TIMEOUT_S)  # the cleanup's timeout fires, stale
    assert drain(ctx) == [("manager", Release("vm1", "h3"))]
    assert ctx.states() == [STOPPING, STOPPED, STARTING]

    vm.receive(ctx, OpReply("h2", "vm1", start.req, True))
    ctx.advance(vm, START_TIMEOUT_S)  # the start's timeout fires, stale
    vm.receive(ctx, Verdict("h2", start.req, connected=False, gone_pools=("nfs",), all_gone=True))
    assert drain(ctx) == []
    assert ctx.states() == [STOPPING, STOPPED, STARTING, RUNNING]


# -- bugs ------------------------------------------------------------------------------------------------


def test_user_stop_during_an_ha_placement_is_honoured() -> None:
    vm, ctx = make()
    crash_and_clean(vm, ctx)
    place = ctx.take_one(PlaceRequest)
    ctx.take(Release)
    vm.receive(ctx, UserStopVm("vm1", no_restart=True))  # the user wants it to stay down
    vm.receive(ctx, PlaceReply("vm1", place.req, "h1"))
    assert ctx.take(StartVm) == []
    assert ctx.states()[-1] is STOPPED

