"""The ground truth of a simulated run, kept apart from the HA manager's view.

Which guest really executes where and since when, and what users really asked for.
Checkers look only at this, never at the manager's opinion: a manager that believes
the right thing while two copies of a VM run has still failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.states import HaLevel
from sim.result import Run, Violation


@dataclass
class Intent:
    """What users asked for one VM (the truth the checkers hold HA to)."""

    level: HaLevel
    no_restart: bool = False


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

    def running_on(self, host: str) -> set[str]:
        return self.on_host.setdefault(host, set())

    def start_run(self, now: float, vm: str, host: str, cause: str) -> None:
        """A guest begins executing; every checker that concerns a start runs here."""
        copies = self.live.setdefault(vm, {})
        if host in copies:
            return
        if copies:
            others = ", ".join(sorted(copies))
            self._violate(now, "two-running", f"{vm} started on {host} while running on {others}")
        self._check_ha_start(now, vm, host, cause)
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
        if not self.ha_enable:
            self._violate(now, "ha-disabled", f"{host} fenced {vm} while ha.enable is false")

    def _check_ha_start(self, now: float, vm: str, host: str, cause: str) -> None:
        if cause != "ha":
            return
        intent = self.intents[vm]
        if not self.ha_enable:
            self._violate(now, "ha-disabled", f"HA started {vm} on {host} while ha.enable is false")
        if intent.level is not HaLevel.NEVER_STOP:
            self._violate(now, "ha-level-none", f"HA started {vm} on {host} but its HA level is None")
        if intent.no_restart:
            self._violate(now, "no-restart", f"HA started {vm} on {host} after a stop with no_restart")

    def _violate(self, now: float, checker: str, detail: str) -> None:
        self.violations.append(Violation(now, checker, detail))
