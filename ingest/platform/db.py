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

from ingest.platform.errors import ConfigurationError, DatabaseUnavailable

if TYPE_CHECKING:
    from asyncpg.pool import _InitCallback

__all__ = [
    "Connection",
    "advisory_lock_key",
    "connect",
    "create_pool",
    "migrate",
    "require_migrated",
]

# A connection of our own or one lent by a pool: every query helper takes either.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger(__name__)


def advisory_lock_key(name: str) -> int:
    """A stable 64-bit key for pg_advisory_lock, derived from a readable name."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


def _server_settings(schema: str, role: str | None = None) -> dict[str, str]:
    # No JIT compilation: telemon's statements are short, and where the planner's estimate
    # is high (row-level security makes it so) compiling them cost a second a query.
    settings = {"search_path": schema, "application_name": "telemon", "jit": "off"}
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
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            server_settings=_server_settings(schema, role),
            init=init,
        )
    except _CANNOT_CONNECT as error:
        raise _unavailable(error) from error
    assert pool is not None
    return pool


async def connect(dsn: str, schema: str, role: str | None = None) -> asyncpg.Connection:
    """A connection of its own; with `role`, it acts as that role."""
    try:
        return await asyncpg.connect(dsn, server_settings=_server_settings(schema, role))
    except _CANNOT_CONNECT as error:
        raise _unavailable(error) from error


# Why a new connection fails: unreachable, refused, a login or role it may not use.
_CANNOT_CONNECT = (
    OSError,
    TimeoutError,
    asyncpg.InvalidAuthorizationSpecificationError,  # 28xxx: no such login, bad password
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.InsufficientPrivilegeError,  # may not SET ROLE to the service's role
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def _unavailable(error: BaseException) -> DatabaseUnavailable:
    # The DSN is never repeated: it may hold a password.
    return DatabaseUnavailable(f"cannot connect to PostgreSQL: {type(error).__name__}: {error}")


async def require_migrated(conn: Connection) -> None:
    """Refuse to run on a schema that lacks a migration this code has: services never
    migrate (their roles own nothing); `telemon migrate` does, as the tables' owner."""
    try:
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
    except (asyncpg.UndefinedTableError, asyncpg.InsufficientPrivilegeError):
        done = set()
    missing = [name for name, _ in _migrations() if name not in done]
    if missing:
        raise ConfigurationError(
            f"the schema lacks migrations {', '.join(missing)}: run `telemon migrate` "
            "(as the tables' owner) first"
        )


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
