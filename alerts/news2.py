"""NEWS2 (Royal College of Physicians, 2017), from each parameter's latest value.

docs/clinical.md §3B. Bands are closed on their upper bound ("21-24" is
20 < v <= 24), so a non-integer reading falls in exactly one band. Evaluated
for a patient when one of the seven parameters arrives (currently), at that
reading's time, over each parameter's latest value within the window (6 h by
default). A missing parameter leaves the score partial: it is still raised,
marked incomplete.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from alerts.history import NEWS2_KINDS, NO_TIME, code_mask, kind_index
from alerts.model import Firings, RuleContext, Scores, Severity
from alerts.thresholds import code

__all__ = ["COMPONENTS", "INPUTS", "news2", "score_components"]

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

INPUTS = frozenset(code(k) for k in NEWS2_KINDS)
_IS_INPUT = code_mask(INPUTS)
_COLUMNS = slice(0, len(NEWS2_KINDS))  # History puts them first in last_value and last_time
assert [kind_index(k) for k in NEWS2_KINDS] == list(range(len(NEWS2_KINDS)))
COMPONENTS = (
    "respiration",
    "spo2",
    "oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)


def _banded(upper_bounds: tuple[float, ...], scores: tuple[float, ...]) -> Callable[[F], F]:
    """Score by band, bands closed on their upper bound: v <= bounds[0] scores scores[0],
    ..., v above every bound scores scores[-1]."""
    bounds, table = np.array(upper_bounds), np.array(scores)

    def score(v: F) -> F:
        return np.asarray(table[np.searchsorted(bounds, v, side="left")])

    return score


score_respiration = _banded((8, 11, 20, 24), (3, 1, 0, 2, 3))
score_systolic = _banded((90, 100, 110, 219), (3, 2, 1, 0, 3))
score_pulse = _banded((40, 50, 90, 110, 130), (3, 1, 0, 1, 2, 3))
score_temperature = _banded((35.0, 36.0, 38.0, 39.0), (3, 1, 0, 1, 2))
_spo2_scale1 = _banded((91, 93, 95), (3, 2, 1, 0))
_spo2_scale2_air = _banded((83, 85, 87), (3, 2, 1, 0))  # above 87 on air: 0
_spo2_scale2_oxygen = _banded((83, 85, 87, 92, 94, 96), (3, 2, 1, 0, 1, 2, 3))


def score_spo2(v: F, scale: F, oxygen: B) -> F:
    scale2 = np.where(oxygen, _spo2_scale2_oxygen(v), _spo2_scale2_air(v))
    return np.where(scale == 2, scale2, _spo2_scale1(v))


def score_components(
    ctx: RuleContext, slot: npt.NDArray[np.int32], at: npt.NDArray[np.int64]
) -> dict[str, F]:
    """Each component's score for the given patients at the given times (NaN: no value)."""
    history = ctx.history
    since = at - (ctx.params.value("window_hours", slot) * 3.6e9).astype(np.int64)
    times = history.last_time.take(slot, axis=0)[:, _COLUMNS]
    present = (times != NO_TIME) & (times > since[:, None])
    rr, spo2, answer, flow, sbp, hr, confused, temp = history.last_value.take(slot, axis=0)[
        :, _COLUMNS
    ].T
    rr_ok, spo2_ok, answer_ok, flow_ok, sbp_ok, hr_ok, confused_ok, temp_ok = present.T

    def scored(present: B, score: F) -> F:
        return np.where(present, score, np.nan)

    oxygen = (answer_ok & (answer == 1)) | (flow_ok & (flow > 0))
    scale = ctx.params.value("spo2_scale", slot)
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
    triggers = rows.current & _IS_INPUT[rows.kind]
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
    p = {
        name: ctx.params.value(name, slot)
        for name in (
            "red_at_or_above",
            "orange_at_or_above",
            "single_3_is_orange",
            "low_band_is_info",
        )
    }
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
    scored = Scores(slot, at, total.astype(np.int16))
    return Firings(
        slot[hit], severity[hit], at[hit], {k: v[hit] for k, v in values.items()}, scored
    )
