"""Every shipped scenario passes, deterministically; every checker can fire."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from formats.scenario import load_scenario
from sim.cli import with_profile
from sim.run_json import run_json
from sim.runner import run_scenario

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").rglob("*.toml"))


def test_scenarios_exist() -> None:
    assert len(SCENARIOS) >= 15


@pytest.mark.parametrize("profile", [None, "tuned"])
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_passes(path: Path, profile: str | None) -> None:
    """Each scenario holds with its own settings, and also with the faster tuned ones."""
    scenario = load_scenario(path)
    if profile is not None:
        scenario = with_profile(scenario, profile)
    result = run_scenario(scenario)
    failed = [f"{e.vm}: {e.detail}" for e in result.expectations if not e.ok]
    assert not failed, failed
    assert not result.violations, result.violations
    assert result.expectations, "a shipped scenario must state expectations"


@pytest.mark.parametrize("name", ["total-isolation-force", "shared-host-power-loss", "user-stop"])
def test_same_seed_same_run(name: str) -> None:
    scenario = load_scenario(f"scenarios/{name}.toml")
    first = json.dumps(run_json(run_scenario(scenario)), sort_keys=True)
    second = json.dumps(run_json(run_scenario(scenario)), sort_keys=True)
    assert first == second


def test_seed_changes_the_run() -> None:
    scenario = load_scenario("scenarios/shared-host-power-loss.toml")
    runs = {json.dumps(run_json(run_scenario(scenario, seed=s))["transitions"]) for s in (1, 2, 3)}
    assert len(runs) > 1, "the seed must drive the random choices (boot times, ping phases)"


def test_ground_truth_is_kept_apart_from_the_view() -> None:
    """Under Force isolation the view says Unknown while the truth says the fencer killed it."""
    result = run_scenario(load_scenario("scenarios/total-isolation-force.toml"))
    vm1 = [r for r in result.runs if r.vm == "VM-1"]
    assert [r.host for r in vm1] == ["host-1", "host-2"]
    killed_at = vm1[0].end
    assert killed_at is not None
    restarted_at = vm1[1].start
    assert killed_at < restarted_at, "the fenced copy must be dead before the new one starts"
    unknown = [t for t in result.transitions if t.vm == "VM-1" and t.state == "Unknown"]
    # The manager still shows Unknown after the fencer killed the guest: a view, not the truth.
    assert unknown and unknown[0].t <= killed_at + 60


# -- every checker can fire: break one rule of the core on purpose and watch it caught --------------


def _violations(path: str) -> set[str]:
    return {v.checker for v in run_scenario(load_scenario(path)).violations}


def test_two_running_checker_catches_a_host_that_does_not_fence(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose heartbeat says its fencer is armed, but whose fencer does nothing."""
    import actors.host_agent

    monkeypatch.setattr(actors.host_agent.HostAgent, "_fence", lambda self, ctx, pool: None)
    assert "two-running" in _violations("scenarios/total-isolation-force.toml")


def test_two_running_checker_catches_a_watchdog_that_never_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent dies, the host and its guests live: only the watchdog kills them in time."""
    import sim.devices

    monkeypatch.setattr(sim.devices.Watchdog, "_check", lambda self, _: None)
    assert "two-running" in _violations("scenarios/agent-crash-force.toml")


def test_two_running_checker_catches_a_restarted_agent_that_pets_before_its_storage_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A new agent that takes the watchdog over at once defers its predecessor's reset past
    the deadline the manager counts from the predecessor's last write."""
    import actors.host_agent

    def pet_at_once(self: actors.host_agent.HostAgent, ctx: object) -> bool:
        assert self.config.enable and getattr(ctx, "watchdog", None) is not None
        ctx.watchdog.pet(self.config.watchdog_timeout_s)  # type: ignore[attr-defined]
        return True

    monkeypatch.setattr(actors.host_agent.HostAgent, "_pet_watchdog", pet_at_once)
    assert "two-running" in _violations("scenarios/agent-restart-while-isolated-force.toml")


def test_a_reset_host_is_marked_in_the_run_and_its_guests_die_with_it() -> None:
    result = run_scenario(load_scenario("scenarios/agent-crash-force.toml"))
    resets = [f for f in result.faults if f.action == "watchdog-reset"]
    assert [f.target for f in resets] == ["host-1"]
    crash = next(f.t for f in result.faults if f.action == "agent-crash")
    assert crash < resets[0].t <= crash + 3.0  # the tuned profile's watchdog: 3 x 1 s
    ends = sorted(r.end for r in result.runs if r.host == "host-1" and r.end is not None)
    assert ends[:2] == [resets[0].t, resets[0].t]  # both guests, at the reset


def test_capacity_checker_catches_overcommit(monkeypatch: pytest.MonkeyPatch) -> None:
    import actors.placement

    monkeypatch.setattr(actors.placement.Capacity, "fits", lambda self, host, vm: True)
    assert "over-capacity" in _violations("scenarios/no-capacity.toml")


def test_ha_switch_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    """VM actors and host agents that both ignore ha.enable (each layer alone is caught
    by the other, which the scenarios prove)."""
    import actors.host_agent
    import actors.vm
    from actors.states import HaLevel

    monkeypatch.setattr(actors.vm.VmActor, "wants_ha_restart",
                        lambda self: self.level is HaLevel.NEVER_STOP and not self.no_restart)
    refusal = actors.host_agent.HostAgent._refusal

    def careless(self: actors.host_agent.HostAgent, ctx: object, msg: object, running: bool) -> str | None:
        enabled = replace(self.config, enable=True)
        saved, self.config = self.config, enabled
        try:
            return refusal(self, ctx, msg, running)  # type: ignore[arg-type]
        finally:
            self.config = saved

    monkeypatch.setattr(actors.host_agent.HostAgent, "_refusal", careless)
    assert "ha-disabled" in _violations("scenarios/ha-switch.toml")


def test_no_restart_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM actor that loses the user's "do not restart" flag on the way in."""
    import actors.vm
    from actors.messages import UserStopVm

    command = actors.vm.VmActor._command

    def forgetful(self: actors.vm.VmActor, ctx: object, msg: object) -> None:
        if isinstance(msg, UserStopVm):
            msg = UserStopVm(msg.vm, no_restart=False)
        command(self, ctx, msg)  # type: ignore[arg-type]

    monkeypatch.setattr(actors.vm.VmActor, "_command", forgetful)
    found = _violations("scenarios/user-stop.toml")
    assert "no-restart" in found


def test_level_none_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    import actors.vm

    monkeypatch.setattr(actors.vm.VmActor, "wants_ha_restart", lambda self: self.config.enable)
    assert "ha-level-none" in _violations("scenarios/vm-crash-shared.toml")
