"""A patient's data for a period as a FHIR R4 Bundle.

The Bundle (`searchset`, as `Patient/$everything` answers) holds the Patient
(with its INS identifier and identity traits only when the reader may see
them), its Devices, one Observation per stored reading (a blood-pressure
panel for a systolic and diastolic pair of one device and time), and each
episode as a DetectedIssue (its findings as evidence, its disposition as
mitigation) with the Communication that told the care team.
Observations follow the FHIR vital-signs profiles and the ANS "Mesures de
santé" ones: LOINC and IEEE 11073 MDC codings, UCUM units, the device
reference, `meta.source`. Re-ingesting the Observations gives back the
same stored readings (tests/integration/test_fhir.py).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from alerts.messages import Words
from alerts.model import Severity
from devices.catalogue import BY_KIND, ValueType, VitalKind
from devices.fhir_codes import (
    BP_COMPONENT_KINDS,
    BP_PANEL,
    OBSERVATION_CATEGORY,
    UCUM,
    category_of,
    codings_of,
    profiles_of,
)
from devices.identity import IdentityStatus
from ingest.export.patient import (
    ExportedEpisode,
    ExportedFinding,
    ExportedReading,
    PatientExport,
)

__all__ = ["fhir_bundle", "fhir_id", "instant"]

TELEMON = "https://telemon.example/fhir"
PATIENT_ID_SYSTEM = f"{TELEMON}/patient-id"
DEVICE_ID_SYSTEM = f"{TELEMON}/device-id"
READING_ID_SYSTEM = f"{TELEMON}/reading"
RULE_SYSTEM = f"{TELEMON}/CodeSystem/alert-rule"
JOB_SYSTEM = f"{TELEMON}/CodeSystem/episode-job"
DISPOSITION_SYSTEM = f"{TELEMON}/CodeSystem/episode-disposition"
# FHIR FR Core: identifier types (INS-NIR...) and the identity reliability extension.
FR_IDENTIFIER_TYPE = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
FR_IDENTITY_RELIABILITY = (
    "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
)
FR_IDENTITY_STATUS = (
    "https://mos.esante.gouv.fr/NOS/TRE_R352-StatutIdentite/FHIR/TRE-R352-StatutIdentite"
)
_STATUS_CODE = {
    IdentityStatus.PROVISIONAL: "PROV",
    IdentityStatus.RECOVERED: "RECUP",
    IdentityStatus.VALIDATED: "VALI",
    IdentityStatus.QUALIFIED: "QUAL",
}
_GENDER = {"M": "male", "F": "female", "I": "other"}
_ISSUE_SEVERITY = {Severity.RED: "high", Severity.ORANGE: "moderate", Severity.INFO: "low"}
_PRIORITY = {Severity.RED: "stat", Severity.ORANGE: "urgent", Severity.INFO: "routine"}
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def fhir_bundle(
    export: PatientExport, *, base: str, source: str, words: Words, timezone: ZoneInfo
) -> dict[str, Any]:
    """The export as a FHIR R4 searchset Bundle; `base` makes the entries' full URLs, and
    the episodes are worded in `words`' language."""
    resources = [
        _patient(export),
        *(_device(export.patient_id, d, t) for d, t in export.devices),
        *_observations(export, source),
    ]
    for episode in export.episodes:
        resources += [
            _detected_issue(export.patient_id, episode, words, timezone),
            _communication(export, episode, words, timezone),
        ]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(datetime.now(UTC))},
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{base.rstrip('/')}/{r['resourceType']}/{r['id']}", "resource": r}
            for r in resources
        ],
    }


