"""HostAgent driven by hand: the test plays the manager, the storage pools and the peers."""

from __future__ import annotations

from dataclasses import replace
from random import Random

import pytest
from fakes import FakeContext, FakeHypervisor, FakeWatchdog

from actors.config import DEFAULT, HaConfig
from actors.host_agent import (
    ANSWERS_KEPT,
    FAILURE_RESEND_S,
    FAILURE_RESENDS_MAX,
    HostAgent,
    _CheckDone,
    _HeartbeatTick,
)
from actors.inventory import VmDef
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
from actors.policy import host_fence_after_s
from actors.states import Network, StopReason, Strategy
from actors.storage_pool import StoragePool

FORCE = replace(DEFAULT, strategy=Strategy.FORCE)
PERMISSIVE = replace(DEFAULT, strategy=Strategy.PERMISSIVE)
POOLS = ("nfs", "ceph")
GUESTS = {"vm-n": "nfs", "vm-c": "ceph", "vm-l": "local-h1"}
VM_N = VmDef("vm-n", cpu=1, memory_mib=1024, pool="nfs", pool_shared=True, cluster="c1")
VM_X = VmDef("vm-x", cpu=1, memory_mib=1024, pool="nfs", pool_shared=True, cluster="c1")


def make(config: HaConfig = FORCE, pools: tuple[str, ...] = POOLS,
         guests: dict[str, str] | None = None, name: str = "h1") -> tuple[HostAgent, FakeContext]:
    hv = FakeHypervisor(guests=dict(GUESTS if guests is None else guests))
    ctx = FakeContext(address=f"host/{name}", hypervisor=hv)
    agent = HostAgent(name, pools, config)
    agent.on_start(ctx)
    return agent, ctx


def hv_of(ctx: FakeContext) -> FakeHypervisor:
    assert isinstance(ctx.hypervisor, FakeHypervisor)
    return ctx.hypervisor


def run(agent: HostAgent, ctx: FakeContext, until: float, ack_after: dict[str, float]) -> None:
    """Move time to ``until``; each pool in ``ack_after`` acknowledges every heartbeat write
    that many seconds after it was sent; other pools never answer."""
    while True:
        for to, write, _ in ctx.take_sent(HeartbeatWrite):
            pool = to.removeprefix("pool/")
            if pool in ack_after:
                ctx.deliver_later(ack_after[pool], HeartbeatAck(pool, write.seq))
        due = [t for t, _ in ctx.pending() if t <= until]
        if not due:
            break
        ctx.advance(agent, due[0] - ctx.clock)
    ctx.advance(agent, until - ctx.clock)


def pong(agent: HostAgent, ctx: FakeContext, seq: int = 9) -> Pong:
    agent.receive(ctx, Ping(seq))
    return ctx.take_one(Pong, to="manager")


# -- liveness --------------------------------------------------------------------------------------


def test_on_start_announces_the_host_and_writes_a_heartbeat_to_each_shared_pool() -> None:
    _, ctx = make()
    assert ctx.sent[0] == ("manager", HostBooted("h1", "boot-1"), Network.MANAGEMENT)
    writes = ctx.take_sent(HeartbeatWrite)
    assert [(to, net) for to, _, net in writes] == [("pool/nfs", Network.STORAGE),
                                                    ("pool/ceph", Network.STORAGE)]
    seqs = [w.seq for _, w, _ in writes]
    assert all(w.host == "h1" for _, w, _ in writes) and seqs == sorted(set(seqs))
    assert ctx.timers == [(FORCE.self_fencer_interval_s, _HeartbeatTick())]


def test_no_shared_pool_no_heartbeat() -> None:
    _, ctx = make(pools=())
    assert ctx.sent == [("manager", HostBooted("h1", "boot-1"), Network.MANAGEMENT)]
    assert ctx.timers == []


def test_ping_answers_with_running_guests_and_fresh_pools() -> None:
    agent, ctx = make(config=PERMISSIVE, guests={"vm-b": "nfs", "vm-a": "local-h1"})
    assert pong(agent, ctx, 4) == Pong("h1", 4, ("vm-a", "vm-b"), ("nfs", "ceph"), boot="boot-1")
    run(agent, ctx, 300.0, {"nfs": 0.5})  # ceph never acknowledges
    assert pong(agent, ctx, 5) == Pong("h1", 5, ("vm-a", "vm-b"), ("nfs",), boot="boot-1")


def test_ping_answers_with_the_revision_of_the_config_it_applied() -> None:
    agent, ctx = make(PERMISSIVE)
    assert pong(agent, ctx, 1).config_revision == 0
    newer = PERMISSIVE.with_key("ha.strategy", "Force").with_key("ha.enable", False)
    assert newer.revision == 2
    push = ConfigPush(newer)
    agent.receive(ctx, push)
    assert agent.config is newer
    assert ctx.published == [push]  # the runtime may record which config each host applied
    assert pong(agent, ctx, 2) == Pong("h1", 2, ("vm-c", "vm-l", "vm-n"), ("nfs", "ceph"), 2, boot="boot-1")


FAST = PERMISSIVE.with_key("ha.host.selfFencer.interval", 5)  # revision 1


