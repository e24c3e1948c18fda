"""The test build of the daemons: ``python -m real.hooks real manager|agent ...``.

The same daemons with one more control command, ``crash VM`` (the guest dies as if
qemu crashed), which the conformance tests play against the libvirt test driver. It is
not reachable from ``neverstop real ...``: the production units run the installed
command, whose management shell does not know the command and places agent shells that
do not know the message. Even here the hook works only on hosts whose libvirt is the
test driver (its guests are not real): a real guest's memory is never dumped for a test.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from real.agent import AgentShell
from real.management import ControlReply, ManagementShell


@dataclass(frozen=True)
class InjectCrash:
    """Make a guest crash (test driver: a core dump with VIR_DUMP_CRASH)."""

    vm: str


class HookedAgentShell(AgentShell):
    def on_other(self, msg: Any, sender: Any) -> None:
        if not isinstance(msg, InjectCrash):
            super().on_other(msg, sender)
        elif self.spec is None or self.hv is None or not self.spec.libvirt_uri.startswith("test:"):
            self.log(f"crash of {msg.vm} refused: the hook serves the libvirt test driver only")
        else:
            try:
                self.hv.crash(msg.vm)
            except Exception as err:  # a test hook: say why it did not work
                self.log(f"crash of {msg.vm} not injected: {err}")


class HookedManagementShell(ManagementShell):
    agent_shell = HookedAgentShell

    def other_command(self, cmd: str, args: dict[str, Any]) -> ControlReply:
        if cmd != "crash":
            return super().other_command(cmd, args)
        vm = self._vm(args)
        where = self.views.get(vm, ("", None))[1]
        addr = self.nodes.get(where or "")
        if addr is None:
            return ControlReply(False, f"{vm} runs on no known host")
        self.send(addr, InjectCrash(vm))
        return ControlReply(True)


def main() -> int:
    from neverstop.cli import main as cli_main
    from real import daemon

    daemon.use_management_shell(HookedManagementShell)
    return cli_main()


if __name__ == "__main__":
    # Run through the module's own name: the shells and messages pickled to the hosts must
    # be real.hooks.*, which the hosts can import, not __main__.*.
    from real.hooks import main as hooked_main

    sys.exit(hooked_main())
