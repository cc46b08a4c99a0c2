"""What every command shares: declaring commands and their flags, a database connection,
signals, and exit codes.

Exit codes: 0 done; 1 failure; 2 bad configuration or arguments; 3 the
reject-ratio guard stopped ingestion; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.platform import ConfigurationError, Connection, Settings, connect

__all__ = [
    "Commands",
    "Handler",
    "Terminated",
    "api_address_flags",
    "connection_flags",
    "http_flags",
    "instant",
    "log_to_file",
    "require_connections",
    "run_until_signalled",
    "terminated",
    "with_connection",
]

log = logging.getLogger("telemon")

Handler = Callable[[argparse.Namespace, Settings], int]

# Flags that override a setting of the same name (TELEMON_<NAME> otherwise).
SETTING_FLAGS = (
    "database_url",
    "kafka_bootstrap",
    "http_port",
    "http_host",
    "readings_topic",
    "consumer_group",
    "database_schema",
    "api_host",
    "api_port",
)


class Commands:
    """The subcommands of `telemon` (or of one of its groups), as they are declared."""

    def __init__(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        self._subparsers = subparsers

    def command(self, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = self._subparsers.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(handler=handler)
        return parser

    def group(self, name: str, help_text: str) -> Commands:
        """A command with actions of its own (`telemon rules list`)."""
        parser = self._subparsers.add_parser(name, help=help_text, description=help_text)
        return Commands(parser.add_subparsers(required=True, metavar="action"))


def connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="TELEMON_DATABASE_URL")
    p.add_argument("--database-schema", help="TELEMON_DATABASE_SCHEMA")
    p.add_argument("--kafka-bootstrap", help="TELEMON_KAFKA_BOOTSTRAP")
    p.add_argument("--readings-topic", help="TELEMON_READINGS_TOPIC")


def http_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-host", help="TELEMON_HTTP_HOST")
    p.add_argument("--http-port", type=int, help="TELEMON_HTTP_PORT")


def api_address_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-host", help="TELEMON_API_HOST")
    p.add_argument("--api-port", type=int, help="TELEMON_API_PORT")


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags."""
    return {f: getattr(args, f) for f in SETTING_FLAGS if getattr(args, f, None) is not None}


def instant(text: str) -> datetime:
    """An ISO date or time; UTC when it gives no offset."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def log_to_file(path: Path) -> None:
    """Send the logs to `path`, keeping only errors on the terminal (the demo's screen is its
    banner and its progress)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    formatter = root.handlers[0].formatter if root.handlers else None
    for handler in list(root.handlers):
        root.removeHandler(handler)
    into_file = logging.FileHandler(path, encoding="utf-8")
    errors = logging.StreamHandler()
    errors.setLevel(logging.ERROR)
    for handler in (into_file, errors):
        handler.setFormatter(formatter)
        root.addHandler(handler)


def require_connections(settings: Settings, *, kafka: bool = True) -> None:
    missing = [
        name
        for name, value in (
            ("TELEMON_DATABASE_URL", settings.database_url),
            ("TELEMON_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
        )
        if value is None and (kafka or name != "TELEMON_KAFKA_BOOTSTRAP")
    ]
    if missing:
        raise ConfigurationError(f"set {' and '.join(missing)} (telemon demo prints them)")


def with_connection(
    settings: Settings, work: Callable[[Connection], Coroutine[Any, Any, None]]
) -> int:
    """Run `work` on one database connection (the configured one), then exit 0."""
    require_connections(settings, kafka=False)

    async def run() -> int:
        assert settings.database_url is not None
        conn = await connect(settings.database_url, settings.database_schema)
        try:
            await work(conn)
        finally:
            await conn.close()
        return 0

    return asyncio.run(run())


class Terminated(BaseException):
    """SIGTERM before the service loop runs (during start-up): unwind and stop."""


def terminated(signum: int, frame: object) -> None:
    raise Terminated


def run_until_signalled(work: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run `work(stop)` with SIGTERM and SIGINT setting `stop` (a second SIGINT aborts)."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            log.info("%s received: draining", signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        return await work(stop)

    try:
        return asyncio.run(runner())
    finally:
        signal.signal(signal.SIGTERM, terminated)  # asyncio restored the default on exit
