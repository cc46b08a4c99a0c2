"""The decoder: every kind of bad input becomes a rejection with its reason; good input survives."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from devices.catalogue import BY_CODE, VitalKind
from devices.contract import RejectReason
from devices.decode import DecodedBatch, Decoder, reference_times_us
from devices.fhir_codes import FHIR_CONTENT_TYPE
from tests.records import EXAMPLES, RECORD_MS, Record, message, reading, record

R = RejectReason


def decode(*records: Record, max_bytes: int = 4096) -> DecodedBatch:
    return Decoder(max_message_bytes=max_bytes, future_tolerance_s=300).decode(records, RECORD_MS)


def reasons(batch: DecodedBatch) -> list[str]:
    return [r.reason.value for r in batch.rejections]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (k, v)
        for k, v in json.loads((EXAMPLES / "expected.json").read_text()).items()
        if not k.startswith("_")
    ],
)
def test_published_examples_decode_as_documented(name: str, expected: dict[str, Any]) -> None:
    """Every example in devices/examples gives the outcome its manifest promises."""
    raw = (EXAMPLES / name).read_bytes()
    if name.startswith("fhir/"):
        batch = decode(Record(raw, content_type=FHIR_CONTENT_TYPE))
    else:
        batch = decode(Record(raw, key=_patient_key(raw)))
    assert len(batch) == expected["accepted"]
    assert reasons(batch) == expected["rejected"]


def _patient_key(raw: bytes) -> bytes:
    try:
        return str(json.loads(raw)["patient_id"]).encode()
    except (ValueError, KeyError, TypeError):
        return b"p-000123"


def test_units_are_normalised_to_the_catalogue_unit() -> None:
    """°F, lb, kPa and mmol/L arrive in Cel, kg, mm[Hg] and mg/dL."""
    batch = decode(
        record(
            message(
                reading("body_temperature", 101.3, "[degF]"),
                reading("body_weight", 182.6, "[lb_av]"),
                reading("systolic_bp", 16.0, "kPa"),
                reading("glucose", 5.5, "mmol/L"),
                reading("body_weight", 70_500, "g", "2026-11-23T08:00:01+01:00"),
            )
        )
    )
    got = dict(zip([BY_CODE[int(c)].kind for c in batch.kind][:4], batch.value[:4], strict=True))
    assert got[VitalKind.BODY_TEMPERATURE] == pytest.approx(38.5, abs=1e-9)
    assert got[VitalKind.BODY_WEIGHT] == pytest.approx(82.825_966_762, abs=1e-9)
    assert got[VitalKind.SYSTOLIC_BP] == pytest.approx(16.0 * 7.500_616_827, abs=1e-9)
    assert got[VitalKind.GLUCOSE] == pytest.approx(5.5 * 18.015_6, abs=1e-9)
    assert batch.value[4] == pytest.approx(70.5)


def test_measured_at_becomes_utc_microseconds() -> None:
    batch = decode(record(message(reading(measured_at="2026-11-23T08:00:00.123456+01:00"))))
    assert int(batch.measured_at_us[0]) == 1_795_417_200_123_456


def test_one_bad_reading_rejects_only_that_reading() -> None:
    """The DLQ record names the reading; its neighbours are kept."""
    batch = decode(
        record(
            message(
                reading("spo2", 96),
                reading("spo2", 140, measured_at="2026-11-23T08:01:00Z"),
                reading("heart_rate", None, "/min"),
                reading("heart_rate", 80, "/min"),
            )
        )
    )
    assert [int(i) for i in batch.reading_index] == [0, 3]
    assert sorted((r.reading_index, r.reason) for r in batch.rejections) == [
        (1, R.OUT_OF_RANGE),
        (2, R.WRONG_TYPE),
    ]
    out_of_range = next(r for r in batch.rejections if r.reason is R.OUT_OF_RANGE)
    assert "140" in out_of_range.detail
    assert "50-100" in out_of_range.detail


@pytest.mark.parametrize(
    ("bad_reading", "reason"),
    [
        (reading("spo2", math.nan), R.NOT_FINITE),
        (reading("spo2", math.inf), R.NOT_FINITE),
        (reading("spo2", 8_388_607), R.NOT_AVAILABLE),
        (reading("heart_rate", -8_388_608, "/min"), R.NOT_AVAILABLE),
        (reading("spo2", 49.9), R.OUT_OF_RANGE),
        (reading("body_temperature", 120, "[degF]"), R.OUT_OF_RANGE),
        (reading("spo2", 95, "mm[Hg]"), R.UNIT_NOT_CONVERTIBLE),
        (reading("spo2", 95, "percent"), R.UNIT_NOT_CONVERTIBLE),
        (reading("teleportation", 1, "1"), R.UNKNOWN_KIND),
        (reading("dyspnoea", 2.5, "{grade}"), R.WRONG_TYPE),
        (reading("dyspnoea", 5, "{grade}"), R.OUT_OF_RANGE),
        (reading("dyspnoea", True, "{grade}"), R.WRONG_TYPE),
        (reading("new_confusion", 1, "{boolean}"), R.WRONG_TYPE),
        (reading("spo2", True), R.WRONG_TYPE),
        (reading("spo2", "95"), R.WRONG_TYPE),
        (reading(measured_at="2026-11-23T08:00:00"), R.NAIVE_TIMESTAMP),
        (reading(measured_at="yesterday"), R.WRONG_TYPE),
        (reading(measured_at=1_795_000_000), R.WRONG_TYPE),  # type: ignore[arg-type]
        (reading(measured_at="2026-11-23T10:06:00Z"), R.TIMESTAMP_IN_FUTURE),
        (reading(measured_at="1970-01-01T00:00:00Z"), R.TIMESTAMP_TOO_OLD),
        (reading(measured_at="0001-01-01T00:00:00+14:00"), R.TIMESTAMP_TOO_OLD),
        (reading(measured_at="9999-12-31T23:59:59-12:00"), R.TIMESTAMP_IN_FUTURE),
    ],
)
def test_reading_level_reasons(bad_reading: dict[str, Any], reason: RejectReason) -> None:
    batch = decode(record(message(reading("heart_rate", 70, "/min"), bad_reading)))
    assert len(batch) == 1
    assert [(r.reason, r.reading_index) for r in batch.rejections] == [(reason, 1)]


def test_future_tolerance_is_inclusive() -> None:
    batch = decode(record(message(reading(measured_at="2026-11-23T10:05:00Z"))))
    assert len(batch) == 1
    assert not batch.rejections


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", R.INVALID_JSON),
        (b"\xff\xfe\x00", R.INVALID_JSON),
        # Found by the fuzzer (loadtests/fuzz_decoder.py): bad UTF-8 inside a string made
        # the msgspec fast path raise UnicodeDecodeError, which stopped the decoder.
        (
            b'{"device_id": "oxi-7f3\xb7", "patient_id": "p-000123", "readings": [1]}',
            R.INVALID_JSON,
        ),
        (b"null", R.NOT_AN_OBJECT),
        (b'"text"', R.NOT_AN_OBJECT),
        (b'{"patient_id": "p-000123", "readings": []}', R.MISSING_FIELD),
        (b'{"device_id": "d 1", "patient_id": "p-000123", "readings": [{}]}', R.WRONG_TYPE),
        (b'{"device_id": "d", "patient_id": "p-000123", "readings": {}}', R.WRONG_TYPE),
        (b'{"device_id": "d", "patient_id": "p-000123", "readings": []}', R.EMPTY_READINGS),
        (
            b'{"device_id": "d", "patient_id": "p-000123", "readings": [1], "schema_version": 2}',
            R.UNSUPPORTED_VERSION,
        ),
    ],
)
def test_message_level_reasons(raw: bytes, reason: RejectReason) -> None:
    batch = decode(Record(raw))
    assert len(batch) == 0
    assert len(batch.messages) == 0
    assert [(r.reason, r.reading_index) for r in batch.rejections] == [(reason, None)]
    assert batch.rejections[0].value == raw


def test_oversized_message_is_rejected_unread() -> None:
    big = record(message(*[reading(measured_at=f"2026-11-23T08:{m:02d}:00Z") for m in range(60)]))
    batch = decode(big, max_bytes=2048)
    assert reasons(batch) == ["message_too_large"]


def test_key_must_be_the_patient_id() -> None:
    no_key = Record(json.dumps(message()).encode(), key=None, offset=1)
    batch = decode(record(message(), key=b"p-999999"), no_key)
    assert reasons(batch) == ["key_mismatch", "key_mismatch"]
    assert batch.rejections[1].key is None


def test_a_missing_value_is_invalid_json() -> None:
    assert reasons(decode(Record(None))) == ["invalid_json"]


def test_rejection_keeps_origin_and_message_id() -> None:
    body = message(reading("spo2", 20)) | {"message_id": "gw-1/77"}
    batch = decode(record(body, offset=41, partition=3))
    (rejection,) = batch.rejections
    assert (rejection.partition, rejection.offset, rejection.message_id) == (3, 41, "gw-1/77")
    assert rejection.value == json.dumps(body).encode()


def test_reference_time_distrusts_absurd_record_timestamps() -> None:
    """A record stamped in 1970 or ahead of the consumer's clock is judged by the clock."""
    now_ms = RECORD_MS
    stamped = np.array([now_ms - 3_600_000, 0, now_ms + 3_600_000, now_ms + 300_000], np.int64)
    assert reference_times_us(stamped, now_ms, 300_000_000).tolist() == [
        (now_ms - 3_600_000) * 1000,
        now_ms * 1000,
        now_ms * 1000,
        (now_ms + 300_000) * 1000,  # within the future tolerance
    ]


def test_columns_line_up_across_messages() -> None:
    records = [
        record(message(reading("spo2", 91), reading("heart_rate", 120, "/min")), offset=5),
        Record(b"{", offset=6),
        record(message(reading("spo2", 99), patient="p-2", device="oxi-2"), offset=7),
    ]
    batch = decode(*records)
    assert [records[i].offset for i in batch.messages.record_index] == [5, 7]
    assert batch.messages.patient_id == ["p-000123", "p-2"]
    assert batch.message.tolist() == [0, 0, 1]
    assert batch.value.tolist() == [91.0, 120.0, 99.0]
    assert batch.kind.dtype == np.int16
    assert batch.measured_at_us.dtype == np.int64
