"""Every alert rule, with its source, severities, parameters and whether it may be disabled.

Sources and thresholds: docs/clinical.md §3. A parameter marked
`verified=False` is a design default ([U] there), configurable and never
presented as a published value. Versions change when a rule's logic changes;
an alert records the version that raised it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from alerts import missing, news2, thresholds, trends
from alerts.model import Job, Parameter, Rule, RuleKind, Severity
from alerts.thresholds import GRADED, code
from devices.catalogue import VitalKind as K

__all__ = ["PATIENT_PARAMETERS", "RESOLVED_BY_DATA", "RULES"]

ORANGE, RED, INFO = Severity.ORANGE, Severity.RED, Severity.INFO
NAN = float("nan")


def P(default: float, unit: str, description: str, verified: bool = True) -> Parameter:  # noqa: N802
    return Parameter(default, unit, description, verified)


# Parameters of the patient rather than of one rule, given to every rule.
PATIENT_PARAMETERS: Mapping[str, Parameter] = {
    "spo2_scale": P(1, "", "NEWS2 SpO2 scale: 1, or 2 for hypercapnic patients (target 88-92 %)"),
    "utc_offset_hours": P(0, "h", "the programme's UTC offset, set by the engine", False),
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
    return Rule(
        id_,
        1,
        title,
        source,
        RuleKind.READING,
        frozenset({code(kind)}),
        (ORANGE, RED),
        {
            "red_at_or_below": P(red_low, BY_UNIT[kind], "red at or below"),
            "orange_at_or_below": P(orange_low, BY_UNIT[kind], "orange at or below"),
            "orange_at_or_above": P(orange_high, BY_UNIT[kind], "orange at or above"),
            "red_at_or_above": P(red_high, BY_UNIT[kind], "red at or above"),
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


BY_UNIT = {
    K.RESPIRATORY_RATE: "/min",
    K.HEART_RATE: "/min",
    K.SYSTOLIC_BP: "mm[Hg]",
    K.BODY_TEMPERATURE: "Cel",
}

_QUESTIONNAIRE = frozenset(code(k) for k in missing.QUESTIONNAIRE_KINDS)
_ALL_KINDS = frozenset(code(k) for k in K)

# Confirmation of an isolated abnormal reading (docs/alerts.md, "Confirmation"; docs/clinical.md
# §3A: NHS patient guidance to re-check a low reading [P]; the rest is ours [U]).
CONFIRM = P(1, "", "an isolated abnormal reading fires info until confirmed (1: yes)", False)
# The patient's usual SpO2: the threshold applies that far below it [U].
USUAL_SPO2 = {
    "below_usual_points": P(
        2, "%", "low only this far below the patient's usual SpO2 too (NaN: off)", False
    ),
    "usual_days": P(7, "d", "usual SpO2: the median of the previous days", False),
    "usual_min_readings": P(4, "", "readings needed for a usual SpO2", False),
}

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
            "red_at_or_below": P(92, "%", "red at or below"),
            "orange_at_or_below": P(94, "%", "orange at or below"),
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
            "red_below": P(95, "%", "red below"),
            "first_days": P(14, "d", "days of follow-up the profile applies to"),
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
            "red_below": P(95, "%", "an isolated reading below"),
            "within_minutes": P(60, "min", "not re-measured within", False),
            "first_days": P(14, "d", "days of follow-up the profile applies to"),
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
            "red_at_or_below": P(83, "%", "red at or below"),
            "orange_at_or_below": P(87, "%", "orange at or below"),
            "orange_on_o2_at_or_above": P(93, "%", "orange at or above, on oxygen"),
            "red_on_o2_at_or_above": P(97, "%", "red at or above, on oxygen"),
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
            "red_below": P(54, "mg/dL", "red below (level 2 hypoglycaemia)"),
            "orange_below": P(70, "mg/dL", "orange below (level 1)"),
            "orange_above": P(250, "mg/dL", "orange above (target zone, physician-set)"),
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
            "orange_at_or_above": P(3, "{grade}", "orange at or above"),
            "rise_from_0_to": P(2, "{grade}", "orange when the previous answer was 0"),
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
            "window_hours": P(6, "h", "each parameter's latest value within", False),
            "orange_at_or_above": P(5, "", "medium band"),
            "red_at_or_above": P(7, "", "high band"),
            "single_3_is_orange": P(1, "", "a single parameter at 3 is orange (1: yes)"),
            "low_band_is_info": P(0, "", "raise the low band (1-4) as info (1: yes)"),
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
            "window_hours": P(6, "h", "each parameter's latest value within", False),
            "rise_points": P(3, "", "SpO2, pulse, respiration, temperature scores up by", False),
            "baseline_hours": P(48, "h", "over their lowest in the readings of the", False),
            "after_hours": P(8, "h", "previous hours, up to this many hours ago", False),
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
            "gain_kg": P(2, "kg", "more than this above the minimum of"),
            # 3 days, plus 2 h: a daily weight taken a little earlier 3 days ago still counts.
            "window_hours": P(74, "h", "the previous hours (3 days + 2 h slack)", False),
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
            "gain_kg": P(1, "kg", "more than this above the minimum of", False),
            "window_hours": P(26, "h", "the previous hours (24 h + 2 h slack)", False),
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
            "drop_points": P(3, "%", "the recent median at least this far below", False),
            "recent_hours": P(24, "h", "recent: the readings of the last hours", False),
            "baseline_days": P(7, "d", "the median of the days before", False),
            "min_readings": P(4, "", "readings needed for a baseline", False),
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
            "spo2_step": P(1.5, "%", "a point per step of SpO2 under the usual (2 at most)", False),
            "pulse_step": P(8, "/min", "a point per step of pulse over the usual", False),
            "respiration_step": P(3, "/min", "a point per step of respiration over it", False),
            "temperature_step": P(0.5, "Cel", "a point per step of temperature over it", False),
            "dyspnoea_step": P(1, "{grade}", "a point per step of breathlessness over it", False),
            "orange_at_or_above": P(3, "", "orange at or above this many points", False),
            "session_hours": P(2, "h", "the session: its best reading of the last hours", False),
            "baseline_days": P(7, "d", "usual: the median of the readings of the days", False),
            "after_hours": P(4, "h", "before, up to this many hours ago", False),
            "min_readings": P(4, "", "readings needed for a usual value", False),
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
            "threshold_l_min": P(24, "L/min", "physician threshold", False),
            "days": P(3, "d", "consecutive days (3 to 7)"),
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
            "below_percent": P(4, "%", "more than this share below 70 mg/dL"),
            "days": P(14, "d", "over the last days"),
            "min_readings": P(288, "", "readings needed (a day of 5-minute data)", False),
        },
        trends.cgm_time_below_range,
    ),
    # -- D. missing data and adherence (sweep) --------------------------------------------------
    Rule(
        "questionnaire_missed",
        1,
        "Questionnaire not completed",
        "DNS COVID-19 questionnaire [V]",
        RuleKind.SWEEP,
        _QUESTIONNAIRE,
        (ORANGE,),
        {
            "first_hour": P(9, "h", "first scheduled time (local)", False),
            "second_hour": P(NAN, "h", "second scheduled time (local), NaN if none", False),
            "grace_hours": P(3, "h", "after the scheduled time", False),
            "window_before_hours": P(4, "h", "answers this early count", False),
        },
        missing.questionnaire_missed,
        resolved_by_kinds=_QUESTIONNAIRE,
        job=Job.DATA,
    ),
    Rule(
        "hf_weight_missing",
        1,
        "No weight today (heart failure)",
        "ICC arrêté [V]",
        RuleKind.SWEEP,
        frozenset({code(K.BODY_WEIGHT)}),
        (ORANGE, RED),
        {
            "deadline_hour": P(12, "h", "local time by which the day's weight is due", False),
            "red_after_days": P(3, "d", "escalates after this many days in a row"),
        },
        missing.hf_weight_missing,
        disableable=False,
        resolved_by_kinds=frozenset({code(K.BODY_WEIGHT)}),
        job=Job.DATA,
    ),
    Rule(
        "glucose_missing",
        1,
        "No glucose transmitted",
        "diabetes arrêté [V]",
        RuleKind.SWEEP,
        frozenset({code(K.GLUCOSE), code(K.GLUCOSE_CGM)}),
        (ORANGE,),
        {"days": P(7, "d", "without a glucose reading")},
        missing.glucose_missing,
        disableable=False,
        resolved_by_kinds=frozenset({code(K.GLUCOSE), code(K.GLUCOSE_CGM)}),
        job=Job.DATA,
    ),
    Rule(
        "device_silent",
        1,
        "Device silent",
        "design default [U]",
        RuleKind.SWEEP,
        _ALL_KINDS,
        (INFO,),
        {"periods": P(2, "", "expected periods without a message", False)},
        missing.device_silent,
        resolved_by_kinds=_ALL_KINDS,
        job=Job.DATA,
    ),
    Rule(
        "adherence_m1",
        1,
        "Adherence at month 1 at most 50 %",
        "Assurance Maladie [V]",
        RuleKind.SWEEP,
        _ALL_KINDS,
        (ORANGE,),
        {"at_most_percent": P(50, "%", "days with data, at most")},
        missing.adherence_m1,
        job=Job.DATA,
    ),
    Rule(
        "adherence_m2",
        1,
        "Adherence at month 2 at most 50 %",
        "Assurance Maladie [V]",
        RuleKind.SWEEP,
        _ALL_KINDS,
        (ORANGE,),
        {"at_most_percent": P(50, "%", "days with data, at most")},
        missing.adherence_m2,
        job=Job.DATA,
    ),
)

RULES: Mapping[str, Rule] = {rule.id: rule for rule in _RULES}

# The rules whose alerts data resolves, with the kind codes that do.
RESOLVED_BY_DATA: Mapping[str, frozenset[int]] = {
    rule.id: rule.resolved_by_kinds for rule in _RULES if rule.resolved_by_kinds
}
