"""The Kafka committer: coalescing, owned partitions only, flush, failures.

The consumer here is a stand-in recording what it is asked to commit; the committer's
work with the real broker is covered by the integration tests (SIGTERM drain: nothing
redelivered; the oracle's I4 sampling: no Kafka commit ahead of PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import CollectorRegistry, Counter

from ingest.pipeline.commits import KafkaCommitter

TOPIC = "readings"


class RecordingConsumer:
    def __init__(self, owned: set[int]) -> None:
        self.owned = {TopicPartition(TOPIC, p) for p in owned}
        self.commits: list[dict[int, int]] = []
        self.release = asyncio.Event()  # a commit returns once this is set
        self.release.set()
        self.fail = False

    def assignment(self) -> set[TopicPartition]:
        return self.owned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.release.wait()
        if self.fail:
            raise CommitFailedError("the group rebalanced")
        self.commits.append({tp.partition: o for tp, o in offsets.items()})


@contextlib.asynccontextmanager
async def committing(
    consumer: RecordingConsumer,
) -> AsyncIterator[tuple[KafkaCommitter, CollectorRegistry]]:
    """A committer with its task running (cancelled on exit, whatever the test did)."""
    registry = CollectorRegistry()
    commits = KafkaCommitter(consumer, TOPIC, Counter("commit_failures", "", registry=registry))
    worker = asyncio.create_task(commits.run())
    await asyncio.sleep(0)
    try:
        yield commits, registry
        assert not worker.done()  # a failed commit does not stop it either
    finally:
        worker.cancel()


async def test_offsets_handed_over_during_a_commit_go_in_the_next_one_latest_first() -> None:
    consumer = RecordingConsumer(owned={0, 1, 2})
    async with committing(consumer) as (commits, _):
        consumer.release.clear()
        commits.hand_over({0: 10, 1: 5})
        await asyncio.sleep(0)  # the first commit is under way, held
        commits.hand_over({0: 20})
        commits.hand_over({0: 30, 2: 7})
        consumer.release.set()
        await asyncio.wait_for(commits.flush(), 1)
    assert consumer.commits == [{0: 10, 1: 5}, {0: 30, 2: 7}]


async def test_flush_waits_for_every_offset_handed_over() -> None:
    consumer = RecordingConsumer(owned={0})
    async with committing(consumer) as (commits, _):
        await asyncio.wait_for(commits.flush(), 1)  # nothing handed over: returns at once
        consumer.release.clear()
        commits.hand_over({0: 3})
        flushing = asyncio.ensure_future(commits.flush())
        await asyncio.sleep(0.01)
        assert not flushing.done()
        consumer.release.set()
        await asyncio.wait_for(flushing, 1)
    assert consumer.commits == [{0: 3}]


async def test_partitions_no_longer_owned_are_not_committed() -> None:
    consumer = RecordingConsumer(owned={1})
    async with committing(consumer) as (commits, _):
        commits.hand_over({0: 4, 1: 9})
        commits.hand_over({0: 6})
        await asyncio.wait_for(commits.flush(), 1)
    assert consumer.commits == [{1: 9}]


async def test_a_failed_commit_is_counted_and_the_next_one_goes_on() -> None:
    consumer = RecordingConsumer(owned={0})
    async with committing(consumer) as (commits, registry):
        consumer.fail = True
        commits.hand_over({0: 4})
        await asyncio.wait_for(commits.flush(), 1)
        assert registry.get_sample_value("commit_failures_total") == 1
        consumer.fail = False
        commits.hand_over({0: 8})
        await asyncio.wait_for(commits.flush(), 1)
    assert consumer.commits == [{0: 8}]
