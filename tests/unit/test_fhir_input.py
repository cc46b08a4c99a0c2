"""FHIR input: Observations and Bundles decode to the same readings and rejections as v1."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devices.catalogue import BY_CODE, VitalKind
from devices.decode import DecodedBatch, Decoder
from devices.fhir_codes import FHIR_CONTENT_TYPE, is_fhir
from tests.records import EXAMPLES, RECORD_MS, Record, message, reading, record


def decode(body: Any, *, key: bytes = b"p-000123") -> DecodedBatch:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    fhir = Record(raw, key=key, content_type=FHIR_CONTENT_TYPE)
    return Decoder(max_message_bytes=1 << 16, future_tolerance_s=300).decode([fhir], RECORD_MS)


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / "fhir" / name).read_text())
    return loaded


def kinds(batch: DecodedBatch) -> list[str]:
    return [BY_CODE[int(c)].kind.value for c in batch.kind]


def test_a_fhir_observation_gives_the_reading_of_the_same_v1_message() -> None:
    """Same kind, value, time and reference: FHIR is another spelling of the contract."""
    fhir = decode(example("valid/oximeter_observation.json"))
    v1 = Decoder(max_message_bytes=1 << 16, future_tolerance_s=300).decode(
        [record(message(reading("spo2", 93, "%")))], RECORD_MS
    )
    assert kinds(fhir) == kinds(v1) == ["spo2"]
    assert fhir.value.tolist() == v1.value.tolist()
    assert fhir.measured_at_us.tolist() == v1.measured_at_us.tolist()
    assert fhir.messages.device_id == ["oxi-7f3a"]
    assert fhir.messages.message_id == ["oxi-7f3a-20261123T0800-spo2"]


def test_the_blood_pressure_panel_gives_systolic_and_diastolic() -> None:
    batch = decode(example("valid/blood_pressure_bundle.json"))
    assert kinds(batch) == ["systolic_bp", "diastolic_bp", "heart_rate"]
    assert batch.value.tolist() == [142, 91, 88]
    assert batch.reading_index.tolist() == [0, 1, 2]
    assert batch.messages.message_id == ["urn:uuid:upload-0001"]


def test_a_bundle_of_two_devices_keeps_each_reading_with_its_device() -> None:
    """Units are converted as in v1 (lb -> kg, degF -> Cel); a coding by MDC alone is enough."""
    batch = decode(example("valid/two_devices_bundle.json"))
    assert batch.messages.device_id == ["scale-04d1", "thermo-88b0"]
    assert batch.messages.reading_count.tolist() == [1, 1]
    by_device = {
        batch.messages.device_id[int(m)]: (BY_CODE[int(k)].kind, v)
        for m, k, v in zip(batch.message, batch.kind, batch.value, strict=True)
    }
    assert by_device["scale-04d1"][0] is VitalKind.BODY_WEIGHT
    assert by_device["scale-04d1"][1] == pytest.approx(182.6 * 0.453_592_37)
    assert by_device["thermo-88b0"][1] == pytest.approx(38.5)


def test_one_bad_component_rejects_only_that_reading_and_names_the_code() -> None:
    batch = decode(example("invalid/blood_pressure_bad_component.json"))
    assert kinds(batch) == ["diastolic_bp"]
    (rejection,) = batch.rejections
    assert rejection.reason == "unknown_kind"
    assert rejection.reading_index == 0
    assert "http://loinc.org|0000-0" in rejection.detail
    assert "component[0]" in rejection.detail
    assert rejection.content_type == FHIR_CONTENT_TYPE  # kept for the dead-letter topic
    assert batch.messages.reading_count.tolist() == [2]  # both consumed: one kept, one rejected


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("invalid/unknown_code.json", ["http://loinc.org|2339-0"]),
        ("invalid/unit_not_ucum.json", ["UCUM", "'bpm'"]),
        ("invalid/no_device.json", ["device"]),
        ("invalid/date_only.json", ["'2026-11-23'", "no time"]),
        ("invalid/not_an_observation.json", ["'Patient'"]),
        ("invalid/data_absent.json", ["dataAbsentReason error"]),
        ("invalid/two_patients.json", ["Patient/p-000999", "one patient per message"]),
    ],
)
def test_rejections_say_what_is_wrong(name: str, words: list[str]) -> None:
    (rejection,) = decode(example(name)).rejections
    for word in words:
        assert word in rejection.detail, rejection.detail


def test_the_record_key_must_be_the_subject() -> None:
    batch = decode(example("valid/oximeter_observation.json"), key=b"p-000999")
    assert [r.reason for r in batch.rejections] == ["key_mismatch"]


def test_a_device_missing_from_one_observation_rejects_that_one_only() -> None:
    body = example("valid/blood_pressure_bundle.json")
    del body["entry"][3]["resource"]["device"]  # the heart rate
    batch = decode(body)
    assert kinds(batch) == ["systolic_bp", "diastolic_bp"]
    (rejection,) = batch.rejections
    assert (rejection.reason, rejection.reading_index) == ("missing_field", 2)
    assert batch.messages.reading_count.tolist() == [3]


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"resourceType": "Bundle", "type": "document", "entry": []}', b"NaN"],
)
def test_malformed_fhir_is_rejected_whole(body: bytes) -> None:
    batch = decode(body)
    assert len(batch.messages) == 0
    assert len(batch.rejections) == 1
    assert batch.rejections[0].reading_index is None


def test_without_the_content_type_a_fhir_resource_is_read_as_v1_and_refused() -> None:
    raw = json.dumps(example("valid/oximeter_observation.json")).encode()
    batch = Decoder(max_message_bytes=1 << 16, future_tolerance_s=300).decode(
        [Record(raw)], RECORD_MS
    )
    assert [r.reason for r in batch.rejections] == ["missing_field"]


def test_content_type_parameters_are_allowed() -> None:
    assert is_fhir("application/fhir+json; fhirVersion=4.0")
    assert not is_fhir("application/json")
    assert not is_fhir(None)
