"""Single-reading threshold rules (docs/clinical.md §3A): each a pure function of the batch.

Only current readings fire (a back-filled reading from yesterday updates the
history but does not raise a current-value alert). Bounds are per patient:
the engine hands each rule its parameters as arrays indexed by slot.

Confirmation (`confirm` = 1; docs/alerts.md): an abnormal oximeter reading whose
previous reading of the kind was normal is an isolated value, maybe an
artefact: it fires `info` ("re-measure asked", `confirmed` 0) instead of its
band's severity. The next reading confirms it (abnormal too: the band's
severity) or refutes it (normal: nothing more); `spo2_unconfirmed` (a sweep)
makes an isolated low SpO2 red when no re-measure followed in time. A first
reading, with none before it, is taken as it is. The SpO2 rules also know the
patient's usual SpO2 (`below_usual_points`): a reading under the threshold but
less than that far below the patient's own median is their usual, not a fall.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from alerts.history import (
    DAY_US,
    HOUR_US,
    NO_TIME,
    code_mask,
    index_of_code,
    kind_index,
    row_medians,
)
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
    "spo2_unconfirmed",
    "symptom_grade",
    "systolic_bp",
    "temperature",
]

RED, ORANGE, INFO, NONE = (
    np.int8(Severity.RED),
    np.int8(Severity.ORANGE),
    np.int8(Severity.INFO),
    np.int8(0),
)
F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


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


def _band_severity(ctx: RuleContext) -> npt.NDArray[np.int8]:
    """Red at or beyond the outer bounds, orange at or beyond the inner ones (NaN: none)."""
    v = ctx.rows.value
    with np.errstate(invalid="ignore"):
        red = (v <= _param(ctx, "red_at_or_below")) | (v >= _param(ctx, "red_at_or_above"))
        orange = (v <= _param(ctx, "orange_at_or_below")) | (v >= _param(ctx, "orange_at_or_above"))
    return np.where(red, RED, np.where(orange, ORANGE, NONE)).astype(np.int8)


def _banded(ctx: RuleContext, kind: VitalKind) -> Firings:
    rows = ctx.rows
    return fire(ctx, rows.current & (rows.kind == code(kind)), _band_severity(ctx))


def respiratory_rate(ctx: RuleContext) -> Firings:
    return _banded(ctx, VitalKind.RESPIRATORY_RATE)


def heart_rate(ctx: RuleContext) -> Firings:
    """NEWS2's pulse bands; an isolated high or low pulse (a moving hand) is confirmed first."""
    rows = ctx.rows
    severity = _band_severity(ctx)
    mine = rows.current & (rows.kind == code(VitalKind.HEART_RATE))
    previous, found = previous_reading(ctx, VitalKind.HEART_RATE, mine & (severity > 0))
    with np.errstate(invalid="ignore"):
        previous_abnormal = (
            (previous <= _param(ctx, "red_at_or_below"))
            | (previous >= _param(ctx, "red_at_or_above"))
            | (previous <= _param(ctx, "orange_at_or_below"))
            | (previous >= _param(ctx, "orange_at_or_above"))
        )
    isolated = (_param(ctx, "confirm") == 1) & found & ~previous_abnormal
    severity = np.where(isolated & (severity > 0), INFO, severity).astype(np.int8)
    return fire(ctx, mine, severity, previous=previous, confirmed=(~isolated).astype(np.float64))


def previous_reading(ctx: RuleContext, kind: VitalKind, wanted: B) -> tuple[F, B]:
    """Per row (of the `wanted` ones): the patient's reading of `kind` just before it (NaN
    and False where there is none, or where not wanted)."""
    previous = np.full(len(ctx.rows), np.nan)
    found = np.zeros(len(ctx.rows), np.bool_)
    rows = np.flatnonzero(wanted)
    if len(rows):
        ring = ctx.history.rings[kind_index(kind)]
        previous[rows], found[rows] = ring.latest_before(
            ctx.rows.slot[rows], ctx.rows.measured_at[rows]
        )
    return previous, found


