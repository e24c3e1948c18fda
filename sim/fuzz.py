"""Randomized fault campaigns: deterministic simulation testing of detection and fencing.

One seed gives one whole run: a random cluster, a random schedule of overlapping
faults and user actions, all healed by ``heal_s``, then quiet time for HA to finish its
work. Every checker watches the ground truth throughout; at the end, liveness is
checked: every NeverStop VM that a user did not stop and that fits somewhere runs again,
exactly once, where the manager says it runs. A failing seed is shrunk to the fewest
events that still fail the same way and written out as a scenario file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from random import Random

from actors.config import PROFILES, HaConfig
from actors.policy import manager_fence_window_s
from actors.states import HaLevel, Network, Strategy, VmState
from formats.spec import EventSpec, ExpectSpec, Scenario
from sim.clustergen import Cluster, generate_cluster, to_scenario
from sim.result import RunResult
from sim.runner import HOST_BOOT_S, Simulation

FAULTS_FROM_S = 30.0
HEAL_S = 20 * 60.0  # every fault is healed by then
OUTAGE_S = (5.0, 300.0)
FAULT_KINDS: dict[str, float] = {  # kind -> weight in the schedule
    "power": 3.0, "partition": 3.0, "one-way": 1.5, "storage": 2.0, "lossy-link": 2.0,
    "clock-drift": 1.0, "libvirt-hang": 1.5, "manager-crash": 1.0, "maintenance": 1.5,
    "vm-crash": 3.0, "user": 2.0, "ha-switch": 0.5, "agent-crash": 2.0,
}
AGENT_QUICK_RESTART_S = (0.5, 20.0)  # a service manager's restart, around the watchdog timeout


def liveness_bound_s(config: HaConfig) -> float:
    """How long after the last fault healed HA may take to bring every VM back:
    detect a host (pings, then check rounds and the fencing window), see it return
    (confirmation pings), one full retry backoff and one scan, a host boot, and a
    minute for the guest operations themselves."""
    detect = config.ping_interval_s + config.ping_max_failure * (config.ping_timeout_s + 1.0)
    checks_s = config.host_check_interval_s * (config.host_check_max_attempts + 2)
    judge = checks_s + manager_fence_window_s(config)
    rejoin = config.host_check_success_interval_s * (config.host_check_success_times + 1)
    retry = config.retry_max_interval_s + config.scan_interval_s
    return detect + judge + rejoin + retry + HOST_BOOT_S + 60.0


@dataclass(frozen=True)
class Finding:
    kind: str  # a checker's name, or "liveness"
    detail: str
    vm: str | None = None


@dataclass
class CaseResult:
    seed: int
    strategy: str
    faults: Counter[str]
    findings: list[Finding]
    recoveries_s: list[float]  # ground-truth gaps between two runs of a NeverStop VM
    events: int

    @property
    def ok(self) -> bool:
        return not self.findings


# -- generating a case ----------------------------------------------------------------------------


def _cluster(rng: Random, size: str) -> Cluster:
    hosts, clusters = (rng.randint(3, 5), 1) if size == "small" else (rng.randint(8, 16), 2)
    return generate_cluster(rng, hosts, clusters, vms_per_host=rng.uniform(1.5, 4.0),
                            neverstop_share=0.7, local_share=0.35, fill=rng.uniform(0.3, 0.9),
                            power_controller_share=rng.choice((1.0, 1.0, 0.5, 0.0)),
                            watchdog_share=rng.choice((1.0, 1.0, 0.5)))


def _window(rng: Random) -> tuple[float, float]:
    length = rng.uniform(*OUTAGE_S)
    start = rng.uniform(FAULTS_FROM_S, HEAL_S - length)
    return round(start, 3), round(start + length, 3)


def fuzz_schedule(rng: Random, cluster: Cluster, count: int) -> list[EventSpec]:
    """``count`` faults of every kind, overlapping freely, each healed by HEAL_S."""
    hosts = [h.name for h in cluster.hosts]
    vms = [v.name for v in cluster.vms]
    kinds, weights = zip(*FAULT_KINDS.items(), strict=True)
    events: list[EventSpec] = []
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        a, b = _window(rng)
        host = rng.choice(hosts)
        if kind == "power":
            events += [EventSpec(a, "power-off", host), EventSpec(b, "power-on", host)]
        elif kind in ("partition", "one-way"):
            net = rng.choice([n.value for n in Network] + ["all"])
            direction = rng.choice(("in", "out")) if kind == "one-way" else "both"
            args = {"network": net, "direction": direction}
            events += [EventSpec(a, "network-down", host, args), EventSpec(b, "network-up", host, dict(args))]
        elif kind == "storage":
            pool = cluster.hosts[hosts.index(host)].storage[0]
            events += [EventSpec(a, "storage-down", host, {"pool": pool}),
                       EventSpec(b, "storage-up", host, {"pool": pool})]
        elif kind == "lossy-link":
            net = rng.choice([n.value for n in Network] + ["all"])
            loss, latency = round(rng.uniform(0.01, 0.3), 3), round(rng.uniform(0.0, 0.2), 3)
            events += [EventSpec(a, "link-loss", host, {"network": net, "loss": loss, "latency": latency}),
                       EventSpec(b, "link-loss", host, {"network": net, "loss": 0.0, "latency": 0.0})]
        elif kind == "clock-drift":
            events.append(EventSpec(a, "clock-drift", host, {"rate": round(rng.uniform(0.99, 1.01), 4)}))
        elif kind == "libvirt-hang":
            events += [EventSpec(a, "libvirt-hang", host), EventSpec(b, "libvirt-resume", host)]
        elif kind == "agent-crash":
            if rng.random() < 0.5:  # restarted at once by its service manager, or much later
                b = round(min(HEAL_S, a + rng.uniform(*AGENT_QUICK_RESTART_S)), 3)
            events += [EventSpec(a, "agent-crash", host), EventSpec(b, "agent-restart", host)]
        elif kind == "manager-crash":
            events += [EventSpec(a, "manager-crash"), EventSpec(min(b, a + 120.0), "manager-restart")]
        elif kind == "maintenance":
            events += [EventSpec(a, "maintenance-enter", host), EventSpec(b, "maintenance-exit", host)]
        elif kind == "vm-crash" and vms:
            events.append(EventSpec(a, "vm-crash", rng.choice(vms)))
        elif kind == "user" and vms:
            vm = rng.choice(vms)
            stop = EventSpec(a, "vm-stop", vm, {"no_restart": rng.random() < 0.5})
            events += [stop, EventSpec(b, "vm-start", vm)] if rng.random() < 0.6 else [stop]
            if rng.random() < 0.3:
                level = rng.choice((HaLevel.NEVER_STOP, HaLevel.NONE))
                events.append(EventSpec(b, "set-ha", vm, {"level": level}))
        elif kind == "ha-switch":
            events += [EventSpec(a, "set-config", None, {"key": "ha.enable", "value": False}),
                       EventSpec(b, "set-config", None, {"key": "ha.enable", "value": True})]
    return events


def generate_case(seed: int, strategy: Strategy, size: str = "small", profile: str = "default",
                  base: Scenario | None = None) -> Scenario:
    """The scenario of one seed: its cluster (or ``base``'s), faults and config."""
    rng = Random(seed)
    cluster = Cluster(base.storage, base.hosts, base.vms) if base is not None else _cluster(rng, size)
    events = fuzz_schedule(rng, cluster, rng.randint(3, 12))
    config = PROFILES[profile].with_key("ha.strategy", strategy.value)
    duration_s = HEAL_S + liveness_bound_s(config)
    scenario = to_scenario(cluster, f"fuzz seed {seed} ({strategy.value})", duration_s, events,
                           config=config, seed=seed, profile=profile)
    return scenario


# -- judging a run ----------------------------------------------------------------------------------


def _room_for(sim: Simulation, vm: str) -> bool:
    """Could ``vm`` run anywhere right now (powered host of its cluster, its pool, room)?"""
    spec = next(v for v in sim.scenario.vms if v.name == vm)
    cluster = sim.inventory.host(spec.host).cluster
    truth = sim.truth
    for h in sim.scenario.hosts:
        if h.cluster != cluster or spec.storage not in h.storage or not sim.hypervisors[h.name].powered:
            continue
        guests = truth.running_on(h.name)
        used_cpu = sum(truth.vm_cpu[g] for g in guests if g != vm)
        used_mem = sum(truth.vm_mem[g] for g in guests if g != vm)
        if used_cpu + spec.cpu <= h.cpu and used_mem + spec.memory_mib <= h.memory_mib:
            return True
    return False


def _unprovable(sim: Simulation, host: str | None) -> bool:
    """Whether nothing can prove a dead host's guests gone: it is off and has no power
    controller, and Permissive does not trust a self-fencing deadline."""
    if host is None or sim.hypervisors[host].powered:
        return False
    spec = next(h for h in sim.scenario.hosts if h.name == host)
    return not spec.power_controller and sim.scenario.config.strategy is Strategy.PERMISSIVE


def liveness_findings(sim: Simulation, result: RunResult) -> list[Finding]:
    """After every fault healed and the bound passed: the HA view matches the truth, and
    every NeverStop VM that should run (and fits somewhere) runs exactly once."""
    findings: list[Finding] = []
    truth = sim.truth
    for final in result.final:
        copies = sorted(truth.live.get(final.vm, {}))
        if final.state == VmState.RUNNING.value and copies != [final.host]:
            findings.append(Finding("liveness", f"{final.vm} shown Running on {final.host} but runs on "
                                    f"{copies or 'no host'}", final.vm))
            continue
        intent = truth.intents[final.vm]
        wanted = truth.ha_enable and intent.level is HaLevel.NEVER_STOP and not intent.no_restart
        if wanted and final.state == VmState.UNKNOWN.value and _unprovable(sim, final.host):
            continue  # Permissive waits for a host that is off with no power controller: by design
        if wanted and not copies and _room_for(sim, final.vm):
            findings.append(Finding("liveness", f"{final.vm} is NeverStop, fits somewhere, but is "
                                    f"{final.state} and not running", final.vm))
    return findings


def run_case(scenario: Scenario) -> tuple[Simulation, RunResult, list[Finding]]:
    sim = Simulation(scenario)
    result = sim.run()
    findings = [Finding(v.checker, f"[{v.t:.1f}s] {v.detail}") for v in result.violations]
    findings += liveness_findings(sim, result)
    return sim, result, findings


def _recoveries(result: RunResult, scenario: Scenario) -> list[float]:
    neverstop = {v.name for v in scenario.vms if v.ha is HaLevel.NEVER_STOP}
    by_vm: dict[str, list[tuple[float, float | None]]] = {}
    for r in result.runs:
        by_vm.setdefault(r.vm, []).append((r.start, r.end))
    gaps = []
    for vm, runs in by_vm.items():
        if vm in neverstop:
            runs.sort()
            gaps += [b[0] - a[1] for a, b in zip(runs, runs[1:], strict=False) if a[1] is not None]
    return gaps


def fuzz_one(seed: int, strategy: str, size: str = "small", profile: str = "default",
             base: Scenario | None = None) -> CaseResult:
    scenario = generate_case(seed, Strategy(strategy), size, profile, base)
    _, result, findings = run_case(scenario)
    faults = Counter(e.action for e in scenario.events)
    return CaseResult(seed, strategy, faults, findings, _recoveries(result, scenario), len(scenario.events))


# -- shrinking and writing a failing case --------------------------------------------------------------


def _signature(findings: list[Finding]) -> set[tuple[str, str | None]]:
    """What a shrunk run must keep failing on: the same checker, or the same VM's liveness."""
    return {(f.kind, f.vm) for f in findings}


def shrink(scenario: Scenario, findings: list[Finding],
           on_try: Callable[[int], None] | None = None) -> tuple[Scenario, list[Finding]]:
    """Drop events one at a time while the run still fails with a finding of the same
    kind; repeat until no single event can go (a 1-minimal schedule)."""
    wanted = _signature(findings)
    events = list(scenario.events)
    current = findings
    tries = 0
    changed = True
    while changed:
        changed = False
        for i in range(len(events) - 1, -1, -1):
            trial = replace(scenario, events=tuple(events[:i] + events[i + 1:]))
            tries += 1
            if on_try:
                on_try(tries)
            _, _, found = run_case(trial)
            if _signature(found) & wanted:
                events = list(trial.events)
                current = found
                changed = True
    return replace(scenario, events=tuple(events)), current


def failing_scenario(scenario: Scenario, findings: list[Finding]) -> Scenario:
    """Add expectations that fail the way the run failed (checker findings fail it anyway)."""
    expects = []
    for f in findings:
        if f.kind == "liveness" and f.vm is not None:
            expects.append(ExpectSpec(f.vm, after_s=HEAL_S, final_state=VmState.RUNNING,
                                      index=len(expects) + 1))
    description = "Found by neverstop sim fuzz. " + "; ".join(f"{f.kind}: {f.detail}" for f in findings[:5])
    return replace(scenario, expects=tuple(expects), description=description)


def write_failure(scenario: Scenario, findings: list[Finding], out_dir: Path, strategy: str) -> Path:
    from sim.scenario_writer import dump_scenario

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"fuzz-seed-{scenario.seed}-{strategy.lower()}.toml"
    comment = (f"Reproduce: neverstop sim run {path}\n"
               + "\n".join(f"{f.kind}: {f.detail}" for f in findings))
    path.write_text(dump_scenario(failing_scenario(scenario, findings), comment))
    return path


@dataclass
class Summary:
    strategy: str
    seeds: int = 0
    events: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    checker_findings: int = 0
    liveness_failures: int = 0
    failing_seeds: list[int] = field(default_factory=list)
    recoveries_s: list[float] = field(default_factory=list)

    def add(self, case: CaseResult) -> None:
        self.seeds += 1
        self.events += case.events
        self.faults.update(case.faults)
        self.checker_findings += sum(1 for f in case.findings if f.kind != "liveness")
        self.liveness_failures += sum(1 for f in case.findings if f.kind == "liveness")
        if case.findings:
            self.failing_seeds.append(case.seed)
        self.recoveries_s += case.recoveries_s

    def percentiles(self) -> dict[str, float]:
        data = sorted(self.recoveries_s)
        if not data:
            return {}
        pick = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
        out = {k: data[min(len(data) - 1, int(q * len(data)))] for k, q in pick.items()}
        out["max"] = data[-1]
        return out
