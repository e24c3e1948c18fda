"""The scenario reader: a good file becomes the expected dataclasses, and every kind of
mistake becomes one ScenarioError line that names the file and the place to fix."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from actors.config import PROFILES
from actors.states import HaLevel, Network, StorageType, Strategy, VmState
from formats.scenario import (
    HOST_ACTIONS,
    VM_ACTIONS,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from formats.spec import ACTIONS, ALL_NETWORKS
from formats.units import UnitError, format_duration, parse_duration, parse_memory

FULL = """\
name = "Shared storage: host power loss"
description = "The host of VM-1 loses power; VM-1 restarts on another host."
seed = 7
duration = "15m"
profile = "tuned"

[ha]
strategy = "Force"
"ha.host.check.interval" = "3s"
"host.ping.maxFailure" = 4

[[storage]]
name = "nfs-1"
type = "NFS"

[[storage]]
name = "local-2"
type = "LocalStorage"
host = "host-2"

[[host]]
name = "host-1"
cluster = "Cluster-1"
ip = "192.168.28.241"
cpu = 8
memory = "16GiB"
storage = ["nfs-1"]
networks = ["management", "storage", "business"]
power_controller = true

[[host]]
name = "host-2"
cpu = 16
memory = 32768
storage = ["nfs-1"]
power_controller = false
networks = ["management", "business"]

[[vm]]
name = "VM-1"
cpu = 1
memory = "1GiB"
ip = "192.168.0.254"
host = "host-1"
storage = "nfs-1"
ha = "NeverStop"
state = "Running"

[[vm]]
name = "VM-2"
cpu = 2
memory = "512MiB"
host = "host-2"
storage = "local-2"
state = "Stopped"

[[event]]
at = "60s"
action = "power-off"
target = "host-1"

[[event]]
at = "30s"
action = "set-config"
key = "ha.neverStopVm.scan.interval"
value = "20s"

[[event]]
at = "60s"
action = "network-down"
target = "host-2"

[[event]]
at = 5
action = "vm-stop"
target = "VM-2"
no_restart = true

[[expect]]
vm = "VM-1"
after = "60s"
states = ["Unknown", "Recovering", "Running"]
within = "5m"
final_state = "Running"
host_not = "host-1"
host = "host-2"
never = ["Stopped"]

[[expect]]
vm = "VM-2"
final_state = "Stopped"
"""


def test_full_example_parses() -> None:
    s = parse_scenario(FULL, "full.toml")
    assert (s.name, s.seed, s.duration_s, s.profile, s.path) == (
        "Shared storage: host power loss",
        7,
        900.0,
        "tuned",
        "full.toml",
    )
    assert [p.type for p in s.storage] == [StorageType.NFS, StorageType.LOCAL]
    assert s.storage[1].host == "host-2"

    h1, h2 = s.hosts
    assert (h1.cpu, h1.memory_mib, h1.ip, h1.cluster) == (8, 16384, "192.168.28.241", "Cluster-1")
    assert h1.networks == ALL_NETWORKS and h1.power_controller
    assert (h2.memory_mib, h2.ip, h2.power_controller) == (32768, "", False)
    assert h2.networks == (Network.MANAGEMENT, Network.BUSINESS)
    assert h2.storage == ("nfs-1", "local-2")  # its LocalStorage pool, added implicitly

    vm1, vm2 = s.vms
    assert (vm1.memory_mib, vm1.ha, vm1.state) == (1024, HaLevel.NEVER_STOP, VmState.RUNNING)
    assert (vm2.memory_mib, vm2.ha, vm2.state, vm2.ip) == (512, HaLevel.NONE, VmState.STOPPED, "")


def test_events_are_sorted_stably_and_typed() -> None:
    events = parse_scenario(FULL).events
    assert [(e.at_s, e.action, e.line) for e in events] == [
        (5.0, "vm-stop", 4),
        (30.0, "set-config", 2),
        (60.0, "power-off", 1),
        (60.0, "network-down", 3),
    ]
    stop, config, power, net = events
    assert stop.args == {"no_restart": True} and stop.target == "VM-2"
    assert config.target is None
    assert config.args == {"key": "ha.neverStopVm.scan.interval", "value": 20.0}
    assert power.args == {} and power.target == "host-1"
    assert net.args == {"network": "all", "direction": "both"}


def test_ha_overrides_apply_to_the_profile() -> None:
    s = parse_scenario(FULL)
    assert s.ha_overrides == {
        "ha.strategy": Strategy.FORCE,
        "ha.host.check.interval": 3.0,
        "host.ping.maxFailure": 4,
    }
    tuned = PROFILES["tuned"]
    assert s.config.strategy is Strategy.FORCE
    assert s.config.host_check_interval_s == 3.0
    assert s.config.ping_max_failure == 4
    assert s.config.scan_interval_s == tuned.scan_interval_s  # untouched keys keep the profile


def test_expectations() -> None:
    e1, e2 = parse_scenario(FULL).expects
    assert e1.states == (VmState.UNKNOWN, VmState.RECOVERING, VmState.RUNNING)
    assert (e1.after_s, e1.within_s, e1.final_state) == (60.0, 300.0, VmState.RUNNING)
    assert (e1.host, e1.host_not, e1.never, e1.index) == (
        "host-2",
        "host-1",
        (VmState.STOPPED,),
        1,
    )
    assert (e2.after_s, e2.within_s, e2.states, e2.host, e2.index) == (0.0, None, (), None, 2)


# A small valid scenario that the malformed cases below each break in one place.
BASE = """\
name = "t"
description = "d"
duration = "10m"

