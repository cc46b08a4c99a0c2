"""Trend rules (docs/clinical.md §3C), in event time, over the history rings and day counts.

Windows are of measured_at, so a back-filled reading takes its place in the
trend; only current readings fire.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alerts.history import CGM_DAYS, DAY_US, HOUR_US, kind_index, row_medians
from alerts.model import Firings, RuleContext, Severity
from alerts.thresholds import code, fire
from devices.catalogue import VitalKind as K

__all__ = [
    "baseline_deviation",
    "cgm_time_below_range",
    "spo2_drop_baseline",
    "ventilator_leak_days",
    "weight_gain",
]

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
    """The median of the SpO2 readings of the last `recent_hours` (this one included; 0:
    this one alone) at least `drop_points` below the median of the `baseline_days` before."""
    rows = _current(ctx, K.SPO2)
    p = ctx.params.of(ctx.rows.slot[rows])
    slot, at = ctx.rows.slot[rows], ctx.rows.measured_at[rows]
    ring = ctx.history.rings[kind_index(K.SPO2)]
    recent_start = at - (p["recent_hours"] * HOUR_US).astype(np.int64)
    start = recent_start - (p["baseline_days"] * 24 * HOUR_US).astype(np.int64)
    median = np.full(len(rows), np.nan)
    recent_median = np.full(len(rows), np.nan)
    fired = np.zeros(len(rows), np.bool_)
    # Only rows with a baseline (enough readings before the recent hours) can fire: the
    # times alone are read first, the values only for them.
    based = np.flatnonzero(ring.count(slot, start, recent_start) >= p["min_readings"])
    if len(based):
        values, (recent, inside) = ring.windows(
            slot[based], (recent_start[based], at[based] + 1), (start[based], recent_start[based])
        )
        drop = p["drop_points"][based]
        # Medians are costly: only rows whose lowest recent value is that far below the
        # baseline's highest can fire, and only they need them.
        highest = np.where(inside, values, -np.inf).max(axis=1, initial=-np.inf)
        lowest = np.where(recent, values, np.inf).min(axis=1, initial=np.inf)
        possible = highest - lowest >= drop
        if possible.any():
            median[based[possible]] = row_medians(values[possible], inside[possible])
            recent_median[based[possible]] = row_medians(values[possible], recent[possible])
        with np.errstate(invalid="ignore"):
            fired[based] = possible & (median[based] - recent_median[based] >= drop)
    mask = np.zeros(len(ctx.rows), np.bool_)
    mask[rows[fired]] = True
    baseline = np.full(len(ctx.rows), np.nan)
    baseline[rows] = median
    recent_of = np.full(len(ctx.rows), np.nan)
    recent_of[rows] = recent_median
    return fire(
        ctx,
        mask,
        np.full(len(ctx.rows), ORANGE, np.int8),
        baseline_median=baseline,
        recent_median=recent_of,
    )


def ventilator_leak_days(ctx: RuleContext) -> Firings:
    """Leak above the threshold on each of the last N calendar days (UTC), today included."""
    rows = _current(ctx, K.VENTILATOR_LEAK)
    slot = ctx.rows.slot[rows]
    p = ctx.params.of(slot)
    ring = ctx.history.rings[kind_index(K.VENTILATOR_LEAK)]
    today = ctx.rows.measured_at[rows] // DAY_US
    values, times = ring.of(slot)
    day = times // DAY_US
    over = values > p["threshold_l_min"][:, None]
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
    days, below_by_day, total_by_day = history.cgm.of(slot)
    recent = (days > (today - np.minimum(p["days"], CGM_DAYS))[:, None]) & (days <= today[:, None])
    below = (below_by_day * recent).sum(axis=1)
    total = (total_by_day * recent).sum(axis=1)
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


# The vitals `baseline_deviation` weighs: (kind, parameter of its step, direction of worse).
_DEVIATIONS = (  # the SpO2 ring, the widest, last
    (K.HEART_RATE, "pulse_step", 1.0),
    (K.RESPIRATORY_RATE, "respiration_step", 1.0),
    (K.BODY_TEMPERATURE, "temperature_step", 1.0),
    (K.DYSPNOEA, "dyspnoea_step", 1.0),
    (K.SPO2, "spo2_step", -1.0),
)
_DEVIATION_CODES = np.array([code(kind) for kind, _, _ in _DEVIATIONS])


def baseline_deviation(ctx: RuleContext) -> Firings:
    """Each vital's latest session (its best reading of the last `session_hours`: a normal
    re-measure outweighs an artefact) against the patient's usual value (the median of the
    readings from `baseline_days` up to `after_hours` before): SpO2 under it, pulse,
    respiration and temperature over it, by one step (1 point) or two (2 points); orange at
    `orange_at_or_above` points in all."""
    rows = ctx.rows
    triggers = rows.current & np.isin(rows.kind, _DEVIATION_CODES)
    slot, inverse = np.unique(rows.slot[triggers], return_inverse=True)
    if not len(slot):
        return Firings.none()
    at = np.full(len(slot), np.iinfo(np.int64).min)
    np.maximum.at(at, inverse, rows.measured_at[triggers])
    slot = slot.astype(np.int32)
    p = ctx.params.of(slot)
    session_start = at - (p["session_hours"] * HOUR_US).astype(np.int64)
    baseline_end = at - (p["after_hours"] * HOUR_US).astype(np.int64)
    baseline_start = at - (p["baseline_days"] * 24 * HOUR_US).astype(np.int64)
    # Most patients cannot reach the points: bound each one's points by vital (the SpO2
    # ring, the widest, last), drop those who cannot reach them, then take medians.
    orange = p["orange_at_or_above"]
    bound = np.zeros(len(slot))
    left = 2.0 * len(_DEVIATIONS)  # the most points the vitals not bounded yet could give
    alive = np.arange(len(slot))
    windows = []
    for kind, step_name, worse in _DEVIATIONS:
        ring = ctx.history.rings[kind_index(kind)]
        # Without a reading of the vital in the session it gives no point: its ring is
        # gathered only for the patients with one (most are not measured for every vital).
        held = alive[ring.newest_of(slot[alive]) >= session_start[alive]]
        values, (now_in, inside) = ring.windows(
            slot[held],
            (session_start[held], at[held] + 1),
            (baseline_start[held], baseline_end[held]),
        )
        # In "worse" units (higher is worse): the session's best reading, and the
        # baseline's best, which bounds the deviation from its median.
        best = np.where(now_in, worse * values, np.inf).min(axis=1)
        lowest = np.where(inside, worse * values, np.inf).min(axis=1)
        enough = now_in.any(axis=1) & (inside.sum(axis=1) >= p["min_readings"][held])
        step = p[step_name][held]
        with np.errstate(invalid="ignore"):
            most = np.where(enough, best - lowest, -np.inf)
        bound[held] += (most >= step).astype(np.float64) + (most >= 2 * step)
        windows.append((held, values, inside, best, enough, step, worse))
        left -= 2
        alive = alive[bound[alive] + left >= orange[alive]]
    possible = np.zeros(len(slot), np.bool_)
    possible[alive] = True
    points = np.zeros(len(slot))
    deviation = {}
    for (kind, _, _), (held, values, inside, best, enough, step, worse) in zip(
        _DEVIATIONS, windows, strict=True
    ):
        d = np.full(len(slot), np.nan)
        mine = possible[held] & enough
        if mine.any():
            usual = row_medians(values[mine], inside[mine])
            found = best[mine] - worse * usual
            d[held[mine]] = found
            points[held[mine]] += (found >= step[mine]).astype(np.float64) + (
                found >= 2 * step[mine]
            )
        deviation[f"{kind.value}_deviation"] = d
    hit = possible & (points >= p["orange_at_or_above"])
    return Firings(
        slot[hit],
        np.full(int(hit.sum()), ORANGE, np.int8),
        at[hit],
        {"points": points[hit], **{k: v[hit] for k, v in deviation.items()}},
    )