@pytest.mark.parametrize(("before", "armed", "after", "armed_after"), [
    (FAST.with_key("ha.strategy", "Force"), 2, ("ha.strategy", "Permissive"), None),
    (FAST.with_key("ha.strategy", "Force"), 2, ("ha.host.selfFencer.maxAttempts", 9), 3),
    (FAST.with_key("ha.strategy", "Force"), 2, ("ha.enable", False), None),
    (FAST.with_key("ha.enable", False), None, ("ha.strategy", "Force"), None),
    (FAST, None, ("ha.strategy", "Force"), 2),
], ids=["force-to-permissive", "force-retuned", "force-switched-off", "disabled", "permissive-to-force"])
def test_each_heartbeat_says_under_which_revision_the_fencer_is_armed(
        before: HaConfig, armed: int | None, after: tuple[str, object], armed_after: int | None) -> None:
    agent, ctx = make(before)
    first = ctx.take(HeartbeatWrite)  # nothing acknowledged yet: the watchdog is not petted
    assert first == [HeartbeatWrite("h1", agent.hb_seq - 1, None), HeartbeatWrite("h1", agent.hb_seq, None)]
    for pool, write in zip(POOLS, first, strict=True):
        agent.receive(ctx, HeartbeatAck(pool, write.seq))
    ctx.advance(agent, before.self_fencer_interval_s)
    assert [w.armed for w in ctx.take(HeartbeatWrite)] == [armed, armed]
    # A new config takes effect with the next write: armed under its revision, or off.
    agent.receive(ctx, ConfigPush(before.with_key(*after)))
    assert ctx.take(HeartbeatWrite) == []
    ctx.advance(agent, before.self_fencer_interval_s)
    assert [w.armed for w in ctx.take(HeartbeatWrite)] == [armed_after, armed_after]


def watchdog_of(ctx: FakeContext) -> FakeWatchdog:
    assert isinstance(ctx.watchdog, FakeWatchdog)
    return ctx.watchdog


def test_the_watchdog_is_petted_each_tick_once_every_pool_acknowledged_or_was_fenced() -> None:
    """A restarted agent knows nothing of its predecessor's last write: it must not push
    the watchdog's reset further out before each pool has answered it, or been fenced."""
    agent, ctx = make(FORCE, guests={"vm-n": "nfs", "vm-c": "ceph"})
    interval = FORCE.self_fencer_interval_s
    run(agent, ctx, 3 * interval, {"nfs": 0.5})  # ceph is cut off since before this start
    assert watchdog_of(ctx).pets == []
    ctx.advance(agent, interval)
    assert {w.armed for w in ctx.take(HeartbeatWrite)} == {None}  # and the writes do not claim it
    run(agent, ctx, host_fence_after_s(FORCE) + interval, {"nfs": 0.5})
    assert set(hv_of(ctx).fences) == {"ceph"}  # ceph's guests are dead: nothing left to cover there
    pets = watchdog_of(ctx).pets
    assert pets and set(pets) == {FORCE.watchdog_timeout_s} and FORCE.watchdog_timeout_s == 15.0
    before = len(pets)
    run(agent, ctx, ctx.clock + 3 * interval, {"nfs": 0.5})
    assert len(watchdog_of(ctx).pets) == before + 3  # then one pet per heartbeat tick
    ctx.advance(agent, interval)
    assert {w.armed for w in ctx.take(HeartbeatWrite)} == {FORCE.revision}


def test_permissive_never_pets_and_switching_to_it_disarms() -> None:
    agent, ctx = make(PERMISSIVE)
    run(agent, ctx, 10 * PERMISSIVE.self_fencer_interval_s, {"nfs": 0.5, "ceph": 0.5})
    assert watchdog_of(ctx).pets == [] and watchdog_of(ctx).disarms == 0
    agent.receive(ctx, ConfigPush(PERMISSIVE.with_key("ha.strategy", "Force")))
    run(agent, ctx, ctx.clock + 2 * PERMISSIVE.self_fencer_interval_s, {"nfs": 0.5, "ceph": 0.5})
    assert len(watchdog_of(ctx).pets) == 2
    agent.receive(ctx, ConfigPush(PERMISSIVE.with_key("ha.enable", False)))
    assert watchdog_of(ctx).disarms == 1  # at once: the agent will not pet any more


def test_a_pet_that_nobody_watches_is_not_claimed() -> None:
    """A watchdog daemon that was never started (or died) covers nothing if the agent dies."""
    agent, ctx = make(FORCE)
    watchdog_of(ctx).watching = False
    run(agent, ctx, 5 * FORCE.self_fencer_interval_s, {"nfs": 0.5, "ceph": 0.5})
    assert watchdog_of(ctx).pets  # it keeps petting: the daemon may come (back)
    ctx.advance(agent, FORCE.self_fencer_interval_s)
    assert {w.armed for w in ctx.take(HeartbeatWrite)} == {None}
    watchdog_of(ctx).watching = True
    ctx.advance(agent, FORCE.self_fencer_interval_s)
    assert {w.armed for w in ctx.take(HeartbeatWrite)} == {FORCE.revision}


def test_a_host_without_a_watchdog_never_claims_its_guests_self_fenced() -> None:
    hv = FakeHypervisor(guests=dict(GUESTS))
    ctx = FakeContext(address="host/h1", hypervisor=hv, watchdog=None)
    agent = HostAgent("h1", POOLS, FORCE)
    agent.on_start(ctx)
    run(agent, ctx, 10 * FORCE.self_fencer_interval_s, {"nfs": 0.5, "ceph": 0.5})
    ctx.advance(agent, FORCE.self_fencer_interval_s)
    writes = ctx.take(HeartbeatWrite)
    assert len(writes) == 2 and {w.armed for w in writes} == {None}


def test_heartbeats_go_out_every_interval_with_increasing_seq() -> None:
    agent, ctx = make()
    ctx.take(HeartbeatWrite)
    seqs: list[int] = []
    for k in range(1, 4):
        ctx.advance(agent, FORCE.self_fencer_interval_s)
        writes = ctx.take_sent(HeartbeatWrite)
        assert [to for to, _, _ in writes] == ["pool/nfs", "pool/ceph"]
        assert ctx.clock == k * FORCE.self_fencer_interval_s
        seqs += [w.seq for _, w, _ in writes]
    assert seqs == sorted(set(seqs))


def test_acknowledged_heartbeats_keep_every_guest_alive_under_force() -> None:
    agent, ctx = make(FORCE)
    run(agent, ctx, 20 * host_fence_after_s(FORCE), {"nfs": 0.5, "ceph": 4.0})
    assert hv_of(ctx).fences == [] and hv_of(ctx).stops == []
    assert ctx.take(GuestFailed) == []
    assert pong(agent, ctx).pools_ok == ("nfs", "ceph")