def usual_spo2(
    ctx: RuleContext,
    slot: npt.NDArray[np.int32],
    at: npt.NDArray[np.int64],
    days: F,
    min_readings: F,
) -> F:
    """The median of each patient's SpO2 readings of the `days` before `at` (NaN with fewer
    than `min_readings`): their usual SpO2."""
    usual = np.full(len(slot), np.nan)
    if not len(slot):
        return usual
    start = at - (days * 24 * HOUR_US).astype(np.int64)
    values, inside = ctx.history.rings[kind_index(VitalKind.SPO2)].window(slot, start, at)
    enough = inside.sum(axis=1) >= min_readings
    if enough.any():
        usual[enough] = row_medians(values[enough], inside[enough])
    return usual


def _spo2_confirmed(
    ctx: RuleContext, mine: B, band: Callable[[F], npt.NDArray[np.int8]], personal: bool = True
) -> tuple[npt.NDArray[np.int8], dict[str, F]]:
    """Severities of SpO2 readings from their band (`band`: a value's severity by the fixed
    bounds), then the patient's usual SpO2 (if `personal`), then confirmation."""
    rows = ctx.rows
    fixed = band(rows.value)
    usual = np.full(len(rows), np.nan)
    margin = _param(ctx, "below_usual_points") if personal else usual
    check = np.flatnonzero(mine & (fixed > 0) & ~np.isnan(margin))
    if len(check):
        usual[check] = usual_spo2(
            ctx,
            rows.slot[check],
            rows.measured_at[check],
            _param(ctx, "usual_days")[check],
            _param(ctx, "usual_min_readings")[check],
        )

    def is_low(v: F) -> B:
        with np.errstate(invalid="ignore"):
            personal = np.isnan(usual) | (v <= usual - margin)
        return np.asarray((band(v) > 0) & personal)

    severity = np.where(is_low(rows.value), fixed, NONE).astype(np.int8)
    previous, found = previous_reading(ctx, VitalKind.SPO2, mine & (severity > 0))
    isolated = (_param(ctx, "confirm") == 1) & found & ~is_low(previous)
    severity = np.where(isolated & (severity > 0), INFO, severity).astype(np.int8)
    return severity, {
        "previous": previous,
        "usual": usual,
        "confirmed": (~isolated).astype(np.float64),
    }


def systolic_bp(ctx: RuleContext) -> Firings:
    return _banded(ctx, VitalKind.SYSTOLIC_BP)


def temperature(ctx: RuleContext) -> Firings:
    return _banded(ctx, VitalKind.BODY_TEMPERATURE)


def spo2_scale1(ctx: RuleContext) -> Firings:
    """SpO2 for patients on NEWS2 scale 1 (the default)."""
    rows = ctx.rows
    mine = rows.current & (rows.kind == code(VitalKind.SPO2)) & (_param(ctx, "spo2_scale") == 1)
    red, orange = _param(ctx, "red_at_or_below"), _param(ctx, "orange_at_or_below")

    def band(v: F) -> npt.NDArray[np.int8]:
        with np.errstate(invalid="ignore"):
            return np.where(v <= red, RED, np.where(v <= orange, ORANGE, NONE)).astype(np.int8)

    severity, values = _spo2_confirmed(ctx, mine, band)
    return fire(ctx, mine, severity, **values)


def on_oxygen(ctx: RuleContext) -> npt.NDArray[np.bool_]:
    """Per row: is the patient on oxygen (their latest answer, or an oxygen flow above 0)?"""
    history, slot = ctx.history, ctx.rows.slot
    answer, answered_at = history.latest[kind_index(VitalKind.ON_OXYGEN)].of(slot)
    flow, flow_at = history.latest[kind_index(VitalKind.OXYGEN_FLOW)].of(slot)
    said_yes = (answered_at != NO_TIME) & (answer == 1)
    flowing = (flow_at != NO_TIME) & (flow > 0)
    return np.asarray(said_yes | flowing, dtype=np.bool_)


