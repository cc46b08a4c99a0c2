"""Missing-data and adherence rules (docs/clinical.md §3D), evaluated by a periodic sweep.

Each missing-data firing says which data would have prevented it (`data_since_s`):
such data arriving later resolves the alert (alerts.lifecycle).

They look at every followed patient, not at a batch: `ctx.now_us` gives each
patient's "now" (the wall clock, or, for a partition still catching up, the
time of the last record made durable there, so a backlog is not mistaken for
silent patients). Protocols and schedules are in local days and hours
(`ctx.calendar`), counted from the local day the follow-up started
(alerts.protocol). A firing's time is the due time that passed, so the same missed
period is the same finding at every sweep.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alerts.history import HOUR_US, NO_TIME, kind_index
from alerts.model import Firings, RuleContext, Severity
from alerts.protocol import MEASURES
from devices.registry import DeviceType

__all__ = [
    "DEVICE_PERIOD_HOURS",
    "adherence_m1",
    "adherence_m2",
    "device_silent",
    "measure_missing",
    "questionnaire_missed",
]

I64 = npt.NDArray[np.int64]
F = npt.NDArray[np.float64]

# How often each kind of device is expected to send, in hours [U]; silent after twice that.
DEVICE_PERIOD_HOURS: dict[DeviceType, float] = {
    DeviceType.PULSE_OXIMETER: 12,
    DeviceType.THERMOMETER: 12,
    DeviceType.SCALE: 24,
    DeviceType.BLOOD_PRESSURE_MONITOR: 24,
    DeviceType.GLUCOMETER: 24,
    DeviceType.CGM: 1,
    DeviceType.VENTILATOR: 24,
    DeviceType.WEARABLE: 1,
    DeviceType.QUESTIONNAIRE_APP: 24,
}
DEVICE_TYPES = list(DeviceType)
_PERIOD_US = np.array([DEVICE_PERIOD_HOURS[t] * HOUR_US for t in DEVICE_TYPES], np.int64)
_MEASURE_KINDS = {name: [kind_index(k) for k in m.kinds] for name, m in MEASURES.items()}


def _everyone(ctx: RuleContext) -> tuple[npt.NDArray[np.int32], dict[str, F], I64]:
    """Slots of the followed patients, their parameters, their now."""
    history = ctx.history
    slot = np.flatnonzero(history.active[: len(history)]).astype(np.int32)
    params = ctx.params.of(slot)
    return slot, params, ctx.now_us[slot]


def _last(ctx: RuleContext, slot: npt.NDArray[np.int32], measure: str) -> I64:
    _, times = ctx.history.latest_of(slot, _MEASURE_KINDS[measure])
    return np.asarray(times.max(axis=1), dtype=np.int64)


def measure_missing(ctx: RuleContext, measure: str) -> Firings:
    """The last period of a prescribed measure whose due time has passed, without its data:
    orange; red after `red_after_periods` such periods in a row (alerts.protocol)."""
    slot, p, now = _everyone(ctx)
    calendar = ctx.calendar
    every = p["every_days"].astype(np.int64)
    start = ctx.history.start_day[slot].astype(np.int64)
    today = calendar.day_of(now) - start  # day of follow-up, 0 the first
    due_day = (today + 1) // every * every - 1  # the latest due day at or before today
    passed = calendar.hour_of(start + due_day, p["due_hour"]) <= now
    due_day = np.where(passed, due_day, due_day - every)
    due_at = calendar.hour_of(start + due_day, p["due_hour"])
    period_start = calendar.start_of(start + np.maximum(due_day - every + 1, 0))
    last = _last(ctx, slot, measure)
    # Not before the follow-up began: a period due before the enrolment is not expected.
    missing = (due_day >= 0) & (due_at > ctx.history.enrolled_us[slot]) & (last < period_start)
    if not missing.any():
        return Firings.none()
    red_after = p["red_after_periods"][missing]
    slot = slot[missing]
    every, start, due_day, due_at = (
        every[missing],
        start[missing],
        due_day[missing],
        due_at[missing],
    )
    period_start, last = period_start[missing], last[missing]
    # The periods without data, this one included: from the one the last data fell in.
    last_day = np.where(last == NO_TIME, -1, calendar.day_of(np.maximum(last, 0)) - start)
    periods = (due_day - np.maximum(last_day, -1)) // every
    red = periods >= red_after  # NaN, the default: never
    return Firings(
        slot,
        np.where(red, Severity.RED, Severity.ORANGE).astype(np.int8),
        due_at,
        {"periods_without": periods.astype(np.float64), "data_since_s": period_start / 1e6},
    )


def questionnaire_missed(ctx: RuleContext) -> Firings:
    """No questionnaire answered between `window_before_hours` before a scheduled time and
    `grace_hours` after it (the second time only when prescribed twice a day)."""
    slot, p, now = _everyone(ctx)
    calendar = ctx.calendar
    grace = (p["grace_hours"] * HOUR_US).astype(np.int64)
    looked_at = now - grace
    today = calendar.day_of(looked_at)
    due = np.full(len(slot), NO_TIME)
    for hours, scheduled in (("first_hour", p["times"] >= 1), ("second_hour", p["times"] >= 2)):
        at = calendar.hour_of(today, p[hours])
        at = np.where(at <= looked_at, at, calendar.hour_of(today - 1, p[hours]))
        due = np.where(scheduled, np.maximum(due, at), due)
    answered = _last(ctx, slot, "questionnaire")
    opens = due - (p["window_before_hours"] * HOUR_US).astype(np.int64)
    missed = (due >= ctx.history.enrolled_us[slot]) & (answered < opens)
    return Firings(
        slot[missed],
        np.full(missed.sum(), Severity.ORANGE, np.int8),
        (due + grace)[missed],
        {"scheduled_at_s": due[missed] / 1e6, "data_since_s": opens[missed] / 1e6},
    )


def device_silent(ctx: RuleContext) -> Firings:
    """A device silent for twice its expected period (the most silent one per patient)."""
    history = ctx.history
    if not len(history.device_slot):
        return Firings.none()
    device_slot = history.device_slot
    active = history.active[device_slot]
    period = _PERIOD_US[history.device_type] * ctx.params.value("periods", device_slot)
    silent_since = history.device_last + period.astype(np.int64)
    silent = active & (ctx.now_us[device_slot] >= silent_since)
    if not silent.any():
        return Firings.none()
    rows = np.flatnonzero(silent)
    keys = history.device_keys
    order = rows[np.lexsort((keys[rows], silent_since[rows]))]  # earliest deadline first
    slot, first = np.unique(device_slot[order], return_index=True)
    chosen = order[first]
    device_key = keys[chosen]
    return Firings(
        slot.astype(np.int32),
        np.full(len(slot), Severity.INFO, np.int8),
        silent_since[chosen],
        {
            "device_key": device_key.astype(np.float64),
            "data_since_s": (history.device_last[chosen] + 1) / 1e6,
        },
    )


def adherence_month(ctx: RuleContext, month: int) -> Firings:
    """Month 1 or 2 of follow-up checked (alerts.adherence) with a prescribed measure's
    data received at most `at_most_percent` of its expected data: orange, at the month's
    end."""
    slot, p, _ = _everyone(ctx)
    history = ctx.history
    expected = history.month_expected[slot, month - 1].astype(np.float64)
    received = history.month_received[slot, month - 1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(expected > 0, received / expected * 100, np.nan)
    low = percent <= p["at_most_percent"]  # NaN (not checked, nothing expected): no
    start = history.start_day[slot[low]].astype(np.int64)
    ends = ctx.calendar.start_of(ctx.calendar.add_months(start, month))
    return Firings(
        slot[low],
        np.full(int(low.sum()), Severity.ORANGE, np.int8),
        ends,
        {
            "measure": history.month_measure[slot[low], month - 1].astype(np.float64),
            "expected": expected[low],
            "received": received[low],
            "percent": percent[low],
        },
    )


def adherence_m1(ctx: RuleContext) -> Firings:
    return adherence_month(ctx, 1)


def adherence_m2(ctx: RuleContext) -> Firings:
    return adherence_month(ctx, 2)
