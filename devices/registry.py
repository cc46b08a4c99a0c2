"""Who is followed, on which programme, with which devices.

A reading is accepted only from a device enrolled for its patient. Enrollment
comes from `telemon enroll` (one patient, or a CSV file) and from the
simulator, which enrolls its own cohort. The registry's reference tables
(programmes, vital kinds) mirror the Python catalogues, the source of truth.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.catalogue import CATALOGUE
from devices.contract import ID_PATTERN
from ingest.platform import Connection, TelemonError

__all__ = [
    "DeviceType",
    "EnrollResult",
    "Enrollment",
    "EnrollmentFileError",
    "Programme",
    "enroll",
    "read_enrollment_csv",
    "renew_prescription",
    "sync_reference_data",
]


class Programme(StrEnum):
    COVID = "covid"
    HEART_FAILURE = "heart_failure"
    RESPIRATORY = "respiratory"
    DIABETES = "diabetes"


class DeviceType(StrEnum):
    PULSE_OXIMETER = "pulse_oximeter"
    BLOOD_PRESSURE_MONITOR = "blood_pressure_monitor"
    SCALE = "scale"
    THERMOMETER = "thermometer"
    GLUCOMETER = "glucometer"
    CGM = "cgm"
    VENTILATOR = "ventilator"
    WEARABLE = "wearable"
    QUESTIONNAIRE_APP = "questionnaire_app"


_Id = Annotated[str, Field(pattern=ID_PATTERN)]


class Enrollment(BaseModel):
    """One device of one patient; a CSV row of `telemon enroll --csv`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_id: _Id
    programme: Programme
    device_id: _Id
    device_type: DeviceType


@dataclass(frozen=True, slots=True)
class EnrollResult:
    patients: int  # patients created or whose programme changed
    devices: int  # devices newly enrolled


class EnrollmentFileError(ValueError):
    """A CSV enrollment file has bad rows; nothing of it was enrolled."""


CSV_COLUMNS = ("patient_id", "programme", "device_id", "device_type")


def read_enrollment_csv(text: str) -> list[Enrollment]:
    """Parse an enrollment CSV (header: patient_id,programme,device_id,device_type).

    Every row is checked before anything is enrolled; the error lists each bad
    line with what is wrong.
    """
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
        raise EnrollmentFileError(
            f"header must be {','.join(CSV_COLUMNS)}, got {','.join(reader.fieldnames or [])}"
        )
    rows: list[Enrollment] = []
    problems: list[str] = []
    for row in reader:
        try:
            rows.append(Enrollment.model_validate(row))
        except ValidationError as error:
            what = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
            problems.append(f"line {reader.line_num}: {what}")
    if problems:
        raise EnrollmentFileError("\n".join(problems))
    return rows


PRESCRIPTION_AT_MOST = timedelta(days=366)  # a prescription lasts at most a year


async def renew_prescription(
    conn: Connection, patient_id: str, until: datetime, by: str, now: datetime | None = None
) -> None:
    """Renew a patient's prescription of telemonitoring until `until` (at most a year after
    `now`), as recorded by `by` (an audit record)."""
    now = now or datetime.now(UTC)
    if not now < until <= now + PRESCRIPTION_AT_MOST:
        raise TelemonError(f"a prescription is renewed for at most a year: not until {until}")
    async with conn.transaction():
        renewed = await conn.execute(
            "UPDATE patients SET prescribed_until = $2 WHERE patient_id = $1 "
            "AND discharged_at IS NULL",
            patient_id,
            until,
        )
        if renewed != "UPDATE 1":
            raise TelemonError(f"no followed patient {patient_id!r}")
        await conn.execute(
            """
            INSERT INTO audit_events (action, subtype, outcome, http_status, agent, source,
                                      entity, patient_id)
            VALUES ('U', 'prescription.renew', 0, 200, $1, 'telemon-cli', 'patients', $2)
            """,
            by,
            patient_id,
        )


async def enroll(
    conn: Connection, enrollments: Sequence[Enrollment], at: datetime | None = None
) -> EnrollResult:
    """Enroll patients and devices; idempotent. A patient's programme follows the last row."""
    if not enrollments:
        return EnrollResult(0, 0)
    programmes = {e.patient_id: e.programme.value for e in enrollments}
    async with conn.transaction():
        patients = await conn.fetchval(
            """
            WITH upserted AS (
                INSERT INTO patients (patient_id, programme, enrolled_at)
                SELECT p, g, coalesce($3, now()) FROM unnest($1::text[], $2::text[]) AS t(p, g)
                ON CONFLICT (patient_id) DO UPDATE SET programme = EXCLUDED.programme
                WHERE patients.programme IS DISTINCT FROM EXCLUDED.programme
                RETURNING 1
            ) SELECT count(*) FROM upserted
            """,
            list(programmes),
            list(programmes.values()),
            at,
        )
        devices = await conn.fetchval(
            """
            WITH added AS (
                INSERT INTO devices (device_id, patient_key, device_type, enrolled_at)
                SELECT t.d, p.patient_key, t.k, coalesce($4, now())
                FROM unnest($1::text[], $2::text[], $3::text[]) AS t(pid, d, k)
                JOIN patients p ON p.patient_id = t.pid
                ON CONFLICT (device_id, patient_key) DO NOTHING
                RETURNING 1
            ) SELECT count(*) FROM added
            """,
            [e.patient_id for e in enrollments],
            [e.device_id for e in enrollments],
            [e.device_type.value for e in enrollments],
            at,
        )
    return EnrollResult(int(patients), int(devices))


async def sync_reference_data(conn: Connection) -> None:
    """Bring the reference tables in line with the catalogues (after each migration)."""
    await conn.executemany(
        "INSERT INTO programmes (name) VALUES ($1) ON CONFLICT DO NOTHING",
        [(p.value,) for p in Programme],
    )
    await conn.executemany(
        """
        INSERT INTO vital_kinds (code, kind, unit, value_type, loinc, mdc)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (code) DO UPDATE SET kind = EXCLUDED.kind, unit = EXCLUDED.unit,
            value_type = EXCLUDED.value_type, loinc = EXCLUDED.loinc, mdc = EXCLUDED.mdc
        """,
        [(v.code, v.kind.value, v.unit, v.value_type.value, v.loinc, v.mdc) for v in CATALOGUE],
    )
