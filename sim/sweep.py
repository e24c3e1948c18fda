"""Parameter sweeps: a scenario over a cross product of settings and seeds, in parallel.

One run of a scenario is a sample: boot times, ping phases and lost messages depend on
the seed. To say how fast HA recovers *with a given network and given settings*, a
sweep runs every combination of the ``--param`` values with N seeds each and keeps one
row per run: the parameters, the seed, the recovery figures (``sim.recovery``), the
checker findings and the false failovers.

Runs are independent, so they go to a ``concurrent.futures`` process pool (all cores by
default) or, with ``dask_address``, to a Dask distributed cluster; both get the same
chunks of tasks and the rows come back in the same order whatever finishes first, so a
sweep's CSV depends only on its arguments.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from actors.config import DEFAULT, DURATION_KEYS, KEY_TO_FIELD, PROFILES, ConfigError, HaConfig
from formats.scenario import CLOCK_DRIFT_MAX
from formats.spec import Scenario
from formats.units import UnitError, format_duration, parse_duration
from sim.progress import Progress
from sim.recovery import Recovery, false_failovers, neverstop_recoveries, spurious_unknowns
from sim.result import RunResult

PROFILE_KEY = "profile"
NETWORK_KEYS: dict[str, str] = {  # --param key -> NetworkCondition field
    "network.loss": "loss",
    "network.latency": "latency_s",
    "network.jitter": "jitter_s",
    "network.clock_drift": "clock_drift",
}
KNOWN_KEYS: tuple[str, ...] = (PROFILE_KEY, *sorted(KEY_TO_FIELD), *NETWORK_KEYS)

# The figures of one run, each the worst (largest) over the run's NeverStop incidents:
# a run is as good as its slowest VM, so percentiles over runs are conservative.
# Detection and decision count every disrupted incident (a LocalStorage VM's host that
# died is detected and decided on, then waits); order, restart and downtime count the
# incidents HA recovered on its own, so a by-design wait for a repair (Permissive, or a
# disk only on the failed host) is counted in ``waited`` instead of as a huge downtime.
FIGURES: tuple[str, ...] = ("detect_s", "decide_s", "order_s", "restart_s", "downtime_s")
_ANY_DISRUPTED = ("detect_s", "decide_s")
ROW_TAIL: tuple[str, ...] = (
    "seed", "ok", "incidents", "recovered_by_ha", "waited", "unrecovered", *FIGURES, "failover_order_s",
    "findings", "checkers", "expectations_failed", "false_failovers", "spurious_unknown",
)


# What the summary after a sweep shows, p50/p99/max over runs: the decision (which a
# LocalStorage VM's dead host also gets), the start order and the downtime.
SUMMARY_FIGURES: tuple[str, ...] = ("decide_s", "order_s", "downtime_s")


class ParamError(ConfigError):
    """A bad ``--param`` (or other sweep argument): one line, exit code 2.

    A ``ConfigError`` so that the CLI's existing handler prints it as ``neverstop: ...``.
    """


@dataclass(frozen=True)
class Param:
    """One ``--param KEY=V1,V2,...``: the typed values and their spelling for the CSV."""

    key: str
    values: tuple[Any, ...]
    texts: tuple[str, ...]


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ParamError(f"--param {key}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ParamError(f"--param {key}: {text!r} is not a finite number")
    return value


def _seconds(key: str, text: str) -> float:
    """A duration: ``2s``, ``500ms``, ``1m30s``, or a plain number of seconds."""
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text, f"--param {key}")
    except UnitError as err:
        raise ParamError(str(err)) from None


def parse_value(key: str, text: str) -> Any:
    """One value of ``key``, typed and checked as the scenario parser would check it."""
    if key == PROFILE_KEY:
        if text in PROFILES or (text.endswith(".toml") and Path(text).is_file()):
            return text
        raise ParamError(f"--param profile: unknown profile {text!r} "
                         f"(known: {', '.join(PROFILES)}, or a profile .toml file)")
    if key in NETWORK_KEYS:
        if key in ("network.latency", "network.jitter"):
            return _seconds(key, text)
        limit = 1.0 if key == "network.loss" else CLOCK_DRIFT_MAX
        ratio = _number(key, text)
        if not 0 <= ratio <= limit:
            raise ParamError(f"--param {key}: must be a number from 0 to {limit}, not {text!r}")
        return ratio
    value: Any
    if key in DURATION_KEYS:
        value = _seconds(key, text)
    elif key in ("ha.strategy", "ha.enable"):
        value = text
    else:
        number = _number(key, text)
        value = int(number) if number.is_integer() else number
    try:
        config = HaConfig().with_key(key, value)
    except ConfigError as err:
        raise ParamError(f"--param {err}") from None
    return getattr(config, KEY_TO_FIELD[key])


def parse_param(text: str) -> Param:
    """``KEY=V1,V2,...`` -> Param; every mistake is a one-line ParamError."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not key or not rest.strip():
        raise ParamError(f"bad --param {text!r}: write KEY=V1,V2,... (e.g. ha.host.check.interval=1s,2s)")
    if key not in KNOWN_KEYS:
        raise ParamError(f"unknown --param key {key!r} (known: {', '.join(KNOWN_KEYS)})")
    texts = tuple(t.strip() for t in rest.split(","))
    if any(not t for t in texts):
        raise ParamError(f"bad --param {text!r}: empty value between commas")
    if len(set(texts)) != len(texts):
        raise ParamError(f"bad --param {text!r}: a value is listed twice")
    return Param(key, tuple(parse_value(key, t) for t in texts), texts)


