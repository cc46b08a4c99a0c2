"""Local days of the programmes' timezone, exact across daylight-saving changes, an array
at a time.

A patient's protocol is kept in local days ("a weight every day", "a glucose every
week"), counted from the local day of the start of follow-up, and months of
follow-up are calendar months from it (15 March to 15 April). Days are numbered
from 1970-01-01 like numpy's datetime64[D]. The UTC instant of every local midnight
between 1970 and 2200 is computed once per timezone; a day lookup is then a binary
search, exact on the days a clock changes.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

__all__ = ["LocalCalendar", "calendar"]

I64 = npt.NDArray[np.int64]

_FIRST = date(1970, 1, 1)
_DAYS = (date(2200, 1, 1) - _FIRST).days
_EPOCH_DAY = np.datetime64("1970-01-01", "D")


class LocalCalendar:
    def __init__(self, timezone: ZoneInfo) -> None:
        self.timezone = timezone
        midnights = [
            datetime.combine(_FIRST + timedelta(days=d), datetime.min.time(), timezone)
            for d in range(_DAYS + 1)
        ]
        # µs since the epoch of each local midnight, day 0 to _DAYS (the end of the last).
        self._midnight_us = np.array([int(m.timestamp()) * 1_000_000 for m in midnights], np.int64)
        # The days the clock changes: the instant it does, and by how much it moves.
        lengths = np.diff(self._midnight_us)
        self._change_at_us = np.full(_DAYS, np.iinfo(np.int64).max, np.int64)
        self._change_us = np.zeros(_DAYS, np.int64)
        for day in np.flatnonzero(lengths != 86_400_000_000).tolist():
            self._change_at_us[day] = _change_instant(midnights[day], midnights[day + 1])
            self._change_us[day] = 86_400_000_000 - int(lengths[day])

    def day_of(self, at_us: I64 | int) -> I64:
        """The local day of each instant (µs since the epoch)."""
        return np.searchsorted(self._midnight_us, np.asarray(at_us), side="right") - 1

    def start_of(self, day: I64 | int) -> I64:
        """The UTC instant (µs) of each local day's midnight."""
        return np.asarray(self._midnight_us.take(np.asarray(day)), np.int64)

    def hour_of(self, day: I64 | int, hour: npt.NDArray[np.float64] | float) -> I64:
        """The instant of a local hour of each day (24: the midnight that ends it), the
        clock's change counted on the days it changes."""
        day = np.asarray(day, np.int64)
        elapsed = self.start_of(day) + (np.asarray(hour) * 3.6e9).astype(np.int64)
        day = np.minimum(day, _DAYS - 1)
        changed = elapsed >= self._change_at_us.take(day)
        return np.asarray(np.where(changed, elapsed - self._change_us.take(day), elapsed))

    @staticmethod
    def add_months(day: I64 | int, months: I64 | int) -> I64:
        """The same day of the month `months` later (the month's last day when it has no
        such day: 31 January plus a month is 28 or 29 February)."""
        dates = _EPOCH_DAY + np.asarray(day).astype("timedelta64[D]")
        month = dates.astype("datetime64[M]")
        day_of_month = (dates - month.astype("datetime64[D]")).astype(np.int64)
        target = month + np.asarray(months).astype("timedelta64[M]")
        length = ((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(
            np.int64
        )
        landed = target.astype("datetime64[D]") + np.minimum(day_of_month, length - 1)
        return np.asarray((landed - _EPOCH_DAY).astype(np.int64))

    @staticmethod
    def date_of(day: int) -> date:
        return _FIRST + timedelta(days=int(day))

    @staticmethod
    def day_of_date(when: date) -> int:
        return (when - _FIRST).days


def _change_instant(midnight: datetime, next_midnight: datetime) -> int:
    """When, between two local midnights, the UTC offset changes (µs, to the second)."""
    low, high = int(midnight.timestamp()), int(next_midnight.timestamp())
    offset = midnight.utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(midnight.tzinfo).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return high * 1_000_000


@functools.cache
def calendar(timezone: str) -> LocalCalendar:
    """One calendar per timezone name, built once (about 80,000 midnights)."""
    return LocalCalendar(ZoneInfo(timezone))
