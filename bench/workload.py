"""The benchmark workload: a datacenter of a given size with its hour of faults.

The reference is 1,000 hosts in 10 clusters with 20 VMs per host (20,000 VMs, half
NeverStop, half on local storage), the default profile, one simulated hour, 1% of the
hosts losing power, 0.5% of the VMs crashing and 3 partitions per 1,000 hosts per hour.
Other sizes keep every ratio (100 hosts per cluster, VMs per host, fault shares), so that
the scale curve runs the same workload at every size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from formats.spec import Scenario
from sim.clustergen import generate_cluster, generate_faults, to_scenario

REFERENCE_HOSTS = 1000


@dataclass(frozen=True)
class Workload:
    hosts: int = REFERENCE_HOSTS
    hosts_per_cluster: int = 100
    vms_per_host: float = 20.0
    neverstop_share: float = 0.5
    local_share: float = 0.5
    duration_s: float = 3600.0
    power_loss_share: float = 0.01  # of the hosts, per run
    vm_crash_share: float = 0.005  # of the VMs, per run
    partitions_per_1000_hosts_hour: float = 3.0
    profile: str = "default"
    seed: int = 1

    @property
    def clusters(self) -> int:
        return max(1, round(self.hosts / self.hosts_per_cluster))

    @property
    def partitions(self) -> int:
        per_run = self.partitions_per_1000_hosts_hour * self.hosts / 1000 * self.duration_s / 3600
        return max(1, round(per_run))

    def scenario(self) -> Scenario:
        rng = random.Random(self.seed)
        cluster = generate_cluster(rng, self.hosts, clusters=self.clusters, vms_per_host=self.vms_per_host,
                                   neverstop_share=self.neverstop_share, local_share=self.local_share)
        faults = generate_faults(rng, cluster, self.duration_s, self.power_loss_share,
                                 self.vm_crash_share, self.partitions)
        return to_scenario(cluster, f"bench-{self.hosts}-hosts", self.duration_s, faults,
                           seed=self.seed, profile=self.profile)
