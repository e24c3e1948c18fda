"""The management node's durable HA state, in SQLite (the embedded default).

What must survive a restart of the management node, because no host keeps it: the
cluster inventory, each VM's HA level and "do not restart" flag, each VM's last known
state and host, the HA settings users changed, and the hosts in maintenance. User
commands are written here before they reach the manager (the API layer), VM state
changes as the VM actors publish them. On restart ``restore`` (the rule in ``actors.durable``,
shared with the simulator) turns this back into the ``Inventory`` and ``HaConfig`` the HA
manager starts from.

One writer (the management shell) and short transactions: SQLite in WAL mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from actors.config import HaConfig
from actors.durable import Change, DurableState, VmRecord, restore
from actors.inventory import HostInfo, Inventory, PoolInfo, VmDef, VmInit
from actors.states import HaLevel, Network, VmState

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vm (
    name TEXT PRIMARY KEY,
    level TEXT,
    no_restart INTEGER,
    state TEXT,
    host TEXT,
    target TEXT,
    stop_pending INTEGER,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS maintenance (host TEXT PRIMARY KEY);
"""

BUSY_TIMEOUT_S = 0.5  # another writer holds the file: fail fast and retry, never block HA for long


def inventory_to_json(inv: Inventory) -> str:
    return json.dumps(asdict(inv), sort_keys=True)


def inventory_from_json(text: str) -> Inventory:
    raw = json.loads(text)
    hosts = tuple(
        HostInfo(h["name"], h["cluster"], h["cpu"], h["memory_mib"], tuple(h["pools"]),
                 tuple(Network(n) for n in h["networks"]), h["power_controller"], h.get("ip", ""))
        for h in raw["hosts"])
    pools = tuple(PoolInfo(p["name"], p["shared"], p.get("host")) for p in raw["pools"])
    vms = tuple(
        VmInit(VmDef(**v["vm"]), HaLevel(v["level"]), VmState(v["state"]), v["host"],
               v.get("no_restart", False))
        for v in raw["vms"])
    return Inventory(hosts, pools, vms)


class StoreError(Exception):
    """A state file the manager must not start on: one line saying what to do."""


def check_state_file(path: str, cluster_id: str, init: bool) -> str:
    """Before a manager starts on ``path``: it exists unless ``init`` (which makes it, with
    ``cluster_id``), it passes SQLite's quick check, and it is this cluster's. A mistyped
    path must not start a manager that has forgotten every HA level, no-restart flag and
    maintenance; a damaged file must stop it with what to do, not loop. Returns a line
    for the log."""
    exists = os.path.exists(path)
    if init and exists:
        raise StoreError(f"{path}: exists; --init-state only makes a new state file (drop the flag)")
    if not init and not exists:
        raise StoreError(f"{path}: no state file. A new cluster starts once with --init-state; a wrong path "
                         "would forget every HA level, no-restart flag and maintenance")
    restore = (f"restore it from a backup (sqlite3 {path} .backup is how to make one), or move it "
               "away and start with --init-state")
    try:
        store = Store(path)
        try:
            check = store.db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"{path}: damaged ({check}); {restore}")
            row = store.db.execute("SELECT value FROM meta WHERE key = 'cluster_id'").fetchone()
            if init or row is None:  # new, or written before state files named their cluster
                store._meta("cluster_id", cluster_id)
                return f"state file {path} {'created' if init else 'adopted'} for cluster {cluster_id!r}"
            if row[0] != cluster_id:
                raise StoreError(f"{path}: the state of cluster {row[0]!r}, but the cluster file is "
                                 f"{cluster_id!r} (its name); give the right --state or cluster file")
            return f"state file {path}: cluster {cluster_id!r}, quick check ok"
        finally:
            store.close()
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path}: not a usable state file ({err}); {restore}") from None
    except OSError as err:
        raise StoreError(f"{path}: cannot open the state file: {err.strerror or err}") from None


