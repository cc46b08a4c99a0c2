"""The shapes of the API's requests and answers (its OpenAPI), and the bounded types every
input is declared with: an input outside them is a 400 before any handler runs, never a
500 from PostgreSQL (NUL bytes, integers beyond 64 bits, dates PostgreSQL cannot hold)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, StringConstraints

from alerts.model import Disposition
from alerts.programmes import parameter_names

__all__ = [
    "DbId",
    "DeviceOut",
    "EpisodeOut",
    "ErrorOut",
    "FeedPositionText",
    "FindingOut",
    "Instant",
    "LatestVital",
    "Name",
    "Note",
    "Offset",
    "Override",
    "OverrideRequest",
    "ParameterName",
    "PatientId",
    "PatientOut",
    "PatientSummary",
    "Reading",
    "Resolution",
    "SnoozeRequest",
    "Text",
    "ThresholdLine",
    "ThresholdValue",
    "Worklist",
    "WorklistRow",
]

# -- bounded inputs --------------------------------------------------------------------------

# A pseudonymous patient id, as the message contract has it (devices/contract.py).
PatientId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$", max_length=64)
]
# A row id: PostgreSQL's bigint.
DbId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Offset = Annotated[int, Field(ge=0, le=1_000_000)]
# A catalogue name (programme, vital kind).
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_]{0,63}$", max_length=64)]
# "<rule>.<name>" or "patient.<name>": the catalogue's (listed in the OpenAPI).
ParameterName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9_]{1,64}\.[a-z0-9_]{1,64}$", max_length=129),
    Field(json_schema_extra={"enum": sorted(parameter_names())}),
]
# Free text of a clinician: no control characters but line breaks and tabs.
Text = Annotated[
    str, StringConstraints(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$", max_length=2000)
]
FeedPositionText = Annotated[
    str, StringConstraints(pattern=r"^[0-9]{1,19}-[0-9]{1,19}$", max_length=39)
]
# A threshold a clinician sets: a finite number; the per-parameter bounds come with the
# rules' protocol (they are not this API's to invent).
ThresholdValue = Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)]

_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _plausible(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset: out of range all the same
        utc = _LATEST
    if not _EARLIEST <= utc < _LATEST:
        raise ValueError("must be between 1900-01-01 and 2200-01-01 (UTC)")
    return utc


# A time with its offset (a time without one is refused), within two centuries of ours.
Instant = Annotated[AwareDatetime, AfterValidator(_plausible)]


class ErrorOut(BaseModel):
    """Every refusal and error: a status and this body."""

    error: str = Field(description="What was wrong, for a person.")


Severity = Literal["info", "orange", "red"]


class FindingOut(BaseModel):
    """What one rule found, inside an episode."""

    finding_id: int
    rule_id: str
    rule_version: int
    title: str = Field(description="The rule's title, in the reader's language.")
    summary: str = Field(description='What it found, in clinical words: "SpO2 90 % (≤ 92 %)".')
    severity: Severity
    status: Literal["open", "resolved"]
    first_fired_at: datetime
    last_fired_at: datetime
    fire_count: int
    resolution: str | None
    explanation: dict[str, Any] = Field(description="Rule, version, values, parameters.")


class EpisodeOut(BaseModel):
    """The care team's unit of work: one patient's worsening (job `clinical`) or data to
    chase (job `data`); its severity is the highest of its findings."""

    episode_id: int
    patient_id: str
    programme: str
    job: Literal["clinical", "data"]
    severity: Severity
    status: Literal["open", "acknowledged", "resolved"]
    waiting_since: datetime = Field(description="When it reached its severity.")
    snoozed_until: datetime | None
    opened_at: datetime
    first_fired_at: datetime
    last_fired_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    disposition: Disposition | None
    disposition_label: str | None = Field(description="The disposition, in words.")
    note: str | None
    findings: list[FindingOut]


class LatestVital(BaseModel):
    kind: str
    label: str
    value: float
    unit: str
    measured_at: datetime


class PatientSummary(BaseModel):
    patient_id: str
    display_name: str | None = Field(
        description="The patient's name, for readers of its identity (each read audited)."
    )
    programme: str
    day_of_follow_up: int = Field(description="Days since enrolment (0: the first day).")


class WorklistRow(BaseModel):
    episode: EpisodeOut
    patient: PatientSummary
    latest_vitals: list[LatestVital] = Field(description="Each vital's latest value, 3 days.")


class Worklist(BaseModel):
    rows: list[WorklistRow] = Field(description="By severity, then the longest wait first.")
    counts: dict[Severity, int] = Field(description="Unresolved episodes, by severity.")
    unacknowledged: int
    next_offset: int | None = Field(description="Pass as `offset` for the next page.")
    feed_position: str = Field(
        description="Open the live feed `after` this position to miss nothing since this page."
    )


class Reading(BaseModel):
    kind: str
    value: float
    unit: str
    measured_at: datetime


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
    value: float | None = Field(
        description="null: not a number (an operator's `telemon override`, never the API)"
    )
    changed_by: str
    changed_at: datetime
    note: str | None


class ThresholdLine(BaseModel):
    kind: str
    rule_id: str
    rule_title: str = Field(description="The rule's title, in the reader's language.")
    parameter: str
    value: float
    severity: Literal["orange", "red"]
    direction: Literal["below", "above"] = Field(description="Which side alerts.")


class Note(BaseModel):
    note: Text | None = None


class Resolution(BaseModel):
    disposition: Disposition = Field(description="What was done (docs/alerts.md).")
    note: Text | None = None


class SnoozeRequest(BaseModel):
    until: Instant


class OverrideRequest(BaseModel):
    value: ThresholdValue
    note: Text | None = None
