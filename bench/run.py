"""Benchmarks of the simulator, each printed as a table with the command that reproduces it.

    python -m bench.run overhead      runtime messages/s against bare simpy callbacks
    python -m bench.run reference     1,000 hosts, 20,000 VMs, one simulated hour of faults
    python -m bench.run scale         the same workload at 100, 300, 1,000 and 3,000 hosts
    python -m bench.run profile       where the time of one run goes (cProfile)
    python -m bench.run memory        what holds the memory of one run (tracemalloc)
    python -m bench.run all --docs docs/benchmarks.md   all of them, and the report
    python -m bench.run ab --base REV   this tree against a git revision, alternating runs

``--quick`` runs each at a tiny size (for the smoke test); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import linecache
import math
import os
import platform
import pstats
import random
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import overhead
from bench.ab import AB_DURATION_S, AB_HOSTS, AB_ROUNDS, RevisionError, compare
from bench.doc_sections import REAL_LOAD_SECTION, section
from bench.measure import Measurement, run_child
from bench.workload import REFERENCE_HOSTS

OVERHEAD_TARGET = 0.5
WALL_TARGET_S = 20.0
RSS_TARGET_MIB = 2048.0
SLOPE_TARGET = 1.15
SCALE_SIZES = (100, 300, 1000, 3000)
SCALE_REPEATS = 3  # runs per size; the machine is shared, and its bursts last seconds
QUICK_SIZES = (10, 20, 40)
QUICK_HOSTS = 20
QUICK_DURATION_S = 600.0


@dataclass
class Section:
    """One benchmark's printed result: a title, a table, notes and its command."""

    title: str
    command: str
    table: list[list[str]]
    notes: list[str] = field(default_factory=list)
    ok: bool = True

    def markdown(self) -> str:
        head, *rows = self.table
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        parts = [f"## {self.title}", "", f"`{self.command}`", "", *lines]
        if self.notes:
            parts += ["", *self.notes]
        return "\n".join(parts)


def command(args: Sequence[str]) -> str:
    return "python -m bench.run " + " ".join(args)


def reproducing(words: Sequence[str], quick: bool, *options: tuple[str, str, str]) -> list[str]:
    """The arguments that reproduce a benchmark: ``words``, ``--quick``, and each option
    ``(flag, value, default)`` whose value is not its default (both as printed)."""
    args = [*words] + (["--quick"] if quick else [])
    for flag, value, default in options:
        if value != default:
            args += [flag, value]
    return args


def span(duration_s: float) -> str:
    return f"{duration_s / 3600:g} h" if duration_s >= 3600 else f"{duration_s / 60:g} min"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -- the benchmarks -----------------------------------------------------------------------------


def bench_overhead(quick: bool) -> Section:
    args = ["overhead"] + (["--quick"] if quick else [])
    messages, chains, repeats = (20_000, 100, 1) if quick else (500_000, 1000, 5)
    r = overhead.measure(messages, chains, repeats)
    table = [
        ["loop", "events/s", "us/event", "ratio to bare simpy"],
        ["bare simpy (env.timeout + callback)", f"{r.bare:,.0f}", f"{1e6 / r.bare:.2f}", "1.00"],
        ["runtime, across nodes (network model)", f"{r.runtime:,.0f}", f"{1e6 / r.runtime:.2f}",
         f"{r.ratio:.2f}"],
        ["runtime, within a node", f"{r.same_node:,.0f}", f"{1e6 / r.same_node:.2f}",
         f"{r.same_node / r.bare:.2f}"],
    ]
    ok = r.ratio >= OVERHEAD_TARGET
    notes = [f"{r.messages:,} deliveries in {r.chains:,} concurrent ping-pong chains, best of "
             f"{r.repeats}. Target: runtime across nodes at least {OVERHEAD_TARGET} of bare simpy: "
             f"**{verdict(ok)}** ({r.ratio:.2f}). Bare simpy's queue holds an entry per chain, the "
             "runtime's one per delay (its lanes), which is how a runtime on simpy can outrun it."]
    return Section("Runtime overhead", command(args), table, notes, ok)


