"""The management node's durable HA state, in SQLite (the embedded default).

What must survive a restart of the management node, because no host keeps it: the
cluster inventory, each VM's HA level and "do not restart" flag, each VM's last known
state and host, the HA settings users changed, and the hosts in maintenance. User
commands are written here before they reach the manager (the API layer), VM state
changes as the VM actors publish them. On restart ``restore`` turns this back into the
``Inventory`` and ``HaConfig`` the HA manager starts from.

One writer (the management shell) and short transactions: SQLite in WAL mode.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, replace
from typing import Any

from actors.config import HaConfig
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

# States in which a guest may be executing: a restarted manager starts such a VM's actor
# as Running on its last host and lets the ping cross-check find out.
MAY_RUN = frozenset({VmState.RUNNING, VmState.STARTING, VmState.STOPPING, VmState.UNKNOWN,
                     VmState.MIGRATING, VmState.RECOVERING})


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
    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

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

    # -- intents and views ------------------------------------------------------------------

    def _vm(self, name: str, **cols: Any) -> None:
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols)
        self.db.execute(
            f"INSERT INTO vm(name, {names}, updated) VALUES (?, {marks}, ?) "
            f"ON CONFLICT(name) DO UPDATE SET {updates}, updated = excluded.updated",
            (name, *cols.values(), time.time()))

    def set_level(self, vm: str, level: HaLevel) -> None:
        self._vm(vm, level=level.value)

    def set_no_restart(self, vm: str, flag: bool) -> None:
        self._vm(vm, no_restart=int(flag))

    def set_stop_pending(self, vm: str, flag: bool) -> None:
        self._vm(vm, stop_pending=int(flag))

    def save_view(self, vm: str, state: VmState, host: str | None, target: str | None = None) -> None:
        cols: dict[str, Any] = {"state": state.value, "target": target}
        if host is not None:
            cols["host"] = host  # a stopped VM keeps its last host as its home
        if state is VmState.STOPPED:
            cols["stop_pending"] = 0
        self._vm(vm, **cols)

    def vm_rows(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT name, level, no_restart, state, host, target, stop_pending FROM vm")
        return {r[0]: {"level": r[1], "no_restart": r[2], "state": r[3], "host": r[4], "target": r[5],
                       "stop_pending": r[6]} for r in rows.fetchall()}

    def set_config(self, key: str, value: Any) -> None:
        self.db.execute("INSERT INTO config(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))

    def config_overrides(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM config")}

    def set_maintenance(self, host: str, on: bool) -> None:
        if on:
            self.db.execute("INSERT OR IGNORE INTO maintenance(host) VALUES (?)", (host,))
        else:
            self.db.execute("DELETE FROM maintenance WHERE host = ?", (host,))

    def maintenance(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT host FROM maintenance")}

    # -- restart ----------------------------------------------------------------------------

    def restore(self, inv: Inventory, config: HaConfig) -> tuple[Inventory, HaConfig, set[str]]:
        """The inventory and config to start the manager from: the given ones with every
        stored intent, view and setting applied."""
        rows = self.vm_rows()
        vms = []
        hosts = {h.name for h in inv.hosts}
        for init in inv.vms:
            row = rows.get(init.vm.name)
            if row is None:
                vms.append(init)
                continue
            level = HaLevel(row["level"]) if row["level"] else init.level
            no_restart = bool(row["no_restart"]) if row["no_restart"] is not None else init.no_restart
            state, host = init.state, init.host
            if row["state"]:
                state = VmState.RUNNING if VmState(row["state"]) in MAY_RUN else VmState.STOPPED
            if row["host"] in hosts:
                host = row["host"]
            also_on = (row["target"],) if row["target"] in hosts and row["target"] != host else ()
            vms.append(replace(init, level=level, no_restart=no_restart, state=state, host=host,
                               stop_pending=bool(row["stop_pending"]) and state is VmState.RUNNING,
                               also_on=also_on))
        for key, value in self.config_overrides().items():
            config = config.with_key(key, value)
        return replace(inv, vms=tuple(vms)), config, self.maintenance() & hosts
