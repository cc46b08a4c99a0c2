"""Simulated device gateways: enroll a cohort, then produce its messages to Kafka.

The simulation's clock is its messages' send times. Starting `days` in the
past, it runs as fast as `rate` allows until it reaches the present; with
`follow` it then keeps sending in real time. Each record's Kafka timestamp is
its simulated send time, so a replayed history is judged as it was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from devices.registry import enroll
from devices.simulator import DAY_MS, CohortConfig, Faults, SimMessage, Simulation, build_cohort
from ingest.platform import connect

__all__ = ["Acked", "GatewayPlan", "ProduceStats", "enroll_cohort", "produce", "run_gateways"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    cohort: CohortConfig
    faults: Faults = field(default_factory=Faults)
    rate: float = 0.0  # messages per second; 0: as fast as the broker takes them
    count: int | None = None  # stop after this many messages
    follow: bool = False  # after catching up with the present, go on in real time
    readings_per_message: int | None = None


@dataclass(frozen=True, slots=True)
class Acked:
    """A message the broker acknowledged: what the no-loss oracle checks against."""

    partition: int
    offset: int
    message: SimMessage


@dataclass
class ProduceStats:
    messages: int = 0
    readings: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    acked: list[Acked] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        return self.messages / max(1e-9, time.monotonic() - self.started)


async def enroll_cohort(dsn: str, schema: str, config: CohortConfig) -> int:
    conn = await connect(dsn, schema)
    try:
        rows = [e for patient in build_cohort(config) for e in patient.enrollments()]
        # Enrolled when their simulated history begins, as the real ones were.
        await enroll(conn, rows, at=datetime.fromtimestamp(config.start_ms / 1000, UTC))
    finally:
        await conn.close()
    return len(rows)


async def produce(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Iterator[SimMessage],
    *,
    rate: float = 0.0,
    count: int | None = None,
    follow: bool = False,
    stop: asyncio.Event | None = None,
    keep_acks: bool = False,
    on_progress: Callable[[ProduceStats], None] | None = None,
) -> ProduceStats:
    """Send `messages` in order; returns once every sent message is acknowledged."""
    stats = ProduceStats()
    pending: list[asyncio.Future[object]] = []
    last_progress = time.monotonic()
    for message in messages:
        if (stop is not None and stop.is_set()) or (count is not None and stats.messages >= count):
            break
        ahead_ms = message.timestamp_ms - time.time() * 1000
        if ahead_ms > 0:
            if not follow:
                break  # caught up with the present
            # Until the message's time (hours ahead for a twice-daily device), or the stop.
            if await _stopped_within(stop, ahead_ms / 1000):
                break
        future = await producer.send(
            topic, key=message.key, value=message.value, timestamp_ms=message.timestamp_ms
        )
        if keep_acks:
            future.add_done_callback(_recorder(stats, message))
        pending.append(future)
        stats.messages += 1
        stats.readings += message.readings
        if message.fault:
            stats.faults[message.fault.split(":")[0]] += 1
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
        if rate and stats.messages % 50 == 0:
            behind = stats.messages / rate - (time.monotonic() - stats.started)
            if behind > 0:
                await asyncio.sleep(behind)
        if on_progress and time.monotonic() - last_progress >= 1:
            on_progress(stats)
            last_progress = time.monotonic()
    await asyncio.gather(*pending)
    return stats


async def _stopped_within(stop: asyncio.Event | None, seconds: float) -> bool:
    """Wait `seconds`, or less if `stop` is set meanwhile; whether it was."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _recorder(stats: ProduceStats, message: SimMessage) -> Callable[[asyncio.Future[object]], None]:
    def record(future: asyncio.Future[object]) -> None:
        if not future.cancelled() and future.exception() is None:
            meta = future.result()
            stats.acked.append(Acked(meta.partition, meta.offset, message))  # type: ignore[attr-defined]

    return record


async def run_gateways(
    plan: GatewayPlan,
    *,
    dsn: str,
    schema: str,
    producer: AIOKafkaProducer,
    topic: str,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[ProduceStats], None] | None = None,
) -> ProduceStats:
    """Enroll the plan's cohort, then produce its messages."""
    enrolled = await enroll_cohort(dsn, schema, plan.cohort)
    log.info("simulator: %d patients enrolled with %d devices", plan.cohort.patients, enrolled)
    simulation = Simulation(
        build_cohort(plan.cohort),
        start_ms=plan.cohort.start_ms,
        seed=plan.cohort.seed,
        faults=plan.faults,
        readings_per_message=plan.readings_per_message,
    )
    return await produce(
        producer,
        topic,
        simulation,
        rate=plan.rate,
        count=plan.count,
        follow=plan.follow,
        stop=stop,
        on_progress=on_progress,
    )


def history_start_ms(days: float) -> int:
    """A simulation start `days` before now, on a whole minute."""
    start = int(time.time() * 1000 - days * DAY_MS)
    return start - start % 60_000
