"""Decode Kafka records into reading columns and rejections.

`Decoder.decode` is pure: it reads no clock (the caller passes `now`) and does
no I/O. It never raises on bad input; every problem becomes a `Rejection`
carrying a `RejectReason`, the original bytes, and which reading it concerns.

Fast path: the msgspec mirror of the contract (devices.fast_contract), which
only accepts. A poll whose every record it accepts (the usual poll) is taken
whole, a column at a time; any other goes a record at a time, and what the
mirror refuses is validated by the contract's pydantic models, which accept it
(NaN literals, say, are then rejected as not finite) or say precisely what is
wrong; a message with bad readings keeps its valid ones (the salvage path).
Domain checks (sentinels, finiteness, units, plausible range, time bounds) then
run vectorised over the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np
import numpy.typing as npt
import pydantic_core
from pydantic import ValidationError

from devices.catalogue import (
    BY_CODE,
    BY_KIND,
    CATALOGUE,
    IEEE_11073_SPECIAL_VALUES,
    ValueType,
    VitalKind,
)
from devices.contract import ReadingsMessageV1, ReadingV1, RejectReason
from devices.fast_contract import FastMessage, FastReading, decode_fast, decode_fast_all
from devices.fhir_codes import is_fhir
from devices.fhir_input import FhirReading, FhirRejectedError, read_fhir
from devices.pairs import pair_digests

__all__ = ["Accepted", "DecodedBatch", "Decoder", "RawRecord", "Rejection", "reference_times_us"]

US_PER_MS = 1_000
Y2000_US = 946_684_800 * 1_000_000  # 2000-01-01T00:00:00Z in µs since the Unix epoch


class RawRecord(Protocol):
    """What the decoder needs of a Kafka record (aiokafka's ConsumerRecord fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...  # ms since the Unix epoch
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def content_type(self) -> str | None: ...  # the record's content-type header


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message, or one reading of it, that goes to the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    content_type: str | None
    reason: RejectReason
    detail: str
    reading_index: int | None = None  # None: the whole message
    message_id: str | None = None
    patient_id: str | None = None  # as the message says, when it was read that far
    device_id: str | None = None

    @classmethod
    def of(
        cls,
        record: RawRecord,
        reason: RejectReason,
        detail: str,
        reading_index: int | None = None,
        message_id: str | None = None,
        patient_id: str | None = None,
        device_id: str | None = None,
    ) -> Rejection:
        """The rejection of `record` (or of one of its readings)."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            record.content_type,
            reason,
            detail,
            reading_index,
            message_id,
            patient_id,
            device_id,
        )

    @classmethod
    def unknown_device(
        cls, record: RawRecord, patient_id: str, device_id: str, message_id: str | None
    ) -> Rejection:
        """The readings of a device that is not enrolled for the patient (the registry's
        verdict, after decoding): the whole message, or that device's part of a Bundle."""
        return cls.of(
            record,
            RejectReason.UNKNOWN_DEVICE,
            f"device {device_id!r} is not enrolled for patient {patient_id!r}",
            message_id=message_id,
            patient_id=patient_id,
            device_id=device_id,
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    """The accepted messages, as columns (one entry per message): which record each is,
    and whose readings it holds. Columns, not an object per message: they are cheap to
    build and cheap to send between processes."""

    record_index: npt.NDArray[np.int32]  # position of its record in the decoded sequence
    patient_id: list[str]
    device_id: list[str]
    message_id: list[str | None]
    reading_count: npt.NDArray[np.int32]
    # The pairs' digests (devices.pairs.pair_digests), by which the registry cache finds
    # them: computed where decoding runs, in a worker process beside the event loop.
    pair_digest: npt.NDArray[np.uint64]

    def __len__(self) -> int:
        return len(self.record_index)


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Accepted readings as columns, plus every rejection of the batch."""

    messages: Accepted
    message: npt.NDArray[np.int32]  # index into `messages`
    reading_index: npt.NDArray[np.int32]  # position in the message's `readings`
    kind: npt.NDArray[np.int16]  # catalogue code
    value: npt.NDArray[np.float64]  # canonical unit
    measured_at_us: npt.NDArray[np.int64]  # µs since the Unix epoch, UTC
    reference_us: npt.NDArray[np.int64]  # the record's reference time (the "now" it is judged by)
    rejections: list[Rejection]

    def __len__(self) -> int:
        return len(self.kind)


# Per-code lookup tables for the vectorised checks.
_MAX_CODE = max(v.code for v in CATALOGUE) + 1
_LOW = np.full(_MAX_CODE, np.nan)
_HIGH = np.full(_MAX_CODE, np.nan)
_VALUE_TYPE = np.zeros(_MAX_CODE, dtype=np.int8)
_TYPE_CODE = {ValueType.MEASUREMENT: 0, ValueType.GRADE: 1, ValueType.BOOLEAN: 2}
for _v in CATALOGUE:
    _LOW[_v.code], _HIGH[_v.code] = _v.low, _v.high
    _VALUE_TYPE[_v.code] = _TYPE_CODE[_v.value_type]
_SPECIAL = np.array(sorted(IEEE_11073_SPECIAL_VALUES))

# Every accepted (kind, unit) pair, numbered: the loop keeps one small integer per reading
# and numpy looks up the kind's code and the unit's conversion afterwards.
_UNIT_RULES: dict[tuple[VitalKind, str], int] = {}
_RULE_CODE_LIST: list[int] = []
_RULE_SCALE_LIST: list[float] = []
_RULE_OFFSET_LIST: list[float] = []
for _v in CATALOGUE:
    for _unit, _conversion in _v.units.items():
        _UNIT_RULES[(_v.kind, _unit)] = len(_RULE_CODE_LIST)
        _RULE_CODE_LIST.append(_v.code)
        _RULE_SCALE_LIST.append(_conversion.scale)
        _RULE_OFFSET_LIST.append(_conversion.offset)
_RULE_CODE = np.array(_RULE_CODE_LIST, dtype=np.int16)
_RULE_SCALE = np.array(_RULE_SCALE_LIST)
_RULE_OFFSET = np.array(_RULE_OFFSET_LIST)

# The contract's validator itself: skips model_validate_json's Python wrapper (hot loop).
_VALIDATE_JSON = ReadingsMessageV1.__pydantic_validator__.validate_json

# One structurally valid reading, as the loop collects it.
_ROW = np.dtype(
    [
        ("message", np.int32),
        ("reading", np.int32),
        ("rule", np.int16),
        ("raw", np.float64),
        ("is_bool", np.bool_),
        ("measured_at", np.int64),
    ]
)

# Vectorised checks in the order they apply; the first that fails names the reason.
_CHECK_ORDER = (
    RejectReason.NOT_AVAILABLE,
    RejectReason.NOT_FINITE,
    RejectReason.WRONG_TYPE,
    RejectReason.OUT_OF_RANGE,
    RejectReason.TIMESTAMP_TOO_OLD,
    RejectReason.TIMESTAMP_IN_FUTURE,
)
_FAR_PAST_US = -(2**62)
_FAR_FUTURE_US = 2**62

# (position in the message, reading)
_Readings = Iterable[tuple[int, ReadingV1 | FastReading | FhirReading]]


def reference_times_us(
    record_ms: npt.NDArray[np.int64], now_ms: int, future_tolerance_us: int
) -> npt.NDArray[np.int64]:
    """The "now" each record is judged against: its Kafka timestamp, unless absurd.

    Using the record timestamp makes validation deterministic on replay; a
    timestamp before 2000 or ahead of the consumer's clock (beyond the future
    tolerance) is not trusted: the clock is used instead.
    """
    record_us = record_ms * US_PER_MS
    now_us = now_ms * US_PER_MS
    trusted = (record_us >= Y2000_US) & (record_us <= now_us + future_tolerance_us)
    return np.where(trusted, record_us, now_us)


class Decoder:
    """Turns a batch of raw records into a `DecodedBatch`."""

    def __init__(self, *, max_message_bytes: int, future_tolerance_s: float) -> None:
        self._max_message_bytes = max_message_bytes
        self._future_tolerance_us = int(future_tolerance_s * 1_000_000)

    def decode(self, records: Sequence[RawRecord], now_ms: int) -> DecodedBatch:
        """Decode `records`; `now_ms` bounds record timestamps (see `reference_times_us`)."""
        messages = self._fast_messages(records)
        batch = None if messages is None else self._decode_all_fast(records, messages, now_ms)
        return batch if batch is not None else self._decode_each(records, now_ms, messages)

    def _fast_messages(self, records: Sequence[RawRecord]) -> list[FastMessage] | None:
        """Every record's message through the fast path, or None if one of them is not
        for it."""
        values = [r.value for r in records if r.value is not None]
        if not values or len(values) < len(records):
            return None
        if max(map(len, values)) > self._max_message_bytes:
            return None
        if any(is_fhir(r.content_type) for r in records if r.content_type is not None):
            return None
        return decode_fast_all(values)

    def _decode_all_fast(
        self, records: Sequence[RawRecord], messages: Sequence[FastMessage], now_ms: int
    ) -> DecodedBatch | None:
        """The usual poll, a column at a time: every record a message of the fast path,
        keyed by its patient, in units of the catalogue. None if one is not: the
        poll then goes a record at a time (`_decode_each`), where every fault is found
        and explained. Both give the same batch (tests/unit/test_decode_properties.py)."""
        patient_ids = [m.patient_id for m in messages]
        if [p.encode() for p in patient_ids] != [r.key for r in records]:
            return None
        counts = [len(m.readings) for m in messages]
        readings = [r for m in messages for r in m.readings]
        unit_rules = _UNIT_RULES
        rules = [unit_rules.get((r.kind, r.unit)) for r in readings]
        if None in rules:
            return None
        seconds = [r.measured_at.timestamp() for r in readings]  # aware: no overflow
        raw = [r.value for r in readings]
        device_ids = [m.device_id for m in messages]
        record_index = np.arange(len(messages), dtype=np.int32)
        reading_count = np.array(counts, np.int32)
        table = np.empty(len(readings), dtype=_ROW)
        table["message"] = np.repeat(record_index, reading_count)
        starts = np.cumsum(reading_count) - reading_count
        table["reading"] = np.arange(len(readings)) - np.repeat(starts, reading_count)
        table["rule"] = rules
        table["raw"] = raw
        table["is_bool"] = [v.__class__ is bool for v in raw]
        table["measured_at"] = np.rint(np.array(seconds) * 1_000_000)
        accepted = Accepted(
            record_index,
            patient_ids,
            device_ids,
            [m.message_id for m in messages],
            reading_count,
            pair_digests(patient_ids, device_ids),
        )
        references = reference_times_us(
            np.array([r.timestamp for r in records], np.int64), now_ms, self._future_tolerance_us
        )
        return self._check_domain(records, accepted, references, table, [])

    def _decode_each(
        self,
        records: Sequence[RawRecord],
        now_ms: int,
        messages: Sequence[FastMessage] | None = None,
    ) -> DecodedBatch:
        """Decode `records` one at a time (their `messages`, when the fast path has
        decoded every one already)."""
        record_indices: list[int] = []  # per accepted (message, device), and the next five too
        patient_ids: list[str] = []
        device_ids: list[str] = []
        message_ids: list[str | None] = []
        counts: list[int] = []
        record_times_ms: list[int] = []
        rejections: list[Rejection] = []
        rows: list[tuple[int, int, int, float, bool, int]] = []
        unit_rules = _UNIT_RULES
        for record_index, record in enumerate(records):
            if messages is None:
                validated = self._validate(record, rejections)
            else:
                validated = _upload(messages[record_index])
            if validated is None:
                continue
            patient_id, message_id, devices, faults = validated
            if record.key != patient_id.encode():
                rejections.append(
                    Rejection.of(
                        record,
                        RejectReason.KEY_MISMATCH,
                        f"record key {_show(record.key)} is not the message's patient_id "
                        f"{patient_id!r}",
                        message_id=message_id,
                        patient_id=patient_id,
                    )
                )
                continue
            for position, (reason, text) in faults:
                rejections.append(
                    Rejection.of(record, reason, text, position, message_id, patient_id)
                )
            for device_id, readings, count in devices:
                index = len(record_indices)
                record_indices.append(record_index)
                patient_ids.append(patient_id)
                device_ids.append(device_id)
                message_ids.append(message_id)
                counts.append(count)
                record_times_ms.append(record.timestamp)
                for position, reading in readings:
                    rule = unit_rules.get((reading.kind, reading.unit))
                    if rule is None:
                        rejections.append(
                            _unit_rejection(
                                record, position, reading, message_id, patient_id, device_id
                            )
                        )
                        continue
                    value = reading.value
                    try:
                        measured = round(reading.measured_at.timestamp() * 1_000_000)
                    except (OverflowError, ValueError):  # year 1 or 9999 shifted out of range
                        year = reading.measured_at.year
                        measured = _FAR_PAST_US if year < 2000 else _FAR_FUTURE_US
                    rows.append((index, position, rule, value, value.__class__ is bool, measured))
        accepted = Accepted(
            np.array(record_indices, np.int32),
            patient_ids,
            device_ids,
            message_ids,
            np.array(counts, np.int32),
            pair_digests(patient_ids, device_ids),
        )
        table = np.array(rows, dtype=_ROW)
        return self._check_domain(
            records,
            accepted,
            reference_times_us(
                np.array(record_times_ms, np.int64), now_ms, self._future_tolerance_us
            ),
            table,
            rejections,
        )

    # -- structural validation -------------------------------------------------------------

    def _validate(self, record: RawRecord, rejections: list[Rejection]) -> _Upload | None:
        """The message's readings by device and its faulty readings, or None when the whole
        message is rejected."""
        value = record.value
        if value is None:
            rejections.append(
                Rejection.of(record, RejectReason.INVALID_JSON, "record has no value")
            )
            return None
        if len(value) > self._max_message_bytes:
            rejections.append(
                Rejection.of(
                    record,
                    RejectReason.MESSAGE_TOO_LARGE,
                    f"{len(value)} bytes, limit {self._max_message_bytes}",
                )
            )
            return None
        if is_fhir(record.content_type):
            return _read_fhir(record, value, rejections)
        try:
            fast = decode_fast(value)
        except (msgspec.MsgspecError, UnicodeDecodeError):  # msgspec: bad UTF-8 in a string
            pass  # not necessarily invalid: the contract's own models decide, and explain
        else:
            return _upload(fast)
        try:
            m = _VALIDATE_JSON(value)
        except ValidationError as error:
            return _salvage(record, value, error, rejections)
        device = (m.device_id, enumerate(m.readings), len(m.readings))
        return m.patient_id, m.message_id, [device], []

    # -- vectorised domain checks ----------------------------------------------------------

    def _check_domain(
        self,
        records: Sequence[RawRecord],
        accepted: Accepted,
        references: npt.NDArray[np.int64],
        table: npt.NDArray[np.void],
        rejections: list[Rejection],
    ) -> DecodedBatch:
        rule = table["rule"]
        code = _RULE_CODE[rule]
        raw = table["raw"]
        is_bool = table["is_bool"]
        measured = table["measured_at"]
        message = table["message"]
        reading = table["reading"]
        ref = references[message] if len(message) else np.empty(0, np.int64)
        value_type = _VALUE_TYPE[code]
        with np.errstate(invalid="ignore", over="ignore"):
            value = raw * _RULE_SCALE[rule] + _RULE_OFFSET[rule]
            failed = {
                RejectReason.NOT_AVAILABLE: np.isin(raw, _SPECIAL) & ~is_bool,
                RejectReason.NOT_FINITE: ~np.isfinite(raw),
                RejectReason.WRONG_TYPE: ((value_type == 2) != is_bool)
                | ((value_type == 1) & (raw != np.floor(raw))),
                RejectReason.OUT_OF_RANGE: ~((value >= _LOW[code]) & (value <= _HIGH[code])),
                RejectReason.TIMESTAMP_TOO_OLD: measured < Y2000_US,
                RejectReason.TIMESTAMP_IN_FUTURE: measured > ref + self._future_tolerance_us,
            }
        reason = np.full(len(code), -1, dtype=np.int8)
        for number, name in enumerate(_CHECK_ORDER):
            reason[failed[name] & (reason < 0)] = number
        for row in np.flatnonzero(reason >= 0).tolist():
            which = int(message[row])
            why = _CHECK_ORDER[reason[row]]
            detail = _domain_detail(
                why,
                int(reading[row]),
                int(code[row]),
                float(raw[row]),
                float(value[row]),
                int(measured[row]),
                int(ref[row]),
            )
            rejections.append(
                Rejection.of(
                    records[accepted.record_index[which]],
                    why,
                    detail,
                    int(reading[row]),
                    accepted.message_id[which],
                    accepted.patient_id[which],
                    accepted.device_id[which],
                )
            )
        keep = reason < 0
        return DecodedBatch(
            messages=accepted,
            message=message[keep],
            reading_index=reading[keep],
            kind=code[keep],
            value=value[keep],
            measured_at_us=measured[keep],
            reference_us=ref[keep],
            rejections=rejections,
        )


_Fault = tuple[RejectReason, str]
# One device's (device_id, valid readings, reading count).
_Device = tuple[str, _Readings, int]
# (patient_id, message_id, devices, faulty readings)
_Upload = tuple[str, str | None, list[_Device], list[tuple[int, _Fault]]]


def _upload(message: FastMessage) -> _Upload:
    readings = message.readings
    device: _Device = (message.device_id, enumerate(readings), len(readings))
    return message.patient_id, message.message_id, [device], []


def _read_fhir(record: RawRecord, value: bytes, rejections: list[Rejection]) -> _Upload | None:
    try:
        upload = read_fhir(value)
    except FhirRejectedError as rejected:
        rejections.append(Rejection.of(record, rejected.reason, rejected.detail))
        return None
    devices: list[_Device] = [(d.device_id, d.readings, d.count) for d in upload.devices]
    faults = [(position, (reason, detail)) for position, reason, detail in upload.faults]
    return upload.patient_id, upload.message_id, devices, faults


def _salvage(
    record: RawRecord, value: bytes, error: ValidationError, rejections: list[Rejection]
) -> _Upload | None:
    """Keep the valid readings of a message whose only faults are in some readings."""
    errors = error.errors(include_url=False)
    envelope_errors = [e for e in errors if not _in_one_reading(e["loc"])]
    if envelope_errors:
        first = envelope_errors[0]
        rejections.append(Rejection.of(record, _reason_of(first), _describe(first)))
        return None
    by_reading: dict[int, list[Any]] = {}
    for e in errors:
        by_reading.setdefault(int(e["loc"][1]), []).append(e)
    raw = pydantic_core.from_json(value, allow_inf_nan=True)
    good: list[tuple[int, ReadingV1]] = []
    for position, item in enumerate(raw["readings"]):
        if position not in by_reading:
            reading_json = pydantic_core.to_json(item, inf_nan_mode="constants")
            good.append((position, ReadingV1.model_validate_json(reading_json)))
    bad = [(position, _reading_fault(errs)) for position, errs in sorted(by_reading.items())]
    device = (raw["device_id"], good, len(raw["readings"]))
    return raw["patient_id"], raw.get("message_id"), [device], bad


def _in_one_reading(loc: tuple[int | str, ...]) -> bool:
    return len(loc) >= 3 and loc[0] == "readings" and isinstance(loc[1], int)


def _reading_fault(errors: list[Any]) -> _Fault:
    first = errors[0]
    if first["loc"][2:3] == ("value",):
        return RejectReason.WRONG_TYPE, (
            f"{_where(first['loc'][:3])}: expected a number, or true/false for yes/no items, "
            f"got {_show_input(first['input'])}"
        )
    return _reason_of(first), _describe(first)


def _reason_of(error: Any) -> RejectReason:
    kind, loc = error["type"], error["loc"]
    if kind == "json_invalid":
        return RejectReason.INVALID_JSON
    if kind in ("model_type", "model_attributes_type") and loc == ():
        return RejectReason.NOT_AN_OBJECT
    if kind == "missing":
        return RejectReason.MISSING_FIELD
    if loc[:1] == ("schema_version",):
        return RejectReason.UNSUPPORTED_VERSION
    if loc == ("readings",) and kind == "too_short":
        return RejectReason.EMPTY_READINGS
    if kind == "enum" and loc[-1:] == ("kind",):
        return RejectReason.UNKNOWN_KIND
    if kind == "timezone_aware":
        return RejectReason.NAIVE_TIMESTAMP
    return RejectReason.WRONG_TYPE


def _describe(error: Any) -> str:
    where = _where(error["loc"])
    text = f"{where}: {error['msg']}" if where else str(error["msg"])
    if error["type"] not in ("json_invalid", "missing"):
        text += f", got {_show_input(error['input'])}"
    return text


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show_input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _show(key: bytes | None) -> str:
    return "(none)" if key is None else _show_input(key.decode("utf-8", "replace"))


def _units_of(kind: VitalKind) -> list[str]:
    return list(BY_KIND[kind].units)


def _unit_rejection(
    record: RawRecord,
    position: int,
    reading: ReadingV1 | FastReading | FhirReading,
    message_id: str | None,
    patient_id: str,
    device_id: str,
) -> Rejection:
    accepted = ", ".join(f"`{u}`" for u in _units_of(reading.kind))
    return Rejection.of(
        record,
        RejectReason.UNIT_NOT_CONVERTIBLE,
        f"readings[{position}]: unit {reading.unit!r} is not accepted for "
        f"{reading.kind.value} (accepted: {accepted})",
        position,
        message_id,
        patient_id,
        device_id,
    )


def _domain_detail(
    reason: RejectReason,
    position: int,
    code: int,
    raw: float,
    value: float,
    measured_us: int,
    ref_us: int,
) -> str:
    vital = BY_CODE[code]
    where = f"readings[{position}] ({vital.kind.value})"
    if reason is RejectReason.NOT_AVAILABLE:
        return f"{where}: value {raw:g} is the IEEE 11073 'not available' sentinel"
    if reason is RejectReason.NOT_FINITE:
        return f"{where}: value {raw} is not a finite number"
    if reason is RejectReason.WRONG_TYPE:
        expected = {
            ValueType.GRADE: "an integer grade 0-4",
            ValueType.BOOLEAN: "true or false",
            ValueType.MEASUREMENT: "a number",
        }[vital.value_type]
        return f"{where}: expected {expected}, got {raw:g}"
    if reason is RejectReason.OUT_OF_RANGE:
        return (
            f"{where}: {value:g} {vital.unit} is outside the plausible range "
            f"{vital.low:g}-{vital.high:g} {vital.unit}"
        )
    if reason is RejectReason.TIMESTAMP_TOO_OLD:
        return f"{where}: measured_at is before 2000-01-01"
    return (
        f"{where}: measured_at is {(measured_us - ref_us) / 1e6:.0f} s after the record timestamp"
    )
