"""The shell of a compute host: the host agent behaviour, libvirt, and the heartbeat files.

The management shell creates it on the host's own actor system (capability
``neverstop.host``) and boots it with a ``HostAgent``. Before the behaviour starts, the
libvirt port must have listed the guests once: an agent that answered pings with an
empty guest list while libvirt was still connecting would make its running guests look
stopped, and they could be started a second time elsewhere.

The host's watchdog (``real.watchdog``): with ``watchdog_state`` set (``neverstop real
agent --watchdog-state FILE``), the host agent gets a ``FileWatchdog`` on that file, which
a separate daemon watches, and pets it while self-fencing is on. Without one the agent
never claims its guests covered, so under Force the manager does not trust this host's
self-fence (its VMs wait unless a power controller proves the host off).

One agent per host: a management node that restarts, or that dropped the host from its
convention, creates a new agent shell on the host. The newest one owns the host (its pid
in ``<run_dir>/agent-HOST.owner``); an older shell that finds itself replaced stops
without touching the guests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from thespian.actors import ActorExitRequest

from actors.context import Behaviour
from actors.host_agent import HostAgent
from actors.inventory import host_addr
from actors.policy import self_fencing_on
from real.authz import MGMT_LOG
from real.domain import GuestTemplate
from real.heartbeat import FileHeartbeat
from real.libvirt_port import LibvirtHypervisor
from real.shell import Boot, Booted, NodeShell
from real.watchdog import WATCHDOG_KEY, FileWatchdog, WatchdogTrouble
from real.wire import active

READY_POLL_S = 0.2
OWNER_CHECK_S = 1.0


@dataclass(frozen=True)
class HostSpec:
    """Everything a host's shell needs besides its behaviour."""

    host: str
    libvirt_uri: str
    template: GuestTemplate
    pool_paths: dict[str, str] = field(default_factory=dict)  # shared pools: mount points
    migration: dict[str, tuple[str, str]] = field(default_factory=dict)  # host -> (libvirt, stream)
    shutdown_timeout_s: float = 30.0
    refresh_s: float = 2.0
    run_dir: str = "/run/neverstop"
    watchdog_state: str = ""  # the watchdog daemon's state file on this host; "" for none


@dataclass(frozen=True)
class AgentBoot(Boot):
    spec: HostSpec | None = None


@dataclass(frozen=True)
class _ReadyPoll:
    pass


@dataclass(frozen=True)
class _OwnerCheck:
    pass


