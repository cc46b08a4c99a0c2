"""The platform: what every part of telemon stands on, and nothing of telemon's own.

Settings, PostgreSQL (pools, connections, the schema's migrations), the error
taxonomy, the clock, Kafka clients, the HTTP server for probes and metrics,
retries, failpoints, process helpers and the embedded stack. Other packages
import these names from here, never from the modules behind them (the import
contracts in pyproject.toml hold them to it).
"""

from ingest.platform.clock import Clock, SystemClock
from ingest.platform.db import (
    Connection,
    advisory_lock_key,
    connect,
    create_pool,
    migrate,
    require_migrated,
)
from ingest.platform.embedded import EmbeddedKafka, EmbeddedPostgres, embedded_stack
from ingest.platform.errors import (
    ConfigurationError,
    DatabaseConnectionLost,
    DatabaseUnavailable,
    RejectRatioError,
    TelemonError,
    is_transient_database_error,
)
from ingest.platform.failpoints import EXIT_STATUS, failpoint, fault
from ingest.platform.http import Health, HttpServer, health_routes, probe_forever
from ingest.platform.kafka import (
    client_options,
    ensure_topics,
    make_consumer,
    make_producer,
    make_tail_reader,
)
from ingest.platform.processes import (
    cancel_tasks,
    collect_for_throughput,
    die_with_parent,
    free_port,
)
from ingest.platform.retry import retry_transient
from ingest.platform.settings import Settings

__all__ = [
    "EXIT_STATUS",
    "Clock",
    "ConfigurationError",
    "Connection",
    "DatabaseConnectionLost",
    "DatabaseUnavailable",
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "Health",
    "HttpServer",
    "RejectRatioError",
    "Settings",
    "SystemClock",
    "TelemonError",
    "advisory_lock_key",
    "cancel_tasks",
    "client_options",
    "collect_for_throughput",
    "connect",
    "create_pool",
    "die_with_parent",
    "embedded_stack",
    "ensure_topics",
    "failpoint",
    "fault",
    "free_port",
    "health_routes",
    "is_transient_database_error",
    "make_consumer",
    "make_producer",
    "make_tail_reader",
    "migrate",
    "probe_forever",
    "require_migrated",
    "retry_transient",
]
