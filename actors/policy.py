"""The safety arithmetic shared by hosts and the manager.

A host fences itself (under Force) once ``ha.host.selfFencer.maxAttempts`` heartbeat
writes in a row went unacknowledged for a storage timeout each. Counted from the send
time L of its last acknowledged write, that is at the latest at its tick after
L + interval x maxAttempts + timeout, on its own clock. If its agent dies or hangs before
that tick, the host's watchdog, last petted no later than that tick, resets the host one
watchdog timeout later. The manager may treat the host's guests as gone only once a longer
window passed on *its* clock: both clocks drift by up to ``clock_drift_max``, and the kill
itself takes a moment.
"""

from __future__ import annotations

from actors.config import HaConfig
from actors.states import Strategy


def host_fence_after_s(config: HaConfig) -> float:
    """Host-clock seconds after its last acknowledged write by which a host has fenced:
    maxAttempts more writes, the last one's timeout, and the tick that notices."""
    interval = config.self_fencer_interval_s
    return interval * (config.self_fencer_max_attempts + 1) + config.self_fencer_storage_timeout_s


def host_guests_gone_after_s(config: HaConfig) -> float:
    """Host-clock seconds after its last acknowledged write by which a self-fencing host's
    guests on that pool are gone, whether its agent lives (its fencer's deadline) or died
    before that deadline (its last pet came no later, and the watchdog fires one timeout
    after it)."""
    return host_fence_after_s(config) + config.watchdog_timeout_s


def manager_fence_window_s(config: HaConfig) -> float:
    """Manager-clock seconds without a heartbeat change after which the host has fenced.

    Both clocks may be off by the drift bound in opposite directions; a final storage
    timeout covers the kill itself.
    """
    drift = config.clock_drift_max
    return host_guests_gone_after_s(config) * (1 + drift) / (1 - drift) + config.self_fencer_storage_timeout_s


def self_fencing_on(config: HaConfig) -> bool:
    """Hosts force-stop guests only under Force, and never while HA is switched off."""
    return config.enable and config.strategy is Strategy.FORCE
