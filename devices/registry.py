"""Who is followed, on which programme, with which devices.

A reading is accepted only from a device enrolled for its patient. Enrollment
comes from `telemon enroll` (one patient, or a CSV file) and from the
simulator, which enrolls its own cohort. The registry's reference tables
(programmes, vital kinds) mirror the Python catalogues, the source of truth.
"""

from __future__ import annotations

import csv
import gc
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.catalogue import CATALOGUE
from devices.contract import ID_PATTERN
from ingest.platform import Connection, TelemonError

__all__ = [
    "DeviceType",
    "EnrollResult",
    "Enrollment",
    "EnrollmentFileError",
    "EnrollmentRow",
    "Programme",
    "enroll",
    "enroll_rows",
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


class EnrollmentFileError(TelemonError):
    """A CSV enrollment file has bad rows; nothing of it was enrolled."""

    exit_code = 2


CSV_COLUMNS = ("patient_id", "programme", "device_id", "device_type")

EnrollmentRow = Sequence[str]
"""patient_id, programme, device_id, device_type: a CSV row, checked."""

_T = TypeVar("_T")

CHUNK_ROWS = 50_000  # rows read and checked, then sent to PostgreSQL, at a time

_valid_id = re.compile(ID_PATTERN).fullmatch
_PROGRAMMES = frozenset(p.value for p in Programme)
_DEVICE_TYPES = frozenset(t.value for t in DeviceType)


def read_enrollment_csv(
    lines: Iterable[str], chunk_rows: int = CHUNK_ROWS
) -> Iterator[list[EnrollmentRow]]:
    """Parse an enrollment CSV (header: patient_id,programme,device_id,device_type) into
    chunks of checked rows.

    The header is checked at once. The rows are checked as they are read; once one is
    bad, none are yielded any more, and the end of the file raises EnrollmentFileError
    listing each bad line with what is wrong (a caller that enrolled nothing yet, or only
    staged what it got, then enrols nothing of the file).
    """
    reader = csv.reader(lines)
    header = _unreadable_as_file_error(reader, lambda: next(reader, []))
    if tuple(header) != CSV_COLUMNS:
        raise EnrollmentFileError(f"header must be {','.join(CSV_COLUMNS)}, got {','.join(header)}")
    return _checked_chunks(reader, chunk_rows)


def _checked_chunks(reader: Any, chunk_rows: int) -> Iterator[list[EnrollmentRow]]:
    problems: list[str] = []
    while True:
        chunk = _unreadable_as_file_error(reader, lambda: _read_chunk(reader, chunk_rows, problems))
        if problems:
            if not chunk:
                raise EnrollmentFileError("\n".join(problems))
        elif chunk:
            yield chunk
        else:
            return


def _read_chunk(reader: Any, chunk_rows: int, problems: list[str]) -> list[EnrollmentRow]:
    """Up to `chunk_rows` good rows; each bad one adds to `problems` (blank lines skipped)."""
    chunk: list[EnrollmentRow] = []
    # Rows are lists of strings, with no cycle to collect: a collection every few
    # thousand of them would walk every one alive (3M rows read in 9 s, 2.2 s without).
    gc.disable()
    try:
        for row in reader:
            if (
                len(row) == 4
                and _valid_id(row[0])
                and row[1] in _PROGRAMMES
                and _valid_id(row[2])
                and row[3] in _DEVICE_TYPES
            ):
                chunk.append(row)
                if len(chunk) == chunk_rows:
                    break
            elif row:
                problems.append(f"line {reader.line_num}: {_what_is_wrong(row)}")
    finally:
        gc.enable()
    return chunk


def _unreadable_as_file_error(reader: Any, read: Callable[[], _T]) -> _T:
    try:
        return read()
    except UnicodeDecodeError as error:
        raise EnrollmentFileError(f"not UTF-8 text: {error}") from None
    except csv.Error as error:
        raise EnrollmentFileError(f"after line {reader.line_num}: {error}") from None


def _what_is_wrong(row: list[str]) -> str:
    if len(row) != len(CSV_COLUMNS):
        return f"{len(row)} fields, expected {len(CSV_COLUMNS)} ({','.join(CSV_COLUMNS)})"
    try:
        Enrollment.model_validate(dict(zip(CSV_COLUMNS, row, strict=True)))
    except ValidationError as error:
        return "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
    raise AssertionError(f"{row!r} is valid but failed the quick check")


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
    rows = [
        (e.patient_id, e.programme.value, e.device_id, e.device_type.value) for e in enrollments
    ]
    return await enroll_rows(conn, [rows], at)


async def enroll_rows(
    conn: Connection, chunks: Iterable[Sequence[EnrollmentRow]], at: datetime | None = None
) -> EnrollResult:
    """Enroll checked rows, read chunk by chunk (`read_enrollment_csv`), in one transaction:
    all of them or, if reading fails, nothing. Idempotent; a patient's programme follows
    its last row.

    Each chunk is copied (binary COPY) into a temporary table as it comes; the patients
    (their last programme each), then the devices, are inserted from it set by set.
    """
    async with conn.transaction():
        # The devices' join to their patients is hashed in one batch, in the rows' order,
        # so that the devices' index is appended to in patient order.
        work_mem = await conn.fetchval("SELECT current_setting('work_mem')")
        await conn.execute("SELECT set_config('work_mem', '256MB', true)")
        await conn.execute(
            "CREATE TEMP TABLE enrolment_rows (patient_id text, programme text, "
            "device_id text, device_type text); "
            "CREATE TEMP TABLE enrolment_patients (patient_id text, programme text)"
        )
        programmes: dict[str, str] = {}
        for chunk in chunks:
            await conn.copy_records_to_table("enrolment_rows", records=chunk)
            programmes.update((r[0], r[1]) for r in chunk)
        await conn.copy_records_to_table("enrolment_patients", records=programmes.items())
        patients = await conn.execute(
            """
            INSERT INTO patients (patient_id, programme, enrolled_at)
            SELECT patient_id, programme, coalesce($1, now()) FROM enrolment_patients
            ON CONFLICT (patient_id) DO UPDATE SET programme = EXCLUDED.programme
            WHERE patients.programme IS DISTINCT FROM EXCLUDED.programme
            """,
            at,
        )
        devices = await _insert_devices(conn, at)
        await conn.execute("DROP TABLE enrolment_rows, enrolment_patients")
        await conn.execute("SELECT set_config('work_mem', $1, true)", work_mem)
    return EnrollResult(_row_count(patients), _row_count(devices))


_DEVICES = """
    INSERT INTO devices (device_id, patient_key, device_type, enrolled_at)
    SELECT t.device_id, p.patient_key, t.device_type, coalesce($1, now())
    FROM enrolment_rows t JOIN patients p USING (patient_id)
"""


async def _insert_devices(conn: Connection, at: datetime | None) -> str:
    """The devices not enrolled yet: by a plain INSERT, which costs less than ON CONFLICT's
    speculative insertion (2.9M devices: 22.5 s against 26 s), unless a device comes
    twice (in the file, or enrolled meanwhile by another transaction): then, after its
    unique violation, with ON CONFLICT DO NOTHING."""
    try:
        async with conn.transaction():
            return await conn.execute(
                _DEVICES + "WHERE NOT EXISTS (SELECT FROM devices d "
                "WHERE d.patient_key = p.patient_key AND d.device_id = t.device_id)",
                at,
            )
    except asyncpg.UniqueViolationError:
        return await conn.execute(_DEVICES + "ON CONFLICT (patient_key, device_id) DO NOTHING", at)


def _row_count(status: str) -> int:
    """The rows an INSERT inserted or updated, from its status ("INSERT 0 <rows>")."""
    return int(status.rsplit(" ", 1)[1])


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