# -- self-fencing ------------------------------------------------------------------------------------


def test_force_fences_the_guests_of_a_silent_pool_only() -> None:
    agent, ctx = make(FORCE)
    # No write to nfs is ever acknowledged: the 6th in a row (sent at 25 s) is past its
    # 5 s timeout at the 35 s tick (at 30 s it is exactly 5 s old: still in time). That is
    # within the bound the manager relies on, counted from boot as from an acked write.
    fence_at = 35.0
    assert host_fence_after_s(FORCE) == 40.0
    assert fence_at <= host_fence_after_s(FORCE) - FORCE.self_fencer_interval_s
    hv = hv_of(ctx)
    run(agent, ctx, fence_at - 0.5, {"ceph": 0.5})  # nfs never acknowledges
    assert hv.fences == [] and hv.stops == []
    assert ctx.take(GuestFailed) == []

    run(agent, ctx, fence_at, {"ceph": 0.5})
    assert hv.fences == ["nfs"] and hv.stops == []  # killed by the fencer, not stopped
    report = GuestFailed("h1", "vm-n", StopReason.FENCED, agent.failure_seq)
    assert ctx.take_sent(GuestFailed) == [("vm/vm-n", report, Network.MANAGEMENT)]  # nfs's guest only
    agent.receive(ctx, FailureAck("vm-n", report.seq))  # the VM actor got the report

    # While nfs stays silent it is fenced again at every tick (voiding any start on it
    # ordered since), but its guest was reported once.
    run(agent, ctx, 10 * fence_at, {"ceph": 0.5})
    ticks = int((10 * fence_at - fence_at) / FORCE.self_fencer_interval_s)
    assert hv.fences == ["nfs"] * (1 + ticks) and hv.stops == []
    assert ctx.take(GuestFailed) == []
    # The fencer's own kill is not reported a second time as a failure.
    del hv.guests["vm-n"]
    agent.receive(ctx, GuestStopped("vm-n", StopReason.FENCED))
    run(agent, ctx, 11 * fence_at, {"ceph": 0.5})
    assert ctx.take(GuestFailed) == []


@pytest.mark.parametrize("config", [PERMISSIVE, replace(FORCE, enable=False)],
                         ids=["permissive", "force-disabled"])
def test_never_fences_unless_force_and_enabled(config: HaConfig) -> None:
    agent, ctx = make(config)
    run(agent, ctx, 20 * host_fence_after_s(config), {})
    assert hv_of(ctx).fences == [] and hv_of(ctx).stops == []
    assert ctx.take(GuestFailed) == []
    assert pong(agent, ctx).pools_ok == ()  # still honest about its storage


def test_switching_to_force_at_run_time_fences() -> None:
    agent, ctx = make(PERMISSIVE)
    run(agent, ctx, 100.0, {})
    assert hv_of(ctx).fences == []
    agent.receive(ctx, ConfigPush(FORCE))
    run(agent, ctx, 100.0 + FORCE.self_fencer_interval_s, {})
    assert hv_of(ctx).fences == ["nfs", "ceph"]
    assert [(m.vm, m.reason) for m in ctx.take(GuestFailed)] == [("vm-n", StopReason.FENCED),
                                                                  ("vm-c", StopReason.FENCED)]


@pytest.mark.parametrize(("ack_after", "fenced", "ok_at_9_5"), [
    (1.0, False, ("nfs",)),
    (3.0, True, ()),  # the late ack (at 8 s) of the write sent at 5 s is the 2nd failure
    (6.0, True, ("nfs",)),  # that write is counted only when the 10 s tick finds it expired
    (None, True, ("nfs",)),
], ids=["in-time", "late", "after-the-next-tick", "never"])
def test_an_ack_later_than_the_storage_timeout_counts_as_a_failed_write(
        ack_after: float | None, fenced: bool, ok_at_9_5: tuple[str, ...]) -> None:
    config = replace(FORCE, self_fencer_interval_s=5.0, self_fencer_max_attempts=2,
                     self_fencer_storage_timeout_s=2.0)
    agent, ctx = make(config, pools=("nfs",), guests={"vm-n": "nfs"})
    acks = {} if ack_after is None else {"nfs": ack_after}
    # 2 writes in a row (sent at 0 and 5 s) not acknowledged within their 2 s timeout:
    # counted when a late ack comes or at the tick that finds them expired; the fencer
    # acts at the 10 s tick either way.
    fence_at = 10.0
    assert fence_at <= host_fence_after_s(config) - config.self_fencer_interval_s
    run(agent, ctx, 7.5, acks)
    assert pong(agent, ctx).pools_ok == ("nfs",)  # one failure at most so far
    run(agent, ctx, fence_at - 0.5, acks)
    assert hv_of(ctx).fences == []
    assert pong(agent, ctx).pools_ok == ok_at_9_5
    run(agent, ctx, fence_at, acks)
    assert pong(agent, ctx).pools_ok == (() if fenced else ("nfs",))
    assert hv_of(ctx).fences == (["nfs"] if fenced else [])
    reports = ctx.take(GuestFailed)
    assert [(m.vm, m.reason) for m in reports] == ([("vm-n", StopReason.FENCED)] if fenced else [])
    for report in reports:
        agent.receive(ctx, FailureAck("vm-n", report.seq))
    run(agent, ctx, 100.0, acks)  # it stays stale (late acks too): fenced at every tick
    assert hv_of(ctx).fences == (["nfs"] * 19 if fenced else [])
    assert ctx.take(GuestFailed) == []


