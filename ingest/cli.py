"""`telemon`: one command, a subcommand per job. It parses, builds Settings, wires, exits.

Exit codes: 0 done; 1 failure; 2 bad configuration or arguments; 3 the
reject-ratio guard stopped ingestion; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import signal
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from devices.identity import IdentityStatus, InsIdentity, InsKind
from ingest.platform import Settings, TelemonError

if TYPE_CHECKING:
    from devices.gateways import GatewayPlan
    from ingest.platform import Connection

__all__ = ["main"]

log = logging.getLogger("telemon")

Handler = Callable[[argparse.Namespace, Settings], int]


class _Terminated(BaseException):
    """SIGTERM before the service loop runs (during start-up): unwind and stop."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    # From here on SIGTERM unwinds cleanly; once the service loop runs it drains instead.
    signal.signal(signal.SIGTERM, _terminated)
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        settings = Settings(**_overrides(args))
    except ValidationError as error:
        print(f"telemon: bad configuration:\n{error}", file=sys.stderr)
        return 2
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except TelemonError as error:
        log.error("%s", error)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        log.info("SIGTERM received while starting or stopping: stopped")
        return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = (
        "database_url",
        "kafka_bootstrap",
        "http_port",
        "http_host",
        "readings_topic",
        "consumer_group",
        "database_schema",
        "api_host",
        "api_port",
    )
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telemon",
        description="Telemonitoring device-data ingestion. Settings come from TELEMON_* "
        "environment variables; flags override them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(required=True, metavar="command")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def api_address(p: argparse.ArgumentParser) -> None:
        p.add_argument("--api-host", help="TELEMON_API_HOST")
        p.add_argument("--api-port", type=int, help="TELEMON_API_PORT")

    def connections(p: argparse.ArgumentParser) -> None:
        p.add_argument("--database-url", help="TELEMON_DATABASE_URL")
        p.add_argument("--database-schema", help="TELEMON_DATABASE_SCHEMA")
        p.add_argument("--kafka-bootstrap", help="TELEMON_KAFKA_BOOTSTRAP")
        p.add_argument("--readings-topic", help="TELEMON_READINGS_TOPIC")

    p = command("ingest", _ingest, "Consume readings from Kafka into PostgreSQL.")
    connections(p)
    p.add_argument("--consumer-group", help="TELEMON_CONSUMER_GROUP")
    p.add_argument("--http-host", help="TELEMON_HTTP_HOST")
    p.add_argument("--http-port", type=int, help="TELEMON_HTTP_PORT")

    p = command(
        "migrate",
        _migrate,
        "Create or upgrade the schema (and topics if TELEMON_CREATE_TOPICS=true).",
    )
    connections(p)

    p = command("enroll", _enroll, "Enroll a patient's device, or every row of a CSV file.")
    connections(p)
    p.add_argument("--csv", type=Path, help="columns: patient_id,programme,device_id,device_type")
    p.add_argument("--patient")
    p.add_argument("--programme")
    p.add_argument("--device")
    p.add_argument("--device-type")

    p = command("check", _check, "Probe a running service: exit 0 if ready (or live), else 1.")
    p.add_argument("--http-host", help="TELEMON_HTTP_HOST")
    p.add_argument("--http-port", type=int, help="TELEMON_HTTP_PORT")
    p.add_argument("--live", action="store_true", help="liveness instead of readiness")

    p = command(
        "simulate", _simulate, "Simulate device gateways: enroll a cohort and produce its readings."
    )
    connections(p)
    _simulation_arguments(p)

    p = command(
        "retention",
        _retention,
        "Drop the daily partitions of readings older than --keep-days (UTC days).",
    )
    connections(p)
    p.add_argument("--keep-days", type=int, required=True, help="today and the days before")
    p.add_argument("--dry-run", action="store_true", help="say what would be dropped")

    rules = sub.add_parser("rules", help="The alert rules: list them, replay one over history.")
    actions = rules.add_subparsers(required=True, metavar="action")
    p = actions.add_parser("list", help="Every rule: id, version, severities, source, parameters.")
    p.set_defaults(handler=_rules_list)
    p = actions.add_parser(
        "replay",
        help="What a rule (or a changed threshold) would have raised over stored history; "
        "writes nothing.",
    )
    p.set_defaults(handler=_rules_replay)
    connections(p)
    p.add_argument("--rule", required=True)
    p.add_argument("--from", dest="start", required=True, type=_instant, help="ISO date or time")
    p.add_argument("--to", dest="end", required=True, type=_instant, help="ISO date or time")
    p.add_argument(
        "--set", action="append", default=[], type=_assignment, metavar="PARAMETER=VALUE"
    )
    p.add_argument("--programme", action="append", help="default: the programmes that run it")

    p = command("override", _override, "Set or remove one patient's threshold override.")
    connections(p)
    p.add_argument("--patient", required=True)
    p.add_argument("--parameter", required=True, help="<rule>.<name>, see `telemon rules list`")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--value", type=float)
    group.add_argument("--remove", action="store_true")
    p.add_argument("--by", required=True, help="who changes it")
    p.add_argument("--note")

    p = command(
        "api",
        _api,
        "The clinicians' API, live feed and worklist page (needs TELEMON_DATABASE_URL and "
        "TELEMON_OIDC_ISSUER, or TELEMON_DEV_ISSUER_KEY_FILE in development).",
    )
    connections(p)
    api_address(p)

    p = command(
        "dev-token",
        _dev_token,
        "Print a token of the development issuer (TELEMON_DEV_ISSUER_KEY_FILE) for a clinician.",
    )
    p.add_argument("--subject", required=True, help="the clinician's identity (sub)")
    p.add_argument("--name", help="display name")
    api_address(p)

    team = sub.add_parser("team", help="Care teams: create, add clinicians, add patients.")
    team_actions = team.add_subparsers(required=True, metavar="action")
    p = team_actions.add_parser("create", help="Create (or rename) a care team.")
    p.set_defaults(handler=_team_create)
    connections(p)
    p.add_argument("team")
    p.add_argument("--name", required=True)
    p = team_actions.add_parser("add-member", help="A clinician (token subject) joins a team.")
    p.set_defaults(handler=_team_add_member)
    connections(p)
    p.add_argument("team")
    p.add_argument("clinician")
    p.add_argument(
        "--reads-identity",
        action="store_true",
        help="may read the INS identity of the team's patients (each read is audited)",
    )
    p = team_actions.add_parser("add-patients", help="The team follows these patients.")
    p.set_defaults(handler=_team_add_patients)
    connections(p)
    p.add_argument("team")
    p.add_argument("patients", nargs="+")

    p = command(
        "report",
        _report,
        "The evidence report of a period: report.html (charts), report.json, report.csv.",
    )
    connections(p)
    p.add_argument("--from", dest="start", required=True, type=_instant, help="ISO date or time")
    p.add_argument("--to", dest="end", required=True, type=_instant, help="ISO date or time")
    p.add_argument("--programme", help="default: every programme")
    p.add_argument("--out", type=Path, default=Path("report"), help="directory (default: report)")

    p = command(
        "export",
        _export,
        "A patient's readings and alerts of a period as a FHIR R4 Bundle (JSON) or CSV.",
    )
    connections(p)
    p.add_argument("patient")
    p.add_argument("--from", dest="start", required=True, type=_instant, help="ISO date or time")
    p.add_argument("--to", dest="end", required=True, type=_instant, help="ISO date or time")
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

    identity = sub.add_parser("identity", help="A patient's INS identity: set, show (audited).")
    identity_actions = identity.add_subparsers(required=True, metavar="action")
    p = identity_actions.add_parser("set", help="Record or replace a patient's identity.")
    p.set_defaults(handler=_identity_set)
    connections(p)
    p.add_argument("patient")
    p.add_argument("--status", required=True, choices=[s.value for s in IdentityStatus])
    p.add_argument("--family", required=True, help="birth family name")
    p.add_argument("--given", required=True, help="birth first names, in order")
    p.add_argument("--birth-date", required=True, type=date.fromisoformat)
    p.add_argument("--sex", required=True, choices=("M", "F", "I"))
    p.add_argument("--birthplace", help="INSEE code of the birthplace (99xxx abroad)")
    p.add_argument("--ins", help="INS matricule: 13 characters and the 2-digit key")
    p.add_argument("--ins-kind", choices=[k.name.lower() for k in InsKind], default="nir")
    p = identity_actions.add_parser("show", help="Print a patient's identity as JSON.")
    p.set_defaults(handler=_identity_show)
    connections(p)
    p.add_argument("patient")

    p = command("audit", _audit, "The audit trail as JSON lines, oldest first.")
    connections(p)
    p.add_argument("--patient")
    p.add_argument("--clinician")
    p.add_argument("--since", type=_instant, help="ISO date or time")
    p.add_argument("--limit", type=int, default=1000)

    p = command(
        "demo",
        _demo,
        "Embedded PostgreSQL and broker, the simulator and the "
        "pipeline, with live progress. Ctrl-C stops everything.",
    )
    p.add_argument("--http-port", type=int, help="TELEMON_HTTP_PORT")
    p.add_argument("--api-port", type=int, help="TELEMON_API_PORT")
    _simulation_arguments(p, patients=2000, days=7.0, rate=1000.0, follow=True)
    return parser


