"""Trend rules (docs/clinical.md §3C), in event time, over the history rings and day counts.

Windows are of measured_at, so a back-filled reading takes its place in the
trend; only current readings fire.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alerts.history import CGM_DAYS, DAY_US, HOUR_US, kind_index
from alerts.model import Firings, RuleContext, Severity
from alerts.thresholds import code, fire
from devices.catalogue import VitalKind as K

__all__ = ["cgm_time_below_range", "spo2_drop_baseline", "ventilator_leak_days", "weight_gain"]

ORANGE, INFO, NONE = np.int8(Severity.ORANGE), np.int8(Severity.INFO), np.int8(0)


def _current(ctx: RuleContext, kind: K) -> npt.NDArray[np.intp]:
    rows = ctx.rows
    return np.flatnonzero(rows.current & (rows.kind == code(kind)))


def _window(
    ctx: RuleContext, kind: K, rows: npt.NDArray[np.intp], hours: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Ring values of each row's patient, and which lie in [t - hours, t)."""
    at = ctx.rows.measured_at[rows]
    start = at - (hours * HOUR_US).astype(np.int64)
    return ctx.history.rings[kind_index(kind)].window(ctx.rows.slot[rows], start, at)


def weight_gain(ctx: RuleContext, severity: np.int8) -> Firings:
    """Weight above the minimum of the previous hours by more than the gain."""
    rows = _current(ctx, K.BODY_WEIGHT)
    p = ctx.params.of(ctx.rows.slot[rows])
    values, inside = _window(ctx, K.BODY_WEIGHT, rows, p["window_hours"])
    lowest = np.where(inside, values, np.inf).min(axis=1)
    weight = ctx.rows.value[rows]
    fired = inside.any(axis=1) & (weight - lowest > p["gain_kg"])
    mask = np.zeros(len(ctx.rows), np.bool_)
    mask[rows[fired]] = True
    baseline = np.full(len(ctx.rows), np.nan)
    baseline[rows] = np.where(np.isinf(lowest), np.nan, lowest)
    return fire(ctx, mask, np.full(len(ctx.rows), severity, np.int8), minimum_before=baseline)


def hf_weight_gain(ctx: RuleContext) -> Firings:
    return weight_gain(ctx, ORANGE)


def weight_gain_24h(ctx: RuleContext) -> Firings:
    return weight_gain(ctx, INFO)


def spo2_drop_baseline(ctx: RuleContext) -> Firings:
    """SpO2 at least `drop` points below the median of the previous days' readings."""
    rows = _current(ctx, K.SPO2)
    p = ctx.params.of(ctx.rows.slot[rows])
    values, inside = _window(ctx, K.SPO2, rows, p["baseline_days"] * 24)
    drop = p["drop_points"]
    # The median is at most the window's highest value: only rows that far below it can
    # fire, and only they need a median (the costly part).
    highest = np.where(inside, values, -np.inf).max(axis=1, initial=-np.inf)
    possible = (inside.sum(axis=1) >= p["min_readings"]) & (highest - ctx.rows.value[rows] >= drop)
    median = np.full(len(rows), np.nan)
    if possible.any():
        median[possible] = _row_medians(values[possible], inside[possible])
    with np.errstate(invalid="ignore"):
        fired = possible & (median - ctx.rows.value[rows] >= drop)
    mask = np.zeros(len(ctx.rows), np.bool_)
    mask[rows[fired]] = True
    baseline = np.full(len(ctx.rows), np.nan)
    baseline[rows] = median
    return fire(ctx, mask, np.full(len(ctx.rows), ORANGE, np.int8), baseline_median=baseline)


def _row_medians(
    values: npt.NDArray[np.float64], inside: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Per row, the median of the values inside (every row has at least one)."""
    ordered = np.sort(np.where(inside, values, np.inf), axis=1)  # the others sort last
    count = inside.sum(axis=1)
    row = np.arange(len(values))
    return np.asarray((ordered[row, (count - 1) // 2] + ordered[row, count // 2]) / 2)


def ventilator_leak_days(ctx: RuleContext) -> Firings:
    """Leak above the threshold on each of the last N calendar days (UTC), today included."""
    rows = _current(ctx, K.VENTILATOR_LEAK)
    slot = ctx.rows.slot[rows]
    p = ctx.params.of(slot)
    ring = ctx.history.rings[kind_index(K.VENTILATOR_LEAK)]
    today = ctx.rows.measured_at[rows] // DAY_US
    day = ring.times.take(slot, axis=0) // DAY_US
    over = ring.values.take(slot, axis=0) > p["threshold_l_min"][:, None]
    consecutive = np.zeros(len(rows))
    fired = np.ones(len(rows), np.bool_)
    for back in range(int(p["days"].max(initial=0))):
        needed = back < p["days"]
        that_day = (day == (today - back)[:, None]) & over
        fired &= ~needed | that_day.any(axis=1)
        consecutive += needed & that_day.any(axis=1)
    mask = np.zeros(len(ctx.rows), np.bool_)
    mask[rows[fired & (p["days"] > 0)]] = True
    days_over = np.zeros(len(ctx.rows))
    days_over[rows] = consecutive
    return fire(ctx, mask, np.full(len(ctx.rows), ORANGE, np.int8), days_over=days_over)


def cgm_time_below_range(ctx: RuleContext) -> Firings:
    """Share of CGM readings below 70 mg/dL over the last days (today included) above a limit."""
    rows = _current(ctx, K.GLUCOSE_CGM)
    slot = ctx.rows.slot[rows]
    p = ctx.params.of(slot)
    history = ctx.history
    today = ctx.rows.measured_at[rows] // DAY_US
    days = history.cgm_day.take(slot, axis=0)
    recent = (days > (today - np.minimum(p["days"], CGM_DAYS))[:, None]) & (days <= today[:, None])
    below = (history.cgm_below.take(slot, axis=0) * recent).sum(axis=1)
    total = (history.cgm_total.take(slot, axis=0) * recent).sum(axis=1)
    share = np.where(total > 0, below / np.maximum(total, 1), 0.0)
    fired = (total >= p["min_readings"]) & (share * 100 > p["below_percent"])
    mask = np.zeros(len(ctx.rows), np.bool_)
    mask[rows[fired]] = True
    percent = np.full(len(ctx.rows), np.nan)
    percent[rows] = share * 100
    count = np.zeros(len(ctx.rows))
    count[rows] = total
    return fire(
        ctx, mask, np.full(len(ctx.rows), ORANGE, np.int8), percent_below=percent, readings=count
    )
