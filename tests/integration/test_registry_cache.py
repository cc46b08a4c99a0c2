"""The registry cache against PostgreSQL: the owned pairs PostgreSQL digests are the pairs
the pipeline looks up, and a pair not held is still answered by the database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka.partitioner import murmur2

from devices.pairs import pair_digests
from devices.registry import DeviceType, Enrollment, Programme, enroll, sync_reference_data
from ingest.pipeline.registry_cache import RegistryCache
from ingest.platform import SystemClock, connect, create_pool, migrate

PARTITIONS = 4
# Identifiers of every length class the digest's length prefix meets, ':' and '.' included.
PATIENTS = [f"p-{n}" for n in range(30)] + ["a", "a:b", "P-0123456789.ab:c_d", "z" * 64]


def kafka_partition(patient_id: str) -> int:
    return int(murmur2(patient_id.encode()) & 0x7FFFFFFF) % PARTITIONS


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    schema = f"r_{uuid.uuid4().hex[:12]}"
    conn = await connect(postgres_dsn, schema)
    await migrate(conn, schema)
    await sync_reference_data(conn)
    await enroll(
        conn,
        [
            Enrollment(
                patient_id=p,
                programme=Programme.COVID,
                device_id=f"{p[:50]}:dev-{n}",
                device_type=DeviceType.PULSE_OXIMETER,
            )
            for p in PATIENTS
            for n in range(2)
        ],
    )
    pool = await create_pool(postgres_dsn, schema, 2)
    try:
        yield pool
    finally:
        await pool.close()
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def registered(pool: asyncpg.Pool) -> dict[tuple[str, str], tuple[int, int]]:
    rows = await pool.fetch(
        "SELECT p.patient_id, d.device_id, p.patient_key, d.device_key "
        "FROM patients p JOIN devices d USING (patient_key)"
    )
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def new_cache(pool: asyncpg.Pool) -> RegistryCache:
    return RegistryCache(pool, capacity=1000, negative_ttl_s=60, clock=SystemClock())


async def keys_of(cache: RegistryCache, pairs: list[tuple[str, str]]) -> list[tuple[int, int]]:
    patient_ids, device_ids = [p for p, _ in pairs], [d for _, d in pairs]
    resolved = await cache.resolve(patient_ids, device_ids, pair_digests(patient_ids, device_ids))
    return list(zip(resolved.patient_key.tolist(), resolved.device_key.tolist(), strict=True))


async def test_the_owned_pairs_answer_without_the_database(pool: asyncpg.Pool) -> None:
    truth = await registered(pool)
    mine = [0, 2]
    held = [pair for pair in truth if kafka_partition(pair[0]) in mine]
    cache = new_cache(pool)
    await cache.own(mine, PARTITIONS)
    assert cache.owned == len(held) > 0
    await pool.close()  # the owned pairs need no query: a query would fail now
    assert await keys_of(cache, held) == [truth[pair] for pair in held]


async def test_pairs_not_held_come_from_the_database_and_unknown_ones_are_unknown(
    pool: asyncpg.Pool,
) -> None:
    truth = await registered(pool)
    cache = new_cache(pool)
    await cache.own([1], PARTITIONS)
    pairs = [*truth, ("p-1", "p-2:dev-0"), ("nobody", "p-1:dev-0")]  # mismatched, unknown
    expected = [*truth.values(), (-1, -1), (-1, -1)]
    assert await keys_of(cache, pairs) == expected


async def test_a_discharged_patient_is_not_held_but_still_resolved(pool: asyncpg.Pool) -> None:
    await pool.execute("UPDATE patients SET discharged_at = now() WHERE patient_id = 'a:b'")
    truth = await registered(pool)
    cache = new_cache(pool)
    await cache.own(range(PARTITIONS), PARTITIONS)
    assert cache.owned == len(truth) - 2
    pair = ("a:b", "a:b:dev-1")
    assert await keys_of(cache, [pair]) == [truth[pair]]


async def test_a_new_assignment_keeps_the_partitions_still_held_and_reads_the_others(
    pool: asyncpg.Pool,
) -> None:
    truth = await registered(pool)
    on = {p: sum(kafka_partition(pair[0]) == p for pair in truth) for p in range(PARTITIONS)}
    cache = new_cache(pool)
    await cache.own([0, 1], PARTITIONS)
    assert cache.owned == on[0] + on[1]
    await cache.own([1, 3], PARTITIONS)
    assert cache.owned == on[1] + on[3]
    held = [pair for pair in truth if kafka_partition(pair[0]) in (1, 3)]
    await pool.close()
    assert await keys_of(cache, held) == [truth[pair] for pair in held]


async def test_another_partition_count_reads_every_partition_again(pool: asyncpg.Pool) -> None:
    truth = await registered(pool)
    cache = new_cache(pool)
    await cache.own(range(PARTITIONS), PARTITIONS)
    await cache.own([0], 1)  # the topic's partitions changed: one of one
    assert cache.owned == len(truth)
