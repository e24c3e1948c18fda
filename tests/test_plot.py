"""The timeline plot draws what a hand-built run holds (rows, state bars, ground truth,
faults), and an empty run, to a real PNG."""

from __future__ import annotations

from pathlib import Path

from sim.plot import OTHER_COLOUR, STATE_COLOURS, plot_timeline
from sim.result import FaultMark, Run, RunResult, Transition

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > len(PNG_SIGNATURE)
    assert data.startswith(PNG_SIGNATURE)


def test_timeline_of_a_small_run(tmp_path: Path) -> None:
    result = RunResult(
        scenario="two VMs, one host lost", seed=1, profile="fast", duration_s=600.0,
        transitions=[
            Transition(0.0, "vm-b", "Starting", "host-1"),
            Transition(0.0, "vm-a", "Running", "host-1"),
            Transition(5.0, "vm-b", "Running", "host-1"),
            Transition(120.0, "vm-a", "Unknown", "host-1"),
            Transition(130.0, "vm-a", "Recovering", None),
            Transition(135.0, "vm-a", "Starting", "host-2"),
            Transition(140.0, "vm-a", "Running", "host-2"),
            Transition(300.0, "vm-b", "Stopped", None),
            Transition(310.0, "vm-b", "SomeFutureState", "host-2"),  # unknown states still draw
        ],
        runs=[Run("vm-a", "host-1", 0.0, 120.0, "initial"), Run("vm-a", "host-2", 140.0, None, "ha")],
        faults=[FaultMark(120.0, "power_off", "host-1")],
        vm_table=[{"name": "vm-a"}, {"name": "vm-b"}, {"name": "vm-c"}],  # vm-c never changed
    )
    path = tmp_path / "timeline.png"
    drawn = plot_timeline(result, str(path))
    _assert_png(path)
    assert drawn.rows == ("vm-a", "vm-b", "vm-c")  # by name, the first on top; vm-c has a row
    assert [(b.vm, b.start, b.end, b.state, b.host) for b in drawn.bars] == [
        ("vm-a", 0.0, 120.0, "Running", "host-1"),
        ("vm-a", 120.0, 130.0, "Unknown", "host-1"),
        ("vm-a", 130.0, 135.0, "Recovering", None),
        ("vm-a", 135.0, 140.0, "Starting", "host-2"),
        ("vm-a", 140.0, 600.0, "Running", "host-2"),
        ("vm-b", 0.0, 5.0, "Starting", "host-1"),
        ("vm-b", 5.0, 300.0, "Running", "host-1"),
        ("vm-b", 300.0, 310.0, "Stopped", None),
        ("vm-b", 310.0, 600.0, "SomeFutureState", "host-2"),
    ]
    assert drawn.bars[-1].colour == OTHER_COLOUR  # an unknown state is drawn, not hidden
    assert {b.colour for b in drawn.bars if b.state == "Running"} == {STATE_COLOURS["Running"]}
    assert drawn.runs == ((0, 0.0, 120.0), (0, 140.0, 600.0))  # the ground truth under vm-a
    assert drawn.faults == ((120.0, "power_off host-1"),)


def test_timeline_of_a_run_without_transitions(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    drawn = plot_timeline(RunResult(scenario="nothing happened", seed=0, profile="fast", duration_s=60.0),
                          str(path))
    _assert_png(path)
    assert drawn.rows == () and drawn.bars == () and drawn.runs == () and drawn.faults == ()
