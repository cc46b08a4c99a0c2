"""A patient's data out: the FHIR R4 `$everything` Bundle and the readings as CSV."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from alerts.messages import language_of, words
from devices.fhir_codes import FHIR_CONTENT_TYPE
from devices.identity import read_identity_as_clinician
from ingest.api.access import Api, Refused, Session, WhoAsks, audited, the_patient
from ingest.api.schemas import Instant, PatientId
from ingest.export import PatientExport, fhir_bundle, load_export, readings_csv

__all__ = ["router"]

router = APIRouter(tags=["export"])

EXPORT_DAYS = 30
# Whether the clinician reads identities in one of the patient's teams (their own
# memberships are all row-level security lets them see).
_READS_IDENTITY = """
    SELECT EXISTS (SELECT FROM care_team_members m JOIN patient_care_teams t USING (team_id)
                   JOIN patients p USING (patient_key)
                   WHERE m.reads_identity AND p.patient_id = $1)
"""


@router.get(
    "/fhir/Patient/{patient_id}/$everything",
    response_class=JSONResponse,
    responses={200: {"content": {FHIR_CONTENT_TYPE: {}}}},
)
async def patient_everything(
    request: Request,
    api: Api,
    who: WhoAsks,
    patient_id: PatientId,
    start: Instant | None = None,
    end: Instant | None = None,
) -> JSONResponse:
    """The patient's readings and alerts measured in [start, end) (default: the last 30
    days) as a FHIR R4 Bundle; the Patient carries the INS identity when you may read it."""
    since, until = _period(start, end)
    async with audited(request, who, "R", "patient.export", patient_id) as s:
        export = await _patient_export(s, patient_id, since, until)
        if await s.conn.fetchval(_READS_IDENTITY, patient_id):
            _, identity = await read_identity_as_clinician(s.conn, patient_id, api.source)
            export = dataclasses.replace(export, identity=identity)
    base = f"{api.base_url}/fhir"  # configured: a request's Host header is not believed
    bundle = fhir_bundle(
        export,
        base=base,
        source=api.fhir_source,
        words=words(language_of(None, request.headers.get("accept-language"), api.language)),
        timezone=api.config.timezone,
    )
    return JSONResponse(bundle, media_type=FHIR_CONTENT_TYPE)


@router.get(
    "/api/v1/patients/{patient_id}/readings.csv",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def patient_readings_csv(
    request: Request,
    who: WhoAsks,
    patient_id: PatientId,
    start: Instant | None = None,
    end: Instant | None = None,
) -> PlainTextResponse:
    """The patient's readings measured in [start, end) (default: the last 30 days) as CSV,
    in the catalogue's UCUM units, times in UTC."""
    since, until = _period(start, end)
    async with audited(request, who, "R", "readings.export", patient_id) as s:
        export = await _patient_export(s, patient_id, since, until)
    return PlainTextResponse(readings_csv(export), media_type="text/csv")


def _period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    until = end or datetime.now(UTC)
    since = start or until - timedelta(days=EXPORT_DAYS)
    if since >= until:
        raise Refused(400, "start must be before end")
    return since, until


async def _patient_export(
    s: Session, patient_id: str, since: datetime, until: datetime
) -> PatientExport:
    """The patient's export, if the clinician's teams follow them (404 otherwise)."""
    await the_patient(s, patient_id)
    export = await load_export(s.conn, patient_id, since, until)
    assert export is not None  # in the same transaction
    return export
