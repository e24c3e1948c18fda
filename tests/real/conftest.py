"""Lab fixtures: a real three-host lab (namespaces, libvirtd, qemu) per test.

Lab tests carry the ``lab`` marker and run only when asked for (``pytest -m lab``,
``make lab``, or NEVERSTOP_LAB=1): they need root and take minutes. When they are asked
for under CI (CI=true), a lab that cannot be built fails the test instead of skipping it.
The lab is torn down after every test, also a failed one, and the test then checks that
nothing (process, link, directory, mount) is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

LAB_DIR = "/tmp/neverstop-lab-test"


def pytest_terminal_summary(terminalreporter: object) -> None:
    from real_harness import RECOVERY_TIMES

    if not RECOVERY_TIMES:
        return
    write = terminalreporter.write_line  # type: ignore[attr-defined]
    write("")
    write("measured wall-clock recovery times (real mode):")
    for what, seconds in RECOVERY_TIMES:
        write(f"  {seconds:6.1f} s  {what}")


def _lab_requested(config: pytest.Config) -> bool:
    return "lab" in (config.option.markexpr or "") or os.environ.get("NEVERSTOP_LAB") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _lab_requested(config):
        return
    keep = [i for i in items if i.get_closest_marker("lab") is None]
    dropped = [i for i in items if i.get_closest_marker("lab") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _lab(strategy: str) -> Iterator[object]:
    from real import lab as labmod

    try:
        labmod.check_platform()
    except labmod.LabError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the lab cannot run here: {err}")
        pytest.skip(f"the lab cannot run here: {err}")
    state = None
    try:
        state = labmod.up(LAB_DIR, hosts=3, strategy=strategy, log=lambda _t: None)
        yield state
    finally:
        labmod.down(LAB_DIR, log=lambda _t: None)
        left = labmod.leftovers(LAB_DIR)
        assert not left, f"the lab left things behind: {left}"


@pytest.fixture
def lab() -> Iterator[object]:
    """The lab under Permissive (the default strategy)."""
    yield from _lab("Permissive")


@pytest.fixture
def lab_force() -> Iterator[object]:
    """The lab under Force: hosts self-fence, and their watchdog daemons back the fence."""
    yield from _lab("Force")
