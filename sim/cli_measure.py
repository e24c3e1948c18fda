"""``neverstop sim sweep`` and ``neverstop sim tune``: measuring and tuning recovery times.

Registered by ``sim.cli.register``. Bad arguments raise ``ParamError``, a
``ConfigError``, which the CLI prints as one line and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from formats.scenario import load_each
from formats.spec import Scenario
from sim.sweep import ParamError

EXIT_OK, EXIT_FAILED = 0, 1


def _whole(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
        return value

    return convert


_count, _seed = _whole(1), _whole(0)


def _load(files: Sequence[str]) -> list[Scenario]:
    """Every file first, so that a typo in the last one stops the sweep before any run."""
    loaded, errors = load_each(files)
    if errors:
        raise ParamError("; ".join(errors))
    return loaded


def _common(parser: argparse.ArgumentParser, seeds: int) -> None:
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario TOML files")
    parser.add_argument("--seeds", type=_count, default=seeds, metavar="N",
                        help=f"runs per combination, seeds FIRST..FIRST+N-1 (default {seeds})")
    parser.add_argument("--first-seed", type=_seed, default=1, metavar="FIRST", help="first seed (default 1)")
    parser.add_argument("--jobs", type=_count, default=None, metavar="J",
                        help="worker processes (default: one per core)")
    parser.add_argument("--dask", metavar="ADDRESS",
                        help="run on this Dask distributed scheduler (e.g. tcp://10.0.0.5:8786) instead")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")


def register(subparsers: Any) -> None:
    sweep = subparsers.add_parser(
        "sweep", help="run a scenario over a grid of settings and seeds; one CSV row per run",
        description="Run each scenario for every combination of the --param values, N seeds each, "
        "in parallel, and write one CSV row per run: the parameters, the seed, the recovery figures "
        "(each the worst over the run's NeverStop VMs), the checker findings and the false failovers. "
        "Prints p50/p99/max per combination. Parameters: profile (default, tuned or a profile file), "
        "any ZStack HA key (durations as 2s, 500ms or seconds), network.loss, network.latency, "
        "network.jitter, network.clock_drift.")
    _common(sweep, seeds=10)
    sweep.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a parameter and its values; repeat for a cross product")
    sweep.add_argument("--out", required=True, metavar="FILE.csv", help="the CSV to write ('-' for stdout)")
    sweep.set_defaults(func=cmd_sweep)

    tune = subparsers.add_parser(
        "tune", help="search for the fastest HA settings with no finding and no false failover",
        description="Coordinate descent over the HA timing keys under a network condition: keep a "
        "value only if every run stays clean (no checker finding, no false failover, every "
        "NeverStop VM back; with --no-false-alarms, no VM shown Unknown on a healthy host) and the "
        "sum of the scenarios' p99s gets smaller. Writes a profile file (TOML, an [ha] table of ZStack "
        "keys). Exit 0 when a clean profile was found, 1 when even the start profile is not clean "
        "on every run.")
    _common(tune, seeds=50)
    tune.add_argument("--network", metavar="FILE", help="TOML file with a [network] table "
                      "(loss, latency, jitter, clock_drift) applied to every scenario")
    tune.add_argument("--start", default="tuned", metavar="PROFILE",
                      help="profile to start from: default, tuned or a profile file (default tuned)")
    tune.add_argument("--objective", default="downtime_s", choices=("downtime_s", "order_s", "decide_s"),
                      help="the figure whose p99 is minimised (default downtime_s)")
    tune.add_argument("--rounds", type=_count, default=3, help="at most this many passes over the keys")
    tune.add_argument("--no-false-alarms", action="store_true",
                      help="also rule out settings under which a VM on a host nothing happened to is "
                      "shown Unknown (pings lost on a lossy network); they are reported either way")
    tune.add_argument("--out", default="tuned-profile.toml", metavar="PROFILE.toml",
                      help="where to write the profile (default tuned-profile.toml)")
    tune.set_defaults(func=cmd_tune)


def cmd_sweep(args: argparse.Namespace) -> int:
    from sim.sweep import Progress, make_tasks, parse_params, summarise, summary_lines, write_csv
    from sim.sweep import execute as run

    params = parse_params(args.param)
    scenarios = _load(args.scenarios)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    tasks = make_tasks(scenarios, params, seeds)
    out_text = sys.stderr if args.out == "-" else sys.stdout
    points = len(tasks) // len(seeds)
    print(f"sweep: {len(scenarios)} scenario(s) x {points // len(scenarios)} combination(s) x "
          f"{len(seeds)} seeds = {len(tasks)} runs"
          + (f" on {args.dask}" if args.dask else ""), file=out_text)
    records = run(tasks, args.jobs, args.dask, Progress(len(tasks), enabled=not args.quiet))
    if args.out == "-":
        write_csv(records, params, sys.stdout)
    else:
        with Path(args.out).open("w", newline="", encoding="utf-8") as handle:
            write_csv(records, params, handle)
    for line in summary_lines(summarise(records, params)):
        print(line, file=out_text)
    if args.out != "-":
        print(f"{len(records)} rows written to {args.out}", file=out_text)
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from sim.tune import load_network, profile_text, start_profile, tune, tuned_header

    network = load_network(args.network) if args.network else None
    start_profile(args.start)  # a bad --start fails here, before any run
    scenarios = _load(args.scenarios)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    command = ["neverstop", "sim", "tune", *args.scenarios]
    if args.network:
        command += ["--network", args.network]
    command += ["--seeds", str(args.seeds)]
    if args.first_seed != 1:
        command += ["--first-seed", str(args.first_seed)]
    command += ["--start", args.start, "--objective", args.objective, "--rounds", str(args.rounds)]
    if args.no_false_alarms:
        command.append("--no-false-alarms")
    result = tune(scenarios, seeds, network=network, start=args.start, objective=args.objective,
                  rounds=args.rounds, jobs=args.jobs, dask_address=args.dask,
                  forbid_false_alarms=args.no_false_alarms,
                  report=lambda line: print(line, flush=True), progress=not args.quiet)
    if not result.best.feasible:
        print("no clean profile found: even the start profile had bad runs; nothing written")
        return EXIT_FAILED
    condition = network if network is not None else scenarios[0].network
    header = tuned_header(shlex.join(command), condition, result, len(seeds), args.objective)
    Path(args.out).write_text(profile_text(result.best.config, header), encoding="utf-8")
    print(f"profile written to {args.out}")
    return EXIT_OK
