"""NEWS2 (Royal College of Physicians, 2017), from each parameter's latest value.

CLINICAL.md §3B. Bands are closed on their upper bound ("21-24" is
20 < v <= 24), so a non-integer reading falls in exactly one band. Evaluated
for a patient when one of the seven parameters arrives (currently), at that
reading's time, over each parameter's latest value within the window (6 h by
default). A missing parameter leaves the score partial: it is still raised,
marked incomplete.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alerts.history import NO_TIME, kind_index
from alerts.model import Firings, RuleContext, Severity
from alerts.thresholds import code
from devices.catalogue import VitalKind as K

__all__ = ["COMPONENTS", "INPUTS", "news2", "score_components"]

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

INPUTS = frozenset(
    code(k)
    for k in (
        K.RESPIRATORY_RATE,
        K.SPO2,
        K.ON_OXYGEN,
        K.OXYGEN_FLOW,
        K.SYSTOLIC_BP,
        K.HEART_RATE,
        K.NEW_CONFUSION,
        K.BODY_TEMPERATURE,
    )
)
COMPONENTS = (
    "respiration",
    "spo2",
    "oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)


def score_respiration(v: F) -> F:
    return np.select([v <= 8, v <= 11, v <= 20, v <= 24], [3.0, 1.0, 0.0, 2.0], 3.0)


def score_spo2(v: F, scale: F, oxygen: B) -> F:
    scale1 = np.select([v <= 91, v <= 93, v <= 95], [3.0, 2.0, 1.0], 0.0)
    scale2 = np.select(
        [v <= 83, v <= 85, v <= 87, v <= 92, ~oxygen, v <= 94, v <= 96],
        [3.0, 2.0, 1.0, 0.0, 0.0, 1.0, 2.0],
        3.0,
    )
    return np.where(scale == 2, scale2, scale1)


def score_systolic(v: F) -> F:
    return np.select([v <= 90, v <= 100, v <= 110, v <= 219], [3.0, 2.0, 1.0, 0.0], 3.0)


def score_pulse(v: F) -> F:
    return np.select(
        [v <= 40, v <= 50, v <= 90, v <= 110, v <= 130], [3.0, 1.0, 0.0, 1.0, 2.0], 3.0
    )


def score_temperature(v: F) -> F:
    return np.select([v <= 35.0, v <= 36.0, v <= 38.0, v <= 39.0], [3.0, 1.0, 0.0, 1.0], 2.0)


def score_components(
    ctx: RuleContext, slot: npt.NDArray[np.int32], at: npt.NDArray[np.int64]
) -> dict[str, F]:
    """Each component's score for the given patients at the given times (NaN: no value)."""
    history = ctx.history
    since = at - (ctx.params["window_hours"][slot] * 3.6e9).astype(np.int64)

    def latest(kind: K) -> tuple[F, B]:
        k = kind_index(kind)
        time = history.last_time[slot, k]
        return history.last_value[slot, k], (time != NO_TIME) & (time > since)

    def scored(present: B, score: F) -> F:
        return np.where(present, score, np.nan)

    rr, rr_ok = latest(K.RESPIRATORY_RATE)
    spo2, spo2_ok = latest(K.SPO2)
    answer, answer_ok = latest(K.ON_OXYGEN)
    flow, flow_ok = latest(K.OXYGEN_FLOW)
    sbp, sbp_ok = latest(K.SYSTOLIC_BP)
    hr, hr_ok = latest(K.HEART_RATE)
    confused, confused_ok = latest(K.NEW_CONFUSION)
    temp, temp_ok = latest(K.BODY_TEMPERATURE)
    oxygen = (answer_ok & (answer == 1)) | (flow_ok & (flow > 0))
    scale = ctx.params["spo2_scale"][slot]
    return {
        "respiration": scored(rr_ok, score_respiration(rr)),
        "spo2": scored(spo2_ok, score_spo2(spo2, scale, oxygen)),
        "oxygen": scored(answer_ok | flow_ok, np.where(oxygen, 2.0, 0.0)),
        "systolic_bp": scored(sbp_ok, score_systolic(sbp)),
        "pulse": scored(hr_ok, score_pulse(hr)),
        "consciousness": scored(confused_ok, np.where(confused == 1, 3.0, 0.0)),
        "temperature": scored(temp_ok, score_temperature(temp)),
    }


def news2(ctx: RuleContext) -> Firings:
    rows = ctx.rows
    triggers = rows.current & np.isin(rows.kind, list(INPUTS))
    if not triggers.any():
        return Firings.none()
    slot, inverse = np.unique(rows.slot[triggers], return_inverse=True)
    at = np.full(len(slot), np.iinfo(np.int64).min)
    np.maximum.at(at, inverse, rows.measured_at[triggers])
    slot = slot.astype(np.int32)
    components = score_components(ctx, slot, at)
    scores = np.vstack([components[c] for c in COMPONENTS])
    total = np.nansum(scores, axis=0)
    present = (~np.isnan(scores)).sum(axis=0)
    any_three = (scores == 3).any(axis=0)
    p = {name: values[slot] for name, values in ctx.params.items()}
    severity = np.select(
        [
            total >= p["red_at_or_above"],
            (total >= p["orange_at_or_above"]) | (any_three & (p["single_3_is_orange"] == 1)),
            (total >= 1) & (p["low_band_is_info"] == 1),
        ],
        [Severity.RED, Severity.ORANGE, Severity.INFO],
        0,
    ).astype(np.int8)
    hit = severity > 0
    values = {
        "score": total,
        "complete": (present == len(COMPONENTS)).astype(np.float64),
        "parameters_present": present.astype(np.float64),
    }
    values.update({f"component_{c}": components[c] for c in COMPONENTS})
    return Firings(slot[hit], severity[hit], at[hit], {k: v[hit] for k, v in values.items()})