def _measure_row(m: Measurement) -> list[str]:
    return [f"{m.hosts:,}", f"{m.vms:,}", f"{m.wall_s:.2f}", f"{m.cpu_s:.2f}", f"{m.peak_rss_mib:,.0f}",
            f"{m.messages:,}", f"{m.events_per_s:,.0f}", str(m.ha_starts), str(m.violations)]


MEASURE_HEAD = ["hosts", "VMs", "wall s", "CPU s", "peak RSS MiB", "deliveries", "deliveries/wall s",
                "HA starts", "violations"]


def bench_reference(quick: bool, hosts: int | None, duration_s: float | None, seed: int) -> Section:
    hosts = hosts or (QUICK_HOSTS if quick else REFERENCE_HOSTS)
    duration_s = duration_s or (QUICK_DURATION_S if quick else 3600.0)
    args = reproducing(["reference"], quick,
                       ("--hosts", str(hosts), str(QUICK_HOSTS if quick else REFERENCE_HOSTS)),
                       ("--duration", f"{duration_s:g}", f"{QUICK_DURATION_S if quick else 3600.0:g}"),
                       ("--seed", str(seed), "1"))
    m = run_child(hosts, duration_s, seed)
    table = [MEASURE_HEAD, _measure_row(m)]
    wall_ok, rss_ok = m.wall_s <= WALL_TARGET_S, m.peak_rss_mib <= RSS_TARGET_MIB
    ok = wall_ok and rss_ok and m.violations == 0
    notes = [
        f"Clusters: {m.clusters}; {m.neverstop_vms:,} NeverStop VMs, half of the VMs on local storage; "
        f"default profile; {span(m.duration_s)} simulated; faults: {m.power_losses} host power "
        f"losses, {m.vm_crashes} VM crashes, {m.partitions} partitions, all checkers on. Generating "
        f"the scenario took {m.generate_s:.2f} s (not counted); the interpreter with its imports "
        f"held {m.rss_start_mib:.0f} MiB before it.",
        f"Targets: wall at most {WALL_TARGET_S:g} s: **{verdict(wall_ok)}**; peak memory at most "
        f"{RSS_TARGET_MIB / 1024:g} GiB: **{verdict(rss_ok)}**; no checker violation: "
        f"**{verdict(m.violations == 0)}**.",
        "`Simulation.run` keeps Python's cyclic garbage collector paused while it builds and runs "
        "the cluster (`sim.runtime.collector_paused`): a run makes no cyclic garbage, and full "
        "collections over the live cluster would cost about 40% of the time.",
    ]
    return Section("Reference datacenter" + (" (quick)" if quick else ""), command(args), table, notes, ok)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) over log(x)."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / den if den else 0.0


