"""Missing-data and adherence rules (docs/clinical.md §3D), evaluated by a periodic sweep.

Each missing-data firing says which data would have prevented it (`data_since_s`):
such data arriving later resolves the alert (alerts.lifecycle).

They look at every followed patient, not at a batch: `ctx.now_us` gives each
patient's "now" (the wall clock, or, for a partition still catching up, the
time of the last record made durable there, so a backlog is not mistaken for
silent patients). Schedules are in the programme's local time: `ctx.params`
carries `utc_offset_hours` per patient. A firing's time is the deadline that
passed, so the same missed deadline is the same episode at every sweep.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alerts.history import DAY_US, HOUR_US, NO_TIME, kind_index
from alerts.model import Firings, RuleContext, Severity
from devices.catalogue import CATALOGUE, ValueType
from devices.catalogue import VitalKind as K
from devices.registry import DeviceType

__all__ = [
    "DEVICE_PERIOD_HOURS",
    "QUESTIONNAIRE_KINDS",
    "adherence_month",
    "device_silent",
    "glucose_missing",
    "hf_weight_missing",
    "questionnaire_missed",
]

I64 = npt.NDArray[np.int64]
F = npt.NDArray[np.float64]

QUESTIONNAIRE_KINDS = tuple(
    v.kind for v in CATALOGUE if v.value_type in (ValueType.GRADE, ValueType.BOOLEAN)
)

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


def _everyone(ctx: RuleContext) -> tuple[npt.NDArray[np.int32], dict[str, F], I64]:
    """Slots of the followed patients, their parameters, their now."""
    history = ctx.history
    slot = np.flatnonzero(history.active[: len(history)]).astype(np.int32)
    params = ctx.params.of(slot)
    return slot, params, ctx.now_us[slot]


def _last(ctx: RuleContext, slot: npt.NDArray[np.int32], *kinds: K) -> I64:
    times = ctx.history.last_time.take(slot, axis=0)[:, [kind_index(k) for k in kinds]]
    return np.asarray(times.max(axis=1), dtype=np.int64)


def _local_day_start(now: I64, offset_hours: F) -> I64:
    """UTC time of the local midnight that starts `now`'s local day."""
    offset = (offset_hours * HOUR_US).astype(np.int64)
    return ((now + offset) // DAY_US) * DAY_US - offset


def _latest_deadline(now: I64, offset_hours: F, hour: F) -> I64:
    """The latest local `hour` o'clock at or before `now` (UTC µs)."""
    today = _local_day_start(now, offset_hours) + (hour * HOUR_US).astype(np.int64)
    return np.where(today <= now, today, today - DAY_US)


def questionnaire_missed(ctx: RuleContext) -> Firings:
    """No questionnaire answered between `window_before_hours` before a scheduled time and
    `grace_hours` after it."""
    slot, p, now = _everyone(ctx)
    grace = (p["grace_hours"] * HOUR_US).astype(np.int64)
    due = np.full(len(slot), NO_TIME)
    for hours in ("first_hour", "second_hour"):
        scheduled = ~np.isnan(p[hours])
        deadline = _latest_deadline(now - grace, p["utc_offset_hours"], np.nan_to_num(p[hours]))
        due = np.where(scheduled, np.maximum(due, deadline), due)
    answered = _last(ctx, slot, *QUESTIONNAIRE_KINDS)
    opens = due - (p["window_before_hours"] * HOUR_US).astype(np.int64)
    missed = (due != NO_TIME) & (due >= ctx.history.enrolled_us[slot]) & (answered < opens)
    return Firings(
        slot[missed],
        np.full(missed.sum(), Severity.ORANGE, np.int8),
        (due + grace)[missed],
        {"scheduled_at_s": due[missed] / 1e6, "data_since_s": opens[missed] / 1e6},
    )


def hf_weight_missing(ctx: RuleContext) -> Firings:
    """No weight on the day of the last passed deadline; red after several days in a row."""
    slot, p, now = _everyone(ctx)
    offset = p["utc_offset_hours"]
    deadline = _latest_deadline(now, offset, p["deadline_hour"])
    day_start = _local_day_start(deadline, offset)
    weighed = _last(ctx, slot, K.BODY_WEIGHT)
    since = np.maximum(weighed, ctx.history.enrolled_us[slot] - DAY_US)
    days_without = (day_start - _local_day_start(since, offset)) // DAY_US
    missing = (weighed < day_start) & (ctx.history.enrolled_us[slot] < day_start)
    severity = np.where(days_without >= p["red_after_days"], Severity.RED, Severity.ORANGE)
    return Firings(
        slot[missing],
        severity[missing].astype(np.int8),
        deadline[missing],
        {
            "days_without_weight": days_without[missing].astype(np.float64),
            "data_since_s": day_start[missing] / 1e6,
        },
    )


def glucose_missing(ctx: RuleContext) -> Firings:
    """No glucose reading (capillary or CGM) for `days`."""
    slot, p, now = _everyone(ctx)
    last = np.maximum(_last(ctx, slot, K.GLUCOSE, K.GLUCOSE_CGM), ctx.history.enrolled_us[slot])
    limit = (p["days"] * DAY_US).astype(np.int64)
    missing = now - last >= limit
    return Firings(
        slot[missing],
        np.full(missing.sum(), Severity.ORANGE, np.int8),
        (last + limit)[missing],
        {"last_reading_s": last[missing] / 1e6, "data_since_s": (last[missing] + 1) / 1e6},
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
    keys = np.array(list(history.device_of), np.int64)  # device rows in insertion order
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
    """Data on at most half of the days of month 1 (days 0-29) or 2 (30-59) of follow-up."""
    slot, p, now = _everyone(ctx)
    enrolled = ctx.history.enrolled_us[slot]
    first_day = 30 * (month - 1)
    month_end = enrolled + (first_day + 30) * DAY_US
    bits = ctx.history.days_with_data[slot]
    days = np.zeros(len(slot), np.int64)
    for day in range(first_day, first_day + 30):
        days += ((bits >> np.uint64(day)) & np.uint64(1)).astype(np.int64)
    share = days / 30
    low = (now >= month_end) & (share * 100 <= p["at_most_percent"])
    return Firings(
        slot[low],
        np.full(low.sum(), Severity.ORANGE, np.int8),
        month_end[low],
        {"days_with_data": days[low].astype(np.float64), "percent": share[low] * 100},
    )


def adherence_m1(ctx: RuleContext) -> Firings:
    return adherence_month(ctx, 1)


def adherence_m2(ctx: RuleContext) -> Firings:
    return adherence_month(ctx, 2)
