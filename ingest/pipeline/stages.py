"""The ingest pipeline: three stages joined by bounded queues.

    intake   poll Kafka, gather records into a batch (size or deadline), decode
             (pure CPU, never touches PostgreSQL)
    prepare  resolve registry keys, apply the reject-ratio guard, build the
             WriteBatch with each step's work (ingest.pipeline.steps: the alert
             rules) and the dead letters' (ingest.pipeline.replay_marks)
    write    one transaction per batch (ingest.pipeline.writer), then hand its
             offsets to the Kafka committer (ingest.pipeline.commits), which
             commits them while the next batch is written

Back-pressure: when the prepare queue is full the intake pauses every owned
partition and keeps polling (so the member stays in its group) until there is
room. Transient database errors are retried with capped exponential backoff;
anything else stops the pipeline. On partition revoke and on stop the
pipeline drains: flush, await every queued batch and its commit. On assignment
the partitions stay paused while a task loads the steps' state and the registry
pairs, then sets every position (the next revoke cancels a load under way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import asyncpg
import numpy as np
from aiokafka import (
    AIOKafkaConsumer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)

from devices.decode import DecodedBatch, Rejection
from ingest.pipeline.batch import PartitionSpan, WriteBatch
from ingest.pipeline.commits import KafkaCommitter
from ingest.pipeline.cursor import IntakeCursor
from ingest.pipeline.decode_pool import DecodePool, RecordColumns
from ingest.pipeline.metrics import IngestMetrics
from ingest.pipeline.offsets import OffsetStore
from ingest.pipeline.registry_cache import RegistryCache
from ingest.pipeline.replay_marks import DeadLetterWork, ReplayedPoll, ReplayedRecord
from ingest.pipeline.rows import ReadingRows
from ingest.pipeline.steps import PipelineStep
from ingest.pipeline.writer import BatchWriter, WriteOutcome
from ingest.platform import (
    Clock,
    DatabaseConnectionLost,
    Health,
    RejectRatioError,
    Settings,
    failpoint,
    is_transient_database_error,
    retry_transient,
)

__all__ = ["IngestPipeline", "RejectGuard", "Totals"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The records of one poll and their decoding (under way): the unit of intake and prepare.
_Polled = tuple[RecordColumns, "asyncio.Future[DecodedBatch]"]

# A poll takes at most this many records: the CPU-bound work (decoding, resolving) goes
# poll by poll and yields to the event loop in between, so the writer's database round
# trips are not held up behind a whole batch.
_RECORDS_PER_POLL = 1000


@dataclass
class Totals:
    """For the one summary line at exit."""

    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0


class RejectGuard:
    """Trips when more than `limit` of the last ~`window` messages yielded nothing storable."""

    def __init__(self, limit: float, window: int) -> None:
        self._limit = limit
        self._window = window
        self._recent: deque[tuple[int, int]] = deque()  # (messages, rejected) per batch
        self._messages = 0
        self._rejected = 0

    def observe(self, messages: int, rejected: int) -> None:
        self._recent.append((messages, rejected))
        self._messages += messages
        self._rejected += rejected
        while self._recent and self._messages - self._recent[0][0] >= self._window:
            old_messages, old_rejected = self._recent.popleft()
            self._messages -= old_messages
            self._rejected -= old_rejected
        if self._messages >= self._window and self._rejected > self._limit * self._messages:
            raise RejectRatioError(
                f"{self._rejected} of the last {self._messages} messages were rejected "
                f"(limit {self._limit:.0%}): check the topic, the gateways' contract version "
                "and the registry before restarting"
            )


class IngestPipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        writer_pool: asyncpg.Pool,
        decode: DecodePool,
        resolver: RegistryCache,
        writer: BatchWriter,
        metrics: IngestMetrics,
        health: Health,
        clock: Clock,
        steps: Sequence[PipelineStep] = (),
    ) -> None:
        self._settings = settings
        self._topic = settings.readings_topic
        self._consumer = consumer
        self._pool = pool
        self._writer_pool = writer_pool  # its connections hold the COPY staging table
        self._decode = decode
        self._resolver = resolver
        self._writer = writer
        self._metrics = metrics
        self._health = health
        self._clock = clock
        self._steps = steps
        self._offsets = OffsetStore(settings.consumer_group)
        self._record_time_us: dict[int, int] = {}  # latest record timestamp taken, per partition
        self._decoded: asyncio.Queue[list[_Polled]] = asyncio.Queue(settings.max_in_flight_batches)
        self._prepared: asyncio.Queue[WriteBatch] = asyncio.Queue(settings.max_in_flight_batches)
        self._pending: list[_Polled] = []  # the polls of the batch being gathered
        self._pending_messages = 0
        self._pending_since = 0.0
        self._intake_lock = asyncio.Lock()
        self._paused = False
        self._cursor = IntakeCursor()
        self._room = asyncio.Event()  # set when the prepare stage takes a batch
        self._stall_pause_s = 5.0
        self._durable: dict[int, int] = {}  # partition -> next offset made durable
        self._left_at: dict[int, int] = {}  # _durable when the last rebalance began, drained
        self._committer = KafkaCommitter(consumer, self._topic, metrics.kafka_commit_failures)
        self._guard = RejectGuard(settings.reject_ratio_limit, settings.reject_ratio_min_messages)
        self._workers: list[asyncio.Task[None]] = []
        self._assignment: asyncio.Task[None] | None = None  # loading an assignment's state
        self.totals = Totals()

    # -- lifecycle ---------------------------------------------------------------------------

    def rebalance_listener(self) -> ConsumerRebalanceListener:
        return _Rebalance(self)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain. Raises what stopped a stage."""
        self._workers = [
            asyncio.create_task(self._prepare_loop(), name="telemon-prepare"),
            asyncio.create_task(self._write_loop(), name="telemon-write"),
            asyncio.create_task(self._committer.run(), name="telemon-commit"),
        ]
        stopping = asyncio.create_task(stop.wait(), name="telemon-stop")
        try:
            while (
                not stop.is_set()
                and not any(w.done() for w in self._workers)
                and self._failure() is None  # the assignment's load may fail too
            ):
                await self._turn(stopping)
            self._raise_if_failed()
            await self._stop_assignment()
            await self._drain(self._settings.drain_timeout_s)
            self._raise_if_failed()
        finally:
            stopping.cancel()
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(stopping, *self._workers, return_exceptions=True)
            await self._stop_assignment()

    def _failure(self) -> BaseException | None:
        """The error of the first stage, or assignment load, that ended with one."""
        for task in (*self._workers, self._assignment):
            if task and task.done() and not task.cancelled() and task.exception():
                return task.exception()
        return None

    def _raise_if_failed(self) -> None:
        if (error := self._failure()) is not None:
            raise error

    # -- intake ------------------------------------------------------------------------------

    async def _turn(self, stopping: asyncio.Task[Any]) -> None:
        self._health.turned()
        await self._wait_for_room()
        fetched = await self._fetch(stopping)
        async with self._intake_lock:
            records, seek_back = self._cursor.take(fetched)
            for tp, offset in seek_back.items():
                self._consumer.seek(tp, offset)
            if records:
                if not self._pending:
                    self._pending_since = self._clock.monotonic()
                columns = RecordColumns.of(records)
                decoding = asyncio.ensure_future(self._decode.decode(columns, self._clock.now_ms()))
                self._pending.append((columns, decoding))
                self._pending_messages += len(records)
                self._metrics.messages_consumed.inc(len(records))
                self.totals.messages += len(records)
            if self._batch_due() and not self._decoded.full():
                await self._flush()
        self._update_lag()

    async def _fetch(
        self, stopping: asyncio.Task[Any]
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The next records, or none once `stopping` is done. During a rebalance aiokafka
        waits for the new assignment whatever the timeout, and a rebalance the group never
        completes (members gone mid-way) must not hold up shutdown."""
        fetching = asyncio.ensure_future(
            self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms(), max_records=_RECORDS_PER_POLL
            )
        )
        await asyncio.wait((fetching, stopping), return_when=asyncio.FIRST_COMPLETED)
        if fetching.done():
            records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = fetching.result()
            return records
        fetching.cancel()  # nothing was taken: records are handed over only on completion
        return {}

    def _poll_timeout_ms(self) -> int:
        if not self._pending:
            return 200
        waited_ms = (self._clock.monotonic() - self._pending_since) * 1000
        return max(0, min(200, int(self._settings.batch_max_wait_ms - waited_ms)))

    def _batch_due(self) -> bool:
        if not self._pending:
            return False
        if self._pending_messages >= self._settings.batch_max_messages:
            return True
        waited_ms = (self._clock.monotonic() - self._pending_since) * 1000
        return waited_ms >= self._settings.batch_max_wait_ms

    async def _flush(self) -> None:
        polls, self._pending, self._pending_messages = self._pending, [], 0
        await self._decoded.put(polls)
        self._metrics.in_flight_batches.set(self._decoded.qsize() + self._prepared.qsize())

    async def _wait_for_room(self) -> None:
        """Back-pressure. A full pipeline is first simply waited for: aiokafka keeps its
        prefetched records (one fetch per partition, so memory stays bounded) and would
        drop them on pause. Only a stall (no room for `stall_pause_s`, e.g. PostgreSQL
        down) pauses every owned partition; polling then goes on so the member stays in
        its group, and the partitions resume as soon as there is room."""
        if self._decoded.full() and not self._paused:
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), self._stall_pause_s)
            except TimeoutError:
                self._consumer.pause(*self._consumer.assignment())
                self._paused = True
                self._metrics.paused.set(1)
                log.warning("pipeline stalled for %.0f s: partitions paused", self._stall_pause_s)
        elif self._paused and not self._decoded.full():
            self._consumer.resume(*self._consumer.paused())
            self._paused = False
            self._metrics.paused.set(0)
            log.info("pipeline moving again: partitions resumed")

    # -- prepare -----------------------------------------------------------------------------

    async def _prepare_loop(self) -> None:
        while True:
            try:
                polls = await asyncio.wait_for(self._decoded.get(), 1.0)
            except TimeoutError:
                polls = None  # idle: the steps' ticks below still run on time
            if polls is not None:
                self._room.set()
                try:
                    batch = await self._prepare(polls)
                    await self._prepared.put(batch)
                finally:
                    self._decoded.task_done()
            if self._health.joined_group:
                for step in self._steps:
                    work = await self._database(partial(step.tick, self._sweep_now), step.name)
                    if work is not None:
                        await self._prepared.put(WriteBatch.of_work(self._topic, work))

    def _sweep_now(self) -> dict[int, int]:
        """Each owned partition's "now" for the steps' ticks (the missing-data rules): the
        wall clock when it is caught up, else the time of its latest record taken (a backlog
        is not silence)."""
        wall_us = self._clock.now_ms() * 1000
        now: dict[int, int] = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            behind = high is not None and self._durable.get(tp.partition, 0) < high
            latest = self._record_time_us.get(tp.partition)
            now[tp.partition] = latest if behind and latest is not None else wall_us
        return now

    async def _prepare(self, polls: list[_Polled]) -> WriteBatch:
        """Registry keys for every poll (one lookup query per poll at most), as one batch,
        with each step's work."""
        rows: list[ReadingRows] = []
        rejections: list[Rejection] = []
        replayed: list[ReplayedRecord] = []
        readings_consumed = 0
        storable_messages = 0
        for records, decoding in polls:
            part, part_rejections, consumed, storable, part_replayed = await self._resolve(
                records, await decoding
            )
            rows.append(part)
            rejections.extend(part_rejections)
            replayed.extend(part_replayed)
            readings_consumed += consumed
            storable_messages += storable
            await asyncio.sleep(0)  # let the writer's replies in between polls
        spans = _spans([columns for columns, _ in polls])
        messages = sum(len(s.offsets) for s in spans.values()) - len(replayed)
        self._metrics.readings_consumed.inc(readings_consumed)
        self._guard.observe(messages, messages - storable_messages)
        for partition, latest_ms in _latest_timestamps(polls).items():
            previous = self._record_time_us.get(partition, 0)
            self._record_time_us[partition] = max(previous, latest_ms * 1000)
        batch_rows = ReadingRows.concat(rows)
        work = tuple(
            [
                await self._database(partial(step.prepare, batch_rows), step.name)
                for step in self._steps
            ]
        )
        dead_letter_work = DeadLetterWork.of(
            replayed,
            rejections,
            window_s=self._settings.dead_letter_park_window_s,
            clock=self._clock,
            metrics=self._metrics,
        )
        if dead_letter_work is not None:
            work += (dead_letter_work,)
        return WriteBatch(
            self._topic, spans, batch_rows, rejections, readings_consumed, tuple(work)
        )

    async def _resolve(
        self, columns: RecordColumns, decoded: DecodedBatch
    ) -> tuple[ReadingRows, list[Rejection], int, int, list[ReplayedRecord]]:
        """One poll's rows with registry keys; its rejections (unknown devices included);
        how many readings had a known device, how many records (not replays) gave a row;
        the replayed records."""
        accepted = decoded.messages
        replays = ReplayedPoll.of(columns, decoded)
        if replays is not None:
            self._resolver.forget_unknown(replays.pairs)
        resolved = await self._database(
            lambda: self._resolver.resolve(
                accepted.patient_id, accepted.device_id, accepted.pair_digest
            ),
            "registry lookup",
        )
        rejections = list(decoded.rejections)
        for index in np.flatnonzero(resolved.patient_key < 0).tolist():
            record = columns.record(int(accepted.record_index[index]))
            rejections.append(
                Rejection.unknown_device(
                    record,
                    accepted.patient_id[index],
                    accepted.device_id[index],
                    accepted.message_id[index],
                )
            )
        consumed = int(accepted.reading_count[resolved.patient_key >= 0].sum())
        known = resolved.patient_key[decoded.message] >= 0
        message = decoded.message[known]
        record_of_row = accepted.record_index[message]
        rows = ReadingRows(
            patient_key=resolved.patient_key[message],
            device_key=resolved.device_key[message],
            kind=decoded.kind[known],
            value=decoded.value[known],
            measured_at_us=decoded.measured_at_us[known],
            source_partition=np.array(columns.partition, np.int32)[record_of_row],
            source_offset=np.array(columns.offset, np.int64)[record_of_row],
            reference_us=decoded.reference_us[known],
        )
        if replays is None:
            return rows, rejections, consumed, len(np.unique(record_of_row)), []
        rows = replays.as_of_replay(rows, record_of_row, self._clock.now_ms())
        reading_index = decoded.reading_index[known]
        replayed = replays.replayed(rows, record_of_row, reading_index, rejections)
        return rows, rejections, consumed, replays.live(record_of_row), replayed

    # -- write -------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            batch = await self._prepared.get()
            try:
                with self._metrics.write_seconds.time():
                    outcome = await self._database(partial(self._write, batch), "batch write")
                self._account(batch, outcome)
                for work in batch.work:
                    work.committed()
                failpoint("after_database_commit")
                self._committer.hand_over(outcome.commit_offsets)
            finally:
                self._prepared.task_done()

    async def _write(self, batch: WriteBatch) -> WriteOutcome:
        async with self._writer_pool.acquire() as conn:
            try:
                return await self._writer.write(conn, batch)
            except asyncpg.InterfaceError as error:
                if _lost(conn):
                    raise DatabaseConnectionLost(str(error)) from error
                raise

    def _account(self, batch: WriteBatch, outcome: WriteOutcome) -> None:
        m = self._metrics
        m.batches.inc()
        m.batch_messages.observe(batch.messages)
        m.readings_stored.inc(outcome.stored)
        m.readings_duplicate.inc(outcome.duplicates)
        m.messages_skipped.inc(outcome.skipped_messages)
        for rejection in outcome.rejections:
            m.rejected.labels(rejection.reason.value).inc()
        if len(outcome.rows):
            m.durable_latency.observe_many(
                (outcome.durable_at_us - outcome.rows.measured_at_us) / 1e6
            )
        self._durable.update(outcome.commit_offsets)
        t = self.totals
        t.batches += 1
        t.stored += outcome.stored
        t.duplicates += outcome.duplicates
        t.rejected += outcome.dead_letters

    async def _database(
        self,
        operation: Callable[[], Awaitable[T]],
        what: str,
        *,
        attempts: int | None = None,
    ) -> T:
        """Run a database operation under the retry policy, keeping health and metrics true."""

        async def failed(_: BaseException) -> None:
            self._metrics.write_errors.labels("transient").inc()
            self._health.database_ok = False

        try:
            result = await retry_transient(
                operation,
                what=what,
                attempts=attempts,
                after_failure=failed,
                max_backoff_s=self._settings.write_retry_max_backoff_s,
            )
        except Exception as error:
            if not is_transient_database_error(error):
                self._metrics.write_errors.labels("fatal").inc()
            raise
        self._health.database_ok = True
        return result

    # -- drain, assignment, lag --------------------------------------------------------------

    async def _drain(self, timeout_s: float) -> bool:
        """Write and commit everything received so far. False if it did not finish in time."""

        async def everything() -> None:
            async with self._intake_lock:
                if self._pending:
                    await self._flush()
            await self._decoded.join()
            await self._prepared.join()
            await self._committer.flush()

        try:
            await asyncio.wait_for(everything(), timeout_s)
        except TimeoutError:
            log.warning(
                "drain did not finish within %.0f s; uncommitted batches will be redelivered",
                timeout_s,
            )
            return False
        return True

    async def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # aiokafka calls this before every (re)join, sometimes with an empty set while this
        # member still has records of its partitions in flight: always drain, and take
        # nothing more until the next assignment has set every position.
        await self._stop_assignment()
        self._cursor.stop_all()
        drained = await self._drain(self._settings.drain_timeout_s)
        self._left_at = dict(self._durable) if drained else {}
        for step in self._steps:
            step.revoked(drained)
        for tp in revoked:
            self._durable.pop(tp.partition, None)
            with contextlib.suppress(KeyError):  # no lag was reported for it yet
                self._metrics.consumer_lag.remove(str(tp.partition))

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Load the assignment's state in a task: aiokafka sends no heartbeat until this
        callback returns, and the state of half a million patients takes longer than the
        session timeout, after which the group evicts the member (and rebalances again).
        Its partitions are paused until their positions are set."""
        mine = [tp for tp in assigned if tp.topic == self._topic]
        self._consumer.pause(*mine)
        self._assignment = asyncio.create_task(self._assign(mine), name="telemon-assign")

    async def _stop_assignment(self) -> None:
        """Cancel the load of an assignment still under way (a rebalance, or a stop)."""
        if self._assignment is not None and not self._assignment.done():
            self._assignment.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._assignment

    async def _assign(self, mine: list[TopicPartition]) -> None:
        partitions = [tp.partition for tp in mine]
        # The steps' state first, and the registry's pairs of these partitions: the intake
        # takes no record of these partitions before their positions are set below
        # (records fetched meanwhile are read again from there), so no batch is prepared
        # against a half-rebuilt state.
        count = len(self._consumer.partitions_for_topic(self._topic) or ()) or 1
        stored = await self._stored_offsets(partitions)
        # Held until this rebalance, and nothing written by another member since.
        continuous = [p for p, at in self._left_at.items() if p in stored and stored[p] == at]
        async with asyncio.TaskGroup() as both:  # PostgreSQL answers them side by side
            both.create_task(
                self._database(
                    partial(self._resolver.own, partitions, count),
                    "reading the registry of the assigned partitions",
                )
            )
            for step in self._steps:
                await self._database(
                    partial(step.assigned, partitions, count, continuous),
                    f"rebuilding the state of {step.name}",
                )
        unknown = [tp for tp in mine if tp.partition not in stored]
        starts = await self._consumer.beginning_offsets(unknown) if unknown else {}
        # Every position is set explicitly, and the intake takes records from there on:
        # what is durable in PostgreSQL, else Kafka's committed offset (a group that wrote
        # elsewhere before), else the start of the log.
        for tp in mine:
            if tp.partition in stored:
                position = stored[tp.partition]
                self._durable[tp.partition] = position
            elif (committed := await self._consumer.committed(tp)) is not None:
                position = committed
            else:
                position = starts[tp]
            self._consumer.seek(tp, position)
            self._cursor.start(tp, position)
        self._consumer.resume(*mine)
        self._health.joined_group = True
        self._metrics.assigned_partitions.set(len(self._consumer.assignment()))
        log.info(
            "assigned partitions %s, from stored offsets %s; %d registry pairs held",
            sorted(partitions),
            dict(sorted(stored.items())),
            self._resolver.owned,
        )

    async def _stored_offsets(self, partitions: list[int]) -> dict[int, int]:
        """The offsets made durable with the data; Kafka's own are only a fallback."""

        async def read() -> dict[int, int]:
            async with self._pool.acquire() as conn:
                return await self._offsets.read(conn, self._topic, partitions)

        try:
            return await self._database(read, "reading stored offsets", attempts=6)
        except Exception as error:
            if not is_transient_database_error(error):
                raise
            log.warning(
                "stored offsets unreadable; starting from Kafka's committed offsets "
                "(records already stored are dropped by the write fence)"
            )
            return {}

    def _update_lag(self) -> None:
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None and tp.partition in self._durable:
                lag = max(0, high - self._durable[tp.partition])
                self._metrics.consumer_lag.labels(str(tp.partition)).set(lag)


def _latest_timestamps(polls: Sequence[_Polled]) -> dict[int, int]:
    """The latest record timestamp (ms) per partition of the batch."""
    partition = np.concatenate([np.array(c.partition, np.int32) for c, _ in polls])
    timestamp = np.concatenate([np.array(c.timestamp, np.int64) for c, _ in polls])
    latest = np.full(int(partition.max(initial=0)) + 1, -1, np.int64)
    np.maximum.at(latest, partition, timestamp)
    return {int(p): int(latest[p]) for p in np.flatnonzero(latest >= 0)}


def _lost(conn: Any) -> bool:
    """Whether a pooled connection died (the pool then detaches it from its proxy)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


def _spans(polls: Sequence[RecordColumns]) -> dict[int, PartitionSpan]:
    """Every record offset of the batch, per partition (ascending within each)."""
    partition = np.concatenate([np.array(c.partition, np.int32) for c in polls])
    offset = np.concatenate([np.array(c.offset, np.int64) for c in polls])
    order = np.argsort(partition, kind="stable")  # stable: offsets stay in arrival order
    partition, offset = partition[order], offset[order]
    bounds = np.flatnonzero(np.diff(partition)) + 1
    return {
        int(p[0]): PartitionSpan(int(p[0]), o)
        for p, o in zip(np.split(partition, bounds), np.split(offset, bounds), strict=True)
        if len(p)
    }


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: IngestPipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._pipeline.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._pipeline.on_assigned(assigned)