def bench_scale(quick: bool, sizes: Sequence[int] | None, duration_s: float | None, seed: int,
                repeats: int | None, progress: Callable[[str], None]) -> Section:
    sizes = tuple(sizes or (QUICK_SIZES if quick else SCALE_SIZES))
    duration_s = duration_s or (QUICK_DURATION_S if quick else 3600.0)
    default_repeats = 1 if quick else SCALE_REPEATS
    repeats = repeats or default_repeats
    listed = ",".join(map(str, sizes)), ",".join(map(str, QUICK_SIZES if quick else SCALE_SIZES))
    args = reproducing(["scale"], quick, ("--sizes", *listed),
                       ("--duration", f"{duration_s:g}", f"{QUICK_DURATION_S if quick else 3600.0:g}"),
                       ("--seed", str(seed), "1"), ("--repeats", str(repeats), str(default_repeats)))
    # Rounds over all sizes, so that a burst of other work on the machine slows one run of
    # a size, not every run of it; each size keeps its fastest run.
    best: dict[int, Measurement] = {}
    for round_ in range(1, repeats + 1):
        for hosts in sizes:
            progress(f"scale: {hosts} hosts, run {round_} of {repeats} ...")
            m = run_child(hosts, duration_s, seed)
            if hosts not in best or m.wall_s < best[hosts].wall_s:
                best[hosts] = m
    runs = [best[hosts] for hosts in sizes]
    table = [MEASURE_HEAD + ["us/delivery"]]
    table += [_measure_row(m) + [f"{m.us_per_delivery:.2f}"] for m in runs]
    hosts = [m.hosts for m in runs]
    s_wall = slope(hosts, [m.wall_s for m in runs])
    s_cpu = slope(hosts, [m.cpu_s for m in runs])
    s_rss = slope(hosts, [m.peak_rss_mib for m in runs])
    s_sim = slope(hosts, [m.peak_rss_mib - m.rss_start_mib for m in runs])
    s_msg = slope(hosts, [m.messages for m in runs])
    ok = s_wall <= SLOPE_TARGET and s_cpu <= SLOPE_TARGET
    notes = [
        f"Log-log slopes over the sizes (1.0 = linear): wall {s_wall:.2f}, CPU {s_cpu:.2f}, "
        f"deliveries {s_msg:.2f}, peak RSS {s_rss:.2f} (above the interpreter's start: {s_sim:.2f}). "
        f"Target: cost slope at most {SLOPE_TARGET}: **{verdict(ok)}**.",
        f"Every size: 100 hosts per cluster, 20 VMs per host, {span(duration_s)} simulated, "
        "1% of hosts losing power, 0.5% of VMs crashing, 3 partitions per 1,000 hosts per hour; each "
        f"run in a fresh process; the fastest of {repeats} run{'s' if repeats > 1 else ''} per size, "
        "taken in rounds over the sizes.",
    ]
    return Section("Scale curve" + (" (quick)" if quick else ""), command(args), table, notes, ok)


def _profile_args(name: str, quick: bool, hosts: int, duration_s: float, top: int) -> list[str]:
    return reproducing([name], quick, ("--hosts", str(hosts), str(QUICK_HOSTS if quick else 300)),
                       ("--duration", f"{duration_s:g}", f"{QUICK_DURATION_S if quick else 3600.0:g}"),
                       ("--top", str(top), "25"))


def bench_profile(quick: bool, hosts: int | None, duration_s: float | None, top: int) -> Section:
    from bench.workload import Workload
    from sim.runner import Simulation

    hosts = hosts or (QUICK_HOSTS if quick else 300)
    duration_s = duration_s or (QUICK_DURATION_S if quick else 3600.0)
    args = _profile_args("profile", quick, hosts, duration_s, top)
    scenario = Workload(hosts=hosts, duration_s=duration_s).scenario()
    profiler = cProfile.Profile()
    profiler.enable()
    Simulation(scenario).run()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = [["function", "calls", "own s", "own %", "with callees s"]]
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    for (path, line, name), (_, calls, own, cum, _) in entries[:top]:
        where = _short(path, line, name)
        rows.append([f"`{where}`", f"{calls:,}", f"{own:.2f}", f"{100 * own / total:.1f}", f"{cum:.2f}"])
    notes = [f"{hosts} hosts, {span(duration_s)} simulated, under cProfile (which slows the run "
             f"about 2.5x): {total:.1f} s in all. Sorted by time spent in the function itself, which "
             "includes the collector's pauses that its allocations set off."]
    return Section("Where the time goes", command(args), rows, notes)


