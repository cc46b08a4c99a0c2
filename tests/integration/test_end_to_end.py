"""Readings from Kafka to PostgreSQL and bad input to the dead-letter topic, for real."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from devices.registry import Programme
from ingest.platform import client_options
from tests.records import EXAMPLES
from tests.support import Stack, eventually

NOW = datetime.now(UTC).replace(microsecond=0)


def at(minutes_ago: int) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat()


def body(patient: str, device: str, *readings: tuple[str, Any, str, str]) -> bytes:
    return json.dumps(
        {
            "device_id": device,
            "patient_id": patient,
            "readings": [
                {"kind": k, "value": v, "unit": u, "measured_at": t} for k, v, u, t in readings
            ],
        }
    ).encode()


def example(name: str) -> bytes:
    """An example from devices/examples, re-addressed to p-1/oxi-1 and to today."""
    raw = (EXAMPLES / name).read_text()
    return (
        raw.replace("p-000123", "p-1")
        .replace("oxi-7f3a", "oxi-1")
        .replace("2026-11-23T08:00:00+01:00", at(30))
        .encode()
    )


async def test_readings_and_bad_input_end_to_end(stack: Stack) -> None:
    await stack.enroll([("p-1", "oxi-1"), ("p-2", "oxi-2")])
    good_single = body("p-1", "oxi-1", ("spo2", 97, "%", at(10)))
    good_multi = body(
        "p-2",
        "oxi-2",
        ("spo2", 95, "%", at(9)),
        ("heart_rate", 88, "/min", at(9)),
        ("body_temperature", 100.4, "[degF]", at(9)),
    )
    one_bad = body(
        "p-1",
        "oxi-1",
        ("spo2", 96, "%", at(8)),
        ("spo2", 130, "%", at(7)),
        ("heart_rate", 71, "/min", at(8)),
    )
    # Every invalid example rejects its whole message (one_bad above covers the partial case).
    invalid = sorted(
        p.name for p in (EXAMPLES / "invalid").iterdir() if p.name != "one_bad_reading.json"
    )
    messages: list[tuple[bytes | None, bytes]] = [
        (b"p-1", good_single),
        (b"p-2", good_multi),
        (b"p-1", good_single),  # the gateway sends it again: stored once
        (b"p-1", one_bad),
        (b"p-3", body("p-3", "oxi-3", ("spo2", 97, "%", at(5)))),  # not enrolled
        (b"p-2", body("p-2", "oxi-1", ("spo2", 97, "%", at(5)))),  # p-1's device
        (b"p-9", body("p-1", "oxi-1", ("spo2", 97, "%", at(5)))),  # key is not the patient
        (b"p-1", b"{" + b" " * 300_000 + b"}"),  # over max_message_bytes
        *[(b"p-1", example(f"invalid/{name}")) for name in invalid],
    ]
    await stack.produce(messages)

    async with stack.ingest() as ingest:
        await stack.wait_drained()
        db = await stack.db()
        stored = await db.fetch(
            "SELECT p.patient_id, k.kind, r.value, r.measured_at FROM readings r "
            "JOIN patients p USING (patient_key) JOIN vital_kinds k ON k.code = r.kind "
            "ORDER BY r.measured_at, k.kind"
        )
        # the single reading (sent twice), the multi upload, one_bad's two good readings
        assert sorted(
            (r["patient_id"], r["kind"], r["measured_at"].isoformat()) for r in stored
        ) == [
            ("p-1", "heart_rate", at(8)),
            ("p-1", "spo2", at(10)),
            ("p-1", "spo2", at(8)),
            ("p-2", "body_temperature", at(9)),
            ("p-2", "heart_rate", at(9)),
            ("p-2", "spo2", at(9)),
        ]
        temperature = next(r for r in stored if r["kind"] == "body_temperature")
        assert abs(temperature["value"] - 38.0) < 1e-9  # 100.4 °F

        expected_reasons = sorted(
            [
                "out_of_range",
                "unknown_device",
                "unknown_device",
                "key_mismatch",
                "message_too_large",
            ]
            + [name.removesuffix(".json") for name in invalid]
        )
        dead = await db.fetch('SELECT reason, reading_index, "offset" FROM dead_letters')
        assert sorted(r["reason"] for r in dead) == expected_reasons
        assert next(r for r in dead if r["reason"] == "out_of_range")["reading_index"] == 1

        await eventually(
            lambda: _published(stack), what="the dead-letter relay to publish every row"
        )
        dlq = await stack.read_topic(stack.settings.dead_letter_topic)
        assert sorted(_header(r, "telemon.errors.reason") for r in dlq) == expected_reasons
        origin = {
            (
                int(_header(r, "__connect.errors.partition")),
                int(_header(r, "__connect.errors.offset")),
            ): r
            for r in dlq
        }
        sent = {(m.partition, m.offset): m for m in await _offsets_of(stack)}
        for where, record in origin.items():
            assert record.value == sent[where].value  # the original bytes
            assert record.key == sent[where].key
            assert _header(record, "__connect.errors.topic") == stack.settings.readings_topic
            assert _header(record, "__connect.errors.exception.message")

        assert ingest.metric("telemon_ingest_readings_stored_total") == 6
        assert ingest.metric("telemon_ingest_readings_duplicate_total") == 1
        assert ingest.metric("telemon_ingest_messages_consumed_total") == len(messages)
        assert ingest.metric("telemon_ingest_rejected_total", reason="unknown_device") == 2
        rejected = sum(
            ingest.metric("telemon_ingest_rejected_total", reason=r) for r in set(expected_reasons)
        )
        assert rejected == len(expected_reasons)

        ledger = await db.fetchrow(  # one row: aggregates only
            "SELECT sum(messages) m, sum(readings_stored) s, sum(readings_duplicate) d, "
            "sum(dead_letters) x FROM ingest_ledger"
        )
        assert ledger is not None
        assert (ledger["m"], ledger["s"], ledger["d"], ledger["x"]) == (
            len(messages),
            6,
            1,
            len(expected_reasons),
        )
        assert await _kafka_committed(stack) == await stack.stored_offsets()


async def test_enrolled_programme_and_device_are_resolved(stack: Stack) -> None:
    """A device enrolled after its first reading was refused is accepted once enrolled."""
    message = body("p-7", "scale-7", ("body_weight", 82.5, "kg", at(3)))
    await stack.produce([(b"p-7", message)])
    async with stack.ingest(registry_negative_ttl_s=0):
        await stack.wait_drained()
        await stack.enroll([("p-7", "scale-7")], Programme.HEART_FAILURE)
        await stack.produce([(b"p-7", message)])
        await stack.wait_drained()
        db = await stack.db()
        assert await db.fetchval("SELECT count(*) FROM readings") == 1
        assert await db.fetchval("SELECT reason FROM dead_letters") == "unknown_device"
        assert await db.fetchval("SELECT programme FROM patients") == "heart_failure"


async def _published(stack: Stack) -> bool:
    unpublished = await (await stack.db()).fetchval(
        "SELECT count(*) FROM dead_letters WHERE published_at IS NULL"
    )
    return bool(unpublished == 0)


def _header(record: Any, name: str) -> str:
    return str(next(v.decode() for k, v in record.headers if k == name))


async def _offsets_of(stack: Stack) -> list[Any]:
    return await stack.read_topic(stack.settings.readings_topic)


async def _kafka_committed(stack: Stack) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        **client_options(stack.settings), group_id=stack.settings.consumer_group
    )
    await consumer.start()
    try:
        out = {}
        for p in consumer.partitions_for_topic(stack.settings.readings_topic) or []:
            committed = await consumer.committed(TopicPartition(stack.settings.readings_topic, p))
            if committed is not None:
                out[p] = committed
        return out
    finally:
        await consumer.stop()
