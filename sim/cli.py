"""``neverstop sim ...``: scenarios on the simulated cluster. Registered by the front door
(``neverstop.cli``).

Exit codes: 0 all good, 1 a scenario failed (expectation or checker), 2 bad input
(a malformed file or bad arguments); never a traceback for a user's mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from actors.config import PROFILES
from formats.errors import EXIT_FAILED, EXIT_OK, UsageError
from formats.scenario import load_each
from formats.spec import Scenario


def register(groups: Any, full: bool = True) -> None:
    """Add the ``sim`` group; ``full=False`` (another group was named) leaves out the
    commands whose modules pull in the fuzzer, the sweeps and networkx with them."""
    sim = groups.add_parser("sim", help="run scenarios on the simulated cluster",
                            description="Scenarios on the simulated cluster (simpy virtual time).")
    sub = sim.add_subparsers(dest="command", required=True, parser_class=type(sim))

    run = sub.add_parser("run", help="run scenario files and check their expectations",
                         description="Run each scenario, print VM state changes as they happen, the "
                         "final VM list and PASS/FAIL per expectation. Exit 0 when every expectation "
                         "holds and no checker fired, 1 otherwise, 2 on a malformed file.")
    run.add_argument("files", nargs="+", metavar="FILE", help="scenario TOML files")
    run.add_argument("--json", metavar="PATH", help="write the result as JSON to PATH ('-' for stdout); "
                     "one object per file, a list when several files are given")
    run.add_argument("--plot", metavar="PNG", help="draw the VM state timeline; with several files, "
                     "each gets PNG's name with the scenario file's stem appended")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--profile", choices=sorted(PROFILES), help="override the scenario's profile "
                     "(its [ha] overrides still apply)")
    run.add_argument("-q", "--quiet", action="store_true", help="do not print state changes as they happen")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check scenario files without running them",
                         description="Parse and check scenario files; exit 0 when all are valid, 2 if not.")
    val.add_argument("files", nargs="+", metavar="FILE")
    val.set_defaults(func=cmd_validate)
    if full:
        from sim import cli_fuzz, cli_measure

        cli_fuzz.register(sub)
        cli_measure.register(sub)


def with_profile(scenario: Scenario, profile: str) -> Scenario:
    config = PROFILES[profile]
    for key, value in scenario.ha_overrides.items():
        config = config.with_key(key, value)
    return replace(scenario, profile=profile, config=config)


def load_all(files: Sequence[str]) -> list[Scenario]:
    """Load every file first, so that a typo in the last one is found before any run."""
    loaded, errors = load_each(files)
    if errors:
        raise UsageError("\n".join(errors))
    return loaded


def plot_path(base: str, scenario: Scenario, many: bool) -> str:
    if not many:
        return base
    p = Path(base)
    return str(p.with_name(f"{p.stem}-{Path(scenario.path).stem}{p.suffix or '.png'}"))


def cmd_run(args: argparse.Namespace) -> int:
    from sim.report import print_summary, transition_line
    from sim.runner import run_scenario

    scenarios = load_all(args.files)
    results = []
    out = sys.stdout if args.json != "-" else sys.stderr
    for sc in scenarios:
        if args.profile:
            sc = with_profile(sc, args.profile)
        if args.seed is not None:
            sc = replace(sc, seed=args.seed)
        print(f"== {sc.name}  ({sc.path}, seed {sc.seed}, profile {sc.profile}, "
              f"strategy {sc.config.strategy.value})", file=out)
        hook = None if args.quiet else (lambda tr, old: print(transition_line(tr, old), file=out))
        result = run_scenario(sc, on_transition=hook)
        print_summary(result, out)
        print(file=out)
        if args.plot:
            from sim.plot import plot_timeline

            path = plot_path(args.plot, sc, len(scenarios) > 1)
            plot_timeline(result, path)
            print(f"  timeline written to {path}\n", file=out)
        results.append(result)
    if args.json:
        from sim.run_json import run_json

        doc = [run_json(r) for r in results]
        text = json.dumps(doc[0] if len(doc) == 1 else doc, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    failed = [r.scenario for r in results if not r.ok]
    if len(results) > 1:
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed", file=out)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    scenarios = load_all(args.files)
    for sc in scenarios:
        print(f"ok  {sc.path}: {sc.name} ({len(sc.hosts)} hosts, {len(sc.vms)} VMs, "
              f"{len(sc.events)} events, {len(sc.expects)} expectations)")
    return EXIT_OK
