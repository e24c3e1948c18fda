"""``neverstop sim sweep``: parameter parsing, the grid, rows that match the runs, the same
CSV from one process, a pool and a Dask cluster, and one-line errors for bad input."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from actors.config import PROFILES
from actors.states import Strategy
from formats.scenario import load_scenario
from neverstop.cli import main
from sim.recovery import false_failovers, neverstop_recoveries
from sim.runner import run_scenario
from sim.sweep import (
    ParamError,
    apply_point,
    execute,
    grid,
    make_tasks,
    parse_param,
    parse_params,
    percentile,
    summarise,
    write_csv,
)

ROOT = Path(__file__).parent.parent
CRASH = "scenarios/vm-crash-shared.toml"
ISOLATION = "scenarios/total-isolation-force.toml"


def test_values_are_typed_like_the_scenario_parser_types_them() -> None:
    assert parse_param("ha.host.check.interval=500ms,2s,3").values == (0.5, 2.0, 3.0)
    assert parse_param("ha.host.check.interval=500ms,2s,3").texts == ("500ms", "2s", "3")
    assert parse_param("host.ping.maxFailure=1,3").values == (1, 3)
    assert parse_param("ha.strategy=Force,Permissive").values == (Strategy.FORCE, Strategy.PERMISSIVE)
    assert parse_param("network.loss=0,0.01").values == (0.0, 0.01)
    assert parse_param("network.jitter=50ms").values == (0.05,)
    assert parse_param("network.clock_drift=0.05").values == (0.05,)
    assert parse_param("profile=default,tuned").values == ("default", "tuned")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ha.host.check.interval", "write KEY=V1,V2"),
        ("=1s", "write KEY=V1,V2"),
        ("ha.host.check.interval=", "write KEY=V1,V2"),
        ("ha.host.check.intervall=1s", "unknown --param key 'ha.host.check.intervall'"),
        ("ha.host.check.interval=fast", "invalid duration 'fast'"),
        ("ha.host.check.interval=0", "must be a positive duration"),
        ("host.ping.maxFailure=2.5", "whole number"),
        ("host.ping.maxFailure=three", "'three' is not a number"),
        ("network.loss=1.5", "from 0 to 1.0"),
        ("network.clock_drift=0.5", "from 0 to 0.1"),
        ("ha.strategy=Brutal", "Permissive or Force"),
        ("profile=fastest", "unknown profile 'fastest'"),
        ("ha.host.check.interval=1s,,2s", "empty value"),
        ("ha.host.check.interval=1s,1s", "listed twice"),
    ],
)
def test_bad_params_are_one_line_errors(text: str, fragment: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_param(text)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(ParamError, match="given twice"):
        parse_params(["network.loss=0", "network.loss=0.1"])


def test_grid_is_the_cross_product_first_parameter_slowest() -> None:
    params = parse_params(["network.loss=0,0.1", "host.ping.maxFailure=1,2,3"])
    points = grid(params)
    assert len(points) == 6
    assert [p[1]["network.loss"] for p in points] == ["0", "0", "0", "0.1", "0.1", "0.1"]
    assert [p[0]["host.ping.maxFailure"] for p in points[:3]] == [1, 2, 3]


def test_apply_point_sets_the_profile_then_the_keys_then_the_network() -> None:
    scenario = load_scenario(ISOLATION)  # its [ha] table says strategy = "Force"
    applied = apply_point(scenario, {"profile": "tuned", "host.ping.interval": 7.0, "network.loss": 0.2})
    assert applied.profile == "tuned"
    assert applied.config.ping_interval_s == 7.0
    assert applied.config.host_check_interval_s == PROFILES["tuned"].host_check_interval_s
    assert applied.config.strategy is Strategy.FORCE  # the scenario's own [ha] still applies
    assert applied.network.loss == 0.2 and applied.network.jitter_s == scenario.network.jitter_s


def test_rows_hold_the_recovery_figures_of_the_run_they_describe() -> None:
    scenario = load_scenario(CRASH)
    [record] = execute(make_tasks([scenario], [], [3]), jobs=1)
    result = run_scenario(scenario, seed=3)
    [rec] = neverstop_recoveries(result)
    row = record.row
    assert row["scenario"] == "vm-crash-shared" and row["seed"] == 3
    assert row["incidents"] == 1 and row["recovered_by_ha"] == 1 and row["unrecovered"] == 0
    assert row["downtime_s"] == rec.downtime_s and row["order_s"] == rec.order_s
    assert 2.0 <= row["restart_s"] <= 4.1  # a guest boots in 2 to 4 s (sim.hypervisor.BOOT_S)
    assert row["failover_order_s"] is None  # a crash restarts on the same host
    assert row["findings"] == 0 and row["false_failovers"] == 0 and row["ok"] is True


def test_a_fencer_too_eager_for_the_loss_shows_false_failovers() -> None:
    """Force on a lossy network: with two missed heartbeats a healthy host fences its VMs,
    which HA then starts elsewhere: the row counts them, and the truth agrees."""
    scenario = load_scenario(ISOLATION)
    params = parse_params(["profile=tuned", "network.loss=0.05", "ha.host.selfFencer.maxAttempts=2,6"])
    records = execute(make_tasks([scenario], params, [1]), jobs=1)
    eager, patient = (r.row for r in records)
    assert eager["ha.host.selfFencer.maxAttempts"] == "2" and eager["false_failovers"] > 0
    assert patient["false_failovers"] == 0
    applied = apply_point(scenario, {"profile": "tuned", "network.loss": 0.05,
                                     "ha.host.selfFencer.maxAttempts": 2})
    assert len(false_failovers(run_scenario(applied, seed=1), applied)) == eager["false_failovers"]


def _sweep_cli(tmp_path: Path, name: str, *extra: str) -> str:
    out = tmp_path / name
    code = main(["sim", "sweep", CRASH, "--param", "profile=default,tuned", "--param", "network.loss=0,0.01",
                 "--seeds", "3", "-q", "--out", str(out), *extra])
    assert code == 0
    return out.read_text()


def test_the_csv_has_one_row_per_run_and_is_the_same_from_one_or_two_processes(tmp_path: Path) -> None:
    serial = _sweep_cli(tmp_path, "serial.csv", "--jobs", "1")
    parallel = _sweep_cli(tmp_path, "parallel.csv", "--jobs", "2")
    assert serial == parallel
    rows = list(csv.DictReader(io.StringIO(serial)))
    assert len(rows) == 2 * 2 * 3
    assert [r["seed"] for r in rows[:3]] == ["1", "2", "3"]
    assert {(r["profile"], r["network.loss"]) for r in rows} == {
        ("default", "0"), ("default", "0.01"), ("tuned", "0"), ("tuned", "0.01")}
    for column in ("order_s", "downtime_s", "findings", "false_failovers", "checkers"):
        assert column in rows[0]
    assert all(float(r["downtime_s"]) > 0 for r in rows)


def test_the_same_sweep_on_a_dask_cluster(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    local = _sweep_cli(tmp_path, "local.csv", "--jobs", "1")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        remote = _sweep_cli(tmp_path, "dask.csv", "--dask", cluster.scheduler_address)
    assert remote == local


def test_summary_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0 and percentile(values, 50) == 50.0
    assert percentile([3.0], 99) == 3.0 and percentile([], 99) is None
    scenario = load_scenario(CRASH)
    params = parse_params(["network.loss=0"])
    records = execute(make_tasks([scenario], params, [1, 2]), jobs=1)
    [summary] = summarise(records, params)
    downtimes = sorted(r.row["downtime_s"] for r in records)
    assert summary.runs == 2 and summary.figures["downtime_s"] == (downtimes[0], downtimes[1], downtimes[1])
    buffer = io.StringIO()
    write_csv(records, params, buffer)
    assert buffer.getvalue().splitlines()[0].startswith("scenario,network.loss,seed,ok,")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neverstop", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--param", "ha.host.check.interval"], "write KEY=V1,V2"),
        (["--param", "nonsense.key=1"], "unknown --param key 'nonsense.key'"),
        (["--param", "host.ping.timeout=soon"], "invalid duration 'soon'"),
        (["--seeds", "0"], "must be at least 1"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(args: list[str], fragment: str, tmp_path: Path) -> None:
    proc = run_cli("sim", "sweep", CRASH, "--out", str(tmp_path / "x.csv"), *args)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


def test_cli_bad_scenario_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n')
    proc = run_cli("sim", "sweep", str(bad), "--out", str(tmp_path / "x.csv"))
    assert proc.returncode == 2 and "bad.toml" in proc.stderr and "Traceback" not in proc.stderr