[[storage]]
name = "nfs-1"
type = "NFS"

[[storage]]
name = "local-2"
type = "LocalStorage"
host = "host-2"

[[host]]
name = "host-1"
cpu = 8
memory = "16GiB"
storage = ["nfs-1"]

[[host]]
name = "host-2"
cpu = 8
memory = "16GiB"
storage = ["nfs-1"]

[[vm]]
name = "VM-1"
cpu = 1
memory = "1GiB"
host = "host-1"
storage = "nfs-1"

[[event]]
at = "60s"
action = "power-off"
target = "host-1"

[[expect]]
vm = "VM-1"
final_state = "Running"
"""


def test_base_is_valid_and_fills_defaults() -> None:
    s = parse_scenario(BASE)
    assert (s.seed, s.profile, s.path, s.ha_overrides) == (1, "default", "<string>", {})
    assert s.config == PROFILES["default"]
    assert s.hosts[0].cluster == "Cluster-1" and s.hosts[0].power_controller
    assert s.vms[0].ha is HaLevel.NONE and s.vms[0].state is VmState.RUNNING


def sub(old: str, new: str) -> str:
    """BASE with the first `old` replaced by `new` (which must be there)."""
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def pre(text: str) -> str:
    """BASE with top-level keys put first."""
    return text + BASE


def post(text: str) -> str:
    """BASE with extra tables (such as [ha]) at the end."""
    return BASE + text


EVENT = '[[event]]\nat = "60s"\naction = "power-off"\ntarget = "host-1"\n'
VM = '[[vm]]\nname = "VM-1"\ncpu = 1\nmemory = "1GiB"\nhost = "host-1"\nstorage = "nfs-1"\n'
NO_HOSTS = 'name = "t"\ndescription = "d"\nduration = "10m"\n'


def event(body: str) -> str:
    """BASE with its one event replaced."""
    return sub(EVENT, "[[event]]\n" + body)


BAD: list[tuple[str, str, str]] = [
    # (id, text, fragment the message must contain)
    ("bad-toml", pre("a = = 1\n"), "x.toml: line 1: invalid TOML: "),
    (
        "bad-toml-line",
        sub('cpu = 8\nmemory = "16GiB"\nstorage = ["nfs-1"]\n\n[[host]]', "cpu 8\n"),
        "x.toml: line 16: invalid TOML: ",
    ),
    (
        "unterminated",
        post('[[event]]\nat = "1s'),
        "x.toml: line 42: invalid TOML: Unterminated string (at end of file)",
    ),
    ("unknown-top", pre('nmae = "x"\n'), "x.toml: top level: unknown key 'nmae' (known: "),
    ("missing-name", sub('name = "t"\n', ""), "x.toml: top level: missing required key 'name'"),
    (
        "missing-duration",
        sub('duration = "10m"\n', ""),
        "top level: missing required key 'duration'",
    ),
    (
        "duration-type",
        sub('duration = "10m"', "duration = true"),
        "x.toml: duration: expected a duration, got boolean true",
    ),
    (
        "duration-zero",
        sub('duration = "10m"', 'duration = "0s"'),
        "duration: must be longer than zero",
    ),
    (
        "duration-unit",
        sub('duration = "10m"', 'duration = "10 minutes"'),
        "duration: invalid duration '10 minutes'",
    ),
    (
        "description-type",
        sub('description = "d"', "description = 3"),
        "description: expected a string, got integer 3",
    ),
    ("seed-negative", pre("seed = -1\n"), "x.toml: seed: must be an integer of at least 0, not -1"),
    ("seed-float", pre("seed = 1.5\n"), "seed: expected an integer, got float 1.5"),
    (
        "profile",
        pre('profile = "fast"\n'),
        "profile: unknown profile 'fast' (known: default, tuned)",
    ),
    ("ha-not-table", pre('ha = "on"\n'), "x.toml: ha: expected a table ([ha]), got string 'on'"),
    (
        "ha-unknown",
        post('[ha]\n"ha.nope" = 1\n'),
        "x.toml: ha: unknown key 'ha.nope' (known: enable, ",
    ),
    (
        "ha-unquoted",
        post("[ha]\nha.enable = true\n"),
        "ha: unknown key 'ha': quote dotted keys in full",
    ),
    (
        "ha-value",
        post('[ha]\n"ha.host.check.maxAttempts" = 0\n'),
        'x.toml: ha."ha.host.check.maxAttempts": ha.host.check.maxAttempts must be a whole number',
    ),
    (
        "ha-strategy",
        post('[ha]\nstrategy = "Aggressive"\n'),
        "x.toml: ha.strategy: ha.strategy must be Permissive or Force, not 'Aggressive'",
    ),
    (
        "ha-duration",
        post('[ha]\n"host.ping.timeout" = "10 s ago"\n'),
        "ha.\"host.ping.timeout\": invalid duration '10 s ago'",
    ),
    (
        "ha-twice",
        post('[ha]\nenable = true\n"ha.enable" = false\n'),
        "ha.\"ha.enable\": ha.enable is set twice (as 'enable' and as 'ha.enable')",
    ),
    (
        "storage-single",
        sub('[[storage]]\nname = "nfs-1"\ntype = "NFS"\n\n', "").replace(
            "[[storage]]", "[storage]"
        ),
        "x.toml: storage: write [[storage]] (an array of tables)",
    ),
    (
        "storage-type",
        sub('type = "NFS"', 'type = "iSCSI"'),
        "x.toml: storage[1].type: unknown storage type 'iSCSI' (known: LocalStorage, NFS, ",
    ),
    (
        "storage-dup",
        sub('name = "local-2"', 'name = "nfs-1"'),
        "storage[2].name: duplicate pool name 'nfs-1' (also storage[1])",
    ),
    ("local-no-host", sub('host = "host-2"\n', ""), "storage[2]: missing required key 'host'"),
    (
        "shared-with-host",
        sub('type = "NFS"', 'type = "NFS"\nhost = "host-1"'),
        "storage[1].host: only a LocalStorage pool has a host",
    ),
    (
        "local-unknown-host",
        sub('host = "host-2"', 'host = "host-9"'),
        "storage[2].host: unknown host 'host-9'",
    ),
    (
        "local-other-host",
        sub('storage = ["nfs-1"]', 'storage = ["nfs-1", "local-2"]'),
        "host[1].storage[2]: pool 'local-2' is the LocalStorage of host 'host-2'",
    ),
    ("no-hosts", NO_HOSTS, "x.toml: host: no [[host]] tables: a scenario needs at least one host"),
    (
        "host-unknown-key",
        sub(
            "cpu = 8\nmemory",
            "cpus = 8\nmemory",
        ),
        "x.toml: host[1]: unknown key 'cpus' (known: cluster, cpu, ip, memory, name, networks, ",
    ),
    ("host-missing-cpu", sub("cpu = 8\n", ""), "x.toml: host[1]: missing required key 'cpu'"),
    (
        "host-cpu-string",
        sub("cpu = 8", 'cpu = "8"'),
        "host[1].cpu: expected an integer, got string '8'",
    ),
    ("host-cpu-zero", sub("cpu = 8", "cpu = 0"), "host[1].cpu: must be a positive integer, not 0"),
    (
        "host-memory-unit",
        sub('memory = "16GiB"', 'memory = "16GB"'),
        "host[1].memory: invalid memory size '16GB': unknown unit 'GB'",
    ),
    (
        "host-dup",
        sub('name = "host-2"', 'name = "host-1"'),
        "x.toml: host[2].name: duplicate host name 'host-1' (also host[1])",
    ),
    (
        "host-unknown-pool",
        sub('storage = ["nfs-1"]', 'storage = ["nfs-9"]'),
        "host[1].storage[1]: unknown pool 'nfs-9'",
    ),
    (
        "host-storage-type",
        sub('storage = ["nfs-1"]', 'storage = "nfs-1"'),
        "host[1].storage: expected an array, got string 'nfs-1'",
    ),
    (
        "host-storage-twice",
        sub('storage = ["nfs-1"]', 'storage = ["nfs-1", "nfs-1"]'),
        "host[1].storage[2]: 'nfs-1' is listed twice",
    ),
    (
        "host-network",
        sub("cpu = 8", 'cpu = 8\nnetworks = ["mgmt"]'),
        "host[1].networks[1]: unknown network 'mgmt' (known: management, storage, business)",
    ),
    (
        "host-ip",
        sub("cpu = 8", 'cpu = 8\nip = "192.168.1"'),
        "host[1].ip: invalid IP address '192.168.1'",
    ),
    (
        "host-power-controller",
        sub("cpu = 8", 'cpu = 8\npower_controller = "yes"'),
        "host[1].power_controller: expected true or false, got string 'yes'",
    ),
    (
        "host-not-array",
        NO_HOSTS + 'host = "host-1"\n',
        "x.toml: host: expected an array of tables ([[host]])",
    ),
    (
        "vm-unknown-host",
        sub('host = "host-1"\nstorage = "nfs-1"', 'host = "host-9"\nstorage = "nfs-1"'),
        "x.toml: vm[1].host: unknown host 'host-9'",
    ),
    (
        "vm-unknown-pool",
        sub('storage = "nfs-1"', 'storage = "ceph-1"'),
        "vm[1].storage: unknown pool 'ceph-1'",
    ),
    (
        "vm-pool-not-on-host",
        sub('storage = "nfs-1"', 'storage = "local-2"'),
        "vm[1].storage: host 'host-1' does not list pool 'local-2'",
    ),
    (
        "vm-dup",
        sub(VM, VM + "\n" + VM),
        "x.toml: vm[2].name: duplicate VM name 'VM-1' (also vm[1])",
    ),
    (
        "vm-ha",
        sub('storage = "nfs-1"\n\n[[event]]', 'storage = "nfs-1"\nha = "Always"\n\n[[event]]'),
        "vm[1].ha: unknown HA level 'Always' (known: NeverStop, None)",
    ),
    (
        "vm-state",
        sub('storage = "nfs-1"\n\n[[event]]', 'storage = "nfs-1"\nstate = "Unknown"\n\n[[event]]'),
        "vm[1].state: initial state must be Running or Stopped, not 'Unknown'",
    ),
    (
        "vm-state-unknown",
        sub('storage = "nfs-1"\n\n[[event]]', 'storage = "nfs-1"\nstate = "Up"\n\n[[event]]'),
        "vm[1].state: unknown VM state 'Up' (known: Running, ",
    ),
    ("vm-memory-zero", sub('memory = "1GiB"', "memory = 0"), "vm[1].memory: must be positive"),
    (
        "vm-cpu-float",
        sub("cpu = 1\n", "cpu = 1.5\n"),
        "vm[1].cpu: expected an integer, got float 1.5",
    ),
    ("vm-name-empty", sub('name = "VM-1"', 'name = ""'), "vm[1].name: must not be empty"),
    (
        "event-action",
        event('at = "1s"\naction = "explode"\n'),
        "x.toml: event[1].action: unknown action 'explode' "
        "(known: agent-crash, agent-restart, clock-drift, delete-network, ",
    ),
    ("event-no-action", event('at = "1s"\n'), "event[1]: missing required key 'action'"),
    (
        "event-no-target",
        event('at = "1s"\naction = "power-off"\n'),
        "event[1]: missing required key 'target'",
    ),
    (
        "event-no-at",
        event('action = "power-off"\ntarget = "host-1"\n'),
        "event[1]: missing required key 'at'",
    ),
    (
        "event-extra-key",
        event('at = "1s"\naction = "power-off"\ntarget = "host-1"\npool = "nfs-1"\n'),
        "event[1]: unknown key 'pool' (known: action, at, target)",
    ),
    (
        "event-wrong-kind",
        event('at = "1s"\naction = "power-off"\ntarget = "VM-1"\n'),
        "event[1].target: 'VM-1' is a VM; power-off acts on a host",
    ),
    (
        "event-unknown-vm",
        event('at = "1s"\naction = "vm-crash"\ntarget = "VM-9"\n'),
        "event[1].target: unknown VM 'VM-9'",
    ),
    (
        "event-too-late",
        event('at = "20m"\naction = "power-off"\ntarget = "host-1"\n'),
        "x.toml: event[1].at: 20m is after the end of the run (duration 10m)",
    ),
    (
        "event-at-negative",
        event('at = -5\naction = "power-off"\ntarget = "host-1"\n'),
        "event[1].at: invalid duration -5: must not be negative",
    ),
    (
        "event-second",
        post('[[event]]\nat = "1s"\naction = "vm-start"\ntarget = "host-1"\n'),
        "event[2].target: 'host-1' is a host; vm-start acts on a VM",
    ),
    (
        "storage-down-no-pool",
        event('at = "1s"\naction = "storage-down"\ntarget = "host-1"\n'),
        "event[1]: missing required key 'pool'",
    ),
    (
        "storage-down-pool",
        event('at = "1s"\naction = "storage-down"\ntarget = "host-1"\npool = "local-2"\n'),
        "event[1].pool: host 'host-1' does not list pool 'local-2'",
    ),
    (
        "set-config-key",
        event('at = "1s"\naction = "set-config"\nkey = "ha.nope"\nvalue = 1\n'),
        "event[1].key: unknown HA key 'ha.nope' (known: ",
    ),
    (
        "set-config-value",
        event('at = "1s"\naction = "set-config"\nkey = "ha.enable"\nvalue = 1\n'),
        "event[1].value: ha.enable must be true or false, not 1",
    ),
    (
        "set-config-target",
        event(
            'at = "1s"\naction = "set-config"\ntarget = "host-1"\nkey = "ha.enable"\nvalue = true\n'
        ),
        "event[1]: unknown key 'target' (known: action, at, key, value)",
    ),
    (
        "set-ha-level",
        event('at = "1s"\naction = "set-ha"\ntarget = "VM-1"\nlevel = "Always"\n'),
        "event[1].level: unknown HA level 'Always'",
    ),
    (
        "network-down-name",
        event('at = "1s"\naction = "network-down"\ntarget = "host-1"\nnetwork = "wan"\n'),
        "event[1].network: unknown network 'wan' (known: management, storage, business, all)",
    ),
    (
        "delete-network-cluster",
        event(
            'at = "1s"\naction = "delete-network"\nnetwork = "business"\ncluster = "Cluster-9"\n'
        ),
        "event[1].cluster: unknown cluster 'Cluster-9' (known: Cluster-1)",
    ),
    (
        "delete-network-all",
        event('at = "1s"\naction = "delete-network"\nnetwork = "all"\n'),
        "event[1].network: unknown network 'all'",
    ),
    (
        "vm-stop-flag",
        event('at = "1s"\naction = "vm-stop"\ntarget = "VM-1"\nno_restart = "yes"\n'),
        "event[1].no_restart: expected true or false, got string 'yes'",
    ),
    (
        "expect-unknown-vm",
        sub('vm = "VM-1"', 'vm = "VM-9"'),
        "x.toml: expect[1].vm: unknown VM 'VM-9'",
    ),
    (
        "expect-state",
        sub('final_state = "Running"', 'states = ["Unknown", "Recovered"]'),
        "expect[1].states[2]: unknown VM state 'Recovered' (known: Running, ",
    ),
    (
        "expect-host-not",
        sub('final_state = "Running"', 'host_not = "host-9"'),
        "expect[1].host_not: unknown host 'host-9'",
    ),
    (
        "expect-never-type",
        sub('final_state = "Running"', 'never = "Running"'),
        "expect[1].never: expected an array, got string 'Running'",
    ),
    ("expect-nothing", sub('final_state = "Running"\n', ""), "x.toml: expect[1]: nothing to check"),
    (
        "expect-within",
        sub('final_state = "Running"', 'final_state = "Running"\nwithin = "0s"'),
        "expect[1].within: must be longer than zero",
    ),
    (
        "expect-after",
        sub('final_state = "Running"', 'final_state = "Running"\nafter = "1h"'),
        "expect[1].after: 1h is after the end of the run (duration 10m)",
    ),
    (
        "expect-unknown-key",
        sub('final_state = "Running"', 'final = "Running"'),
        "x.toml: expect[1]: unknown key 'final' (known: ",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_malformed_scenarios_are_one_line_errors(text: str, fragment: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "x.toml")
    message = str(caught.value)
    assert fragment in message
    assert message.startswith("x.toml: ")
    assert "\n" not in message and "\r" not in message
    assert message == f"{caught.value.path}: {caught.value.location}: {caught.value.reason}"


def test_bad_cases_have_unique_ids() -> None:
    assert len({c[0] for c in BAD}) == len(BAD) >= 25


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ScenarioError, match=r"nope\.toml: file: no such file$"):
        load_scenario(missing)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="file: is a directory"):
        load_scenario(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "t"\ndescription = "caf\xe9"\n')
    with pytest.raises(ScenarioError) as caught:
        load_scenario(str(path))
    assert str(caught.value) == f"{path}: line 2: not UTF-8 text (byte 0xe9)"


def test_load_scenario_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(BASE, encoding="utf-8")
    assert load_scenario(path).path == str(path)


def test_deep_nesting_is_a_scenario_error() -> None:
    with pytest.raises(ScenarioError, match="x.toml: "):
        parse_scenario("a = " + "[" * 5000, "x.toml")


# One minimal valid event per action: fails if formats.spec gains an action this reader misses.
ONE_EVENT = {
    "power-off": 'target = "host-1"',
    "power-on": 'target = "host-1"',
    "vm-crash": 'target = "VM-1"',
    "vm-stop": 'target = "VM-1"',
    "vm-start": 'target = "VM-1"',
    "network-down": 'target = "host-1"\nnetwork = "storage"',
    "network-up": 'target = "host-1"',
    "storage-down": 'target = "host-2"\npool = "local-2"',
    "storage-up": 'target = "host-1"\npool = "nfs-1"',
    "maintenance-enter": 'target = "host-2"',
    "maintenance-exit": 'target = "host-2"',
    "set-ha": 'target = "VM-1"\nlevel = "NeverStop"',
    "set-config": 'key = "ha.strategy"\nvalue = "Force"',
    "detach-network": 'target = "VM-1"',
    "delete-network": 'network = "storage"',
    "link-loss": 'target = "host-1"\nnetwork = "management"\nloss = 0.05\nlatency = "50ms"',
    "clock-drift": 'target = "host-1"\nrate = 1.01',
    "libvirt-hang": 'target = "host-1"',
    "libvirt-resume": 'target = "host-1"',
    "agent-crash": 'target = "host-1"',
    "agent-restart": 'target = "host-1"',
    "manager-crash": "",
    "manager-restart": "",
}
ONE_EVENT_ARGS = {
    "vm-stop": {"no_restart": False},
    "network-down": {"network": "storage", "direction": "both"},
    "network-up": {"network": "all", "direction": "both"},
    "link-loss": {"network": "management", "loss": 0.05, "latency": 0.05},
    "clock-drift": {"rate": 1.01},
    "storage-down": {"pool": "local-2"},
    "storage-up": {"pool": "nfs-1"},
    "set-ha": {"level": HaLevel.NEVER_STOP},
    "set-config": {"key": "ha.strategy", "value": Strategy.FORCE},
    "detach-network": {"network": "business"},
    "delete-network": {"network": "storage", "cluster": "Cluster-1"},
}


def test_every_action_is_covered() -> None:
    assert set(ONE_EVENT) == set(ACTIONS)
    assert {a for a, (target, _) in ACTIONS.items() if target} == HOST_ACTIONS | VM_ACTIONS
    assert not HOST_ACTIONS & VM_ACTIONS


@pytest.mark.parametrize("action", sorted(ONE_EVENT))
def test_each_action_parses(action: str) -> None:
    text = event(f'at = "1s"\naction = "{action}"\n{ONE_EVENT[action]}\n')
    (parsed,) = parse_scenario(text).events
    assert parsed.action == action and parsed.at_s == 1.0
    assert parsed.args == ONE_EVENT_ARGS.get(action, {})


def test_no_traceback_escapes_for_mangled_input() -> None:
    """Cut, duplicate and swap pieces of a valid file: only ScenarioError may come out."""
    rng = random.Random(20240601)
    lines = FULL.splitlines(keepends=True)
    tokens = ['"', "=", "[", "]", "0", "-1", "true", '"x"', "1e999", "nan", "[[vm]]\n", "{}", ","]
    for _ in range(600):
        mangled = list(lines)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(mangled))
            choice = rng.randrange(4)
            if choice == 0:
                del mangled[i]
            elif choice == 1:
                mangled.insert(i, rng.choice(lines))
            elif choice == 2:
                line = mangled[i]
                cut = rng.randrange(len(line) + 1)
                mangled[i] = line[:cut] + rng.choice(tokens) + line[cut + 1 :]
            else:
                j = rng.randrange(len(mangled))
                mangled[i], mangled[j] = mangled[j], mangled[i]
        try:
            parse_scenario("".join(mangled), "m.toml")
        except ScenarioError as error:
            assert "\n" not in str(error) and str(error).startswith("m.toml: ")


# --- units ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("2h30m", 9000.0),
        ("1m30s", 90.0),
        ("100ms", 0.1),
        (" 2h 30m ", 9000.0),
        ("0s", 0.0),
        (90, 90.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    result = parse_duration(value, "here")
    assert result == seconds and isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("90", "missing unit"),
        ("-5s", "must not be negative"),
        (-1, "must not be negative"),
        ("5M", "invalid duration '5M'"),
        ("30m2h", "largest first"),
        ("5s5s", "largest first"),
        ("", "empty"),
        ("ms", "invalid duration 'ms'"),
        ("1.s", "invalid duration '1.s'"),
        (True, "got boolean true"),
        (None, "expected a duration"),
        ([1], "got an array"),
        (math.inf, "must be finite"),
        (math.nan, "must be finite"),
    ],
)
def test_parse_duration_rejects(value: object, fragment: str) -> None:
    with pytest.raises(UnitError) as caught:
        parse_duration(value, "vm[1].at")
    assert str(caught.value).startswith("vm[1].at: ")
    assert fragment in caught.value.reason
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("value", "mib"),
    [("512MiB", 512), ("16GiB", 16384), ("1TiB", 1048576), ("1.5GiB", 1536), (512, 512), (0, 0)],
)
def test_parse_memory(value: object, mib: int) -> None:
    result = parse_memory(value, "here")
    assert result == mib and isinstance(result, int)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("16GB", "unknown unit 'GB'"),
        ("16G", "unknown unit 'G'"),
        ("512", "missing unit"),
        ("1.5MiB", "not a whole number of MiB"),
        ("-1GiB", "must not be negative"),
        (-1, "must not be negative"),
        (1.5, "invalid memory size 1.5"),
        (False, "got boolean false"),
        ("lots", "invalid memory size 'lots'"),
    ],
)
def test_parse_memory_rejects(value: object, fragment: str) -> None:
    with pytest.raises(UnitError) as caught:
        parse_memory(value, "host[2].memory")
    assert str(caught.value).startswith("host[2].memory: ")
    assert fragment in caught.value.reason


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (90, "1m30s"),
        (300, "5m"),
        (0.5, "500ms"),
        (1.5, "1.5s"),
        (45, "45s"),
        (5400, "1h30m"),
        (3600.25, "1h0.25s"),
        (0, "0s"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("ms", [1, 250, 1000, 1500, 59_999, 60_000, 90_500, 3_600_000, 7_384_123])
def test_format_duration_reads_back(ms: int) -> None:
    seconds = ms / 1000
    assert parse_duration(format_duration(seconds), "x") == seconds
