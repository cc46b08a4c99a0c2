"""Who asks, and the audited transaction each request acts in.

Every request that touches patient data runs as the database role telemon_api
with `telemon.clinician` set to the token's subject, so PostgreSQL's row-level
security shows only the patients of that clinician's care teams. Each such
request leaves one audit record (`audited`); every other refusal or error of
any request leaves one too (ingest.api.guard), so none goes unrecorded and none
twice. The routers declare these as dependencies and context managers; nothing
else reaches the pool.

"Not yours" and "does not exist" are one answer, 404: the API never tells a
clinician whether a patient or an episode exists outside their care teams.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from alerts.messages import Language
from alerts.programmes import AlertConfig
from ingest.api.audit import Action, AuditRecord, log_lost_record, record_audit
from ingest.api.auth import Clinician, DevIssuer, IssuerUnavailable, TokenError, TokenVerifier
from ingest.api.limits import Limits
from ingest.api.metrics import ApiMetrics
from ingest.api.stream import Wakeups
from ingest.platform import Clock, Connection

__all__ = [
    "Api",
    "ApiContext",
    "AuditState",
    "Refused",
    "Session",
    "WhoAsks",
    "as_clinician",
    "audit_state",
    "audited",
    "record_once",
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
    clock: Clock
    limits: Limits
    base_url: str  # where clinicians reach the API: links are built from it, not from Host
    dev_issuer: DevIssuer | None = None
    fhir_source: str = "urn:telemon"  # meta.source of exported FHIR resources
    language: Language = "fr"  # when the reader's browser asks for none telemon speaks


class Refused(Exception):  # noqa: N818 - an answer, not a bug
    """The request is refused with this status and message (JSON `{"error": message}`)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class AuditState:
    """What a request's audit record needs, gathered on the way (on `request.state`)."""

    who: Clinician | None = None
    subtype: str | None = None
    recorded: bool = False  # its one record is written
    quiet: bool = False  # a repeated refusal of a rate limit: counted, not recorded
    detail: dict[str, object] = field(default_factory=dict)


def audit_state(request: Request) -> AuditState:
    state: AuditState | None = getattr(request.state, "audit", None)
    if state is None:
        state = request.state.audit = AuditState()
    return state


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.api
    return context


Api = Annotated[ApiContext, Depends(_context)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An OpenID Connect token of the configured issuer (`telemon dev-token` in "
    "development).",
)


async def _clinician(
    request: Request,
    api: Api,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Clinician:
    state = audit_state(request)
    try:
        if credentials is None or not credentials.credentials.strip():
            raise TokenError("a bearer token is required")
        who = await api.verifier.verify(credentials.credentials.strip())
    except IssuerUnavailable as error:
        state.subtype, state.detail["error"] = "authenticate", str(error)
        raise Refused(503, str(error)) from error
    except TokenError as error:
        state.subtype, state.detail["error"] = "authenticate", str(error)
        raise Refused(401, str(error), {"WWW-Authenticate": "Bearer"}) from error
    state.who = who
    if not api.limits.clinician.take(who.subject):
        state.subtype = "rate_limit"
        state.quiet = not api.limits.clinician.first_refusal(who.subject)
        wait = api.limits.clinician.retry_after_s(who.subject)
        raise Refused(429, "too many requests: slow down", {"Retry-After": str(wait)})
    return who


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
    the outcome (if that record cannot be written here, the guard writes it)."""
    api = _context(request)
    state = audit_state(request)
    state.subtype = subtype
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
        except BaseException:
            status = 500
            raise
        finally:
            record = audit_record(request, action, subtype, status, session.patient_id)
            try:
                await record_audit(conn, api.source, record)
                state.recorded = True
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass  # the connection is broken: the guard tries a new one, then the log


async def record_once(request: Request, record: AuditRecord) -> None:
    """The request's record, unless it has one: on a connection of its own, else in the
    log (PostgreSQL is away)."""
    api = _context(request)
    state = audit_state(request)
    if state.recorded or state.quiet:
        return
    try:
        async with api.pool.acquire(timeout=5) as conn:
            await record_audit(conn, api.source, record)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        api.metrics.audit_failures.inc()
        log_lost_record(api.source, record, error)
    state.recorded = True


async def as_clinician(conn: Connection, who: Clinician) -> None:
    """Row-level security from here to the end of the transaction: this clinician's teams."""
    await conn.execute("SELECT set_config('telemon.clinician', $1, true)", who.subject)


async def the_patient(session: Session, patient_id: str) -> int:
    """The patient's key, if the clinician's teams follow them (404 otherwise, whether the
    patient exists elsewhere or not)."""
    key: int | None = await session.conn.fetchval(
        "SELECT patient_key FROM patients WHERE patient_id = $1", patient_id
    )
    if key is None:
        raise Refused(404, f"no patient {patient_id!r} among your care teams' patients")
    return key


def audit_record(
    request: Request,
    action: Action,
    subtype: str,
    status: int,
    patient_id: str | None = None,
) -> AuditRecord:
    """The record of this request: who (if known), what, which patient, from where. The
    ids in the path go in its detail (the owner's trigger names an episode's patient)."""
    state = audit_state(request)
    who = state.who
    params = request.path_params
    if patient_id is None and isinstance(params.get("patient_id"), str):
        patient_id = params["patient_id"]
    if patient_id is None and isinstance(request.query_params.get("patient_id"), str):
        patient_id = request.query_params["patient_id"]
    detail = dict(state.detail)
    detail.update({k: v for k, v in params.items() if k.endswith("_id") and k != "patient_id"})
    return AuditRecord(
        action=action,
        subtype=subtype,
        http_status=status,
        entity=f"{request.method} {request.url.path}",
        agent=who.subject if who else None,
        agent_name=who.name if who else None,
        network_address=request.client.host if request.client else None,
        patient_id=patient_id,
        detail=detail,
    )
