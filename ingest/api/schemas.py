"""The shapes of the API's requests and answers (its OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "AlertDetail",
    "AlertOut",
    "AlertPage",
    "DeviceOut",
    "Note",
    "Override",
    "OverrideRequest",
    "PatientOut",
    "Reading",
    "SnoozeRequest",
    "ThresholdLine",
]


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
