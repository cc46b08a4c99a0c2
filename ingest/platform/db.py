"""PostgreSQL connections and schema migrations.

Every connection's `search_path` is the configured schema, so SQL elsewhere
names tables without a schema and tests isolate themselves with a schema each.
The migrations (`migrations/NNNN_*.sql`) are the whole schema, forward only.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

if TYPE_CHECKING:
    from asyncpg.pool import _InitCallback

__all__ = ["Connection", "advisory_lock_key", "connect", "create_pool", "migrate"]

# A connection of our own or one lent by a pool: every query helper takes either.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger(__name__)


def advisory_lock_key(name: str) -> int:
    """A stable 64-bit key for pg_advisory_lock, derived from a readable name."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


def _server_settings(schema: str, role: str | None = None) -> dict[str, str]:
    settings = {"search_path": schema, "application_name": "telemon"}
    if role is not None:
        settings["role"] = role  # as SET ROLE; RESET ALL on release keeps it
    return settings


async def create_pool(
    dsn: str,
    schema: str,
    size: int,
    init: _InitCallback[asyncpg.Record] | None = None,
    role: str | None = None,
) -> asyncpg.Pool:
    """A pool; `init` runs on every new physical connection (the pool may replace lost ones).
    With `role`, every connection acts as that role (the API's, under row-level security)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        server_settings=_server_settings(schema, role),
        init=init,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings=_server_settings(schema))


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("ingest.platform") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Bring `schema` up to date; returns the migrations applied now. Safe to run concurrently."""
    lock_key = advisory_lock_key(f"telemon-migrate:{schema}")
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET LOCAL search_path = "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in _migrations():
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
            log.info("migration applied: %s", name)
    return applied_now
