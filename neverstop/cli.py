"""The ``neverstop`` command line: the front door, above both runtimes.

It imports the command groups of the simulator (``sim.cli``) and of real mode
(``real.cli``); neither runtime imports the other or this module. A command line builds
only the parsers of the group it names, so that a daemon started as ``neverstop real
agent`` does not import the simulator's fuzzer and sweeps (and networkx with them) into
each of its processes.

Exit codes: 0 all good, 1 the command ran and failed (a scenario, a daemon), 2 bad input
(a malformed file or bad arguments); never a traceback for a user's mistake.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from actors.config import ConfigError
from formats.errors import EXIT_USAGE, Parser, UsageError
from real import cli as real_cli
from sim import cli as sim_cli


def named_group(argv: Sequence[str] | None) -> str | None:
    """The command group a command line names (its first word), if any."""
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    return words[0] if words else None


def build_parser(group: str | None = None) -> argparse.ArgumentParser:
    """Every command, or with ``group`` only what that group needs."""
    top = Parser(prog="neverstop", description="VM high availability (ZStack NeverStop) as actors: "
                 "simulate it, measure it, run it.")
    groups = top.add_subparsers(dest="group", required=True, parser_class=Parser)
    sim_cli.register(groups, full=group in (None, "sim"))
    real_cli.register(groups)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser(named_group(argv)).parse_args(argv)
        code: int = args.func(args)
        return code
    except UsageError as err:
        print(str(err), file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, OSError) as err:
        print(f"neverstop: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("neverstop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