def _patient(export: PatientExport) -> dict[str, Any]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": fhir_id(export.patient_id),
        "identifier": [{"system": PATIENT_ID_SYSTEM, "value": export.patient_id}],
    }
    identity = export.identity
    if identity is None:
        return patient
    if identity.ins_matricule and identity.ins_kind:
        patient["identifier"].append(
            {
                "use": "official",
                "type": {
                    "coding": [{"system": FR_IDENTIFIER_TYPE, "code": identity.ins_kind.label}]
                },
                "system": f"urn:oid:{identity.ins_kind.value}",
                "value": identity.ins_matricule,
            }
        )
    patient["extension"] = [
        {
            "url": FR_IDENTITY_RELIABILITY,
            "extension": [
                {
                    "url": "identityStatus",
                    "valueCoding": {
                        "system": FR_IDENTITY_STATUS,
                        "code": _STATUS_CODE[identity.status],
                    },
                }
            ],
        }
    ]
    patient["name"] = [
        {
            "use": "official",
            "family": identity.birth_family_name,
            "given": identity.first_names.split(),
        }
    ]
    patient["gender"] = _GENDER[identity.sex]
    patient["birthDate"] = identity.birth_date.isoformat()
    return patient


def _device(patient_id: str, device_id: str, device_type: str) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": fhir_id(device_id),
        "identifier": [{"system": DEVICE_ID_SYSTEM, "value": device_id}],
        "type": {"text": device_type},
        "patient": _patient_reference(patient_id),
    }


def _observations(export: PatientExport, source: str) -> Iterator[dict[str, Any]]:
    """One Observation per reading; a systolic and diastolic pair as one panel."""
    pairs: dict[tuple[str, datetime], dict[VitalKind, ExportedReading]] = {}
    for r in export.readings:
        if r.kind in BP_COMPONENT_KINDS:
            pairs.setdefault((r.device_id, r.measured_at), {})[r.kind] = r
    for r in export.readings:
        pair = pairs.get((r.device_id, r.measured_at), {}) if r.kind in BP_COMPONENT_KINDS else {}
        if len(pair) == 2:
            if r.kind is VitalKind.SYSTOLIC_BP:
                yield _panel(export.patient_id, pair, source)
            continue
        observation = _observation(export.patient_id, r, r.kind, source)
        observation.update(_value(r))
        yield observation


def _observation(
    patient_id: str, r: ExportedReading, kind: VitalKind, source: str, code: str | None = None
) -> dict[str, Any]:
    """An Observation of `r`, coded as `kind` (or named `code` in its id: a panel's)."""
    name = code or kind.value.replace("_", "-")
    reading_id = f"{r.device_id}.{name}.{int(r.measured_at.timestamp() * 1_000_000)}"
    category = category_of(kind)
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir_id(reading_id),  # the device's id may need hashing
        "meta": {"source": source},
        "identifier": [{"system": READING_ID_SYSTEM, "value": reading_id}],
        "status": "final",
        "category": [
            {"coding": [{"system": OBSERVATION_CATEGORY, "code": category}], "text": category}
        ],
        "code": {"coding": [c.as_fhir() for c in codings_of(kind)], "text": kind.value},
        "subject": _patient_reference(patient_id),
        "effectiveDateTime": instant(r.measured_at),
        "issued": instant(r.received_at),
        "device": _reference("Device", r.device_id, DEVICE_ID_SYSTEM),
    }
    profiles = profiles_of(kind)
    if profiles:
        observation["meta"]["profile"] = profiles
    return observation


def _panel(patient_id: str, pair: dict[VitalKind, ExportedReading], source: str) -> dict[str, Any]:
    systolic = pair[VitalKind.SYSTOLIC_BP]
    panel = _observation(patient_id, systolic, VitalKind.SYSTOLIC_BP, source, code="bp")
    panel["code"] = {"coding": [c.as_fhir() for c in BP_PANEL], "text": "blood pressure"}
    panel["component"] = [
        {
            "code": {"coding": [c.as_fhir() for c in codings_of(kind)], "text": kind.value},
            **_value(pair[kind]),
        }
        for kind in (VitalKind.SYSTOLIC_BP, VitalKind.DIASTOLIC_BP)
    ]
    return panel


def _value(r: ExportedReading) -> dict[str, Any]:
    vital = BY_KIND[r.kind]
    if vital.value_type is ValueType.GRADE:
        return {"valueInteger": round(r.value)}
    if vital.value_type is ValueType.BOOLEAN:
        return {"valueBoolean": r.value >= 0.5}
    return {
        "valueQuantity": {"value": r.value, "unit": vital.unit, "system": UCUM, "code": vital.unit}
    }


