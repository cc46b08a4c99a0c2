"""Parity: whatever the msgspec fast path accepts, the pydantic contract accepts identically."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from devices.contract import ReadingsMessageV1
from devices.fast_contract import decode_fast
from tests.records import EXAMPLES
from tests.unit.test_decode_properties import messages


def same_outcome(raw: bytes) -> None:
    try:
        fast = decode_fast(raw)
    except msgspec.MsgspecError:
        return  # refused: the contract decides, nothing to compare
    try:
        slow = ReadingsMessageV1.model_validate_json(raw)
    except ValidationError as error:
        pytest.fail(f"the fast path accepted what the contract rejects: {error}")
    assert (fast.patient_id, fast.device_id, fast.message_id, fast.schema_version) == (
        slow.patient_id,
        slow.device_id,
        slow.message_id,
        slow.schema_version,
    )
    assert len(fast.readings) == len(slow.readings)
    for f, s in zip(fast.readings, slow.readings, strict=True):
        assert (f.kind, f.unit, f.measured_at) == (s.kind, s.unit, s.measured_at)
        assert f.measured_at.utcoffset() == s.measured_at.utcoffset()
        assert type(f.value) is type(s.value)
        assert f.value == s.value


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.json")), ids=lambda p: p.name)
def test_examples_parity(path: Any) -> None:
    same_outcome(path.read_bytes())


def test_nanoseconds_are_truncated_as_the_contract_does() -> None:
    """Found by the property below: msgspec rounded 08:00:00.123456789 up to ...457,
    pydantic truncates to ...456, so one reading had two possible stored times."""
    raw = (
        b'{"device_id": "oxi-1", "patient_id": "p-1", "readings": [{"kind": "spo2",'
        b' "value": 93, "unit": "%", "measured_at": "2026-11-23T08:00:00.123456789Z"}]}'
    )
    with pytest.raises(msgspec.ValidationError):
        decode_fast(raw)
    stored = ReadingsMessageV1.model_validate_json(raw).readings[0].measured_at
    assert stored.microsecond == 123456


def test_the_fast_path_takes_the_common_case() -> None:
    """Not just a test that cannot fail: valid messages do go the fast way."""
    raw = (EXAMPLES / "valid" / "oximeter.json").read_bytes()
    assert decode_fast(raw).readings[0].value == 93.0


def test_identifiers_remembered_are_only_those_the_pattern_accepts() -> None:
    """Identifiers are matched once and remembered: a near one is matched for itself."""

    def message(patient_id: str) -> bytes:
        return json.dumps(
            {
                "device_id": "oxi-1",
                "patient_id": patient_id,
                "readings": [
                    {
                        "kind": "spo2",
                        "value": 93,
                        "unit": "%",
                        "measured_at": "2026-11-23T08:00:00Z",
                    }
                ],
            }
        ).encode()

    for _ in range(2):
        assert decode_fast(message("p-remembered")).patient_id == "p-remembered"
        for refused in ("p-remembered\n", "-p-remembered", "p" * 65):
            with pytest.raises(msgspec.ValidationError):
                decode_fast(message(refused))


timestamps = st.sampled_from(
    [
        "2026-11-23T08:00:00Z",
        "2026-11-23t08:00:00z",
        "2026-11-23 08:00:00+01:00",
        "2026-11-23T08:00:00.5-03:30",
        "2026-11-23T08:00:00.123456789Z",
        "2026-11-23T24:00:00Z",
        "2026-11-23T23:59:60Z",
        "2026-02-30T08:00:00Z",
        "2026-11-23T08:00Z",
        "2026-11-23T08:00:00",
        "2026-11-23T08:00:00+24:00",
        "2026-11-23T08:00:00+00:00:00",
        "20261123T080000Z",
        "2026-11-23T08:00:00.Z",
        "0001-01-01T00:00:00+14:00",
        "2026-11-23_08:00:00Z",
    ]
)
values = st.one_of(
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.just("93"),
    st.none(),
)


@st.composite
def tricky(draw: st.DrawFn) -> bytes:
    reading = {
        "kind": draw(st.sampled_from(["spo2", "cough", "SPO2", "spo2 "])),
        "value": draw(values),
        "unit": draw(st.text(max_size=40)),
        "measured_at": draw(timestamps),
    }
    body: dict[str, Any] = {
        "device_id": draw(st.sampled_from(["oxi-1", "-oxi", "o" * 64, "o" * 65, "é"])),
        "patient_id": draw(st.sampled_from(["p-1", "p 1", "p-1\n"])),
        "readings": [reading] * draw(st.integers(0, 2)),
    }
    if draw(st.booleans()):
        body["message_id"] = draw(st.text(max_size=130) | st.none())
    if draw(st.booleans()):
        body["schema_version"] = draw(st.sampled_from([1, 1.0, True, "1", 2]))
    return json.dumps(body).encode()


@settings(max_examples=300, deadline=None)
@given(st.one_of(tricky(), messages()))
@example(  # Python's `$` matches before a final newline; found by this test
    b'{"device_id":"oxi-1","patient_id":"p-1\\n","readings":[{"kind":"spo2","value":1,'
    b'"unit":"%","measured_at":"2026-11-23T08:00:00Z"}]}'
)
@example(
    b'{"device_id":"d","patient_id":"p","readings":[{"kind":"spo2","value":1e400,'
    b'"unit":"%","measured_at":"2026-11-23T08:00:00Z"}]}'
)
def test_fast_path_never_accepts_more_than_the_contract(raw: bytes) -> None:
    same_outcome(raw)
