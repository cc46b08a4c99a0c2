"""Kafka commits, off the writer's path.

The offsets that matter are stored in PostgreSQL with the data (ingest.writer) and
sought on assignment; the Kafka commit only keeps the group's view (lag tools,
`kafka-consumer-groups`) current. So the writer does not wait for it: it hands each
batch's durable offsets over and goes on with the next batch, and one task commits
the latest offsets handed over, coalescing those that arrive meanwhile. Only offsets
made durable are ever handed over, so nothing is committed ahead of PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

__all__ = ["KafkaCommitter"]

log = logging.getLogger(__name__)


class KafkaCommitter:
    def __init__(self, consumer: AIOKafkaConsumer, topic: str, failures: Counter) -> None:
        self._consumer = consumer
        self._topic = topic
        self._failures = failures
        self._waiting: dict[int, int] = {}  # partition -> next offset, durable, not committed
        self._handed_over = asyncio.Event()
        self._committed = asyncio.Event()  # set while nothing waits
        self._committed.set()

    def hand_over(self, offsets: dict[int, int]) -> None:
        """Offsets that are durable in PostgreSQL (partition -> next offset)."""
        if offsets:
            self._waiting.update(offsets)
            self._committed.clear()
            self._handed_over.set()

    async def flush(self) -> None:
        """Return once everything handed over so far has been committed (or has failed)."""
        await self._committed.wait()

    async def run(self) -> None:
        while True:
            await self._handed_over.wait()
            self._handed_over.clear()
            offsets, self._waiting = self._waiting, {}
            await self._commit(offsets)
            if not self._waiting:
                self._committed.set()

    async def _commit(self, offsets: dict[int, int]) -> None:
        owned = self._consumer.assignment()
        commit = {
            tp: offset
            for partition, offset in offsets.items()
            if (tp := TopicPartition(self._topic, partition)) in owned
        }
        if not commit:
            return
        try:
            await self._consumer.commit(commit)
        except KafkaError as error:
            # Harmless for correctness: the offsets are in PostgreSQL and sought on assign.
            self._failures.inc()
            log.debug("Kafka commit failed: %r", error)