def spo2_scale2(ctx: RuleContext) -> Firings:
    """SpO2 for patients on scale 2 (hypercapnic, target 88-92 %, physician-set)."""
    rows = ctx.rows
    mine = rows.current & (rows.kind == code(VitalKind.SPO2)) & (_param(ctx, "spo2_scale") == 2)
    oxygen = on_oxygen(ctx)

    def band(v: F) -> npt.NDArray[np.int8]:
        with np.errstate(invalid="ignore"):
            red = (v <= _param(ctx, "red_at_or_below")) | (
                oxygen & (v >= _param(ctx, "red_on_o2_at_or_above"))
            )
            orange = (v <= _param(ctx, "orange_at_or_below")) | (
                oxygen & (v >= _param(ctx, "orange_on_o2_at_or_above"))
            )
        return np.where(red, RED, np.where(orange, ORANGE, NONE)).astype(np.int8)

    severity, values = _spo2_confirmed(ctx, mine, band, personal=False)
    del values["usual"]
    return fire(ctx, mine, severity, on_oxygen=oxygen.astype(np.float64), **values)


def spo2_covid(ctx: RuleContext) -> Firings:
    """COVID-19 profile: SpO2 below 95 % in the first 14 days of follow-up is red."""
    rows = ctx.rows
    day = (rows.measured_at - ctx.history.enrolled_us[rows.slot]) / DAY_US
    mine = rows.current & (rows.kind == code(VitalKind.SPO2)) & (day < _param(ctx, "first_days"))
    below = _param(ctx, "red_below")

    def band(v: F) -> npt.NDArray[np.int8]:
        with np.errstate(invalid="ignore"):
            return np.where(v < below, RED, NONE).astype(np.int8)

    severity, values = _spo2_confirmed(ctx, mine, band)
    return fire(ctx, mine, severity, day_of_follow_up=np.floor(day), **values)


def spo2_unconfirmed(ctx: RuleContext) -> Firings:
    """Sweep: a patient's latest SpO2 is an isolated low reading (below `red_below` and, with
    a usual SpO2, `below_usual_points` under it; the reading before it was not low) and no
    re-measure has followed within `within_minutes`: red, at that deadline."""
    history = ctx.history
    slot = np.flatnonzero(history.active[: len(history)]).astype(np.int32)
    spo2 = kind_index(VitalKind.SPO2)
    value, at = history.latest[spo2].of(slot)
    p = ctx.params.of(slot)
    deadline = at + (p["within_minutes"] * 60e6).astype(np.int64)
    day = (at - history.enrolled_us[slot]) / DAY_US
    due = (at != NO_TIME) & (ctx.now_us[slot] >= deadline) & (value < p["red_below"])
    due &= day < p["first_days"]
    rows = np.flatnonzero(due)
    slot, at, value, deadline = slot[rows], at[rows], value[rows], deadline[rows]
    p = {name: column[rows] for name, column in p.items()}
    usual = np.full(len(rows), np.nan)
    check = np.flatnonzero(~np.isnan(p["below_usual_points"]))
    usual[check] = usual_spo2(
        ctx, slot[check], at[check], p["usual_days"][check], p["usual_min_readings"][check]
    )
    previous, found = history.rings[spo2].latest_before(slot, at)

    def is_low(v: F) -> B:
        with np.errstate(invalid="ignore"):
            personal = np.isnan(usual) | (v <= usual - p["below_usual_points"])
            return np.asarray((v < p["red_below"]) & personal)

    fired = is_low(value) & found & ~is_low(previous)
    return Firings(
        slot[fired],
        np.full(int(fired.sum()), RED, np.int8),
        deadline[fired],
        {
            "value": value[fired],
            "previous": previous[fired],
            "usual": usual[fired],
            "measured_at_s": at[fired] / 1e6,
        },
    )


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
        # The answer just before this one.
        previous[of_kind], _ = ring.latest_before(rows.slot[of_kind], rows.measured_at[of_kind])
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
