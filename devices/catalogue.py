"""The vital catalogue: every kind a device may send, its units and codes.

Source: docs/clinical.md §2. Plausible ranges are [U] defaults there:
a value outside them is rejected as `out_of_range`, never clamped. The integer
`code` of a kind is what PostgreSQL stores (`readings.kind`); codes are never
reused or renumbered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "BY_CODE",
    "BY_KIND",
    "CATALOGUE",
    "IEEE_11073_SPECIAL_VALUES",
    "Conversion",
    "ValueType",
    "Vital",
    "VitalKind",
    "conversion_for",
]


class VitalKind(StrEnum):
    """The `kind` strings of the message contract."""

    SPO2 = "spo2"
    HEART_RATE = "heart_rate"
    RESPIRATORY_RATE = "respiratory_rate"
    BODY_TEMPERATURE = "body_temperature"
    BODY_WEIGHT = "body_weight"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"
    GLUCOSE = "glucose"
    GLUCOSE_CGM = "glucose_cgm"
    VENTILATOR_LEAK = "ventilator_leak"
    VENTILATOR_USAGE = "ventilator_usage"
    OXYGEN_FLOW = "oxygen_flow"
    # Questionnaire items graded 0 (none) to 4 (worst).
    DYSPNOEA = "dyspnoea"
    COUGH = "cough"
    FATIGUE = "fatigue"
    CHILLS = "chills"
    CHEST_PAIN = "chest_pain"
    ANXIETY = "anxiety"
    # Questionnaire items answered yes / no.
    BREATHLESS_AT_REST = "breathless_at_rest"
    NEW_CONFUSION = "new_confusion"
    CALLBACK_REQUESTED = "callback_requested"
    ON_OXYGEN = "on_oxygen"


class ValueType(StrEnum):
    MEASUREMENT = "measurement"  # a JSON number
    GRADE = "grade"  # an integer 0-4
    BOOLEAN = "boolean"  # true / false, stored as 1.0 / 0.0


@dataclass(frozen=True, slots=True)
class Conversion:
    """value_in_canonical_unit = value * scale + offset."""

    scale: float
    offset: float = 0.0

    def apply(self, value: float) -> float:
        return value * self.scale + self.offset


_IDENTITY = Conversion(1.0)
_MMHG_PER_KPA = 7.500_616_827  # 1 kPa = 7.500 616 827 mm[Hg]
_MGDL_PER_MMOLL_GLUCOSE = 18.015_6  # molar mass of glucose 180.156 g/mol


@dataclass(frozen=True, slots=True)
class Vital:
    code: int
    kind: VitalKind
    unit: str  # canonical UCUM unit, the one stored
    value_type: ValueType
    low: float  # plausible range, canonical unit, inclusive
    high: float
    loinc: str | None = None
    mdc: int | None = None  # IEEE 11073-10101 MDC code
    other_units: Mapping[str, Conversion] = field(default_factory=dict)

    @property
    def units(self) -> Mapping[str, Conversion]:
        """Every accepted unit and how it converts to the canonical one."""
        return {self.unit: _IDENTITY, **self.other_units}


def _graded(code: int, kind: VitalKind) -> Vital:
    return Vital(code, kind, "{grade}", ValueType.GRADE, 0, 4)


def _yes_no(code: int, kind: VitalKind) -> Vital:
    return Vital(code, kind, "{boolean}", ValueType.BOOLEAN, 0, 1)


_M = ValueType.MEASUREMENT
_K = VitalKind

CATALOGUE: tuple[Vital, ...] = (
    Vital(1, _K.SPO2, "%", _M, 50, 100, "59408-5", 150456),
    Vital(2, _K.HEART_RATE, "/min", _M, 20, 250, "8867-4", 147842),
    Vital(3, _K.RESPIRATORY_RATE, "/min", _M, 3, 60, "9279-1", 151562),
    Vital(
        4,
        _K.BODY_TEMPERATURE,
        "Cel",
        _M,
        30,
        43,
        "8310-5",
        150364,
        {"[degF]": Conversion(5 / 9, -160 / 9)},
    ),
    Vital(
        5,
        _K.BODY_WEIGHT,
        "kg",
        _M,
        2,
        400,
        "29463-7",
        188736,
        {"g": Conversion(0.001), "[lb_av]": Conversion(0.453_592_37)},
    ),
    Vital(
        6,
        _K.SYSTOLIC_BP,
        "mm[Hg]",
        _M,
        50,
        300,
        "8480-6",
        150021,
        {"kPa": Conversion(_MMHG_PER_KPA)},
    ),
    Vital(
        7,
        _K.DIASTOLIC_BP,
        "mm[Hg]",
        _M,
        20,
        200,
        "8462-4",
        150022,
        {"kPa": Conversion(_MMHG_PER_KPA)},
    ),
    Vital(
        8,
        _K.GLUCOSE,
        "mg/dL",
        _M,
        10,
        1000,
        "41653-7",
        160184,
        {"mmol/L": Conversion(_MGDL_PER_MMOLL_GLUCOSE)},
    ),
    Vital(
        9,
        _K.GLUCOSE_CGM,
        "mg/dL",
        _M,
        10,
        1000,
        "99504-3",
        None,
        {"mmol/L": Conversion(_MGDL_PER_MMOLL_GLUCOSE)},
    ),
    # Respiratory-failure devices (docs/clinical.md §1, droit commun); ranges [U].
    Vital(10, _K.VENTILATOR_LEAK, "L/min", _M, 0, 200),
    Vital(11, _K.VENTILATOR_USAGE, "h", _M, 0, 24),
    Vital(12, _K.OXYGEN_FLOW, "L/min", _M, 0, 15, "3151-8"),
    _graded(20, _K.DYSPNOEA),
    _graded(21, _K.COUGH),
    _graded(22, _K.FATIGUE),
    _graded(23, _K.CHILLS),
    _graded(24, _K.CHEST_PAIN),
    _graded(25, _K.ANXIETY),
    _yes_no(40, _K.BREATHLESS_AT_REST),
    _yes_no(41, _K.NEW_CONFUSION),
    _yes_no(42, _K.CALLBACK_REQUESTED),
    _yes_no(43, _K.ON_OXYGEN),
)

BY_KIND: Mapping[VitalKind, Vital] = {v.kind: v for v in CATALOGUE}
BY_CODE: Mapping[int, Vital] = {v.code: v for v in CATALOGUE}

# IEEE 11073-20601 32-bit FLOAT special values (NaN = "not available",
# NRes, +INF, -INF, reserved). Gateways that forward the raw mantissa send
# these as numbers; they are never measurements.
IEEE_11073_SPECIAL_VALUES: frozenset[float] = frozenset(
    {8_388_607.0, -8_388_608.0, 8_388_606.0, -8_388_606.0, -8_388_607.0}
)

_CONVERSIONS: Mapping[tuple[VitalKind, str], tuple[Vital, Conversion]] = {
    (vital.kind, unit): (vital, conversion)
    for vital in CATALOGUE
    for unit, conversion in vital.units.items()
}


def conversion_for(kind: VitalKind, unit: str) -> tuple[Vital, Conversion] | None:
    """The vital and the conversion to its canonical unit, or None if `unit` is not accepted."""
    return _CONVERSIONS.get((kind, unit))
