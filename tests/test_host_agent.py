"""HostAgent driven by hand: the test plays the manager, the storage pools and the peers."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakes import FakeContext, FakeHypervisor

from actors.config import DEFAULT, HaConfig
from actors.host_agent import HostAgent, _CheckDone, _HeartbeatTick
from actors.inventory import VmDef
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
    assert ctx.sent[0] == ("manager", HostBooted("h1"), Network.MANAGEMENT)
    writes = ctx.take_sent(HeartbeatWrite)
    assert [(to, net) for to, _, net in writes] == [("pool/nfs", Network.STORAGE),
                                                    ("pool/ceph", Network.STORAGE)]
    seqs = [w.seq for _, w, _ in writes]
    assert all(w.host == "h1" for _, w, _ in writes) and seqs == sorted(set(seqs))
    assert ctx.timers == [(FORCE.self_fencer_interval_s, _HeartbeatTick(0))]


def test_no_shared_pool_no_heartbeat() -> None:
    _, ctx = make(pools=())
    assert ctx.sent == [("manager", HostBooted("h1"), Network.MANAGEMENT)]
    assert ctx.timers == []


def test_ping_answers_with_running_guests_and_fresh_pools() -> None:
    agent, ctx = make(config=PERMISSIVE, guests={"vm-b": "nfs", "vm-a": "local-h1"})
    assert pong(agent, ctx, 4) == Pong("h1", 4, ("vm-a", "vm-b"), ("nfs", "ceph"))
    run(agent, ctx, 300.0, {"nfs": 0.5})  # ceph never acknowledges
    assert pong(agent, ctx, 5) == Pong("h1", 5, ("vm-a", "vm-b"), ("nfs",))


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
    assert hv_of(ctx).stops == []
    assert ctx.take(GuestFailed) == []
    assert pong(agent, ctx).pools_ok == ("nfs", "ceph")


# -- self-fencing ------------------------------------------------------------------------------------


def test_force_fences_the_guests_of_a_silent_pool_only() -> None:
    agent, ctx = make(FORCE)
    fence_at = host_fence_after_s(FORCE)
    assert fence_at == 30.0
    run(agent, ctx, fence_at - 0.5, {"ceph": 0.5})  # nfs never acknowledges
    assert hv_of(ctx).stops == []
    assert ctx.take(GuestFailed) == []

    run(agent, ctx, fence_at, {"ceph": 0.5})
    stops = hv_of(ctx).stops
    assert [(vm, force, fence) for vm, _, force, fence in stops] == [("vm-n", True, True)]
    assert ctx.take_sent(GuestFailed) == [
        ("vm/vm-n", GuestFailed("h1", "vm-n", StopReason.FENCED), Network.MANAGEMENT)]

    run(agent, ctx, 10 * fence_at, {"ceph": 0.5})  # once is enough
    assert len(hv_of(ctx).stops) == 1
    assert ctx.take(GuestFailed) == []
    # The fencer's own kill is not reported a second time as a failure.
    agent.receive(ctx, GuestStopped("vm-n", StopReason.FENCED))
    assert ctx.take(GuestFailed) == []


@pytest.mark.parametrize("config", [PERMISSIVE, replace(FORCE, enable=False)],
                         ids=["permissive", "force-disabled"])
def test_never_fences_unless_force_and_enabled(config: HaConfig) -> None:
    agent, ctx = make(config)
    run(agent, ctx, 20 * host_fence_after_s(config), {})
    assert hv_of(ctx).stops == []
    assert ctx.take(GuestFailed) == []
    assert pong(agent, ctx).pools_ok == ()  # still honest about its storage


def test_switching_to_force_at_run_time_fences() -> None:
    agent, ctx = make(PERMISSIVE)
    run(agent, ctx, 100.0, {})
    assert hv_of(ctx).stops == []
    agent.receive(ctx, ConfigPush(FORCE))
    run(agent, ctx, 100.0 + FORCE.self_fencer_interval_s, {})
    assert sorted(vm for vm, _, _, _ in hv_of(ctx).stops) == ["vm-c", "vm-n"]


@pytest.mark.parametrize(("ack_after", "fenced"), [(1.0, False), (3.0, True)],
                         ids=["in-time", "late"])
def test_an_ack_later_than_the_storage_timeout_does_not_count(ack_after: float, fenced: bool) -> None:
    config = replace(FORCE, self_fencer_interval_s=5.0, self_fencer_max_attempts=2,
                     self_fencer_storage_timeout_s=2.0)
    agent, ctx = make(config, pools=("nfs",), guests={"vm-n": "nfs"})
    fence_at = host_fence_after_s(config)
    run(agent, ctx, fence_at - 0.5, {"nfs": ack_after})
    assert hv_of(ctx).stops == []
    run(agent, ctx, fence_at, {"nfs": ack_after})
    assert pong(agent, ctx).pools_ok == (() if fenced else ("nfs",))
    assert [vm for vm, _, _, _ in hv_of(ctx).stops] == (["vm-n"] if fenced else [])
    run(agent, ctx, 100.0, {"nfs": ack_after})
    assert [vm for vm, _, _, _ in hv_of(ctx).stops] == (["vm-n"] if fenced else [])


def test_fencer_spares_a_guest_being_stopped_on_purpose() -> None:
    agent, ctx = make(FORCE, pools=("nfs",), guests={"vm-n": "nfs", "vm-m": "nfs"})
    agent.receive(ctx, StopVm("vm-m", 3, "vm/vm-m", force=False))
    run(agent, ctx, host_fence_after_s(FORCE), {})
    assert [(vm, fence) for vm, _, _, fence in hv_of(ctx).stops] == [("vm-m", False), ("vm-n", True)]


# -- guests -------------------------------------------------------------------------------------------


def test_a_crash_is_reported_to_the_vm_actor() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))
    assert ctx.sent == [("vm/vm-c", GuestFailed("h1", "vm-c", StopReason.CRASHED), Network.MANAGEMENT)]


def test_a_guest_shutting_down_by_itself_is_no_failure() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.SHUTDOWN))
    assert ctx.sent == []


def test_a_stop_it_was_asked_for_is_answered_not_reported() -> None:
    agent, ctx = make()
    ctx.sent.clear()
    agent.receive(ctx, StopVm("vm-c", 7, "vm/vm-c", force=True))
    [(vm, token, force, fence)] = hv_of(ctx).stops
    assert (vm, force, fence) == ("vm-c", True, False)
    agent.receive(ctx, GuestStopped("vm-c", StopReason.DESTROYED))
    agent.receive(ctx, HvDone(token, True))
    assert ctx.sent == [("vm/vm-c", OpReply("h1", "vm-c", 7, True), Network.MANAGEMENT)]
    # A later crash of a guest it started again is news once more.
    ctx.sent.clear()
    agent.receive(ctx, GuestStopped("vm-c", StopReason.CRASHED))
    assert ctx.take(GuestFailed) == [GuestFailed("h1", "vm-c", StopReason.CRASHED)]


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


def test_start_refused_on_a_pool_it_cannot_reach() -> None:
    agent, ctx = make(PERMISSIVE)
    run(agent, ctx, 100.0, {"ceph": 0.5})  # nfs is silent
    ctx.sent.clear()
    agent.receive(ctx, StartVm(VM_X, 5, "vm/vm-x", "ha"))
    assert hv_of(ctx).starts == []
    [reply] = ctx.take(OpReply)
    assert (reply.vm, reply.req, reply.ok) == ("vm-x", 5, False)


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
    agent.receive(ctx, HeartbeatValue("nfs", "h1", done.req, 42))
    wait = min(DEFAULT.ping_timeout_s, DEFAULT.host_check_interval_s * 0.8)
    ctx.advance(agent, wait - 0.5)
    assert ctx.take(CheckHostReply) == []
    ctx.advance(agent, 0.5)
    assert ctx.take_sent(CheckHostReply) == [("manager", CheckHostReply(
        peer="h2", target="h1", req=7, reachable=(Network.STORAGE,), heartbeats=(("nfs", 42),),
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