class AgentShell(NodeShell):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.spec: HostSpec | None = None
        self.hv: LibvirtHypervisor | None = None
        self.heartbeat: FileHeartbeat | None = None
        self.watchdog: FileWatchdog | None = None
        self.pending_cells: tuple[tuple[str, Any], ...] = ()
        self.owner_token = f"{os.getpid()}:{id(self)}"

    def boot(self, msg: Boot) -> bool:
        assert isinstance(msg, AgentBoot) and msg.spec is not None
        spec = self.spec = msg.spec
        self.node = msg.node
        self.nodes.update(msg.nodes)
        self.routes.update(msg.routes)
        self.seed = msg.seed
        self._claim_host()
        mailbox = self.ensure_mailbox()
        me = host_addr(spec.host)
        self.hv = LibvirtHypervisor(
            spec.host, spec.libvirt_uri, lambda m: mailbox.post(me, m), spec.template,
            migration_target=lambda dest: spec.migration.get(dest, ("", "")),
            log=lambda text: mailbox.post("", _Log(text)),
            refresh_s=spec.refresh_s, shutdown_timeout_s=spec.shutdown_timeout_s)
        wire = active()
        assert wire is not None, "an agent shell runs only in a secured actor system (real.wire.install)"
        self.heartbeat = FileHeartbeat(spec.pool_paths, mailbox.post,
                                       lambda text: mailbox.post("", _Log(text)), wire.identity, MGMT_LOG)
        if spec.watchdog_state:
            host = spec.host

            def report(error: str) -> None:  # to the manager's status: its self-fence is not trusted
                self.route(MGMT_LOG, WatchdogTrouble(host, error))

            self.watchdog = FileWatchdog(spec.watchdog_state, self.log,
                                         key=wire.identity.local_key(WATCHDOG_KEY), report=report)
        self.hv.open()
        self.pending_cells = msg.cells
        self.log(f"agent shell for {spec.host} booted on pid {os.getpid()}; waiting for {spec.libvirt_uri}")
        self.wakeupAfter(timedelta(seconds=READY_POLL_S), payload=_ReadyPoll())
        self.wakeupAfter(timedelta(seconds=OWNER_CHECK_S), payload=_OwnerCheck())
        return False  # Booted once the host agent runs

    def _owner_file(self) -> str:
        assert self.spec is not None
        return os.path.join(self.spec.run_dir, f"agent-{self.spec.host}.owner")

    def _claim_host(self) -> None:
        path = self._owner_file()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(self.owner_token)
        os.replace(tmp, path)

    def _still_owner(self) -> bool:
        try:
            with open(self._owner_file()) as f:
                return f.read().strip() == self.owner_token
        except OSError:
            return True  # nobody else claimed it

    def on_wakeup(self, payload: Any) -> None:
        if isinstance(payload, _ReadyPoll):
            if self.hv is not None and self.hv.ready.is_set():
                cells, self.pending_cells = self.pending_cells, ()
                for address, sent in cells:
                    behaviour = rebuilt(sent)
                    self.spawn(address, behaviour, hypervisor=self.hv, watchdog=self.watchdog)
                    self._say_watchdog(behaviour)
                self.log(f"host agent started; guests running here: {sorted(self.hv.running())}")
                if self.booter is not None:
                    self.booted = True
                    self.send(self.booter, Booted(self.node))
            else:
                self.wakeupAfter(timedelta(seconds=READY_POLL_S), payload=_ReadyPoll())
        elif isinstance(payload, _OwnerCheck):
            if self._still_owner():
                self.wakeupAfter(timedelta(seconds=OWNER_CHECK_S), payload=_OwnerCheck())
            else:
                self.log("a newer agent shell owns this host: stopping this one (guests untouched)")
                self.on_exit()
                self.send(self.myAddress, ActorExitRequest())

    def _say_watchdog(self, behaviour: object) -> None:
        """Once at start: which watchdog covers this host, and what its absence costs."""
        if self.watchdog is not None:
            self.log(f"watchdog: petting {self.watchdog.path} while self-fencing is on")
        elif isinstance(behaviour, HostAgent) and self_fencing_on(behaviour.config):
            self.log("watchdog: none (no --watchdog-state): under Force the manager will not trust this "
                     "host's self-fencing; its VMs wait for a power controller when it is cut off")

    def route(self, to: str, msg: object) -> None:
        if to == "" and isinstance(msg, _Log):
            self.log(msg.text)
            return
        super().route(to, msg)

    def device(self, to: str, msg: object) -> bool:
        if to.startswith("pool/") and self.heartbeat is not None:
            return self.heartbeat.handle(to[len("pool/"):], msg)
        return False

    def on_exit(self) -> None:
        super().on_exit()
        if self.hv is not None:
            self.hv.close()
            self.hv = None


@dataclass(frozen=True)
class _Log:
    text: str


def rebuilt(behaviour: Behaviour) -> Behaviour:
    """The host agent the management node built and pickled, built again here from its
    constructor arguments.

    In a rolling upgrade (agents first) an older management node pickles a ``HostAgent``
    of its own version: unpickled by this version, it would lack the attributes that this
    version's ``__init__`` sets, and fail on its first message. A host agent has no state
    before it starts, so nothing is lost.
    """
    if isinstance(behaviour, HostAgent):
        return HostAgent(behaviour.name, tuple(behaviour.shared_pools), behaviour.config)
    return behaviour
