"""Hypothesis: the decoder never raises, and accounts for every record and every reading."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.catalogue import BY_KIND, CATALOGUE, VitalKind
from devices.decode import DecodedBatch, Decoder
from tests.records import RECORD_MS, Record

DECODER = Decoder(max_message_bytes=2048, future_tolerance_s=300)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-23T08:00:00Z", "2026-11-23T10:04:59+00:00", "not a time"]),
    json_scalars,
)
kinds = st.sampled_from([k.value for k in VitalKind]) | st.text(max_size=12)
units = st.sampled_from(sorted({u for v in CATALOGUE for u in v.units})) | st.text(max_size=6)
values = (
    st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**7), 10**7) | json_scalars
)


@st.composite
def readings(draw: st.DrawFn) -> dict[str, Any]:
    reading: dict[str, Any] = {
        "kind": draw(kinds),
        "value": draw(values),
        "unit": draw(units),
        "measured_at": draw(timestamps),
    }
    for field in draw(st.sets(st.sampled_from(list(reading)), max_size=1)):
        del reading[field]
    return reading


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {
        "device_id": draw(st.sampled_from(["oxi-1", "", "a b", 7])),
        "patient_id": "p-1",
        "readings": draw(st.lists(readings(), max_size=6)),
    }
    if draw(st.booleans()):
        body["schema_version"] = draw(st.sampled_from([1, 2, "1"]))
    if draw(st.booleans()):
        body["message_id"] = draw(st.text(max_size=140) | st.integers())
    return json.dumps(body).encode()


def check_accounting(records: list[Record], batch: DecodedBatch) -> None:
    """Each record is accepted or rejected whole; an accepted one's readings all land somewhere."""
    whole = {r.offset for r in batch.rejections if r.reading_index is None}
    messages = batch.messages
    accepted = {records[i].offset for i in messages.record_index.tolist()}
    assert whole.isdisjoint(accepted)
    assert whole | accepted == {r.offset for r in records}
    for index, record_index in enumerate(messages.record_index.tolist()):
        kept = int((batch.message == index).sum())
        offset = records[record_index].offset
        dropped = sum(
            1 for r in batch.rejections if r.offset == offset and r.reading_index is not None
        )
        assert kept + dropped == messages.reading_count[index]
    assert len(messages.patient_id) == len(messages.device_id) == len(messages)
    assert len(batch.kind) == len(batch.value) == len(batch.measured_at_us) == len(batch.message)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) | messages(),
        max_size=8,
    )
)
def test_decoder_never_raises_and_accounts_for_everything(bodies: list[bytes]) -> None:
    records = [Record(body, key=b"p-1", offset=i) for i, body in enumerate(bodies)]
    check_accounting(records, DECODER.decode(records, RECORD_MS))


@settings(max_examples=200, deadline=None)
@given(st.lists(messages(), min_size=1, max_size=8))
def test_accepted_values_are_plausible_and_in_canonical_units(bodies: list[bytes]) -> None:
    batch = DECODER.decode(
        [Record(b, key=b"p-1", offset=i) for i, b in enumerate(bodies)], RECORD_MS
    )
    for code, value in zip(batch.kind.tolist(), batch.value.tolist(), strict=True):
        vital = next(v for v in CATALOGUE if v.code == code)
        assert vital.low <= value <= vital.high


@given(
    st.sampled_from([(v, u) for v in CATALOGUE for u in v.units]),
    st.floats(-1e6, 1e6, allow_nan=False),
)
def test_conversions_are_affine_and_invertible(pair: tuple[Any, str], value: float) -> None:
    vital, unit = pair
    conversion = BY_KIND[vital.kind].units[unit]
    back = (conversion.apply(value) - conversion.offset) / conversion.scale
    assert abs(back - value) <= 1e-9 * max(1.0, abs(value))


