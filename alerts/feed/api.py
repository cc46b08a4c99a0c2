"""The clinicians' HTTP API, live feed and worklist page (FastAPI; OpenAPI at /openapi.json).

Every request that touches patient data runs as the database role telemon_api
with `telemon.clinician` set to the token's subject, so PostgreSQL's row-level
security shows only the patients of that clinician's care teams; the API adds
nothing to it but the difference between "not yours" (403) and "no such thing"
(404). Each such request, refused ones included, leaves an audit record.
Errors are JSON `{"error": message}` with the fitting status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, Field

from alerts import actions
from alerts.catalogue import RULES
from alerts.feed.audit import Action, AuditRecord, record_audit
from alerts.feed.auth import Clinician, DevIssuer, TokenError, TokenVerifier
from alerts.feed.stream import FeedPosition, Wakeups, current_position, events_after, sse_stream
from alerts.model import RuleKind, Severity
from alerts.programmes import ENABLED, AlertConfig
from devices.catalogue import BY_CODE
from devices.fhir_codes import FHIR_CONTENT_TYPE
from devices.registry import Programme
from ingest.export import (
    PatientExport,
    fhir_bundle,
    load_export,
    read_identity_as_clinician,
    readings_csv,
)
from ingest.platform import ConfigurationError, Connection

__all__ = ["FeedApp", "FeedMetrics", "chart_thresholds", "create_app", "refresh_alert_board"]

SEVERITIES = {s.label: s.value for s in Severity}


# -- the shapes of the API (OpenAPI) ----------------------------------------------------------


class AlertOut(BaseModel):
    alert_id: int
    patient_id: str
    programme: str
    rule_id: str
    rule_version: int
    severity: Literal["info", "orange", "red"]
    status: Literal["open", "acknowledged", "resolved"]
    snoozed_until: datetime | None
    first_fired_at: datetime
    last_fired_at: datetime
    raised_at: datetime
    fire_count: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    explanation: dict[str, Any] = Field(description="Rule, version, input values, window.")


class AlertPage(BaseModel):
    alerts: list[AlertOut]
    next_offset: int | None = Field(description="Pass as `offset` for the next page.")
    feed_position: str = Field(
        description="Open the live feed `after` this position to miss nothing since this page."
    )


class Reading(BaseModel):
    kind: str
    value: float
    unit: str
    measured_at: datetime


class AlertDetail(BaseModel):
    alert: AlertOut
    recent_readings: list[Reading] = Field(description="The patient's last 72 hours.")


class DeviceOut(BaseModel):
    device_id: str
    device_type: str


class PatientOut(BaseModel):
    patient_id: str
    programme: str
    enrolled_at: datetime
    discharged_at: datetime | None
    devices: list[DeviceOut]
    last_transmission: datetime | None
    adherence_7d: float = Field(description="Share of the last 7 days with a reading.")


class Override(BaseModel):
    parameter: str
    value: float
    changed_by: str
    changed_at: datetime
    note: str | None


class ThresholdLine(BaseModel):
    kind: str
    rule_id: str
    parameter: str
    value: float
    severity: Literal["orange", "red"]
    direction: Literal["below", "above"] = Field(description="Which side alerts.")


class Note(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


class SnoozeRequest(BaseModel):
    until: datetime


class OverrideRequest(BaseModel):
    value: float
    note: str | None = Field(default=None, max_length=2000)


# -- the application --------------------------------------------------------------------------


class FeedMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.clients = Gauge(
            "telemon_feed_clients", "Live feed (SSE) connections open.", registry=registry
        )
        self.events_sent = Counter(
            "telemon_feed_events_sent", "Alert events sent on live feeds.", registry=registry
        )
        self.open_alerts = Gauge(
            "telemon_alerts_open",
            "Open alerts (not acknowledged, not snoozed), by severity; every team's.",
            ["severity"],
            registry=registry,
        )
        self.oldest_open = Gauge(
            "telemon_alerts_oldest_open_seconds",
            "Age of the oldest open alert, by severity (0: none).",
            ["severity"],
            registry=registry,
        )
        handling_buckets = (60, 300, 900, 1800, 3600, 7200, 14_400, 43_200, 86_400, 259_200)
        self.time_to_acknowledge = Histogram(
            "telemon_alerts_time_to_acknowledge_seconds",
            "From an alert being raised to a clinician acknowledging it, by severity.",
            ["severity"],
            buckets=handling_buckets,
            registry=registry,
        )
        self.time_to_resolve = Histogram(
            "telemon_alerts_time_to_resolve_seconds",
            "From an alert being raised to a clinician resolving it, by severity.",
            ["severity"],
            buckets=handling_buckets,
            registry=registry,
        )
        for severity in SEVERITIES:
            for metric in (self.open_alerts, self.oldest_open):
                metric.labels(severity)
        self.refused = Counter(
            "telemon_api_refused",
            "API requests refused, by HTTP status (401, 403, 404, 409, 400).",
            ["status"],
            registry=registry,
        )


@dataclass
class FeedApp:
    pool: asyncpg.Pool  # every connection is role telemon_api
    verifier: TokenVerifier
    wakeups: Wakeups
    source: str
    config: AlertConfig
    metrics: FeedMetrics
    dev_issuer: DevIssuer | None = None
    fhir_source: str = "urn:telemon"  # meta.source of exported FHIR resources


class _RefusedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


async def refresh_alert_board(feed: FeedApp, every_s: float = 15.0) -> None:
    """Keep the open-alert gauges current (a background task of the API)."""
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            rows = await feed.pool.fetch("SELECT * FROM open_alert_board()")
            board = {r["severity"]: r for r in rows}
            now = datetime.now(UTC)
            for severity in Severity:
                label, row = severity.label, board.get(severity.value)
                feed.metrics.open_alerts.labels(label).set(row["open_alerts"] if row else 0)
                age = (now - row["oldest_raised_at"]).total_seconds() if row else 0.0
                feed.metrics.oldest_open.labels(label).set(age)
        await asyncio.sleep(every_s)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _clinician(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Clinician:
    feed: FeedApp = request.app.state.feed
    scheme, _, token = (authorization or "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not token:
            raise TokenError("a bearer token is required")
        return await feed.verifier.verify(token.strip())
    except TokenError as error:
        async with feed.pool.acquire() as conn:
            await record_audit(
                conn,
                feed.source,
                _audit(request, None, "E", "authenticate", 401, detail={"error": str(error)}),
            )
        raise _RefusedError(401, str(error)) from error


WhoAsks = Annotated[Clinician, Depends(_clinician)]


def create_app(feed: FeedApp) -> FastAPI:
    app = FastAPI(
        title="telemon clinicians' API",
        version="1",
        description="Alerts, patients and readings of the clinician's care teams; a live "
        "feed of alert events (Server-Sent Events). Bearer tokens from the configured "
        "OpenID Connect issuer.",
    )

    app.state.feed = feed

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        feed.metrics.refused.labels("400").inc()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}"
            for e in error.errors()
        )
        return _error(400, f"bad request: {problems}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        feed.metrics.refused.labels(str(error.status_code)).inc()
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(_RefusedError)
    async def refused(request: Request, error: _RefusedError) -> JSONResponse:
        feed.metrics.refused.labels(str(error.status)).inc()
        return _error(error.status, error.message)

    @contextlib.asynccontextmanager
    async def session(
        request: Request, who: Clinician, action: Action, subtype: str, patient_id: str | None
    ) -> AsyncIterator[_Session]:
        """A transaction as the clinician; the audit record of the request afterwards,
        whatever the outcome."""
        s = _Session(patient_id=patient_id)
        status = 200
        async with feed.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await _as_clinician(conn, who)
                    s.conn = conn
                    yield s
                if s.refusal_after_commit is not None:
                    raise s.refusal_after_commit
            except _RefusedError as error:
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
                    conn, feed.source, _audit(request, who, action, subtype, status, s.patient_id)
                )

    # -- alerts ---------------------------------------------------------------------------

    @app.get("/api/v1/alerts", response_model=AlertPage, tags=["alerts"])
    async def list_alerts(
        request: Request,
        who: WhoAsks,
        status: Annotated[list[Literal["open", "acknowledged", "resolved"]] | None, Query()] = None,
        severity: Annotated[list[Literal["info", "orange", "red"]] | None, Query()] = None,
        programme: str | None = None,
        patient_id: str | None = None,
        order: Literal["severity", "newest"] = "severity",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        statuses = status or ["open", "acknowledged"]
        severities = [SEVERITIES[s] for s in severity or SEVERITIES]
        ordering = "a.severity DESC, a.raised_at" if order == "severity" else "a.raised_at DESC"
        async with session(request, who, "R", "alert.search", patient_id) as s:
            rows = await s.conn.fetch(
                f"""{_ALERTS} WHERE a.status = ANY($1::text[]) AND a.severity = ANY($2::int[])
                AND ($3::text IS NULL OR p.programme = $3)
                AND ($4::text IS NULL OR p.patient_id = $4)
                ORDER BY {ordering}, a.alert_id LIMIT $5 OFFSET $6""",
                statuses,
                severities,
                programme,
                patient_id,
                limit + 1,
                offset,
            )
            position = await current_position(s.conn)
        more = len(rows) > limit
        return {
            "alerts": [_alert(r) for r in rows[:limit]],
            "next_offset": offset + limit if more else None,
            "feed_position": str(position),
        }

    @app.get("/api/v1/alerts/{alert_id}", response_model=AlertDetail, tags=["alerts"])
    async def get_alert(request: Request, who: WhoAsks, alert_id: int) -> dict[str, Any]:
        async with session(request, who, "R", "alert.read", None) as s:
            row = await _the_alert(s, alert_id)
            readings = await _readings(
                s.conn, row["patient_key"], None, datetime.now(UTC) - timedelta(hours=72), None
            )
        return {"alert": _alert(row), "recent_readings": readings}

    async def act(
        request: Request, who: Clinician, alert_id: int, subtype: str, action: Any
    ) -> dict[str, Any]:
        async with session(request, who, "U", f"alert.{subtype}", None) as s:
            row = await _the_alert(s, alert_id)
            if row["status"] == "resolved":
                raise _RefusedError(409, f"alert {alert_id} is already resolved")
            await action(s.conn)
            updated = await _the_alert(s, alert_id)
        handled = {
            "acknowledge": feed.metrics.time_to_acknowledge,
            "resolve": feed.metrics.time_to_resolve,
        }
        if subtype in handled and updated["status"] != row["status"]:
            waited = (datetime.now(UTC) - row["raised_at"]).total_seconds()
            handled[subtype].labels(Severity(row["severity"]).label).observe(waited)
        return _alert(updated)

    @app.post("/api/v1/alerts/{alert_id}/acknowledge", response_model=AlertOut, tags=["alerts"])
    async def acknowledge(request: Request, who: WhoAsks, alert_id: int) -> dict[str, Any]:
        return await act(
            request,
            who,
            alert_id,
            "acknowledge",
            lambda conn: actions.acknowledge(conn, alert_id, who.subject),
        )

    @app.post("/api/v1/alerts/{alert_id}/resolve", response_model=AlertOut, tags=["alerts"])
    async def resolve(request: Request, who: WhoAsks, alert_id: int, body: Note) -> dict[str, Any]:
        return await act(
            request,
            who,
            alert_id,
            "resolve",
            lambda conn: actions.resolve(conn, alert_id, who.subject, body.note),
        )

    @app.post("/api/v1/alerts/{alert_id}/snooze", response_model=AlertOut, tags=["alerts"])
    async def snooze(
        request: Request, who: WhoAsks, alert_id: int, body: SnoozeRequest
    ) -> dict[str, Any]:
        if body.until.tzinfo is None:
            raise _RefusedError(400, "until: give a time zone, e.g. 2026-11-23T18:00:00+01:00")
        if body.until <= datetime.now(UTC):
            raise _RefusedError(400, "until: must be in the future")
        return await act(
            request,
            who,
            alert_id,
            "snooze",
            lambda conn: actions.snooze(conn, alert_id, who.subject, body.until),
        )

    @app.post("/api/v1/alerts/{alert_id}/escalate", response_model=AlertOut, tags=["alerts"])
    async def escalate(request: Request, who: WhoAsks, alert_id: int, body: Note) -> dict[str, Any]:
        return await act(
            request,
            who,
            alert_id,
            "escalate",
            lambda conn: actions.escalate(conn, alert_id, who.subject, body.note),
        )

    # -- patients -------------------------------------------------------------------------

    @app.get("/api/v1/patients", response_model=list[PatientOut], tags=["patients"])
    async def list_patients(
        request: Request,
        who: WhoAsks,
        programme: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        async with session(request, who, "R", "patient.search", None) as s:
            rows = await s.conn.fetch(
                f"{_PATIENTS} WHERE ($1::text IS NULL OR p.programme = $1) "
                "ORDER BY p.patient_id LIMIT $2 OFFSET $3",
                programme,
                limit,
                offset,
            )
        return [_patient(r) for r in rows]

    @app.get("/api/v1/patients/{patient_id}", response_model=PatientOut, tags=["patients"])
    async def get_patient(request: Request, who: WhoAsks, patient_id: str) -> dict[str, Any]:
        async with session(request, who, "R", "patient.read", patient_id) as s:
            key = await _the_patient(s, patient_id)
            row = await s.conn.fetchrow(f"{_PATIENTS} WHERE p.patient_key = $1", key)
        assert row is not None  # in the same transaction
        return _patient(row)

    @app.get(
        "/api/v1/patients/{patient_id}/readings", response_model=list[Reading], tags=["patients"]
    )
    async def patient_readings(
        request: Request,
        who: WhoAsks,
        patient_id: str,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        since = since or datetime.now(UTC) - timedelta(days=7)
        if since.tzinfo is None or (until is not None and until.tzinfo is None):
            raise _RefusedError(400, "since/until: give a time zone")
        async with session(request, who, "R", "readings.read", patient_id) as s:
            patient_key = await _the_patient(s, patient_id)
            if kind is not None and not await s.conn.fetchval(
                "SELECT EXISTS (SELECT FROM vital_kinds WHERE kind = $1)", kind
            ):
                raise _RefusedError(400, f"kind: unknown kind {kind!r}")
            return await _readings(s.conn, patient_key, kind, since, until)

    @app.get(
        "/api/v1/patients/{patient_id}/thresholds",
        response_model=list[ThresholdLine],
        tags=["thresholds"],
    )
    async def patient_thresholds(
        request: Request, who: WhoAsks, patient_id: str
    ) -> list[dict[str, Any]]:
        """The single-reading thresholds in force for the patient (programme, then overrides):
        the lines of the charts."""
        async with session(request, who, "R", "thresholds.read", patient_id) as s:
            key = await _the_patient(s, patient_id)
            programme = await s.conn.fetchval(
                "SELECT programme FROM patients WHERE patient_key = $1", key
            )
            overridden = {o["parameter"]: o["value"] for o in await _overrides(s.conn, key)}
        return chart_thresholds(feed.config, Programme(programme), overridden)

    @app.get(
        "/api/v1/patients/{patient_id}/overrides",
        response_model=list[Override],
        tags=["thresholds"],
    )
    async def overrides(request: Request, who: WhoAsks, patient_id: str) -> list[dict[str, Any]]:
        async with session(request, who, "R", "override.read", patient_id) as s:
            return await _overrides(s.conn, await _the_patient(s, patient_id))

    @app.put(
        "/api/v1/patients/{patient_id}/overrides/{parameter}",
        response_model=list[Override],
        tags=["thresholds"],
    )
    async def set_override(
        request: Request, who: WhoAsks, patient_id: str, parameter: str, body: OverrideRequest
    ) -> list[dict[str, Any]]:
        async with session(request, who, "U", "override.set", patient_id) as s:
            patient_key = await _the_patient(s, patient_id)
            try:
                await actions.set_override(
                    s.conn, patient_id, parameter, body.value, who.subject, body.note
                )
            except ConfigurationError as error:
                raise _RefusedError(400, str(error)) from error
            return await _overrides(s.conn, patient_key)

    @app.delete(
        "/api/v1/patients/{patient_id}/overrides/{parameter}",
        response_model=list[Override],
        tags=["thresholds"],
    )
    async def remove_override(
        request: Request, who: WhoAsks, patient_id: str, parameter: str
    ) -> list[dict[str, Any]]:
        async with session(request, who, "D", "override.remove", patient_id) as s:
            patient_key = await _the_patient(s, patient_id)
            await actions.remove_override(s.conn, patient_id, parameter, who.subject)
            return await _overrides(s.conn, patient_key)

    # -- export and identity --------------------------------------------------------------

    @app.get(
        "/fhir/Patient/{patient_id}/$everything",
        tags=["export"],
        response_class=JSONResponse,
        responses={200: {"content": {FHIR_CONTENT_TYPE: {}}}},
    )
    async def patient_everything(
        request: Request,
        who: WhoAsks,
        patient_id: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> JSONResponse:
        """The patient's readings and alerts measured in [start, end) (default: the last 30
        days) as a FHIR R4 Bundle; the Patient carries the INS identity when you may read it."""
        since, until = _period(start, end)
        async with session(request, who, "R", "patient.export", patient_id) as s:
            export = await _patient_export(s, patient_id, since, until)
            if await s.conn.fetchval(_READS_IDENTITY, patient_id):
                _, identity = await read_identity_as_clinician(s.conn, patient_id, feed.source)
                export = dataclasses.replace(export, identity=identity)
        base = f"{str(request.base_url).rstrip('/')}/fhir"
        bundle = fhir_bundle(export, base=base, source=feed.fhir_source)
        return JSONResponse(bundle, media_type=FHIR_CONTENT_TYPE)

    @app.get(
        "/api/v1/patients/{patient_id}/readings.csv",
        tags=["export"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def patient_readings_csv(
        request: Request,
        who: WhoAsks,
        patient_id: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> PlainTextResponse:
        """The patient's readings measured in [start, end) (default: the last 30 days) as CSV,
        in the catalogue's UCUM units, times in UTC."""
        since, until = _period(start, end)
        async with session(request, who, "R", "readings.export", patient_id) as s:
            export = await _patient_export(s, patient_id, since, until)
        return PlainTextResponse(readings_csv(export), media_type="text/csv")

    @app.get("/api/v1/patients/{patient_id}/identity", tags=["patients"])
    async def patient_identity(request: Request, who: WhoAsks, patient_id: str) -> JSONResponse:
        """The patient's INS identity, for the members of its care teams who read identities.
        Every attempt is audited by the database itself."""
        async with session(request, who, "R", "patient.identity", patient_id) as s:
            await _the_patient(s, patient_id)
            permitted, identity = await read_identity_as_clinician(s.conn, patient_id, feed.source)
            if not permitted:  # the database's audit record of the attempt stays
                s.refusal_after_commit = _RefusedError(
                    403, "you do not read identities in this patient's teams"
                )
            elif identity is None:
                raise _RefusedError(404, f"no identity recorded for {patient_id!r}")
        assert identity is not None  # a refusal was raised on leaving the session
        return JSONResponse(identity.model_dump(mode="json"))

    # -- the live feed --------------------------------------------------------------------

    @app.get(
        "/api/v1/events",
        tags=["feed"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(
        request: Request,
        who: WhoAsks,
        after: str | None = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Alert events (raised, escalated, acknowledged, snoozed, resolved) of the clinician's
        patients as Server-Sent Events. Resume with `Last-Event-ID` (or `after`, e.g. a list's
        `feed_position`); without either, from now."""
        given = last_event_id or after
        try:
            start = FeedPosition.parse(given) if given else None
        except ValueError as error:
            raise _RefusedError(400, str(error)) from error
        async with session(request, who, "R", "alert.stream", None) as s:
            position = start or await current_position(s.conn)

        async def read(after: FeedPosition) -> list[tuple[FeedPosition, dict[str, object]]]:
            async def query() -> list[tuple[FeedPosition, dict[str, object]]]:
                async with feed.pool.acquire() as conn, conn.transaction():
                    await _as_clinician(conn, who)
                    return await events_after(conn, after)

            # A client leaving mid-query must not cut the transaction off: let it finish.
            return await asyncio.shield(query())

        async def counted() -> AsyncIterator[str]:
            feed.metrics.clients.inc()
            try:
                async for text in sse_stream(read, position, feed.wakeups):
                    if text.startswith("id:"):
                        feed.metrics.events_sent.inc()
                    yield text
            finally:
                feed.metrics.clients.dec()

        return StreamingResponse(
            counted(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- the page and the development issuer ----------------------------------------------

    page = (resources.files("alerts.feed") / "worklist.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def worklist() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    if feed.dev_issuer is not None:
        issuer = feed.dev_issuer

        @app.get("/dev-issuer/.well-known/openid-configuration", include_in_schema=False)
        async def discovery() -> dict[str, Any]:
            return issuer.discovery()

        @app.get("/dev-issuer/jwks", include_in_schema=False)
        async def jwks() -> dict[str, Any]:
            return issuer.jwks()

    return app


def chart_thresholds(
    config: AlertConfig, programme: Programme, overrides: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Each threshold of the programme's single-reading rules, as a horizontal line on the
    chart of the kind it reads; enabled rules only, overrides applied."""
    settings = config.programmes[programme]
    lines = []
    for rule_id in settings.rules:
        rule = RULES[rule_id]
        if rule.kind is not RuleKind.READING or len(rule.kinds) != 1:
            continue
        if overrides.get(f"{rule_id}.{ENABLED}", 1) == 0:
            continue
        (kind_code,) = rule.kinds
        for name, parameter in rule.parameters.items():
            match = _THRESHOLD.match(name)
            if match is None:
                continue
            qualified = f"{rule_id}.{name}"
            value = overrides.get(qualified, settings.parameters.get(qualified, parameter.default))
            if math.isnan(value):
                continue
            lines.append(
                {
                    "kind": BY_CODE[kind_code].kind.value,
                    "rule_id": rule_id,
                    "parameter": name,
                    "value": value,
                    "severity": match["severity"],
                    "direction": "below" if name.endswith("below") else "above",
                }
            )
    return lines


_THRESHOLD = re.compile(r"^(?P<severity>red|orange)_(at_or_)?(below|above)$")


# -- queries ----------------------------------------------------------------------------------


@dataclass
class _Session:
    patient_id: str | None
    conn: Connection = None  # type: ignore[assignment]  # set on entry
    # A refusal whose transaction must still commit (what it wrote is the audit itself).
    refusal_after_commit: _RefusedError | None = None


_ALERTS = """
    SELECT a.*, p.patient_id, p.programme FROM alerts a
    JOIN patients p ON p.patient_key = a.patient_key
"""

_PATIENTS = """
    SELECT p.patient_id, p.programme, p.enrolled_at, p.discharged_at,
           coalesce((SELECT json_agg(json_build_object('device_id', d.device_id,
                                                       'device_type', d.device_type)
                                     ORDER BY d.device_id)
                     FROM devices d WHERE d.patient_key = p.patient_key), '[]') AS devices,
           (SELECT max(r.received_at) FROM readings r
            WHERE r.patient_key = p.patient_key) AS last_transmission,
           (SELECT count(DISTINCT date_trunc('day', r.measured_at)) FROM readings r
            WHERE r.patient_key = p.patient_key
              AND r.measured_at > now() - interval '7 days') AS days_7d
    FROM patients p
"""


async def _as_clinician(conn: Connection, who: Clinician) -> None:
    """Row-level security from here to the end of the transaction: this clinician's teams."""
    await conn.execute("SELECT set_config('telemon.clinician', $1, true)", who.subject)


async def _the_alert(s: _Session, alert_id: int) -> asyncpg.Record:
    row = await s.conn.fetchrow(f"{_ALERTS} WHERE a.alert_id = $1", alert_id)
    if row is None:
        if await s.conn.fetchval("SELECT alert_exists($1)", alert_id):
            raise _RefusedError(403, f"alert {alert_id} is not one of your care teams' patients'")
        raise _RefusedError(404, f"no alert {alert_id}")
    s.patient_id = row["patient_id"]
    return row


EXPORT_DAYS = 30
# Whether the clinician reads identities in one of the patient's teams (their own
# memberships are all row-level security lets them see).
_READS_IDENTITY = """
    SELECT EXISTS (SELECT FROM care_team_members m JOIN patient_care_teams t USING (team_id)
                   JOIN patients p USING (patient_key)
                   WHERE m.reads_identity AND p.patient_id = $1)
"""


def _period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    until = end or datetime.now(UTC)
    since = start or until - timedelta(days=EXPORT_DAYS)
    if since.tzinfo is None or until.tzinfo is None:
        raise _RefusedError(400, "start/end: give a time zone")
    if since >= until:
        raise _RefusedError(400, "start must be before end")
    return since, until


async def _patient_export(
    s: _Session, patient_id: str, since: datetime, until: datetime
) -> PatientExport:
    """The patient's export, if the clinician's teams follow them (403 / 404 otherwise)."""
    await _the_patient(s, patient_id)
    export = await load_export(s.conn, patient_id, since, until)
    assert export is not None  # in the same transaction
    return export


async def _the_patient(s: _Session, patient_id: str) -> int:
    key: int | None = await s.conn.fetchval(
        "SELECT patient_key FROM patients WHERE patient_id = $1", patient_id
    )
    if key is None:
        if await s.conn.fetchval("SELECT patient_exists($1)", patient_id):
            raise _RefusedError(403, f"patient {patient_id!r} is not followed by your care teams")
        raise _RefusedError(404, f"no patient {patient_id!r}")
    return key


async def _overrides(conn: Connection, patient_key: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT parameter, value, changed_by, changed_at, note FROM threshold_overrides "
        "WHERE patient_key = $1 ORDER BY parameter",
        patient_key,
    )
    return [dict(r) for r in rows]


async def _readings(
    conn: Connection,
    patient_key: int,
    kind: str | None,
    since: datetime,
    until: datetime | None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT k.kind, r.value, k.unit, r.measured_at FROM readings r
        JOIN vital_kinds k ON k.code = r.kind
        WHERE r.patient_key = $1 AND ($2::text IS NULL OR k.kind = $2)
          AND r.measured_at >= $3 AND ($4::timestamptz IS NULL OR r.measured_at < $4)
        ORDER BY r.measured_at, k.kind LIMIT 20000
        """,
        patient_key,
        kind,
        since,
        until,
    )
    return [dict(r) for r in rows]


def _alert(r: asyncpg.Record) -> dict[str, Any]:
    alert = dict(r)
    alert["severity"] = Severity(r["severity"]).label
    alert["explanation"] = json.loads(r["explanation"])
    return alert


def _patient(r: asyncpg.Record) -> dict[str, Any]:
    patient = dict(r)
    patient["devices"] = json.loads(r["devices"])
    patient["adherence_7d"] = round(r["days_7d"] / 7, 3)
    return patient


def _audit(
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
