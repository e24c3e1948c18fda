"""``neverstop sim fuzz``: randomized fault campaigns over many seeds, on every core."""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from actors.config import PROFILES
from actors.states import Strategy
from sim.fuzz import (
    CaseResult,
    Summary,
    fuzz_one,
    generate_case,
    liveness_bound_s,
    run_case,
    shrink,
    write_failure,
)
from sim.progress import Progress


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fuzz", help="randomized fault campaigns with every checker on",
        description="For each seed: a random cluster and fault schedule (power loss, partitions, "
        "one-way links, storage loss, lossy links, clock drift, libvirt hangs, manager crashes, host "
        "maintenance, user actions, overlapping), every checker on; after all faults heal, every "
        "NeverStop VM that fits must run again, once, within the stated bound. A failing seed is "
        "shrunk and written as a scenario file. Exit 0 only when there is no finding at all.")
    p.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    p.add_argument("--start", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--cluster", default="small",
                   help="small (3-5 hosts), medium (8-16 hosts, 2 clusters) or a scenario FILE whose "
                   "cluster is used (its events and expectations are ignored)")
    p.add_argument("--strategy", choices=[s.value for s in Strategy], default="Permissive")
    p.add_argument("--profile", choices=sorted(PROFILES), default="default")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: all cores)")
    p.add_argument("--out", default="fuzz-failures", metavar="DIR",
                   help="where shrunk failing scenarios are written (default fuzz-failures/)")
    p.add_argument("--no-shrink", action="store_true", help="write failing seeds without shrinking them")
    p.set_defaults(func=cmd_fuzz)


def _check(args: argparse.Namespace) -> None:
    from formats.errors import UsageError

    if args.seeds < 1 or args.jobs < 1 or args.start < 0:
        raise UsageError("neverstop sim fuzz: --seeds and --jobs must be at least 1, --start at least 0")
    if args.cluster not in ("small", "medium") and not Path(args.cluster).is_file():
        raise UsageError(f"neverstop sim fuzz: --cluster {args.cluster!r} is neither small, medium "
                         "nor a scenario file")


def cmd_fuzz(args: argparse.Namespace) -> int:
    from sim.cli import load_all

    _check(args)
    base = load_all([args.cluster])[0] if args.cluster not in ("small", "medium") else None
    size = args.cluster if base is None else "file"
    config = PROFILES[args.profile].with_key("ha.strategy", args.strategy)
    bound = liveness_bound_s(config)
    print(f"fuzz: seeds {args.start}..{args.start + args.seeds - 1}, cluster {args.cluster}, "
          f"strategy {args.strategy}, profile {args.profile}, {args.jobs} jobs; liveness bound "
          f"{bound:.0f}s after the last fault heals", file=sys.stderr)
    summary = Summary(args.strategy)
    failures: list[CaseResult] = []
    seeds = range(args.start, args.start + args.seeds)
    with Progress(args.seeds, "seeds") as bar:
        def take(case: CaseResult) -> None:
            summary.add(case)
            if case.findings:
                failures.append(case)
            bar.advance(note=f"{len(failures)} failing")

        if args.jobs == 1:
            for seed in seeds:
                take(fuzz_one(seed, args.strategy, size, args.profile, base))
        else:
            with ProcessPoolExecutor(args.jobs) as pool:
                n = len(seeds)
                for case in pool.map(fuzz_one, seeds, [args.strategy] * n, [size] * n,
                                     [args.profile] * n, [base] * n, chunksize=8):
                    take(case)
    for case in sorted(failures, key=lambda c: c.seed)[:10]:
        scenario = generate_case(case.seed, Strategy(args.strategy), size, args.profile, base)
        _, _, findings = run_case(scenario)
        if not args.no_shrink:
            scenario, findings = shrink(scenario, findings)
        path = write_failure(scenario, findings, Path(args.out), args.strategy)
        print(f"seed {case.seed}: {findings[0].kind}: {findings[0].detail} -> {path} "
              f"({len(scenario.events)} events)", file=sys.stderr)
    print_summary(summary, bound)
    return 0 if not failures else 1


def print_summary(s: Summary, bound_s: float) -> None:
    print(f"seeds: {s.seeds}  strategy: {s.strategy}  events injected: {s.events}")
    print("faults: " + ", ".join(f"{k} {v}" for k, v in sorted(s.faults.items())))
    print(f"checker findings: {s.checker_findings}")
    print(f"liveness failures: {s.liveness_failures} (bound {bound_s:.0f}s after the last fault heals)")
    pct = s.percentiles()
    if pct:
        print("recovery (guest down to up again, ground truth): "
              + ", ".join(f"{k} {v:.1f}s" for k, v in pct.items()) + f" over {len(s.recoveries_s)} outages")
    print(f"failing seeds: {', '.join(map(str, s.failing_seeds[:20])) or 'none'}")
