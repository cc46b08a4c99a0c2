"""FHIR R4 input: an Observation, or a Bundle of Observations, as readings.

A record whose `content-type` header is `application/fhir+json` carries one
FHIR resource: an Observation (vital-signs profile, ANS "Mesures de santé",
HL7 Personal Health Device IG) or a Bundle (transaction, batch, collection or
searchset) whose Observation entries are the readings; its other entries
(Patient, Device, Flag...) are context and are not stored. All its
Observations concern one patient (`subject` = `Patient/<pseudonymous id>`, or
a logical reference whose identifier value is that id: the record key); each
names its device (`device`, likewise), and a Bundle may hold several devices'
readings. Blood pressure is the 85354-9
panel with its systolic and diastolic components.

`read_fhir` only maps structure and codes. The readings it returns then pass
the decoder's domain checks (sentinels, ranges, time bounds) like any others;
a problem with one Observation is a fault of that reading alone, with the
offending code or element named; a problem with the whole resource raises
`FhirRejectedError`. Readings are numbered in document order, a panel counting
one per component: that number is the `reading_index` of a dead letter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from devices.catalogue import BY_KIND, VitalKind, conversion_for
from devices.contract import RejectReason
from devices.fhir_codes import BP_PANEL_CODINGS, KIND_BY_CODING, UCUM

__all__ = ["DeviceReadings", "FhirReading", "FhirRejectedError", "FhirUpload", "read_fhir"]

R = RejectReason
_BUNDLE_TYPES = frozenset({"transaction", "batch", "collection", "searchset"})
_NOT_MEASURED = frozenset({"entered-in-error", "cancelled"})
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
_HAS_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T")
_MAX_MESSAGE_ID = 128


@dataclass(frozen=True, slots=True)
class FhirReading:
    """One value of an Observation, shaped as a contract-v1 reading for the decoder."""

    kind: VitalKind
    value: float | bool
    unit: str
    measured_at: datetime


@dataclass(slots=True)
class DeviceReadings:
    """One device's readings in the upload; `count` also counts its faulty ones."""

    device_id: str
    readings: list[tuple[int, FhirReading]] = field(default_factory=list)
    count: int = 0


@dataclass(frozen=True, slots=True)
class FhirUpload:
    patient_id: str
    message_id: str | None
    devices: list[DeviceReadings]
    faults: list[tuple[int, RejectReason, str]]  # (reading index, reason, detail)


