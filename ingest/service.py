"""Wire the ingest service from Settings and run it until asked to stop.

The pipeline is composed here with the steps the settings ask for (the alert
rules unless `alerts_enabled` is false), beside the outbox relays, the parking
leader (dead letters of unknown devices replayed on enrolment), the probes and
the HTTP server for /metrics, /healthz and /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.applications import Starlette

from alerts.engine import Engine
from alerts.metrics import AlertMetrics
from alerts.outbox import EpisodeEventOutbox
from alerts.programmes import load_config
from alerts.step import AlertStep
from devices.decode import Decoder
from devices.registry import sync_reference_data
from ingest.pipeline.dead_letters import DeadLetterOutbox
from ingest.pipeline.decode_pool import DecodePool
from ingest.pipeline.metrics import IngestMetrics
from ingest.pipeline.parking import ParkingLeader
from ingest.pipeline.reading_days import US_PER_DAY, ReadingDays
from ingest.pipeline.registry_cache import RegistryCache
from ingest.pipeline.relay import Outbox, OutboxRelay
from ingest.pipeline.stages import IngestPipeline, Totals
from ingest.pipeline.steps import PipelineStep
from ingest.pipeline.writer import BatchWriter
from ingest.platform import (
    Clock,
    ConfigurationError,
    Health,
    HttpServer,
    Settings,
    SystemClock,
    cancel_tasks,
    connect,
    create_pool,
    ensure_topics,
    health_routes,
    make_consumer,
    make_producer,
    make_tail_reader,
    migrate,
    probe_forever,
    require_migrated,
)

__all__ = ["INGEST_ROLE", "prepare_storage", "run_ingest"]

log = logging.getLogger(__name__)

# Shutdown: the drain takes at most settings.drain_timeout_s, then leaving the group this.
_LEAVE_GROUP_S = 3.0

# The role ingest and its relays act as (migration 0009): it owns nothing, so ingest never
# migrates; `telemon migrate` does, as the tables' owner.
INGEST_ROLE = "telemon_ingest"


async def prepare_storage(settings: Settings) -> None:
    """Migrate the schema and create topics if asked: what `telemon migrate` does, logged
    in as the tables' owner (the only command that changes the schema)."""
    assert settings.database_url is not None
    conn = await connect(settings.database_url, settings.database_schema)
    try:
        await migrate(conn, settings.database_schema)
        await sync_reference_data(conn)
    finally:
        await conn.close()
    if settings.create_topics:
        await ensure_topics(settings)


