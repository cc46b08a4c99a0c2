"""Rebuild the engine's patients from PostgreSQL: profiles, overrides and history.

On assignment the engine needs every followed patient of the assigned
partitions (a silent patient must still raise missing-data alerts), so the
roster is all active patients whose id the readings topic's partitioner maps
to an assigned partition (Kafka's default murmur2, as gateways must use; the
patients table keeps each id's hash, `key_hash`, since migration 0011). A
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

from alerts.engine import DEVICE_TYPES, PROGRAMMES, Engine, Roster
from alerts.history import CGM_DAYS, CGM_LOW_MG_DL, DAY_US, RING_SIZES
from devices.catalogue import BY_KIND
from devices.catalogue import VitalKind as K
from ingest.pipeline.pgcopy import PG_EPOCH_US, copy_row, copy_rows
from ingest.platform import Connection

__all__ = ["load_partitions", "load_patients", "load_profiles"]

HISTORY_DAYS = 30  # how far back the latest value of a kind is looked for


async def load_partitions(
    conn: Connection, engine: Engine, assigned: Iterable[int], partitions: int, now_us: int
) -> int:
    """Load every active patient of the assigned partitions; returns how many."""
    keys = await _profiles(
        conn,
        engine,
        "discharged_at IS NULL AND key_hash % $1 = ANY($2::int[])",
        partitions,
        list(assigned),
    )
    await _history(conn, engine, keys, now_us)
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
    await _profiles(conn, engine, "patient_key = ANY($2::int[])", partitions, list(patient_keys))


# The queries whose rows the state is built from, each read by a binary COPY into one
# array (ingest.pipeline.pgcopy): half a million patients' profiles and 4.7M readings
# took seconds to decode as asyncpg records or arrays of Python objects.
_PATIENTS = """
    SELECT patient_key, (array_position($3::text[], programme) - 1)::smallint,
           enrolled_at, key_hash % $1, discharged_at IS NOT NULL
    FROM patients WHERE {which}
"""
_PATIENT_ROW = copy_row(
    (
        ("patient_key", ">i4"),
        ("programme", ">i2"),
        ("enrolled_at", ">i8"),
        ("partition", ">i4"),
        ("discharged", "?"),
    )
)
_DEVICES = """
    SELECT d.device_key, d.patient_key, (array_position($2::text[], d.device_type) - 1)::smallint
    FROM devices d JOIN unnest($1::int[]) AS k(patient_key) USING (patient_key)
"""
_DEVICE_ROW = copy_row((("device_key", ">i4"), ("patient_key", ">i4"), ("type", ">i2")))
# Latest of every kind, and the newest readings of the ring kinds: one pass over each
# patient's recent readings.
_RECENT = """
    SELECT patient_key, kind, value, measured_at, device_key
    FROM (
        SELECT patient_key, kind, value, measured_at, device_key,
               row_number() OVER (PARTITION BY patient_key, kind
                                  ORDER BY measured_at DESC) AS newest
        FROM readings
        WHERE patient_key = ANY($1::int[]) AND measured_at >= to_timestamp($2 / 1e6)
    ) recent
    WHERE newest = 1 OR (kind = ANY($3::smallint[]) AND newest <= $4)
"""
_RECENT_ROW = copy_row(
    (
        ("patient_key", ">i4"),
        ("kind", ">i2"),
        ("value", ">f8"),
        ("measured_at", ">i8"),
        ("device_key", ">i4"),
    )
)


async def _profiles(
    conn: Connection, engine: Engine, which: str, partitions: int, argument: list[int]
) -> list[int]:
    """The profiles of the patients `which` selects ($1: the partition count, $2:
    `argument`) into the engine; returns their keys."""
    patients = await copy_rows(
        conn,
        _PATIENTS.format(which=which),
        _PATIENT_ROW,
        partitions,
        argument,
        [p.value for p in PROGRAMMES],
    )
    keys: list[int] = patients["patient_key"].tolist()
    devices = await copy_rows(conn, _DEVICES, _DEVICE_ROW, keys, [t.value for t in DEVICE_TYPES])
    overrides: dict[int, dict[str, float]] = defaultdict(dict)
    for r in await conn.fetch(
        "SELECT patient_key, parameter, value FROM threshold_overrides "
        "JOIN unnest($1::int[]) AS k(patient_key) USING (patient_key)",
        keys,
    ):
        overrides[r["patient_key"]][r["parameter"]] = r["value"]
    engine.add_roster(
        Roster(
            patients["patient_key"].astype(np.int32),
            patients["programme"].astype(np.int8),
            patients["enrolled_at"].astype(np.int64) + PG_EPOCH_US,
            patients["partition"].astype(np.int32),
            devices["device_key"].astype(np.int32),
            devices["patient_key"].astype(np.int32),
            devices["type"].astype(np.int8),
            overrides,
        )
    )
    engine.set_discharged(patients["patient_key"][patients["discharged"]].tolist())
    return keys


async def _history(conn: Connection, engine: Engine, keys: list[int], now_us: int) -> None:
    ring_codes = [BY_KIND[k].code for k in RING_SIZES]
    recent = await copy_rows(
        conn,
        _RECENT,
        _RECENT_ROW,
        keys,
        now_us - HISTORY_DAYS * DAY_US,
        ring_codes,
        max(RING_SIZES.values()),
    )
    at_us = recent["measured_at"].astype(np.int64) + PG_EPOCH_US
    arrival = np.argsort(at_us, kind="stable")  # taken oldest first, as they arrived
    history = engine.history
    history.insert(
        history.slots(recent["patient_key"][arrival].astype(np.int32)),
        recent["kind"][arrival].astype(np.int16),
        recent["value"][arrival].astype(np.float64),
        at_us[arrival],
        recent["device_key"][arrival].astype(np.int32),
    )
    await _cgm(conn, engine, keys, now_us)


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
    if not rows:
        return
    history = engine.history
    patient_key, day, below, total, last_us = zip(*rows, strict=True)
    history.cgm.restore(
        history.slots(patient_key),
        np.array(day, np.int64),
        np.array(below, np.int32),
        np.array(total, np.int32),
        np.array(last_us, np.int64),
    )
