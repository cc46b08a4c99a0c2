"""Who is followed, and how: enroll devices, record a patient's INS identity, prescribe
another frequency of a measure, renew a prescription, discharge."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import ValidationError

from devices.identity import IdentityStatus, InsIdentity, InsKind
from ingest.cli.common import Commands, connection_flags, instant, with_connection
from ingest.platform import Connection, Settings, TelemonError

__all__ = ["add_commands"]

log = logging.getLogger("telemon")


def add_commands(commands: Commands) -> None:
    p = commands.command(
        "enroll", _enroll, "Enroll a patient's device, or every row of a CSV file."
    )
    connection_flags(p)
    p.add_argument("--csv", type=Path, help="columns: patient_id,programme,device_id,device_type")
    p.add_argument("--patient")
    p.add_argument("--programme")
    p.add_argument("--device")
    p.add_argument("--device-type")

    patients = commands.group(
        "patients", "A patient's follow-up: prescribe a frequency, renew, discharge."
    )
    p = patients.command(
        "prescribe",
        _prescribe,
        "Another frequency of one of the protocol's measures for one patient, from today "
        "(it changes the missing-data alerts and the data expected).",
    )
    connection_flags(p)
    p.add_argument("patient")
    p.add_argument("measure", help="weight, glucose, spo2, ventilation or questionnaire")
    p.add_argument("--every-days", type=float, help="due every this many days (1-7)")
    p.add_argument("--times", type=float, help="data points expected each time")
    p.add_argument("--due-hour", type=float, help="local hour of the due day they are due by")
    p.add_argument("--by", required=True, help="who prescribes")
    p.add_argument("--note")
    p = patients.command(
        "renew", _renew, "Renew a patient's prescription (at most a year from today)."
    )
    connection_flags(p)
    p.add_argument("patient")
    p.add_argument("--until", required=True, type=instant, help="ISO date or time")
    p.add_argument("--by", required=True, help="who renews it")
    p = patients.command(
        "discharge",
        _discharge,
        "End a patient's follow-up: no more alerts, their open episodes resolved.",
    )
    connection_flags(p)
    p.add_argument("patient")
    p.add_argument("--at", type=instant, help="ISO date or time (default: now)")
    p.add_argument("--by", required=True, help="who discharges")
    p.add_argument("--note")

    identity = commands.group("identity", "A patient's INS identity: set, show (audited).")
    p = identity.command("set", _identity_set, "Record or replace a patient's identity.")
    connection_flags(p)
    p.add_argument("patient")
    p.add_argument("--status", required=True, choices=[s.value for s in IdentityStatus])
    p.add_argument("--family", required=True, help="birth family name")
    p.add_argument("--given", required=True, help="birth first names, in order")
    p.add_argument("--birth-date", required=True, type=date.fromisoformat)
    p.add_argument("--sex", required=True, choices=("M", "F", "I"))
    p.add_argument("--birthplace", help="INSEE code of the birthplace (99xxx abroad)")
    p.add_argument("--ins", help="INS matricule: 13 characters and the 2-digit key")
    p.add_argument("--ins-kind", choices=[k.name.lower() for k in InsKind], default="nir")
    p = identity.command("show", _identity_show, "Print a patient's identity as JSON.")
    connection_flags(p)
    p.add_argument("patient")


def _enroll(args: argparse.Namespace, settings: Settings) -> int:
    from devices.registry import (
        Enrollment,
        EnrollmentFileError,
        EnrollmentRow,
        enroll_rows,
        read_enrollment_csv,
    )

    with ExitStack() as files:
        chunks: Iterable[Sequence[EnrollmentRow]]
        try:
            if args.csv:
                # Read as it is enrolled: a bad row on the way rolls the whole file back.
                file = files.enter_context(args.csv.open(encoding="utf-8", newline=""))
                chunks = read_enrollment_csv(file)
            else:
                one = Enrollment(
                    patient_id=args.patient,
                    programme=args.programme,
                    device_id=args.device,
                    device_type=args.device_type,
                )
                row = (one.patient_id, one.programme.value, one.device_id, one.device_type.value)
                chunks = [[row]]
        except (EnrollmentFileError, ValidationError, OSError) as error:
            print(f"telemon enroll: {error}", file=sys.stderr)
            return 2

        async def work(conn: Connection) -> None:
            result = await enroll_rows(conn, chunks)
            log.info(
                "enrolled: %d patients created or updated, %d devices added",
                result.patients,
                result.devices,
            )

        try:
            return with_connection(settings, work)
        except EnrollmentFileError as error:
            print(f"telemon enroll: {error}", file=sys.stderr)
            return 2


def _prescribe(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.actions import prescribe
    from alerts.programmes import load_config

    frequency = {
        name: value
        for name, value in (
            ("every_days", args.every_days),
            ("times", args.times),
            ("due_hour", args.due_hour),
        )
        if value is not None
    }
    if not frequency:
        raise TelemonError("give --every-days, --times or --due-hour")
    config = load_config(settings.alert_programmes_file)

    async def work(conn: Connection) -> None:
        await prescribe(conn, config, args.patient, args.measure, frequency, args.by, args.note)
        log.info("%s of %s: %s from today", args.measure, args.patient, frequency)

    return with_connection(settings, work)


def _renew(args: argparse.Namespace, settings: Settings) -> int:
    from devices.registry import renew_prescription

    async def work(conn: Connection) -> None:
        await renew_prescription(conn, args.patient, args.until, args.by)
        log.info("prescription of %s renewed until %s", args.patient, args.until)

    return with_connection(settings, work)


def _discharge(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.actions import discharge

    at = args.at or datetime.now(UTC)

    async def work(conn: Connection) -> None:
        closed = await discharge(conn, args.patient, at, args.by, args.note)
        log.info("%s discharged at %s; %d open episodes resolved", args.patient, at, closed)

    return with_connection(settings, work)


def _identity_set(args: argparse.Namespace, settings: Settings) -> int:
    from devices.identity import store_identity

    try:
        identity = InsIdentity(
            status=args.status,
            birth_family_name=args.family,
            first_names=args.given,
            birth_date=args.birth_date,
            sex=args.sex,
            birthplace_code=args.birthplace,
            ins_matricule=args.ins,
            ins_kind=InsKind[args.ins_kind.upper()] if args.ins else None,
        )
    except ValidationError as error:
        raise TelemonError(f"identity: {error}") from error

    async def work(conn: Connection) -> None:
        if not await store_identity(conn, args.patient, identity):
            raise TelemonError(f"unknown patient {args.patient!r}")

    return with_connection(settings, work)


def _identity_show(args: argparse.Namespace, settings: Settings) -> int:
    from devices.identity import read_identity_as_operator

    async def work(conn: Connection) -> None:
        identity = await read_identity_as_operator(conn, args.patient)
        if identity is None:
            raise TelemonError(f"no identity recorded for {args.patient!r}")
        print(identity.model_dump_json())

    return with_connection(settings, work)
