"""HA configuration: ZStack's keys and defaults, and the named profiles.

Values are stored in seconds (``*_s``) or counts; the ZStack key names are kept as the
user-facing spelling so that an operator can carry settings over from a ZStack cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from actors.states import Strategy


@dataclass(frozen=True)
class HaConfig:
    """Every HA knob. Frozen: a change is a new config pushed to the actors."""

    enable: bool = True
    strategy: Strategy = Strategy.PERMISSIVE
    host_check_interval_s: float = 5.0
    host_check_max_attempts: int = 12
    host_check_success_interval_s: float = 5.0
    host_check_success_times: int = 5
    host_check_success_ratio: float = 0.5
    self_fencer_interval_s: float = 5.0
    self_fencer_max_attempts: int = 6
    self_fencer_storage_timeout_s: float = 5.0
    # Not a ZStack key: the host's watchdog resets it after this many heartbeat intervals
    # without a pet from its agent (see actors.context.WatchdogPort). At least 2, so that
    # a tick that comes a little late does not reset a healthy host.
    self_fencer_watchdog_intervals: int = 3
    scan_interval_s: float = 60.0
    retry_delay_s: float = 60.0
    retry_max_interval_s: float = 300.0
    ping_interval_s: float = 60.0
    ping_max_failure: int = 3
    ping_timeout_s: float = 10.0
    # Not a ZStack key: the largest clock-rate error between any two nodes that the
    # fencing deadline must tolerate (0.02 = 2%).
    clock_drift_max: float = 0.02
    # Not a ZStack key: a host that has not answered a ping since the manager started is
    # "Booting", and its missed pings are not counted, for this long. A cluster that starts
    # all at once (or a manager restarted beside hosts still booting) is not judged on the
    # silence of agents that are still coming up; a host that never joins is judged after it.
    host_join_grace_s: float = 60.0
    # Bumped by every change. A host writes the revision its self-fencer is armed under
    # into its heartbeat; the manager trusts a fence only under its own revision.
    revision: int = field(default=0, compare=False)

    def with_key(self, key: str, value: Any) -> HaConfig:
        """Return a copy with one ZStack key set; raises ConfigError on a bad key or value."""
        name = KEY_TO_FIELD.get(key)
        if name is None:
            raise ConfigError(f"unknown HA key {key!r} (known: {', '.join(sorted(KEY_TO_FIELD))})")
        return replace(self, **{name: coerce(key, name, value)}, revision=self.revision + 1)

    @property
    def watchdog_timeout_s(self) -> float:
        """How long a host's watchdog waits for the next pet before it resets the host."""
        return self.self_fencer_interval_s * self.self_fencer_watchdog_intervals

    def as_keys(self) -> dict[str, Any]:
        """The config as ZStack key -> value (durations in seconds)."""
        out: dict[str, Any] = {}
        for key, name in KEY_TO_FIELD.items():
            value = getattr(self, name)
            out[key] = value.value if isinstance(value, Strategy) else value
        return out


class ConfigError(ValueError):
    """A bad HA key or value; the message names which and why."""


KEY_TO_FIELD: dict[str, str] = {
    "ha.enable": "enable",
    "ha.strategy": "strategy",
    "ha.host.check.interval": "host_check_interval_s",
    "ha.host.check.maxAttempts": "host_check_max_attempts",
    "ha.host.check.successInterval": "host_check_success_interval_s",
    "ha.host.check.successTimes": "host_check_success_times",
    "ha.host.check.successRatio": "host_check_success_ratio",
    "ha.host.selfFencer.interval": "self_fencer_interval_s",
    "ha.host.selfFencer.maxAttempts": "self_fencer_max_attempts",
    "ha.host.selfFencer.storageChecker.timeout": "self_fencer_storage_timeout_s",
    "ha.host.selfFencer.watchdog.intervals": "self_fencer_watchdog_intervals",
    "ha.neverStopVm.scan.interval": "scan_interval_s",
    "ha.neverStopVm.retry.delay": "retry_delay_s",
    "ha.neverStopVm.gc.maxRetryIntervalTime": "retry_max_interval_s",
    "host.ping.interval": "ping_interval_s",
    "host.ping.maxFailure": "ping_max_failure",
    "host.ping.timeout": "ping_timeout_s",
    "ha.clockDrift.max": "clock_drift_max",
    "ha.host.joinGrace": "host_join_grace_s",
}

DURATION_KEYS = frozenset(k for k, f in KEY_TO_FIELD.items() if f.endswith("_s"))


def coerce(key: str, field: str, value: Any) -> Any:
    """Check and convert one value. Durations must already be seconds (int or float)."""
    kinds = {f.name: f.type for f in fields(HaConfig)}
    kind = kinds[field]
    if field == "enable":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    if field == "strategy":
        try:
            return Strategy(value)
        except ValueError:
            raise ConfigError(f"{key} must be Permissive or Force, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, not {value!r}")
    if kind == "int":
        least = 2 if field == "self_fencer_watchdog_intervals" else 1
        if value != int(value) or value < least:
            raise ConfigError(f"{key} must be a whole number of at least {least}, not {value!r}")
        return int(value)
    if field in ("host_check_success_ratio", "clock_drift_max"):
        if not 0 <= value <= 1:
            raise ConfigError(f"{key} must be between 0 and 1, not {value!r}")
        return float(value)
    if value <= 0:
        raise ConfigError(f"{key} must be a positive duration, not {value!r}")
    return float(value)


DEFAULT = HaConfig()

# Faster detection for a well-run management network; see docs/tuning.md for how
# these were chosen. Every scenario also passes with these.
TUNED = HaConfig(
    host_check_interval_s=1.0,
    host_check_max_attempts=3,
    host_check_success_interval_s=1.0,
    host_check_success_times=2,
    self_fencer_interval_s=1.0,
    self_fencer_max_attempts=5,
    self_fencer_storage_timeout_s=2.0,
    scan_interval_s=10.0,
    retry_delay_s=10.0,
    retry_max_interval_s=60.0,
    ping_interval_s=2.0,
    ping_max_failure=4,
    ping_timeout_s=0.5,
)

PROFILES: dict[str, HaConfig] = {"default": DEFAULT, "tuned": TUNED}
