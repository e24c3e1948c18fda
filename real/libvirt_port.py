"""The host agent's ``HypervisorPort`` on libvirt.

Calls return at once: each operation runs in a worker thread and its outcome comes back
through ``deliver`` (a ``real.bridge.Mailbox`` post) as ``HvDone``; guests that stop on
their own come back as ``GuestStopped`` with the meaning HA needs (a crash or a qemu death
is a failure; a shutdown, destroy, save or migration is not).

``running()`` must answer at once too, and must not lie when libvirtd hangs or dies: it
is a cache of the active neverstop guests, kept by one state thread from lifecycle events
and a periodic listing. A guest leaves the cache exactly once, and whoever removes it
reports it, so a crash seen by both an event and a listing is reported once. While the
daemon is unreachable the cache keeps its last contents: qemu runs on without libvirtd,
so a dead daemon says nothing about the guests.

Liveness of the daemon: keepalive (``setKeepAlive``) plus a close callback; a lost
connection is reopened in the background. The test driver has no keepalive and no
migration; this module works with it for everything else.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import libvirt

from actors.inventory import VmDef
from actors.messages import GuestStopped, HvDone
from actors.states import StopReason
from real.domain import GuestTemplate, domain_xml, pool_of
from real.qemu import QEMU_PID_DIR, kill_qemu
from real.watchdog import boot_id as kernel_boot_id

Deliver = Callable[[object], None]
Log = Callable[[str], None]
# dest host -> (libvirt URI of its daemon, URI for qemu's migration stream or "")
MigrationTarget = Callable[[str], tuple[str, str]]

# lifecycle event STOPPED details, and shut-off state reasons, to what they mean for HA
_STOPPED_DETAIL = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: StopReason.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: StopReason.DESTROYED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: StopReason.MIGRATED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: StopReason.DESTROYED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: StopReason.DESTROYED,
}
_SHUTOFF_REASON = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: StopReason.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: StopReason.DESTROYED,
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: StopReason.MIGRATED,
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: StopReason.DESTROYED,
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: StopReason.DESTROYED,
}
_ACTIVE_STATES = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_BLOCKED,
                  libvirt.VIR_DOMAIN_PMSUSPENDED, libvirt.VIR_DOMAIN_SHUTDOWN)

_loop_lock = threading.Lock()
_loop_started = False


def stopped_reason(detail: int) -> StopReason:
    """What a STOPPED lifecycle event's detail means; an unknown one counts as a crash."""
    return _STOPPED_DETAIL.get(detail, StopReason.CRASHED)


def shutoff_reason(reason: int) -> StopReason:
    """What a shut-off domain's state reason means (unknown, daemon restart: a crash)."""
    return _SHUTOFF_REASON.get(reason, StopReason.CRASHED)


def start_event_loop() -> None:
    """libvirt's default event loop, once per process, in a daemon thread.

    Must run before the first connection is opened and in the process that uses it: a
    process that forks after this has a thread it cannot take along.
    """
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


@dataclass
class _Event:
    vm: str
    event: int
    detail: int


