"""The command line as an operator meets it: exit codes, one-line errors, JSON, plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neverstop.cli import main

GOOD = "scenarios/vm-crash-shared.toml"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point in a child process, so that a traceback would be seen."""
    return subprocess.run([sys.executable, "-m", "neverstop", *args], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent.parent)


def test_run_passing_scenario_exits_0_and_prints_the_story() -> None:
    proc = run_cli("sim", "run", GOOD)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Running -> Stopping" in out
    assert "Stopping -> Stopped" in out and "Starting -> Running" in out
    assert "Name" in out and "Host IP" in out and "HA level" in out
    assert "PASS" in out and "FAIL" not in out


def test_failed_expectation_exits_1(tmp_path: Path) -> None:
    text = Path(GOOD).read_text().replace('within = "30s"', 'within = "1s"', 1)
    bad = tmp_path / "too-strict.toml"
    bad.write_text(text)
    proc = run_cli("sim", "run", "-q", str(bad))
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "more than 1.0s" in proc.stdout


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (('host = "host-1"\nstorage = "nfs-1"', 'host = "host-9"\nstorage = "nfs-1"'), "vm[1].host"),
        (('duration = "5m"', 'duration = "5 fortnights"'), "duration"),
        (('action = "vm-crash"', 'action = "explode"'), "event[1].action"),
        (('cpu = 8', 'cpus = 8'), "host[1]"),
        (('name = "VM-1"', 'name = "VM-1'), "line"),
    ],
)
def test_malformed_file_exits_2_with_one_line(tmp_path: Path, edit: tuple[str, str], fragment: str) -> None:
    text = Path(GOOD).read_text()
    assert edit[0] in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(edit[0], edit[1], 1))
    for command in ("run", "validate"):
        proc = run_cli("sim", command, str(bad))
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert str(bad) in lines[0] and fragment in lines[0]


@pytest.mark.parametrize(
    "argv",
    [["sim", "run"], ["sim", "run", GOOD, "--seed", "x"], ["sim", "run", GOOD, "--profile", "fast"],
     ["sim", "fly"], [], ["sim", "run", "no-such-file.toml"]],
)
def test_bad_arguments_exit_2_without_traceback(argv: list[str]) -> None:
    proc = run_cli(*argv)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip()


def test_validate_accepts_every_shipped_scenario() -> None:
    assert main(["sim", "validate", *map(str, sorted(Path("scenarios").rglob("*.toml")))]) == 0


def test_json_has_the_documented_keys(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["sim", "run", "-q", GOOD, "--json", str(out), "--seed", "7"]) == 0
    doc = json.loads(out.read_text())
    for key in ("scenario", "seed", "profile", "transitions", "runs", "expectations", "violations", "final"):
        assert key in doc
    assert doc["seed"] == 7
    assert doc["violations"] == []
    assert {"t", "vm", "state", "host"} <= set(doc["transitions"][0])
    assert {"vm", "host", "start", "end"} <= set(doc["runs"][0])
    times = [t["t"] for t in doc["transitions"]]
    assert times == sorted(times)
    vm1_runs = [r for r in doc["runs"] if r["vm"] == "VM-1"]
    assert vm1_runs[0]["end"] is not None and vm1_runs[-1]["end"] is None


def test_json_to_stdout_is_pure_json() -> None:
    proc = run_cli("sim", "run", GOOD, "--json", "-")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["scenario"].startswith("VM crash")


def test_profile_override_changes_detection(tmp_path: Path) -> None:
    out_default, out_tuned = tmp_path / "d.json", tmp_path / "t.json"
    path = "scenarios/shared-host-power-loss.toml"
    main(["sim", "run", "-q", path, "--json", str(out_default)])
    main(["sim", "run", "-q", path, "--json", str(out_tuned), "--profile", "tuned"])

    def unknown_at(p: Path) -> float:
        doc = json.loads(p.read_text())
        return min(t["t"] for t in doc["transitions"] if t["state"] == "Unknown")

    assert json.loads(out_tuned.read_text())["profile"] == "tuned"
    assert unknown_at(out_tuned) < unknown_at(out_default)


def test_plot_is_written(tmp_path: Path) -> None:
    png = tmp_path / "t.png"
    assert main(["sim", "run", "-q", GOOD, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