def _simulation_arguments(
    p: argparse.ArgumentParser,
    *,
    patients: int = 1000,
    days: float = 14.0,
    rate: float = 0.0,
    follow: bool = False,
) -> None:
    p.add_argument("--patients", type=int, default=patients)
    p.add_argument(
        "--days",
        type=float,
        default=days,
        help="history to simulate, ending now (default %(default)s)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=rate,
        help="messages per second, 0 for as fast as possible (default %(default)s)",
    )
    p.add_argument("--count", type=int, help="stop after this many messages")
    p.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=follow,
        help="after catching up with the present, go on in real time",
    )
    p.add_argument("--worsening", type=float, default=0.04, help="share of worsening patients")
    p.add_argument(
        "--wearables",
        type=float,
        default=0.0,
        help="share of patients with a pulse oximeter sending every minute",
    )
    p.add_argument("--malformed", type=float, default=0.0, help="share of malformed messages")
    p.add_argument("--duplicates", type=float, default=0.0, help="share sent twice")
    p.add_argument("--late", type=float, default=0.0, help="share uploaded hours late")
    p.add_argument(
        "--readings-per-message",
        type=int,
        help="force this many readings per message (a gateway's upload size)",
    )
    p.add_argument("--id-prefix", default="p", help="patient id prefix (default %(default)s)")
    p.add_argument("--seed", type=int, default=1)