def bench_memory(quick: bool, hosts: int | None, duration_s: float | None, top: int) -> Section:
    """What holds the memory at the end of a run, by the line that allocated it."""
    import tracemalloc

    from bench.workload import Workload
    from sim.runner import Simulation

    hosts = hosts or (QUICK_HOSTS if quick else 300)
    duration_s = duration_s or (QUICK_DURATION_S if quick else 3600.0)
    args = _profile_args("memory", quick, hosts, duration_s, top)
    scenario = Workload(hosts=hosts, duration_s=duration_s).scenario()
    tracemalloc.start()
    try:
        sim = Simulation(scenario)
        sim.run()
        snapshot = tracemalloc.take_snapshot()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    own = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = own.statistics("lineno")
    total = sum(s.size for s in stats)
    vms = len(scenario.vms)
    rows = [["allocated at", "code", "blocks", "MiB", "share", "bytes per VM"]]
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = _short(frame.filename, frame.lineno, "").removesuffix("()")
        code = linecache.getline(frame.filename, frame.lineno).strip().replace("|", "\\|")
        code = code if len(code) <= 60 else code[:57] + "..."
        rows.append([f"`{where}`", f"`{code}`" if code else "", f"{stat.count:,}", f"{stat.size / 2**20:.2f}",
                     f"{100 * stat.size / total:.1f}%", f"{stat.size / vms:,.0f}"])
    notes = [f"{hosts} hosts, {vms:,} VMs, {span(duration_s)} simulated, under tracemalloc: "
             f"{total / 2**20:.1f} MiB held by the simulation at its end ({total / vms:,.0f} bytes per "
             f"VM), {peak / 2**20:.1f} MiB at its peak. Memory that is held is memory the processor's "
             "caches must cover: the cost per delivery rises with it (see the scale curve)."]
    return Section("Where the memory goes", command(args), rows, notes)


def bench_ab(quick: bool, base: str, hosts: int | None, duration_s: float | None, rounds: int | None,
             seed: int, progress: Callable[[str], None]) -> Section:
    hosts = hosts or (QUICK_HOSTS if quick else AB_HOSTS)
    duration_s = duration_s or (QUICK_DURATION_S if quick else AB_DURATION_S)
    rounds = rounds or (1 if quick else AB_ROUNDS)
    args = reproducing(["ab", "--base", base], quick,
                       ("--hosts", str(hosts), str(QUICK_HOSTS if quick else AB_HOSTS)),
                       ("--duration", f"{duration_s:g}", f"{QUICK_DURATION_S if quick else AB_DURATION_S:g}"),
                       ("--rounds", str(rounds), str(1 if quick else AB_ROUNDS)), ("--seed", str(seed), "1"))
    r = compare(base, hosts, duration_s, rounds, seed, progress)
    table = [["round", f"{base} us/delivery", "this tree us/delivery", f"{base} wall s", "this tree wall s",
              "deliveries"]]
    for i, (b, t) in enumerate(r.rounds, 1):
        deliveries = f"{b.messages:,}" if b.messages == t.messages else f"{b.messages:,} / {t.messages:,}"
        table.append([str(i), f"{b.us_per_delivery:.2f}", f"{t.us_per_delivery:.2f}", f"{b.wall_s:.2f}",
                      f"{t.wall_s:.2f}", deliveries])
    faster = "cheaper" if r.change < 0 else "dearer"
    notes = [f"{hosts:,} hosts, {span(duration_s)} simulated, the scale curve's workload; the two trees "
             f"alternate, each run in a fresh process. This tree is {abs(r.change):.1%} {faster} per "
             f"delivery than {base} (medians), and cheaper in {r.wins} of {len(r.rounds)} rounds."]
    if any(b.messages != t.messages for b, t in r.rounds):
        notes.append("The trees deliver different numbers of messages: they do not run the same model, "
                     "so the cost per delivery compares unlike work.")
    return Section(f"This tree against {base}", command(args), table, notes)


def _short(path: str, line: int, name: str) -> str:
    if path == "~":
        return name
    parts = Path(path).parts
    for anchor in ("site-packages", "main"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1:]
            break
    return f"{'/'.join(parts[-2:])}:{line}({name})"


# -- the report ---------------------------------------------------------------------------------


def machine() -> list[str]:
    import networkx
    import simpy

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, simpy {simpy.__version__}, networkx {networkx.__version__}",
        f"- Load average when the benchmarks started: {load} (other work on the machine slows wall "
        "times; CPU times are steadier)",
        "- Memory latency when the benchmarks started (a dependent load per step over a working "
        "set of the size given, Python's own loop included): "
        + ", ".join(f"{mib} MiB {ns:.0f} ns" for mib, ns in memory_latency_ns((1, 4, 16, 64))),
    ]


