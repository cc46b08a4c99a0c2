"""Relay outbox rows from PostgreSQL to a Kafka topic, each row exactly once.

The batch transaction writes outbox rows; the topic never announces what is
not durable. One relay per outbox per database runs (a PostgreSQL advisory
lock elects it; the others wait). It publishes unpublished rows in id order,
chunk by chunk, and marks a chunk published once every record of it is acked.

Every record carries its row id in the `telemon.outbox.id` header. After a
crash or a failed send, part of a chunk may be on the topic but not marked:
the relay reads the tail of each partition, marks the rows already there, and
only then sends the rest. Per-partition order is kept because rows are sent in
id order and the producer keeps one batch in flight per partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from ingest.platform import Connection, DatabaseUnavailable, advisory_lock_key, connect, fault

__all__ = ["OUTBOX_ID_HEADER", "Outbox", "OutboxRecord", "OutboxRelay"]

log = logging.getLogger(__name__)

OUTBOX_ID_HEADER = "telemon.outbox.id"
NOTIFY_CHANNEL = "telemon_outbox"


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition_hint: int  # the outbox decides the target partition from this and the count


class Outbox(Protocol):
    """One outbox table and the topic it feeds."""

    name: str
    topic: str

    async def unpublished(self, conn: Connection, limit: int) -> list[OutboxRecord]: ...

    async def mark_published(self, conn: Connection, ids: Sequence[int]) -> None: ...

    async def backlog(self, conn: Connection) -> int: ...

    def partition(self, record: OutboxRecord, partitions: int) -> int: ...


class OutboxRelay:
    def __init__(
        self,
        outbox: Outbox,
        *,
        dsn: str,
        schema: str,
        role: str | None = None,
        producer: AIOKafkaProducer,
        tail_reader: Callable[[], AIOKafkaConsumer],
        chunk: int = 500,
        on_published: Callable[[int], None] = lambda n: None,
        on_backlog: Callable[[int], None] = lambda n: None,
        idle_poll_s: float = 1.0,
        retry_s: float = 2.0,
    ) -> None:
        self._outbox = outbox
        self._dsn = dsn
        self._schema = schema
        self._role = role
        self._producer = producer
        self._tail_reader = tail_reader
        self._chunk = chunk
        self._on_published = on_published
        self._on_backlog = on_backlog
        self._idle_poll_s = idle_poll_s
        self._retry_s = retry_s
        self._wake = asyncio.Event()
        self.is_leader = False

    async def run(self) -> None:
        """Relay forever; survives database and broker outages."""
        lock_key = advisory_lock_key(f"telemon-relay:{self._schema}:{self._outbox.name}")
        while True:
            try:
                await self._run_once(lock_key)
            except asyncio.CancelledError:
                raise
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                DatabaseUnavailable,
                KafkaError,
            ) as error:
                log.warning(
                    "%s relay: %s; retrying in %.0f s", self._outbox.name, error, self._retry_s
                )
            self.is_leader = False
            await asyncio.sleep(self._retry_s)

    async def _run_once(self, lock_key: int) -> None:
        conn = await connect(self._dsn, self._schema, self._role)
        try:
            # Another relay leads while the lock is taken: poll it.
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key):  # noqa: ASYNC110
                await asyncio.sleep(self._retry_s)
            self.is_leader = True
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
            await self._recover(conn)
            while True:
                sent = await self._publish_chunk(conn)
                if sent < self._chunk:
                    self._on_backlog(await self._outbox.backlog(conn))
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _publish_chunk(self, conn: Connection) -> int:
        records = await self._outbox.unpublished(conn, self._chunk)
        if not records:
            return 0
        partitions = await self._partition_count()
        sent: list[asyncio.Future[object]] = []
        try:
            for r in records:
                if fault(f"relay_send_{self._outbox.name}"):
                    raise KafkaConnectionError(f"failpoint: {self._outbox.topic} unreachable")
                sent.append(
                    await self._producer.send(
                        self._outbox.topic,
                        key=r.key,
                        value=r.value,
                        partition=self._outbox.partition(r, partitions),
                        headers=[*r.headers, (OUTBOX_ID_HEADER, str(r.id).encode())],
                    )
                )
            await asyncio.gather(*sent)
        except KafkaError:
            # Some records may be on the topic already, or still on their way: let every
            # send settle, then find out what arrived before sending again.
            await asyncio.gather(*sent, return_exceptions=True)
            await self._recover(conn)
            self._on_backlog(await self._outbox.backlog(conn))  # an outage shows as a backlog
            raise
        await self._outbox.mark_published(conn, [r.id for r in records])
        self._on_published(len(records))
        return len(records)

    async def _partition_count(self) -> int:
        partitions = await self._producer.partitions_for(self._outbox.topic)
        return len(partitions)

    async def _recover(self, conn: Connection) -> None:
        """Mark rows whose record is already on the topic (sent before a crash or a failure)."""
        tails = await self._tail_ids()
        if not tails:
            return
        partitions = await self._partition_count()
        pending = await self._outbox.unpublished(conn, self._chunk)
        already = [
            r.id for r in pending if r.id <= tails.get(self._outbox.partition(r, partitions), 0)
        ]
        if already:
            await self._outbox.mark_published(conn, already)
            log.info(
                "%s relay: %d rows were already on %s",
                self._outbox.name,
                len(already),
                self._outbox.topic,
            )

    async def _tail_ids(self) -> dict[int, int]:
        """Per partition, the highest outbox id among the last records of the topic."""
        consumer = self._tail_reader()
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self._outbox.topic) or set()
            tps = [TopicPartition(self._outbox.topic, p) for p in partitions]
            if not tps:
                return {}
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            tails: dict[int, int] = {}
            for tp in tps:
                end = ends[tp]
                if end == 0:
                    continue
                consumer.seek(tp, max(0, end - 16))
                for _ in range(32):  # bounded: control records may leave a gap at the end
                    if await consumer.position(tp) >= end:
                        break
                    fetched = await consumer.getmany(tp, timeout_ms=1000)
                    for record in fetched.get(tp, []):
                        ids = [int(v) for k, v in record.headers if k == OUTBOX_ID_HEADER]
                        if ids:
                            tails[tp.partition] = max(tails.get(tp.partition, 0), *ids)
            return tails
        finally:
            await consumer.stop()
