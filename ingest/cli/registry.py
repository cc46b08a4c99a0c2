"""Who is followed: enroll devices, record a patient's INS identity."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from devices.identity import IdentityStatus, InsIdentity, InsKind
from ingest.cli.common import Commands, connection_flags, with_connection
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
    from devices.registry import Enrollment, EnrollmentFileError, enroll, read_enrollment_csv

    try:
        if args.csv:
            rows = read_enrollment_csv(args.csv.read_text(encoding="utf-8"))
        else:
            rows = [
                Enrollment(
                    patient_id=args.patient,
                    programme=args.programme,
                    device_id=args.device,
                    device_type=args.device_type,
                )
            ]
    except (EnrollmentFileError, ValidationError, OSError) as error:
        print(f"telemon enroll: {error}", file=sys.stderr)
        return 2

    async def work(conn: Connection) -> None:
        result = await enroll(conn, rows)
        log.info(
            "enrolled: %d patients created or updated, %d devices added",
            result.patients,
            result.devices,
        )

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
