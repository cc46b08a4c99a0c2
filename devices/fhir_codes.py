"""FHIR R4 terminology of the vital catalogue: codings in, codings and profiles out.

Sources: docs/clinical.md §2 (LOINC, UCUM, IEEE 11073 MDC codes); the
FHIR R4 vital-signs profiles; the ANS IG "Mesures de santé" profiles
(interop.esante.gouv.fr/ig/fhir/mesures). Kinds without a LOINC code
(questionnaire items, ventilator figures) use telemon's own code system, which
names every kind by its contract string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from devices.catalogue import BY_KIND, CATALOGUE, ValueType, Vital, VitalKind

__all__ = [
    "BP_COMPONENT_KINDS",
    "BP_PANEL",
    "BP_PANEL_CODINGS",
    "FHIR_CONTENT_TYPE",
    "KIND_BY_CODING",
    "LOINC",
    "MDC",
    "OBSERVATION_CATEGORY",
    "TELEMON_KIND",
    "UCUM",
    "Coding",
    "category_of",
    "codings_of",
    "is_fhir",
    "profiles_of",
]

FHIR_CONTENT_TYPE = "application/fhir+json"
LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
TELEMON_KIND = "https://telemon.example/fhir/CodeSystem/vital-kind"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass(frozen=True, slots=True)
class Coding:
    system: str
    code: str
    display: str | None = None

    def as_fhir(self) -> dict[str, str]:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


# Blood pressure travels as this panel, systolic and diastolic as its components.
BP_PANEL = (Coding(LOINC, "85354-9", "Blood pressure panel"), Coding(MDC, "150020"))
BP_PANEL_CODINGS = frozenset((c.system, c.code) for c in BP_PANEL)
BP_COMPONENT_KINDS = frozenset({VitalKind.SYSTOLIC_BP, VitalKind.DIASTOLIC_BP})

# Codes accepted besides the catalogue's own (docs/clinical.md §2: "also", "oximeter pulse",
# "the ANS uses").
_ALSO: Mapping[VitalKind, tuple[Coding, ...]] = {
    VitalKind.SPO2: (Coding(LOINC, "2708-6"),),
    VitalKind.HEART_RATE: (Coding(MDC, "149530"),),
    VitalKind.GLUCOSE: (Coding(LOINC, "14743-9"), Coding(LOINC, "2345-7")),
}

_VITAL_SIGNS = "http://hl7.org/fhir/StructureDefinition/"
_MESURES = "https://interop.esante.gouv.fr/ig/fhir/mesures/StructureDefinition/"
_PROFILES: Mapping[VitalKind, tuple[str, ...]] = {
    VitalKind.SPO2: ("oxygensat", "mesures-fr-observation-oxygen-sat"),
    VitalKind.HEART_RATE: ("heartrate", "mesures-fr-observation-heartrate"),
    VitalKind.RESPIRATORY_RATE: ("resprate", "mesures-fr-observation-resp-rate"),
    VitalKind.BODY_TEMPERATURE: ("bodytemp", "mesures-fr-observation-body-temperature"),
    VitalKind.BODY_WEIGHT: ("bodyweight", "mesures-fr-observation-body-weight"),
    VitalKind.SYSTOLIC_BP: ("bp", "mesures-fr-observation-bp"),
    VitalKind.DIASTOLIC_BP: ("bp", "mesures-fr-observation-bp"),
    VitalKind.GLUCOSE: ("vitalsigns", "mesures-observation-glucose"),
}


def codings_of(kind: VitalKind) -> tuple[Coding, ...]:
    """The codings an exported Observation (or component) of `kind` carries, LOINC first."""
    vital = BY_KIND[kind]
    codings = []
    if vital.loinc:
        codings.append(Coding(LOINC, vital.loinc, _display(vital)))
    if vital.mdc:
        codings.append(Coding(MDC, str(vital.mdc)))
    codings.append(Coding(TELEMON_KIND, kind.value))
    return tuple(codings)


def profiles_of(kind: VitalKind) -> list[str]:
    """Canonical URLs of the profiles an exported Observation of `kind` claims."""
    names = _PROFILES.get(kind)
    if names is None:
        return []
    specific, ans = names
    base = [_VITAL_SIGNS + "vitalsigns"] if specific != "vitalsigns" else []
    return [*base, _VITAL_SIGNS + specific, _MESURES + ans]


def category_of(kind: VitalKind) -> str:
    """vital-signs for measurements, survey for questionnaire answers."""
    return "vital-signs" if BY_KIND[kind].value_type is ValueType.MEASUREMENT else "survey"


def is_fhir(content_type: str | None) -> bool:
    """Whether a record's content-type header says FHIR JSON (parameters allowed)."""
    return content_type is not None and content_type.split(";")[0].strip() == FHIR_CONTENT_TYPE


def _display(vital: Vital) -> str:
    return vital.kind.value.replace("_", " ").capitalize()


def _kinds_by_coding() -> dict[tuple[str, str], VitalKind]:
    table: dict[tuple[str, str], VitalKind] = {}
    for vital in CATALOGUE:
        for coding in (*codings_of(vital.kind), *_ALSO.get(vital.kind, ())):
            table[(coding.system, coding.code)] = vital.kind
    return table


KIND_BY_CODING: Mapping[tuple[str, str], VitalKind] = _kinds_by_coding()
