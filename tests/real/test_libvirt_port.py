"""The libvirt hypervisor port against libvirt's test driver, one ``test:///`` file per host.

Each connection to a ``test:///path.xml`` URI has its own state, so two ports are two
independent hosts. The test driver has lifecycle events and crash injection (a core dump
with VIR_DUMP_CRASH), but neither keepalive nor migration.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.inventory import VmDef
from actors.messages import GuestStopped, HvDone
from actors.states import StopReason
from real.domain import GuestTemplate, domain_xml, pool_of
from real.libvirt_port import LibvirtHypervisor, shutoff_reason, stopped_reason

VM1 = VmDef("vm-1", 1, 32, "nfs-1", True, "Cluster-1")
VM2 = VmDef("vm-2", 1, 32, "local-1", False, "Cluster-1")
EMPTY_NODE = "<node>\n</node>\n"


class Host:
    """A port on its own test:/// file, with everything it delivered kept in a queue."""

    def __init__(self, tmp: Path, name: str, node_xml: str = EMPTY_NODE, **kw: object) -> None:
        path = tmp / f"{name}.xml"
        path.write_text(node_xml)
        self.got: queue.Queue[object] = queue.Queue()
        self.logs: list[str] = []
        self.port = LibvirtHypervisor(name, f"test://{path}", self.got.put, GuestTemplate(kind="test"),
                                      log=self.logs.append, refresh_s=0.2, **kw)  # type: ignore[arg-type]
        self.port.open()

    def next(self, kind: type, timeout_s: float = 5.0) -> object:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                msg = self.got.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(msg, kind):
                return msg
        raise AssertionError(f"no {kind.__name__} within {timeout_s} s")

    def quiet(self, seconds: float) -> list[object]:
        time.sleep(seconds)
        out = []
        while not self.got.empty():
            out.append(self.got.get())
        return out


