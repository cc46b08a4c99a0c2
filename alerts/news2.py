"""NEWS2 (Royal College of Physicians, 2017), from each parameter's latest value.

docs/clinical.md §3B. Bands are closed on their upper bound ("21-24" is
20 < v <= 24), so a non-integer reading falls in exactly one band. Evaluated
for a patient when one of the seven parameters arrives (currently), at that
reading's time, over each parameter's latest value within the window (6 h by
default). A missing parameter leaves the score partial: it is still raised,
marked incomplete.

Confirmation (`confirm` = 1, docs/alerts.md): an SpO2 or pulse whose latest
reading scores 2 or more while the reading before it scored less is isolated
(maybe an artefact): it counts at the earlier reading's score in the
*confirmed* score. The alert's severity is the confirmed score's; an
unconfirmed part that would alert more raises `info` at least (re-measure
asked). The score reported and counted is the score as read.

`news2_rising` compares the confirmed SpO2, pulse, respiration and
temperature scores with the best (lowest) each scored in the previous days'
readings: a rise of 2 or more is a worsening trend, before the aggregate
reaches its medium band.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from alerts.history import HOUR_US, NO_TIME, code_mask, kind_index
from alerts.model import Firings, RuleContext, Scores, Severity
from alerts.thresholds import code
from devices.catalogue import VitalKind

__all__ = [
    "COMPONENTS",
    "INPUTS",
    "confirmed_components",
    "news2",
    "news2_rising",
    "score_components",
]

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

NEWS2_KINDS = (
    VitalKind.RESPIRATORY_RATE,
    VitalKind.SPO2,
    VitalKind.ON_OXYGEN,
    VitalKind.OXYGEN_FLOW,
    VitalKind.SYSTOLIC_BP,
    VitalKind.HEART_RATE,
    VitalKind.NEW_CONFUSION,
    VitalKind.BODY_TEMPERATURE,
)
INPUTS = frozenset(code(k) for k in NEWS2_KINDS)
_IS_INPUT = code_mask(INPUTS)
_INDEXES = [kind_index(k) for k in NEWS2_KINDS]
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
    values, times = history.latest_of(slot, _INDEXES)
    present = (times != NO_TIME) & (times > since[:, None])
    rr, spo2, answer, flow, sbp, hr, confused, temp = values.T
    rr_ok, spo2_ok, answer_ok, flow_ok, sbp_ok, hr_ok, confused_ok, temp_ok = present.T

    def scored(present: B, score: F) -> F:
        return np.where(present, score, np.nan)

    oxygen = (answer_ok & (answer == 1)) | (flow_ok & (flow > 0))
    scale = ctx.params.value("spo2_scale", slot)
    return {
        "_oxygen": oxygen.astype(np.float64),
        "respiration": scored(rr_ok, score_respiration(rr)),
        "spo2": scored(spo2_ok, score_spo2(spo2, scale, oxygen)),
        "oxygen": scored(answer_ok | flow_ok, np.where(oxygen, 2.0, 0.0)),
        "systolic_bp": scored(sbp_ok, score_systolic(sbp)),
        "pulse": scored(hr_ok, score_pulse(hr)),
        "consciousness": scored(confused_ok, np.where(confused == 1, 3.0, 0.0)),
        "temperature": scored(temp_ok, score_temperature(temp)),
    }


# The components a single reading may move, with their kind (confirmation, trends).
_CONFIRMED = (("spo2", VitalKind.SPO2), ("pulse", VitalKind.HEART_RATE))
_TRENDED_NAMES = ("spo2", "respiration", "pulse", "temperature")
_TRENDED = (
    ("respiration", VitalKind.RESPIRATORY_RATE, score_respiration),
    ("pulse", VitalKind.HEART_RATE, score_pulse),
    ("temperature", VitalKind.BODY_TEMPERATURE, score_temperature),
)


def _spo2_scorer(ctx: RuleContext, slot: npt.NDArray[np.int32], oxygen: F) -> Callable[[F], F]:
    """SpO2 scores of values given per row (1-D) or per row and ring entry (2-D), on each
    patient's scale and current oxygen."""
    scale = ctx.params.value("spo2_scale", slot)
    on_oxygen = oxygen == 1

    def score(v: F) -> F:
        if v.ndim == 2:
            return score_spo2(v, scale[:, None], on_oxygen[:, None])
        return score_spo2(v, scale, on_oxygen)

    return score


def confirmed_components(
    ctx: RuleContext, slot: npt.NDArray[np.int32], components: dict[str, F]
) -> dict[str, F]:
    """`components` with an isolated SpO2 or pulse (its latest reading scores 2 or more, the
    reading before it less) scored as the reading before it."""
    history = ctx.history
    confirmed = dict(components)
    for name, kind in _CONFIRMED:
        with np.errstate(invalid="ignore"):
            rows = np.flatnonzero(components[name] >= 2)  # NaN (absent) is not
        if not len(rows):
            continue
        k = kind_index(kind)
        mine = slot[rows]
        previous, found = history.rings[k].latest_before(mine, history.latest[k].of(mine)[1])
        if name == "spo2":
            before = _spo2_scorer(ctx, mine, components["_oxygen"][rows])(previous)
        else:
            before = score_pulse(previous)
        isolated = found & (before < 2)
        confirmed[name] = components[name].copy()
        confirmed[name][rows[isolated]] = before[isolated]
    return confirmed