def parse_params(texts: Iterable[str]) -> list[Param]:
    params = [parse_param(t) for t in texts]
    keys = [p.key for p in params]
    for key in keys:
        if keys.count(key) > 1:
            raise ParamError(f"--param {key} is given twice: list all its values in one --param")
    return params


def read_toml_file(path: str | Path) -> dict[str, Any]:
    """A settings file (a profile, a network condition) as TOML; a one-line ParamError
    for a file that is not TOML or not UTF-8 text."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ParamError(f"{path}: invalid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ParamError(f"{path}: not UTF-8 text") from None


def load_profile(path: str | Path) -> HaConfig:
    """Read a profile file: ``[ha]`` with ZStack keys over the default profile."""
    name = str(path)
    doc = read_toml_file(path)
    table = doc.get("ha")
    if not isinstance(table, dict) or set(doc) - {"ha"}:
        raise ParamError(f"{name}: a profile file holds one [ha] table of ZStack keys")
    config = DEFAULT
    for key, raw in table.items():
        if key not in KEY_TO_FIELD:
            raise ParamError(f"{name}: ha.{key!r}: unknown HA key (known: {', '.join(sorted(KEY_TO_FIELD))})")
        try:
            value = parse_duration(raw, f"ha.{key}") if key in DURATION_KEYS else raw
            config = config.with_key(key, value)
        except UnitError as err:
            raise ParamError(f"{name}: {err}") from None
        except ConfigError as err:
            raise ParamError(f"{name}: {err}") from None
    return config


def base_config(scenario: Scenario, profile: str) -> HaConfig:
    """``profile`` (a name or a profile file) with the scenario's own [ha] overrides on top,
    as ``neverstop sim run --profile`` does."""
    config = PROFILES[profile] if profile in PROFILES else load_profile(profile)
    for key, value in scenario.ha_overrides.items():
        config = config.with_key(key, value)
    return config


def apply_point(scenario: Scenario, point: dict[str, Any]) -> Scenario:
    """The scenario with one combination of parameter values applied: the profile first
    (then the scenario's [ha] table), then the HA keys, then the network condition."""
    profile = str(point.get(PROFILE_KEY, scenario.profile))
    config = base_config(scenario, profile) if PROFILE_KEY in point else scenario.config
    network = scenario.network
    for key, value in point.items():
        if key in KEY_TO_FIELD:
            config = config.with_key(key, value)
        elif key in NETWORK_KEYS:
            network = replace(network, **{NETWORK_KEYS[key]: value})
    return replace(scenario, profile=profile, config=config, network=network)


def grid(params: Sequence[Param]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """The cross product, first parameter slowest: (typed values, spelled values) per point."""
    points = []
    for combo in itertools.product(*(range(len(p.values)) for p in params)):
        typed = {p.key: p.values[i] for p, i in zip(params, combo, strict=True)}
        texts = {p.key: p.texts[i] for p, i in zip(params, combo, strict=True)}
        points.append((typed, texts))
    return points


# -- one run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One run to do: picklable, so it can cross to a worker process or a Dask worker."""

    index: int
    scenario: Scenario
    seed: int
    label: dict[str, str] = field(default_factory=dict)  # scenario and parameter columns


@dataclass
class RunRecord:
    """What a sweep keeps of one run: its CSV row and its incidents (for notebooks)."""

    index: int
    row: dict[str, Any]
    recoveries: list[Recovery]


def _worst(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def run_row(result: RunResult, scenario: Scenario) -> tuple[dict[str, Any], list[Recovery]]:
    """The row of one run (without its label columns) and its NeverStop incidents."""
    recs = [r for r in neverstop_recoveries(result) if r.disrupted]
    healed = [r for r in recs if r.recovered_by_ha]
    row: dict[str, Any] = {
        "seed": result.seed,
        "ok": result.ok,
        "incidents": len(recs),
        "recovered_by_ha": len(healed),
        "waited": sum(1 for r in recs if r.waited),
        "unrecovered": sum(1 for r in recs if r.unrecovered),
    }
    for name in FIGURES:
        row[name] = _worst(getattr(r, name) for r in (recs if name in _ANY_DISRUPTED else healed))
    row["failover_order_s"] = _worst(r.order_s for r in healed if r.failover)
    row["findings"] = len(result.violations)
    row["checkers"] = ";".join(sorted({v.checker for v in result.violations}))
    row["expectations_failed"] = sum(1 for e in result.expectations if not e.ok)
    row["false_failovers"] = len(false_failovers(result, scenario))
    row["spurious_unknown"] = spurious_unknowns(result)
    return row, recs


def run_task(task: Task) -> RunRecord:
    from sim.runner import run_scenario

    scenario = replace(task.scenario, seed=task.seed)
    result = run_scenario(scenario)
    row, recs = run_row(result, scenario)
    return RunRecord(task.index, {**task.label, **row}, recs)


def run_chunk(tasks: Sequence[Task]) -> list[RunRecord]:
    """Several runs per job: a run takes tens of milliseconds, so one job per run would
    spend as long shipping tasks around as running them."""
    return [run_task(t) for t in tasks]


# -- progress and execution -------------------------------------------------------------------------


def _chunks(tasks: Sequence[Task], jobs: int) -> list[list[Task]]:
    size = max(1, min(25, len(tasks) // max(jobs * 8, 1)))
    return [list(tasks[i:i + size]) for i in range(0, len(tasks), size)]


def execute(tasks: Sequence[Task], jobs: int | None = None, dask_address: str | None = None,
            progress: Progress | None = None) -> list[RunRecord]:
    """Run every task; return the records in task order.

    ``jobs`` 1 runs in this process (no pickling: handy under a debugger); more uses a
    process pool; ``dask_address`` sends the same chunks to a Dask scheduler instead.
    """
    jobs = jobs or os.cpu_count() or 1
    records: list[RunRecord] = []
    done: Callable[[list[RunRecord]], None] = records.extend
    if progress is not None:
        def done(batch: list[RunRecord]) -> None:
            records.extend(batch)
            progress.advance(len(batch))

    chunks = _chunks(tasks, 4 if dask_address else jobs)
    if dask_address:
        _execute_dask(chunks, dask_address, done)
    elif jobs == 1:
        for chunk in chunks:
            done(run_chunk(chunk))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            pending: set[Future[list[RunRecord]]] = {pool.submit(run_chunk, c) for c in chunks}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done(fut.result())
    if progress is not None:
        progress.close()
    records.sort(key=lambda r: r.index)
    return records


def _execute_dask(chunks: list[list[Task]], address: str,
                  done: Callable[[list[RunRecord]], None]) -> None:
    try:  # distributed ships no type hints: its two entry points are used as Any
        import distributed
    except ImportError:
        raise ParamError("--dask needs the distributed package: pip install 'dask[distributed]'") from None
    client_class: Any = distributed.Client
    as_completed: Any = distributed.as_completed
    try:
        client = client_class(address, timeout="20s")
    except (OSError, TimeoutError) as err:
        raise ParamError(f"--dask: cannot reach the Dask scheduler at {address!r}: {err}") from None
    try:
        futures = client.map(run_chunk, chunks, pure=False)
        for fut in as_completed(futures):
            done(fut.result())
    finally:
        client.close()


# -- a whole sweep ----------------------------------------------------------------------------------


def scenario_label(scenario: Scenario) -> str:
    return Path(scenario.path).stem if scenario.path else scenario.name


def make_tasks(scenarios: Sequence[Scenario], params: Sequence[Param], seeds: Sequence[int]) -> list[Task]:
    tasks: list[Task] = []
    for scenario in scenarios:
        for typed, texts in grid(params):
            applied = apply_point(scenario, typed)
            label = {"scenario": scenario_label(scenario), **texts}
            for seed in seeds:
                tasks.append(Task(len(tasks), applied, seed, label))
    return tasks


def sweep(scenarios: Sequence[Scenario], params: Sequence[Param], seeds: Sequence[int],
          jobs: int | None = None, dask_address: str | None = None,
          progress: bool | Progress = False) -> list[RunRecord]:
    """Run the cross product of ``params`` over ``seeds`` for each scenario.

    This is the Python entry point the notebooks use; ``neverstop sim sweep`` adds the CSV.
    """
    tasks = make_tasks(scenarios, params, seeds)
    bar = progress if isinstance(progress, Progress) else Progress(len(tasks), enabled=progress)
    return execute(tasks, jobs, dask_address, bar)


def columns(params: Sequence[Param]) -> list[str]:
    return ["scenario", *(p.key for p in params), *ROW_TAIL]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)


def write_csv(records: Sequence[RunRecord], params: Sequence[Param], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    cols = columns(params)
    writer.writerow(cols)
    for rec in records:
        writer.writerow([_cell(rec.row.get(c)) for c in cols])


# -- the summary printed after a sweep --------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or
    below it. It is always one of the values, never an interpolation between two."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class PointSummary:
    """The runs of one scenario at one combination of parameter values."""

    label: dict[str, str]
    runs: int
    findings: int  # runs with a checker finding
    false_failovers: int
    waited: int
    unrecovered: int
    expectations_failed: int  # runs with a failed expectation
    figures: dict[str, tuple[float | None, float | None, float | None]]  # name -> p50, p99, max

    @property
    def clean(self) -> bool:
        return not (self.findings or self.false_failovers or self.unrecovered or self.expectations_failed)


def summarise(records: Sequence[RunRecord], params: Sequence[Param],
              figures: Sequence[str] = SUMMARY_FIGURES) -> list[PointSummary]:
    keys = ["scenario", *(p.key for p in params)]
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(tuple(str(rec.row[k]) for k in keys), []).append(rec)
    out = []
    for ident, recs in groups.items():
        rows = [r.row for r in recs]
        figs = {}
        for name in figures:
            values = [float(r[name]) for r in rows if r[name] is not None]
            figs[name] = (percentile(values, 50), percentile(values, 99), max(values) if values else None)
        out.append(PointSummary(
            label=dict(zip(keys, ident, strict=True)),
            runs=len(rows),
            findings=sum(1 for r in rows if r["findings"]),
            false_failovers=sum(int(r["false_failovers"]) for r in rows),
            waited=sum(int(r["waited"]) for r in rows),
            unrecovered=sum(int(r["unrecovered"]) for r in rows),
            expectations_failed=sum(1 for r in rows if r["expectations_failed"]),
            figures=figs,
        ))
    return out


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else format_duration(value)


def summary_lines(summaries: Sequence[PointSummary],
                  figures: Sequence[str] = SUMMARY_FIGURES) -> list[str]:
    """A plain-text table: one line per scenario and parameter combination."""
    if not summaries:
        return ["no runs"]
    keys = list(summaries[0].label)
    head = [*keys, "runs"]
    for name in figures:
        head += [f"{name} p50", f"{name} p99", f"{name} max"]
    head += ["findings", "false failovers", "waited", "unrecovered", "expect failed"]
    table = [head]
    for s in summaries:
        line = [s.label[k] for k in keys] + [str(s.runs)]
        for name in figures:
            line += [_fmt_s(v) for v in s.figures[name]]
        line += [str(s.findings), str(s.false_failovers), str(s.waited), str(s.unrecovered),
                 str(s.expectations_failed)]
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
