"""Findings and the episodes they make, applied inside the batch transaction.

The rules fire per rule: each firing is a *finding* of its rule for a patient,
kept for the evidence and for rule analytics. The care team's unit of work is
the *episode*: a patient has at most one unresolved episode per job
(`Rule.job`: clinical, review the patient; data, chase the data), whose
severity is the highest of its findings. For each candidate (patient, rule):

- the rule has an unresolved finding for the patient: the firing is absorbed
  into it (its severity rises if the firing is more severe);
- otherwise, against the rule's latest finding for the patient (resolved): a
  firing at or before its last firing is old news (a replay, a back-fill) and
  is dropped; one within the cool-down of its severity (6 h orange, 1 h red by
  default) and no more severe is dropped;
- otherwise it is a new finding, which joins the patient's unresolved episode
  of its job or opens one.

An episode whose severity rises is escalated: re-opened if it was
acknowledged, its snooze lifted, its wait counted again. Findings that wait
for data (the missing-data rules) are resolved by that data; a data episode
left without an unresolved finding resolves itself. Every raise, escalation,
update and resolution is an event in `episode_events`, the outbox of the alerts
topic and the source of the live feed; clinicians' actions add theirs
(alerts.actions).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg

from alerts.catalogue import RESOLVED_BY_DATA, RULES
from alerts.engine import Candidate
from alerts.model import Disposition, Job, Severity
from alerts.scores import ScoreRow, score_arrays, scores_cte
from ingest.platform import Connection

__all__ = ["Applied", "Arrivals", "apply_alerts", "record_events"]


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Per patient and kind code, the latest measured_at in the batch: data that may
    resolve missing-data findings."""

    patient_key: list[int]
    kind: list[int]
    latest_us: list[int]

    @classmethod
    def none(cls) -> Arrivals:
        return cls([], [], [])


@dataclass
class Applied:
    """What one transaction did, for the metrics once it has committed."""

    findings: Counter[tuple[str, int]] = field(default_factory=Counter)  # new, by rule, severity
    opened: Counter[tuple[str, int]] = field(default_factory=Counter)  # by job, severity
    escalated: int = 0
    absorbed: int = 0
    dropped: int = 0
    resolved_by_data: int = 0  # findings
    raise_latency_s: list[float] = field(default_factory=list)  # fired_at -> durable


# Rules whose findings data resolves, by the kind code that does it.
_RESOLVED_BY: Mapping[int, tuple[str, ...]] = {
    code: tuple(rule for rule, kinds in RESOLVED_BY_DATA.items() if code in kinds)
    for code in frozenset().union(*RESOLVED_BY_DATA.values())
}

# (episode_id, patient_key, type, severity, status, detail)
Event = tuple[int, int, str, int, str, dict[str, object]]


async def apply_alerts(
    conn: Connection,
    candidates: Sequence[Candidate],
    arrivals: Arrivals,
    *,
    cooldown_us: Mapping[Severity, int],
    now_us: int,
    scores: Sequence[ScoreRow] = (),
) -> Applied:
    """At most four round trips, in the benchmark's batches two: findings resolved by data
    (two, only for data awaited), findings and episodes locked (one, only with
    candidates), and everything written in one statement (only with something to
    write): episodes opened and updated, findings inserted and absorbed, events, score
    counts."""
    applied = Applied()
    writes = _Writes(now_us)
    await _resolve_by_data(conn, arrivals, now_us, applied, writes.events)
    if candidates:
        await _apply_candidates(conn, candidates, cooldown_us, now_us, applied, writes)
    writes.scores = list(scores)
    await writes.execute(conn)
    return applied