@pytest.mark.parametrize(("ack_after", "fence_at"), [
    (FORCE.self_fencer_storage_timeout_s - 0.1, None),  # in time, however close
    (FORCE.self_fencer_storage_timeout_s + 0.5, 35.0),  # late, every one
    (None, 35.0),  # never
], ids=["just-in-time", "always-late", "never"])
def test_a_pool_that_always_acknowledges_late_is_fenced_like_a_silent_one(
        ack_after: float | None, fence_at: float | None) -> None:
    """Under Force (5 s interval and timeout, 6 attempts): acks 5.5 s after each write make
    the 6th failure the ack of the write sent at 25 s, at 30.5 s; the 35 s tick fences, the
    very tick that fences a pool that never answers."""
    agent, ctx = make(FORCE, pools=("nfs",), guests={"vm-n": "nfs"})
    acks = {} if ack_after is None else {"nfs": ack_after}
    if fence_at is None:
        run(agent, ctx, 20 * host_fence_after_s(FORCE), acks)
        assert hv_of(ctx).fences == [] and pong(agent, ctx).pools_ok == ("nfs",)
        return
    run(agent, ctx, fence_at - 0.5, acks)
    assert hv_of(ctx).fences == []
    # The 6th late ack (30.5 s) already made the pool stale; the 6th silent write counts at 35 s.
    assert pong(agent, ctx).pools_ok == (() if ack_after is not None else ("nfs",))
    run(agent, ctx, fence_at, acks)
    assert hv_of(ctx).fences == ["nfs"]
    assert ctx.take(GuestFailed) == [GuestFailed("h1", "vm-n", StopReason.FENCED, agent.failure_seq)]
    assert pong(agent, ctx).pools_ok == ()


def test_the_fencer_reports_every_guest_it_kills_also_one_being_stopped() -> None:
    """The fence kills every guest on the pool and reports each, also one whose stop or
    migration was ordered: a migration that then fails would leave its VM actor
    believing in a dead guest. (A VM actor in Stopping ignores the report.)"""
    agent, ctx = make(FORCE, pools=("nfs",), guests={"vm-n": "nfs", "vm-m": "nfs"})
    agent.receive(ctx, StopVm("vm-m", 3, "vm/vm-m", force=False))
    [(vm, token, force)] = hv_of(ctx).stops
    assert (vm, force) == ("vm-m", False)
    run(agent, ctx, 35.0, {})
    assert hv_of(ctx).fences == ["nfs"]
    assert [(m.vm, m.reason) for m in ctx.take(GuestFailed)] == [
        ("vm-m", StopReason.FENCED), ("vm-n", StopReason.FENCED)]
    del hv_of(ctx).guests["vm-m"]
    agent.receive(ctx, GuestStopped("vm-m", StopReason.FENCED))
    agent.receive(ctx, HvDone(token, True))
    assert ctx.take(GuestFailed) == []
    assert ctx.take(OpReply) == [OpReply("h1", "vm-m", 3, True)]


# -- guests -------------------------------------------------------------------------------------------


def test_a_crash_is_reported_to_the_vm_actor() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))
    report = GuestFailed("h1", "vm-c", StopReason.CRASHED, agent.failure_seq)
    assert ctx.sent == [("vm/vm-c", report, Network.MANAGEMENT)]


def test_a_guest_shutting_down_by_itself_is_no_failure() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.SHUTDOWN))
    assert ctx.sent == []


def test_a_stop_it_was_asked_for_is_answered_not_reported() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, StopVm("vm-c", 7, "vm/vm-c", force=True))
    [(vm, token, force)] = hv_of(ctx).stops
    assert (vm, force) == ("vm-c", True)
    agent.receive(ctx, GuestStopped("vm-c", StopReason.DESTROYED))
    agent.receive(ctx, HvDone(token, True))
    assert ctx.sent == [("vm/vm-c", OpReply("h1", "vm-c", 7, True), Network.MANAGEMENT)]
    # A later crash of a guest it started again is news once more.
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))
    assert ctx.take(GuestFailed) == [GuestFailed("h1", "vm-c", StopReason.CRASHED, agent.failure_seq)]


def test_stop_of_a_guest_not_running_is_ok_at_once() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, StopVm("vm-zz", 2, "vm/vm-zz", force=False))
    assert hv_of(ctx).stops == []
    assert ctx.take(OpReply) == [OpReply("h1", "vm-zz", 2, True)]


def test_start_of_a_guest_already_running_is_ok_without_starting() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, StartVm(VM_N, 5, "vm/vm-n", "ha"))
    assert hv_of(ctx).starts == []
    assert ctx.sent == [("vm/vm-n", OpReply("h1", "vm-n", 5, True), Network.MANAGEMENT)]


def test_start_calls_the_hypervisor_and_relays_its_answer() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, StartVm(VM_X, 5, "vm/vm-x", "user"))
    [(vm, token, cause)] = hv_of(ctx).starts
    assert (vm, cause) == (VM_X, "user")
    assert ctx.sent == []
    agent.receive(ctx, HvDone(token + 100, True))  # not ours
    assert ctx.sent == []
    agent.receive(ctx, HvDone(token, False, "no memory"))
    assert ctx.sent == [("vm/vm-x", OpReply("h1", "vm-x", 5, False, "no memory"), Network.MANAGEMENT)]


def test_a_start_ordered_for_an_earlier_boot_of_the_host_is_refused() -> None:
    """The manager names the boot it last heard of: a host that rebooted since refuses,
    since its order may be a resend that outlived the manager's verdict on that boot."""
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, StartVm(VM_X, 5, "vm/vm-x", "ha", for_boot="boot-0"))
    assert hv_of(ctx).starts == []
    assert ctx.take(OpReply) == [OpReply("h1", "vm-x", 5, False, "ordered for an earlier boot of h1")]
    agent.receive(ctx, StartVm(VM_N, 6, "vm/vm-n", "ha", for_boot="boot-0"))  # it runs here: done
    assert ctx.take(OpReply) == [OpReply("h1", "vm-n", 6, True)]
    for req, boot in ((7, "boot-1"), (8, None)):  # this boot, or a boot nobody had heard of
        agent.receive(ctx, StartVm(VM_X, req, "vm/vm-x", "ha", for_boot=boot))
    assert [vm.name for vm, _, _ in hv_of(ctx).starts] == ["vm-x", "vm-x"]


