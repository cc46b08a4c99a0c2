"""Single-reading threshold rules (docs/clinical.md §3A): each a pure function of the batch.

Only current readings fire (a back-filled reading from yesterday updates the
history but does not raise a current-value alert). Bounds are per patient:
the engine hands each rule its parameters as arrays indexed by slot.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alerts.history import DAY_US, NO_TIME, code_mask, index_of_code, kind_index
from alerts.model import Firings, RuleContext, Severity
from devices.catalogue import BY_KIND, ValueType, VitalKind

__all__ = [
    "breathless_at_rest",
    "callback_requested",
    "code",
    "glucose",
    "heart_rate",
    "new_confusion",
    "on_oxygen",
    "respiratory_rate",
    "spo2_covid",
    "spo2_scale1",
    "spo2_scale2",
    "symptom_grade",
    "systolic_bp",
    "temperature",
]

RED, ORANGE, NONE = np.int8(Severity.RED), np.int8(Severity.ORANGE), np.int8(0)


def code(kind: VitalKind) -> int:
    return BY_KIND[kind].code


GRADED = frozenset(v.code for v in BY_KIND.values() if v.value_type is ValueType.GRADE)
_IS_GRADED = code_mask(GRADED)


def fire(
    ctx: RuleContext,
    mask: npt.NDArray[np.bool_],
    severity: npt.NDArray[np.int8],
    **values: npt.NDArray[np.float64],
) -> Firings:
    """The rows of `mask` that have a severity, with their explanation values."""
    hit = mask & (severity > 0)
    rows = ctx.rows
    return Firings(
        rows.slot[hit],
        severity[hit],
        rows.measured_at[hit],
        {"value": rows.value[hit], **{k: v[hit] for k, v in values.items()}},
    )


def _param(ctx: RuleContext, name: str) -> npt.NDArray[np.float64]:
    return ctx.params.value(name, ctx.rows.slot)


def _banded(ctx: RuleContext, kind: VitalKind) -> Firings:
    """Red at or beyond the outer bounds, orange at or beyond the inner ones (NaN: none)."""
    rows = ctx.rows
    v = rows.value
    with np.errstate(invalid="ignore"):
        red = (v <= _param(ctx, "red_at_or_below")) | (v >= _param(ctx, "red_at_or_above"))
        orange = (v <= _param(ctx, "orange_at_or_below")) | (v >= _param(ctx, "orange_at_or_above"))
    severity = np.where(red, RED, np.where(orange, ORANGE, NONE)).astype(np.int8)
    return fire(ctx, rows.current & (rows.kind == code(kind)), severity)


def respiratory_rate(ctx: RuleContext) -> Firings:
    return _banded(ctx, VitalKind.RESPIRATORY_RATE)


def heart_rate(ctx: RuleContext) -> Firings:
    return _banded(ctx, VitalKind.HEART_RATE)


def systolic_bp(ctx: RuleContext) -> Firings:
    return _banded(ctx, VitalKind.SYSTOLIC_BP)


def temperature(ctx: RuleContext) -> Firings:
    return _banded(ctx, VitalKind.BODY_TEMPERATURE)


def spo2_scale1(ctx: RuleContext) -> Firings:
    """SpO2 for patients on NEWS2 scale 1 (the default)."""
    rows = ctx.rows
    mine = rows.current & (rows.kind == code(VitalKind.SPO2)) & (_param(ctx, "spo2_scale") == 1)
    v = rows.value
    severity = np.where(
        v <= _param(ctx, "red_at_or_below"),
        RED,
        np.where(v <= _param(ctx, "orange_at_or_below"), ORANGE, NONE),
    )
    return fire(ctx, mine, severity.astype(np.int8))


def on_oxygen(ctx: RuleContext) -> npt.NDArray[np.bool_]:
    """Per row: is the patient on oxygen (their latest answer, or an oxygen flow above 0)?"""
    history, slot = ctx.history, ctx.rows.slot
    answer = kind_index(VitalKind.ON_OXYGEN)
    flow = kind_index(VitalKind.OXYGEN_FLOW)
    said_yes = (history.last_time[slot, answer] != NO_TIME) & (
        history.last_value[slot, answer] == 1
    )
    flowing = (history.last_time[slot, flow] != NO_TIME) & (history.last_value[slot, flow] > 0)
    return np.asarray(said_yes | flowing, dtype=np.bool_)


def spo2_scale2(ctx: RuleContext) -> Firings:
    """SpO2 for patients on scale 2 (hypercapnic, target 88-92 %, physician-set)."""
    rows = ctx.rows
    mine = rows.current & (rows.kind == code(VitalKind.SPO2)) & (_param(ctx, "spo2_scale") == 2)
    v = rows.value
    oxygen = on_oxygen(ctx)
    red = (v <= _param(ctx, "red_at_or_below")) | (
        oxygen & (v >= _param(ctx, "red_on_o2_at_or_above"))
    )
    orange = (v <= _param(ctx, "orange_at_or_below")) | (
        oxygen & (v >= _param(ctx, "orange_on_o2_at_or_above"))
    )
    severity = np.where(red, RED, np.where(orange, ORANGE, NONE)).astype(np.int8)
    return fire(ctx, mine, severity, on_oxygen=oxygen.astype(np.float64))


def spo2_covid(ctx: RuleContext) -> Firings:
    """COVID-19 profile: SpO2 below 95 % in the first 14 days of follow-up is red."""
    rows = ctx.rows
    day = (rows.measured_at - ctx.history.enrolled_us[rows.slot]) / DAY_US
    mine = rows.current & (rows.kind == code(VitalKind.SPO2)) & (day < _param(ctx, "first_days"))
    severity = np.where(rows.value < _param(ctx, "red_below"), RED, NONE).astype(np.int8)
    return fire(ctx, mine, severity, day_of_follow_up=np.floor(day))


def glucose(ctx: RuleContext) -> Firings:
    """Below 54 mg/dL red, below 70 orange, above 250 orange (target zone physician-set)."""
    rows = ctx.rows
    mine = rows.current & np.isin(rows.kind, [code(VitalKind.GLUCOSE), code(VitalKind.GLUCOSE_CGM)])
    v = rows.value
    severity = np.where(
        v < _param(ctx, "red_below"),
        RED,
        np.where(
            (v < _param(ctx, "orange_below")) | (v > _param(ctx, "orange_above")), ORANGE, NONE
        ),
    )
    return fire(ctx, mine, severity.astype(np.int8))


def symptom_grade(ctx: RuleContext) -> Firings:
    """A graded symptom at 3-4, or risen from 0 to 2 or more since the previous answer."""
    rows = ctx.rows
    mine = rows.current & _IS_GRADED[rows.kind]
    previous = np.full(len(rows), np.nan)
    for kind in GRADED:
        of_kind = np.flatnonzero(mine & (rows.kind == kind))
        if not len(of_kind):
            continue
        ring = ctx.history.rings[index_of_code(kind)]
        slot = rows.slot[of_kind]
        times = ring.times.take(slot, axis=0)
        before = np.where(times < rows.measured_at[of_kind, None], times, NO_TIME)
        latest = before.argmax(axis=1)  # the answer just before this one
        found = before[np.arange(len(of_kind)), latest] != NO_TIME
        previous[of_kind] = np.where(found, ring.values[slot, latest], np.nan)
    v = rows.value
    high = v >= _param(ctx, "orange_at_or_above")
    rise = (previous == 0) & (v >= _param(ctx, "rise_from_0_to"))
    severity = np.where(high | rise, ORANGE, NONE).astype(np.int8)
    return fire(ctx, mine, severity, previous=previous, kind=rows.kind.astype(np.float64))


def _yes(ctx: RuleContext, kind: VitalKind, severity: np.int8) -> Firings:
    rows = ctx.rows
    mine = rows.current & (rows.kind == code(kind))
    return fire(ctx, mine, np.where(rows.value == 1, severity, NONE).astype(np.int8))


def breathless_at_rest(ctx: RuleContext) -> Firings:
    return _yes(ctx, VitalKind.BREATHLESS_AT_REST, RED)


def new_confusion(ctx: RuleContext) -> Firings:
    return _yes(ctx, VitalKind.NEW_CONFUSION, RED)


def callback_requested(ctx: RuleContext) -> Firings:
    return _yes(ctx, VitalKind.CALLBACK_REQUESTED, ORANGE)
