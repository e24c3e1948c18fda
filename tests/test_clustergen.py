"""Generated datacenters are valid, deterministic scenarios that run clean."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from actors.config import DEFAULT, TUNED
from actors.states import HaLevel, StorageType
from formats.scenario import parse_scenario
from sim.clustergen import Cluster, generate_cluster, generate_faults, to_scenario
from sim.runner import run_scenario
from sim.scenario_writer import dump_scenario


def cluster(seed: int = 1, hosts: int = 12, **kw: float) -> Cluster:
    return generate_cluster(random.Random(seed), hosts, **kw)  # type: ignore[arg-type]


def test_same_generator_state_same_cluster() -> None:
    assert cluster(7, clusters=3) == cluster(7, clusters=3)
    assert cluster(7, clusters=3) != cluster(8, clusters=3)


def test_names_are_unique_zero_padded_and_sort_by_number() -> None:
    c = cluster(hosts=120, clusters=4, vms_per_host=3)
    hosts = [h.name for h in c.hosts]
    vms = [v.name for v in c.vms]
    assert hosts[0] == "host-001" and hosts[-1] == "host-120"
    assert vms[0] == "vm-001" and vms[-1] == "vm-360"
    assert hosts == sorted(hosts) and vms == sorted(vms)
    names = hosts + vms + [s.name for s in c.storage]
    assert len(names) == len(set(names))
    ips = [h.ip for h in c.hosts] + [v.ip for v in c.vms]
    assert len(ips) == len(set(ips))


def test_pools_one_nfs_per_cluster_one_local_per_host() -> None:
    c = cluster(hosts=30, clusters=3)
    nfs = [s for s in c.storage if s.type is StorageType.NFS]
    local = {s.name: s for s in c.storage if s.type is StorageType.LOCAL}
    assert len(nfs) == 3
    assert {h.cluster for h in c.hosts} == {"Cluster-1", "Cluster-2", "Cluster-3"}
    nfs_of = defaultdict(set)
    for h in c.hosts:
        shared, own = h.storage
        nfs_of[h.cluster].add(shared)
        assert local[own].host == h.name
    assert all(len(pools) == 1 for pools in nfs_of.values())
    assert len(set().union(*nfs_of.values())) == 3


@pytest.mark.parametrize("fill", [0.3, 0.6, 0.9])
def test_every_vm_fits_within_fill(fill: float) -> None:
    c = cluster(hosts=40, clusters=2, vms_per_host=8, fill=fill)
    hosts = {h.name: h for h in c.hosts}
    cpu: dict[str, int] = defaultdict(int)
    mem: dict[str, int] = defaultdict(int)
    for v in c.vms:
        host = hosts[v.host]
        assert v.storage in host.storage  # its host's local pool or its cluster's NFS
        cpu[v.host] += v.cpu
        mem[v.host] += v.memory_mib
    for name, h in hosts.items():
        assert cpu[name] <= h.cpu * fill and mem[name] <= h.memory_mib * fill


def test_shares_are_honoured() -> None:
    c = cluster(hosts=200, clusters=2, vms_per_host=10, neverstop_share=0.25, local_share=0.75,
                power_controller_share=0.5)
    n = len(c.vms)
    neverstop = sum(1 for v in c.vms if v.ha is HaLevel.NEVER_STOP) / n
    local = sum(1 for v in c.vms if v.storage.startswith("local-")) / n
    bmc = sum(1 for h in c.hosts if h.power_controller) / len(c.hosts)
    assert 0.2 < neverstop < 0.3 and 0.7 < local < 0.8 and 0.4 < bmc < 0.6
    assert all(not h.power_controller for h in cluster(power_controller_share=0.0).hosts)


def test_a_cluster_too_full_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        cluster(hosts=2, vms_per_host=500)
    with pytest.raises(ValueError):
        cluster(hosts=2, clusters=3)


def test_faults_come_in_healed_pairs_on_distinct_hosts() -> None:
    c = cluster(hosts=100, clusters=2, vms_per_host=10)
    events = generate_faults(random.Random(3), c, 3600.0, 0.05, 0.02, 4)
    assert [e.at_s for e in events] == sorted(e.at_s for e in events)
    assert all(0.0 <= e.at_s < 3600.0 * 0.95 for e in events)
    by_action: dict[str, list[str]] = defaultdict(list)
    for e in events:
        by_action[e.action].append(e.target or "")
    assert len(by_action["power-off"]) == 5
    assert sorted(by_action["power-off"]) == sorted(by_action["power-on"])
    assert len(by_action["network-down"]) == 4
    assert sorted(by_action["network-down"]) == sorted(by_action["network-up"])
    assert len(by_action["vm-crash"]) == 20 == len(set(by_action["vm-crash"]))
    faulty_hosts = by_action["power-off"] + by_action["network-down"]
    assert len(faulty_hosts) == len(set(faulty_hosts))
    for host in faulty_hosts:  # each heals after it broke
        down = next(e for e in events if e.target == host and e.action in ("power-off", "network-down"))
        up = next(e for e in events if e.target == host and e.action in ("power-on", "network-up"))
        assert down.at_s < up.at_s and down.args == up.args


def test_to_scenario_round_trips_through_the_parser() -> None:
    """The parser's own validation accepts a generated scenario (all references resolve)."""
    c = cluster(hosts=6, clusters=2, vms_per_host=3)
    events = generate_faults(random.Random(2), c, 600.0, 0.2, 0.1, 1)
    sc = to_scenario(c, "generated", 600.0, events, seed=5)
    back = parse_scenario(dump_scenario(sc))
    assert back.hosts == sc.hosts and back.vms == sc.vms and back.storage == sc.storage
    assert [(e.at_s, e.action, e.target) for e in back.events] == [
        (e.at_s, e.action, e.target) for e in sc.events]
    assert sc.config == DEFAULT and sc.seed == 5
    assert to_scenario(c, "t", 60.0, profile="tuned").config == TUNED


@pytest.mark.parametrize("seed", [1, 2])
def test_a_small_generated_datacenter_runs_clean(seed: int) -> None:
    rng = random.Random(seed)
    c = generate_cluster(rng, 8, clusters=2, vms_per_host=4)
    events = generate_faults(rng, c, 1800.0, 0.25, 0.1, 1)
    result = run_scenario(to_scenario(c, "tiny", 1800.0, events, seed=seed))
    assert not result.violations, result.violations
    assert len(result.final) == len(c.vms)
    # every VM on a shared pool whose host lost power and that has NeverStop runs again
    lost = {e.target for e in events if e.action == "power-off"}
    final = {f.vm: f for f in result.final}
    for v in c.vms:
        if v.host in lost and v.ha is HaLevel.NEVER_STOP and v.storage.startswith("nfs-"):
            assert final[v.name].state == "Running", final[v.name]
