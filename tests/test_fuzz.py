"""Fault campaigns: the make-test campaign, a property test over fault schedules, and
proof that a campaign catches a broken core and writes a scenario that reproduces it."""

from __future__ import annotations

from pathlib import Path
from random import Random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.states import Network, Strategy
from formats.scenario import load_scenario
from formats.spec import EventSpec
from neverstop.cli import main
from sim.clustergen import Cluster, generate_cluster
from sim.fuzz import HEAL_S, generate_case, liveness_bound_s, run_case
from sim.runner import run_scenario


@pytest.mark.parametrize("strategy", ["Permissive", "Force"])
def test_campaign_of_300_seeds_finds_nothing(strategy: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "fuzz", "--seeds", "300", "--strategy", strategy, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "checker findings: 0" in out and "liveness failures: 0" in out, out
    assert code == 0
    assert not list(tmp_path.iterdir())


def test_same_seed_same_case() -> None:
    a, b = generate_case(42, Strategy.FORCE), generate_case(42, Strategy.FORCE)
    assert a == b
    assert generate_case(43, Strategy.FORCE) != a


def test_every_fault_heals_before_the_liveness_window() -> None:
    for seed in range(50):
        case = generate_case(seed, Strategy.PERMISSIVE)
        assert all(e.at_s <= HEAL_S for e in case.events)
        assert case.duration_s == pytest.approx(HEAL_S + liveness_bound_s(case.config))


def test_a_campaign_catches_a_host_that_does_not_fence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Break the self-fencer; the campaign must fail, shrink, and write a scenario file
    that still fails when run on its own."""
    import actors.host_agent

    monkeypatch.setattr(actors.host_agent.HostAgent, "_fence", lambda self, ctx, pool: None)
    argv = ["sim", "fuzz", "--seeds", "40", "--strategy", "Force", "--jobs", "1", "--out", str(tmp_path)]
    code = main(argv)
    assert code == 1
    assert "two-running" in capsys.readouterr().err
    written = sorted(tmp_path.glob("*.toml"))
    assert written
    scenario = load_scenario(written[0])
    assert len(scenario.events) <= 6, "shrinking should leave a handful of events"
    assert not run_scenario(scenario).ok


def test_a_campaign_catches_a_watchdog_that_never_fires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Without the watchdog's reset, an agent that dies leaves its guests running while the
    manager, trusting the fence, starts them elsewhere: what the watchdog is there for."""
    import sim.devices

    monkeypatch.setattr(sim.devices.Watchdog, "_check", lambda self, _: None)
    argv = ["sim", "fuzz", "--seeds", "60", "--strategy", "Force", "--profile", "tuned", "--jobs", "1",
            "--out", str(tmp_path), "--no-shrink"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "two-running" in err
    failing = [load_scenario(p) for p in sorted(tmp_path.glob("*.toml"))]
    assert failing and all(any(e.action == "agent-crash" for e in sc.events) for sc in failing)


# -- property: any schedule of faults on a small cluster, healed in time ---------------------------

CLUSTER: Cluster = generate_cluster(Random(7), hosts=4, vms_per_host=3.0, neverstop_share=0.8)
HOSTS = [h.name for h in CLUSTER.hosts]
NETS = [n.value for n in Network] + ["all"]


@st.composite
def fault(draw: st.DrawFn) -> list[EventSpec]:
    start = draw(st.floats(30.0, HEAL_S - 400.0))
    end = start + draw(st.floats(1.0, 390.0))
    host = draw(st.sampled_from(HOSTS))
    kind = draw(st.sampled_from(["power", "partition", "one-way", "storage", "loss", "hang", "manager",
                                 "agent"]))
    if kind == "power":
        return [EventSpec(start, "power-off", host), EventSpec(end, "power-on", host)]
    if kind in ("partition", "one-way"):
        args = {"network": draw(st.sampled_from(NETS)),
                "direction": "both" if kind == "partition" else draw(st.sampled_from(["in", "out"]))}
        return [EventSpec(start, "network-down", host, args), EventSpec(end, "network-up", host, dict(args))]
    if kind == "storage":
        pool = CLUSTER.hosts[HOSTS.index(host)].storage[0]
        return [EventSpec(start, "storage-down", host, {"pool": pool}),
                EventSpec(end, "storage-up", host, {"pool": pool})]
    if kind == "loss":
        loss = draw(st.floats(0.0, 0.5))
        return [EventSpec(start, "link-loss", host, {"network": "all", "loss": loss, "latency": 0.05}),
                EventSpec(end, "link-loss", host, {"network": "all", "loss": 0.0, "latency": 0.0})]
    if kind == "hang":
        return [EventSpec(start, "libvirt-hang", host), EventSpec(end, "libvirt-resume", host)]
    if kind == "agent":
        return [EventSpec(start, "agent-crash", host), EventSpec(end, "agent-restart", host)]
    return [EventSpec(start, "manager-crash"), EventSpec(min(end, start + 120.0), "manager-restart")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=st.sampled_from(list(Strategy)), faults=st.lists(fault(), min_size=1, max_size=6),
       seed=st.integers(0, 2**16))
def test_no_schedule_breaks_safety_or_liveness(strategy: Strategy, faults: list[list[EventSpec]],
                                               seed: int) -> None:
    from dataclasses import replace

    base = generate_case(seed, strategy)
    events = sorted((e for pair in faults for e in pair), key=lambda e: e.at_s)
    scenario = replace(base, storage=CLUSTER.storage, hosts=CLUSTER.hosts, vms=CLUSTER.vms,
                       events=tuple(events))
    _, _, findings = run_case(scenario)
    assert not findings, findings


REPLAY_DIGEST = """
import hashlib, sys
from sim.runner import Simulation
from formats.scenario import load_scenario
sim = Simulation(load_scenario(sys.argv[1]))
digest = hashlib.sha256()
sim.runtime.trace(lambda now, to, msg: digest.update(f"{now!r} {to} {msg!r}".encode()))
sim.run()
print(digest.hexdigest())
"""


def test_a_run_does_not_depend_on_the_string_hash_seed() -> None:
    """Iterating a set of names is ordered by hashing, which Python seeds per process: a
    run that did so would replay differently from the campaign that found it. Hash seeds 0
    and 2 gave this scenario two different sequences of deliveries before the fix."""
    import os
    import subprocess
    import sys

    path = Path(__file__).parent.parent / "scenarios/regressions/replay-independent-of-hash-seed.toml"
    digests = set()
    for hash_seed in ("0", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-c", REPLAY_DIGEST, str(path)], capture_output=True,
                              text=True, env=env, check=False, cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout)
    assert len(digests) == 1


@pytest.mark.parametrize("name", ["lossy-total-isolation-force", "shared-host-power-loss",
                                  "agent-crash-force"])
def test_lanes_do_not_change_a_run(name: str) -> None:
    """The runtime's lanes (one FIFO per delay, only heads in simpy's queue) are a cheaper
    queue, not another order: every delivery, its time and its message are the same with
    lanes, without them, and with too few for every delay (lossy links, jitter and drifting
    clocks make many delays)."""
    import hashlib

    from formats.scenario import load_scenario
    from sim.runner import Simulation

    path = Path(__file__).parent.parent / f"scenarios/{name}.toml"
    digests = []
    for max_lanes in (64, 0, 2):
        sim = Simulation(load_scenario(path))
        sim.runtime.max_lanes = max_lanes
        digest = hashlib.sha256()
        sim.runtime.trace(lambda now, to, msg, d=digest: d.update(f"{now!r} {to} {msg!r}".encode()))
        sim.run()
        digests.append((digest.hexdigest(), sim.runtime.messages))
    assert digests[0][1] > 0 and len(set(digests)) == 1
