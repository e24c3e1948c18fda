"""Run one scenario: build the simulated cluster, inject its events, collect the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import simpy

from actors.config import HaConfig
from actors.durable import DurableState, command_change, restore, view_change
from actors.host_agent import HostAgent
from actors.inventory import (
    MANAGER,
    bmc_addr,
    host_addr,
    pool_addr,
)
from actors.manager import HaManager
from actors.messages import (
    ConfigPush,
    UserDeleteNetwork,
    UserDetachNic,
    UserMaintenance,
    UserSetConfig,
    UserSetHa,
    UserStartVm,
    UserStopVm,
    VmViewChanged,
)
from actors.states import Network, VmState
from actors.storage_pool import StoragePool
from formats.inventory import build_inventory
from formats.spec import EventSpec, Scenario
from sim.devices import PowerController, Watchdog
from sim.expect import evaluate, final_views
from sim.hypervisor import SimHypervisor
from sim.network import Link, NetworkModel
from sim.result import FaultMark, RunResult, Transition
from sim.runtime import SimRuntime, collector_paused, seeded
from sim.truth import Intent, Truth

MANAGEMENT_NODE = "mgmt"
HOST_BOOT_S = 30.0  # from power-on until the host agent runs

TransitionHook = Callable[[Transition, str], None]


def pool_node(pool: str) -> str:
    return f"storage:{pool}"


def bmc_node(host: str) -> str:
    return f"bmc:{host}"


class Simulation:
    """One run of one scenario. ``run()`` returns its RunResult."""

    def __init__(self, scenario: Scenario, on_transition: TransitionHook | None = None) -> None:
        self.scenario = scenario
        self.config: HaConfig = scenario.config
        self.inventory = build_inventory(scenario)
        self.env = simpy.Environment()
        self.network = NetworkModel(seeded(scenario.seed, "network"))
        self.runtime = SimRuntime(self.env, self.network, scenario.seed)
        self.truth = Truth(
            host_cpu={h.name: h.cpu for h in scenario.hosts},
            host_mem={h.name: h.memory_mib for h in scenario.hosts},
            vm_cpu={v.name: v.cpu for v in scenario.vms},
            vm_mem={v.name: v.memory_mib for v in scenario.vms},
            intents={v.name: Intent(v.ha) for v in scenario.vms},
            ha_enable=self.config.enable,
        )
        self.hypervisors: dict[str, SimHypervisor] = {}
        self.watchdogs: dict[str, Watchdog] = {}  # hosts that have one
        self.agent_down: set[str] = set()  # hosts whose agent crashed and did not restart yet
        self.pool_shared = {p.name: p.shared for p in self.inventory.pools}
        self.transitions: list[Transition] = []
        self.last_state: dict[str, str] = {}
        self.faults: list[FaultMark] = []
        self.on_transition = on_transition
        self.runtime.on_publish.append(self._published)
        # What the management node keeps on disk (real mode: SQLite): it outlives a
        # manager crash. User commands and views change it by the rules both runtimes share.
        self.durable = DurableState()

    # -- building --------------------------------------------------------------------------------

    def _shared_pools(self, host: str) -> tuple[str, ...]:
        return tuple(p for p in self.inventory.host(host).pools if self.pool_shared[p])

    def _build(self) -> None:
        net = self.network
        cond = self.scenario.network
        link = Link(latency_s=cond.latency_s, loss=cond.loss, jitter_s=cond.jitter_s)
        net.attach(MANAGEMENT_NODE, [Network.MANAGEMENT], link)
        self._drift_clock(MANAGEMENT_NODE)
        for pool in self.inventory.pools:
            if pool.shared:
                net.attach(pool_node(pool.name), [Network.STORAGE], link)
                self.runtime.spawn(pool_addr(pool.name), pool_node(pool.name), StoragePool(pool.name))
        with_watchdog = {h.name for h in self.scenario.hosts if h.watchdog}
        for host in self.inventory.hosts:
            net.attach(host.name, host.networks, link)
            self._drift_clock(host.name)
            hv = SimHypervisor(host.name, self.runtime, self.truth,
                               seeded(self.scenario.seed, f"hv:{host.name}"), self.hypervisors)
            self.hypervisors[host.name] = hv
            if host.name in with_watchdog:
                self.watchdogs[host.name] = Watchdog(host.name, self.runtime, self._watchdog_reset)
            if host.power_controller:
                net.attach(bmc_node(host.name), [Network.MANAGEMENT], link)
                self.runtime.spawn(bmc_addr(host.name), bmc_node(host.name), PowerController(hv))
        for init in self.inventory.vms:
            if init.state is VmState.RUNNING:
                self.hypervisors[init.host].place_initial(init.vm.name, init.vm.pool)
        for host in self.inventory.hosts:
            self._boot_agent(host.name)
        self.runtime.spawn(MANAGER, MANAGEMENT_NODE, HaManager(self.inventory, self.config))

    def _restart_manager(self) -> None:
        inventory, config, maintenance = restore(self.inventory, self.config, self.durable)
        manager = HaManager(inventory, config, maintenance=maintenance)
        self.runtime.spawn(MANAGER, MANAGEMENT_NODE, manager)

    def _drift_clock(self, node: str) -> None:
        """Give ``node`` a clock rate within the scenario's drift bound, fixed for the run."""
        drift = self.scenario.network.clock_drift
        if drift:
            rng = seeded(self.scenario.seed, f"clock:{node}")
            self.runtime.set_clock_rate(node, 1.0 + rng.uniform(-drift, drift))

    def _boot_agent(self, host: str) -> None:
        agent = HostAgent(host, self._shared_pools(host), self.config)
        self.runtime.spawn(host_addr(host), host, agent, self.hypervisors[host], self.watchdogs.get(host))

    def _power_off(self, host: str) -> None:
        self.hypervisors[host].power_off()
        self.runtime.kill_node(host)
        self.agent_down.discard(host)  # a boot brings the agent back
        watchdog = self.watchdogs.get(host)
        if watchdog is not None:
            watchdog.disarm()  # it starts disarmed after the boot

    def _power_on(self, host: str) -> None:
        """Power comes back; the agent runs once the host has booted (unless power went
        again meanwhile)."""
        hv = self.hypervisors[host]
        if hv.powered:
            return
        hv.power_on()
        epoch = hv.power_epoch

        def booted(_: Any) -> None:
            if hv.powered and hv.power_epoch == epoch:
                hv.booted = True
                self._boot_agent(host)

        self.runtime.later(HOST_BOOT_S, booted)

    def _watchdog_reset(self, host: str) -> None:
        """The host's watchdog fired: a hardware reset, so every guest dies at once, and
        the host boots again. It is marked in the run like a fault, for plots and logs."""
        now = float(self.env.now)
        self.faults.append(FaultMark(now, "watchdog-reset", host))
        self.runtime.log(host_addr(host), f"{host}: watchdog reset: its agent stopped petting it")
        for vm in sorted(self.hypervisors[host].guests):
            self.truth.fenced(now, vm, host)  # a host told that HA is off has disarmed it
        self._power_off(host)
        self._power_on(host)

    def _published(self, now: float, address: str, event: object) -> None:
        if isinstance(event, ConfigPush):
            self.truth.host_enable[address.removeprefix("host/")] = event.config.enable
            return
        if not isinstance(event, VmViewChanged):
            return
        old = self.last_state.get(event.vm, "-")
        self.last_state[event.vm] = event.state.value
        self.durable.apply(view_change(event))
        tr = Transition(now, event.vm, event.state.value, event.host)
        self.transitions.append(tr)
        if self.on_transition is not None:
            self.on_transition(tr, old)

    # -- events ----------------------------------------------------------------------------------

    def _schedule(self, event: EventSpec) -> None:
        def fire(_: Any) -> None:
            self.faults.append(FaultMark(float(self.env.now), event.action, event.target))
            self.apply(event)

        self.runtime.later(event.at_s, fire)

    def _user(self, msg: object) -> None:
        self.runtime.deliver(MANAGER, msg)

    def apply(self, event: EventSpec) -> None:
        """Carry out one fault or user action on the ground truth and the actors."""
        action, target, args = event.action, event.target or "", event.args
        now = float(self.env.now)
        if action == "power-off":
            self._power_off(target)
        elif action == "power-on":
            self._power_on(target)
        elif action == "agent-crash":
            if self.runtime.kill(host_addr(target)):
                self.agent_down.add(target)
        elif action == "agent-restart":
            if target in self.agent_down and self.hypervisors[target].powered:
                self.agent_down.discard(target)
                self._boot_agent(target)
        elif action == "vm-crash":
            for host in sorted(self.truth.live.get(target, {})):
                self.hypervisors[host].crash(target)
        elif action in ("network-down", "network-up"):
            for n in self._networks(args):
                self.network.set_direction(target, n, args.get("direction", "both"), action == "network-up")
        elif action == "link-loss":
            for n in self._networks(args):
                self.network.degrade(target, n, args["loss"], args.get("latency", 0.0))
        elif action == "clock-drift":
            self.runtime.set_clock_rate(target, args["rate"])
        elif action == "libvirt-hang":
            self.hypervisors[target].hang()
        elif action == "libvirt-resume":
            self.hypervisors[target].resume()
        elif action == "manager-crash":
            self.runtime.kill_node(MANAGEMENT_NODE)
        elif action == "manager-restart":
            if not self.runtime.cells[MANAGER].alive:
                self._restart_manager()
        elif action in ("storage-down", "storage-up"):
            self.network.block(target, pool_node(args["pool"]), action == "storage-down")
        else:
            self._user_action(now, action, target, args)

    @staticmethod
    def _networks(args: dict[str, Any]) -> list[Network]:
        network = args.get("network", "all")
        return list(Network) if network == "all" else [Network(network)]

    def _user_action(self, now: float, action: str, target: str, args: dict[str, Any]) -> None:
        """A user's API call: the truth and the manager's store take it at once (the
        store is on disk even while the manager is down); the manager gets a message."""
        self._apply_user_action(action, target, args)
        self.truth.note_intents(now)

    def _apply_user_action(self, action: str, target: str, args: dict[str, Any]) -> None:
        intents = self.truth.intents
        cmd: object
        if action == "vm-stop":
            cmd = UserStopVm(target, bool(args.get("no_restart", False)))
            intents[target].no_restart = cmd.no_restart
        elif action == "vm-start":
            cmd = UserStartVm(target)
            intents[target].no_restart = False
        elif action == "set-ha":
            cmd = UserSetHa(target, args["level"])
            intents[target].level = cmd.level
        elif action == "set-config":
            if args["key"] == "ha.enable":
                self.truth.ha_enable = bool(args["value"])
            cmd = UserSetConfig(args["key"], args["value"])
        elif action in ("maintenance-enter", "maintenance-exit"):
            cmd = UserMaintenance(target, action == "maintenance-enter")
        elif action == "detach-network":
            cmd = UserDetachNic(target, args.get("network", "business"))
        elif action == "delete-network":
            cmd = UserDeleteNetwork(args.get("cluster", "Cluster-1"), args["network"])
        else:
            raise ValueError(f"unknown action {action!r}")
        self.durable.apply(command_change(cmd))  # the store takes it first, as in real mode
        self._user(cmd)

    # -- running ---------------------------------------------------------------------------------

    def run(self) -> RunResult:
        with collector_paused():  # a run makes no cyclic garbage; full collections cost ~40%
            self._build()
            for event in self.scenario.events:
                self._schedule(event)
            self.env.run(until=self.scenario.duration_s)
        return self.result()

    def result(self) -> RunResult:
        sc = self.scenario
        vm_names = [v.name for v in sc.vms]
        final = final_views(self.transitions, vm_names)
        by_vm = {f.vm: f for f in final}
        self.truth.check_end(float(self.env.now), {f.vm for f in final if f.state == VmState.RUNNING.value})
        host_ip = {h.name: h.ip for h in sc.hosts}
        table = []
        for v in sc.vms:
            f = by_vm[v.name]
            table.append({
                "name": v.name, "cpu": v.cpu, "memory_mib": v.memory_mib, "ip": v.ip,
                "host": f.host, "host_ip": host_ip.get(f.host or "", ""),
                "cluster": self.inventory.host(v.host).cluster, "state": f.state,
                "ha": self.truth.intents[v.name].level.value,
            })
        return RunResult(
            scenario=sc.name,
            seed=sc.seed,
            profile=sc.profile,
            duration_s=sc.duration_s,
            transitions=list(self.transitions),
            runs=list(self.truth.runs),
            expectations=[evaluate(e, self.transitions, by_vm[e.vm]) for e in sc.expects],
            violations=list(self.truth.violations),
            final=final,
            faults=list(self.faults),
            vm_table=table,
        )


def run_scenario(scenario: Scenario, seed: int | None = None, config: HaConfig | None = None,
                 on_transition: TransitionHook | None = None) -> RunResult:
    if seed is not None:
        scenario = replace(scenario, seed=seed)
    if config is not None:
        scenario = replace(scenario, config=config)
    return Simulation(scenario, on_transition).run()

