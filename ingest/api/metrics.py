"""The clinicians' API's Prometheus metrics: live feeds, refusals, open episodes and how fast
they are handled (no label names a patient or a team)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from alerts.model import Severity

__all__ = ["ApiMetrics", "refresh_episode_board"]

SEVERITIES = [s.label for s in Severity]


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.clients = Gauge(
            "telemon_feed_clients", "Live feed (SSE) connections open.", registry=registry
        )
        self.events_sent = Counter(
            "telemon_feed_events_sent", "Episode events sent on live feeds.", registry=registry
        )
        self.open_episodes = Gauge(
            "telemon_episodes_open",
            "Open episodes (not acknowledged, not snoozed), by severity; every team's.",
            ["severity"],
            registry=registry,
        )
        self.oldest_open = Gauge(
            "telemon_episodes_oldest_open_seconds",
            "The longest wait of an open episode at its severity, by severity (0: none).",
            ["severity"],
            registry=registry,
        )
        handling_buckets = (60, 300, 900, 1800, 3600, 7200, 14_400, 43_200, 86_400, 259_200)
        self.time_to_acknowledge = Histogram(
            "telemon_episodes_time_to_acknowledge_seconds",
            "From an episode reaching its severity to a clinician acknowledging it, by severity.",
            ["severity"],
            buckets=handling_buckets,
            registry=registry,
        )
        self.time_to_resolve = Histogram(
            "telemon_episodes_time_to_resolve_seconds",
            "From an episode reaching its severity to a clinician resolving it, by severity.",
            ["severity"],
            buckets=handling_buckets,
            registry=registry,
        )
        for severity in SEVERITIES:
            for metric in (self.open_episodes, self.oldest_open):
                metric.labels(severity)
        self.refused = Counter(
            "telemon_api_refused",
            "API requests refused, by HTTP status (400, 401, 403, 404, 409, 429, ...).",
            ["status"],
            registry=registry,
        )
        self.errors = Counter(
            "telemon_api_errors",
            "API requests that failed on our side, by HTTP status (500, 503).",
            ["status"],
            registry=registry,
        )
        self.audit_failures = Counter(
            "telemon_api_audit_failures",
            "Audit records PostgreSQL would not take (written to the log instead).",
            registry=registry,
        )
        self.feeds_expired = Counter(
            "telemon_feed_expired",
            "Live feeds ended because their token expired.",
            registry=registry,
        )


async def refresh_episode_board(
    pool: asyncpg.Pool, metrics: ApiMetrics, every_s: float = 15.0
) -> None:
    """Keep the open-episode gauges current (a background task of the API)."""
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            rows = await pool.fetch("SELECT * FROM open_episode_board()")
            board = {r["severity"]: r for r in rows}
            now = datetime.now(UTC)
            for severity in Severity:
                label, row = severity.label, board.get(severity.value)
                metrics.open_episodes.labels(label).set(row["open_episodes"] if row else 0)
                age = (now - row["oldest_since"]).total_seconds() if row else 0.0
                metrics.oldest_open.labels(label).set(age)
        await asyncio.sleep(every_s)
