"""A patient's data for a period, out: a FHIR R4 Bundle, or CSV.

The Bundle (`searchset`, as `Patient/$everything` answers) holds the Patient
(with its INS identifier and identity traits only when the reader may see
them), its Devices, one Observation per stored reading (a blood-pressure
panel for a systolic and diastolic pair of one device and time), and each
alert as a DetectedIssue with the Communication that told the care team.
Observations follow the FHIR vital-signs profiles and the ANS "Mesures de
santé" ones: LOINC and IEEE 11073 MDC codings, UCUM units, the device
reference, `meta.source`. Re-ingesting the Observations gives back the
same stored readings (tests/integration/test_fhir.py).

The same queries serve the API (as role telemon_api: row-level security keeps
each clinician to their teams' patients) and the CLI (as the owner).
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from alerts.model import Severity
from devices.catalogue import BY_CODE, BY_KIND, ValueType, VitalKind
from devices.fhir_codes import (
    BP_COMPONENT_KINDS,
    BP_PANEL,
    OBSERVATION_CATEGORY,
    UCUM,
    category_of,
    codings_of,
    profiles_of,
)
from devices.identity import IdentityStatus, InsIdentity, InsKind
from ingest.platform import Connection

__all__ = [
    "ExportedAlert",
    "ExportedReading",
    "PatientExport",
    "fhir_bundle",
    "load_export",
    "read_identity_as_clinician",
    "read_identity_as_operator",
    "readings_csv",
    "store_identity",
]

TELEMON = "https://telemon.example/fhir"
PATIENT_ID_SYSTEM = f"{TELEMON}/patient-id"
DEVICE_ID_SYSTEM = f"{TELEMON}/device-id"
READING_ID_SYSTEM = f"{TELEMON}/reading"
RULE_SYSTEM = f"{TELEMON}/CodeSystem/alert-rule"
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
CSV_COLUMNS = ("patient_id", "device_id", "kind", "loinc", "value", "unit", "measured_at")


@dataclass(frozen=True, slots=True)
class ExportedReading:
    device_id: str
    kind: VitalKind
    value: float  # in the catalogue's unit
    measured_at: datetime
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ExportedAlert:
    alert_id: int
    rule_id: str
    severity: Severity
    status: str
    first_fired_at: datetime
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    explanation: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PatientExport:
    patient_id: str
    programme: str
    start: datetime
    end: datetime
    devices: list[tuple[str, str]]  # (device_id, device_type)
    readings: list[ExportedReading]
    alerts: list[ExportedAlert]
    identity: InsIdentity | None = None


async def load_export(
    conn: Connection, patient_id: str, start: datetime, end: datetime
) -> PatientExport | None:
    """The patient's devices, readings measured in [start, end) and alerts first fired then;
    None if the patient is unknown (or, for the API's role, not of the clinician's teams)."""
    patient = await conn.fetchrow(
        "SELECT patient_key, programme FROM patients WHERE patient_id = $1", patient_id
    )
    if patient is None:
        return None
    key = patient["patient_key"]
    devices = await conn.fetch(
        "SELECT device_id, device_type FROM devices WHERE patient_key = $1 ORDER BY device_id", key
    )
    readings = await conn.fetch(
        """
        SELECT d.device_id, r.kind, r.value, r.measured_at, r.received_at
        FROM readings r JOIN devices d USING (device_key)
        WHERE r.patient_key = $1 AND r.measured_at >= $2 AND r.measured_at < $3
        ORDER BY r.measured_at, d.device_id, r.kind
        """,
        key,
        start,
        end,
    )
    alerts = await conn.fetch(
        """
        SELECT alert_id, rule_id, severity, status, first_fired_at, raised_at, acknowledged_at,
               acknowledged_by, resolved_at, resolved_by, resolution, explanation
        FROM alerts WHERE patient_key = $1 AND first_fired_at >= $2 AND first_fired_at < $3
        ORDER BY alert_id
        """,
        key,
        start,
        end,
    )
    return PatientExport(
        patient_id=patient_id,
        programme=patient["programme"],
        start=start,
        end=end,
        devices=[(d["device_id"], d["device_type"]) for d in devices],
        readings=[
            ExportedReading(
                r["device_id"],
                BY_CODE[r["kind"]].kind,
                r["value"],
                r["measured_at"],
                r["received_at"],
            )
            for r in readings
        ],
        alerts=[
            ExportedAlert(
                **{k: v for k, v in a.items() if k not in ("severity", "explanation")},
                severity=Severity(a["severity"]),
                explanation=json.loads(a["explanation"]),
            )
            for a in alerts
        ],
    )


# -- identity ------------------------------------------------------------------------------

_IDENTITY_COLUMNS = (
    "status, birth_family_name, first_names, birth_date, sex, birthplace_code, ins_matricule, "
    "ins_oid"
)


async def store_identity(conn: Connection, patient_id: str, identity: InsIdentity) -> bool:
    """Record (or replace) the patient's identity; False if the patient is unknown."""
    key = await conn.fetchval("SELECT patient_key FROM patients WHERE patient_id = $1", patient_id)
    if key is None:
        return False
    await conn.execute(
        f"""
        INSERT INTO patient_identities (patient_key, {_IDENTITY_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (patient_key) DO UPDATE SET (updated_at, {_IDENTITY_COLUMNS}) =
            (now(), $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        key,
        identity.status.value,
        identity.birth_family_name,
        identity.first_names,
        identity.birth_date,
        identity.sex,
        identity.birthplace_code,
        identity.ins_matricule,
        identity.ins_kind.value if identity.ins_kind else None,
    )
    return True


async def read_identity_as_operator(conn: Connection, patient_id: str) -> InsIdentity | None:
    """For the operator (the tables' owner, the CLI): the identity, with its audit record."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            SELECT {_IDENTITY_COLUMNS} FROM patient_identities
            JOIN patients USING (patient_key) WHERE patient_id = $1
            """,
            patient_id,
        )
        await conn.execute(
            """
            INSERT INTO audit_events (action, subtype, outcome, http_status, agent, source,
                                      entity, patient_id)
            VALUES ('R', 'identity.read', 0, 200, $1, 'telemon-cli', 'patient_identities', $2)
            """,
            f"operator:{getpass.getuser()}",
            patient_id,
        )
    return None if row is None else _identity(row)


async def read_identity_as_clinician(
    conn: Connection, patient_id: str, source: str
) -> tuple[bool, InsIdentity | None]:
    """For the clinician of the transaction (the API): (permitted, identity if recorded).
    The database checks the permission and writes the audit record (read_patient_identity)."""
    row = await conn.fetchrow("SELECT * FROM read_patient_identity($1, $2)", patient_id, source)
    assert row is not None
    if not row["permitted"] or row["status"] is None:
        return row["permitted"], None
    return True, _identity(row)


def _identity(row: Any) -> InsIdentity:
    oid = row["ins_oid"]
    return InsIdentity(
        status=IdentityStatus(row["status"]),
        birth_family_name=row["birth_family_name"],
        first_names=row["first_names"],
        birth_date=row["birth_date"],
        sex=row["sex"],
        birthplace_code=row["birthplace_code"],
        ins_matricule=row["ins_matricule"],
        ins_kind=InsKind(oid) if oid else None,
    )


# -- FHIR ----------------------------------------------------------------------------------


def fhir_bundle(export: PatientExport, *, base: str, source: str) -> dict[str, Any]:
    """The export as a FHIR R4 searchset Bundle; `base` makes the entries' full URLs."""
    resources = [
        _patient(export),
        *(_device(export.patient_id, d, t) for d, t in export.devices),
        *_observations(export, source),
    ]
    for alert in export.alerts:
        resources += [_detected_issue(export.patient_id, alert), _communication(export, alert)]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": _instant(datetime.now(UTC))},
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
        "effectiveDateTime": _instant(r.measured_at),
        "issued": _instant(r.received_at),
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


def _detected_issue(patient_id: str, alert: ExportedAlert) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": f"alert-{alert.alert_id}",
        "status": "preliminary" if alert.status == "open" else "final",
        "code": {"coding": [{"system": RULE_SYSTEM, "code": alert.rule_id}], "text": alert.rule_id},
        "severity": _ISSUE_SEVERITY[alert.severity],
        "patient": _patient_reference(patient_id),
        "identifiedDateTime": _instant(alert.first_fired_at),
        "detail": _summary(alert),
    }
    mitigation = [
        {"action": {"text": step}, "date": _instant(at), "author": {"display": who}}
        for step, at, who in (
            ("acknowledged", alert.acknowledged_at, alert.acknowledged_by),
            (
                f"resolved: {alert.resolution or ''}".rstrip(": "),
                alert.resolved_at,
                alert.resolved_by,
            ),
        )
        if at is not None and who is not None
    ]
    if mitigation:
        issue["mitigation"] = mitigation
    return issue


def _communication(export: PatientExport, alert: ExportedAlert) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "id": f"alert-{alert.alert_id}-notice",
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
        "priority": _PRIORITY[alert.severity],
        "subject": _patient_reference(export.patient_id),
        "about": [{"reference": f"DetectedIssue/alert-{alert.alert_id}"}],
        "sent": _instant(alert.raised_at),
        "payload": [{"contentString": _summary(alert)}],
    }


def _summary(alert: ExportedAlert) -> str:
    values = alert.explanation.get("values", {})
    shown = ", ".join(f"{k} {v}" for k, v in values.items()) if isinstance(values, dict) else ""
    return f"{alert.severity.label} alert {alert.rule_id}" + (f": {shown}" if shown else "")


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


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


# -- CSV -----------------------------------------------------------------------------------


def readings_csv(export: PatientExport) -> str:
    """One row per stored reading, in the catalogue's unit (UCUM), times in UTC."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in export.readings:
        vital = BY_KIND[r.kind]
        writer.writerow(
            (
                export.patient_id,
                r.device_id,
                r.kind.value,
                vital.loinc or "",
                repr(r.value),
                vital.unit,
                _instant(r.measured_at),
            )
        )
    return out.getvalue()
