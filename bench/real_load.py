"""Real mode under load: one real manager and N real agents on loopback (``real.loopback``,
libvirt's ``test://`` guests), the tuned profile, every process started together.

    python -m bench.real_load                       8 and 32 hosts, 50 VMs each
    python -m bench.real_load --hosts 64 --vms 50   one size
    make bench-real                                 8, 32 and 64 hosts (about 10 minutes)

For each size it prints: seconds from start until every host is up and Connected and every
VM Running; ``real status`` latency; manager and per-agent memory (PSS, summed over each
daemon's processes) and CPU seconds; after every agent is paused (SIGSTOP) for ``--pause``
seconds and resumed, seconds until every host is Connected and every VM Running again, and
how many VMs were started meanwhile (must be 0: the guests never died); a guest crash until
Running; an agent killed (its processes and test-driver guests die at once, its pid-file
power controller proves it off) until its guests run elsewhere. Figures, not asserts:
``tests/real/test_scale.py`` holds the behaviour to account.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.doc_sections import REAL_LOAD_SECTION, with_section
from real.loopback import LoopbackCluster, cluster_toml, settled, summary

Status = dict[str, Any]
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def until(c: LoopbackCluster, cond: Callable[[Status], bool],
          timeout_s: float) -> tuple[float | None, Status]:
    """Seconds until ``cond(status)``, or None (and the last status that answered, with
    ``_age_s``, how long before the deadline it did) after ``timeout_s``."""
    t0 = time.monotonic()
    last: Status = {}
    last_t = t0
    while time.monotonic() - t0 < timeout_s:
        with contextlib.suppress(Exception):
            last = c.status()
            last_t = time.monotonic()
            if cond(last):
                return last_t - t0, last
        time.sleep(0.25)
    if last:
        last["_age_s"] = time.monotonic() - last_t
    return None, last


def pss_cpu(pids: list[int]) -> tuple[float, float]:
    """MiB of memory (PSS: each shared page divided among the processes that share it, so
    the sum over a daemon's forked processes is what they really take) and CPU seconds,
    summed over ``pids``."""
    pss = cpu = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICK
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
    return pss, cpu


def fmt(value: float | None, unit: str = " s") -> str:
    return "did not" if value is None else f"{value:.1f}{unit}"


def measure(hosts: int, vms: int, pause_s: float, timeout_s: float, keep: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"neverstop-load-{hosts}-"))
    c = LoopbackCluster(work, cluster_toml(hosts, vms), shared_pools=("nfs-1",), join_jitter_s=None)
    row: dict[str, Any] = {"hosts": hosts, "vms": hosts * vms}
    try:
        t0 = time.monotonic()
        with contextlib.suppress(AssertionError):  # judged below, by the same deadline
            c.start(timeout_s=timeout_s)
        up, last = until(c, settled, max(1.0, timeout_s - (time.monotonic() - t0)))
        row["start_s"] = None if up is None else time.monotonic() - t0
        print(f"  {hosts} hosts: started in {fmt(row['start_s'])} ({summary(last) if last else 'no status'})",
              flush=True)
        if up is None:
            row["last"] = (f"{summary(last)} in the last status that answered, "
                           f"{last['_age_s']:.0f} s before the deadline") if last else "no status answered"
            return row
        lat = []
        for _ in range(5):
            t = time.monotonic()
            c.status()
            lat.append(time.monotonic() - t)
        row["status_s"] = statistics.median(lat)
        mgr_pss, mgr_cpu = pss_cpu(c.manager_pids())
        agents = [pss_cpu(c.agent_pids(h)) for h in c.hosts]
        row["manager_mib"], row["manager_cpu_s"] = mgr_pss, mgr_cpu
        row["agent_mib"] = statistics.mean(a[0] for a in agents)
        row["agent_cpu_s"] = statistics.mean(a[1] for a in agents)
        row["agent_procs"] = statistics.mean(len(c.agent_pids(h)) for h in c.hosts)

        t_pause = time.time()
        c.signal_agents(signal.SIGSTOP)
        time.sleep(pause_s)
        c.signal_agents(signal.SIGCONT)
        back, last = until(c, settled, timeout_s)
        row["pause_back_s"] = back
        row["started_meanwhile"] = sum(1 for t, _vm, state, _h in (last.get("transitions") or [])
                                       if state == "Starting" and t >= t_pause)
        print(f"  {hosts} hosts: after a {pause_s:g} s pause of every agent, whole again in "
              f"{fmt(back)}; VMs started meanwhile: {row['started_meanwhile']}", flush=True)

        t = time.monotonic()
        c.cmd("crash", vm="vm-1-0")
        crashed, _ = until(c, lambda s: any(x[1] == "vm-1-0" and x[2] == "Stopping" for x in s["transitions"])
                           and next(v for v in s["vms"] if v["name"] == "vm-1-0")["state"] == "Running", 60)
        row["crash_s"] = None if crashed is None else time.monotonic() - t

        victims = {f"vm-2-{v}" for v in range(vms)}
        c.power_off("host-2")
        gone, _ = until(c, lambda s: all(v["state"] == "Running" and v["host"] != "host-2"
                                         for v in s["vms"] if v["name"] in victims), 120)
        row["agent_killed_s"] = gone
        print(f"  {hosts} hosts: guest crash {fmt(row['crash_s'])}, agent killed {fmt(gone)}", flush=True)
        return row
    finally:
        c.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


HEAD = ("| hosts | VMs | start, all Running | `real status` | manager PSS / CPU | per agent PSS / CPU "
        "(processes) | 15 s pause: whole again | VMs started | guest crash | agent killed |")


def table_row(r: dict[str, Any]) -> str:
    if r.get("status_s") is None:
        return f"| {r['hosts']} | {r['vms']:,} | {fmt(r.get('start_s'))} | | | | | | | |"
    return (f"| {r['hosts']} | {r['vms']:,} | {fmt(r['start_s'])} | {r['status_s'] * 1000:.0f} ms | "
            f"{r['manager_mib']:.0f} MiB / {r['manager_cpu_s']:.0f} s | {r['agent_mib']:.0f} MiB / "
            f"{r['agent_cpu_s']:.1f} s ({r['agent_procs']:.0f}) | {fmt(r['pause_back_s'])} | "
            f"{r['started_meanwhile']} | {fmt(r['crash_s'])} | {fmt(r['agent_killed_s'])} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.real_load", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", default="8,32", help="comma-separated cluster sizes (default 8,32)")
    p.add_argument("--vms", type=int, default=50, help="VMs per host (default 50)")
    p.add_argument("--pause", type=float, default=15.0, help="seconds every agent is paused (default 15)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for each phase (default 300)")
    p.add_argument("--keep", action="store_true", help="keep each run's directory (logs) under /tmp")
    p.add_argument("--docs", type=Path, metavar="MD",
                   help="write the table into this report's real-mode section (docs/benchmarks.md)")
    args = p.parse_args(argv)
    try:
        sizes = [int(x) for x in args.hosts.split(",") if x.strip()]
    except ValueError:
        p.error(f"--hosts {args.hosts!r}: expected numbers such as 8,32,64")
    if not sizes or min(sizes) < 2 or args.vms < 1:
        p.error("need at least 2 hosts and 1 VM per host (an agent is killed in the run)")
    print(f"real mode on loopback: {args.vms} test-driver VMs per host, tuned profile, "
          f"{os.cpu_count()} cores", flush=True)
    rows = [measure(n, args.vms, args.pause, args.timeout, args.keep) for n in sizes]
    table = "\n".join([HEAD, "|---" * (HEAD.count("|") - 1) + "|", *(table_row(r) for r in rows)])
    limits = next_size(rows)
    print()
    print(table)
    print()
    print(limits)
    if args.docs is not None:
        try:
            old = args.docs.read_text() if args.docs.exists() else "# Benchmarks\n"
            body = DOC.format(date=time.strftime("%Y-%m-%d"), cores=os.cpu_count(), memory=machine_gib(),
                              vms=args.vms, pause=f"{args.pause:g}", sizes=args.hosts, table=table,
                              limits=limits)
            args.docs.write_text(with_section(old, REAL_LOAD_SECTION, body))
        except OSError as err:
            print(f"neverstop: cannot write {args.docs}: {err.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {args.docs}")
    return 0


DOC = """## Real mode under load

One real manager and one real agent per host (`neverstop real manager|agent`, Thespian's
multiprocTCPBase over loopback, every frame signed), libvirt `test://` guests ({vms} per host
on one shared pool), the tuned profile, every process started at once; measured on
{date} on this machine ({cores} cores, {memory:.0f} GiB) with
`python -m bench.real_load --hosts {sizes} --vms {vms} --docs docs/benchmarks.md`
(`make bench-real`). Agents join with their default jitter (`--join-jitter`, 3 s).
Memory is PSS summed over a daemon's processes (a shared page divided among its sharers), CPU is user + system
seconds since the daemon started. "{pause} s pause" stops every process of every agent
(SIGSTOP, what a management-network outage looks like to the manager) and resumes them;
"VMs started" counts starts during that outage and after it (0: the guests never died).

{table}

{limits}
"""


def machine_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def next_size(rows: list[dict[str, Any]]) -> str:
    """What the sizes that did not settle showed, and what the largest that did says about
    twice its size, from its own figures."""
    lines = [f"{r['hosts']} hosts did not settle within the benchmark's deadline: "
             f"{r.get('last', 'no status answered')}." for r in rows if r.get("status_s") is None]
    done = [r for r in rows if r.get("status_s") is not None]
    if not done:
        return "\n".join(lines + ["No size settled: see the logs (`--keep`)."])
    r = max(done, key=lambda r: r["hosts"])
    n = 2 * r["hosts"]
    memory_gib = (r["manager_mib"] * 2 + n * r["agent_mib"]) / 1024
    cpu_s = n * r["agent_cpu_s"] / (os.cpu_count() or 1)
    lines.append(
        f"What limits {n} hosts on one machine like this: not memory ({n} agents of "
        f"{r['agent_procs']:.0f} processes and {r['agent_mib']:.0f} MiB each, and the manager, "
        f"come to about {memory_gib:.0f} of its {machine_gib():.0f} GiB) but its {os.cpu_count()} cores: "
        f"{n * r['agent_procs']:.0f} processes that start together (about {cpu_s:.0f} s of every core "
        "for the agents alone), whose Thespian transmits and admins must still answer within "
        "their timeouts. On real hosts each agent has a machine of its own; the manager's share "
        f"is the figure to watch ({r['manager_mib']:.0f} MiB and {r['manager_cpu_s']:.0f} CPU-s "
        f"for {r['hosts']} hosts).")
    return "\n\n".join(lines)

if __name__ == "__main__":
    sys.exit(main())
