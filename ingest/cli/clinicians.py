"""The clinicians' side: the API, development tokens, care teams, the audit trail."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

from ingest.cli.common import (
    Commands,
    api_address_flags,
    connection_flags,
    instant,
    require_connections,
    run_until_signalled,
    with_connection,
)
from ingest.platform import ConfigurationError, Connection, Settings

__all__ = ["add_commands"]

log = logging.getLogger("telemon")


def add_commands(commands: Commands) -> None:
    p = commands.command(
        "api",
        _api,
        "The clinicians' API, live feed and worklist page (needs TELEMON_DATABASE_URL and "
        "TELEMON_OIDC_ISSUER, or TELEMON_DEV_ISSUER_KEY_FILE in development).",
    )
    connection_flags(p)
    api_address_flags(p)

    p = commands.command(
        "dev-token",
        _dev_token,
        "Print a token of the development issuer (TELEMON_DEV_ISSUER_KEY_FILE) for a clinician.",
    )
    p.add_argument("--subject", required=True, help="the clinician's identity (sub)")
    p.add_argument("--name", help="display name")
    p.add_argument(
        "--lifetime-hours",
        type=float,
        default=12.0,
        help="validity (at most TELEMON_API_MAX_TOKEN_LIFETIME_S; default 12)",
    )
    api_address_flags(p)

    team = commands.group("team", "Care teams: create, add clinicians, add patients.")
    p = team.command("create", _team_create, "Create (or rename) a care team.")
    connection_flags(p)
    p.add_argument("team")
    p.add_argument("--name", required=True)
    p = team.command("add-member", _team_add_member, "A clinician (token subject) joins a team.")
    connection_flags(p)
    p.add_argument("team")
    p.add_argument("clinician")
    p.add_argument(
        "--reads-identity",
        action="store_true",
        help="may read the INS identity of the team's patients (each read is audited)",
    )
    p = team.command("add-patients", _team_add_patients, "The team follows these patients.")
    connection_flags(p)
    p.add_argument("team")
    p.add_argument("patients", nargs="+")

    p = commands.command("audit", _audit, "The audit trail as JSON lines, oldest first.")
    connection_flags(p)
    p.add_argument("--patient")
    p.add_argument("--clinician")
    p.add_argument("--since", type=instant, help="ISO date or time")
    p.add_argument("--limit", type=int, default=1000)


def _api(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.server import run_api

    require_connections(settings, kafka=False)

    async def work(stop: asyncio.Event) -> int:
        await run_api(settings, stop)  # on a migrated schema (`telemon migrate`)
        return 0

    return run_until_signalled(work)


def _dev_token(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.auth import DevIssuer

    if settings.oidc_issuer is not None:
        raise ConfigurationError(
            "dev-token mints development tokens only: TELEMON_OIDC_ISSUER names a real issuer "
            "(the API does not serve the development issuer then)"
        )
    if settings.dev_issuer_key_file is None or settings.token_issuer is None:
        raise ConfigurationError("set TELEMON_DEV_ISSUER_KEY_FILE (the development issuer's key)")
    issuer = DevIssuer(settings.token_issuer, settings.dev_issuer_key_file)
    lifetime_s = min(args.lifetime_hours * 3600, settings.api_max_token_lifetime_s)
    print(issuer.token(args.subject, args.name, settings.oidc_audience, lifetime_s=lifetime_s))
    return 0


def _team_create(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.teams import create_team

    return with_connection(settings, lambda conn: create_team(conn, args.team, args.name))


def _team_add_member(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.api.teams import add_member

    return with_connection(
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

    return with_connection(settings, work)


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

    return with_connection(settings, work)
