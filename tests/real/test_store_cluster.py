"""The SQLite store, the cluster file, power controllers and the CLI's status table."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from actors.config import HaConfig
from actors.durable import Change, command_change, view_change
from actors.messages import UserMaintenance, UserSetConfig, UserSetHa, UserStopVm, VmViewChanged
from actors.states import HaLevel, Strategy, VmState
from real.cli import format_status
from real.cluster import ClusterError, parse_cluster
from real.heartbeat import RecordError, encode_record, read_record, reading, record_path, write_record
from real.keys import keygen, load_key
from real.management import config_value
from real.power import CommandController, PidfileController, parse_ipmi, pidfile_line
from real.store import Store, inventory_from_json, inventory_to_json

CLUSTER = """
profile = "tuned"
[ha]
strategy = "Force"
"ha.host.check.interval" = "3s"
[[storage]]
name = "nfs-1"
type = "NFS"
[[storage]]
name = "local-1"
type = "LocalStorage"
host = "host-1"
[[host]]
name = "host-1"
cpu = 4
memory = "4GiB"
storage = ["nfs-1", "local-1"]
ip = "10.0.0.1"
[[host]]
name = "host-2"
cpu = 4
memory = "4GiB"
storage = ["nfs-1"]
[[vm]]
name = "vm-1"
cpu = 1
memory = "512MiB"
host = "host-1"
storage = "nfs-1"
ha = "NeverStop"
[[vm]]
name = "vm-2"
cpu = 1
memory = "512MiB"
host = "host-1"
storage = "local-1"
[real]
state = "/tmp/x.db"
guest = "qemu"
migration_stream = "tcp://{ip}"
[real.mounts]
nfs-1 = "/mnt/nfs-1"
[real.power.host-1]
type = "ipmi"
address = "192.0.2.10"
user = "admin"
password_file = "/etc/neverstop/ipmi"
"""


def test_cluster_file_reuses_the_scenario_tables() -> None:
    c = parse_cluster(CLUSTER, "c.toml")
    assert c.config.strategy is Strategy.FORCE and c.config.host_check_interval_s == 3.0
    assert c.config.ping_interval_s == 2.0  # the tuned profile underneath
    assert [h.name for h in c.inventory.hosts] == ["host-1", "host-2"]
    # host-2 has no power controller configured: HA must not wait for one
    assert [h.power_controller for h in c.inventory.hosts] == [True, False]
    assert c.settings.guest == "qemu" and c.settings.mounts == {"nfs-1": "/mnt/nfs-1"}
    assert c.settings.power_for("host-1").type == "ipmi"
    assert c.settings.template().kind == "qemu"


@pytest.mark.parametrize("extra, message", [
    ('[[event]]\nat = "1s"\naction = "power-off"\ntarget = "host-1"\n', "event"),
    ('[real.power.host-9]\ntype = "none"\n', "unknown host"),
    ('[real.power.host-2]\ntype = "ipmi"\n', "needs 'address'"),
    ('[real.mounts]\nnfs-9 = "/x"\n', None),  # a second [real.mounts] table: invalid TOML
])
def test_cluster_file_errors_are_one_line(extra: str, message: str | None) -> None:
    with pytest.raises(ClusterError) as err:
        parse_cluster(CLUSTER + extra, "c.toml")
    assert "\n" not in str(err.value) and str(err.value).startswith("c.toml")
    if message:
        assert message in str(err.value)


def test_bad_scenario_tables_are_reported_by_the_scenario_parser() -> None:
    with pytest.raises(ClusterError, match=r"vm\[1\]\.host"):
        parse_cluster(CLUSTER.replace('host = "host-1"\nstorage = "nfs-1"',
                                      'host = "host-9"\nstorage = "nfs-1"'))


def test_store_restores_intents_and_views(tmp_path: Path) -> None:
    c = parse_cluster(CLUSTER)
    store = Store(str(tmp_path / "state.db"))
    store.save_inventory(c.inventory)
    store.commit([command_change(UserSetHa("vm-2", HaLevel.NEVER_STOP)),
                  command_change(UserStopVm("vm-1", no_restart=True))])
    store.commit([view_change(VmViewChanged("vm-1", VmState.STOPPED, None)),
                  view_change(VmViewChanged("vm-2", VmState.MIGRATING, "host-1", "host-2")),
                  command_change(UserSetConfig("ha.strategy", Strategy.PERMISSIVE)),
                  command_change(UserMaintenance("host-2", True))])
    store.close()

    again = Store(str(tmp_path / "state.db"))
    inv, config, maintenance = again.restore(c.inventory, c.config)
    vm1, vm2 = inv.vms
    assert (vm1.state, vm1.host, vm1.no_restart, vm1.stop_pending) == (VmState.STOPPED, "host-1", True, False)
    # not Stopped: back as Unknown, to be asked on its host and on the migration's target
    assert (vm2.level, vm2.state, vm2.host, vm2.also_on) == (HaLevel.NEVER_STOP, VmState.UNKNOWN, "host-1",
                                                              ("host-2",))
    assert config.strategy is Strategy.PERMISSIVE and config.host_check_interval_s == 3.0
    assert maintenance == {"host-2"}
    assert inventory_from_json(inventory_to_json(c.inventory)) == c.inventory
    assert again.load_inventory() == c.inventory


def test_store_without_history_changes_nothing(tmp_path: Path) -> None:
    c = parse_cluster(CLUSTER)
    inv, config, maintenance = Store(str(tmp_path / "s.db")).restore(c.inventory, c.config)
    assert inv == c.inventory and config == c.config and maintenance == set()


def test_a_failed_commit_writes_nothing_and_a_damaged_row_is_skipped(tmp_path: Path) -> None:
    c = parse_cluster(CLUSTER)
    store = Store(str(tmp_path / "state.db"))
    stop = command_change(UserStopVm("vm-1", no_restart=True))
    with pytest.raises(sqlite3.Error):
        store.commit([stop, Change(vm=(("vm-2", "level", object()),))])  # the second cannot be bound
    assert store.load().vms == {}  # all or nothing
    store.commit([stop])
    store.db.execute("INSERT INTO config(key, value) VALUES ('ha.strategy', '\"Sideways\"')")
    store.db.execute("UPDATE vm SET state = 'Flying' WHERE name = 'vm-1'")
    durable = store.load()
    assert durable.record("vm-1").stop_pending and durable.record("vm-1").state is None
    assert durable.config == {} and "ha.strategy" in store.skipped[0]
    inv, config, _ = store.restore(c.inventory, c.config)
    assert inv.vms[0].state is VmState.UNKNOWN and inv.vms[0].stop_pending  # pending stop kept
    assert config.strategy is Strategy.FORCE


def test_config_values_from_the_command_line() -> None:
    assert config_value("host.ping.interval", "2s") == 2.0
    assert config_value("ha.enable", "false") is False
    assert config_value("ha.host.check.maxAttempts", "4") == 4
    assert config_value("ha.strategy", "Force") == "Force"
    assert HaConfig().with_key("ha.strategy", config_value("ha.strategy", "Force")).strategy is Strategy.FORCE


def test_power_controllers(tmp_path: Path) -> None:
    assert parse_ipmi("Chassis Power is on\n") is True
    assert parse_ipmi("Chassis Power is off") is False
    assert parse_ipmi("Error: Unable to establish IPMI v2 / RMCP+ session") is None
    pidfile = tmp_path / "{host}.pid"
    (tmp_path / "h1.pid").write_text(pidfile_line(os.getpid()))
    (tmp_path / "h2.pid").write_text("999999999 1\n")
    ctl = PidfileController(str(pidfile))
    assert ctl.powered_on("h1") is True
    assert ctl.powered_on("h2") is False
    assert ctl.powered_on("h3") is False  # no pid file: the lab's host is gone
    assert CommandController(("true",)).powered_on("h") is True
    assert CommandController(("false",)).powered_on("h") is False
    assert CommandController(("sh", "-c", "exit 3")).powered_on("h") is None


def test_heartbeat_records_are_signed_and_checked(tmp_path: Path) -> None:
    cluster_key = str(tmp_path / "cluster.key")
    keygen(cluster_key)
    key = load_key(cluster_key)
    me, other, public = key.host("host-1"), key.host("host-2"), key.manager().public
    mount = str(tmp_path)
    assert reading(mount, "host-1", public) == (-1, None)  # never written
    write_record(mount, "host-1", encode_record(me, 5, 41, 3))
    write_record(mount, "host-1", encode_record(me, 6, 7))  # a restarted agent counts from the start
    assert reading(mount, "host-1", public) == (7, None)  # and an unarmed write overwrites the revision
    write_record(mount, "host-1", encode_record(me, 6, 8, 12))
    assert reading(mount, "host-1", public) == (8, 12)  # armed under config revision 12
    path = record_path(mount, "host-1")
    good = Path(path).read_bytes()
    forged = good.replace(b" 8 12 ", b" 9 13 ")
    assert forged != good
    for bad in (forged, b"41 3", b"garbage", b"", encode_record(other, 1, 50, 12)):
        Path(path).write_bytes(bad)
        assert reading(mount, "host-1", public) is None, bad
    stranger = load_key(keygen(str(tmp_path / "stranger.key"))).host("host-1")  # another cluster's key
    Path(path).write_bytes(encode_record(stranger, 1, 50, 12))
    assert reading(mount, "host-1", public) is None


def test_heartbeat_files_are_never_followed_through_a_symlink(tmp_path: Path) -> None:
    key = load_key(keygen(str(tmp_path / "cluster.key")))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    mount = tmp_path / "pool"
    (mount / ".neverstop" / "heartbeat").mkdir(parents=True)
    os.symlink(victim, record_path(str(mount), "host-1"))
    with pytest.raises(OSError):
        write_record(str(mount), "host-1", encode_record(key.host("host-1"), 1, 1))
    assert victim.read_text() == "precious\n"
    other = tmp_path / "pool2"
    other.mkdir()
    os.symlink(tmp_path, other / ".neverstop")  # a planted directory link
    with pytest.raises(OSError):
        write_record(str(other), "host-1", encode_record(key.host("host-1"), 1, 1))
    assert not (tmp_path / "heartbeat").exists()
    os.mkfifo(record_path(str(mount), "host-2"))  # a reader must not block on a FIFO
    with pytest.raises(RecordError):
        read_record(str(mount), "host-2")


def test_status_table() -> None:
    data = {
        "vms": [{"name": "vm-1", "cpu": 1, "memory_mib": 512, "ip": "", "host": "host-1",
                 "host_ip": "10.0.0.1", "cluster": "Cluster-1", "state": "Running", "ha": "NeverStop",
                 "no_restart": False}],
        "hosts": [{"name": "host-1", "ip": "10.0.0.1", "cluster": "Cluster-1", "status": "Connected",
                   "maintenance": True, "agent": "up"}],
    }
    text = format_status(data)
    assert "vm-1" in text and "10.0.0.1" in text and "Connected, maintenance" in text
    assert "HA level" in text


def test_shipped_example_cluster_file_loads() -> None:
    from real.cluster import load_cluster

    example = Path(__file__).parent.parent.parent / "deploy" / "cluster.example.toml"
    c = parse_cluster(example.read_text(), str(example))  # its password files live on a real manager
    assert all(h.power_controller for h in c.inventory.hosts)
    assert c.settings.mounts == {"nfs-1": "/mnt/nfs-1"}
    with pytest.raises(ClusterError, match="ipmi-kvm1: No such file"):
        load_cluster(example)


BARE = CLUSTER[:CLUSTER.index("[real]")]  # no [real] table: no power controller files
IPMI = """
[real.power.host-1]
type = "ipmi"
address = "10.0.0.101"
user = "admin"
password_file = "{password}"
"""


def test_a_cluster_file_others_could_change_is_refused(tmp_path: Path) -> None:
    from real.cluster import load_cluster

    path = tmp_path / "cluster.toml"
    path.write_text(BARE)
    path.chmod(0o644)
    assert load_cluster(path).inventory.hosts
    for mode in (0o664, 0o646):
        path.chmod(mode)
        with pytest.raises(ClusterError, match=r"writable by group or others .*chmod go-w"):
            load_cluster(path)
    path.chmod(0o644)
    os.chown(path, 65534, 65534)  # nobody's
    with pytest.raises(ClusterError, match="owned by uid 65534, not root"):
        load_cluster(path)


def test_ipmi_password_files_and_interfaces_are_checked(tmp_path: Path) -> None:
    from real.cluster import load_cluster

    password = tmp_path / "ipmi"
    password.write_text("secret\n")
    path = tmp_path / "cluster.toml"
    path.write_text(BARE + IPMI.format(password=password))
    password.chmod(0o640)
    assert load_cluster(path).settings.power_for("host-1").password_file == str(password)
    password.chmod(0o644)
    with pytest.raises(ClusterError, match=r"password_file: .*readable by others .*chmod o-rwx"):
        load_cluster(path)
    with pytest.raises(ClusterError, match="'lan' .* in the clear: use lanplus"):
        parse_cluster(BARE + IPMI.format(password=password) + 'interface = "lan"\n')


@pytest.mark.parametrize("template, message", [
    ("qemu+tls://{address}/system", "only {ip} and {host}"),
    ("qemu+tls://{ip/system", "bad template"),
    ("qemu+tls://{0}/system", "bad template"),
    ("{ip}", "not a URI template"),
])
def test_a_migration_template_is_checked_when_the_file_is_loaded(template: str, message: str) -> None:
    with pytest.raises(ClusterError, match=re.escape(message)):
        parse_cluster(BARE + f'[real]\nmigration_uri = "{template}"\n')


def test_cli_groups_are_registered(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from neverstop.cli import main

    key = keygen(str(tmp_path / "cluster.key"))
    assert main(["real", "status", "--socket", "/nonexistent/neverstop.sock", "--key", key]) == 2
    assert "cannot reach the manager" in capsys.readouterr().err
    assert main(["real", "status", "--socket", "/nonexistent/neverstop.sock", "--key", key + ".x"]) == 2
    assert "cluster.key.x: no such key file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["lab", "--help"])
