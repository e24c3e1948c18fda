"""Tuning: the fastest HA settings that stay safe on a given network.

``neverstop sim tune`` answers the second half of the operator's question, "which
settings get there without false failovers?". It searches the HA timing keys by
coordinate descent: starting from a profile, it tries each value of one key's ladder
with the others fixed (and the keys of each ``JOINT`` group on their cross product),
keeps a value only if it makes recovery faster *and* every run is clean (no checker
finding, no false failover, every NeverStop VM back; optionally no false alarm either),
and goes round the keys again until a round changes nothing. "Faster" is the sum over
the scenarios of the p99 of the objective (downtime by default).

A clean result on N seeds says nothing about events rarer than about 1 in N runs: check
a tuned profile with a larger ``sim sweep`` before shipping it (docs/tuning.md shows a
1-in-1,000 false failover that 150 seeds per candidate missed).

Every candidate is run on the same seeds (common random numbers), so two candidates
differ by their settings, not by their luck. A candidate must beat the incumbent by a
margin (``MIN_GAIN_S`` and ``MIN_GAIN_RATIO``) to replace it: among settings that recover
equally fast the incumbent, usually the gentler one, stays. The result is a profile file,
TOML with a ``[ha]`` table of ZStack keys, that ``sim sweep --param profile=FILE`` reads
and that can be pasted into a scenario's ``[ha]`` table.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from actors.config import DURATION_KEYS, KEY_TO_FIELD, PROFILES, HaConfig
from actors.states import Strategy
from formats.spec import NetworkCondition, Scenario
from formats.units import format_duration
from sim.sweep import (
    ParamError,
    Progress,
    RunRecord,
    Task,
    execute,
    load_profile,
    percentile,
    read_toml_file,
    scenario_label,
)

# Ladders of values to try, fastest first. Keys that do not bear on recovery (the
# reconnection confirmations, the retry cap) are left as the start profile has them.
SEARCH_SPACE: dict[str, tuple[float | int, ...]] = {
    "host.ping.interval": (1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0),
    "host.ping.timeout": (0.5, 1.0, 2.0, 5.0, 10.0),
    "host.ping.maxFailure": (1, 2, 3, 4, 5, 6),
    "ha.host.check.interval": (0.5, 1.0, 2.0, 5.0),
    "ha.host.check.maxAttempts": (1, 2, 3, 6, 12),
    "ha.host.selfFencer.interval": (1.0, 2.0, 3.0, 5.0),
    "ha.host.selfFencer.maxAttempts": (2, 3, 4, 6),
    "ha.host.selfFencer.storageChecker.timeout": (1.0, 2.0, 5.0),
    "ha.neverStopVm.scan.interval": (5.0, 10.0, 30.0, 60.0),
    "ha.neverStopVm.retry.delay": (5.0, 10.0, 30.0, 60.0),
}
# Keys tried together, on the cross product of their ladders, as well as one by one: a
# faster ping is only safe from false alarms with more failures allowed in a row, so
# neither change alone is an improvement and one-key-at-a-time search would never find
# the pair.
JOINT: tuple[tuple[str, ...], ...] = (("host.ping.interval", "host.ping.maxFailure"),)
OBJECTIVES = ("downtime_s", "order_s", "decide_s")
MIN_GAIN_S = 0.05
MIN_GAIN_RATIO = 0.02
PROFILE_SKIP = frozenset({"ha.enable", "ha.strategy"})  # policy choices, not timings


# -- files: the network condition in, the profile out ------------------------------------------------


def load_network(path: str | Path) -> NetworkCondition:
    """The ``[network]`` table of a TOML file, checked exactly as in a scenario file."""
    from formats.scenario import ScenarioError, parse_network_table

    name = str(path)
    doc = read_toml_file(path)
    extra = sorted(set(doc) - {"network", "name", "description"})
    if extra:
        raise ParamError(f"{name}: unknown key {extra[0]!r} (a network file holds a [network] table)")
    if "network" not in doc:
        raise ParamError(f"{name}: no [network] table (e.g. [network] loss = 0.01, jitter = \"50ms\")")
    try:
        return parse_network_table(doc, name)
    except ScenarioError as err:
        raise ParamError(str(err)) from None


def _toml_value(key: str, value: Any) -> str:
    if key in DURATION_KEYS:
        return f'"{format_duration(float(value))}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Strategy):
        return f'"{value.value}"'
    return repr(value)


def profile_text(config: HaConfig, header: Sequence[str] = ()) -> str:
    """A profile file: comment lines, then every timing key of ``config`` in ``[ha]``."""
    lines = [f"# {h}" if h else "#" for h in header]
    lines.append("[ha]")
    for key, value in config.as_keys().items():
        if key not in PROFILE_SKIP:
            lines.append(f'"{key}" = {_toml_value(key, value)}')
    return "\n".join(lines) + "\n"


# -- evaluating candidates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """How one candidate config did over the scenarios and seeds."""

    config: HaConfig
    runs: int
    bad_runs: int  # runs with a checker finding, a false failover or a NeverStop VM not back
    false_failovers: int
    findings: int
    false_alarms: int  # runs with a VM shown Unknown on an untouched host
    unrecovered: int  # runs with a NeverStop VM never back
    expectations_failed: int  # runs with a failed expectation: reported, not disqualifying
    p99: dict[str, float | None]  # per scenario: p99 of the objective over runs
    p50: dict[str, float | None]

    @property
    def feasible(self) -> bool:
        return self.runs > 0 and self.bad_runs == 0 and all(v is not None for v in self.p99.values())

    @property
    def score(self) -> float:
        """The sum of the scenarios' p99s (infinite when infeasible): a gain on any failure
        type counts, where the worst scenario alone would hide every gain on the others."""
        if not self.feasible:
            return math.inf
        return sum(v for v in self.p99.values() if v is not None)


def _bad(row: dict[str, Any], forbid_false_alarms: bool) -> bool:
    """A run that rules its settings out: unsafe (a checker finding, a false failover), a
    NeverStop VM never back (its downtime would be infinite) or, when asked, a false alarm
    (a VM shown Unknown on a host nothing happened to). A failed scenario expectation
    is reported but does not rule settings out: expectations also pin down details of the
    view, such as a Stopping shown before Stopped, that say nothing about speed or safety."""
    alarm = bool(row["spurious_unknown"]) and forbid_false_alarms
    return bool(row["findings"] or row["false_failovers"] or row["unrecovered"] or alarm)


def evaluate(records: Sequence[RunRecord], config: HaConfig, objective: str,
             forbid_false_alarms: bool = False) -> Evaluation:
    by_scenario: dict[str, list[float]] = {}
    for rec in records:
        values = by_scenario.setdefault(str(rec.row["scenario"]), [])
        if rec.row[objective] is not None:
            values.append(float(rec.row[objective]))
    return Evaluation(
        config=config,
        runs=len(records),
        bad_runs=sum(1 for r in records if _bad(r.row, forbid_false_alarms)),
        false_failovers=sum(int(r.row["false_failovers"]) for r in records),
        findings=sum(int(r.row["findings"]) for r in records),
        false_alarms=sum(1 for r in records if r.row["spurious_unknown"]),
        unrecovered=sum(1 for r in records if r.row["unrecovered"]),
        expectations_failed=sum(1 for r in records if r.row["expectations_failed"]),
        p99={s: percentile(v, 99) for s, v in by_scenario.items()},
        p50={s: percentile(v, 50) for s, v in by_scenario.items()},
    )


def _margin(score: float) -> float:
    return max(MIN_GAIN_S, MIN_GAIN_RATIO * score)


def _better(new: Evaluation, old: Evaluation) -> bool:
    """Clean, and faster by more than the noise margin."""
    if not new.feasible:
        return False
    if not old.feasible:
        return True
    return old.score - new.score > _margin(old.score)


def _as_good(new: Evaluation, old: Evaluation) -> bool:
    """Clean, and not slower by more than the noise margin."""
    return new.feasible and (not old.feasible or new.score - old.score <= _margin(old.score))


@dataclass
class TuneResult:
    start: Evaluation
    best: Evaluation
    tried: int
    history: list[str] = field(default_factory=list)  # one line per accepted or undone change


Reporter = Callable[[str], None]


def tune(scenarios: Sequence[Scenario], seeds: Sequence[int], network: NetworkCondition | None = None,
         start: str | HaConfig = "tuned", objective: str = "downtime_s",
         space: dict[str, tuple[float | int, ...]] | None = None, rounds: int = 3,
         jobs: int | None = None, dask_address: str | None = None, forbid_false_alarms: bool = False,
         report: Reporter | None = None, progress: bool = False) -> TuneResult:
    """Coordinate descent over ``space`` from the ``start`` profile (see the module doc).

    A last pass puts back the start value of every key the descent changed, one at a
    time, wherever that is as good within the noise margin: a change that only won on
    noise (the fencer interval in a Permissive scenario, say) does not survive, so the
    profile differs from its start only where it has to.
    """
    if objective not in OBJECTIVES:
        raise ParamError(f"unknown objective {objective!r} (known: {', '.join(OBJECTIVES)})")
    space = SEARCH_SPACE if space is None else space
    say: Reporter = report or (lambda line: None)
    bases = [replace(sc, network=network) if network is not None else sc for sc in scenarios]
    cache: dict[HaConfig, Evaluation] = {}

    def run_all(configs: Sequence[HaConfig]) -> list[Evaluation]:
        todo = [c for c in dict.fromkeys(configs) if c not in cache]
        tasks: list[Task] = []
        owner: list[HaConfig] = []
        for config in todo:
            for sc in bases:
                # The scenario's own [ha] keys (its strategy, say) stay; the candidate sets the rest.
                applied = replace(sc, config=_with_policy(config, sc), profile="tuning")
                for seed in seeds:
                    tasks.append(Task(len(tasks), applied, seed, {"scenario": scenario_label(sc)}))
                    owner.append(config)
        if tasks:
            bar = Progress(len(tasks), "runs", enabled=progress)
            records = execute(tasks, jobs, dask_address, bar)
            grouped: dict[HaConfig, list[RunRecord]] = {}
            for rec in records:
                grouped.setdefault(owner[rec.index], []).append(rec)
            for config in todo:
                cache[config] = evaluate(grouped.get(config, []), config, objective, forbid_false_alarms)
        return [cache[c] for c in configs]

    start_config = start if isinstance(start, HaConfig) else start_profile(start)
    first = run_all([start_config])[0]
    say(f"start ({start if isinstance(start, str) else 'given config'}): {_describe(first, objective)}")
    best = first
    history: list[str] = []
    for number in range(1, rounds + 1):
        changed = False
        for keys, combos in moves(space):
            candidates = [_with_values(best.config, keys, combo) for combo in combos]
            results = run_all(candidates)
            winner = best
            for ev in results:
                if _better(ev, winner):
                    winner = ev
            if winner is not best:
                change = ", ".join(f"{key} {_shown(key, best.config)} -> {_shown(key, winner.config)}"
                                   for key in keys
                                   if getattr(best.config, KEY_TO_FIELD[key])
                                   != getattr(winner.config, KEY_TO_FIELD[key]))
                line = f"round {number}: {change}: {_describe(winner, objective)}"
                say(line)
                history.append(line)
                best = winner
                changed = True
        if not changed:
            say(f"round {number}: no change")
            break
    for key in space:
        if getattr(best.config, KEY_TO_FIELD[key]) == getattr(start_config, KEY_TO_FIELD[key]):
            continue
        back = run_all([best.config.with_key(key, getattr(start_config, KEY_TO_FIELD[key]))])[0]
        if _as_good(back, best):
            change = f"{key} {_shown(key, best.config)} -> {_shown(key, back.config)}"
            line = f"undo: {change}: {_describe(back, objective)}"
            say(line)
            history.append(line)
            best = back
    return TuneResult(start=first, best=best, tried=len(cache), history=history)


Move = tuple[tuple[str, ...], list[tuple[float | int, ...]]]


def moves(space: dict[str, tuple[float | int, ...]]) -> list[Move]:
    """What one round tries: each key of ``space`` alone, then each ``JOINT`` group whose
    keys are all in ``space`` on the cross product of their ladders."""
    out: list[Move] = [((key,), [(v,) for v in ladder]) for key, ladder in space.items()]
    for group in JOINT:
        if all(key in space for key in group):
            out.append((group, list(itertools.product(*(space[key] for key in group)))))
    return out


def _with_values(config: HaConfig, keys: Sequence[str], values: Sequence[float | int]) -> HaConfig:
    for key, value in zip(keys, values, strict=True):
        config = config.with_key(key, value)
    return config


def start_profile(name: str) -> HaConfig:
    """A named profile or a profile file, without any scenario's overrides: tuning sets
    the timings itself, and each scenario keeps only its policy keys (``_with_policy``)."""
    if name in PROFILES:
        return PROFILES[name]
    if not Path(name).is_file():
        raise ParamError(f"unknown profile {name!r} (known: {', '.join(PROFILES)}, or a profile .toml file)")
    return load_profile(name)


def _with_policy(config: HaConfig, scenario: Scenario) -> HaConfig:
    """A candidate's timings with the scenario's own [ha] choices (strategy, enable) kept."""
    for key in PROFILE_SKIP:
        if key in scenario.ha_overrides:
            config = config.with_key(key, scenario.ha_overrides[key])
    return config


def _shown(key: str, config: HaConfig) -> str:
    value = getattr(config, KEY_TO_FIELD[key])
    return format_duration(value) if key in DURATION_KEYS else str(value)


def _describe(ev: Evaluation, objective: str) -> str:
    if not ev.feasible:
        reasons = []
        if ev.findings:
            reasons.append(f"{ev.findings} checker findings")
        if ev.false_failovers:
            reasons.append(f"{ev.false_failovers} false failovers")
        if ev.unrecovered:
            reasons.append(f"{ev.unrecovered} with a VM never back")
        if ev.false_alarms:
            reasons.append(f"{ev.false_alarms} with a false alarm")
        return f"ruled out: {ev.bad_runs}/{ev.runs} runs bad ({', '.join(reasons)})"
    parts = [f"{s} p99 {format_duration(v or 0)}" for s, v in ev.p99.items()]
    note = ""
    if ev.false_alarms:
        note += f"; {ev.false_alarms} runs with a false alarm (VM Unknown on a healthy host)"
    if ev.expectations_failed:
        note += f"; {ev.expectations_failed} runs failed an expectation"
    return f"{objective} " + ", ".join(parts) + f" over {ev.runs} runs, no finding, no false failover{note}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


def describe_network(network: NetworkCondition) -> str:
    return (f"loss {network.loss:g} per link, latency {_ms(network.latency_s)} per link, "
            f"jitter {_ms(network.jitter_s)} per link, clock drift {network.clock_drift:g}")


def tuned_header(command: str, network: NetworkCondition, result: TuneResult, seeds: int,
                 objective: str) -> list[str]:
    """The comment block of a profile file: how it was made and what it achieved."""
    net = describe_network(network)
    best = result.best
    lines = [
        "HA profile written by neverstop sim tune.",
        f"command: {command}",
        f"network: {net}",
        f"seeds per candidate: {seeds}; candidates tried: {result.tried}",
        f"result: {_describe(best, objective)}",
    ]
    for s in best.p50:
        lines.append(f"  {s}: {objective} p50 {format_duration(best.p50[s] or 0)}, "
                     f"p99 {format_duration(best.p99[s] or 0)}")
    return lines
