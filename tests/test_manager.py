"""HaManager driven by hand: the test plays the hosts, their peers, the power controllers
and the VM actors. Time moves only through the FakeContext."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
from fakes import FakeContext

from actors.config import DEFAULT, TUNED, HaConfig
from actors.context import Behaviour, Context
from actors.inventory import HostInfo, Inventory, PoolInfo, VmDef, VmInit
from actors.manager import HaManager, _CheckTick, _PingTick, _PingTimeout, _ScanTick
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
    UserMaintenance,
    UserSetConfig,
    UserStopVm,
    Verdict,
    VerdictRequest,
)
from actors.placement import NoPlace
from actors.policy import manager_fence_window_s
from actors.states import HaLevel, Network, Strategy, VmState
from actors.vm import VmActor

NETS = (Network.MANAGEMENT, Network.STORAGE)


def host(name: str, power: bool = False, pools: tuple[str, ...] = ("nfs",),
         cpu: int = 8, mem: int = 16384) -> HostInfo:
    return HostInfo(name, "c1", cpu, mem, pools, NETS, power_controller=power)


def shared(name: str, cpu: int = 1, mem: int = 1024) -> VmDef:
    return VmDef(name, cpu, mem, "nfs", True, "c1")


LOCAL1 = VmDef("vm2", 1, 1024, "local-h1", False, "c1")


def inventory(power_h1: bool = False) -> Inventory:
    return Inventory(
        hosts=(host("h1", power_h1, ("nfs", "local-h1")), host("h2"), host("h3")),
        pools=(PoolInfo("nfs", True), PoolInfo("local-h1", False, "h1")),
        vms=(
            VmInit(shared("vm1"), HaLevel.NEVER_STOP, VmState.RUNNING, "h1"),
            VmInit(LOCAL1, HaLevel.NEVER_STOP, VmState.RUNNING, "h1"),
            VmInit(shared("vm3"), HaLevel.NEVER_STOP, VmState.RUNNING, "h2"),
            VmInit(shared("vm4"), HaLevel.NONE, VmState.STOPPED, "h3"),
        ),
    )


CheckAnswer = Callable[[str, CheckHost], CheckHostReply | None]


class Harness(Behaviour):
    """The manager plus a world: hosts in ``alive`` answer pings at once (with ``running``,
    ``pools_ok`` and the config revision in ``revision``, else the manager's current one);
    check requests are answered by ``checks`` (peer, request) -> reply or None. Timers are
    delivered through the harness, so ``on_msg`` sees every message."""

    def __init__(self, config: HaConfig, inv: Inventory | None = None, join: bool = True) -> None:
        self.config = config
        self.inv = inv or inventory()
        self.mgr = HaManager(self.inv, config)
        self.ctx = FakeContext(address="manager")
        self.mgr.on_start(self.ctx)
        self.start_sent = list(self.ctx.sent)  # what on_start sent; tests start from a clean slate
        self.ctx.sent.clear()
        self.alive = {h.name for h in self.inv.hosts}
        self.running: dict[str, tuple[str, ...]] = {}
        self.pools_ok: dict[str, tuple[str, ...]] = {}
        self.revision: dict[str, int] = {}
        self.checks: CheckAnswer | None = None
        self.on_msg: Callable[[object], None] | None = None
        self.pings: dict[str, int] = {}
        if join:  # every host's agent announces itself, as a starting agent does
            for h in self.inv.hosts:
                self.send(HostBooted(h.name, "boot-1"))
            self.run(self.ctx.clock + config.ping_timeout_s)  # the answered pings' timeouts pass
            assert all(t.joined for t in self.mgr.trackers.values())
            self.pings.clear()
            self.ctx.sent.clear()

    def receive(self, ctx: Context, msg: object) -> None:
        self.mgr.receive(ctx, msg)
        if self.on_msg is not None:
            self.on_msg(msg)

    def send(self, msg: object) -> None:
        self.receive(self.ctx, msg)

    def _answer(self) -> None:
        for to, ping, _ in self.ctx.take_sent(Ping):
            name = to.removeprefix("host/")
            self.pings[name] = self.pings.get(name, 0) + 1
            if name in self.alive:
                pools = self.pools_ok.get(name, ("nfs",))
                revision = self.revision.get(name, self.mgr.config.revision)
                self.send(Pong(name, ping.seq, self.running.get(name, ()), pools, revision))
        for to, check, _ in self.ctx.take_sent(CheckHost):
            reply = self.checks(to.removeprefix("host/"), check) if self.checks else None
            if reply is not None:
                self.send(reply)

    def run(self, until: float) -> None:
        """Move to ``until``, stopping at every timer's due time to answer what was sent."""
        while True:
            self._answer()
            due = [t for t, _ in self.ctx.pending() if t <= until]
            if not due:
                break
            self.ctx.advance(self, due[0] - self.ctx.clock)
        self.ctx.advance(self, until - self.ctx.clock)

    def run_until(self, done: Callable[[], bool], limit_s: float = 3600.0) -> None:
        end = self.ctx.clock + limit_s
        while not done():
            due = [t for t, _ in self.ctx.pending() if t <= end]
            assert due, "condition never met"
            self.run(due[0])

    def statuses(self, name: str) -> list[str]:
        """The verdicts on ``name`` after it joined (its Booting -> Connected is left out)."""
        seen = [e.status for e in self.ctx.published if isinstance(e, HostViewChanged) and e.host == name]
        if seen[:1] == ["Booting"]:
            seen = seen[2:] if seen[1:2] == ["Connected"] else seen[1:]
        return seen

    def disconnect(self, name: str) -> None:
        before = self.statuses(name).count("Disconnected")
        self.alive.discard(name)
        self.run_until(lambda: self.statuses(name).count("Disconnected") > before)

    def place(self, vm: str, prefer: str | None, exclude: tuple[str, ...] = ()) -> PlaceReply:
        self.ctx.sent.clear()
        self.send(PlaceRequest(vm, 77, prefer, exclude))
        [(to, reply, _)] = self.ctx.take_sent(PlaceReply)
        assert to == f"vm/{vm}" and reply.vm == vm and reply.req == 77
        return reply


def host_events(ctx: FakeContext) -> list[tuple[str, HostEvent]]:
    return [(to, m) for to, m, _ in ctx.take_sent(HostEvent)]


# -- start -------------------------------------------------------------------------------------------


def test_on_start_spawns_one_vm_actor_per_vm_and_schedules_pings_and_scans() -> None:
    h = Harness(DEFAULT, join=False)
    assert [addr for addr, _ in h.ctx.spawned] == ["vm/vm1", "vm/vm2", "vm/vm3", "vm/vm4"]
    for (_, actor), init in zip(h.ctx.spawned, h.inv.vms, strict=True):
        assert isinstance(actor, VmActor)
        assert (actor.name, actor.state, actor.host, actor.level) == (
            init.vm.name, init.state, init.host, init.level)
    ticks = h.ctx.timers_of(_PingTick)
    assert sorted(t.host for _, t in ticks) == ["h1", "h2", "h3"]
    assert all(0 <= d <= DEFAULT.ping_interval_s for d, _ in ticks)
    assert h.ctx.timers_of(_ScanTick) == [(DEFAULT.scan_interval_s, _ScanTick())]
    # Hosts may hold an older config (a restarted manager): it is pushed to each at start.
    assert [(to, m) for to, m, _ in h.start_sent] == [
        (f"host/{n}", ConfigPush(DEFAULT)) for n in ("h1", "h2", "h3")]
    assert [m.config.revision for _, m, _ in h.start_sent] == [DEFAULT.revision] * 3


def test_scan_tick_scans_only_vms_that_can_act_and_rearms() -> None:
    """The scan goes to Stopped and Unknown VMs only (here the inventory's stopped vm4),
    and follows what VM actors report as they change state."""
    h = Harness(DEFAULT)
    h.send(_ScanTick())
    assert [(to, m) for to, m, _ in h.ctx.take_sent(Scan)] == [("vm/vm4", Scan())]
    assert h.ctx.timers[-1] == (DEFAULT.scan_interval_s, _ScanTick())
    h.send(Scannable("vm1", True))
    h.send(Scannable("vm4", False))
    h.send(_ScanTick())
    assert [(to, m) for to, m, _ in h.ctx.take_sent(Scan)] == [("vm/vm1", Scan())]


# -- pings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [DEFAULT, TUNED], ids=["default", "tuned"])
def test_disconnected_only_after_ping_max_failure_timeouts_in_a_row(config: HaConfig) -> None:
    h = Harness(config)
    h.alive.discard("h1")
    seen: list[list[tuple[str, HostEvent]]] = []

    def watch(msg: object) -> None:
        if isinstance(msg, _PingTimeout) and msg.host == "h1":
            seen.append(host_events(h.ctx))

    h.on_msg = watch
    h.run_until(lambda: len(seen) == config.ping_max_failure)
    down = HostEvent("h1", connected=False, gone_pools=(), all_gone=False)
    assert seen[:-1] == [[]] * (config.ping_max_failure - 1)
    assert seen[-1] == [("vm/vm1", down), ("vm/vm2", down)]
    assert h.statuses("h1") == ["Disconnected"]
    assert h.pings["h1"] == config.ping_max_failure
    assert h.statuses("h2") == h.statuses("h3") == []


@pytest.mark.parametrize("config", [DEFAULT, TUNED], ids=["default", "tuned"])
def test_a_host_that_has_not_joined_is_booting_not_judged_for_the_join_grace(config: HaConfig) -> None:
    """A manager that starts beside agents still booting neither disconnects their hosts
    nor places VMs on them; a host that never joins is judged once the grace is over."""
    h = Harness(config, join=False)
    h.alive.discard("h1")
    h.run(config.host_join_grace_s - 0.01)
    published = [e.status for e in h.ctx.published if isinstance(e, HostViewChanged) and e.host == "h1"]
    assert published == ["Booting"]
    assert h.mgr.trackers["h1"].failures == 0 and h.mgr.trackers["h1"].connected
    assert h.pings["h1"] >= 1  # asked (again a second after each timeout), the silence not counted
    # h2 and h3 answered and are Connected; only they are offered a shared VM
    assert h.place("vm4", "h1").host in ("h2", "h3")
    h.send(Release("vm4", h.mgr.home["vm4"]))
    assert h.place("vm2", "h1") == PlaceReply("vm2", 77, None, NoPlace.HOST_DOWN.value)
    h.run_until(lambda: "Disconnected" in h.statuses("h1"))
    assert h.ctx.clock >= config.host_join_grace_s
    judged_s = config.ping_max_failure * (config.ping_timeout_s + 1.0) + 1  # pings after the grace
    assert h.ctx.clock <= config.host_join_grace_s + judged_s


def test_a_host_that_has_not_joined_and_reads_off_is_judged_at_once() -> None:
    """The join grace waits for agents that boot, not for hosts that are off: while a host
    is Booting its power controller is asked, and "off" ends the grace for it."""
    h = Harness(TUNED, inventory(power_h1=True), join=False)
    h.alive.discard("h1")
    h.run(3.0)
    queries = h.ctx.take_sent(PowerQuery)
    assert queries and all(to == "bmc/h1" for to, _, _ in queries)
    h.send(PowerStatus("h1", queries[-1][1].req, powered_on=True))  # on: it may be booting
    assert h.mgr.trackers["h1"].connected
    h.run(h.ctx.clock + TUNED.host_check_interval_s + 1.0)
    _, query, _ = h.ctx.take_sent(PowerQuery)[-1]
    h.send(PowerStatus("h1", query.req, powered_on=False))
    h.run(h.ctx.clock)
    [(_, check_query, _)] = h.ctx.take_sent(PowerQuery)  # the check round asks again, at once
    h.send(PowerStatus("h1", check_query.req, powered_on=False))
    published = [e.status for e in h.ctx.published if isinstance(e, HostViewChanged) and e.host == "h1"]
    assert published == ["Booting", "Disconnected", "PoweredOff"]
    assert h.ctx.clock < TUNED.host_join_grace_s


def test_a_host_that_joins_late_wakes_the_vms_waiting_for_it() -> None:
    h = Harness(TUNED, join=False)
    h.alive.discard("h1")
    h.run(5.0)
    assert h.place("vm2", "h1").host is None  # local storage on h1, which has not answered yet
    h.alive.add("h1")
    h.send(HostBooted("h1", "boot-1"))
    h.run(h.ctx.clock)
    assert ("vm/vm2", Kick()) in [(to, m) for to, m, _ in h.ctx.sent]
    assert h.place("vm2", "h1").host == "h1"
    assert [e.status for e in h.ctx.published
            if isinstance(e, HostViewChanged) and e.host == "h1"] == ["Booting", "Connected"]


def test_a_pong_between_failures_resets_the_count() -> None:
    config = TUNED
    h = Harness(config)
    h.alive.discard("h1")
    timeouts = 0

    def watch(msg: object) -> None:
        nonlocal timeouts
        if isinstance(msg, _PingTimeout) and msg.host == "h1":
            timeouts += 1
            if timeouts == config.ping_max_failure - 1:
                h.alive.add("h1")  # the next ping is answered

    h.on_msg = watch
    h.run(h.ctx.clock + 10 * config.ping_interval_s)
    assert h.statuses("h1") == []


def test_stale_ping_timeout_is_ignored() -> None:
    h = Harness(TUNED)
    h.run(TUNED.ping_interval_s * 3)
    for _ in range(10):
        h.send(_PingTimeout("h1", 0))
    assert h.statuses("h1") == []


def test_reconnect_needs_success_times_pongs_in_a_row() -> None:
    config = replace(TUNED, host_check_success_times=3)
    h = Harness(config)
    h.disconnect("h1")
    h.ctx.take_sent(HostEvent)
    pongs = 0
    first_seq = 0
    at_connect: list[int] = []

    def watch(msg: object) -> None:
        nonlocal pongs, first_seq
        if isinstance(msg, Pong) and msg.host == "h1":
            pongs += 1
            if pongs == 1:
                first_seq = msg.seq
                h.alive.discard("h1")  # the ping after the first pong is lost: count again
        if isinstance(msg, _PingTimeout) and msg.host == "h1" and msg.seq > first_seq > 0:
            h.alive.add("h1")
        if "Connected" in h.statuses("h1") and not at_connect:
            at_connect.append(pongs)

    h.alive.add("h1")
    h.on_msg = watch
    h.run_until(lambda: bool(at_connect))
    assert at_connect == [1 + config.host_check_success_times]
    assert h.statuses("h1") == ["Disconnected", "Connected"]
    up = HostEvent("h1", connected=True, gone_pools=(), all_gone=False)
    assert host_events(h.ctx) == [("vm/vm1", up), ("vm/vm2", up)]


def test_host_booted_makes_its_vms_ask_what_runs() -> None:
    h = Harness(DEFAULT)
    h.send(HostBooted("h2"))
    assert host_events(h.ctx) == [("vm/vm3", HostEvent("h2", True, (), False))]
    h.ctx.fire_timers(h)
    assert [to for to, _, _ in h.ctx.take_sent(Ping)] == ["host/h2"]


# -- checks of a disconnected host -----------------------------------------------------------------------


def unreachable(seq: Callable[[int], int] | None = None, reachable: tuple[Network, ...] = (),
                armed: int | None = 0) -> tuple[CheckAnswer, dict[int, int]]:
    """Peers that cannot reach h1 and read its heartbeat as ``seq(round)`` (round from 1),
    written with its fencer ``armed`` under that revision (0: that of DEFAULT and TUNED)."""
    rounds: dict[int, int] = {}

    def answer(peer: str, check: CheckHost) -> CheckHostReply:
        assert check.target == "h1" and check.pools == ("nfs",)
        assert check.networks == NETS
        k = rounds.setdefault(check.req, len(rounds) + 1)
        value = seq(k) if seq else 41
        return CheckHostReply(peer, "h1", check.req, reachable, (("nfs", value, armed),))

    return answer, rounds


def expected_fence_round(config: HaConfig) -> int:
    """Replies come at once, so round k is sent (and read) at T0 + (k-1)*I and judged at
    T0 + k*I. The heartbeat was first seen at T0; the pool may be called gone when
    k >= maxAttempts and (k-1)*I - storage timeout >= the manager's fencing window."""
    interval = config.host_check_interval_s
    window = manager_fence_window_s(config)
    by_window = math.ceil((window + config.self_fencer_storage_timeout_s) / interval - 1e-9) + 1
    return max(config.host_check_max_attempts, by_window)


FORCE_CONFIGS = {
    "tuned": replace(TUNED, strategy=Strategy.FORCE),  # the fencing window decides
    "tuned-many-attempts": replace(TUNED, strategy=Strategy.FORCE, host_check_max_attempts=12),
    "default": replace(DEFAULT, strategy=Strategy.FORCE),  # maxAttempts decides
}


@pytest.mark.parametrize("config", list(FORCE_CONFIGS.values()), ids=list(FORCE_CONFIGS))
def test_force_declares_the_pool_gone_only_after_attempts_and_window(config: HaConfig) -> None:
    h = Harness(config)
    answer, rounds = unreachable(armed=config.revision)
    h.checks = answer
    h.disconnect("h1")
    h.ctx.take_sent(HostEvent)
    t0 = h.ctx.clock
    judged: list[tuple[float, int, list[tuple[str, HostEvent]]]] = []

    def watch(msg: object) -> None:
        if isinstance(msg, _CheckTick) and msg.host == "h1":
            judged.append((h.ctx.clock, len(rounds), host_events(h.ctx)))

    h.on_msg = watch
    k = expected_fence_round(config)
    interval = config.host_check_interval_s
    h.run(t0 + (k + 3) * interval)

    # Round 1 started with the disconnection; the tick at t0 + j*I judges round j.
    events = {rnd: ev for _, rnd, ev in judged if ev}
    gone = HostEvent("h1", connected=False, gone_pools=("nfs",), all_gone=False)
    assert list(events) == [k], f"gone after round {list(events)}, expected {k}"
    assert events[k] == [("vm/vm1", gone), ("vm/vm2", gone)]
    when = next(t for t, rnd, ev in judged if ev)
    assert when == pytest.approx(t0 + k * interval)
    assert h.statuses("h1") == ["Disconnected", "Fenced(nfs)"]
    # One round earlier both conditions were checked, and it was not enough.
    assert k > 1 and not any(ev for _, rnd, ev in judged if rnd < k)
    # Safety margin: the heartbeat stood still for longer than the window before that.
    assert when - t0 >= manager_fence_window_s(config)
    h.send(VerdictRequest("vm1", "h1", 5))
    assert h.ctx.take(Verdict) == [Verdict("h1", 5, False, ("nfs",), False)]


@pytest.mark.parametrize(("strategy", "seq", "reachable"), [
    (Strategy.FORCE, lambda k: 100 + k, ()),  # its heartbeat still advances
    (Strategy.FORCE, None, (Network.STORAGE,)),  # peers still reach it
    (Strategy.PERMISSIVE, None, ()),  # stuck heartbeat, but Permissive
], ids=["force-advancing", "force-reachable", "permissive-stuck"])
def test_never_gone_without_proof(strategy: Strategy, seq: Callable[[int], int] | None,
                                  reachable: tuple[Network, ...]) -> None:
    config = replace(TUNED, strategy=strategy)
    h = Harness(config)
    answer, rounds = unreachable(seq, reachable)
    h.checks = answer
    h.disconnect("h1")
    h.ctx.take_sent(HostEvent)
    h.run(h.ctx.clock + 60 * config.host_check_interval_s)
    assert len(rounds) >= 50
    assert host_events(h.ctx) == []
    assert h.statuses("h1") == ["Disconnected"]
    assert not any(isinstance(m, PowerQuery) for _, m, _ in h.ctx.sent)  # no controller


FORCE_REV1 = replace(TUNED, strategy=Strategy.FORCE).with_key("ha.strategy", "Force")  # revision 1


def judge_rounds(h: Harness) -> list[tuple[float, list[tuple[str, HostEvent]]]]:
    """Record, at every check tick of h1 (each judges a round), the time and the events sent."""
    judged: list[tuple[float, list[tuple[str, HostEvent]]]] = []

    def watch(msg: object) -> None:
        if isinstance(msg, _CheckTick) and msg.host == "h1":
            judged.append((h.ctx.clock, host_events(h.ctx)))

    h.on_msg = watch
    return judged


@pytest.mark.parametrize(("armed", "gone"), [
    (None, False),  # its fencer is off
    (FORCE_REV1.revision - 1, False),  # armed under settings the manager no longer holds
    (FORCE_REV1.revision + 1, False),  # under settings the manager never held
    (FORCE_REV1.revision, True),
], ids=["fencer-off", "older-revision", "other-revision", "current-revision"])
def test_force_trusts_a_fence_only_armed_under_its_current_revision(armed: int | None, gone: bool) -> None:
    config = FORCE_REV1
    assert config.revision == 1
    h = Harness(config)
    answer, rounds = unreachable(armed=armed)  # unreachable, heartbeat stuck: all else holds
    h.checks = answer
    h.disconnect("h1")
    h.ctx.take_sent(HostEvent)
    t0 = h.ctx.clock
    judged = judge_rounds(h)
    k = expected_fence_round(config)
    h.run(t0 + 60 * config.host_check_interval_s)
    assert len(rounds) >= 50
    tracker = h.mgr.trackers["h1"]
    assert tracker.failed_rounds >= 50 > config.host_check_max_attempts
    assert tracker.hb_armed == {"nfs": armed}
    events = [(t, ev) for t, ev in judged if ev]
    if gone:
        fenced = HostEvent("h1", connected=False, gone_pools=("nfs",), all_gone=False)
        assert events == [(pytest.approx(t0 + k * config.host_check_interval_s),
                           [("vm/vm1", fenced), ("vm/vm2", fenced)])]
        assert h.statuses("h1") == ["Disconnected", "Fenced(nfs)"]
    else:
        assert events == []
        assert h.statuses("h1") == ["Disconnected"]
        h.send(VerdictRequest("vm1", "h1", 5))
        assert h.ctx.take(Verdict) == [Verdict("h1", 5, False, (), False)]


def test_ha_switched_off_and_on_while_a_host_is_cut_off_voids_its_fence() -> None:
    """The fuzzer's case: h1 is cut off (its last heartbeat armed under revision 1); HA is
    switched off and on again. h1 never heard either push; had it heard the first, its
    fencer would be off. The manager no longer counts on it: h1's guests stay Unknown."""
    config = FORCE_REV1
    h = Harness(config)
    answer, rounds = unreachable(armed=config.revision)
    h.checks = answer
    h.disconnect("h1")
    h.ctx.take_sent(HostEvent)
    t0 = h.ctx.clock
    h.run(t0 + 1.5 * config.host_check_interval_s)
    h.send(UserSetConfig("ha.enable", False))
    h.send(UserSetConfig("ha.enable", True))
    assert h.mgr.config == config and h.mgr.config.revision == config.revision + 2
    pushes = h.ctx.take_sent(ConfigPush)
    assert [to for to, _, _ in pushes if to.startswith("host/")] == ["host/h1", "host/h2", "host/h3"] * 2
    h.run(t0 + 60 * config.host_check_interval_s)
    assert host_events(h.ctx) == []
    assert h.statuses("h1") == ["Disconnected"]
    assert h.mgr.trackers["h1"].failed_rounds > expected_fence_round(config)


def test_a_stuck_heartbeat_armed_under_the_current_revision_counts_from_its_write() -> None:
    """h1 heard the new config, wrote one heartbeat armed under it and went silent: the
    fencing window runs from when that write was first seen, not from the older one."""
    config = FORCE_REV1
    h = Harness(config)
    switch_round = 4  # rounds 1-3 read seq 41 armed under revision 0, then 42 under 1
    answer, rounds = unreachable()
    h.checks = lambda peer, check: replace(
        answer(peer, check), heartbeats=(("nfs", 41, 0),) if len(rounds) < switch_round
        else (("nfs", 42, config.revision),))
    h.disconnect("h1")
    h.ctx.take_sent(HostEvent)
    t0 = h.ctx.clock
    judged = judge_rounds(h)
    interval = config.host_check_interval_s
    h.run(t0 + 60 * interval)
    events = [(t, ev) for t, ev in judged if ev]
    assert len(events) == 1
    seen_at = t0 + (switch_round - 1) * interval  # round 4's replies, read at once
    # The same judgement as for a host whose heartbeat stood still from that read on.
    assert events[0][0] == pytest.approx(seen_at + expected_fence_round(config) * interval)
    assert events[0][0] - seen_at >= manager_fence_window_s(config)


def test_power_controller_saying_off_proves_every_guest_gone() -> None:
    h = Harness(DEFAULT, inventory(power_h1=True))
    h.disconnect("h1")
    h.ctx.take_sent(HostEvent)
    asked: list[CheckHost] = []

    def record(peer: str, check: CheckHost) -> None:
        asked.append(check)

    h.checks = record
    [(to, query, _)] = h.ctx.take_sent(PowerQuery)  # the first round starts at once
    assert to == "bmc/h1" and query == PowerQuery("h1", query.req, "manager")
    h.send(PowerStatus("h1", query.req, powered_on=True))
    assert host_events(h.ctx) == []
    h.send(PowerStatus("h1", query.req, powered_on=False))
    off = HostEvent("h1", connected=False, gone_pools=(), all_gone=True)
    assert host_events(h.ctx) == [("vm/vm1", off), ("vm/vm2", off)]
    assert h.statuses("h1") == ["Disconnected", "PoweredOff"]
    # No more check rounds once the verdict is final.
    h.run(h.ctx.clock + 10 * DEFAULT.host_check_interval_s)
    assert asked == [] and h.ctx.take(PowerQuery) == []


def test_check_rounds_ask_connected_peers_every_interval() -> None:
    h = Harness(TUNED)
    asked: list[tuple[float, str, CheckHost]] = []

    def record(peer: str, check: CheckHost) -> None:
        asked.append((h.ctx.clock, peer, check))

    h.checks = record
    h.disconnect("h1")
    t0 = h.ctx.clock
    assert [(t, p) for t, p, _ in asked] == [(t0, "h2"), (t0, "h3")]
    assert asked[0][2] == CheckHost("h1", asked[0][2].req, NETS, ("nfs",))
    h.run(t0 + TUNED.host_check_interval_s)
    assert [(t, p) for t, p, _ in asked[2:]] == [(t0 + TUNED.host_check_interval_s, "h2"),
                                                 (t0 + TUNED.host_check_interval_s, "h3")]
    assert asked[2][2].req != asked[0][2].req


# -- placement ----------------------------------------------------------------------------------------------


def capacity_inventory() -> Inventory:
    """Three hosts that take two VMs each; one runs on each, four wait on h1."""
    vms = [VmInit(shared(n, 2, 4096), HaLevel.NEVER_STOP, VmState.RUNNING, h)
           for n, h in (("a", "h1"), ("b", "h2"), ("c", "h3"))]
    vms += [VmInit(shared(n, 2, 4096), HaLevel.NEVER_STOP, VmState.STOPPED, "h1") for n in "defg"]
    return Inventory(hosts=tuple(host(n, cpu=4, mem=8192) for n in ("h1", "h2", "h3")),
                     pools=(PoolInfo("nfs", True),), vms=tuple(vms))


def used(h: Harness) -> dict[str, tuple[int, int]]:
    cap = h.mgr.capacity
    return {n: (cap.used_cpu.get(n, 0), cap.used_mem.get(n, 0)) for n in ("h1", "h2", "h3")}


def test_placement_never_over_commits() -> None:
    h = Harness(DEFAULT, capacity_inventory())
    assert used(h) == {"h1": (2, 4096), "h2": (2, 4096), "h3": (2, 4096)}
    assert h.place("d", "h1").host == "h1"  # preferred, and it fits
    assert h.place("e", "h1").host == "h2"  # h1 full; h2 and h3 tie, by name
    assert h.place("f", "h1").host == "h3"
    assert used(h) == {"h1": (4, 8192), "h2": (4, 8192), "h3": (4, 8192)}
    assert h.place("g", "h1") == PlaceReply("g", 77, None, NoPlace.NO_CAPACITY.value)
    assert h.place("g", None).host is None
    assert used(h) == {"h1": (4, 8192), "h2": (4, 8192), "h3": (4, 8192)}

    h.send(Release("a", "h1"))
    assert [(to, m) for to, m, _ in h.ctx.take_sent(Kick)] == [("vm/g", Kick())]
    assert used(h)["h1"] == (2, 4096)
    h.send(Release("a", "h1"))  # twice: no double credit, no kick
    assert used(h)["h1"] == (2, 4096) and h.ctx.take(Kick) == []
    assert h.place("g", "h3").host == "h1"
    assert h.ctx.take(Kick) == []


def test_placement_avoids_excluded_disconnected_and_storage_less_hosts() -> None:
    h = Harness(TUNED)
    # Free memory: h1 14 GiB (vm1, vm2), h2 15 GiB (vm3), h3 16 GiB.
    assert h.place("vm4", "h1", exclude=("h1",)).host == "h3"
    h.send(Release("vm4", "h3"))
    assert h.place("vm4", "h2", exclude=("h3",)).host == "h2"
    h.send(Release("vm4", "h2"))
    h.disconnect("h2")
    assert h.place("vm4", "h2", exclude=("h3",)).host == "h1"
    h.send(Release("vm4", "h1"))
    h.pools_ok["h3"] = ()  # h3 reports that it lost the shared pool
    h.run(h.ctx.clock + 2 * TUNED.ping_interval_s)
    assert h.place("vm4", "h3").host == "h1"
    h.send(Release("vm4", "h1"))
    assert h.place("vm4", None, exclude=("h1",)) == PlaceReply("vm4", 77, None, "no-capacity")


def test_local_vm_is_placed_on_its_host_or_told_why_not() -> None:
    h = Harness(TUNED)
    h.send(Release("vm2", "h1"))
    assert h.place("vm2", "h1").host == "h1"
    h.send(Release("vm2", "h1"))
    h.disconnect("h1")
    assert h.place("vm2", "h1") == PlaceReply("vm2", 77, None, NoPlace.HOST_DOWN.value)


def test_maintenance_evacuates_its_vms_and_placement_avoids_it() -> None:
    h = Harness(DEFAULT)
    h.send(UserMaintenance("h1", enter=True))
    assert [(to, m) for to, m, _ in h.ctx.take_sent(Evacuate)] == [
        ("vm/vm1", Evacuate("h1")), ("vm/vm2", Evacuate("h1"))]
    assert h.place("vm1", "h1").host in ("h2", "h3")
    assert h.place("vm4", "h1").host in ("h2", "h3")
    h.send(Release("vm2", "h1"))
    assert h.place("vm2", "h1") == PlaceReply("vm2", 77, None, NoPlace.MAINTENANCE.value)
    h.send(UserMaintenance("h1", enter=False))
    assert [to for to, _, _ in h.ctx.take_sent(Kick)] == ["vm/vm2"]
    assert h.place("vm2", "h1").host == "h1"


def test_leaving_maintenance_withdraws_the_evacuations_it_asked_for() -> None:
    h = Harness(DEFAULT)
    h.send(UserMaintenance("h1", enter=True))
    h.ctx.take_sent(Evacuate)
    assert h.place("vm1", None, exclude=("h1",)).host in ("h2", "h3")  # its home moves with it
    h.send(UserMaintenance("h1", enter=False))
    assert sorted((to, m) for to, m, _ in h.ctx.take_sent(Evacuate)) == [
        ("vm/vm1", Evacuate("h1", cancel=True)), ("vm/vm2", Evacuate("h1", cancel=True))]
    h.send(UserMaintenance("h1", enter=False))  # not in maintenance: nothing to withdraw
    assert h.ctx.take_sent(Evacuate) == []


def test_a_restarted_manager_finishes_the_evacuation_of_a_host_in_maintenance() -> None:
    mgr = HaManager(inventory(), DEFAULT, maintenance=frozenset({"h1"}))
    ctx = FakeContext(address="manager")
    mgr.on_start(ctx)
    assert [(to, m) for to, m, _ in ctx.take_sent(Evacuate)] == [
        ("vm/vm1", Evacuate("h1")), ("vm/vm2", Evacuate("h1"))]


def test_claim_accounts_for_a_vm_found_running() -> None:
    h = Harness(DEFAULT, capacity_inventory())
    h.send(Claim("d", "h1"))
    assert used(h)["h1"] == (4, 8192)
    h.send(Claim("d", "h1"))  # a VM claims whenever it settles in Running: counted once
    assert used(h)["h1"] == (4, 8192)
    assert h.place("e", "h1").host == "h2"


def test_a_claim_after_a_failed_migration_brings_the_vm_home_again() -> None:
    h = Harness(TUNED)
    assert h.place("vm1", None, exclude=("h1",)).host == "h3"  # the migration's target
    h.send(Release("vm1", "h3"))  # the migration failed: vm1 still runs on h1
    h.send(Claim("vm1", "h1"))
    assert h.mgr.capacity.slots["vm1"] == {"h1"}
    h.disconnect("h1")
    down = HostEvent("h1", connected=False, gone_pools=(), all_gone=False)
    assert host_events(h.ctx) == [("vm/vm1", down), ("vm/vm2", down)]  # vm1 hears of its host


# -- strays, users, config ---------------------------------------------------------------------------------


def test_a_pong_with_another_config_revision_gets_the_config_pushed_again() -> None:
    config = DEFAULT.with_key("ha.strategy", "Force")
    h = Harness(config)
    h.revision = {"h2": config.revision - 1, "h3": config.revision + 3}  # missed a push; another manager's
    h.run(3 * config.ping_interval_s)
    pushes = h.ctx.take_sent(ConfigPush)
    assert h.pings["h2"] == h.pings["h3"] >= 3
    assert [to for to, _, _ in pushes if to == "host/h2"] == ["host/h2"] * h.pings["h2"]
    assert [to for to, _, _ in pushes if to == "host/h3"] == ["host/h3"] * h.pings["h3"]
    assert len(pushes) == h.pings["h2"] + h.pings["h3"]  # h1 runs by the current config
    assert all(m.config == config and m.config.revision == config.revision for _, m, _ in pushes)
    assert all(net is Network.MANAGEMENT for _, _, net in pushes)

    h.revision = {}  # they applied it
    h.run(6 * config.ping_interval_s)
    assert h.ctx.take(ConfigPush) == []

    h.send(UserSetConfig("ha.host.check.interval", 3))  # h3 misses this push
    h.ctx.take(ConfigPush)
    h.revision = {"h3": config.revision}
    before = h.pings["h3"]
    h.run(9 * config.ping_interval_s)
    pushes = h.ctx.take_sent(ConfigPush)
    assert h.pings["h3"] > before
    assert [to for to, _, _ in pushes] == ["host/h3"] * (h.pings["h3"] - before)
    assert all(m.config.revision == config.revision + 1 for _, m, _ in pushes)


def test_a_copy_on_a_host_where_the_vm_holds_no_slot_is_destroyed() -> None:
    h = Harness(TUNED)
    h.running = {"h1": ("vm1",), "h2": ("vm1", "vm3")}
    h.run(2 * TUNED.ping_interval_s)
    stops = h.ctx.take_sent(StopVm)
    assert stops and all(to == "host/h2" and m.vm == "vm1" and m.force for to, m, _ in stops)


def test_no_stray_during_a_migration() -> None:
    h = Harness(TUNED)
    dest = h.place("vm1", None, exclude=("h1",)).host  # the evacuation target
    assert dest == "h3"  # the most free memory
    h.running = {"h1": ("vm1",), "h2": ("vm3",), "h3": ("vm1",)}
    h.run(3 * TUNED.ping_interval_s)
    assert h.ctx.take(StopVm) == []


def test_user_requests_are_relayed_to_the_vm_actor() -> None:
    h = Harness(DEFAULT)
    h.send(UserStopVm("vm3", no_restart=True))
    assert h.ctx.sent == [("vm/vm3", UserStopVm("vm3", True), Network.MANAGEMENT)]
    h.ctx.sent.clear()
    h.send(UserStopVm("nope"))
    assert h.ctx.sent == [] and h.ctx.logs


def test_config_change_is_pushed_to_every_vm_and_host() -> None:
    h = Harness(DEFAULT)
    h.send(UserSetConfig("ha.enable", False))
    pushes = h.ctx.take_sent(ConfigPush)
    assert [to for to, _, _ in pushes] == ["vm/vm1", "vm/vm2", "vm/vm3", "vm/vm4",
                                           "host/h1", "host/h2", "host/h3"]
    assert all(m.config == replace(DEFAULT, enable=False) for _, m, _ in pushes)
    assert {m.config.revision for _, m, _ in pushes} == {DEFAULT.revision + 1}  # a new revision
    h.send(UserSetConfig("ha.nope", 1))
    assert h.ctx.sent == [] and "unknown HA key" in h.ctx.logs[-1]


# -- bugs ---------------------------------------------------------------------------------------------------


def test_a_power_status_from_an_earlier_disconnection_is_ignored() -> None:
    config = replace(TUNED, host_check_success_times=2)
    h = Harness(config, inventory(power_h1=True))
    h.disconnect("h1")
    [old] = h.ctx.take(PowerQuery)
    h.alive.add("h1")  # back before the controller answered
    h.run_until(lambda: "Connected" in h.statuses("h1"))
    h.disconnect("h1")
    h.ctx.take_sent(HostEvent)
    h.send(PowerStatus("h1", old.req, powered_on=False))  # the late answer
    assert host_events(h.ctx) == []
    assert h.statuses("h1") == ["Disconnected", "Connected", "Disconnected"]



def test_a_placement_names_the_host_boot_the_manager_last_heard_of() -> None:
    """Start orders carry it, so that a host that rebooted since refuses them."""
    h = Harness(TUNED, join=False)
    h.send(Pong("h3", 0, (), ("nfs",), TUNED.revision))  # an answer without a boot (an old agent)
    h.mgr.trackers["h3"].joined = True
    assert h.place("vm4", "h3").boot is None  # nothing heard from h3 yet
    h.send(Release("vm4", "h3"))
    h.send(HostBooted("h3", "h3-boot-1"))
    assert h.place("vm4", "h3") == PlaceReply("vm4", 77, "h3", boot="h3-boot-1")
    h.send(Release("vm4", "h3"))
    h.send(HostBooted("h3", "h3-boot-2"))  # it rebooted
    assert h.place("vm4", "h3").boot == "h3-boot-2"
