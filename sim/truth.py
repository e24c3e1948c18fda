"""The ground truth of a simulated run, kept apart from the HA manager's view.

Which guest really executes where and since when, and what users really asked for.
Checkers look only at this, never at the manager's opinion: a manager that believes
the right thing while two copies of a VM run has still failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.states import HaLevel
from sim.result import Run, Violation

# A stop with no_restart has taken effect this long after it was accepted, unless the
# VM's host cannot be reached (then the manager does not show the VM Running).
NO_RESTART_SETTLE_S = 300.0


@dataclass
class Intent:
    """What users asked for one VM (the truth the checkers hold HA to)."""

    level: HaLevel
    no_restart: bool = False


@dataclass(frozen=True)
class Rules:
    """What HA was allowed to do for one VM from a moment on."""

    t: float
    ha_enable: bool
    level: HaLevel
    no_restart: bool


@dataclass
class Truth:
    host_cpu: dict[str, int]
    host_mem: dict[str, int]
    vm_cpu: dict[str, int]
    vm_mem: dict[str, int]
    intents: dict[str, Intent]
    ha_enable: bool = True
    runs: list[Run] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    live: dict[str, dict[str, Run]] = field(default_factory=dict)  # vm -> host -> open run
    on_host: dict[str, set[str]] = field(default_factory=dict)  # host -> vms running there
    host_enable: dict[str, bool] = field(default_factory=dict)  # ha.enable as each host last heard it
    history: dict[str, list[Rules]] = field(default_factory=dict)  # vm -> rules over time

    def __post_init__(self) -> None:
        self.note_intents(0.0)  # the rules from the start; each user action adds what changed

    def note_intents(self, now: float) -> None:
        """Record, after a user action, what HA may do for each VM from ``now`` on."""
        for vm, intent in self.intents.items():
            rules = Rules(now, self.ha_enable, intent.level, intent.no_restart)
            past = self.history.setdefault(vm, [])
            last = past[-1] if past else None
            if last is None or (last.ha_enable, last.level, last.no_restart) != (
                    rules.ha_enable, rules.level, rules.no_restart):
                past.append(rules)

    def rules_at(self, vm: str, t: float) -> Rules:
        """The rules in force at ``t`` (history starts at 0, so there always is one)."""
        past = self.history[vm]
        return next((rules for rules in reversed(past) if rules.t <= t), past[0])

    def running_on(self, host: str) -> set[str]:
        return self.on_host.setdefault(host, set())

    def start_run(self, now: float, vm: str, host: str, cause: str, ordered_at: float | None = None) -> None:
        """A guest begins executing; every checker that concerns a start runs here. An
        HA start is judged by the rules in force when the host took the order."""
        copies = self.live.setdefault(vm, {})
        if host in copies:
            return
        if copies:
            others = ", ".join(sorted(copies))
            self._violate(now, "two-running", f"{vm} started on {host} while running on {others}")
        self._check_ha_start(now, vm, host, cause, now if ordered_at is None else ordered_at)
        run = Run(vm, host, now, None, cause)
        copies[host] = run
        self.runs.append(run)
        guests = self.running_on(host)
        guests.add(vm)
        cpu = sum(self.vm_cpu[v] for v in guests)
        mem = sum(self.vm_mem[v] for v in guests)
        if cpu > self.host_cpu[host] or mem > self.host_mem[host]:
            self._violate(now, "over-capacity",
                          f"{host} runs {cpu} vCPU / {mem} MiB, capacity "
                          f"{self.host_cpu[host]} vCPU / {self.host_mem[host]} MiB")

    def end_run(self, now: float, vm: str, host: str) -> bool:
        run = self.live.get(vm, {}).pop(host, None)
        if run is None:
            return False
        run.end = now
        self.running_on(host).discard(vm)
        return True

    def fenced(self, now: float, vm: str, host: str) -> None:
        """A host cut off from the manager cannot learn that HA was switched off; it
        breaks the rule only by fencing after it was told."""
        if not self.host_enable.get(host, True):
            self._violate(now, "ha-disabled", f"{host} fenced {vm} after it was told ha.enable is false")

    def _check_ha_start(self, now: float, vm: str, host: str, cause: str, ordered_at: float) -> None:
        if cause != "ha":
            return
        rules = self.rules_at(vm, ordered_at)
        if not rules.ha_enable:
            self._violate(now, "ha-disabled", f"HA started {vm} on {host} while ha.enable is false")
        if rules.level is not HaLevel.NEVER_STOP:
            self._violate(now, "ha-level-none", f"HA started {vm} on {host} but its HA level is None")
        if rules.no_restart:
            self._violate(now, "no-restart", f"HA started {vm} on {host} after a stop with no_restart")

    def check_end(self, now: float, shown_running: set[str]) -> None:
        """At the end of a run: a VM stopped with no_restart long ago that still executes
        while the manager shows it Running (so its host answers) had its stop lost. The
        start checks above cannot see this: no new run began, the old one never ended."""
        for vm, intent in self.intents.items():
            copies = self.live.get(vm)
            if not intent.no_restart or vm not in shown_running or not copies:
                continue
            since = self._no_restart_since(vm)
            if now - since >= NO_RESTART_SETTLE_S:
                hosts = ", ".join(sorted(copies))
                self._violate(now, "no-restart", f"{vm} was stopped with no_restart at {since:.1f}s but "
                              f"still runs on {hosts}, shown Running, with no user start since")

    def _no_restart_since(self, vm: str) -> float:
        """When the no_restart now in force was set (the start of its unbroken stretch)."""
        since = 0.0
        for rules in reversed(self.history[vm]):
            if not rules.no_restart:
                break
            since = rules.t
        return since

    def _violate(self, now: float, checker: str, detail: str) -> None:
        self.violations.append(Violation(now, checker, detail))
