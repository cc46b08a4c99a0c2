"""A member loads the patients of its partitions only: PostgreSQL knows each patient's
partition of the readings topic (migration 0011), as Kafka's default partitioner gives it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest
from aiokafka.partitioner import murmur2
from prometheus_client import CollectorRegistry

from alerts.engine import Engine
from alerts.history import kind_index
from alerts.loader import load_partitions
from alerts.metrics import AlertMetrics
from alerts.programmes import load_config
from alerts.step import AlertStep
from devices.catalogue import BY_KIND, VitalKind
from devices.registry import DeviceType, Enrollment, Programme, enroll, sync_reference_data
from ingest.platform import SystemClock, connect, create_pool, migrate

# Every length modulo 4 (murmur2 hashes 4-byte blocks, then the tail).
PATIENT_IDS = [f"p-{n}" for n in range(40)] + ["a", "ab", "abc", "abcd", "P-0123456789.ab:c_d"]


@pytest.fixture
def schema() -> str:
    return f"k_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def conn(postgres_dsn: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    name = schema
    connection = await connect(postgres_dsn, name)
    try:
        await migrate(connection, name)
        await sync_reference_data(connection)
        yield connection
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await connection.close()


def kafka_partition(patient_id: str, partitions: int) -> int:
    return int(murmur2(patient_id.encode()) & 0x7FFFFFFF) % partitions


async def test_each_patient_knows_the_hash_of_kafkas_default_partitioner(
    conn: asyncpg.Connection,
) -> None:
    await enroll(conn, [_oximeter(p) for p in PATIENT_IDS])
    stored = {
        r["patient_id"]: r["key_hash"]
        for r in await conn.fetch("SELECT patient_id, key_hash FROM patients")
    }
    assert stored == {p: murmur2(p.encode()) & 0x7FFFFFFF for p in PATIENT_IDS}


async def test_the_hash_is_murmur2_of_any_text(conn: asyncpg.Connection) -> None:
    """Every length modulo 4 up to 70 bytes, multi-byte UTF-8 included: the hash as
    aiokafka computes it (migration 0013 computes it in fewer statements than 0011)."""
    alphabet = "aZ9._:-\u00e9\u20ac\U0001f600"
    keys = [
        "".join(alphabet[(n * 7 + i * 3) % len(alphabet)] for i in range(n % 71))
        for n in range(600)
    ]
    rows = await conn.fetch("SELECT k, kafka_key_hash(k) AS h FROM unnest($1::text[]) AS k", keys)
    assert {r["k"]: r["h"] for r in rows} == {k: murmur2(k.encode()) & 0x7FFFFFFF for k in keys}


async def test_a_member_loads_the_active_patients_of_its_partitions_only(
    conn: asyncpg.Connection,
) -> None:
    await enroll(conn, [_oximeter(p) for p in PATIENT_IDS])
    await conn.execute("UPDATE patients SET discharged_at = now() WHERE patient_id = 'p-0'")
    engine = Engine(load_config(None))
    loaded = await load_partitions(conn, engine, [0, 4], 12, 1_795_000_000_000_000)
    expected = {p for p in PATIENT_IDS if kafka_partition(p, 12) in (0, 4) and p != "p-0"}
    keys = {
        r["patient_key"]: r["patient_id"]
        for r in await conn.fetch("SELECT patient_key, patient_id FROM patients")
    }
    loaded_keys = engine.history.patient_key[: len(engine.history)].tolist()
    assert {keys[k] for k in loaded_keys} == expected
    assert loaded == len(expected)
    slots = engine.history.slots(loaded_keys)
    assert sorted(engine.history.partition[slots].tolist()) == sorted(
        kafka_partition(p, 12) for p in expected
    )
    assert len(engine.history.device_keys) == len(expected)  # each patient's oximeter


def _oximeter(patient_id: str) -> Enrollment:
    return Enrollment(
        patient_id=patient_id,
        programme=Programme.COVID,
        device_id=f"oxi-{uuid.uuid4().hex[:8]}",
        device_type=DeviceType.PULSE_OXIMETER,
    )


async def test_the_state_rebuilt_from_postgresql_is_the_state_its_readings_built(
    conn: asyncpg.Connection,
) -> None:
    """Latest values, rings and CGM day counts: a member that rebuilds them from the stored
    readings holds what a member that took the same readings live holds."""
    patients = ["cgm-1", "cgm-2", "oxi-1"]
    await enroll(
        conn,
        [
            Enrollment(
                patient_id=p,
                programme=Programme.DIABETES,
                device_id=f"d-{p}",
                device_type=DeviceType.CGM,
            )
            for p in patients[:2]
        ]
        + [_oximeter(patients[2])],
    )
    now_us = 1_795_000_000_000_000
    day_us = 86_400_000_000
    rows = await conn.fetch(
        "SELECT p.patient_key, d.device_key FROM patients p JOIN devices d USING (patient_key) "
        "ORDER BY p.patient_id"
    )
    cgm, spo2 = BY_KIND[VitalKind.GLUCOSE_CGM].code, BY_KIND[VitalKind.SPO2].code
    readings = (
        [  # (patient, device, kind, value, at): CGM over three days, SpO2
            (r["patient_key"], r["device_key"], cgm, 55.0 + 10 * (i % 4), now_us - i * day_us // 7)
            for r in rows[:2]
            for i in range(20)
        ]
        + [
            (rows[2]["patient_key"], rows[2]["device_key"], spo2, 90.0 + i, now_us - i)
            for i in range(3)
        ]
    )
    days = {at // day_us for *_, at in readings}
    for day in days:
        await conn.execute("SELECT create_reading_day(to_timestamp($1 * 86400)::date)", day)
    await conn.executemany(
        "INSERT INTO readings VALUES ($1, $2, $3, $4, to_timestamp($5 / 1e6), now(), 0, 0)",
        readings,
    )
    live, rebuilt = Engine(load_config(None)), Engine(load_config(None))
    await load_partitions(conn, live, range(12), 12, now_us - 30 * day_us)  # before them all
    key, device, kind, value, at = (np.array(c) for c in zip(*reversed(readings), strict=True))
    live.history.insert(
        live.history.slots(key), kind.astype(np.int16), value, at, device.astype(np.int32)
    )
    await load_partitions(conn, rebuilt, range(12), 12, now_us)

    def state(engine: Engine) -> list[list[float]]:
        slots = engine.history.slots(np.unique(key))
        of = kind_index(VitalKind.GLUCOSE_CGM), kind_index(VitalKind.SPO2)
        values, times = engine.history.latest_of(slots, of)
        spo2_ring = engine.history.rings[of[1]].of(slots)
        return [
            *values.tolist(),
            *times.tolist(),
            *(np.sort(a, axis=1).tolist() for a in spo2_ring),
            *(np.sort(a, axis=1).tolist() for a in engine.history.cgm.of(slots)),
            engine.history.cgm.last.take(engine.history.cgm.row.take(slots)).tolist(),
        ]

    assert state(rebuilt) == state(live)
    _, below, total = rebuilt.history.cgm.of(rebuilt.history.slots([rows[0]["patient_key"]]))
    assert total.sum() == 20
    assert below.sum() == 10  # 55 and 65 mg/dL, two readings in four


async def test_a_member_keeps_the_state_of_the_partitions_it_held_throughout(
    conn: asyncpg.Connection, postgres_dsn: str, schema: str
) -> None:
    """A takeover loads the partitions that moved only. A member that lost a partition,
    held one another member wrote to meanwhile, or did not finish its drain, rebuilds."""
    await enroll(conn, [_oximeter(p) for p in PATIENT_IDS])
    keys = {r["patient_id"]: r["patient_key"] for r in await conn.fetch("SELECT * FROM patients")}
    held = next(p for p in PATIENT_IDS if kafka_partition(p, 12) < 6)
    async with await create_pool(postgres_dsn, schema, 2) as pool:
        step = AlertStep(
            Engine(load_config(None)), pool, SystemClock(), AlertMetrics(CollectorRegistry())
        )

        async def remembers_a_reading_never_stored() -> bool:
            slots = step.engine.history.slots([keys[held]])
            if slots[0] < 0:
                return False
            return bool(step.engine.history.latest[kind_index(VitalKind.SPO2)].of(slots)[1][0] == 7)

        def loaded() -> set[str]:
            history = step.engine.history
            return {p for p, k in keys.items() if history.slot(k) is not None}

        half, everything = list(range(6)), list(range(12))
        await step.assigned(half, 12, [])
        assert loaded() == {p for p in PATIENT_IDS if kafka_partition(p, 12) < 6}
        slot = step.engine.history.slots([keys[held]])
        step.engine.history.insert(
            slot,
            np.array([BY_KIND[VitalKind.SPO2].code], np.int16),
            np.array([97.0]),
            np.array([7], np.int64),
        )  # a mark of the state kept: a reading PostgreSQL does not have

        step.revoked(drained=True)
        await step.assigned(everything, 12, half)  # the other member's partitions come
        assert loaded() == set(PATIENT_IDS)
        assert await remembers_a_reading_never_stored()

        step.revoked(drained=True)
        await step.assigned(everything, 12, everything[:-1])  # 11 was written to meanwhile
        assert loaded() == set(PATIENT_IDS)
        assert not await remembers_a_reading_never_stored()

        for drained, partitions, continuous in (
            (False, everything, everything),
            (True, half, everything),
        ):
            step.engine.history.insert(
                step.engine.history.slots([keys[held]]),
                np.array([BY_KIND[VitalKind.SPO2].code], np.int16),
                np.array([97.0]),
                np.array([7], np.int64),
            )
            step.revoked(drained=drained)
            await step.assigned(partitions, 12, continuous)
            assert not await remembers_a_reading_never_stored(), (drained, partitions)
        assert loaded() == {p for p in PATIENT_IDS if kafka_partition(p, 12) < 6}
