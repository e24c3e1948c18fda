"""The benchmarks run end to end at a tiny size (no timing is asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not an installed package

from bench import overhead  # noqa: E402
from bench.measure import run_child  # noqa: E402
from bench.run import main, slope  # noqa: E402
from bench.workload import Workload  # noqa: E402


def test_overhead_counts_the_same_number_of_events_on_both_sides() -> None:
    _, bare = overhead.bare_rate(2000, 10)
    _, across = overhead.runtime_rate(2000, 10)
    _, within = overhead.runtime_rate(2000, 10, same_node=True)
    assert bare == across == within == 2000


def test_reference_workload_has_the_documented_shape() -> None:
    w = Workload()
    assert (w.hosts, w.clusters, w.partitions) == (1000, 10, 3)
    sc = Workload(hosts=50).scenario()
    assert len(sc.hosts) == 50 and len(sc.vms) == 1000 and sc.profile == "default"


def test_a_child_measurement_reports_memory_and_time() -> None:
    m = run_child(10, 300.0, seed=1)
    assert m.hosts == 10 and m.vms == 200 and m.violations == 0
    assert m.messages > 0 and m.wall_s > 0 and m.peak_rss_mib >= m.rss_start_mib > 0


def test_slope_of_a_line_and_a_square() -> None:
    xs = [100, 300, 1000, 3000]
    assert slope(xs, [2 * x for x in xs]) == pytest.approx(1.0)
    assert slope(xs, [x * x for x in xs]) == pytest.approx(2.0)


def test_all_quick_prints_every_table_and_writes_the_report(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "benchmarks.md"
    assert main(["all", "--quick", "--docs", str(docs)]) == 0
    out = capsys.readouterr().out
    text = docs.read_text()
    sections = [("Runtime overhead", "overhead --quick"), ("Reference datacenter", "reference --quick"),
                ("Scale curve", "scale --quick"), ("Where the time goes", "profile --quick"),
                ("Where the memory goes", "memory --quick")]
    for title, cmd in sections:
        assert title in out and title in text
        assert f"python -m bench.run {cmd}" in out and f"python -m bench.run {cmd}" in text
    assert "Machine:" in text and "Python" in text and "Date:" in text


def test_a_run_makes_no_cyclic_garbage() -> None:
    """What lets ``sim.runtime.collector_paused`` keep the cyclic collector off for a
    whole run: reference counting alone frees everything a run drops."""
    import gc

    from sim.runner import Simulation

    sim = Simulation(Workload(hosts=20, duration_s=1800.0, power_loss_share=0.1).scenario())
    plain_run = sim.env.run
    found: list[int] = []

    def run(until: object = None) -> object:
        was_on = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            return plain_run(until)
        finally:
            gc.set_debug(gc.DEBUG_SAVEALL)
            found.append(gc.collect())
            gc.set_debug(0)
            kinds = sorted({type(o).__name__ for o in gc.garbage})
            gc.garbage.clear()
            if was_on:
                gc.enable()
            assert found[0] == 0, f"the run left {found[0]} objects in reference cycles: {kinds}"

    sim.env.run = run  # type: ignore[method-assign]
    result = sim.run()
    assert found == [0] and not result.violations


def test_ab_runs_the_base_revision_s_code_and_this_tree_s(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from bench.ab import export, measure_in

    export("HEAD", tmp_path)
    assert (tmp_path / "sim" / "runtime.py").is_file() and (tmp_path / "bench" / "measure.py").is_file()
    # A tree whose workload differs shows it: the run really uses the exported code.
    workload = tmp_path / "bench" / "workload.py"
    text = workload.read_text()
    workload.write_text(text.replace("vms_per_host: float = 20.0", "vms_per_host: float = 3.0"))
    assert measure_in(tmp_path, 10, 300.0, seed=1).vms == 30
    assert main(["ab", "--base", "HEAD", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "python -m bench.run ab --base HEAD --quick" in out and "cheaper in" in out


def test_ab_with_an_unknown_revision_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ab", "--base", "no-such-revision", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bench.run ab: cannot export revision 'no-such-revision'")
    with pytest.raises(SystemExit):
        main(["ab"])