def test_a_failure_report_names_the_start_order_whose_run_died() -> None:
    agent, ctx = make(guests={})
    agent.receive(ctx, StartVm(VM_X, 41, "vm/vm-x", "ha"))
    [(_, token, _)] = hv_of(ctx).starts
    agent.receive(ctx, HvDone(token, True))
    agent.receive(ctx, GuestStopped("vm-x", StopReason.CRASHED))
    [report] = ctx.take(GuestFailed)
    assert report.started_by == 41
    agent.receive(ctx, GuestStopped("vm-x", StopReason.CRASHED))  # a run it did not start
    assert [r.started_by for r in ctx.take(GuestFailed)] == [None]


def test_start_refused_on_a_pool_it_cannot_reach() -> None:
    agent, ctx = make(PERMISSIVE)
    run(agent, ctx, 100.0, {"ceph": 0.5})  # nfs is silent
    ctx.sent.clear()
    agent.receive(ctx, StartVm(VM_X, 5, "vm/vm-x", "ha"))
    assert hv_of(ctx).starts == []
    [reply] = ctx.take(OpReply)
    assert (reply.vm, reply.req, reply.ok) == ("vm-x", 5, False)


def test_an_ha_start_is_refused_while_ha_is_switched_off_and_the_refusal_kept() -> None:
    off = PERMISSIVE.with_key("ha.enable", False)
    agent, ctx = make(off)
    run(agent, ctx, 100.0, {})  # no pool answers either: the switch is what it names
    ctx.sent.clear()
    ha_start = StartVm(VM_X, 5, "vm/vm-x", "ha")
    agent.receive(ctx, ha_start)
    refusal = OpReply("h1", "vm-x", 5, False, "HA is switched off")
    assert ctx.sent == [("vm/vm-x", refusal, MGMT)]
    agent.receive(ctx, StartVm(VM_N, 6, "vm/vm-n", "ha"))  # running already: nothing to do
    assert ctx.take(OpReply) == [refusal, OpReply("h1", "vm-n", 6, True)]
    assert hv_of(ctx).starts == []

    run(agent, ctx, 200.0, {"nfs": 0.5, "ceph": 0.5})
    agent.receive(ctx, ConfigPush(off.with_key("ha.enable", True)))
    ctx.sent.clear()
    agent.receive(ctx, ha_start)  # a late copy of the refused order: the same answer
    assert ctx.sent == [("vm/vm-x", refusal, MGMT)]
    assert hv_of(ctx).starts == []
    ctx.sent.clear()
    agent.receive(ctx, StartVm(VM_X, 7, "vm/vm-x", "ha"))  # a new order: HA is on now
    assert [(vm, cause) for vm, _, cause in hv_of(ctx).starts] == [(VM_X, "ha")]
    assert ctx.sent == []


def test_a_user_start_is_carried_out_while_ha_is_switched_off() -> None:
    agent, ctx = make(replace(PERMISSIVE, enable=False))
    ctx.sent.clear()
    agent.receive(ctx, StartVm(VM_X, 5, "vm/vm-x", "user"))
    [(vm, token, cause)] = hv_of(ctx).starts
    assert (vm, cause) == (VM_X, "user")
    agent.receive(ctx, HvDone(token, True))
    assert ctx.sent == [("vm/vm-x", OpReply("h1", "vm-x", 5, True), MGMT)]


def test_query_and_migrate() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, QueryVm("vm-n", 1, "vm/vm-n"))
    agent.receive(ctx, QueryVm("vm-x", 2, "vm/vm-x"))
    assert ctx.take(OpReply) == [OpReply("h1", "vm-n", 1, True), OpReply("h1", "vm-x", 2, False)]
    agent.receive(ctx, MigrateVm("vm-x", "h2", 3, "vm/vm-x"))
    assert ctx.take(OpReply) == [OpReply("h1", "vm-x", 3, False, "not running here")]
    agent.receive(ctx, MigrateVm("vm-n", "h2", 4, "vm/vm-n"))
    [(vm, dest, token)] = hv_of(ctx).migrations
    assert (vm, dest) == ("vm-n", "h2")
    agent.receive(ctx, GuestStopped("vm-n", StopReason.MIGRATED))
    agent.receive(ctx, HvDone(token, True))
    assert ctx.sent == [("vm/vm-n", OpReply("h1", "vm-n", 4, True), Network.MANAGEMENT)]


# -- repeated orders: VM actors resend until answered -----------------------------------------------

MGMT = Network.MANAGEMENT

# kind -> (the order, the VM actor it answers to)
ORDERS: dict[str, tuple[StartVm | StopVm | MigrateVm, str]] = {
    "start": (StartVm(VM_X, 5, "vm/vm-x", "ha"), "vm/vm-x"),
    "stop": (StopVm("vm-c", 7, "vm/vm-c", force=True), "vm/vm-c"),
    "migrate": (MigrateVm("vm-n", "h2", 4, "vm/vm-n"), "vm/vm-n"),
}


def hv_calls(ctx: FakeContext) -> list[int]:
    """The tokens of every start, stop and migration the hypervisor was asked for."""
    hv = hv_of(ctx)
    return ([t for _, t, _ in hv.starts] + [t for _, t, _ in hv.stops]
            + [t for _, _, t in hv.migrations])


