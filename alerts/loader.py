"""Rebuild the engine's patients from PostgreSQL: profiles, overrides and history.

On assignment the engine needs every followed patient of the assigned
partitions (a silent patient must still raise missing-data alerts), so the
roster is all active patients whose id the readings topic's partitioner maps
to an assigned partition (Kafka's default murmur2, as gateways must use). A
patient enrolled later is loaded when their first reading arrives.

History comes from stored readings: the latest value of each kind, the
newest readings of the ring kinds within the rules' windows, CGM counts per
day, and each device's latest reading. The adherence of months 1 and 2 is checked
again when due (alerts.adherence).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from aiokafka.partitioner import murmur2

from alerts.engine import Engine, PatientProfile
from alerts.history import CGM_DAYS, CGM_LOW_MG_DL, DAY_US, RING_SIZES
from devices.catalogue import BY_KIND
from devices.catalogue import VitalKind as K
from devices.registry import DeviceType, Programme
from ingest.platform import Connection

__all__ = ["kafka_partition", "load_partitions", "load_patients", "load_profiles"]

HISTORY_DAYS = 30  # how far back the latest value of a kind is looked for


def kafka_partition(patient_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives this key."""
    return int(murmur2(patient_id.encode()) & 0x7FFFFFFF) % partitions


async def load_partitions(
    conn: Connection, engine: Engine, assigned: Iterable[int], partitions: int, now_us: int
) -> int:
    """Load every active patient of the assigned partitions; returns how many."""
    wanted = set(assigned)
    roster = await conn.fetch(
        "SELECT patient_key, patient_id FROM patients WHERE discharged_at IS NULL"
    )
    keys = [
        r["patient_key"] for r in roster if kafka_partition(r["patient_id"], partitions) in wanted
    ]
    await load_patients(conn, engine, keys, partitions, now_us)
    return len(keys)


async def load_patients(
    conn: Connection, engine: Engine, patient_keys: Sequence[int], partitions: int, now_us: int
) -> None:
    """Profiles and history of these patients into the engine."""
    if not patient_keys:
        return
    await load_profiles(conn, engine, patient_keys, partitions)
    await _history(conn, engine, list(patient_keys), now_us)


async def load_profiles(
    conn: Connection, engine: Engine, patient_keys: Sequence[int], partitions: int
) -> None:
    """Programme, enrolment, devices and overrides of these patients; no history."""
    keys = list(patient_keys)
    patients = await conn.fetch(
        """
        SELECT p.patient_key, p.patient_id, p.programme, p.discharged_at IS NOT NULL AS gone,
               (extract(epoch FROM p.enrolled_at) * 1e6)::bigint AS enrolled_us,
               coalesce(array_agg(d.device_key) FILTER (WHERE d.device_key IS NOT NULL), '{}')
                   AS device_keys,
               coalesce(array_agg(d.device_type) FILTER (WHERE d.device_key IS NOT NULL), '{}')
                   AS device_types
        FROM patients p LEFT JOIN devices d USING (patient_key)
        WHERE p.patient_key = ANY($1::int[])
        GROUP BY p.patient_key
        """,
        keys,
    )
    overrides: dict[int, dict[str, float]] = defaultdict(dict)
    for r in await conn.fetch(
        "SELECT patient_key, parameter, value FROM threshold_overrides "
        "WHERE patient_key = ANY($1::int[])",
        keys,
    ):
        overrides[r["patient_key"]][r["parameter"]] = r["value"]
    engine.add_patients(
        PatientProfile(
            r["patient_key"],
            Programme(r["programme"]),
            r["enrolled_us"],
            kafka_partition(r["patient_id"], partitions),
            [(k, DeviceType(t)) for k, t in zip(r["device_keys"], r["device_types"], strict=True)],
            overrides[r["patient_key"]],
        )
        for r in patients
    )
    engine.set_discharged(r["patient_key"] for r in patients if r["gone"])


async def _history(conn: Connection, engine: Engine, keys: list[int], now_us: int) -> None:
    since_us = now_us - HISTORY_DAYS * DAY_US
    ring_codes = [BY_KIND[k].code for k in RING_SIZES]
    ring_size = max(RING_SIZES.values())
    # Latest of every kind, and the newest readings of the ring kinds, oldest first (the
    # order readings would have arrived in). One pass over each patient's recent readings.
    rows = await conn.fetch(
        """
        SELECT patient_key, kind, value, device_key,
               (extract(epoch FROM measured_at) * 1e6)::bigint AS at_us
        FROM (
            SELECT r.*, row_number() OVER (PARTITION BY patient_key, kind
                                           ORDER BY measured_at DESC) AS newest
            FROM readings r
            WHERE patient_key = ANY($1::int[]) AND measured_at >= to_timestamp($2 / 1e6)
        ) recent
        WHERE newest = 1 OR (kind = ANY($3::smallint[]) AND newest <= $4)
        ORDER BY measured_at
        """,
        keys,
        since_us,
        ring_codes,
        ring_size,
    )
    if rows:
        _insert(engine, rows)
    await _cgm(conn, engine, keys, now_us)


def _insert(engine: Engine, rows: Sequence[object]) -> None:
    patient = np.array([r["patient_key"] for r in rows], np.int32)  # type: ignore[index]
    engine.history.insert(
        engine.history.slots(patient),
        np.array([r["kind"] for r in rows], np.int16),  # type: ignore[index]
        np.array([r["value"] for r in rows], np.float64),  # type: ignore[index]
        np.array([r["at_us"] for r in rows], np.int64),  # type: ignore[index]
        np.array([r["device_key"] for r in rows], np.int32),  # type: ignore[index]
    )


async def _cgm(conn: Connection, engine: Engine, keys: list[int], now_us: int) -> None:
    """CGM counts per day (the last days the ring holds) and the latest counted reading."""
    rows = await conn.fetch(
        """
        SELECT patient_key, floor(extract(epoch FROM measured_at) / 86400)::bigint AS day,
               count(*) FILTER (WHERE value < $4) AS below, count(*) AS total,
               (extract(epoch FROM max(measured_at)) * 1e6)::bigint AS last_us
        FROM readings
        WHERE patient_key = ANY($1::int[]) AND kind = $2
          AND measured_at >= to_timestamp($3 / 1e6)
        GROUP BY 1, 2
        """,
        keys,
        BY_KIND[K.GLUCOSE_CGM].code,
        now_us - CGM_DAYS * DAY_US,
        CGM_LOW_MG_DL,
    )
    history = engine.history
    for r in rows:
        slot = history.slot_of[r["patient_key"]]
        bucket = r["day"] % CGM_DAYS
        history.cgm_day[slot, bucket] = r["day"]
        history.cgm_below[slot, bucket] = r["below"]
        history.cgm_total[slot, bucket] = r["total"]
        history.cgm_last[slot] = max(history.cgm_last[slot], r["last_us"])