def memory_latency_ns(sizes_mib: Sequence[int], steps: int = 400_000) -> list[tuple[int, float]]:
    """Nanoseconds per step of a random pointer chase over each working set.

    The slope of the scale curve depends on it: a large cluster's actors no longer fit in
    the processor's last-level cache, and on a shared machine how much of that cache is
    this VM's changes from hour to hour. Where the chase jumps from tens of nanoseconds to
    over a hundred is the cache this run really had."""
    rng = random.Random(1)
    out = []
    for mib in sizes_mib:
        lines = mib * 1024 * 1024 // 64
        order = list(range(lines))
        rng.shuffle(order)
        chain = array("q", bytes(8 * 8 * lines))  # one slot used per 64-byte cache line
        for here, there in zip(order, order[1:] + order[:1], strict=True):
            chain[8 * here] = 8 * there
        at = 0
        start = time.perf_counter()
        for _ in range(steps):
            at = chain[at]
        out.append((mib, (time.perf_counter() - start) / steps * 1e9))
    return out


INTRO = """# Benchmarks

How fast the simulator runs, how much memory it takes, and how its cost grows with the size
of the datacenter. This file is written by `make bench` (`python -m bench.run all --docs
docs/benchmarks.md`); every table comes with the command that reproduces it alone, and
`python -m bench.run --help` lists the options. Wall and CPU times are of
`Simulation(scenario).run()` (building the actors, the run, the result), each size in a fresh
process whose peak resident set (`VmHWM`, see `bench/measure.py`) is the memory figure. The workload is
`bench/workload.py` on clusters from `sim/clustergen.py`; "deliveries" counts every message
and timer an actor received.
"""

NOTES = """## Reading the figures

- Deliveries grow exactly linearly with the cluster (slope 1.00): the model does no more work
  per host in a larger datacenter, and no step of the runtime, the network model or the HA
  manager scans all hosts or all VMs per event. Simpy's event queue no longer grows with the
  cluster either: arrivals wait in one FIFO lane per delay (a heartbeat interval, a ping
  interval, a path's latency) and only each lane's head is in the queue, a handful of entries
  at any size where it held two per host before (`sim/runtime.py`). Runs are the same event
  for event (`tests/test_fuzz.py::test_lanes_do_not_change_a_run`).
- What grows is the cost of each delivery (the "us/delivery" column). A delivery touches the
  objects of one actor, and between two rounds of one host's heartbeat every other host has
  had its turn: at 100 hosts all of them stay in the processor's caches, at 3,000 they do not,
  and every object a delivery touches costs a trip to memory. The "Memory latency" line above
  shows where that trip starts: on this shared machine, often below 16 MiB, well under the
  32 MiB the processor has. So memory per VM, and above all the number of separate objects
  per delivery, is speed:
  - each actor's random generator is made on first use (it was 43% of all memory);
  - a sender keeps its routes (the actor at an address and the fixed delay to it) instead of
    reading the runtime's table of every actor and the network's table of every pair;
  - the runtime's cell of an actor is also its context, one object where there were two;
  - the host agent keeps a pool's heartbeat in one record with the newest write in flight in
    two fields, where it used three dicts keyed by pool and a dict of writes in flight;
  - a pong's guests are checked against one set of the VMs that hold capacity on the host,
    where each guest was a lookup in tables of every VM;
  - a route is checked by identity (tokens the runtime and the network model replace on a
    change), and equal fixed delays are one float: a send reads nothing cold but its route;
  - arrivals queued in one instant with one delay share their due time.
- On 2026-11-24 these brought the 3,000-host cost from 4.0-4.3 to 2.2-2.5 us per delivery
  (100 hosts: from 1.9-2.0 to 1.6-1.7 us), and the slope from 1.23 to 1.08-1.12 in the runs
  after the last of them, on the same machine. Earlier the same day, code that measured
  1.19-1.22 had measured 1.06 while the machine's memory was faster: read the slope together
  with the memory latency line, which `make bench` measures when it starts.
- Nine deliveries in ten are the storage heartbeat: per host, a timer, a write and its
  acknowledgement every `ha.host.selfFencer.interval` (5 s), 0.6 per host per second. Pings
  are most of the rest: a tick, the ping, the pong and a timeout every `host.ping.interval`
  (60 s), 0.07 per host per second. The NeverStop scan reaches only Stopped and Unknown VMs.
- Wall times depend on what else the machine runs (see the load average above); the scale
  curve keeps each size's fastest of three runs, taken in rounds over the sizes, so that a
  burst of other work slows one run and not the figure. The overhead ratio compares two loops
  in one process, best of several runs.
- To judge a change, compare trees, not runs minutes apart: `python -m bench.run ab --base
  REV` runs this tree and a revision in turn (3,000 hosts, four rounds each) and reports the
  cost per delivery of each run. Against 258e98b (before lanes and routes) this tree was 25%
  cheaper at 3,000 hosts and 16% at 100, in every round.
"""


