"""The shapes of the API's requests and answers (its OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from alerts.model import Disposition

__all__ = [
    "DeviceOut",
    "EpisodeOut",
    "FindingOut",
    "LatestVital",
    "Note",
    "Override",
    "OverrideRequest",
    "PatientOut",
    "PatientSummary",
    "Reading",
    "Resolution",
    "SnoozeRequest",
    "ThresholdLine",
    "Worklist",
    "WorklistRow",
]


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
    value: float
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
    note: str | None = Field(default=None, max_length=2000)


class Resolution(BaseModel):
    disposition: Disposition = Field(description="What was done (docs/alerts.md).")
    note: str | None = Field(default=None, max_length=2000)


class SnoozeRequest(BaseModel):
    until: datetime


class OverrideRequest(BaseModel):
    value: float
    note: str | None = Field(default=None, max_length=2000)