def _detected_issue(
    patient_id: str, episode: ExportedEpisode, words: Words, timezone: ZoneInfo
) -> dict[str, Any]:
    """An episode: its findings as evidence, what was done as mitigation."""
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": f"episode-{episode.episode_id}",
        "status": "preliminary" if episode.status != "resolved" else "final",
        "code": {
            "coding": [{"system": JOB_SYSTEM, "code": episode.job.value}],
            "text": words.section("job")[episode.job.value],
        },
        "severity": _ISSUE_SEVERITY[episode.severity],
        "patient": _patient_reference(patient_id),
        "identifiedDateTime": instant(episode.first_fired_at),
        "detail": _summary(episode, words, timezone),
        "evidence": [
            {
                "code": [
                    {
                        "coding": [{"system": RULE_SYSTEM, "code": f.rule_id}],
                        "text": words.rule_title(f.rule_id),
                    }
                ],
                "detail": [{"display": _said(f, words, timezone)}],
            }
            for f in episode.findings
        ],
    }
    mitigation = []
    if episode.acknowledged_at is not None and episode.acknowledged_by is not None:
        mitigation.append(
            {
                "action": {"text": words.section("status")["acknowledged"]},
                "date": instant(episode.acknowledged_at),
                "author": {"display": episode.acknowledged_by},
            }
        )
    if episode.resolved_at is not None and episode.resolved_by is not None:
        action: dict[str, Any] = {"text": words.section("status")["resolved"]}
        if episode.disposition is not None:
            label = words.section("disposition")[episode.disposition.value]
            action = {
                "coding": [{"system": DISPOSITION_SYSTEM, "code": episode.disposition.value}],
                "text": f"{label}: {episode.note}" if episode.note else label,
            }
        mitigation.append(
            {
                "action": action,
                "date": instant(episode.resolved_at),
                "author": {"display": episode.resolved_by},
            }
        )
    if mitigation:
        issue["mitigation"] = mitigation
    return issue


def _communication(
    export: PatientExport, episode: ExportedEpisode, words: Words, timezone: ZoneInfo
) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "id": f"episode-{episode.episode_id}-notice",
        "status": "completed",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                        "code": "alert",
                    }
                ]
            }
        ],
        "priority": _PRIORITY[episode.severity],
        "subject": _patient_reference(export.patient_id),
        "about": [{"reference": f"DetectedIssue/episode-{episode.episode_id}"}],
        "sent": instant(episode.opened_at),
        "payload": [{"contentString": _summary(episode, words, timezone)}],
    }


def _said(finding: ExportedFinding, words: Words, timezone: ZoneInfo) -> str:
    return words.finding(finding.explanation, finding.severity.label, timezone)


def _summary(episode: ExportedEpisode, words: Words, timezone: ZoneInfo) -> str:
    """The episode in one line: its severity, then each finding in clinical words."""
    said = "; ".join(_said(f, words, timezone) for f in episode.findings)
    return f"{words.section('severity')[episode.severity.label]}: {said}"


def fhir_id(text: str) -> str:
    """`text` if it is a valid FHIR id, else a stable one made from it. Pseudonymous ids
    may hold `_` and `:`, which FHIR ids may not: such resources are referenced by their
    identifier instead."""
    if _FHIR_ID.fullmatch(text):
        return text
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def _reference(resource_type: str, id_: str, system: str) -> dict[str, Any]:
    """A literal reference, or a logical one (by identifier) when `id_` is no FHIR id."""
    if _FHIR_ID.fullmatch(id_):
        return {"reference": f"{resource_type}/{id_}"}
    return {"type": resource_type, "identifier": {"system": system, "value": id_}}


def _patient_reference(patient_id: str) -> dict[str, Any]:
    return _reference("Patient", patient_id, PATIENT_ID_SYSTEM)


def instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()
