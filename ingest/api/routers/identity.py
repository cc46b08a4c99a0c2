"""A patient's INS identity, for the care-team members who may read it (each read audited
by the database itself)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from devices.identity import read_identity_as_clinician
from ingest.api.access import Api, Refused, WhoAsks, audited, the_patient
from ingest.api.schemas import ErrorOut, PatientId

__all__ = ["router"]

router = APIRouter(tags=["patients"])


@router.get(
    "/api/v1/patients/{patient_id}/identity",
    responses={403: {"model": ErrorOut, "description": "You do not read identities here."}},
)
async def patient_identity(
    request: Request, api: Api, who: WhoAsks, patient_id: PatientId
) -> JSONResponse:
    """The patient's INS identity, for the members of its care teams who read identities.
    Every attempt is audited by the database itself."""
    async with audited(request, who, "R", "patient.identity", patient_id) as s:
        await the_patient(s, patient_id)
        permitted, identity = await read_identity_as_clinician(s.conn, patient_id, api.source)
        if not permitted:  # the database's audit record of the attempt stays
            s.refusal_after_commit = Refused(
                403, "you do not read identities in this patient's teams"
            )
        elif identity is None:
            raise Refused(404, f"no identity recorded for {patient_id!r}")
    assert identity is not None  # a refusal was raised on leaving the session
    return JSONResponse(identity.model_dump(mode="json"))
