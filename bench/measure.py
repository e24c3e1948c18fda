"""One measured run of the benchmark workload, in a fresh process.

Peak memory is the child's own high-water mark: a process per size, so that one size's
peak does not hide the next one's. On Linux that is ``VmHWM`` in ``/proc/self/status``,
because ``ru_maxrss`` survives ``exec`` and so starts at the size of the process that
launched the child (311 MiB for a child of a 300 MiB parent, against 11 MiB of its own);
elsewhere it is ``ru_maxrss``. ``python -m bench.measure --hosts N`` prints one JSON line;
``run_child`` starts it and reads that line back.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Measurement:
    hosts: int
    clusters: int
    vms: int
    neverstop_vms: int
    duration_s: float
    power_losses: int
    vm_crashes: int
    partitions: int
    generate_s: float  # building the scenario (not part of the simulation)
    wall_s: float  # Simulation(scenario).run(): build the cluster, run, collect the result
    cpu_s: float  # the same, in CPU time of the process
    rss_start_mib: float  # after imports, before the scenario exists
    peak_rss_mib: float  # the process's peak resident set
    messages: int  # deliveries to actors (messages and timers)
    ha_starts: int  # guests started by HA
    transitions: int
    violations: int  # checker findings (two copies, over-capacity, HA rules)

    @property
    def events_per_s(self) -> float:
        return self.messages / self.wall_s if self.wall_s else 0.0

    @property
    def us_per_delivery(self) -> float:
        """Wall microseconds per delivery: the cost that grows with the cluster."""
        return 1e6 * self.wall_s / max(self.messages, 1)


def _rss_mib() -> float:
    """This process's peak resident set so far, in MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_here(hosts: int, duration_s: float, seed: int) -> Measurement:
    """Generate and run one workload in this process (call it in a fresh one)."""
    from bench.workload import Workload
    from sim.runner import Simulation

    rss_start = _rss_mib()
    workload = Workload(hosts=hosts, duration_s=duration_s, seed=seed)
    t0 = time.perf_counter()
    scenario = workload.scenario()
    generate_s = time.perf_counter() - t0
    w0, c0 = time.perf_counter(), time.process_time()
    sim = Simulation(scenario)
    result = sim.run()
    wall_s, cpu_s = time.perf_counter() - w0, time.process_time() - c0
    actions = [e.action for e in scenario.events]
    return Measurement(
        hosts=hosts, clusters=workload.clusters, vms=len(scenario.vms),
        neverstop_vms=sum(1 for v in scenario.vms if v.ha.value == "NeverStop"),
        duration_s=duration_s, power_losses=actions.count("power-off"),
        vm_crashes=actions.count("vm-crash"), partitions=actions.count("network-down"),
        generate_s=generate_s, wall_s=wall_s, cpu_s=cpu_s, rss_start_mib=rss_start,
        peak_rss_mib=_rss_mib(), messages=sim.runtime.messages,
        ha_starts=sum(1 for r in result.runs if r.cause == "ha"),
        transitions=len(result.transitions), violations=len(result.violations),
    )


def run_child(hosts: int, duration_s: float, seed: int) -> Measurement:
    """Measure one size in a fresh interpreter."""
    cmd = [sys.executable, "-m", "bench.measure", "--hosts", str(hosts), "--duration", str(duration_s),
           "--seed", str(seed)]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return Measurement(**data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.measure", description=__doc__)
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--duration", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    m = measure_here(args.hosts, args.duration, args.seed)
    print(json.dumps(asdict(m)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