class LibvirtHypervisor:
    """A ``actors.context.HypervisorPort`` for one host's libvirtd."""

    def __init__(self, host: str, uri: str, deliver: Deliver, template: GuestTemplate,
                 migration_target: MigrationTarget | None = None, log: Log | None = None,
                 refresh_s: float = 2.0, keepalive_interval_s: int = 5, keepalive_count: int = 3,
                 shutdown_timeout_s: float = 30.0, connect_wait_s: float = 20.0,
                 qemu_pid_dir: str = QEMU_PID_DIR) -> None:
        self.host = host
        self.uri = uri
        self.deliver = deliver
        self.template = template
        self.migration_target = migration_target
        self.log = log or (lambda _text: None)
        self.refresh_s = refresh_s
        self.keepalive = (keepalive_interval_s, keepalive_count)
        self.shutdown_timeout_s = shutdown_timeout_s
        self.connect_wait_s = connect_wait_s
        self.ready = threading.Event()  # set once the first listing filled the cache
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}  # active neverstop guests: vm -> pool
        self._events: list[_Event] = []
        self._wake = threading.Condition(self._lock)
        self._conn: libvirt.virConnect | None = None
        self._conn_lost = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._last_ok = float("-inf")  # monotonic time of the last successful listing
        self._fence_epoch: dict[str, int] = {}  # pool -> fences so far
        # Guests fenced and not started here since: their stop is FENCED whoever sees it first,
        # and a listing begun before the kill does not bring them back.
        self._fencing: set[str] = set()
        # libvirt's pid files of running qemu processes (qemu:///system); "" for the test driver
        self.qemu_pid_dir = "" if uri.startswith("test:") else qemu_pid_dir

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Start the state thread, which connects (and reconnects) in the background."""
        start_event_loop()
        self._thread = threading.Thread(target=self._state_loop, name=f"libvirt-{self.host}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.connected.clear()
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    # -- the port ----------------------------------------------------------------------------

    def running(self) -> Mapping[str, str]:
        with self._lock:
            return dict(self._cache)

    def start(self, vm: VmDef, token: int, cause: str) -> None:
        self._work(f"start {vm.name}", token, lambda conn: self._start(conn, vm))

    def stop(self, vm: str, token: int, force: bool) -> None:
        self._work(f"stop {vm}", token, lambda conn: self._stop(conn, vm, force))

    def migrate(self, vm: str, dest_host: str, token: int) -> None:
        self._work(f"migrate {vm} to {dest_host}", token, lambda conn: self._migrate(conn, vm, dest_host))

    def answering(self) -> bool:
        """The daemon answered a listing lately (a hung one stops answering long before
        its keepalive closes the connection)."""
        fresh_s = max(3 * self.refresh_s, 5.0)
        return self.connected.is_set() and time.monotonic() - self._last_ok < fresh_s

    def boot_id(self) -> str:
        """The kernel's id of this boot (new after every reboot, the same across agent and
        libvirtd restarts); orders for an earlier boot are refused. "" where there is none:
        then no order is refused for its boot."""
        return kernel_boot_id()

    def fence(self, pool: str) -> None:
        """Kill every guest on ``pool`` now, by killing its qemu process (a hung libvirtd
        must not stand between the fencer and the guests), and void starts on ``pool``
        still in libvirt's hands: one that completes later is destroyed at once."""
        with self._lock:
            victims = sorted(vm for vm, p in self._cache.items() if p == pool)
            self._fence_epoch[pool] = self._fence_epoch.get(pool, 0) + 1
            self._fencing.update(victims)  # before the kill: libvirt's own event may come first
        for vm in victims:
            if not self._kill_qemu(vm):
                conn = self._conn
                try:
                    dom = self._lookup(conn, vm) if conn is not None else None
                    if dom is not None and dom.isActive():
                        dom.destroy()
                except libvirt.libvirtError as err:
                    self.log(f"{self.host}: fence of {vm} through libvirt failed: {err}")
            self._gone(vm, StopReason.FENCED)

    def _kill_qemu(self, vm: str) -> bool:
        """SIGKILL the guest's qemu, found through libvirt's pid file; False if none."""
        if not self.qemu_pid_dir:
            return False
        return kill_qemu(self.qemu_pid_dir, vm, lambda text: self.log(f"{self.host}: {text}"),
                         "fencer killed") is not None

    # -- test and lab hooks ------------------------------------------------------------------

    def crash(self, vm: str) -> None:
        """Make a guest crash the way the test driver can (a core dump with CRASH)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("libvirt is not connected")
        path = f"/tmp/neverstop-{os.getpid()}-{self.host}-{vm}.core"
        try:
            conn.lookupByName(vm).coreDump(path, libvirt.VIR_DUMP_CRASH)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)  # the test driver writes a small file; keep /tmp clean

    # -- operations (worker threads) -----------------------------------------------------------

    def _work(self, what: str, token: int, op: Callable[[libvirt.virConnect], None]) -> None:
        def run() -> None:
            if not self.connected.wait(self.connect_wait_s) or self._conn is None:
                self.deliver(HvDone(token, False, f"{what}: libvirt at {self.uri} is not reachable"))
                return
            try:
                op(self._conn)
            except libvirt.libvirtError as err:
                self.log(f"{self.host}: {what} failed: {err}")
                self.deliver(HvDone(token, False, f"{what}: {err}"))
                return
            except Exception as err:  # a bug must not leave the VM actor waiting forever
                self.log(f"{self.host}: {what} failed: {err!r}")
                self.deliver(HvDone(token, False, f"{what}: {err!r}"))
                return
            self.deliver(HvDone(token, True))

        threading.Thread(target=run, name=f"libvirt-op-{token}", daemon=True).start()

    def _lookup(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def _start(self, conn: libvirt.virConnect, vm: VmDef) -> None:
        dom = self._lookup(conn, vm.name)
        if dom is not None and dom.isActive():
            self._add(vm.name, vm.pool)
            return
        # (Re)define from the inventory: the definition may be missing here or out of date.
        uuid = dom.UUIDString() if dom is not None else ""
        with self._lock:
            epoch = self._fence_epoch.get(vm.pool, 0)
        dom = conn.defineXML(domain_xml(vm, self.template, uuid))
        dom.create()
        with self._lock:
            fenced = self._fence_epoch.get(vm.pool, 0) != epoch
        if fenced:  # the pool was fenced while libvirt held this start: it must not run
            dom.destroy()
            raise RuntimeError(f"{vm.pool} was fenced during the start of {vm.name}")
        self._add(vm.name, vm.pool)

    def _stop(self, conn: libvirt.virConnect, vm: str, force: bool) -> None:
        dom = self._lookup(conn, vm)
        if dom is None or not dom.isActive():
            self._remove(vm)
            return
        if not force:
            try:
                dom.shutdown()
            except libvirt.libvirtError as err:
                self.log(f"{self.host}: shutdown of {vm} refused ({err}); destroying it")
            deadline = time.monotonic() + self.shutdown_timeout_s
            while time.monotonic() < deadline and dom.isActive():
                time.sleep(0.2)
        if dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError:
                if dom.isActive():
                    raise
        self._remove(vm)  # before HvDone: a restart right after must not find it "running"

    def _migrate(self, conn: libvirt.virConnect, vm: str, dest_host: str) -> None:
        if self.migration_target is None:
            raise RuntimeError("no migration target configured")
        dom = self._lookup(conn, vm)
        if dom is None or not dom.isActive():
            raise RuntimeError(f"{vm} is not running on {self.host}")
        dest_uri, stream_uri = self.migration_target(dest_host)
        params: dict[str, object] = {}
        if stream_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = stream_uri
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
                 | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        dom.migrateToURI3(dest_uri, params, flags)
        self._remove(vm)

    # -- the cache ------------------------------------------------------------------------------

    def _add(self, vm: str, pool: str) -> None:
        with self._lock:
            self._cache[vm] = pool
            self._fencing.discard(vm)  # started here again: a new incarnation

    def _remove(self, vm: str) -> bool:
        with self._lock:
            return self._cache.pop(vm, None) is not None

    def _gone(self, vm: str, reason: StopReason) -> None:
        """The guest stopped: report it if this is the first we hear of it. A guest being
        fenced stopped because of the fence, whatever libvirt's event says."""
        with self._lock:
            if vm in self._fencing:
                reason = StopReason.FENCED
        if self._remove(vm):
            self.log(f"{self.host}: guest {vm} stopped ({reason.value})")
            self.deliver(GuestStopped(vm, reason))

    # -- the state thread: connection, events, listing --------------------------------------------

    def _on_lifecycle(self, _conn: object, dom: libvirt.virDomain, event: int, detail: int,
                      _opaque: object) -> None:
        """libvirt's event thread: queue and return; never call libvirt from here."""
        with self._lock:
            self._events.append(_Event(dom.name(), event, detail))
            self._wake.notify_all()

    def _on_close(self, _conn: object, reason: int, _opaque: object) -> None:
        self.connected.clear()
        with self._lock:
            self._conn_lost = True
            self._wake.notify_all()
        self.log(f"{self.host}: connection to {self.uri} closed (reason {reason})")

    def _state_loop(self) -> None:
        backoff_s = 0.5
        while not self._closing:
            if self._conn is None or self._conn_lost:
                if not self._connect():
                    time.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, 5.0)
                    continue
                backoff_s = 0.5
            with self._lock:
                if not self._events and not self._conn_lost and not self._closing:
                    self._wake.wait(self.refresh_s)
                events, self._events = self._events, []
            try:
                for ev in events:
                    self._handle(ev)
                self._refresh()
            except libvirt.libvirtError as err:
                self.log(f"{self.host}: libvirt error: {err}")
                if self._conn is not None and not self._conn.isAlive():
                    self._conn_lost = True

    def _connect(self) -> bool:
        old, self._conn = self._conn, None
        self.connected.clear()
        if old is not None:
            with contextlib.suppress(libvirt.libvirtError):
                old.close()
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as err:
            self.log(f"{self.host}: cannot connect to {self.uri}: {err}")
            return False
        # The test driver has no keepalive; a local socket needs none to see a dead daemon.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(*self.keepalive)
        conn.registerCloseCallback(self._on_close, None)
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        with self._lock:
            self._conn_lost = False
        self._conn = conn
        try:
            self._refresh()
        except libvirt.libvirtError as err:
            self.log(f"{self.host}: first listing failed: {err}")
            return False
        self.connected.set()
        if not self.ready.is_set():
            self.log(f"{self.host}: connected to {self.uri}; running: {sorted(self.running())}")
        self.ready.set()
        return True

    def _pool(self, dom: libvirt.virDomain) -> str | None:
        with self._lock:
            known = self._cache.get(dom.name())
        return known if known is not None else pool_of(dom.XMLDesc(0))

    def _handle(self, ev: _Event) -> None:
        if ev.event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            self._gone(ev.vm, stopped_reason(ev.detail))
        elif ev.event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
            self._gone(ev.vm, StopReason.CRASHED)
        elif ev.event in (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_RESUMED):
            conn = self._conn
            dom = self._lookup(conn, ev.vm) if conn is not None else None
            if dom is not None and dom.isActive():
                pool = self._pool(dom)
                if pool is not None:
                    self._add(ev.vm, pool)

    def _refresh(self) -> None:
        """Reconcile the cache with libvirt's list of active domains."""
        conn = self._conn
        if conn is None:
            return
        active: dict[str, str] = {}
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            pool = self._pool(dom)
            if pool is not None:
                active[dom.name()] = pool
        self._last_ok = time.monotonic()
        with self._lock:
            cached = dict(self._cache)
            for vm, pool in active.items():
                if vm not in self._fencing:
                    self._cache.setdefault(vm, pool)
        for vm in sorted(set(cached) - set(active)):
            dom = self._lookup(conn, vm)
            if dom is None:
                self._gone(vm, StopReason.CRASHED)  # vanished unseen: assume the worst
                continue
            state, reason = dom.state()
            if state not in _ACTIVE_STATES:
                self._gone(vm, shutoff_reason(reason) if state == libvirt.VIR_DOMAIN_SHUTOFF
                           else StopReason.CRASHED)
