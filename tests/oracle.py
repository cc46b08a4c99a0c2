"""The reliability suite's oracle: what the broker acknowledged, against what telemon kept.

A test producer gives each simulated device a strictly increasing sequence;
a reading's time is a function of (device, sequence), so every reading sent
has an identity. It records what the broker acknowledged (partition, offset)
and whether the message was meant to be refused. After a scenario the stack
drains and `check` asserts the invariants:

I1  no loss: every acknowledged reading is stored, or its record is
    dead-lettered with a reason;
I2  no duplicate row;
I3  counts balance: records consumed = the ledger's messages, readings
    consumed = stored + duplicate + dead-lettered (database; and the metrics
    of one run when given);
I4  no Kafka offset committed past a durable write (`CommitWatch`, sampled
    during the run);
I5  one finding per (rule, patient, first firing), in an episode of that patient, even
    after replays.

Dead letters replayed (`replays=True`): the replay records on the topic are
records too (each carries its original's readings), so I3 counts them; I1 then
holds for the originals (a reading parked and replayed is stored) and I2 says
a reading replayed twice is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.pipeline.replays import REPLAY_SOURCE_HEADER
from ingest.platform import client_options
from tests.support import Stack, ledger_is_contiguous

__all__ = ["LONG", "Acknowledged", "CommitWatch", "OracleProducer", "check"]

# The long versions of the scenarios (python -m loadtests.reliability).
LONG = os.environ.get("TELEMON_RELIABILITY") == "long"

SECOND_MS = 1000


@dataclass(frozen=True, slots=True)
class Acknowledged:
    device_id: str
    seq: int
    partition: int
    offset: int
    readings: int  # readings the message carries (0 when it is not even JSON)
    refused: bool  # meant to be dead-lettered


class OracleProducer:
    """Devices that each send one SpO2 reading per message, second by second of their
    own sequence; some messages malformed on request."""

    def __init__(
        self,
        stack: Stack,
        devices: int,
        prefix: str = "o",
        seed: int = 0,
        low_every: int = 0,
        start_ago_s: int = 3600,
    ) -> None:
        self._stack = stack
        self._low_every = low_every  # every n-th reading of a device at 88 % (alerts)
        self.pairs = [(f"{prefix}-{i}", f"oxi-{prefix}-{i}") for i in range(devices)]
        self._next = [0] * devices
        self._turn = 0
        self._rng = random.Random(seed)
        self._start_ms = _now_ms() - start_ago_s * 1000  # second by second from there
        self.acknowledged: list[Acknowledged] = []

    async def enroll(self, pairs: list[tuple[str, str]] | None = None) -> None:
        """Enroll every device (or only `pairs`: the others' readings are parked)."""
        await self._stack.enroll(self.pairs if pairs is None else pairs)

    async def send(self, messages: int, malformed: float = 0.0, skew_ms: int = 0) -> None:
        """Send `messages` (round robin over the devices) and wait for every ack.
        `malformed`: the share made invalid; `skew_ms`: shifts measured_at by more than
        the contract tolerates (so those are meant to be refused too)."""
        batch, meta = [], []
        for _ in range(messages):
            device = self._turn % len(self.pairs)
            self._turn += 1
            seq = self._next[device]
            self._next[device] += 1
            bad = self._rng.random() < malformed
            key, value, readings = self._message(device, seq, bad, skew_ms)
            batch.append((key, value))
            meta.append((self.pairs[device][1], seq, readings, bad or skew_ms != 0))
        acks = await self._stack.produce(batch)
        for (device_id, seq, readings, bad), ack in zip(meta, acks, strict=True):
            self.acknowledged.append(
                Acknowledged(device_id, seq, ack.partition, ack.offset, readings, bad)
            )

    async def paced(self, messages: int, per_second: int, **options: float) -> None:
        step = max(per_second // 10, 1)
        for start in range(0, messages, step):
            await self.send(min(step, messages - start), **options)  # type: ignore[arg-type]
            await asyncio.sleep(0.1)

    def is_low(self, seq: int) -> bool:
        return bool(self._low_every) and seq % self._low_every == self._low_every - 1

    def measured_at(self, seq: int, skew_ms: int = 0) -> datetime:
        return datetime.fromtimestamp((self._start_ms + seq * SECOND_MS + skew_ms) / 1000, UTC)

    def _message(self, device: int, seq: int, bad: bool, skew_ms: int) -> tuple[bytes, bytes, int]:
        patient_id, device_id = self.pairs[device]
        reading = {
            "kind": "spo2",
            "value": 88 if self.is_low(seq) else 95 + seq % 5,
            "unit": "%",
            "measured_at": self.measured_at(seq, skew_ms).isoformat(),
        }
        if bad:
            kind = self._rng.choice(["not json", "bad unit", "out of range"])
            if kind == "not json":
                return patient_id.encode(), b'{"device_id": "' + device_id.encode(), 0
            if kind == "bad unit":
                reading["unit"] = "furlong"
            else:
                reading["value"] = 180
        body = {
            "device_id": device_id,
            "patient_id": patient_id,
            "message_id": f"{device_id}/{seq}",
            "readings": [reading],
        }
        return patient_id.encode(), json.dumps(body).encode(), 1


async def check(
    stack: Stack,
    producer: OracleProducer,
    consumed_by_metrics: dict[str, float] | None = None,
    *,
    replays: bool = False,
) -> None:
    """I1-I3 and I5 on the drained stack (I4 is CommitWatch's)."""
    db = await stack.db()
    stored = {
        (r["device_id"], r["measured_at"])
        for r in await db.fetch(
            "SELECT d.device_id, r.measured_at FROM readings r JOIN devices d USING (device_key)"
        )
    }
    dead = {
        (r["partition"], r["offset"]): r["reason"]
        for r in await db.fetch('SELECT partition, "offset", reason FROM dead_letters')
    }
    lost, wrongly_kept = [], []
    for ack in producer.acknowledged:
        kept = (ack.device_id, producer.measured_at(ack.seq)) in stored
        refused = (ack.partition, ack.offset) in dead
        if ack.refused and kept:
            wrongly_kept.append(ack)
        elif not ack.refused and not kept:
            lost.append(ack)
        elif ack.refused and not refused:
            lost.append(ack)  # neither stored nor dead-lettered
    assert not lost, f"I1: {len(lost)} acknowledged readings lost, e.g. {lost[:3]}"
    assert not wrongly_kept, f"I1: refused messages stored: {wrongly_kept[:3]}"
    assert all(dead.values()), "I1: a dead letter without a reason"

    duplicates = await db.fetchval(
        "SELECT count(*) - count(DISTINCT (device_key, kind, measured_at)) FROM readings"
    )
    assert duplicates == 0, f"I2: {duplicates} duplicate rows"

    ledger = await db.fetchrow(
        "SELECT coalesce(sum(messages), 0) AS messages, coalesce(sum(next_offset - first_offset)"
        ", 0) AS span, coalesce(sum(readings_stored), 0) AS stored, coalesce(sum("
        "readings_duplicate), 0) AS duplicate, coalesce(sum(dead_letters), 0) AS dead "
        "FROM ingest_ledger WHERE consumer_group = $1",
        stack.settings.consumer_group,
    )
    assert ledger is not None
    records = len(producer.acknowledged)  # every record on the topic is the oracle's
    sent_readings = sum(a.readings for a in producer.acknowledged)
    if replays:  # ... or a replay of one of them
        by_source = {(a.partition, a.offset): a for a in producer.acknowledged}
        for replay in await _replay_sources(stack):
            records += 1
            sent_readings += by_source[replay].readings
    assert ledger["messages"] == ledger["span"] == records, (
        f"I3: {records} records acknowledged, ledger: {ledger['messages']} messages over "
        f"{ledger['span']} offsets"
    )
    assert ledger["stored"] == len(stored), "I3: ledger's stored != rows"
    assert ledger["dead"] == len(dead), "I3: ledger's dead letters != dead_letters rows"
    whole_messages_dead = sum(1 for a in producer.acknowledged if a.refused and a.readings == 0)
    assert ledger["stored"] + ledger["duplicate"] + ledger["dead"] - whole_messages_dead == (
        sent_readings
    ), "I3: readings consumed != stored + duplicate + dead-lettered"
    if consumed_by_metrics is not None:
        m = consumed_by_metrics
        assert m["consumed"] == m["stored"] + m["duplicate"] + m["rejected"], f"I3 metrics: {m}"
    await ledger_is_contiguous(stack)

    repeated = await db.fetch(
        "SELECT patient_key, rule_id, first_fired_at, count(*) FROM findings "
        "GROUP BY 1, 2, 3 HAVING count(*) > 1"
    )
    assert not repeated, f"I5: findings raised twice for one firing: {repeated[:3]}"
    strays = await db.fetchval(
        "SELECT count(*) FROM findings f JOIN episodes e USING (episode_id) "
        "WHERE e.patient_key <> f.patient_key"
    )
    assert strays == 0, "I5: a finding in another patient's episode"


async def _replay_sources(stack: Stack) -> list[tuple[int, int]]:
    """The (partition, offset) of the original of each replay record on the topic."""
    sources = []
    for record in await stack.read_topic(stack.settings.readings_topic, timeout_s=60):
        for name, value in record.headers:
            if name == REPLAY_SOURCE_HEADER:
                _, partition, offset = value.decode().rsplit("/", 2)
                sources.append((int(partition), int(offset)))
    return sources


class CommitWatch:
    """I4, sampled every 100 ms while a scenario runs: no partition's Kafka commit may
    be ahead of the offset made durable in PostgreSQL."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.samples = 0
        self.violations: list[str] = []

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CommitWatch]:
        task = asyncio.create_task(self._sample())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert self.samples > 0, "I4: never sampled"
        assert not self.violations, f"I4: {self.violations[:3]}"

    async def _sample(self) -> None:
        settings = self._stack.settings
        consumer = AIOKafkaConsumer(**client_options(settings), group_id=settings.consumer_group)
        await consumer.start()
        try:
            topic = settings.readings_topic
            while True:
                committed = {
                    p: await consumer.committed(TopicPartition(topic, p))
                    for p in range(settings.topic_partitions)
                }
                durable = await self._stack.stored_offsets()  # read after: it only grows
                for p, offset in committed.items():
                    if offset is not None and offset > durable.get(p, 0):
                        self.violations.append(f"partition {p}: committed {offset} > {durable}")
                self.samples += 1
                await asyncio.sleep(0.1)
        finally:
            await consumer.stop()


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
