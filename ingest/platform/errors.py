"""The service's error taxonomy, and how third-party errors map onto it.

Bad input is not an error here: it is a `devices.decode.Rejection`. These are
the conditions that make the service retry or stop.
"""

from __future__ import annotations

import asyncpg

__all__ = [
    "ConfigurationError",
    "DatabaseConnectionLost",
    "DatabaseUnavailable",
    "RejectRatioError",
    "TelemonError",
    "is_transient_database_error",
]


class TelemonError(Exception):
    """Base of the errors telemon raises on purpose."""

    exit_code = 1


class ConfigurationError(TelemonError):
    """The settings cannot work (missing extra, unreachable embedded binary, ...)."""

    exit_code = 2


class DatabaseConnectionLost(TelemonError):  # noqa: N818 - a condition, not a bug
    """The connection died under an operation (asyncpg reports it as an InterfaceError)."""


class DatabaseUnavailable(TelemonError):  # noqa: N818 - a condition, not a bug
    """PostgreSQL refused or could not take a new connection (unreachable, wrong login)."""


class RejectRatioError(TelemonError):
    """Too many recent messages were rejected: the deployment is misconfigured."""

    exit_code = 3


# SQLSTATE classes worth retrying: connection exception, insufficient resources,
# operator intervention (admin shutdown, crash recovery), transaction rollback
# (serialization failure, deadlock).
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40"})


def is_transient_database_error(error: BaseException) -> bool:
    """True when retrying the same transaction later can succeed. Decided by class, not text."""
    if isinstance(error, OSError | TimeoutError | DatabaseConnectionLost | DatabaseUnavailable):
        return True  # the connection could not be made or timed out
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", None) or ""
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False
