"""Message contract v1: what a device gateway produces to `telemon.readings.v1`.

These pydantic models ARE the contract: the decoder validates with them and
the JSON Schema in devices/schemas/ is generated from them
(`python -m devices.contract > devices/schemas/readings.v1.schema.json`).
v1 only ever gains optional fields; unknown fields are ignored so that newer
gateways keep working with older consumers. A breaking change is a new topic.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictFloat

from devices.catalogue import VitalKind

__all__ = [
    "ID_PATTERN",
    "ReadingV1",
    "ReadingsMessageV1",
    "RejectReason",
    "json_schema",
]

# Pseudonymous identifiers: no names, no national numbers, no spaces.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"

PseudonymousId = Annotated[str, Field(strict=True, pattern=ID_PATTERN)]


class RejectReason(StrEnum):
    """Why a message or one of its readings went to the dead-letter topic."""

    # Whole message.
    MESSAGE_TOO_LARGE = "message_too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    EMPTY_READINGS = "empty_readings"
    KEY_MISMATCH = "key_mismatch"
    UNKNOWN_DEVICE = "unknown_device"
    # One reading of a message (the others are kept).
    UNKNOWN_KIND = "unknown_kind"
    UNIT_NOT_CONVERTIBLE = "unit_not_convertible"
    NOT_AVAILABLE = "not_available"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    NAIVE_TIMESTAMP = "naive_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"


class ReadingV1(BaseModel):
    """One measurement or questionnaire answer."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: VitalKind = Field(description="What was measured; see docs/contract.md for the list.")
    value: StrictBool | StrictFloat = Field(
        description="A number for measurements, an integer 0-4 for graded items, "
        "true/false for yes/no items."
    )
    unit: str = Field(
        max_length=32,
        description="UCUM unit, e.g. `%`, `/min`, `Cel`, `[degF]`, `kg`, `mm[Hg]`, `mg/dL`; "
        "`{grade}` and `{boolean}` for questionnaire items.",
    )
    measured_at: Annotated[AwareDatetime, Field(strict=True)] = Field(
        description="When the device measured, RFC 3339 with a UTC offset."
    )


class ReadingsMessageV1(BaseModel):
    """One gateway upload: one or many readings of one device for one patient."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        title="telemon readings message v1",
        json_schema_extra={"$id": "https://telemon.example/schemas/readings.v1.schema.json"},
    )

    schema_version: Literal[1] = Field(
        default=1, description="Contract major version; absent means 1."
    )
    message_id: Annotated[str, Field(strict=True, min_length=1, max_length=128)] | None = Field(
        default=None,
        description="The gateway's own id for this upload; echoed in dead-letter records.",
    )
    device_id: PseudonymousId = Field(description="Device serial or gateway-assigned id.")
    patient_id: PseudonymousId = Field(
        description="Pseudonymous patient id; must equal the Kafka record key."
    )
    readings: list[ReadingV1] = Field(min_length=1)


def json_schema() -> dict[str, Any]:
    """The published JSON Schema (draft 2020-12) of a readings message."""
    schema = ReadingsMessageV1.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
