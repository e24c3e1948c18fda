"""``neverstop sim tune``: network files, profile files, and a search that takes a faster
value when it is safe and refuses it when it causes false failovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.config import DEFAULT, PROFILES
from formats.scenario import load_scenario
from formats.spec import NetworkCondition
from neverstop.cli import main
from sim.sweep import ParamError, apply_point, load_profile
from sim.tune import load_network, moves, profile_text, start_profile, tune

POWER_LOSS = "scenarios/shared-host-power-loss.toml"
ISOLATION = "scenarios/total-isolation-force.toml"


def test_network_file_is_read_with_the_scenario_rules(tmp_path: Path) -> None:
    path = tmp_path / "net.toml"
    path.write_text('[network]\nloss = 0.01\njitter = "50ms"\nclock_drift = 0.01\n')
    assert load_network(path) == NetworkCondition(loss=0.01, jitter_s=0.05, clock_drift=0.01)
    assert load_network("profiles/lossy-lan.toml") == NetworkCondition(loss=0.01, jitter_s=0.05)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no [network] table"),
        ("[network]\nloss = 2\n", "network.loss: must be a number from 0 to 1.0"),
        ("[network]\nlos = 0.1\n", "unknown key 'los'"),
        ('[network]\njitter = "fast"\n', "network.jitter"),
        ("[netwrk]\nloss = 0.1\n", "unknown key 'netwrk'"),
        ("[network\n", "invalid TOML"),
    ],
)
def test_bad_network_files_are_one_line_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "net.toml"
    path.write_text(text)
    with pytest.raises(ParamError) as err:
        load_network(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_a_profile_file_reads_back_as_the_same_config(tmp_path: Path, name: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(profile_text(PROFILES[name], ["a comment"]))
    assert load_profile(path) == PROFILES[name]
    assert start_profile(str(path)) == PROFILES[name]
    text = path.read_text()
    assert text.startswith("# a comment\n[ha]\n") and '"ha.host.check.interval" = "' in text


def test_a_profile_file_can_be_swept(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[ha]\n"host.ping.interval" = "7s"\n')
    applied = apply_point(load_scenario(POWER_LOSS), {"profile": str(path)})
    assert applied.config == DEFAULT.with_key("host.ping.interval", 7.0)


def test_bad_profile_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[ha]\n"host.ping.intervall" = "7s"\n')
    with pytest.raises(ParamError, match="unknown HA key"):
        load_profile(path)
    path.write_text('[ha]\n"host.ping.interval" = "-7s"\n')
    with pytest.raises(ParamError, match="negative"):
        load_profile(path)


def test_pings_and_allowed_failures_are_also_tried_together() -> None:
    space = {"host.ping.interval": (1.0, 2.0), "host.ping.maxFailure": (3, 5),
             "ha.host.check.interval": (1.0,)}
    found = moves(space)
    joint = [(1.0, 3), (1.0, 5), (2.0, 3), (2.0, 5)]
    assert (("host.ping.interval", "host.ping.maxFailure"), joint) in found
    assert len(found) == 4


def test_tune_takes_a_faster_safe_value() -> None:
    """From the default profile (ping every 60 s), pinging every 10 s detects the power loss sooner."""
    result = tune([load_scenario(POWER_LOSS)], seeds=[1, 2], start="default",
                  space={"host.ping.interval": (10.0, 60.0)}, jobs=1)
    assert result.start.feasible and result.best.feasible
    assert result.best.config == DEFAULT.with_key("host.ping.interval", 10.0)
    assert result.best.score < result.start.score
    assert result.history and "host.ping.interval 1m -> 10s" in result.history[0]


def test_tune_refuses_a_faster_value_that_fails_over_healthy_hosts() -> None:
    """Force on a 5% lossy network: a fencer that gives up after 2 missed heartbeats kills
    healthy guests that HA then starts elsewhere. It recovers fastest, but is ruled out."""
    eager = PROFILES["tuned"].with_key("ha.host.selfFencer.maxAttempts", 2)
    space = {"ha.host.selfFencer.maxAttempts": (2, 8)}
    result = tune([load_scenario(ISOLATION)], seeds=[1, 2], network=NetworkCondition(loss=0.05),
                  start=eager, space=space, jobs=1)
    assert not result.start.feasible and result.start.false_failovers > 0
    assert result.best.feasible and result.best.false_failovers == 0
    assert result.best.config == eager.with_key("ha.host.selfFencer.maxAttempts", 8)
    assert result.best.config.strategy == eager.strategy  # the scenario's Force is not written into it


def test_cli_writes_a_profile_that_says_how_it_was_made(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profile.toml"
    code = main(["sim", "tune", "scenarios/vm-crash-shared.toml", "--network", "profiles/lossy-lan.toml",
                 "--seeds", "2", "--rounds", "1", "--jobs", "2", "-q", "--out", str(out)])
    assert code == 0
    text = out.read_text()
    command = "# command: neverstop sim tune scenarios/vm-crash-shared.toml --network profiles/lossy-lan.toml"
    assert command in text
    assert "# network: loss 0.01 per link" in text and "jitter 50ms" in text
    config = load_profile(out)
    assert config.strategy == DEFAULT.strategy and config.enable
    assert "profile written to" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--network", "no-such-file.toml"], "no-such-file.toml"),
        (["--start", "fastest"], "unknown profile 'fastest'"),
        (["--objective", "speed"], "invalid choice"),
    ],
)
def test_cli_bad_arguments_exit_2(args: list[str], fragment: str, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path) -> None:
    code = main(["sim", "tune", POWER_LOSS, "--out", str(tmp_path / "p.toml"), *args])
    assert code == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "p.toml").exists()
