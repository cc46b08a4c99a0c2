"""What the benchmarks share: a stack, fresh schemas and topics, fast producing, measuring."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from devices.registry import DeviceType, Enrollment, Programme, enroll
from ingest.pipeline.reading_days import ReadingDays
from ingest.platform import (
    Settings,
    client_options,
    connect,
    embedded_stack,
    free_port,
    make_producer,
)
from ingest.service import prepare_storage

RESULTS = Path(__file__).parent / "results"


@contextlib.contextmanager
def benchmark_stack() -> Iterator[Settings]:
    """Embedded PostgreSQL and broker unless TELEMON_DATABASE_URL / _KAFKA_BOOTSTRAP are set."""
    with embedded_stack(Settings(topic_partitions=12)) as settings:
        yield settings


async def isolated(settings: Settings, name: str) -> Settings:
    """A new schema (migrated), topics and group named after `name`, nothing enrolled."""
    tag = f"b_{name}_{uuid.uuid4().hex[:6]}"
    isolated_settings = settings.model_copy(
        update={
            "database_schema": tag,
            "readings_topic": f"{tag}.readings",
            "alerts_topic": f"{tag}.alerts",
            "consumer_group": f"{tag}-group",
            "create_topics": True,
        }
    )
    await prepare_storage(isolated_settings)
    return isolated_settings


async def drop_topics(settings: Settings) -> None:
    """Delete a finished measurement's topics. tansu's memory storage keeps every record
    and slows down with what it holds: each measurement should find it as empty as the
    first did (in a 5-round run, the latency measured after 25 drains had twice the p99
    of the same rate on a fresh broker)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.delete_topics(
            [settings.readings_topic, settings.dead_letter_topic, settings.alerts_topic]
        )
    finally:
        await admin.close()


async def fresh(settings: Settings, name: str, patients: int) -> Settings:
    """A new schema, topics and group named after `name`, with `patients` enrolled."""
    fresh_settings = await isolated(settings, name)
    assert fresh_settings.database_url is not None
    conn = await connect(fresh_settings.database_url, fresh_settings.database_schema)
    try:
        # The baselines do not create partitions: make those of the data period exist.
        today = int(time.time()) // 86_400
        await ReadingDays().ensure(conn, range(today - 2, today + 3))
        await enroll(
            conn,
            [
                Enrollment(
                    patient_id=f"p-{i}",
                    programme=Programme.COVID,
                    device_id=f"oxi-{i}",
                    device_type=DeviceType.PULSE_OXIMETER,
                )
                for i in range(patients)
            ],
        )
    finally:
        await conn.close()
    return fresh_settings


def messages(
    count: int, patients: int, readings_per_message: int = 1, start_ms: int | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """Valid, all-distinct readings of `patients` pulse oximeters, oldest first."""
    start_ms = start_ms or int(time.time() * 1000) - 6 * 3_600_000
    for n in range(count):
        patient = n % patients
        base = start_ms + (n // patients) * readings_per_message * 1000
        readings = [
            {
                "kind": "spo2",
                "value": spo2_value(n + r),
                "unit": "%",
                "measured_at": iso_ms(base + r * 1000),
            }
            for r in range(readings_per_message)
        ]
        body = {"device_id": f"oxi-{patient}", "patient_id": f"p-{patient}", "readings": readings}
        yield f"p-{patient}".encode(), json.dumps(body).encode()


def spo2_value(n: int) -> int:
    """Reading `n`'s SpO2: 95-99 %, and 91 % (red for a COVID patient) one time in 997."""
    return 91 if n % 997 == 0 else 95 + n % 5


def spo2_message(n: int, patients: int, measured_at: str) -> tuple[bytes, bytes]:
    """Message `n`: one SpO2 reading of patient n % patients, measured at `measured_at`
    (ISO 8601). Rendered from a template: the load generator shares the machine with
    what it measures, and json.dumps would cost it 25 times as much CPU."""
    patient = n % patients
    value = (
        f'{{"device_id": "oxi-{patient}", "patient_id": "p-{patient}", "readings": '
        f'[{{"kind": "spo2", "value": {spo2_value(n)}, "unit": "%", '
        f'"measured_at": "{measured_at}"}}]}}'
    )
    return f"p-{patient}".encode(), value.encode()


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def produce(
    settings: Settings, payloads: Iterator[tuple[bytes, bytes]], compression: str | None = None
) -> int:
    """Send every payload; `compression` as a gateway would set it (zstd, lz4, gzip...)."""
    producer = make_producer(
        settings, linger_ms=20, max_batch_size=256 * 1024, compression_type=compression
    )
    await producer.start()
    sent = 0
    try:
        pending = []
        for key, value in payloads:
            pending.append(await producer.send(settings.readings_topic, key=key, value=value))
            sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def environment(settings: Settings, **overrides: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMON_")}
    for name, value in (settings.model_dump(exclude_none=True) | overrides).items():
        env[f"TELEMON_{name.upper()}"] = (
            json.dumps(value) if isinstance(value, bool) else str(value)
        )
    return env


@contextlib.asynccontextmanager
async def process(
    command: Sequence[str], settings: Settings, **overrides: Any
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Run `command` with the settings in its environment; SIGTERM it on exit."""
    RESULTS.mkdir(exist_ok=True)
    # Blocking calls are fine here: a benchmark driver, once per run, outside measurement.
    log = open(RESULTS / f"{settings.database_schema}.log", "ab")  # noqa: SIM115, ASYNC230
    child = subprocess.Popen(  # noqa: S603, ASYNC220 - our own programs
        [sys.executable, *command],
        env=environment(settings, **overrides),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(child.wait, 40)
        except subprocess.TimeoutExpired:
            child.kill()
        log.close()


@dataclass(frozen=True)
class Drain:
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


async def measure_drain(settings: Settings, total: int, timeout_s: float = 600) -> Drain:
    """Time from the first committed offset to all `total` messages committed (durable)."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=settings.consumer_group)
    await consumer.start()
    try:
        tps = [
            TopicPartition(settings.readings_topic, p)
            for p in consumer.partitions_for_topic(settings.readings_topic) or []
        ]
        first_at, first_count = 0.0, 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            committed = sum([await consumer.committed(tp) or 0 for tp in tps])
            now = time.monotonic()
            if committed and not first_at:
                first_at, first_count = now, committed
            if committed >= total:
                return Drain(total - first_count, now - first_at)
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{settings.consumer_group}: not drained in {timeout_s} s")
    finally:
        await consumer.stop()


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """High-water resident sets (VmHWM), in MB: the process, and it plus its children
    (the decode workers; peaks summed, so an upper bound)."""
    import psutil

    def hwm(p: int) -> float:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    own = hwm(pid)
    children = [
        c.pid
        for c in psutil.Process(pid).children(recursive=True)
        if "resource_tracker" not in " ".join(c.cmdline())
    ]
    return own, own + sum(hwm(c) for c in children)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def telemon_ingest() -> list[str]:
    return ["-m", "ingest.cli", "ingest"]


def http_port() -> int:
    return free_port()
