"""Who asks, and the audited transaction each request acts in.

Every request that touches patient data runs as the database role telemon_api
with `telemon.clinician` set to the token's subject, so PostgreSQL's row-level
security shows only the patients of that clinician's care teams. Each such
request, refused ones included, leaves one audit record. The routers declare
these as dependencies and context managers; nothing else reaches the pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, HTTPException, Request

from alerts.messages import Language
from alerts.programmes import AlertConfig
from ingest.api.audit import Action, AuditRecord, record_audit
from ingest.api.auth import Clinician, DevIssuer, TokenError, TokenVerifier
from ingest.api.metrics import ApiMetrics
from ingest.api.stream import Wakeups
from ingest.platform import Connection

__all__ = [
    "Api",
    "ApiContext",
    "Refused",
    "Session",
    "WhoAsks",
    "as_clinician",
    "audited",
    "the_patient",
]


@dataclass
class ApiContext:
    """What the routers share, on `app.state.api`."""

    pool: asyncpg.Pool  # every connection is role telemon_api
    verifier: TokenVerifier
    wakeups: Wakeups
    source: str  # this API process in audit records
    config: AlertConfig
    metrics: ApiMetrics
    dev_issuer: DevIssuer | None = None
    fhir_source: str = "urn:telemon"  # meta.source of exported FHIR resources
    language: Language = "fr"  # when the reader's browser asks for none telemon speaks


class Refused(Exception):  # noqa: N818 - an answer, not a bug
    """The request is refused with this status and message (JSON `{"error": message}`)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.api
    return context


Api = Annotated[ApiContext, Depends(_context)]


async def _clinician(
    request: Request, api: Api, authorization: Annotated[str | None, Header()] = None
) -> Clinician:
    scheme, _, token = (authorization or "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not token:
            raise TokenError("a bearer token is required")
        return await api.verifier.verify(token.strip())
    except TokenError as error:
        async with api.pool.acquire() as conn:
            await record_audit(
                conn,
                api.source,
                _record(request, None, "E", "authenticate", 401, detail={"error": str(error)}),
            )
        raise Refused(401, str(error)) from error


WhoAsks = Annotated[Clinician, Depends(_clinician)]


@dataclass
class Session:
    """A request's transaction as the clinician."""

    patient_id: str | None  # the patient the audit record names (found on the way)
    conn: Connection = None  # type: ignore[assignment]  # set on entry
    # A refusal whose transaction must still commit (what it wrote is the audit itself).
    refusal_after_commit: Refused | None = None


@contextlib.asynccontextmanager
async def audited(
    request: Request, who: Clinician, action: Action, subtype: str, patient_id: str | None
) -> AsyncIterator[Session]:
    """A transaction as the clinician; the audit record of the request afterwards, whatever
    the outcome."""
    api = _context(request)
    session = Session(patient_id=patient_id)
    status = 200
    async with api.pool.acquire() as conn:
        try:
            async with conn.transaction():
                await as_clinician(conn, who)
                session.conn = conn
                yield session
            if session.refusal_after_commit is not None:
                raise session.refusal_after_commit
        except Refused as error:
            status = error.status
            raise
        except HTTPException as error:
            status = error.status_code
            raise
        except BaseException:
            status = 500
            raise
        finally:
            await record_audit(
                conn,
                api.source,
                _record(request, who, action, subtype, status, session.patient_id),
            )


async def as_clinician(conn: Connection, who: Clinician) -> None:
    """Row-level security from here to the end of the transaction: this clinician's teams."""
    await conn.execute("SELECT set_config('telemon.clinician', $1, true)", who.subject)


async def the_patient(session: Session, patient_id: str) -> int:
    """The patient's key, if the clinician's teams follow them (403 / 404 otherwise)."""
    key: int | None = await session.conn.fetchval(
        "SELECT patient_key FROM patients WHERE patient_id = $1", patient_id
    )
    if key is None:
        if await session.conn.fetchval("SELECT patient_exists($1)", patient_id):
            raise Refused(403, f"patient {patient_id!r} is not followed by your care teams")
        raise Refused(404, f"no patient {patient_id!r}")
    return key


def _record(
    request: Request,
    who: Clinician | None,
    action: Action,
    subtype: str,
    status: int,
    patient_id: str | None = None,
    detail: dict[str, object] | None = None,
) -> AuditRecord:
    return AuditRecord(
        action=action,
        subtype=subtype,
        http_status=status,
        entity=f"{request.method} {request.url.path}",
        agent=who.subject if who else None,
        agent_name=who.name if who else None,
        network_address=request.client.host if request.client else None,
        patient_id=patient_id,
        detail=detail or {},
    )