async def record_events(
    conn: Connection, events: Sequence[Event], now_us: int | None, actor: str = "telemon"
) -> None:
    """Episode events, and a wake-up call for the relay and the live feeds; `now_us` None:
    the database's time (a clinician's action, stamped like the change it records)."""
    if not events:
        return
    await conn.execute(
        """
        WITH stored AS (
            INSERT INTO episode_events (episode_id, patient_key, type, severity, status, at,
                                        actor, detail)
            SELECT e, p, t, s, st, coalesce(to_timestamp($6 / 1e6), now()), $7, d::jsonb
            FROM unnest($1::bigint[], $2::int[], $3::text[], $4::smallint[], $5::text[],
                        $8::text[]) AS x(e, p, t, s, st, d)
            RETURNING 1
        ) SELECT pg_notify('telemon_outbox', 'episode_events') FROM stored LIMIT 1
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


async def _resolve_by_data(
    conn: Connection, arrivals: Arrivals, now_us: int, applied: Applied, events: list[Event]
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
    episodes = await conn.fetch(
        """
        WITH data(p, r, t) AS (SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[])),
        resolved AS (
            UPDATE findings f SET status = 'resolved', resolved_at = to_timestamp($4 / 1e6),
                resolved_by = 'telemon', resolution = 'data received'
            FROM data
            WHERE f.patient_key = data.p AND f.rule_id = data.r AND f.status = 'open'
              AND data.t >= coalesce(
                  (f.explanation -> 'values' ->> 'data_since_s')::float8 * 1e6, 0)
            RETURNING f.episode_id, f.rule_id
        )
        SELECT episode_id, array_agg(rule_id) AS rules FROM resolved GROUP BY episode_id
        """,
        [p for p, _ in pairs],
        [r for _, r in pairs],
        [latest[k] for k in pairs],
        now_us,
    )
    if not episodes:
        return
    applied.resolved_by_data += sum(len(r["rules"]) for r in episodes)
    resolved_rules = {r["episode_id"]: list(r["rules"]) for r in episodes}
    # The episode keeps the severity of what still waits; with nothing left, it is resolved.
    updated = await conn.fetch(
        """
        WITH waiting AS (
            SELECT e.episode_id, max(f.severity) FILTER (WHERE f.status = 'open') AS severity
            FROM episodes e JOIN findings f USING (episode_id)
            WHERE e.episode_id = ANY($1::bigint[]) AND e.status <> 'resolved'
            GROUP BY e.episode_id
        )
        UPDATE episodes e SET
            severity = coalesce(w.severity, e.severity),
            status = CASE WHEN w.severity IS NULL THEN 'resolved' ELSE e.status END,
            resolved_at = CASE WHEN w.severity IS NULL THEN to_timestamp($2 / 1e6) END,
            resolved_by = CASE WHEN w.severity IS NULL THEN 'telemon' END,
            disposition = CASE WHEN w.severity IS NULL THEN $3 END,
            snoozed_until = CASE WHEN w.severity IS NULL THEN NULL ELSE e.snoozed_until END
        FROM waiting w WHERE e.episode_id = w.episode_id
        RETURNING e.episode_id, e.patient_key, e.severity, e.status
        """,
        list(resolved_rules),
        now_us,
        Disposition.DATA_RECEIVED.value,
    )
    for r in updated:
        detail: dict[str, object] = {"resolved_by_data": resolved_rules[r["episode_id"]]}
        if r["status"] == "resolved":
            detail["disposition"] = Disposition.DATA_RECEIVED.value
        event = "resolved" if r["status"] == "resolved" else "updated"
        events.append(
            (r["episode_id"], r["patient_key"], event, r["severity"], r["status"], detail)
        )


@dataclass(slots=True)
class _Episode:
    """An episode as this transaction leaves it."""

    patient_key: int
    job: Job
    severity: int
    status: str
    episode_id: int | None = None  # None: opened now
    was_severity: int = 0  # 0: opened now
    first_us: int = 0
    last_us: int = 0
    new_rules: list[str] = field(default_factory=list)


async def _apply_candidates(
    conn: Connection,
    candidates: Sequence[Candidate],
    cooldown_us: Mapping[Severity, int],
    now_us: int,
    applied: Applied,
    writes: _Writes,
) -> None:
    patients = sorted({c.patient_key for c in candidates})
    episodes: dict[tuple[int, Job], _Episode] = {}
    latest: dict[tuple[int, str], asyncpg.Record] = {}
    # The patients' unresolved episodes locked first (in the order of their ids), then the
    # latest finding of each candidate's rule: one round trip.
    for r in await conn.fetch(
        _LOCK, patients, [c.patient_key for c in candidates], [c.rule_id for c in candidates]
    ):
        if r["finding_id"] is None:
            key = (r["patient_key"], Job(r["job"]))
            episodes[key] = _Episode(
                r["patient_key"],
                key[1],
                r["severity"],
                r["status"],
                r["episode_id"],
                r["severity"],
            )
        else:
            latest[(r["patient_key"], r["rule_id"])] = r
    new: list[tuple[_Episode, Candidate]] = []
    absorbed: list[tuple[int, Candidate, bool]] = []  # (finding_id, firing, more severe)
    for c in sorted(candidates, key=lambda c: (c.fired_at_us, -c.severity)):
        job = RULES[c.rule_id].job
        current = latest.get((c.patient_key, c.rule_id))
        if current is not None and current["status"] == "open":
            more_severe = c.severity > current["severity"]
            absorbed.append((current["finding_id"], c, more_severe))
            episode = episodes[(c.patient_key, job)]
        elif current is not None and (
            c.fired_at_us <= current["last_fired_us"]
            or (
                c.fired_at_us <= current["last_fired_us"] + cooldown_us[c.severity]
                and c.severity <= current["severity"]
            )
        ):
            applied.dropped += 1
            continue
        else:
            episode = episodes.setdefault(
                (c.patient_key, job), _Episode(c.patient_key, job, int(c.severity), "open")
            )
            new.append((episode, c))
            episode.new_rules.append(c.rule_id)
        episode.first_us = min(episode.first_us or c.fired_at_us, c.fired_at_us)
        episode.last_us = max(episode.last_us, c.fired_at_us)
        episode.severity = max(episode.severity, int(c.severity))
    writes.opened = [e for e in episodes.values() if e.episode_id is None]
    writes.new = new
    writes.absorbed = absorbed
    writes.kept = [e for e in episodes.values() if e.was_severity]
    for e in writes.opened:
        applied.opened[(e.job.value, e.severity)] += 1
    for _, c in new:
        applied.findings[(c.rule_id, int(c.severity))] += 1
    applied.absorbed += sum(not up for _, _, up in absorbed)
    applied.escalated += sum(e.severity > e.was_severity for e in writes.kept)
    for e in episodes.values():
        if not e.was_severity:
            kind = "raised"
        elif e.severity > e.was_severity:
            kind = "escalated"
        elif e.new_rules:
            kind = "updated"
        else:
            continue
        status = "open" if kind != "updated" else e.status
        # An episode opened now has its id from the write statement: (patient, job) tells it.
        writes.events.append(
            (e.episode_id or 0, e.patient_key, kind, e.severity, status, {"rules": e.new_rules})
        )
        writes.event_jobs.append(e.job.value)
    applied.raise_latency_s.extend((now_us - c.fired_at_us) / 1e6 for _, c in new)
    applied.raise_latency_s.extend((now_us - c.fired_at_us) / 1e6 for _, c, up in absorbed if up)


_LOCK = """
WITH e AS (
    SELECT episode_id, patient_key, job, severity, status FROM episodes
    WHERE patient_key = ANY($1::int[]) AND status <> 'resolved'
    ORDER BY episode_id FOR UPDATE
), f AS (
    SELECT f.finding_id, f.episode_id, f.patient_key, f.rule_id, f.severity, f.status,
           (extract(epoch FROM f.last_fired_at) * 1e6)::bigint AS last_fired_us
    FROM unnest($2::int[], $3::text[]) AS c(p, r)
    CROSS JOIN LATERAL (
        SELECT * FROM findings WHERE patient_key = c.p AND rule_id = c.r
        ORDER BY finding_id DESC LIMIT 1 FOR UPDATE
    ) f
)
SELECT episode_id, patient_key, job, severity, status,
       NULL::bigint AS finding_id, NULL::text AS rule_id, NULL::bigint AS last_fired_us
