"""The safety arithmetic shared by hosts and the manager.

A host fences itself (under Force) once ``host_fence_after_s`` passed, on its own clock,
since it last sent a heartbeat write that was acknowledged. The manager may treat that
host's guests as gone only once a longer window passed on *its* clock: the host checks
once per heartbeat interval, clocks drift by up to ``clock_drift_max`` each, and a write
in flight may still be acknowledged up to one storage timeout after it was sent.
"""

from __future__ import annotations

from actors.config import HaConfig
from actors.states import Strategy


def host_fence_after_s(config: HaConfig) -> float:
    """Seconds without an acknowledged heartbeat after which a host kills its guests."""
    return config.self_fencer_interval_s * config.self_fencer_max_attempts


def manager_fence_window_s(config: HaConfig) -> float:
    """Manager-clock seconds without a heartbeat advance after which the host has fenced.

    The host notices at its next tick (one more interval); both clocks may be off by the
    drift bound in opposite directions; a final storage timeout covers the kill itself.
    """
    host_s = config.self_fencer_interval_s * (config.self_fencer_max_attempts + 1)
    drift = config.clock_drift_max
    return host_s * (1 + drift) / (1 - drift) + config.self_fencer_storage_timeout_s


def self_fencing_on(config: HaConfig) -> bool:
    """Hosts force-stop guests only under Force, and never while HA is switched off."""
    return config.enable and config.strategy is Strategy.FORCE
