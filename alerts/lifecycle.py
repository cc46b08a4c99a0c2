"""Alerts with a lifecycle, applied inside the batch transaction.

One alert per clinical episode. For each candidate (patient, rule), the
patient's latest alert for that rule is locked and:
- none yet: the alert is raised;
- one open or acknowledged (snoozed included): a higher severity escalates it
  (re-opened, snooze lifted); otherwise the firing is absorbed into it;
- one resolved: a firing at or before its last firing is old news (a replay, a
  back-fill) and is dropped; one within the cool-down of the candidate's
  severity (6 h orange, 1 h red by default) is dropped unless more severe;
  later ones raise a new alert.
Missing-data alerts are resolved by the data they were waiting for. Each
raise, escalation and resolution is an event in `alert_events`, the outbox of
`telemon.alerts.v1`; clinicians' acknowledgements and resolutions add theirs
(alerts.actions).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from alerts.catalogue import RESOLVED_BY_DATA
from alerts.engine import Candidate
from alerts.model import Severity
from ingest.platform import Connection

__all__ = ["Applied", "Arrivals", "apply_alerts"]


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Per patient and kind code, the latest measured_at in the batch: data that may
    resolve missing-data alerts."""

    patient_key: list[int]
    kind: list[int]
    latest_us: list[int]

    @classmethod
    def none(cls) -> Arrivals:
        return cls([], [], [])


@dataclass
class Applied:
    raised: Counter[tuple[str, int]] = field(default_factory=Counter)  # (rule, severity)
    escalated: int = 0
    absorbed: int = 0
    dropped: int = 0
    resolved_by_data: int = 0
    raise_latency_s: list[float] = field(default_factory=list)  # fired_at -> durable


# Rules whose alerts data resolves, by the kind code that does it.
_RESOLVED_BY: Mapping[int, tuple[str, ...]] = {
    code: tuple(rule for rule, kinds in RESOLVED_BY_DATA.items() if code in kinds)
    for code in frozenset().union(*RESOLVED_BY_DATA.values())
}


async def apply_alerts(
    conn: Connection,
    candidates: Sequence[Candidate],
    arrivals: Arrivals,
    *,
    cooldown_us: Mapping[Severity, int],
    now_us: int,
) -> Applied:
    applied = Applied()
    await _resolve_by_data(conn, arrivals, now_us, applied)
    if candidates:
        await _apply_candidates(conn, candidates, cooldown_us, now_us, applied)
    if applied.raised or applied.escalated or applied.resolved_by_data:
        await conn.execute("SELECT pg_notify('telemon_outbox', 'alert_events')")
    return applied


async def _resolve_by_data(
    conn: Connection, arrivals: Arrivals, now_us: int, applied: Applied
) -> None:
    latest: dict[tuple[int, str], int] = {}
    for patient, kind, at in zip(
        arrivals.patient_key, arrivals.kind, arrivals.latest_us, strict=True
    ):
        for rule_id in _RESOLVED_BY.get(kind, ()):
            latest[(patient, rule_id)] = max(latest.get((patient, rule_id), at), at)
    if not latest:
        return
    pairs = list(latest)
    resolved = await conn.fetch(
        """
        WITH data(p, r, t) AS (SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[]))
        UPDATE alerts a SET status = 'resolved', resolved_at = to_timestamp($4 / 1e6),
            resolved_by = 'telemon', resolution = 'data received', snoozed_until = NULL
        FROM data
        WHERE a.patient_key = data.p AND a.rule_id = data.r AND a.status <> 'resolved'
          AND data.t >= coalesce((a.explanation -> 'values' ->> 'data_since_s')::float8 * 1e6,
                                 0)
        RETURNING a.alert_id, a.patient_key, a.severity
        """,
        [p for p, _ in pairs],
        [r for _, r in pairs],
        [latest[k] for k in pairs],
        now_us,
    )
    if resolved:
        await _events(
            conn,
            [
                (
                    r["alert_id"],
                    r["patient_key"],
                    "resolved",
                    r["severity"],
                    "resolved",
                    {"resolution": "data received"},
                )
                for r in resolved
            ],
            now_us,
        )
        applied.resolved_by_data += len(resolved)