FROM e
UNION ALL
SELECT episode_id, patient_key, NULL, severity, status, finding_id, rule_id, last_fired_us
FROM f
"""

# Everything a transaction writes about alerts, in one statement. Its parts touch
# different rows (episodes opened / kept, findings inserted / absorbed), so that none
# needs to see another's change, but for the ids of the episodes opened, which the
# findings and events of those episodes take from `opened` by (patient, job): at most
# one unresolved episode per patient and job. Ids are drawn in the order of the arrays,
# as by the separate statements before.
_WRITE = """
WITH opened AS (
    INSERT INTO episodes (patient_key, job, severity, severity_since, status,
                          first_fired_at, last_fired_at, opened_at)
    SELECT p, j, s, to_timestamp($1 / 1e6), 'open', to_timestamp(f / 1e6),
           to_timestamp(l / 1e6), to_timestamp($1 / 1e6)
    FROM unnest($2::int[], $3::text[], $4::smallint[], $5::bigint[], $6::bigint[])
         WITH ORDINALITY AS x(p, j, s, f, l, n)
    ORDER BY n
    RETURNING episode_id, patient_key, job
), new_findings AS (
    INSERT INTO findings (episode_id, patient_key, rule_id, rule_version, severity, status,
        first_fired_at, last_fired_at, raised_at, explanation)
    SELECT coalesce(nullif(c.e, 0), o.episode_id), c.p, c.r, c.v, c.s, 'open',
           to_timestamp(c.f / 1e6), to_timestamp(c.f / 1e6), to_timestamp($1 / 1e6), c.x::jsonb
    FROM unnest($7::bigint[], $8::int[], $9::text[], $10::int[], $11::smallint[],
                $12::bigint[], $13::text[], $14::text[])
         WITH ORDINALITY AS c(e, p, r, v, s, f, x, j, n)
    LEFT JOIN opened o ON c.e = 0 AND o.patient_key = c.p AND o.job = c.j
    ORDER BY c.n
    RETURNING 1
), absorbed AS (
    UPDATE findings f SET fire_count = f.fire_count + 1,
        last_fired_at = greatest(f.last_fired_at, to_timestamp(c.t / 1e6)),
        severity = CASE WHEN c.up THEN c.s ELSE f.severity END,
        explanation = CASE WHEN c.up THEN c.x::jsonb ELSE f.explanation END
    FROM unnest($15::bigint[], $16::bigint[], $17::bool[], $18::smallint[], $19::text[])
         AS c(id, t, up, s, x)
    WHERE f.finding_id = c.id
    RETURNING 1
), kept AS (
    UPDATE episodes e SET
        last_fired_at = greatest(e.last_fired_at, to_timestamp(c.l / 1e6)),
        severity = c.s,
        severity_since = CASE WHEN c.up THEN to_timestamp($1 / 1e6) ELSE e.severity_since END,
        status = CASE WHEN c.up THEN 'open' ELSE e.status END,
        snoozed_until = CASE WHEN c.up THEN NULL ELSE e.snoozed_until END
    FROM unnest($20::bigint[], $21::bigint[], $22::smallint[], $23::bool[]) AS c(id, l, s, up)
    WHERE e.episode_id = c.id
    RETURNING 1
), events AS (
    INSERT INTO episode_events (episode_id, patient_key, type, severity, status, at,
                                actor, detail)
    SELECT coalesce(nullif(x.e, 0), o.episode_id), x.p, x.t, x.s, x.st, to_timestamp($1 / 1e6),
           'telemon', x.d::jsonb
    FROM unnest($24::bigint[], $25::int[], $26::text[], $27::smallint[], $28::text[],
                $29::text[], $30::text[]) WITH ORDINALITY AS x(e, p, t, s, st, d, j, n)
    LEFT JOIN opened o ON x.e = 0 AND o.patient_key = x.p AND o.job = x.j
    ORDER BY x.n
    RETURNING 1
), scores AS (
"""


class _Writes:
    """What the alert step writes in its transaction, gathered for one statement."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us
        self.opened: list[_Episode] = []
        self.new: list[tuple[_Episode, Candidate]] = []
        self.absorbed: list[tuple[int, Candidate, bool]] = []
        self.kept: list[_Episode] = []
        self.events: list[Event] = []  # episode id 0: opened now (its job in event_jobs)
        self.event_jobs: list[str] = []  # "" for events of episodes that existed
        self.scores: list[ScoreRow] = []

    async def execute(self, conn: Connection) -> None:
        if not (
            self.opened or self.new or self.absorbed or self.kept or self.events or self.scores
        ):
            return
        jobs = [""] * (len(self.events) - len(self.event_jobs)) + self.event_jobs
        opened, new, absorbed, kept, events = (
            self.opened,
            self.new,
            self.absorbed,
            self.kept,
            self.events,
        )
        await conn.execute(
            _WRITE + scores_cte(30) + _NOTIFY,
            self.now_us,
            [e.patient_key for e in opened],
            [e.job.value for e in opened],
            [e.severity for e in opened],
            [e.first_us for e in opened],
            [e.last_us for e in opened],
            [e.episode_id or 0 for e, _ in new],
            [c.patient_key for _, c in new],
            [c.rule_id for _, c in new],
            [c.rule_version for _, c in new],
            [int(c.severity) for _, c in new],
            [c.fired_at_us for _, c in new],
            [json.dumps(c.explanation) for _, c in new],
            [e.job.value for e, _ in new],
            [finding_id for finding_id, _, _ in absorbed],
            [c.fired_at_us for _, c, _ in absorbed],
            [up for _, _, up in absorbed],
            [int(c.severity) for _, c, _ in absorbed],
            [json.dumps(c.explanation) if up else "" for _, c, up in absorbed],
            [e.episode_id for e in kept],
            [e.last_us for e in kept],
            [e.severity for e in kept],
            [e.severity > e.was_severity for e in kept],
            [e[0] for e in events],
            [e[1] for e in events],
            [e[2] for e in events],
            [e[3] for e in events],
            [e[4] for e in events],
            [json.dumps(e[5]) for e in events],
            jobs,
            *score_arrays(self.scores),
        )


_NOTIFY = """
) SELECT pg_notify('telemon_outbox', 'episode_events') FROM events LIMIT 1
"""