class FhirRejectedError(Exception):
    """The whole resource is refused."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Fault(Exception):  # noqa: N818 - one reading's fault, reported as data
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_decode_json = msgspec.json.Decoder().decode


def read_fhir(raw: bytes) -> FhirUpload:
    """The readings of a FHIR Observation or Bundle; `FhirRejectedError` if it has none."""
    try:
        resource = _decode_json(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise FhirRejectedError(R.INVALID_JSON, f"not JSON: {error}") from None
    if not isinstance(resource, dict):
        raise FhirRejectedError(R.NOT_AN_OBJECT, "a FHIR resource is a JSON object")
    observations = _observations(resource)
    message_id = _message_id(resource)
    patient_id: str | None = None
    devices: dict[str, DeviceReadings] = {}
    faults: list[tuple[int, RejectReason, str]] = []
    unattributed = 0  # faults of Observations without a device
    position = 0
    for path, observation in observations:
        subject = _patient_of(observation, path)
        if patient_id is None:
            patient_id = subject
        elif subject != patient_id:
            raise FhirRejectedError(
                R.WRONG_TYPE,
                f"{path}.subject: Patient/{subject} is not Patient/{patient_id}: "
                "one patient per message",
            )
        device_id = _device_of(observation)
        group = None
        if device_id is not None:
            group = devices.setdefault(device_id, DeviceReadings(device_id))
        for item in _values_of(observation, path):
            if group is None and isinstance(item, FhirReading):
                item = _Fault(R.MISSING_FIELD, f"{path}.device: the measuring device is required")
            if isinstance(item, _Fault):
                faults.append((position, item.reason, item.detail))
            else:
                assert group is not None
                group.readings.append((position, item))
            if group is None:
                unattributed += 1
            else:
                group.count += 1
            position += 1
    if not devices:
        raise FhirRejectedError(R.MISSING_FIELD, "device: no Observation names its device")
    assert patient_id is not None
    first = next(iter(devices.values()))
    first.count += unattributed
    return FhirUpload(patient_id, message_id, list(devices.values()), faults)


def _observations(resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    kind = resource.get("resourceType")
    if kind == "Observation":
        return [("Observation", resource)]
    if kind is None:
        raise FhirRejectedError(R.MISSING_FIELD, "resourceType is missing")
    if kind != "Bundle":
        raise FhirRejectedError(
            R.WRONG_TYPE, f"resourceType {kind!r}: expected an Observation or a Bundle"
        )
    bundle_type = resource.get("type")
    if bundle_type not in _BUNDLE_TYPES:
        raise FhirRejectedError(
            R.WRONG_TYPE,
            f"Bundle.type {bundle_type!r}: expected one of {', '.join(sorted(_BUNDLE_TYPES))}",
        )
    entries = resource.get("entry", [])
    if not isinstance(entries, list):
        raise FhirRejectedError(R.WRONG_TYPE, "Bundle.entry is not an array")
    found = [
        (f"entry[{i}].resource", entry["resource"])
        for i, entry in enumerate(entries)
        if isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == "Observation"
    ]
    if not found:
        raise FhirRejectedError(R.EMPTY_READINGS, "the Bundle holds no Observation")
    return found


def _message_id(resource: dict[str, Any]) -> str | None:
    identifier = resource.get("identifier")
    if isinstance(identifier, list):  # Observation.identifier is a list, Bundle's is not
        identifier = identifier[0] if identifier else None
    value = identifier.get("value") if isinstance(identifier, dict) else None
    if not isinstance(value, str):
        value = resource.get("id")
    return value[:_MAX_MESSAGE_ID] if isinstance(value, str) and value else None


def _patient_of(observation: dict[str, Any], path: str) -> str:
    reference = _reference(observation.get("subject"), "Patient")
    if reference is None:
        raise FhirRejectedError(
            R.MISSING_FIELD, f"{path}.subject: a reference to Patient/<pseudonymous id>"
        )
    if not _ID.match(reference):
        raise FhirRejectedError(
            R.WRONG_TYPE, f"{path}.subject: {reference!r} is not a pseudonymous patient id"
        )
    return reference


def _device_of(observation: dict[str, Any]) -> str | None:
    reference = _reference(observation.get("device"), "Device")
    return reference if reference is not None and _ID.match(reference) else None


def _reference(value: Any, resource_type: str) -> str | None:
    """The id in a literal reference (`{"reference": ".../<resource_type>/<id>"}`) or the
    value of a logical one (`{"identifier": {"value": ...}}`); None if neither."""
    if not isinstance(value, dict):
        return None
    literal = value.get("reference")
    if isinstance(literal, str):
        before, separator, after = literal.rpartition(resource_type + "/")
        if not separator or (before and not before.endswith("/")):
            return None
        return after
    identifier = value.get("identifier")
    found = identifier.get("value") if isinstance(identifier, dict) else None
    return found if isinstance(found, str) else None


def _values_of(observation: dict[str, Any], path: str) -> Iterator[FhirReading | _Fault]:
    status = observation.get("status")
    if status in _NOT_MEASURED:
        yield _Fault(R.WRONG_TYPE, f"{path}.status {status!r}: not a measurement")
        return
    try:
        measured_at = _effective(observation, path)
        if not (set(_codings(observation.get("code"))) & BP_PANEL_CODINGS):
            yield _value(observation, path, measured_at)
            return
        components = observation.get("component")
        if not isinstance(components, list) or not components:
            raise _Fault(R.MISSING_FIELD, f"{path}.component: the blood-pressure panel has none")
    except _Fault as fault:
        yield fault
        return
    for j, component in enumerate(components):
        where = f"{path}.component[{j}]"
        if not isinstance(component, dict):
            yield _Fault(R.WRONG_TYPE, f"{where}: not an object")
            continue
        try:
            yield _value(component, where, measured_at)
        except _Fault as fault:
            yield fault


def _value(element: dict[str, Any], where: str, measured_at: datetime) -> FhirReading:
    """The reading of an Observation or of one of its components."""
    codings = _codings(element.get("code"))
    kind = next((KIND_BY_CODING[c] for c in codings if c in KIND_BY_CODING), None)
    if kind is None:
        shown = ", ".join(f"{s}|{c}" for s, c in codings) or "none"
        raise _Fault(R.UNKNOWN_KIND, f"{where}.code: no coding in the vital catalogue ({shown})")
    canonical = BY_KIND[kind].unit
    if "valueQuantity" in element:
        value, unit = _quantity(element["valueQuantity"], f"{where}.valueQuantity", kind)
        return FhirReading(kind, value, unit, measured_at)
    if "valueInteger" in element:
        number = element["valueInteger"]
        if not isinstance(number, int) or isinstance(number, bool):
            raise _Fault(R.WRONG_TYPE, f"{where}.valueInteger: {number!r} is not an integer")
        return FhirReading(kind, float(number), canonical, measured_at)
    if "valueBoolean" in element:
        answer = element["valueBoolean"]
        if not isinstance(answer, bool):
            raise _Fault(R.WRONG_TYPE, f"{where}.valueBoolean: {answer!r} is not true or false")
        return FhirReading(kind, answer, canonical, measured_at)
    if "dataAbsentReason" in element:
        reason = _codings(element["dataAbsentReason"])
        shown = reason[0][1] if reason else "given"
        raise _Fault(R.NOT_AVAILABLE, f"{where}: no value, dataAbsentReason {shown}")
    raise _Fault(R.MISSING_FIELD, f"{where}: no valueQuantity, valueInteger or valueBoolean")


def _quantity(quantity: Any, where: str, kind: VitalKind) -> tuple[float, str]:
    if not isinstance(quantity, dict):
        raise _Fault(R.WRONG_TYPE, f"{where}: not an object")
    value = quantity.get("value")
    if value is None:
        raise _Fault(R.MISSING_FIELD, f"{where}.value is missing")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Fault(R.WRONG_TYPE, f"{where}.value: {value!r} is not a number")
    system, unit = quantity.get("system", UCUM), quantity.get("code")
    if system != UCUM or not isinstance(unit, str):
        raise _Fault(
            R.UNIT_NOT_CONVERTIBLE,
            f"{where}: the unit must be a UCUM code (system {UCUM}), got "
            f"system {system!r} code {unit!r}",
        )
    if conversion_for(kind, unit) is None:
        accepted = ", ".join(f"`{u}`" for u in BY_KIND[kind].units)
        raise _Fault(
            R.UNIT_NOT_CONVERTIBLE,
            f"{where}: unit {unit!r} is not accepted for {kind.value} (accepted: {accepted})",
        )
    return float(value), unit


def _effective(observation: dict[str, Any], path: str) -> datetime:
    text = observation.get("effectiveDateTime", observation.get("effectiveInstant"))
    if text is None and isinstance(observation.get("effectivePeriod"), dict):
        text = observation["effectivePeriod"].get("start")
    if text is None:
        raise _Fault(R.MISSING_FIELD, f"{path}.effective[x]: when it was measured is required")
    if not isinstance(text, str):
        raise _Fault(R.WRONG_TYPE, f"{path}.effective[x]: {text!r} is not a dateTime")
    if not _HAS_TIME.match(text):
        raise _Fault(R.NAIVE_TIMESTAMP, f"{path}.effective[x]: {text!r} has no time of day")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Fault(R.WRONG_TYPE, f"{path}.effective[x]: {text!r} is not a dateTime") from None
    if moment.tzinfo is None:
        raise _Fault(R.NAIVE_TIMESTAMP, f"{path}.effective[x]: {text!r} has no UTC offset")
    return moment


def _codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return []
    return [
        (str(c.get("system")), str(c.get("code")))
        for c in concept["coding"]
        if isinstance(c, dict) and c.get("code") is not None
    ]
