"""FHIR output of pure data: every kind of the catalogue, validated by fhir.resources."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.bundle import Bundle

from alerts.messages import words
from alerts.model import Disposition, Job, Severity
from devices.catalogue import BY_CODE, BY_KIND, ValueType, VitalKind
from devices.decode import Decoder
from devices.fhir_codes import FHIR_CONTENT_TYPE
from ingest.export import (
    ExportedEpisode,
    ExportedFinding,
    ExportedReading,
    PatientExport,
    fhir_bundle,
)
from tests.records import RECORD_MS, Record

ENGLISH: dict[str, Any] = {"words": words("en"), "timezone": ZoneInfo("Europe/Paris")}


def test_every_kind_exports_with_its_catalogue_unit() -> None:
    """Measurements carry the catalogue's UCUM unit; graded and yes/no items their value type."""
    at = datetime(2026, 11, 23, 8, tzinfo=UTC)
    readings = [ExportedReading("d-1", kind, BY_KIND[kind].low, at, at) for kind in VitalKind]
    export = PatientExport("p-1", "covid", at, at, [("d-1", "wearable")], readings, [])
    bundle = fhir_bundle(export, base="urn:telemon", source="urn:oid:1.2.3", **ENGLISH)
    Bundle.model_validate(bundle)
    values = [e["resource"] for e in bundle["entry"]][2:]
    assert len(values) == len(VitalKind) - 1  # systolic and diastolic: one panel
    assert {k for o in values for k in o if k.startswith("value")} == {
        "valueQuantity",
        "valueInteger",
        "valueBoolean",
    }


@pytest.mark.parametrize(("patient", "device"), [("p-1", "d-1"), ("p_1", "gw:01")])
def test_the_export_decodes_back_to_the_same_readings(patient: str, device: str) -> None:
    """Every kind, exported then decoded as FHIR input: the same kinds, values and times.
    Pseudonymous ids that are no FHIR ids (`_`, `:`) travel as logical references."""
    at = datetime(2026, 11, 23, 8, tzinfo=UTC)
    readings = [
        ExportedReading(device, k, (BY_KIND[k].low + BY_KIND[k].high) / 2, at, at)
        for k in VitalKind
        if BY_KIND[k].value_type is ValueType.MEASUREMENT
    ]
    readings += [
        ExportedReading("d-2", VitalKind.COUGH, 3.0, at, at),
        ExportedReading("d-2", VitalKind.ON_OXYGEN, 1.0, at, at),
    ]
    devices = [(device, "wearable"), ("d-2", "questionnaire_app")]
    export = PatientExport(patient, "covid", at, at, devices, readings, [])
    bundle = fhir_bundle(export, base="urn:telemon", source="urn:telemon", **ENGLISH)
    Bundle.model_validate(bundle)
    raw = json.dumps(bundle).encode()
    decoder = Decoder(max_message_bytes=1 << 20, future_tolerance_s=300)
    batch = decoder.decode(
        [Record(raw, patient.encode(), content_type=FHIR_CONTENT_TYPE)], RECORD_MS
    )
    assert batch.rejections == []
    got = sorted(
        (batch.messages.device_id[int(m)], BY_CODE[int(k)].kind.value, v, t)
        for m, k, v, t in zip(
            batch.message, batch.kind, batch.value.tolist(), batch.measured_at_us, strict=True
        )
    )
    expected = sorted(
        (r.device_id, r.kind.value, r.value, int(at.timestamp() * 1_000_000)) for r in readings
    )
    assert got == expected


def test_an_episode_is_a_detected_issue_with_its_findings_and_what_was_done() -> None:
    """One DetectedIssue per episode: its findings as evidence in clinical words, the
    acknowledgement and the disposition (coded, with the note) as mitigation."""
    at = datetime(2026, 11, 23, 8, tzinfo=UTC)
    spo2 = {
        "rule": "spo2_scale1",
        "values": {"value": 90.0},
        "parameters": {"red_at_or_below": 92.0, "orange_at_or_below": 94.0},
    }
    rate = {
        "rule": "heart_rate",
        "values": {"value": 125.0},
        "parameters": {"orange_at_or_above": 111.0, "red_at_or_above": 131.0},
    }
    episode = ExportedEpisode(
        episode_id=7,
        job=Job.CLINICAL,
        severity=Severity.RED,
        status="resolved",
        opened_at=at,
        first_fired_at=at,
        acknowledged_at=at + timedelta(minutes=4),
        acknowledged_by="nurse-a",
        resolved_at=at + timedelta(minutes=30),
        resolved_by="dr-b",
        disposition=Disposition.EMERGENCY,
        note="sent by ambulance",
        findings=[
            ExportedFinding(1, "spo2_scale1", Severity.RED, at, spo2),
            ExportedFinding(2, "heart_rate", Severity.ORANGE, at, rate),
        ],
    )
    export = PatientExport("p-1", "covid", at, at, [], [], [episode])
    bundle = fhir_bundle(export, base="urn:telemon", source="urn:telemon", **ENGLISH)
    Bundle.model_validate(bundle)
    issue = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "episode-7")
    assert (issue["status"], issue["severity"]) == ("final", "high")
    assert [e["detail"][0]["display"] for e in issue["evidence"]] == [
        "SpO2 90 % (≤ 92 %)",
        "Heart rate 125/min (≥ 111/min)",
    ]
    acknowledged, resolved = issue["mitigation"]
    assert acknowledged["author"] == {"display": "nurse-a"}
    assert resolved["action"]["coding"][0]["code"] == "emergency"
    assert resolved["action"]["text"] == "Sent to emergency or hospitalised: sent by ambulance"
