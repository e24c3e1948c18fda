"""Capacity accounting, the choice of host, and the fencing arithmetic."""

from __future__ import annotations

from dataclasses import replace
from random import Random

import pytest

from actors.config import DEFAULT, PROFILES, TUNED, HaConfig
from actors.inventory import HostInfo, VmDef
from actors.placement import Capacity, choose_host
from actors.policy import (
    host_fence_after_s,
    host_guests_gone_after_s,
    manager_fence_window_s,
    self_fencing_on,
)
from actors.states import Network, Strategy


def hosts(*specs: tuple[str, int, int]) -> dict[str, HostInfo]:
    return {n: HostInfo(n, "c1", cpu, mem, ("nfs",), (Network.MANAGEMENT,), False)
            for n, cpu, mem in specs}


def vm(name: str, cpu: int = 2, mem: int = 2048) -> VmDef:
    return VmDef(name, cpu, mem, "nfs", True, "c1")


# -- Capacity ------------------------------------------------------------------------------------------


def test_reserve_and_release_add_up() -> None:
    cap = Capacity(hosts(("h1", 8, 8192), ("h2", 8, 8192)))
    a, b = vm("a", 2, 1024), vm("b", 3, 2048)
    cap.reserve(a, "h1")
    cap.reserve(b, "h1")
    assert (cap.used_cpu["h1"], cap.used_mem["h1"]) == (5, 3072)
    assert cap.free_mem("h1") == 8192 - 3072
    assert cap.free_mem("h2") == 8192
    assert cap.release(a, "h1") is True
    assert (cap.used_cpu["h1"], cap.used_mem["h1"]) == (3, 2048)
    assert cap.release(b, "h1") is True
    assert (cap.used_cpu["h1"], cap.used_mem["h1"]) == (0, 0)


def test_reserve_twice_on_one_host_counts_once_and_release_is_idempotent() -> None:
    cap = Capacity(hosts(("h1", 8, 8192)))
    a = vm("a")
    cap.reserve(a, "h1")
    cap.reserve(a, "h1")
    assert (cap.used_cpu["h1"], cap.used_mem["h1"]) == (2, 2048)
    assert cap.release(a, "h1") is True
    assert cap.release(a, "h1") is False
    assert (cap.used_cpu["h1"], cap.used_mem["h1"]) == (0, 0)
    assert cap.release(vm("never"), "h1") is False
    assert (cap.used_cpu["h1"], cap.used_mem["h1"]) == (0, 0)


def test_a_migrating_vm_holds_a_slot_on_both_hosts() -> None:
    cap = Capacity(hosts(("h1", 8, 8192), ("h2", 8, 8192)))
    a = vm("a")
    cap.reserve(a, "h1")
    cap.reserve(a, "h2")
    assert cap.slots["a"] == {"h1", "h2"}
    assert cap.used_mem == {"h1": 2048, "h2": 2048}
    assert cap.release(a, "h1") is True
    assert cap.slots["a"] == {"h2"}
    assert cap.used_mem == {"h1": 0, "h2": 2048}


@pytest.mark.parametrize(("cpu", "mem", "fits"), [
    (4, 4096, True),  # exactly full
    (5, 4096, False),  # one CPU too many
    (4, 4097, False),  # one MiB too many
])
def test_fits_at_the_boundary(cpu: int, mem: int, fits: bool) -> None:
    cap = Capacity(hosts(("h1", 8, 8192)))
    cap.reserve(vm("a", 4, 4096), "h1")
    assert cap.fits("h1", vm("b", cpu, mem)) is fits


# -- choose_host ---------------------------------------------------------------------------------------


def test_the_preferred_host_wins_when_it_fits() -> None:
    cap = Capacity(hosts(("h1", 8, 4096), ("h2", 8, 16384)))
    assert choose_host(vm("a"), cap, ["h1", "h2"], prefer="h1") == "h1"


def test_otherwise_the_host_with_most_free_memory() -> None:
    cap = Capacity(hosts(("h1", 8, 4096), ("h2", 8, 8192), ("h3", 8, 16384)))
    cap.reserve(vm("x", 1, 3072), "h1")  # h1 has 1024 left: too little
    cap.reserve(vm("y", 1, 2048), "h3")  # h3 has 14336 left
    assert choose_host(vm("a"), cap, ["h1", "h2", "h3"], prefer="h1") == "h3"
    assert choose_host(vm("a"), cap, ["h1", "h2", "h3"], prefer=None) == "h3"
    assert choose_host(vm("a"), cap, ["h1", "h2"], prefer="h3") == "h2"  # not a candidate


def test_ties_are_broken_by_name_whatever_the_order() -> None:
    cap = Capacity(hosts(("h3", 8, 8192), ("h1", 8, 8192), ("h2", 8, 8192)))
    for order in (["h1", "h2", "h3"], ["h3", "h2", "h1"], ["h2", "h3", "h1"]):
        assert choose_host(vm("a"), cap, order, prefer=None) == "h1"
    cap.reserve(vm("x", 1, 1), "h1")
    assert choose_host(vm("a"), cap, ["h3", "h1", "h2"], prefer=None) == "h2"