def write_docs(path: Path, sections: Sequence[Section], machine_lines: Sequence[str]) -> None:
    text = (INTRO + "\n" + "\n".join(machine_lines) + "\n\n" + "\n\n".join(s.markdown() for s in sections)
            + "\n\n" + NOTES)
    with contextlib.suppress(FileNotFoundError):  # the real-mode table is make bench-real's
        kept = section(path.read_text(), REAL_LOAD_SECTION)
        if kept is not None:
            text = text.rstrip("\n") + "\n\n" + kept
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


# -- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "reference", "scale", "profile", "memory", "all", "ab"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--hosts", type=int, help="reference/profile/memory: number of hosts")
    parser.add_argument("--sizes", help="scale: comma-separated host counts")
    parser.add_argument("--duration", type=float, help="simulated seconds (default one hour)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int,
                        help=f"scale: runs per size, the fastest counts (default {SCALE_REPEATS})")
    parser.add_argument("--top", type=int, default=25, help="profile/memory: entries to show")
    parser.add_argument("--docs", type=Path, help="all: write the report to this file")
    parser.add_argument("--base", help="ab: the git revision to compare this tree with (required)")
    parser.add_argument("--rounds", type=int,
                        help=f"ab: runs of each tree, alternating (default {AB_ROUNDS})")
    args = parser.parse_args(argv)
    if args.what == "ab":
        if not args.base:
            parser.error("ab needs --base REV, the git revision to compare this tree with")
        start = time.perf_counter()
        try:
            section = bench_ab(args.quick, args.base, args.hosts, args.duration, args.rounds, args.seed,
                               lambda text: print(text, file=sys.stderr, flush=True))
        except RevisionError as exc:
            print(f"bench.run ab: {exc}", file=sys.stderr)
            return 2
        print(section.markdown())
        print(f"\n(ab took {time.perf_counter() - start:.1f} s)\n", flush=True)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    machine_lines = machine()
    jobs: list[tuple[str, Callable[[], Section]]] = [
        ("overhead", lambda: bench_overhead(args.quick)),
        ("reference", lambda: bench_reference(args.quick, args.hosts, args.duration, args.seed)),
        ("scale", lambda: bench_scale(args.quick, sizes, args.duration, args.seed, args.repeats,
                                      progress)),
        ("profile", lambda: bench_profile(args.quick, args.hosts if args.what == "profile" else None,
                                          args.duration, args.top)),
        ("memory", lambda: bench_memory(args.quick, args.hosts if args.what == "memory" else None,
                                        args.duration, args.top)),
    ]
    sections = []
    for name, job in jobs:
        if args.what not in (name, "all"):
            continue
        progress(f"running {name} ...")
        start = time.perf_counter()
        section = job()
        sections.append(section)
        print(section.markdown())
        print(f"\n({name} took {time.perf_counter() - start:.1f} s)\n", flush=True)
    if args.docs is not None:
        write_docs(args.docs, sections, machine_lines)
        progress(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