@pytest.mark.parametrize("kind", list(ORDERS))
@pytest.mark.parametrize(("ok", "error"), [(True, ""), (False, "it went wrong")], ids=["ok", "failed"])
def test_a_repeated_order_is_carried_out_once_and_answered_once_per_copy_after(
        kind: str, ok: bool, error: str) -> None:
    agent, ctx = make()
    ctx.sent.clear()
    order, reply_to = ORDERS[kind]
    vm = order.vm.name if isinstance(order, StartVm) else order.vm
    agent.receive(ctx, order)
    agent.receive(ctx, order)  # resent while in progress: dropped
    [token] = hv_calls(ctx)
    assert ctx.sent == []

    agent.receive(ctx, HvDone(token, ok, error))
    reply = OpReply("h1", vm, order.req, ok, error)
    assert ctx.sent == [(reply_to, reply, MGMT)]  # one answer for the one completion
    ctx.sent.clear()
    agent.receive(ctx, HvDone(token, ok, error))  # that token is done: not answered again
    assert ctx.sent == []

    for _ in range(2):  # resent after the answer (it was lost): the same answer, no redo
        agent.receive(ctx, order)
        assert ctx.sent == [(reply_to, reply, MGMT)]
        ctx.sent.clear()
    assert hv_calls(ctx) == [token]


def test_orders_are_told_apart_by_sender_and_request_id() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, StartVm(VM_X, 5, "vm/vm-x", "ha"))
    agent.receive(ctx, StartVm(VM_X, 5, "vm/vm-x-again", "ha"))  # another sender (incarnation)
    agent.receive(ctx, StartVm(VM_X, 6, "vm/vm-x", "ha"))  # another request
    assert len(hv_of(ctx).starts) == 3
    for (_, token, _), (to, req) in zip(hv_of(ctx).starts,
                                        [("vm/vm-x", 5), ("vm/vm-x-again", 5), ("vm/vm-x", 6)],
                                        strict=True):
        agent.receive(ctx, HvDone(token, True))
        assert ctx.take_sent(OpReply) == [(to, OpReply("h1", "vm-x", req, True), MGMT)]


def test_a_repeated_query_is_answered_afresh() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    query = QueryVm("vm-x", 1, "vm/vm-x")
    agent.receive(ctx, query)
    hv_of(ctx).guests["vm-x"] = "nfs"  # it runs now
    agent.receive(ctx, query)
    assert ctx.sent == [("vm/vm-x", OpReply("h1", "vm-x", 1, False), MGMT),
                        ("vm/vm-x", OpReply("h1", "vm-x", 1, True), MGMT)]


def test_the_answers_kept_for_repeats_are_bounded() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    hv = hv_of(ctx)
    for req in range(ANSWERS_KEPT + 1):
        agent.receive(ctx, StartVm(VM_X, req, "vm/vm-x", "ha"))
        agent.receive(ctx, HvDone(hv.starts[-1][1], True))
    assert ctx.take(OpReply) == [OpReply("h1", "vm-x", req, True) for req in range(ANSWERS_KEPT + 1)]
    assert len(hv.starts) == ANSWERS_KEPT + 1
    assert len(agent.answered) == ANSWERS_KEPT
    assert agent.inflight == set() and agent.ops == {}

    # The newest ANSWERS_KEPT are answered from memory ...
    for req in (1, ANSWERS_KEPT):
        agent.receive(ctx, StartVm(VM_X, req, "vm/vm-x", "ha"))
        assert ctx.take(OpReply) == [OpReply("h1", "vm-x", req, True)]
    assert len(hv.starts) == ANSWERS_KEPT + 1
    # ... the oldest was forgotten: its repeat is carried out again.
    agent.receive(ctx, StartVm(VM_X, 0, "vm/vm-x", "ha"))
    assert len(hv.starts) == ANSWERS_KEPT + 2 and ctx.take(OpReply) == []
    assert len(agent.answered) == ANSWERS_KEPT


@pytest.mark.parametrize("case", ["refused-start", "stop-of-a-guest-not-running"])
def test_a_repeat_of_an_order_answered_at_once_gets_the_same_answer(case: str) -> None:
    agent, ctx = make(PERMISSIVE)
    if case == "refused-start":
        run(agent, ctx, 100.0, {"ceph": 0.5})  # nfs is silent
        ctx.sent.clear()
        order: StartVm | StopVm = StartVm(VM_X, 5, "vm/vm-x", "ha")
        agent.receive(ctx, order)
        [first] = ctx.take(OpReply)
        assert first == OpReply("h1", "vm-x", 5, False, "storage pool nfs is not reachable from h1")
        run(agent, ctx, 200.0, {"nfs": 0.5, "ceph": 0.5})  # nfs is back
        assert pong(agent, ctx).pools_ok == ("nfs", "ceph")
    else:
        ctx.sent.clear()
        order = StopVm("vm-x", 7, "vm/vm-x", force=False)
        agent.receive(ctx, order)
        [first] = ctx.take(OpReply)
        assert first == OpReply("h1", "vm-x", 7, True)
        agent.receive(ctx, StartVm(VM_X, 8, "vm/vm-x", "ha"))  # the VM actor starts it again
        [(_, token, _)] = hv_of(ctx).starts
        hv_of(ctx).guests["vm-x"] = "nfs"
        agent.receive(ctx, HvDone(token, True))
        assert ctx.take(OpReply) == [OpReply("h1", "vm-x", 8, True)]
    ctx.sent.clear()
    calls = hv_calls(ctx)

    agent.receive(ctx, order)  # a copy of the first order, late
    assert ctx.sent == [("vm/vm-x", first, MGMT)]
    assert hv_calls(ctx) == calls


# -- failure reports: repeated until acknowledged --------------------------------------------------


