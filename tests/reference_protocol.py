"""The protocol's counting rule (docs/reimbursement.md), day by day with dates: the oracle
of alerts.protocol.count_expected and of the reimbursement report."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from alerts.protocol import Prescription

PARIS = ZoneInfo("Europe/Paris")


def reference_count(
    start: date,
    first: date,
    end: date,
    due_after: datetime,
    due_by: datetime,
    timeline: list[Prescription],
    points: dict[date, int],
) -> tuple[int, int]:
    """Data expected and received over the local days [first, end) of a patient whose
    follow-up started on `start`: T for each due day (every E-th day of follow-up) whose due
    time is after `due_after` and at or before `due_by`; received, for each, the data
    points of the E days ending there (none before `start`), at most T."""
    expected = received = 0
    day = first
    while day < end:
        index = (day - start).days
        if index >= 0:
            now = [p for p in timeline if p.from_day <= index][-1]
            wall = datetime.combine(day, datetime.min.time()) + timedelta(hours=now.due_hour)
            due_at = wall.replace(tzinfo=PARIS)
            if (index + 1) % now.every_days == 0 and due_after < due_at <= due_by:
                period = [day - timedelta(days=k) for k in range(now.every_days)]
                got = sum(points.get(d, 0) for d in period if d >= start)
                expected += now.times
                received += min(got, now.times)
        day += timedelta(days=1)
    return expected, received