@st.composite
def plausible_messages(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A record mostly as a gateway sends it (key, value): the kind of poll the decoder
    takes whole, with now and then what sends it record by record (an unknown unit, a
    time beyond the microsecond, a key that is not the patient's)."""

    def now_and_then(usual: Any, unusual: Any) -> Any:
        return unusual if draw(st.integers(0, 9)) == 0 else usual

    vital = draw(st.sampled_from(CATALOGUE))
    unit = now_and_then(draw(st.sampled_from(sorted(vital.units))), "furlong")
    value = st.floats(vital.low - 10, vital.high + 10) | st.integers(-5, 300) | st.booleans()
    measured_at = st.datetimes(
        min_value=datetime(1999, 12, 30), max_value=datetime(2027, 1, 1), timezones=st.timezones()
    ).map(lambda d: d.isoformat())
    readings = draw(st.lists(st.tuples(value, measured_at), min_size=1, max_size=3))
    body: dict[str, Any] = {
        "device_id": draw(st.sampled_from(["oxi-1", "cuff-2"])),
        "patient_id": draw(st.sampled_from(["p-1", "p-2"])),
        "readings": [
            {
                "kind": vital.kind.value,
                "value": v,
                "unit": unit,
                "measured_at": now_and_then(t, "2026-11-23T08:00:00.123456789Z"),
            }
            for v, t in readings
        ],
    }
    if draw(st.booleans()):
        body["message_id"] = draw(st.text(min_size=1, max_size=20))
    key = now_and_then(body["patient_id"], "p-3")
    return key.encode(), json.dumps(body).encode()


def assert_same_batch(whole: DecodedBatch, each: DecodedBatch) -> None:
    for name in ("message", "reading_index", "kind", "value", "measured_at_us", "reference_us"):
        a, b = getattr(whole, name), getattr(each, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    for name in ("record_index", "reading_count", "pair_digest"):
        a, b = getattr(whole.messages, name), getattr(each.messages, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    for name in ("patient_id", "device_id", "message_id"):
        assert getattr(whole.messages, name) == getattr(each.messages, name), name
    assert whole.rejections == each.rejections


@settings(max_examples=300, deadline=None)
@given(st.lists(plausible_messages(), min_size=1, max_size=6), st.integers(-3, 3))
def test_a_poll_taken_whole_decodes_as_record_by_record(
    bodies: list[tuple[bytes, bytes]], record_shift_days: int
) -> None:
    """Whichever way the decoder takes a poll (whole, one column at a time; or record by
    record with the messages the fast path decoded for the whole), the batch is the one
    the record-by-record path makes alone, domain rejections included."""
    timestamp = RECORD_MS + record_shift_days * 86_400_000
    records = [
        Record(value, key=key, offset=i, timestamp=timestamp)
        for i, (key, value) in enumerate(bodies)
    ]
    assert_same_batch(DECODER.decode(records, RECORD_MS), DECODER._decode_each(records, RECORD_MS))


def test_the_usual_poll_is_taken_whole_and_one_bad_record_sends_it_record_by_record() -> None:
    good = [
        Record(
            json.dumps(
                {
                    "device_id": f"oxi-{i}",
                    "patient_id": f"p-{i}",
                    "readings": [
                        {
                            "kind": "spo2",
                            "value": 95,
                            "unit": "%",
                            "measured_at": "2026-11-23T08:00:00Z",
                        }
                    ],
                }
            ).encode(),
            key=f"p-{i}".encode(),
            offset=i,
        )
        for i in range(20)
    ]
    messages = DECODER._fast_messages(good)
    assert messages is not None
    whole = DECODER._decode_all_fast(good, messages, RECORD_MS)
    assert whole is not None
    assert_same_batch(whole, DECODER._decode_each(good, RECORD_MS))
    poll = [*good, Record(b"{not json", key=b"p-1", offset=20)]
    assert DECODER._fast_messages(poll) is None
    batch = DECODER.decode(poll, RECORD_MS)
    assert len(batch) == 20
    assert [r.reason.value for r in batch.rejections] == ["invalid_json"]


ONE_READING = (
    b'{"device_id": "oxi-1", "patient_id": "p-1", "readings": [{"kind": "spo2", '
    b'"value": 95, "unit": "%", "measured_at": "2026-11-23T08:00:00+05:45"}]}'
)


@pytest.mark.parametrize(
    "odd",
    [
        Record(None, key=b"p-1"),
        Record(ONE_READING, key=None),
        Record(ONE_READING, key=b"p-1", content_type="application/fhir+json"),
        Record(ONE_READING.replace(b'"p-1"', b'"p-1\\n"'), key=b"p-1\n"),
        Record(ONE_READING.replace(b'"oxi-1"', b'"-oxi"'), key=b"p-1"),
        Record(ONE_READING.replace(b"08:00:00+", b"08:00:00.1234567+"), key=b"p-1"),
        Record(ONE_READING.replace(b"2026", b"0001"), key=b"p-1"),
        Record(ONE_READING.replace(b"95", b"true"), key=b"p-1"),
        Record(b"", key=b"p-1"),
    ],
)
def test_an_odd_record_in_a_poll_gives_the_record_by_record_batch(odd: Record) -> None:
    records = [Record(ONE_READING, key=b"p-1", offset=0), replace(odd, offset=1)]
    assert_same_batch(DECODER.decode(records, RECORD_MS), DECODER._decode_each(records, RECORD_MS))


def test_an_empty_poll_gives_an_empty_batch() -> None:
    batch = DECODER.decode([], RECORD_MS)
    assert_same_batch(batch, DECODER._decode_each([], RECORD_MS))
    assert len(batch) == 0
