"""What goes out: the evidence report of a period, a patient's export."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from ingest.cli.common import Commands, connection_flags, instant, with_connection
from ingest.platform import Connection, Settings, TelemonError

__all__ = ["add_commands"]

log = logging.getLogger("telemon")


def add_commands(commands: Commands) -> None:
    p = commands.command(
        "report",
        _report,
        "The evidence report of a period: report.html (charts), report.json, report.csv.",
    )
    connection_flags(p)
    p.add_argument("--from", dest="start", required=True, type=instant, help="ISO date or time")
    p.add_argument("--to", dest="end", required=True, type=instant, help="ISO date or time")
    p.add_argument("--programme", help="default: every programme")
    p.add_argument("--out", type=Path, default=Path("report"), help="directory (default: report)")

    p = commands.command(
        "export",
        _export,
        "A patient's readings and alerts of a period as a FHIR R4 Bundle (JSON) or CSV.",
    )
    connection_flags(p)
    p.add_argument("patient")
    p.add_argument("--from", dest="start", required=True, type=instant, help="ISO date or time")
    p.add_argument("--to", dest="end", required=True, type=instant, help="ISO date or time")
    p.add_argument("--format", choices=("fhir", "csv"), default="fhir")
    p.add_argument(
        "--with-identity",
        action="store_true",
        help="include the INS identity in the Patient (the read is audited)",
    )
    p.add_argument(
        "--base", default="urn:telemon", help="base of the entries' fullUrl (default: urn:telemon)"
    )
    p.add_argument("--output", type=Path, help="file (default: standard output)")


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.report import Period, gather_figures, report_configuration, write_report

    async def work(conn: Connection) -> None:
        figures = await gather_figures(conn, Period(args.start, args.end, args.programme))
        digest = write_report(figures, report_configuration(settings), args.out)
        print(f"{args.out / 'report.html'}  sha256(report.json) = {digest}")

    return with_connection(settings, work)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.messages import words
    from alerts.programmes import load_config
    from devices.identity import read_identity_as_operator
    from ingest.export import fhir_bundle, load_export, readings_csv

    async def work(conn: Connection) -> None:
        export = await load_export(conn, args.patient, args.start, args.end)
        if export is None:
            raise TelemonError(f"unknown patient {args.patient!r}")
        if args.with_identity:
            identity = await read_identity_as_operator(conn, args.patient)
            export = dataclasses.replace(export, identity=identity)
        if args.format == "csv":
            text = readings_csv(export)
        else:
            bundle = fhir_bundle(
                export,
                base=args.base,
                source=settings.fhir_source,
                words=words(settings.language),
                timezone=load_config(settings.alert_programmes_file).timezone,
            )
            text = json.dumps(bundle, indent=1, ensure_ascii=False) + "\n"
        if args.output is None:
            sys.stdout.write(text)
        else:
            args.output.write_text(text)
            log.info(
                "%s: %d readings, %d episodes",
                args.output,
                len(export.readings),
                len(export.episodes),
            )

    return with_connection(settings, work)