def run_until_signalled(work: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run `work(stop)` with SIGTERM and SIGINT setting `stop` (a second SIGINT aborts)."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            log.info("%s received: draining", signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        return await work(stop)

    try:
        return asyncio.run(runner())
    finally:
        signal.signal(signal.SIGTERM, _terminated)  # asyncio restored the default on exit


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.platform import embedded_stack
    from ingest.service import run_ingest

    async def work(stop: asyncio.Event) -> int:
        await run_ingest(running, stop)
        return 0

    with embedded_stack(settings) as running:
        return run_until_signalled(work)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.service import prepare_storage

    _require_connections(settings)
    asyncio.run(prepare_storage(settings))
    log.info("schema %s is up to date", settings.database_schema)
    return 0


def _enroll(args: argparse.Namespace, settings: Settings) -> int:
    from devices.registry import Enrollment, EnrollmentFileError, enroll, read_enrollment_csv
    from ingest.platform import connect

    _require_connections(settings, kafka=False)
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

    async def run() -> int:
        assert settings.database_url is not None
        conn = await connect(settings.database_url, settings.database_schema)
        try:
            result = await enroll(conn, rows)
        finally:
            await conn.close()
        log.info(
            "enrolled: %d patients created or updated, %d devices added",
            result.patients,
            result.devices,
        )
        return 0

    return asyncio.run(run())


def _retention(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline.reading_days import ReadingDays, day_of_us
    from ingest.platform import connect

    _require_connections(settings, kafka=False)
    if args.keep_days < 1:
        print("telemon retention: --keep-days must be at least 1", file=sys.stderr)
        return 2

    async def run() -> int:
        assert settings.database_url is not None
        conn = await connect(settings.database_url, settings.database_schema)
        try:
            today = day_of_us(int(datetime.now(UTC).timestamp() * 1e6))
            dropped = await ReadingDays().drop_before(
                conn, today - args.keep_days + 1, dry_run=args.dry_run
            )
        finally:
            await conn.close()
        verb = "would drop" if args.dry_run else "dropped"
        log.info("%s %d partitions: %s", verb, len(dropped), ", ".join(dropped) or "none")
        return 0

    return asyncio.run(run())


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _assignment(text: str) -> tuple[str, float]:
    name, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not PARAMETER=VALUE")
    return name, float(value)


def _rules_list(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.catalogue import RULES

    for rule in RULES.values():
        severities = "/".join(s.label for s in rule.severities)
        fixed = "" if rule.disableable else ", cannot be disabled"
        print(f"{rule.id} v{rule.version} [{severities}{fixed}] {rule.title}")
        print(f"    source: {rule.source}")
        for name, parameter in rule.parameters.items():
            mark = "" if parameter.verified else " (design default)"
            default = "none" if math.isnan(parameter.default) else f"{parameter.default:g}"
            print(
                f"    {rule.id}.{name} = {default} {parameter.unit}  {parameter.description}{mark}"
            )
    return 0


def _rules_replay(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.programmes import load_config
    from alerts.replay import replay
    from devices.registry import Programme
    from ingest.platform import connect

    _require_connections(settings, kafka=False)
    config = load_config(settings.alert_programmes_file)
    programmes = [Programme(p) for p in args.programme] if args.programme else None

    async def run() -> int:
        assert settings.database_url is not None
        conn = await connect(settings.database_url, settings.database_schema)
        try:
            report = await replay(
                conn,
                config,
                args.rule,
                int(args.start.timestamp() * 1e6),
                int(args.end.timestamp() * 1e6),
                parameters=dict(args.set),
                programmes=programmes,
            )
        finally:
            await conn.close()
        print(
            f"{report.rule_id} from {args.start.isoformat()} to {args.end.isoformat()}: "
            f"{len(report.episodes)} alerts for {report.patients} patients "
            f"({report.readings} readings replayed, nothing written)"
        )
        print(f"{'day':<12}{'severity':<10}{'alerts':>8}{'patients':>10}")
        for day, severity, alerts, patients in report.by_day():
            print(f"{day:<12}{severity:<10}{alerts:>8}{patients:>10}")
        for patient_id, count in Counter(p for p, _ in report.episodes).most_common(10):
            print(f"  {patient_id}: {count}")
        return 0

    return asyncio.run(run())


def _override(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.actions import remove_override, set_override

    async def work(conn: Connection) -> None:
        if args.remove:
            await remove_override(conn, args.patient, args.parameter, args.by, args.note)
        else:
            await set_override(conn, args.patient, args.parameter, args.value, args.by, args.note)
        log.info("override of %s for %s saved", args.parameter, args.patient)

    return _with_connection(settings, work)


def _api(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.server import run_api
    from ingest.service import prepare_storage

    _require_connections(settings, kafka=False)

    async def work(stop: asyncio.Event) -> int:
        await prepare_storage(settings)
        await run_api(settings, stop)
        return 0

    return run_until_signalled(work)


def _dev_token(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.auth import DevIssuer
    from ingest.platform import ConfigurationError

    if settings.dev_issuer_key_file is None or settings.token_issuer is None:
        raise ConfigurationError("set TELEMON_DEV_ISSUER_KEY_FILE (the development issuer's key)")
    issuer = DevIssuer(settings.token_issuer, settings.dev_issuer_key_file)
    print(issuer.token(args.subject, args.name, settings.oidc_audience))
    return 0


def _with_connection(
    settings: Settings, work: Callable[[Connection], Coroutine[Any, Any, None]]
) -> int:
    from ingest.platform import connect

    _require_connections(settings, kafka=False)

    async def run() -> int:
        assert settings.database_url is not None
        conn = await connect(settings.database_url, settings.database_schema)
        try:
            await work(conn)
        finally:
            await conn.close()
        return 0

    return asyncio.run(run())


def _team_create(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.teams import create_team

    return _with_connection(settings, lambda conn: create_team(conn, args.team, args.name))


def _team_add_member(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.teams import add_member

    return _with_connection(
        settings,
        lambda conn: add_member(
            conn, args.team, args.clinician, reads_identity=args.reads_identity
        ),
    )


def _team_add_patients(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.teams import add_patients

    async def work(conn: Connection) -> None:
        added = await add_patients(conn, args.team, args.patients)
        log.info("team %s: %d patients added", args.team, added)

    return _with_connection(settings, work)


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.report import Period, gather_figures, report_configuration, write_report

    async def work(conn: Connection) -> None:
        figures = await gather_figures(conn, Period(args.start, args.end, args.programme))
        digest = write_report(figures, report_configuration(settings), args.out)
        print(f"{args.out / 'report.html'}  sha256(report.json) = {digest}")

    return _with_connection(settings, work)


def _export(args: argparse.Namespace, settings: Settings) -> int:
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
            bundle = fhir_bundle(export, base=args.base, source=settings.fhir_source)
            text = json.dumps(bundle, indent=1, ensure_ascii=False) + "\n"
        if args.output is None:
            sys.stdout.write(text)
        else:
            args.output.write_text(text)
            log.info(
                "%s: %d readings, %d alerts", args.output, len(export.readings), len(export.alerts)
            )

    return _with_connection(settings, work)


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

    return _with_connection(settings, work)


def _identity_show(args: argparse.Namespace, settings: Settings) -> int:
    from devices.identity import read_identity_as_operator

    async def work(conn: Connection) -> None:
        identity = await read_identity_as_operator(conn, args.patient)
        if identity is None:
            raise TelemonError(f"no identity recorded for {args.patient!r}")
        print(identity.model_dump_json())

    return _with_connection(settings, work)


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.audit import query_audit

    async def work(conn: Connection) -> None:
        records = await query_audit(
            conn,
            patient_id=args.patient,
            agent=args.clinician,
            since=args.since,
            limit=args.limit,
        )
        for record in records:
            print(json.dumps(record, default=str))

    return _with_connection(settings, work)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    path = "/healthz" if args.live else "/readyz"
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host  # noqa: S104
    url = f"http://{host}:{settings.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):  # 503 is an HTTPError, a URLError
        return 1


def gateway_plan(args: argparse.Namespace) -> GatewayPlan:
    from devices.gateways import GatewayPlan, history_start_ms
    from devices.simulator import CohortConfig, Faults

    return GatewayPlan(
        cohort=CohortConfig(
            patients=args.patients,
            worsening_share=args.worsening,
            wearable_share=args.wearables,
            start_ms=history_start_ms(args.days),
            days=args.days,
            id_prefix=args.id_prefix,
            seed=args.seed,
        ),
        faults=Faults(malformed=args.malformed, duplicate=args.duplicates, late=args.late),
        rate=args.rate,
        count=args.count,
        follow=args.follow,
        readings_per_message=args.readings_per_message,
    )


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from devices.gateways import run_gateways
    from ingest.platform import make_producer

    _require_connections(settings)
    plan = gateway_plan(args)

    async def work(stop: asyncio.Event) -> int:
        assert settings.database_url is not None
        producer = make_producer(settings)
        await producer.start()
        try:
            stats = await run_gateways(
                plan,
                dsn=settings.database_url,
                schema=settings.database_schema,
                producer=producer,
                topic=settings.readings_topic,
                stop=stop,
                on_progress=lambda s: log.info(
                    "simulator: %d messages, %.0f/s", s.messages, s.rate
                ),
            )
        finally:
            await producer.stop()
        log.info(
            "simulator: sent %d messages (%d readings) at %.0f/s; faults: %s",
            stats.messages,
            stats.readings,
            stats.rate,
            dict(stats.faults) or "none",
        )
        return 0

    return run_until_signalled(work)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.demo import run_demo
    from ingest.platform import embedded_stack

    with embedded_stack(settings) as running:
        return run_until_signalled(lambda stop: run_demo(running, gateway_plan(args), stop))


def _require_connections(settings: Settings, *, kafka: bool = True) -> None:
    from ingest.platform import ConfigurationError

    missing = [
        name
        for name, value in (
            ("TELEMON_DATABASE_URL", settings.database_url),
            ("TELEMON_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
        )
        if value is None and (kafka or name != "TELEMON_KAFKA_BOOTSTRAP")
    ]
    if missing:
        raise ConfigurationError(f"set {' and '.join(missing)} (telemon demo prints them)")


if __name__ == "__main__":
    sys.exit(main())
