"""Kafka-record stand-ins for tests of pure code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).parent.parent / "devices" / "examples"
RECORD_TIME = datetime.fromisoformat("2026-11-23T10:00:00+00:00")
RECORD_MS = int(RECORD_TIME.timestamp() * 1000)


@dataclass(frozen=True)
class Record:
    value: bytes | None
    key: bytes | None = b"p-000123"
    topic: str = "telemon.readings.v1"
    partition: int = 0
    offset: int = 0
    timestamp: int = RECORD_MS
    content_type: str | None = None


def record(body: Any, *, key: bytes | None = None, offset: int = 0, partition: int = 0) -> Record:
    """A record whose key is the body's patient_id unless given."""
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    if key is None and isinstance(body, dict):
        key = str(body.get("patient_id", "")).encode()
    return Record(value, key, offset=offset, partition=partition)


def reading(
    kind: str = "spo2",
    value: Any = 95,
    unit: str = "%",
    measured_at: str = "2026-11-23T08:00:00+01:00",
) -> dict[str, Any]:
    return {"kind": kind, "value": value, "unit": unit, "measured_at": measured_at}


def message(
    *readings: dict[str, Any], patient: str = "p-000123", device: str = "oxi-7f3a"
) -> dict[str, Any]:
    return {"device_id": device, "patient_id": patient, "readings": list(readings) or [reading()]}
