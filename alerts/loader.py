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


async def _profiles(
    conn: Connection, engine: Engine, which: str, partitions: int, argument: list[int]
) -> list[int]:
    """The profiles of the patients `which` selects ($1: the partition count, $2:
    `argument`) into the engine, read as columns (one row of arrays per query: a million
    records would cost seconds to decode); returns their keys."""
    patients = await conn.fetchrow(
        f"""
        SELECT coalesce(array_agg(patient_key), '{{}}') AS keys,
               coalesce(array_agg(array_position($3::text[], programme) - 1), '{{}}')
                   AS programmes,
               coalesce(array_agg((extract(epoch FROM enrolled_at) * 1e6)::bigint), '{{}}')
                   AS enrolled_us,
               coalesce(array_agg(key_hash % $1), '{{}}') AS partitions,
               coalesce(array_agg(patient_key) FILTER (WHERE discharged_at IS NOT NULL), '{{}}')
                   AS gone
        FROM patients WHERE {which}
        """,
        partitions,
        argument,
        [p.value for p in PROGRAMMES],
    )
    assert patients is not None  # an aggregate: one row
    devices = await conn.fetchrow(
        """
        SELECT coalesce(array_agg(d.device_key), '{}') AS keys,
               coalesce(array_agg(d.patient_key), '{}') AS owners,
               coalesce(array_agg(array_position($2::text[], d.device_type) - 1), '{}') AS types
        FROM devices d JOIN unnest($1::int[]) AS k(patient_key) USING (patient_key)
        """,
        patients["keys"],
        [t.value for t in DEVICE_TYPES],
    )
    assert devices is not None
    overrides: dict[int, dict[str, float]] = defaultdict(dict)
    for r in await conn.fetch(
        "SELECT patient_key, parameter, value FROM threshold_overrides "
        "JOIN unnest($1::int[]) AS k(patient_key) USING (patient_key)",
        patients["keys"],
    ):
        overrides[r["patient_key"]][r["parameter"]] = r["value"]
    engine.add_roster(
        Roster(
            np.array(patients["keys"], np.int32),
            np.array(patients["programmes"], np.int8),
            np.array(patients["enrolled_us"], np.int64),
            np.array(patients["partitions"], np.int32),
            np.array(devices["keys"], np.int32),
            np.array(devices["owners"], np.int32),
            np.array(devices["types"], np.int8),
            overrides,
        )
    )
    engine.set_discharged(patients["gone"])
    keys: list[int] = patients["keys"]
    return keys


async def _history(conn: Connection, engine: Engine, keys: list[int], now_us: int) -> None:
    since_us = now_us - HISTORY_DAYS * DAY_US
    ring_codes = [BY_KIND[k].code for k in RING_SIZES]
    ring_size = max(RING_SIZES.values())
    # Latest of every kind, and the newest readings of the ring kinds, taken oldest first
    # (the order readings would have arrived in). One pass over each patient's recent
    # readings, read as columns (one row of arrays: 2M records took seconds to decode).
    recent = await conn.fetchrow(
        """
        SELECT coalesce(array_agg(patient_key), '{}') AS patient_key,
               coalesce(array_agg(kind), '{}') AS kind,
               coalesce(array_agg(value), '{}') AS value,
               coalesce(array_agg((extract(epoch FROM measured_at) * 1e6)::bigint), '{}') AS at_us,
               coalesce(array_agg(device_key), '{}') AS device_key
        FROM (
            SELECT r.*, row_number() OVER (PARTITION BY patient_key, kind
                                           ORDER BY measured_at DESC) AS newest
            FROM readings r
            WHERE patient_key = ANY($1::int[]) AND measured_at >= to_timestamp($2 / 1e6)
        ) recent
        WHERE newest = 1 OR (kind = ANY($3::smallint[]) AND newest <= $4)
        """,
        keys,
        since_us,
        ring_codes,
        ring_size,
    )
    assert recent is not None  # an aggregate: one row
    at_us = np.array(recent["at_us"], np.int64)
    arrival = np.argsort(at_us, kind="stable")
    history = engine.history
    history.insert(
        history.slots(np.array(recent["patient_key"], np.int32)[arrival]),
        np.array(recent["kind"], np.int16)[arrival],
        np.array(recent["value"], np.float64)[arrival],
        at_us[arrival],
        np.array(recent["device_key"], np.int32)[arrival],
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