def test_no_host_when_nothing_fits_or_no_candidate() -> None:
    cap = Capacity(hosts(("h1", 2, 2048), ("h2", 1, 65536)))
    assert choose_host(vm("a", 2, 4096), cap, ["h1", "h2"], prefer="h1") is None
    assert choose_host(vm("a"), cap, [], prefer="h1") is None


def test_choosing_then_reserving_never_over_commits() -> None:
    rng = Random(7)
    cap = Capacity(hosts(("h1", 16, 32768), ("h2", 8, 16384), ("h3", 4, 65536)))
    placed = 0
    for i in range(200):
        v = vm(f"v{i}", rng.randint(1, 4), rng.choice([512, 1024, 4096]))
        host = choose_host(v, cap, ["h1", "h2", "h3"], prefer=rng.choice(["h1", "h2", "h3", None]))
        if host is None:
            assert not any(cap.fits(h, v) for h in ("h1", "h2", "h3"))
            continue
        cap.reserve(v, host)
        placed += 1
        for name, info in cap.hosts.items():
            assert cap.used_cpu.get(name, 0) <= info.cpu
            assert cap.used_mem.get(name, 0) <= info.memory_mib
    assert placed > 0


# -- fencing arithmetic --------------------------------------------------------------------------------


def stretched(config: HaConfig) -> float:
    """The host's deadline for its guests to be gone (its fencer's, or its watchdog's after
    the last pet), measured on a host clock, as the longest time it may take on the
    manager's clock."""
    drift = config.clock_drift_max
    return host_guests_gone_after_s(config) * (1 + drift) / (1 - drift)


def test_host_fence_after_counts_attempts_timeout_and_the_noticing_tick() -> None:
    # maxAttempts more writes after the last acked one, the last one's timeout, one tick.
    assert host_fence_after_s(DEFAULT) == 5.0 * (6 + 1) + 5.0
    assert host_fence_after_s(TUNED) == pytest.approx(
        TUNED.self_fencer_interval_s * (TUNED.self_fencer_max_attempts + 1)
        + TUNED.self_fencer_storage_timeout_s)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_manager_window_outlasts_the_host_deadline_for_each_profile(name: str) -> None:
    config = PROFILES[name]
    window = manager_fence_window_s(config)
    assert window > host_fence_after_s(config)
    assert window > stretched(config)
    assert window >= stretched(config) + config.self_fencer_storage_timeout_s - 1e-9


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_manager_window_grows_with_drift(name: str) -> None:
    config = PROFILES[name]
    windows = [manager_fence_window_s(replace(config, clock_drift_max=d)) for d in (0.0, 0.01, 0.05, 0.2)]
    assert windows == sorted(windows) and len(set(windows)) == len(windows)
    exact = replace(config, clock_drift_max=0.0)
    assert windows[0] == pytest.approx(host_fence_after_s(exact) + exact.watchdog_timeout_s
                                       + exact.self_fencer_storage_timeout_s)


def test_a_dead_agent_s_watchdog_fires_before_the_manager_window_ends() -> None:
    """The agent pets at every tick up to its fencer's deadline at the latest (then it has
    fenced, or it is dead): the reset comes one watchdog timeout after that."""
    assert host_guests_gone_after_s(DEFAULT) == host_fence_after_s(DEFAULT) + 3 * 5.0
    for config in PROFILES.values():
        assert host_guests_gone_after_s(config) > host_fence_after_s(config) + config.self_fencer_interval_s
        assert manager_fence_window_s(config) > host_guests_gone_after_s(config)


def test_manager_window_outlasts_the_host_deadline_for_random_configs() -> None:
    rng = Random(3)
    for _ in range(500):
        config = replace(
            DEFAULT,
            self_fencer_interval_s=rng.uniform(0.5, 30.0),
            self_fencer_max_attempts=rng.randint(1, 20),
            self_fencer_storage_timeout_s=rng.uniform(0.5, 30.0),
            self_fencer_watchdog_intervals=rng.randint(2, 10),
            clock_drift_max=rng.uniform(0.0, 0.5),
        )
        assert manager_fence_window_s(config) > stretched(config)


@pytest.mark.parametrize(("enable", "strategy", "on"), [
    (True, Strategy.FORCE, True),
    (False, Strategy.FORCE, False),
    (True, Strategy.PERMISSIVE, False),
    (False, Strategy.PERMISSIVE, False),
])
def test_self_fencing_only_under_force_with_ha_enabled(enable: bool, strategy: Strategy, on: bool) -> None:
    assert self_fencing_on(replace(DEFAULT, enable=enable, strategy=strategy)) is on
