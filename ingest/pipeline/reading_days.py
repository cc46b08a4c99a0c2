"""The day tables of `readings`, created before a batch needs them.

`readings` is range-partitioned in PostgreSQL by UTC day of measured_at: each
day is a table of its own, readings_pYYYYMMDD. Creation happens outside the
batch transaction (DDL takes a lock on the parent), is idempotent, and
tolerates another member creating it first; retention drops whole days.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta

import asyncpg

from ingest.platform import Connection

__all__ = ["US_PER_DAY", "ReadingDays", "day_of_us", "day_table"]

log = logging.getLogger(__name__)

US_PER_DAY = 86_400_000_000
_EPOCH = date(1970, 1, 1)


def day_of_us(epoch_us: int) -> int:
    return epoch_us // US_PER_DAY


def day_table(day: int) -> str:
    return f"readings_p{(_EPOCH + timedelta(days=day)):%Y%m%d}"


def _day_of_name(name: str) -> int:
    return (datetime.strptime(name.removeprefix("readings_p"), "%Y%m%d").date() - _EPOCH).days


class ReadingDays:
    """Knows which day tables exist and creates the missing ones."""

    def __init__(self) -> None:
        self._known: set[int] = set()

    async def load(self, conn: Connection) -> None:
        names = await conn.fetch(
            """
            SELECT c.relname FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'readings'::regclass
            """
        )
        self._known = {_day_of_name(r["relname"]) for r in names}

    async def ensure(self, conn: Connection, days: Iterable[int]) -> None:
        for day in sorted(set(days) - self._known):
            try:
                # Made by the tables' owner (migration 0009): only the owner of a
                # partitioned table may add partitions, and ingest owns nothing.
                await conn.execute("SELECT create_reading_day($1)", _EPOCH + timedelta(days=day))
                log.info("day table %s is there", day_table(day))
            except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                pass  # another member created it between our check and our CREATE
            self._known.add(day)

    async def ensure_ahead(self, conn: Connection, today: int, days_ahead: int) -> None:
        await self.ensure(conn, range(today, today + days_ahead + 1))

    async def drop_before(self, conn: Connection, day: int, *, dry_run: bool = False) -> list[str]:
        """Retention: drop the tables of the days before `day` (their readings go with
        them); returns their names. A process that still believes one exists finds out at
        its next write to that day and creates it again (BatchWriter.write)."""
        await self.load(conn)
        old = sorted(d for d in self._known if d < day)
        if not dry_run:
            for d in old:
                await conn.execute(f"DROP TABLE IF EXISTS {day_table(d)}")
                log.info("dropped day table %s", day_table(d))
            self._known.difference_update(old)
        return [day_table(d) for d in old]