async def _apply_candidates(
    conn: Connection,
    candidates: Sequence[Candidate],
    cooldown_us: Mapping[Severity, int],
    now_us: int,
    applied: Applied,
) -> None:
    latest = {
        (r["patient_key"], r["rule_id"]): r
        for r in await conn.fetch(
            """
            SELECT a.alert_id, a.patient_key, a.rule_id, a.severity, a.status,
                   (extract(epoch FROM a.last_fired_at) * 1e6)::bigint AS last_fired_us
            FROM unnest($1::int[], $2::text[]) AS c(p, r)
            CROSS JOIN LATERAL (
                SELECT * FROM alerts WHERE patient_key = c.p AND rule_id = c.r
                ORDER BY alert_id DESC LIMIT 1 FOR UPDATE
            ) a
            """,
            [c.patient_key for c in candidates],
            [c.rule_id for c in candidates],
        )
    }
    raise_: list[Candidate] = []
    escalate: list[tuple[int, Candidate]] = []
    absorb: list[tuple[int, int]] = []
    for candidate in candidates:
        current = latest.get((candidate.patient_key, candidate.rule_id))
        if current is None:
            raise_.append(candidate)
        elif current["status"] != "resolved":
            if candidate.severity > current["severity"]:
                escalate.append((current["alert_id"], candidate))
            else:
                absorb.append((current["alert_id"], candidate.fired_at_us))
        elif candidate.fired_at_us <= current["last_fired_us"] or (
            candidate.fired_at_us <= current["last_fired_us"] + cooldown_us[candidate.severity]
            and candidate.severity <= current["severity"]
        ):
            applied.dropped += 1
        else:
            raise_.append(candidate)
    if raise_:
        rows = await conn.fetch(
            """
            INSERT INTO alerts (patient_key, rule_id, rule_version, severity, status,
                first_fired_at, last_fired_at, raised_at, explanation)
            SELECT p, r, v, s, 'open', to_timestamp(f / 1e6), to_timestamp(f / 1e6),
                   to_timestamp($6 / 1e6), e::jsonb
            FROM unnest($1::int[], $2::text[], $3::int[], $4::smallint[], $5::bigint[],
                        $7::text[]) AS c(p, r, v, s, f, e)
            RETURNING alert_id, patient_key, severity
            """,
            [c.patient_key for c in raise_],
            [c.rule_id for c in raise_],
            [c.rule_version for c in raise_],
            [int(c.severity) for c in raise_],
            [c.fired_at_us for c in raise_],
            now_us,
            [json.dumps(c.explanation) for c in raise_],
        )
        await _events(
            conn,
            [
                (
                    r["alert_id"],
                    r["patient_key"],
                    "raised",
                    r["severity"],
                    "open",
                    {"rule": c.rule_id},
                )
                for r, c in zip(rows, raise_, strict=True)
            ],
            now_us,
        )
        for c in raise_:
            applied.raised[(c.rule_id, int(c.severity))] += 1
            applied.raise_latency_s.append((now_us - c.fired_at_us) / 1e6)
    if escalate:
        await conn.execute(
            """
            UPDATE alerts a SET severity = c.s, explanation = c.e::jsonb, status = 'open',
                snoozed_until = NULL, fire_count = a.fire_count + 1,
                last_fired_at = greatest(a.last_fired_at, to_timestamp(c.f / 1e6))
            FROM unnest($1::bigint[], $2::smallint[], $3::text[], $4::bigint[]) AS c(id, s, e, f)
            WHERE a.alert_id = c.id
            """,
            [a for a, _ in escalate],
            [int(c.severity) for _, c in escalate],
            [json.dumps(c.explanation) for _, c in escalate],
            [c.fired_at_us for _, c in escalate],
        )
        await _events(
            conn,
            [
                (a, c.patient_key, "escalated", int(c.severity), "open", {"rule": c.rule_id})
                for a, c in escalate
            ],
            now_us,
        )
        applied.escalated += len(escalate)
        applied.raise_latency_s.extend((now_us - c.fired_at_us) / 1e6 for _, c in escalate)
    if absorb:
        await conn.execute(
            """
            UPDATE alerts a SET fire_count = a.fire_count + 1,
                last_fired_at = greatest(a.last_fired_at, to_timestamp(c.f / 1e6))
            FROM unnest($1::bigint[], $2::bigint[]) AS c(id, f) WHERE a.alert_id = c.id
            """,
            [a for a, _ in absorb],
            [f for _, f in absorb],
        )
        applied.absorbed += len(absorb)


async def _events(
    conn: Connection,
    events: list[tuple[int, int, str, int, str, dict[str, object]]],
    now_us: int,
    actor: str = "telemon",
) -> None:
    await conn.execute(
        """
        INSERT INTO alert_events (alert_id, patient_key, type, severity, status, at, actor,
                                  detail)
        SELECT a, p, t, s, st, to_timestamp($6 / 1e6), $7, d::jsonb
        FROM unnest($1::bigint[], $2::int[], $3::text[], $4::smallint[], $5::text[],
                    $8::text[]) AS e(a, p, t, s, st, d)
        """,
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2] for e in events],
        [e[3] for e in events],
        [e[4] for e in events],
        now_us,
        actor,
        [json.dumps(e[5]) for e in events],
    )