def test_a_failure_report_is_repeated_until_acknowledged() -> None:
    agent, ctx = make(pools=())  # no heartbeat: the only timers are the report's
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))
    [report] = ctx.take(GuestFailed)
    assert report == GuestFailed("h1", "vm-c", StopReason.CRASHED, report.seq)
    ctx.advance(agent, FAILURE_RESEND_S / 2)
    assert ctx.sent == []
    ctx.advance(agent, FAILURE_RESEND_S / 2)
    assert ctx.take_sent(GuestFailed) == [("vm/vm-c", report, MGMT)]  # the same report, same number
    agent.receive(ctx, FailureAck("vm-n", report.seq))  # another VM's acknowledgement
    agent.receive(ctx, FailureAck("vm-c", report.seq - 1))  # of an earlier report: not this one
    ctx.advance(agent, 2 * FAILURE_RESEND_S)
    assert ctx.take_sent(GuestFailed) == [("vm/vm-c", report, MGMT)] * 2

    agent.receive(ctx, FailureAck("vm-c", report.seq))
    ctx.advance(agent, 10 * FAILURE_RESEND_S)
    assert ctx.sent == []


def test_each_failure_gets_its_own_number_and_only_its_ack_ends_its_repeats() -> None:
    agent, ctx = make(pools=())
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))
    [first] = ctx.take(GuestFailed)
    agent.receive(ctx, FailureAck("vm-c", first.seq))
    ctx.advance(agent, FAILURE_RESEND_S)
    assert ctx.sent == [] and ctx.pending() == []  # acknowledged: no more repeats
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))  # it was started again, and crashed
    [second] = ctx.take(GuestFailed)
    assert second == GuestFailed("h1", "vm-c", StopReason.CRASHED, second.seq)
    assert second.seq != first.seq
    agent.receive(ctx, FailureAck("vm-c", first.seq))  # a late copy of the first ack
    ctx.advance(agent, FAILURE_RESEND_S)
    assert ctx.take_sent(GuestFailed) == [("vm/vm-c", second, MGMT)]
    agent.receive(ctx, FailureAck("vm-c", second.seq))
    ctx.advance(agent, 10 * FAILURE_RESEND_S)
    assert ctx.sent == [] and agent.unacked == {}


def test_failure_numbers_start_at_a_random_point_on_each_boot() -> None:
    """A rebooted agent must not repeat the numbers of its previous incarnation: a VM
    actor ignores a report numbered like the last one it handled from that host."""
    firsts = []
    for seed in range(3):
        hv = FakeHypervisor(guests={"vm-c": "ceph"})
        ctx = FakeContext(address="host/h1", hypervisor=hv, random=Random(seed))
        agent = HostAgent("h1", (), FORCE)
        agent.on_start(ctx)
        agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))
        [report] = ctx.take(GuestFailed)
        firsts.append(report.seq)
    assert len(set(firsts)) == 3


@pytest.mark.parametrize(("order", "stops_repeats"), [
    (StartVm(VM_N, 5, "vm/vm-n", "ha"), True),  # the VM actor has seen the failure
    (StartVm(VM_N, 5, "vm/vm-n", "user"), True),
    (StartVm(VM_X, 5, "vm/vm-x", "ha"), False),  # another VM's start
    (QueryVm("vm-n", 5, "vm/vm-n"), False),
], ids=["ha-start", "user-start", "another-vm", "query"])
def test_a_start_of_the_failed_vm_ends_the_repeats_of_its_report(order: StartVm | QueryVm,
                                                                 stops_repeats: bool) -> None:
    agent, ctx = make(PERMISSIVE, pools=("nfs",), guests={"vm-n": "nfs"})
    agent.receive(ctx, GuestStopped("vm-n", StopReason.CRASHED))
    hv_of(ctx).guests.clear()
    [report] = ctx.take(GuestFailed)
    agent.receive(ctx, order)
    run(agent, ctx, 3 * FAILURE_RESEND_S, {"nfs": 0.1})
    assert ctx.take_sent(GuestFailed) == ([] if stops_repeats else [("vm/vm-n", report, MGMT)] * 3)
    assert agent.unacked == ({} if stops_repeats else {"vm-n": report})


def test_an_unacknowledged_failure_report_is_repeated_a_bounded_number_of_times() -> None:
    agent, ctx = make(pools=())
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))
    ctx.advance(agent, FAILURE_RESEND_S * (FAILURE_RESENDS_MAX + 10))
    report = GuestFailed("h1", "vm-c", StopReason.CRASHED, agent.failure_seq)
    assert ctx.take_sent(GuestFailed) == [("vm/vm-c", report, MGMT)] * (1 + FAILURE_RESENDS_MAX)
    assert agent.unacked == {}  # then the manager's ping cross-check is the backstop
    assert ctx.pending() == []


# -- probing a peer -----------------------------------------------------------------------------------


def test_check_host_probes_each_network_and_reads_each_heartbeat() -> None:
    agent, ctx = make(name="h2")
    ctx.sent.clear()
    ctx.timers.clear()
    agent.receive(ctx, CheckHost("h1", 7, (Network.MANAGEMENT, Network.STORAGE), ("nfs",)))
    [(_, done)] = ctx.timers_of(_CheckDone)
    probes = ctx.take_sent(ProbePing)
    assert probes == [
        ("host/h1", ProbePing("host/h2", done.req, Network.MANAGEMENT), Network.MANAGEMENT),
        ("host/h1", ProbePing("host/h2", done.req, Network.STORAGE), Network.STORAGE),
    ]
    assert ctx.take_sent(HeartbeatRead) == [
        ("pool/nfs", HeartbeatRead("h1", done.req, "host/h2"), Network.STORAGE)]
    assert ctx.sent == []

    agent.receive(ctx, ProbePong("h1", done.req, Network.STORAGE))
    agent.receive(ctx, ProbePong("h1", done.req + 1, Network.MANAGEMENT))  # another check's
    agent.receive(ctx, HeartbeatValue("nfs", "h1", done.req, 42, 3))
    wait = min(DEFAULT.ping_timeout_s, DEFAULT.host_check_interval_s * 0.8)
    ctx.advance(agent, wait - 0.5)
    assert ctx.take(CheckHostReply) == []
    ctx.advance(agent, 0.5)
    assert ctx.take_sent(CheckHostReply) == [("manager", CheckHostReply(
        peer="h2", target="h1", req=7, reachable=(Network.STORAGE,), heartbeats=(("nfs", 42, 3),),
    ), Network.MANAGEMENT)]
    ctx.advance(agent, 60.0)
    assert ctx.take(CheckHostReply) == []  # answered once
    agent.receive(ctx, ProbePong("h1", done.req, Network.MANAGEMENT))  # too late: ignored


