"""Hypothesis: the decoder never raises, and accounts for every record and every reading."""

from __future__ import annotations

import json
from typing import Any

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