class Store:
    """The durable record in SQLite: one writer (the management shell, which holds the
    state file's lock), WAL mode, every change one short transaction. A write that
    fails raises ``sqlite3.Error`` or ``OSError`` and leaves the file as it was; the
    caller keeps the change and retries (``real.management``)."""

    def __init__(self, path: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                  timeout=busy_timeout_s)
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.skipped: list[str] = []  # what the last load left out, one line each

    def close(self) -> None:
        self.db.close()

    # -- inventory --------------------------------------------------------------------------

    def save_inventory(self, inv: Inventory) -> None:
        self._meta("inventory", inventory_to_json(inv))

    def load_inventory(self) -> Inventory | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'inventory'").fetchone()
        return inventory_from_json(row[0]) if row else None

    def _meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- the durable record -----------------------------------------------------------------

    def commit(self, changes: Sequence[Change]) -> None:
        """Write ``changes`` in one transaction: all of them land, or none does."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            for change in changes:
                self._write(change, now)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back by itself
                    db.execute("ROLLBACK")
            raise

    def _write(self, change: Change, now: float) -> None:
        by_vm: dict[str, dict[str, Any]] = {}
        for vm, name, value in change.vm:
            by_vm.setdefault(vm, {})[name] = _column(value)
        for vm, cols in by_vm.items():
            names = ", ".join(cols)
            marks = ", ".join("?" for _ in cols)
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols)
            self.db.execute(
                f"INSERT INTO vm(name, {names}, updated) VALUES (?, {marks}, ?) "
                f"ON CONFLICT(name) DO UPDATE SET {updates}, updated = excluded.updated",
                (vm, *cols.values(), now))
        for key, value in change.config:
            self.db.execute("INSERT INTO config(key, value) VALUES (?, ?) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))
        for host, on in change.maintenance:
            if on:
                self.db.execute("INSERT OR IGNORE INTO maintenance(host) VALUES (?)", (host,))
            else:
                self.db.execute("DELETE FROM maintenance WHERE host = ?", (host,))

    def load(self) -> DurableState:
        """The record as it was last committed. A value that does not parse is left out
        (the inventory's or cluster file's declaration stands) and named in ``skipped``,
        which the manager logs: a damaged row must not keep the manager from starting."""
        state = DurableState()
        self.skipped = []
        rows = self.db.execute("SELECT name, level, no_restart, state, host, target, stop_pending FROM vm")
        for name, level, no_restart, vm_state, host, target, stop_pending in rows.fetchall():
            state.vms[name] = VmRecord(
                level=HaLevel(level) if level in LEVELS else None,
                no_restart=bool(no_restart) if no_restart is not None else None,
                state=VmState(vm_state) if vm_state in STATES else None,
                host=host if isinstance(host, str) else None,
                target=target if isinstance(target, str) else None,
                stop_pending=bool(stop_pending))
        for key, text in self.db.execute("SELECT key, value FROM config"):
            try:
                value = json.loads(text)
                HaConfig().with_key(key, value)
            except (ValueError, TypeError) as err:  # ConfigError is a ValueError
                self.skipped.append(f"stored setting {key!r} ignored: {err}")
                continue
            state.config[key] = value
        state.maintenance = {r[0] for r in self.db.execute("SELECT host FROM maintenance")}
        return state

    def restore(self, inv: Inventory, config: HaConfig) -> tuple[Inventory, HaConfig, frozenset[str]]:
        """The inventory, config and maintenance set to start the manager from: the rule
        both runtimes share (``actors.durable.restore``) applied to what is stored."""
        return restore(inv, config, self.load())


LEVELS = frozenset(level.value for level in HaLevel)
STATES = frozenset(state.value for state in VmState)


def _column(value: Any) -> Any:
    """A VmRecord field as SQLite stores it."""
    if isinstance(value, HaLevel | VmState):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value