async def run_ingest(
    settings: Settings,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry = REGISTRY,
    clock: Clock | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> Totals:
    """Consume until `stop` is set; drain; return what was done.

    `on_ready` is called with the HTTP port once everything has started.
    """
    assert settings.database_url is not None
    clock = clock or SystemClock()
    started = time.monotonic()
    if settings.create_topics:
        await ensure_topics(settings)
    metrics = IngestMetrics(registry)
    alert_metrics = AlertMetrics(registry)
    health = Health(clock)
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(
            settings.database_url,
            settings.database_schema,
            settings.database_pool_size,
            role=INGEST_ROLE,
        )
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await require_migrated(conn)
            if not await conn.fetchval(
                "SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user"
            ):
                raise ConfigurationError(
                    f"{INGEST_ROLE} must bypass row-level security (COPY refuses it): a "
                    f"superuser runs ALTER ROLE {INGEST_ROLE} BYPASSRLS (docs/operations.md)"
                )
        writer_pool = await create_pool(
            settings.database_url,
            settings.database_schema,
            2,
            init=BatchWriter.prepare,
            role=INGEST_ROLE,
        )
        stack.push_async_callback(writer_pool.close)
        days = await _reading_days(pool, settings, clock)

        decode = DecodePool(
            Decoder(
                max_message_bytes=settings.max_message_bytes,
                future_tolerance_s=settings.future_tolerance_s,
            ),
            workers=settings.decode_workers,
        )
        stack.callback(decode.close)
        await decode.start()
        steps: list[PipelineStep] = []
        if settings.alerts_enabled:
            engine = Engine(load_config(settings.alert_programmes_file))
            steps.append(AlertStep(engine, pool, clock, alert_metrics))
        consumer = make_consumer(settings)
        pipeline = IngestPipeline(
            settings=settings,
            consumer=consumer,
            pool=pool,
            writer_pool=writer_pool,
            decode=decode,
            resolver=RegistryCache(
                pool,
                capacity=settings.registry_cache_size,
                negative_ttl_s=settings.registry_negative_ttl_s,
                clock=clock,
            ),
            writer=BatchWriter(consumer_group=settings.consumer_group, days=days, clock=clock),
            metrics=metrics,
            health=health,
            clock=clock,
            steps=steps,
        )
        consumer.subscribe([settings.readings_topic], listener=pipeline.rebalance_listener())
        await consumer.start()
        # aiokafka does not call the rebalance listener on stop(): the pipeline drains first.
        stack.push_async_callback(_leave_group, consumer)

        producer = make_producer(settings)
        await producer.start()
        stack.push_async_callback(producer.stop)

        http = HttpServer(
            Starlette(routes=health_routes(health, registry)),
            settings.http_host,
            settings.http_port,
        )
        await http.start()
        stack.push_async_callback(http.stop)
        log.info("ingest: metrics and probes on http://%s:%d", settings.http_host, http.port)

        def relay(
            outbox: Outbox, published: Callable[[int], None], backlog: Callable[[int], None]
        ) -> OutboxRelay:
            assert settings.database_url is not None
            return OutboxRelay(
                outbox,
                dsn=settings.database_url,
                schema=settings.database_schema,
                role=INGEST_ROLE,
                producer=producer,
                tail_reader=lambda: make_tail_reader(settings),
                on_published=published,
                on_backlog=backlog,
            )

        background = [
            asyncio.create_task(
                relay(
                    DeadLetterOutbox(settings.dead_letter_topic),
                    metrics.dead_letters_published.inc,
                    metrics.dead_letter_backlog.set,
                ).run(),
                name="telemon-dlq-relay",
            ),
            asyncio.create_task(
                relay(
                    EpisodeEventOutbox(settings.alerts_topic),
                    alert_metrics.events_published.inc,
                    alert_metrics.event_backlog.set,
                ).run(),
                name="telemon-alerts-relay",
            ),
            asyncio.create_task(
                ParkingLeader(
                    dsn=settings.database_url,
                    schema=settings.database_schema,
                    topic=settings.readings_topic,
                    producer=producer,
                    clock=clock,
                    metrics=metrics,
                    poll_s=settings.dead_letter_park_poll_s,
                ).run(),
                name="telemon-parking",
            ),
            asyncio.create_task(
                probe_forever(health, lambda: pool.fetchval("SELECT 1"), consumer.topics),
                name="telemon-probes",
            ),
            asyncio.create_task(
                _keep_days_ahead(pool, days, settings, clock), name="telemon-reading-days"
            ),
        ]
        stack.push_async_callback(cancel_tasks, background)
        if on_ready is not None:
            on_ready(http.port)
        try:
            await pipeline.run(stop)
        finally:
            t = pipeline.totals
            log.info(
                "ingest stopped after %.1f s: %d messages, %d readings stored, %d duplicates, "
                "%d rejected, %d batches",
                time.monotonic() - started,
                t.messages,
                t.stored,
                t.duplicates,
                t.rejected,
                t.batches,
            )
        return pipeline.totals


async def _reading_days(pool: asyncpg.Pool, settings: Settings, clock: Clock) -> ReadingDays:
    days = ReadingDays()
    async with pool.acquire() as conn:
        await days.load(conn)
        today = clock.now_ms() * 1000 // US_PER_DAY
        await days.ensure_ahead(conn, today, settings.partitions_ahead_days)
    return days


async def _keep_days_ahead(
    pool: asyncpg.Pool, days: ReadingDays, settings: Settings, clock: Clock
) -> None:
    while True:
        await asyncio.sleep(3600)
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            async with pool.acquire() as conn:
                today = clock.now_ms() * 1000 // US_PER_DAY
                await days.ensure_ahead(conn, today, settings.partitions_ahead_days)


async def _leave_group(consumer: AIOKafkaConsumer) -> None:
    """Stop the consumer, giving up after a few seconds: stop() first waits for a rebalance
    under way, which the broker may hold for as long as departed members are expected."""
    try:
        await asyncio.wait_for(consumer.stop(), _LEAVE_GROUP_S)
    except TimeoutError:
        log.warning(
            "left the consumer group without a goodbye (a rebalance was under way): the "
            "broker hands this member's partitions over after its session timeout"
        )
