"""Running the pipeline and its storage: ingest, migrate, check, retention."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime

from ingest.cli.common import (
    Commands,
    connection_flags,
    http_flags,
    require_connections,
    run_until_signalled,
    with_connection,
)
from ingest.platform import Connection, Settings, collect_for_throughput

__all__ = ["add_commands"]

log = logging.getLogger("telemon")


def add_commands(commands: Commands) -> None:
    p = commands.command("ingest", _ingest, "Consume readings from Kafka into PostgreSQL.")
    connection_flags(p)
    p.add_argument("--consumer-group", help="TELEMON_CONSUMER_GROUP")
    http_flags(p)

    p = commands.command(
        "migrate",
        _migrate,
        "Create or upgrade the schema (and topics if TELEMON_CREATE_TOPICS=true).",
    )
    connection_flags(p)

    p = commands.command(
        "check", _check, "Probe a running service: exit 0 if ready (or live), else 1."
    )
    http_flags(p)
    p.add_argument("--live", action="store_true", help="liveness instead of readiness")

    p = commands.command(
        "retention",
        _retention,
        "Drop the daily partitions of readings older than --keep-days (UTC days).",
    )
    connection_flags(p)
    p.add_argument("--keep-days", type=int, required=True, help="today and the days before")
    p.add_argument("--dry-run", action="store_true", help="say what would be dropped")


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.platform import embedded_stack
    from ingest.service import prepare_storage, run_ingest

    async def work(stop: asyncio.Event) -> int:
        if settings.database_url is None:  # an embedded PostgreSQL, new: its owner migrates
            await prepare_storage(running)
        await run_ingest(running, stop)
        return 0

    collect_for_throughput()
    with embedded_stack(settings) as running:
        return run_until_signalled(work)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.service import prepare_storage

    require_connections(settings, kafka=settings.create_topics)  # the broker only for topics
    asyncio.run(prepare_storage(settings))
    log.info("schema %s is up to date", settings.database_schema)
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    path = "/healthz" if args.live else "/readyz"
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host  # noqa: S104
    url = f"http://{host}:{settings.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):  # 503 is an HTTPError, a URLError
        return 1


def _retention(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline.reading_days import ReadingDays, day_of_us

    if args.keep_days < 1:
        print("telemon retention: --keep-days must be at least 1", file=sys.stderr)
        return 2

    async def work(conn: Connection) -> None:
        today = day_of_us(int(datetime.now(UTC).timestamp() * 1e6))
        dropped = await ReadingDays().drop_before(
            conn, today - args.keep_days + 1, dry_run=args.dry_run
        )
        verb = "would drop" if args.dry_run else "dropped"
        log.info("%s %d partitions: %s", verb, len(dropped), ", ".join(dropped) or "none")

    return with_connection(settings, work)
