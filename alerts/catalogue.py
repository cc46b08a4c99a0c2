"""Every alert rule, with its source, severities, parameters and whether it may be disabled.

Sources and thresholds: docs/clinical.md §3. A parameter marked
`verified=False` is a design default ([U] there), configurable and never
presented as a published value. Versions change when a rule's logic changes;
an alert records the version that raised it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace

from alerts import missing, news2, thresholds, trends
from alerts.model import Job, Parameter, Rule, RuleKind, Severity
from alerts.protocol import MAX_EVERY_DAYS, MEASURES, Measure
from alerts.thresholds import GRADED, code
from devices.catalogue import VitalKind as K

__all__ = ["PATIENT_PARAMETERS", "RESOLVED_BY_DATA", "RULES"]

ORANGE, RED, INFO = Severity.ORANGE, Severity.RED, Severity.INFO
NAN = float("nan")


def P(  # noqa: N802
    default: float,
    unit: str,
    description: str,
    verified: bool = True,
    *,
    within: tuple[float, float],
    whole: bool = False,
) -> Parameter:
    return Parameter(default, unit, description, verified, within, whole)


def _yes_no(default: float, description: str, verified: bool = True) -> Parameter:
    return P(default, "", description, verified, within=(0, 1), whole=True)


# Parameters of the patient rather than of one rule, given to every rule.
PATIENT_PARAMETERS: Mapping[str, Parameter] = {
    "spo2_scale": P(
        1,
        "",
        "NEWS2 SpO2 scale: 1, or 2 for hypercapnic patients (target 88-92 %)",
        within=(1, 2),
        whole=True,
    ),
}

_NEWS2_SOURCE = "NEWS2, Royal College of Physicians 2017 [V]"


def _banded(
    id_: str,
    kind: K,
    title: str,
    source: str,
    *,
    red_low: float = NAN,
    orange_low: float = NAN,
    orange_high: float = NAN,
    red_high: float = NAN,
    evaluate: object,
) -> Rule:
    unit, span = BY_UNIT[kind]
    return Rule(
        id_,
        1,
        title,
        source,
        RuleKind.READING,
        frozenset({code(kind)}),
        (ORANGE, RED),
        {
            "red_at_or_below": P(red_low, unit, "red at or below", within=span),
            "orange_at_or_below": P(orange_low, unit, "orange at or below", within=span),
            "orange_at_or_above": P(orange_high, unit, "orange at or above", within=span),
            "red_at_or_above": P(red_high, unit, "red at or above", within=span),
        },
        evaluate,  # type: ignore[arg-type]
    )


def _confirmed(rule: Rule) -> Rule:
    """Version 2 of a banded rule: an isolated abnormal reading fires info until confirmed."""
    return replace(
        rule,
        version=2,
        severities=(INFO, *rule.severities),
        parameters={**rule.parameters, "confirm": CONFIRM},
    )


# Each banded kind's unit and the range its thresholds may take.
BY_UNIT: Mapping[K, tuple[str, tuple[float, float]]] = {
    K.RESPIRATORY_RATE: ("/min", (4, 60)),
    K.HEART_RATE: ("/min", (20, 250)),
    K.SYSTOLIC_BP: ("mm[Hg]", (50, 260)),
    K.BODY_TEMPERATURE: ("Cel", (30, 43)),
}
SPO2_SPAN = (50, 100)
GLUCOSE_SPAN = (20, 600)

_ALL_KINDS = frozenset(code(k) for k in K)

# Confirmation of an isolated abnormal reading (docs/alerts.md, "Confirmation"; docs/clinical.md
# §3A: NHS patient guidance to re-check a low reading [P]; the rest is ours [U]).
CONFIRM = _yes_no(1, "an isolated abnormal reading fires info until confirmed (1: yes)", False)
# The patient's usual SpO2: the threshold applies that far below it [U].
USUAL_SPO2 = {
    "below_usual_points": P(
        2,
        "%",
        "low only this far below the patient's usual SpO2 too",
        False,
        within=(0, 10),
    ),
    "usual_days": P(
        7, "d", "usual SpO2: the median of the previous days", False, within=(1, 30), whole=True
    ),
    "usual_min_readings": P(
        4, "", "readings needed for a usual SpO2", False, within=(1, 100), whole=True
    ),
}


def _codes(measure: Measure) -> frozenset[int]:
    return frozenset(code(k) for k in measure.kinds)


def _frequency(
    *,
    every_days: tuple[int, int] = (1, MAX_EVERY_DAYS),
    times: tuple[int, int] = (1, 4),
    due_hour: float,
    default_every_days: int = 1,
    default_times: int = 1,
) -> dict[str, Parameter]:
    """A measure's frequency (alerts.protocol): set by its programme's protocol, or by a
    prescription for one patient."""
    return {
        "every_days": P(
            default_every_days, "d", "due every this many days", within=every_days, whole=True
        ),
        "times": P(default_times, "", "data points expected each time", within=times, whole=True),
        "due_hour": P(due_hour, "h", "local hour of the due day they are due by", within=(1, 24)),
    }


def _measure_missing(
    id_: str, measure: str, title: str, source: str, *, red_after_periods: float = NAN
) -> Rule:
    """A prescribed measure not received in its period; red after some periods in a row
    (never, by default). These alerts cannot be disabled: the LATM arrêtés require them of
    every indication."""
    kinds = _codes(MEASURES[measure])
    return Rule(
        id_,
        2,
        title,
        source,
        RuleKind.SWEEP,
        kinds,
        (ORANGE, RED),
        {
            **_frequency(due_hour=24),
            "red_after_periods": P(
                red_after_periods,
                "",
                "red after this many periods in a row without",
                within=(1, 14),
                whole=True,
            ),
        },
        functools.partial(missing.measure_missing, measure=measure),
        disableable=False,
        resolved_by_kinds=kinds,
        job=Job.DATA,
        measure=measure,
    )


def _adherence(month: int) -> Rule:
    return Rule(
        f"adherence_m{month}",
        2,
        f"Adherence at month {month} at most 50 %",
        "Assurance Maladie: more than 50 % of the expected data at months 1 and 2 [V]",
        RuleKind.SWEEP,
        _ALL_KINDS,
        (ORANGE,),
        {
            "at_most_percent": P(
                50, "%", "of a prescribed measure's expected data, at most", within=(0, 100)
            )
        },
        missing.adherence_m1 if month == 1 else missing.adherence_m2,
        job=Job.DATA,
    )


_RULES = (
    # -- A. single-reading thresholds ---------------------------------------------------------
    Rule(
        "spo2_scale1",
        2,
        "SpO2 low (scale 1)",
        "NHS Oximetry@home [V]; NEWS2 [V]; re-check: NHS patient guidance [P]; usual SpO2 [U]",
        RuleKind.READING,
        frozenset({code(K.SPO2)}),
        (INFO, ORANGE, RED),
        {
            "red_at_or_below": P(92, "%", "red at or below", within=SPO2_SPAN),
            "orange_at_or_below": P(94, "%", "orange at or below", within=SPO2_SPAN),
            "confirm": CONFIRM,
            **USUAL_SPO2,
        },
        thresholds.spo2_scale1,
    ),
    Rule(
        "spo2_covid",
        2,
        "SpO2 below 95 % in the first days of COVID-19 follow-up",
        "HAS 2021 [V]; re-check: NHS patient guidance [P]; usual SpO2 [U]",
        RuleKind.READING,
        frozenset({code(K.SPO2)}),
        (INFO, RED),
        {
            "red_below": P(95, "%", "red below", within=SPO2_SPAN),
            "first_days": P(
                14, "d", "days of follow-up the profile applies to", within=(1, 366), whole=True
            ),
            "confirm": CONFIRM,
            **USUAL_SPO2,
        },
        thresholds.spo2_covid,
    ),
    Rule(
        "spo2_unconfirmed",
        1,
        "Low SpO2 not re-measured",
        "HAS 2021 [V]; re-check within an hour: NHS patient guidance [P]",
        RuleKind.SWEEP,
        frozenset({code(K.SPO2)}),
        (RED,),
        {
            "red_below": P(95, "%", "an isolated reading below", within=SPO2_SPAN),
            "within_minutes": P(60, "min", "not re-measured within", False, within=(5, 240)),
            "first_days": P(
                14, "d", "days of follow-up the profile applies to", within=(1, 366), whole=True
            ),
            **USUAL_SPO2,
        },
        thresholds.spo2_unconfirmed,
    ),
    Rule(
        "spo2_scale2",
        2,
        "SpO2 out of the target range (scale 2)",
        "NEWS2 scale 2 [V]; confirmation [U]",
        RuleKind.READING,
        frozenset({code(K.SPO2)}),
        (INFO, ORANGE, RED),
        {
            "red_at_or_below": P(83, "%", "red at or below", within=SPO2_SPAN),
            "orange_at_or_below": P(87, "%", "orange at or below", within=SPO2_SPAN),
            "orange_on_o2_at_or_above": P(
                93, "%", "orange at or above, on oxygen", within=SPO2_SPAN
            ),
            "red_on_o2_at_or_above": P(97, "%", "red at or above, on oxygen", within=SPO2_SPAN),
            "confirm": CONFIRM,
        },
        thresholds.spo2_scale2,
    ),
    _banded(
        "respiratory_rate",
        K.RESPIRATORY_RATE,
        "Respiratory rate",
        _NEWS2_SOURCE,
        red_low=8,
        orange_high=21,
        red_high=25,
        evaluate=thresholds.respiratory_rate,
    ),
    _confirmed(
        _banded(
            "heart_rate",
            K.HEART_RATE,
            "Heart rate",
            f"{_NEWS2_SOURCE}; confirmation [U]",
            red_low=40,
            orange_high=111,
            red_high=131,
            evaluate=thresholds.heart_rate,
        )
    ),
    _banded(
        "systolic_bp",
        K.SYSTOLIC_BP,
        "Systolic blood pressure",
        _NEWS2_SOURCE,
        red_low=90,
        orange_low=100,
        red_high=220,
        evaluate=thresholds.systolic_bp,
    ),
    _banded(
        "body_temperature",
        K.BODY_TEMPERATURE,
        "Temperature",
        "NEWS2 [V]; DNS COVID-19 questionnaire [V]",
        red_low=35.0,
        orange_high=39.0,
        evaluate=thresholds.temperature,
    ),
    Rule(
        "glucose",
        1,
        "Glucose out of range",
        "ADA hypoglycaemia levels [V]; diabetes arrêté [V]",
        RuleKind.READING,
        frozenset({code(K.GLUCOSE), code(K.GLUCOSE_CGM)}),
        (ORANGE, RED),
        {
            "red_below": P(54, "mg/dL", "red below (level 2 hypoglycaemia)", within=GLUCOSE_SPAN),
            "orange_below": P(70, "mg/dL", "orange below (level 1)", within=GLUCOSE_SPAN),
            "orange_above": P(
                250, "mg/dL", "orange above (target zone, physician-set)", within=GLUCOSE_SPAN
            ),
        },
        thresholds.glucose,
    ),
    Rule(
        "symptom_grade",
        1,
        "Symptom graded 3-4, or risen from 0 to 2",
        "DNS COVID-19 questionnaire [V]",
        RuleKind.READING,
        GRADED,
        (ORANGE,),
        {
            "orange_at_or_above": P(3, "{grade}", "orange at or above", within=(1, 4), whole=True),
            "rise_from_0_to": P(
                2, "{grade}", "orange when the previous answer was 0", within=(1, 4), whole=True
            ),
        },
        thresholds.symptom_grade,
    ),
    Rule(
        "breathless_at_rest",
        1,
        "Breathless at rest",
        "NEWS2 ACVPU [V]",
        RuleKind.READING,
        frozenset({code(K.BREATHLESS_AT_REST)}),
        (RED,),
        {},
        thresholds.breathless_at_rest,
    ),
    Rule(
        "new_confusion",
        1,
        "New confusion",
        "NEWS2 ACVPU [V]",
        RuleKind.READING,
        frozenset({code(K.NEW_CONFUSION)}),
        (RED,),
        {},
        thresholds.new_confusion,
    ),
    Rule(
        "callback_requested",
        1,
        "Call-back requested",
        "DNS COVID-19 questionnaire [V]",
        RuleKind.READING,
        frozenset({code(K.CALLBACK_REQUESTED)}),
        (ORANGE,),
        {},
        thresholds.callback_requested,
    ),
    # -- B. NEWS2 -------------------------------------------------------------------------------
    Rule(
        "news2",
        2,
        "NEWS2 aggregate score",
        f"{_NEWS2_SOURCE}; confirmation [U]",
        RuleKind.READING,
        news2.INPUTS,
        (INFO, ORANGE, RED),
        {
            "window_hours": P(
                6, "h", "each parameter's latest value within", False, within=(1, 24)
            ),
            "orange_at_or_above": P(5, "", "medium band", within=(1, 20), whole=True),
            "red_at_or_above": P(7, "", "high band", within=(1, 20), whole=True),
            "single_3_is_orange": _yes_no(1, "a single parameter at 3 is orange (1: yes)"),
            "low_band_is_info": _yes_no(0, "raise the low band (1-4) as info (1: yes)"),
            "confirm": CONFIRM,
        },
        news2.news2,
    ),
    Rule(
        "news2_rising",
        1,
        "NEWS2 rising over sessions",
        "NEWS2 scores [V]; the rise over the patient's own best [U]",
        RuleKind.READING,
        news2.INPUTS,
        (ORANGE,),
        {
            "window_hours": P(
                6, "h", "each parameter's latest value within", False, within=(1, 24)
            ),
            "rise_points": P(
                3,
                "",
                "SpO2, pulse, respiration, temperature scores up by",
                False,
                within=(1, 20),
                whole=True,
            ),
            "baseline_hours": P(
                48, "h", "over their lowest in the readings of the", False, within=(12, 168)
            ),
            "after_hours": P(
                8, "h", "previous hours, up to this many hours ago", False, within=(1, 48)
            ),
            "confirm": CONFIRM,
        },
        news2.news2_rising,
    ),
    # -- C. trends ------------------------------------------------------------------------------
    Rule(
        "hf_weight_gain_3d",
        1,
        "Weight gain over 3 days (heart failure)",
        "ESC-HFA patient guidance [V]; ICC arrêté, suspected decompensation [V]",
        RuleKind.READING,
        frozenset({code(K.BODY_WEIGHT)}),
        (ORANGE,),
        {
            "gain_kg": P(2, "kg", "more than this above the minimum of", within=(0.5, 10)),
            # 3 days, plus 2 h: a daily weight taken a little earlier 3 days ago still counts.
            "window_hours": P(
                74, "h", "the previous hours (3 days + 2 h slack)", False, within=(24, 168)
            ),
        },
        trends.hf_weight_gain,
    ),
    Rule(
        "weight_gain_24h",
        1,
        "Weight gain over 24 h",
        "design default [U]",
        RuleKind.READING,
        frozenset({code(K.BODY_WEIGHT)}),
        (INFO,),
        {
            "gain_kg": P(1, "kg", "more than this above the minimum of", False, within=(0.5, 10)),
            "window_hours": P(
                26, "h", "the previous hours (24 h + 2 h slack)", False, within=(12, 72)
            ),
        },
        trends.weight_gain_24h,
    ),
    Rule(
        "spo2_drop_baseline",
        2,
        "SpO2 below the patient's baseline",
        "design default [U]",
        RuleKind.READING,
        frozenset({code(K.SPO2)}),
        (ORANGE,),
        {
            "drop_points": P(
                3, "%", "the recent median at least this far below", False, within=(1, 20)
            ),
            "recent_hours": P(
                24, "h", "recent: the readings of the last hours", False, within=(1, 72)
            ),
            "baseline_days": P(
                7, "d", "the median of the days before", False, within=(1, 30), whole=True
            ),
            "min_readings": P(
                4, "", "readings needed for a baseline", False, within=(1, 100), whole=True
            ),
        },
        trends.spo2_drop_baseline,
    ),
    Rule(
        "baseline_deviation",
        1,
        "Vitals away from the patient's usual values",
        "design default [U]",
        RuleKind.READING,
        frozenset(
            code(k)
            for k in (K.SPO2, K.HEART_RATE, K.RESPIRATORY_RATE, K.BODY_TEMPERATURE, K.DYSPNOEA)
        ),
        (ORANGE,),
        {
            "spo2_step": P(
                1.5,
                "%",
                "a point per step of SpO2 under the usual (2 at most)",
                False,
                within=(0.5, 10),
            ),
            "pulse_step": P(
                8, "/min", "a point per step of pulse over the usual", False, within=(1, 50)
            ),
            "respiration_step": P(
                3, "/min", "a point per step of respiration over it", False, within=(1, 20)
            ),
            "temperature_step": P(
                0.5, "Cel", "a point per step of temperature over it", False, within=(0.1, 3)
            ),
            "dyspnoea_step": P(
                1,
                "{grade}",
                "a point per step of breathlessness over it",
                False,
                within=(1, 4),
                whole=True,
            ),
            "orange_at_or_above": P(
                3, "", "orange at or above this many points", False, within=(1, 10), whole=True
            ),
            "session_hours": P(
                2, "h", "the session: its best reading of the last hours", False, within=(0.5, 24)
            ),
            "baseline_days": P(
                7,
                "d",
                "usual: the median of the readings of the days",
                False,
                within=(1, 30),
                whole=True,
            ),
            "after_hours": P(4, "h", "before, up to this many hours ago", False, within=(1, 48)),
            "min_readings": P(
                4, "", "readings needed for a usual value", False, within=(1, 100), whole=True
            ),
        },
        trends.baseline_deviation,
    ),
    Rule(
        "ventilator_leak_3d",
        1,
        "Ventilator leak above threshold on consecutive days",
        "ANS référentiel, IRESP 9 [V]",
        RuleKind.READING,
        frozenset({code(K.VENTILATOR_LEAK)}),
        (ORANGE,),
        {
            "threshold_l_min": P(24, "L/min", "physician threshold", False, within=(1, 200)),
            "days": P(3, "d", "consecutive days", within=(3, 7), whole=True),
        },
        trends.ventilator_leak_days,
    ),
    Rule(
        "cgm_time_below_range",
        1,
        "CGM time below range",
        "International consensus on time in range [P]",
        RuleKind.READING,
        frozenset({code(K.GLUCOSE_CGM)}),
        (ORANGE,),
        {
            "below_percent": P(4, "%", "more than this share below 70 mg/dL", within=(0, 100)),
            "days": P(14, "d", "over the last days", within=(1, 14), whole=True),
            "min_readings": P(
                288,
                "",
                "readings needed (a day of 5-minute data)",
                False,
                within=(1, 4032),
                whole=True,
            ),
        },
        trends.cgm_time_below_range,
    ),
    # -- D. missing data and adherence (sweep) --------------------------------------------------
    Rule(
        "questionnaire_missed",
        2,
        "Questionnaire not completed",
        "DNS COVID-19 questionnaire [V]",
        RuleKind.SWEEP,
        _codes(MEASURES["questionnaire"]),
        (ORANGE,),
        {
            **_frequency(every_days=(1, 1), times=(1, 2), due_hour=24),
            "first_hour": P(9, "h", "first scheduled time (local)", False, within=(0, 23.5)),
            "second_hour": P(
                19, "h", "second scheduled time (local), when twice a day", False, within=(0, 23.5)
            ),
            "grace_hours": P(3, "h", "after the scheduled time", False, within=(0, 12)),
            "window_before_hours": P(4, "h", "answers this early count", False, within=(0, 12)),
        },
        missing.questionnaire_missed,
        resolved_by_kinds=_codes(MEASURES["questionnaire"]),
        job=Job.DATA,
        measure="questionnaire",
    ),
    _measure_missing(
        "hf_weight_missing",
        "weight",
        "No weight (heart failure)",
        "heart-failure arrêté: weight collected and transmitted daily [V]",
        red_after_periods=3,
    ),
    _measure_missing(
        "glucose_missing",
        "glucose",
        "No glucose transmitted",
        "diabetes arrêté: glucose transmitted at least weekly [V]",
    ),
    _measure_missing(
        "ventilation_missing",
        "ventilation",
        "No ventilator data",
        "respiratory-failure arrêté: ventilation data transmitted daily [V]",
    ),
    _measure_missing(
        "spo2_missing",
        "spo2",
        "No SpO2",
        "respiratory-failure arrêté: SpO2 transmitted daily [V]; COVID-19 follow-up [U]",
    ),
    Rule(
        "device_silent",
        1,
        "Device silent",
        "design default [U]",
        RuleKind.SWEEP,
        _ALL_KINDS,
        (INFO,),
        {
            "periods": P(
                2, "", "expected periods without a message", False, within=(1, 10), whole=True
            )
        },
        missing.device_silent,
        resolved_by_kinds=_ALL_KINDS,
        job=Job.DATA,
    ),
    _adherence(1),
    _adherence(2),
)

RULES: Mapping[str, Rule] = {rule.id: rule for rule in _RULES}

# The rules whose alerts data resolves, with the kind codes that do.
RESOLVED_BY_DATA: Mapping[str, frozenset[int]] = {
    rule.id: rule.resolved_by_kinds for rule in _RULES if rule.resolved_by_kinds
}