def wait(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def host(tmp_path: Path):
    h = Host(tmp_path, "host-1")
    assert h.port.ready.wait(5)
    yield h
    h.port.close()


def test_domain_xml_carries_the_pool() -> None:
    xml = domain_xml(VM1, GuestTemplate(kind="qemu"))
    assert pool_of(xml) == "nfs-1"
    assert '<domain type="qemu">' in xml and "<on_crash>destroy</on_crash>" in xml
    assert pool_of("<domain><name>foreign</name></domain>") is None
    assert pool_of("not xml") is None


def test_event_meanings() -> None:
    import libvirt

    assert stopped_reason(libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED) is StopReason.CRASHED
    assert stopped_reason(libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED) is StopReason.CRASHED
    assert stopped_reason(libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED) is StopReason.MIGRATED
    assert stopped_reason(libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED) is StopReason.DESTROYED
    assert stopped_reason(libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED) is StopReason.DESTROYED
    assert stopped_reason(libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN) is StopReason.SHUTDOWN
    assert not stopped_reason(libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN).is_failure
    assert shutoff_reason(libvirt.VIR_DOMAIN_SHUTOFF_DAEMON) is StopReason.CRASHED
    assert shutoff_reason(libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED) is StopReason.MIGRATED


def test_start_then_running_lists_vm_and_pool(host: Host) -> None:
    host.port.start(VM1, 7, "user")
    done = host.next(HvDone)
    assert done == HvDone(7, True)
    assert host.port.running() == {"vm-1": "nfs-1"}
    host.port.start(VM1, 8, "ha")  # already running: fine, nothing twice
    assert host.next(HvDone) == HvDone(8, True)
    assert host.port.running() == {"vm-1": "nfs-1"}


def test_crash_is_reported_once_as_a_failure(host: Host) -> None:
    host.port.start(VM1, 1, "user")
    host.next(HvDone)
    host.port.crash("vm-1")
    stopped = host.next(GuestStopped)
    assert stopped == GuestStopped("vm-1", StopReason.CRASHED)
    assert stopped.reason.is_failure  # type: ignore[attr-defined]
    assert host.port.running() == {}
    later = host.quiet(0.6)  # several listings later: no second report
    assert not [m for m in later if isinstance(m, GuestStopped)]


def test_deliberate_stops_are_no_failures(host: Host) -> None:
    host.port.start(VM1, 1, "user")
    host.port.start(VM2, 2, "user")
    assert {host.next(HvDone), host.next(HvDone)} == {HvDone(1, True), HvDone(2, True)}
    host.port.stop("vm-1", 3, force=False)
    assert host.next(HvDone) == HvDone(3, True)
    host.port.stop("vm-2", 4, force=True)
    assert host.next(HvDone) == HvDone(4, True)
    assert host.port.running() == {}
    later = host.quiet(0.6)
    assert not [m for m in later if isinstance(m, GuestStopped) and m.reason.is_failure]
    host.port.stop("vm-2", 5, force=True)  # stopping a stopped guest succeeds
    assert host.next(HvDone) == HvDone(5, True)


def test_restart_after_crash_on_the_same_host(host: Host) -> None:
    host.port.start(VM1, 1, "user")
    host.next(HvDone)
    host.port.crash("vm-1")
    host.next(GuestStopped)
    host.port.start(VM1, 2, "ha")
    assert host.next(HvDone) == HvDone(2, True)
    assert host.port.running() == {"vm-1": "nfs-1"}


def test_hosts_are_independent(tmp_path: Path) -> None:
    a, b = Host(tmp_path, "host-a"), Host(tmp_path, "host-b")
    try:
        assert a.port.ready.wait(5) and b.port.ready.wait(5)
        a.port.start(VM1, 1, "user")
        a.next(HvDone)
        assert a.port.running() == {"vm-1": "nfs-1"}
        assert b.port.running() == {}
    finally:
        a.port.close()
        b.port.close()


def test_migration_failure_is_reported(tmp_path: Path) -> None:
    h = Host(tmp_path, "host-1", migration_target=lambda dest: (f"test://{tmp_path}/{dest}.xml", ""))
    try:
        assert h.port.ready.wait(5)
        h.port.start(VM1, 1, "user")
        h.next(HvDone)
        h.port.migrate("vm-1", "host-2", 2)
        done = h.next(HvDone)
        assert isinstance(done, HvDone) and done.token == 2 and not done.ok
        assert h.port.running() == {"vm-1": "nfs-1"}  # a failed migration leaves it where it was
    finally:
        h.port.close()


def test_guests_found_running_at_connect(tmp_path: Path) -> None:
    xml = domain_xml(VM1, GuestTemplate(kind="test"))
    node = f"<node>{xml}</node>"
    h = Host(tmp_path, "host-1", node_xml=node)
    try:
        assert h.port.ready.wait(5)
        assert h.port.running() == {"vm-1": "nfs-1"}  # test driver domains in a node file run
        h.port.crash("vm-1")
        assert h.next(GuestStopped) == GuestStopped("vm-1", StopReason.CRASHED)
    finally:
        h.port.close()


def test_unreachable_daemon_fails_operations_but_answers(tmp_path: Path) -> None:
    got: queue.Queue[object] = queue.Queue()
    port = LibvirtHypervisor("host-x", "qemu+unix:///system?socket=/nonexistent/sock", got.put,
                             GuestTemplate(kind="test"), connect_wait_s=0.3)
    port.open()
    try:
        assert port.running() == {}
        port.start(VM1, 9, "user")
        done = got.get(timeout=5)
        assert isinstance(done, HvDone) and not done.ok and "not reachable" in done.error
        assert not port.ready.is_set()
    finally:
        port.close()


def test_answering_follows_the_daemon(host: Host, tmp_path: Path) -> None:
    assert host.port.answering()
    host.port.close()
    time.sleep(0.1)
    assert not host.port.answering()  # closed: what it last said proves nothing


def test_fence_kills_the_pools_guests_and_reports_them(host: Host) -> None:
    host.port.start(VM1, 1, "user")
    host.port.start(VM2, 2, "user")
    host.next(HvDone)
    host.next(HvDone)
    host.port.fence("nfs-1")
    assert host.next(GuestStopped) == GuestStopped("vm-1", StopReason.FENCED)
    assert host.port.running() == {"vm-2": "local-1"}  # other pools untouched
    later = host.quiet(0.6)
    assert not [m for m in later if isinstance(m, GuestStopped)]  # reported once