def test_check_host_with_no_answers_reports_nothing_reachable() -> None:
    agent, ctx = make(name="h2")
    ctx.sent.clear()
    agent.receive(ctx, CheckHost("h1", 3, (Network.MANAGEMENT,), ("nfs", "ceph")))
    ctx.advance(agent, DEFAULT.ping_timeout_s)
    assert ctx.take(CheckHostReply) == [CheckHostReply("h2", "h1", 3, (), ())]


def test_probe_ping_is_answered_over_the_same_network() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, ProbePing("host/h3", 11, Network.BUSINESS))
    assert ctx.sent == [("host/h3", ProbePong("h1", 11, Network.BUSINESS), Network.BUSINESS)]


# -- bugs -------------------------------------------------------------------------------------------------


def test_acks_within_the_storage_timeout_but_after_the_next_tick_keep_the_pool_fresh() -> None:
    config = replace(FORCE, self_fencer_interval_s=2.0, self_fencer_max_attempts=3,
                     self_fencer_storage_timeout_s=5.0)
    agent, ctx = make(config, pools=("nfs",), guests={"vm-n": "nfs"})
    run(agent, ctx, 100.0, {"nfs": 3.0})  # every write acked 3 s after it was sent (< 5 s)
    assert hv_of(ctx).stops == []


def test_a_pool_keeps_what_each_host_last_wrote_and_under_which_revision() -> None:
    pool = StoragePool("nfs")
    pctx = FakeContext(address="pool/nfs")
    pool.receive(pctx, HeartbeatRead("h1", 1, "host/h2"))
    assert pctx.take_sent(HeartbeatValue) == [
        ("host/h2", HeartbeatValue("nfs", "h1", 1, -1, None), Network.STORAGE)]  # never wrote
    pool.receive(pctx, HeartbeatWrite("h1", 10, 4))
    pool.receive(pctx, HeartbeatWrite("h3", 11, None))
    assert pctx.take_sent(HeartbeatAck) == [("host/h1", HeartbeatAck("nfs", 10), Network.STORAGE),
                                            ("host/h3", HeartbeatAck("nfs", 11), Network.STORAGE)]
    pool.receive(pctx, HeartbeatRead("h1", 2, "host/h2"))
    pool.receive(pctx, HeartbeatRead("h3", 3, "host/h2"))
    pool.receive(pctx, HeartbeatWrite("h1", 12, None))  # its fencer was switched off
    pool.receive(pctx, HeartbeatRead("h1", 4, "host/h2"))
    assert pctx.take(HeartbeatValue) == [HeartbeatValue("nfs", "h1", 2, 10, 4),
                                         HeartbeatValue("nfs", "h3", 3, 11, None),
                                         HeartbeatValue("nfs", "h1", 4, 12, None)]


def test_a_new_failure_report_is_repeated_on_its_own_schedule() -> None:
    agent, ctx = make(pools=())
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))
    [first] = ctx.take(GuestFailed)  # every ack of it is lost
    ctx.advance(agent, (FAILURE_RESENDS_MAX - 2) * FAILURE_RESEND_S)
    assert ctx.take(GuestFailed) == [first] * (FAILURE_RESENDS_MAX - 2)
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))  # migrated back, failed again
    [second] = ctx.take(GuestFailed)
    assert second.seq != first.seq
    ctx.advance(agent, FAILURE_RESEND_S)
    assert ctx.take(GuestFailed) == [second]
    ctx.advance(agent, FAILURE_RESENDS_MAX * FAILURE_RESEND_S)
    assert ctx.take(GuestFailed) == [second] * (FAILURE_RESENDS_MAX - 1)
    assert agent.unacked == {}


def test_a_guest_fenced_while_being_migrated_away_is_reported() -> None:
    agent, ctx = make(FORCE, pools=("nfs",), guests={"vm-n": "nfs"})
    agent.receive(ctx, MigrateVm("vm-n", "h2", 4, "vm/vm-n"))
    [(_, _, token)] = hv_of(ctx).migrations
    run(agent, ctx, 35.0, {})  # nfs silent: fenced at the 35 s tick, mid-migration
    assert hv_of(ctx).fences == ["nfs"]
    del hv_of(ctx).guests["vm-n"]  # the fence killed it
    agent.receive(ctx, GuestStopped("vm-n", StopReason.FENCED))
    agent.receive(ctx, HvDone(token, False, "migration failed"))
    assert ctx.take(OpReply) == [OpReply("h1", "vm-n", 4, False, "migration failed")]
    assert [(m.vm, m.reason) for m in ctx.take(GuestFailed)] == [("vm-n", StopReason.FENCED)]


def test_a_rebooted_hosts_heartbeat_is_seen_to_advance() -> None:
    pool = StoragePool("nfs")
    pctx = FakeContext(address="pool/nfs")
    pool.receive(pctx, HeartbeatWrite("h1", 500))  # the last write of the previous boot
    agent, ctx = make(FORCE, pools=("nfs",), guests={})

    def read(req: int) -> int:
        pool.receive(pctx, HeartbeatRead("h1", req, "host/h2"))
        [value] = pctx.take(HeartbeatValue)
        return value.seq

    before = read(1)
    for _ in range(10):
        for _, write, _ in ctx.take_sent(HeartbeatWrite):
            pool.receive(pctx, write)
        for ack in pctx.take(HeartbeatAck):
            agent.receive(ctx, ack)
        ctx.advance(agent, FORCE.self_fencer_interval_s)
    assert pong(agent, ctx).pools_ok == ("nfs",)  # the host believes its storage is fine
    assert read(2) != before
