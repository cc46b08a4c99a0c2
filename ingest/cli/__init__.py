"""`telemon`: one command, a subcommand per job. It parses, builds Settings, wires, exits.

Each module here declares one group of commands (`add_commands`) and their
handlers; `common` holds what they share (flags, a database connection,
signals, exit codes: 0 done, 1 failure, 2 bad configuration or arguments, 3 the
reject-ratio guard stopped ingestion, 130 interrupted).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from ingest.cli import clinicians, dead_letters, evidence, registry, rules, service, simulation
from ingest.cli.common import Commands, Handler, Terminated, setting_overrides, terminated
from ingest.platform import Settings, TelemonError

__all__ = ["main", "parser"]

log = logging.getLogger("telemon")

GROUPS = (service, registry, dead_letters, simulation, rules, clinicians, evidence)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="telemon",
        description="Telemonitoring device-data ingestion. Settings come from TELEMON_* "
        "environment variables; flags override them.",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    commands = Commands(p.add_subparsers(required=True, metavar="command"))
    for group in GROUPS:
        group.add_commands(commands)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # From here on SIGTERM unwinds cleanly; once the service loop runs it drains instead.
    signal.signal(signal.SIGTERM, terminated)
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        settings = Settings(**setting_overrides(args))
    except ValidationError as error:
        print(f"telemon: bad configuration:\n{error}", file=sys.stderr)
        return 2
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except TelemonError as error:
        log.error("%s", error)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `telemon rules list | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more is written to it
        return 0
    except Terminated:
        log.info("SIGTERM received while starting or stopping: stopped")
        return 0
