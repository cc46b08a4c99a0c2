"""Enrolment of many rows (`telemon enroll --csv`): staged chunk by chunk in one
transaction, idempotent, a patient's programme following its last row whatever chunk it
is in, and nothing enrolled from a file with a bad row."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from devices.registry import (
    EnrollmentFileError,
    EnrollResult,
    enroll_rows,
    read_enrollment_csv,
    sync_reference_data,
)
from ingest.platform import connect, migrate

HEADER = "patient_id,programme,device_id,device_type\n"
FILE = HEADER + (
    "p-1,covid,oxi-1,pulse_oximeter\n"
    "p-2,heart_failure,scale-2,scale\n"
    "p-1,covid,thermo-1,thermometer\n"
    "p-3,diabetes,gluc-3,glucometer\n"
    "p-2,heart_failure,scale-2,scale\n"  # the same device again
    "p-3,diabetes,cgm-3,cgm\n"
    "p-1,respiratory,oxi-1,pulse_oximeter\n"  # p-1 moves to respiratory, in the last chunk
)


@pytest.fixture
async def conn(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    name = f"e_{uuid.uuid4().hex[:12]}"
    connection = await connect(postgres_dsn, name)
    try:
        await migrate(connection, name)
        await sync_reference_data(connection)
        yield connection
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await connection.close()


async def enrolled(conn: asyncpg.Connection) -> tuple[list[tuple[object, ...]], ...]:
    patients = await conn.fetch("SELECT patient_id, programme FROM patients ORDER BY 1")
    devices = await conn.fetch(
        "SELECT p.patient_id, d.device_id, d.device_type, d.device_key "
        "FROM devices d JOIN patients p USING (patient_key) ORDER BY 1, 2"
    )
    return [tuple(r) for r in patients], [tuple(r) for r in devices]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 100])
async def test_chunks_enrol_what_one_chunk_does_and_a_rerun_changes_nothing(
    conn: asyncpg.Connection, chunk_rows: int
) -> None:
    result = await enroll_rows(conn, read_enrollment_csv(io.StringIO(FILE), chunk_rows))
    assert result == EnrollResult(patients=3, devices=5)
    patients, devices = await enrolled(conn)
    assert patients == [("p-1", "respiratory"), ("p-2", "heart_failure"), ("p-3", "diabetes")]
    assert [d[:3] for d in devices] == [
        ("p-1", "oxi-1", "pulse_oximeter"),
        ("p-1", "thermo-1", "thermometer"),
        ("p-2", "scale-2", "scale"),
        ("p-3", "cgm-3", "cgm"),
        ("p-3", "gluc-3", "glucometer"),
    ]
    before = await enrolled(conn)
    again = await enroll_rows(conn, read_enrollment_csv(io.StringIO(FILE), chunk_rows))
    assert again == EnrollResult(0, 0)
    assert await enrolled(conn) == before


async def test_a_later_file_moves_a_patient_and_adds_a_device(conn: asyncpg.Connection) -> None:
    await enroll_rows(conn, read_enrollment_csv(io.StringIO(FILE)))
    later = HEADER + "p-2,covid,oxi-2,pulse_oximeter\np-3,diabetes,gluc-3,glucometer\n"
    result = await enroll_rows(conn, read_enrollment_csv(io.StringIO(later), 1))
    assert result == EnrollResult(patients=1, devices=1)
    patients, _ = await enrolled(conn)
    assert ("p-2", "covid") in patients


async def test_a_bad_row_in_a_later_chunk_enrols_nothing(conn: asyncpg.Connection) -> None:
    work_mem = await conn.fetchval("SELECT current_setting('work_mem')")
    bad = FILE + "p-4,covid,oxi-4,toaster\n"
    with pytest.raises(EnrollmentFileError, match=r"^line 9: device_type: "):
        await enroll_rows(conn, read_enrollment_csv(io.StringIO(bad), 2))
    assert await enrolled(conn) == ([], [])
    # The connection is as it was: the staging tables gone, work_mem its own.
    assert await conn.fetchval("SELECT current_setting('work_mem')") == work_mem
    result = await enroll_rows(conn, read_enrollment_csv(io.StringIO(FILE), 2))
    assert result == EnrollResult(patients=3, devices=5)
    assert await conn.fetchval("SELECT current_setting('work_mem')") == work_mem


async def test_the_command_names_each_bad_line_and_enrols_nothing(
    conn: asyncpg.Connection, postgres_dsn: str, tmp_path: Path
) -> None:
    schema = await conn.fetchval("SELECT current_schema()")
    path = tmp_path / "cohort.csv"
    path.write_text(FILE + "p 5,covid,oxi-5,pulse_oximeter\np-6,covid\n", encoding="utf-8")
    code, output = await telemon(postgres_dsn, schema, "enroll", "--csv", str(path))
    assert code == 2
    assert output.splitlines() == [
        "telemon enroll: line 9: patient_id: String should match pattern "
        "'^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'",
        "line 10: 2 fields, expected 4 (patient_id,programme,device_id,device_type)",
    ]
    assert await enrolled(conn) == ([], [])
    path.write_text(FILE, encoding="utf-8")
    code, output = await telemon(postgres_dsn, schema, "enroll", "--csv", str(path))
    assert code == 0, output
    assert "enrolled: 3 patients created or updated, 5 devices added" in output


async def telemon(dsn: str, schema: str, *args: str) -> tuple[int, str]:
    """`telemon <args>` in a child process: its exit code and output (no traceback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMON_")}
    env |= {"TELEMON_DATABASE_URL": dsn, "TELEMON_DATABASE_SCHEMA": schema}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "ingest.cli", *args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await process.communicate())[0].decode()
    assert "Traceback" not in output, output
    assert process.returncode is not None
    return process.returncode, output