def _triggered(ctx: RuleContext) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """The patients with a current NEWS2 input in the batch, and their latest one's time."""
    rows = ctx.rows
    triggers = rows.current & _IS_INPUT[rows.kind]
    slot, inverse = np.unique(rows.slot[triggers], return_inverse=True)
    at = np.full(len(slot), np.iinfo(np.int64).min)
    np.maximum.at(at, inverse, rows.measured_at[triggers])
    return slot.astype(np.int32), at


def _severity(scores: F, p: dict[str, F]) -> npt.NDArray[np.int8]:
    total = np.nansum(scores, axis=0)
    any_three = (scores == 3).any(axis=0)
    return np.asarray(
        np.select(
            [
                total >= p["red_at_or_above"],
                (total >= p["orange_at_or_above"]) | (any_three & (p["single_3_is_orange"] == 1)),
                (total >= 1) & (p["low_band_is_info"] == 1),
            ],
            [Severity.RED, Severity.ORANGE, Severity.INFO],
            0,
        ),
        np.int8,
    )


def news2(ctx: RuleContext) -> Firings:
    slot, at = _triggered(ctx)
    if not len(slot):
        return Firings.none()
    components = score_components(ctx, slot, at)
    scores = np.vstack([components[c] for c in COMPONENTS])
    total = np.nansum(scores, axis=0)
    present = (~np.isnan(scores)).sum(axis=0)
    p = {
        name: ctx.params.value(name, slot)
        for name in (
            "red_at_or_above",
            "orange_at_or_above",
            "single_3_is_orange",
            "low_band_is_info",
            "confirm",
        )
    }
    severity = _severity(scores, p)
    confirmed_total = total
    # Confirmation only lowers a severity: only alerting patients are confirmed.
    confirming = np.flatnonzero((p["confirm"] == 1) & (severity > 0))
    if len(confirming):
        mine = {name: values[confirming] for name, values in components.items()}
        confirmed = confirmed_components(ctx, slot[confirming], mine)
        confirmed_scores = np.vstack([confirmed[c] for c in COMPONENTS])
        confirmed_total = total.copy()
        confirmed_total[confirming] = np.nansum(confirmed_scores, axis=0)
        as_confirmed = _severity(confirmed_scores, {k: v[confirming] for k, v in p.items()})
        severity = severity.copy()
        severity[confirming] = np.where(
            severity[confirming] > as_confirmed,
            np.maximum(as_confirmed, np.int8(Severity.INFO)),
            severity[confirming],
        )
    hit = severity > 0
    values = {
        "score": total,
        "confirmed_score": confirmed_total,
        "complete": (present == len(COMPONENTS)).astype(np.float64),
        "parameters_present": present.astype(np.float64),
    }
    values.update({f"component_{c}": components[c] for c in COMPONENTS})
    scored = Scores(slot, at, total.astype(np.int16))
    return Firings(
        slot[hit], severity[hit], at[hit], {k: v[hit] for k, v in values.items()}, scored
    )


def news2_rising(ctx: RuleContext) -> Firings:
    """The confirmed SpO2, pulse, respiration and temperature scores now, against the lowest
    each scored in the readings of `baseline_hours` before, up to `after_hours` before now
    (only the parameters scored both now and then are compared): a rise of `rise_points`."""
    slot, at = _triggered(ctx)
    if not len(slot):
        return Firings.none()
    history = ctx.history
    components = score_components(ctx, slot, at)
    # The baseline scores are 0 or more: only a patient whose scores now add up to the rise
    # can have risen by it (confirmation only lowers them).
    trended_now = np.vstack([components[name] for name in _TRENDED_NAMES])
    rise_points = ctx.params.value("rise_points", slot)
    keep = np.flatnonzero(np.nansum(trended_now, axis=0) >= rise_points)
    if not len(keep):
        return Firings.none()
    slot, at = slot[keep], at[keep]
    components = {name: values[keep] for name, values in components.items()}
    p = {
        name: ctx.params.value(name, slot)
        for name in ("rise_points", "baseline_hours", "after_hours", "confirm")
    }
    confirmed = confirmed_components(ctx, slot, components)
    now = {
        name: np.where(p["confirm"] == 1, confirmed[name], components[name])
        for name in _TRENDED_NAMES
    }
    start = at - (p["baseline_hours"] * HOUR_US).astype(np.int64)
    end = at - (p["after_hours"] * HOUR_US).astype(np.int64)
    spo2_score = _spo2_scorer(ctx, slot, components["_oxygen"])
    trended = (("spo2", VitalKind.SPO2, spo2_score), *_TRENDED)
    score_now = np.zeros(len(slot))
    score_before = np.zeros(len(slot))
    compared = np.zeros(len(slot))
    for name, kind, score in trended:
        values, inside = history.rings[kind_index(kind)].window(slot, start, end)
        best = np.where(inside, score(values), np.inf).min(axis=1)
        both = ~np.isnan(now[name]) & inside.any(axis=1)
        score_now += np.where(both, now[name], 0)
        score_before += np.where(both, best, 0)
        compared += both
    rise = score_now - score_before
    hit = (compared > 0) & (rise >= p["rise_points"])
    return Firings(
        slot[hit],
        np.full(int(hit.sum()), Severity.ORANGE, np.int8),
        at[hit],
        {
            "rise": rise[hit],
            "score_now": score_now[hit],
            "score_before": score_before[hit],
            "parameters_compared": compared[hit],
        },
    )
