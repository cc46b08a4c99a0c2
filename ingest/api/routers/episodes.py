"""Episodes: the worklist (one row per patient and job), one episode, a patient's history,
and what clinicians do to an episode (acknowledge, resolve with a disposition, snooze,
escalate)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Header, Query, Request

from alerts import actions
from alerts.messages import Words, language_of, words
from alerts.model import Severity
from alerts.outbox import EPISODE_COLUMNS, episode_json
from devices.catalogue import BY_KIND, ValueType
from ingest.api.access import Api, ApiContext, Refused, Session, WhoAsks, audited, the_patient
from ingest.api.auth import Clinician
from ingest.api.schemas import (
    DbId,
    EpisodeOut,
    ErrorOut,
    Name,
    Note,
    Offset,
    PatientId,
    Resolution,
    SnoozeRequest,
    Worklist,
)
from ingest.api.stream import current_position
from ingest.platform import Connection

__all__ = ["localised", "router"]

router = APIRouter(tags=["episodes"])

SEVERITIES = {s.label: s.value for s in Severity}
Lang = Annotated[str | None, Query(description="fr or en (default: the browser's, then fr)")]
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The episode is already resolved."}
}

_EPISODES = f"""
    SELECT ep.patient_key, {EPISODE_COLUMNS}
    FROM episodes ep JOIN patients p ON p.patient_key = ep.patient_key
"""
# The page of episodes first, then its patients. Row-level security hides from the planner
# how few patients a clinician follows (a team of 5,000 among a million is estimated at half
# the table): joined before the limit, every patient row was read (145 ms at 1M patients;
# 40 ms so). The programme, when asked, is looked up for the team's episodes only.
_WORKLIST = f"""
    WITH page AS MATERIALIZED (
        SELECT ep.episode_id, ep.patient_key FROM episodes ep
        WHERE ep.status <> 'resolved' AND ep.severity = ANY($1::int[])
          AND ($2::text IS NULL
               OR (SELECT p.programme FROM patients p WHERE p.patient_key = ep.patient_key) = $2)
          AND ($3::text IS NULL OR ep.job = $3) AND (NOT $4 OR ep.status = 'open')
        ORDER BY ep.severity DESC, ep.severity_since, ep.episode_id LIMIT $5 OFFSET $6
    )
    {_EPISODES}
    WHERE ep.episode_id = ANY(ARRAY(SELECT episode_id FROM page))
      AND p.patient_key = ANY(ARRAY(SELECT patient_key FROM page))
    ORDER BY ep.severity DESC, ep.severity_since, ep.episode_id
"""
# The vitals a worklist row shows: measurements, not questionnaire answers.
_SHOWN_KINDS = [v.code for v in BY_KIND.values() if v.value_type is ValueType.MEASUREMENT]


@router.get("/api/v1/worklist", response_model=Worklist)
async def worklist(
    request: Request,
    api: Api,
    who: WhoAsks,
    programme: Name | None = None,
    severity: Annotated[list[Literal["info", "orange", "red"]] | None, Query()] = None,
    job: Literal["clinical", "data"] | None = None,
    unacknowledged: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
    offset: Offset = 0,
    lang: Lang = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """The unresolved episodes of the clinician's patients, most severe first, then the
    longest wait: one row per patient and job, with the patient's latest vitals."""
    language = words(language_of(lang, accept_language, api.language))
    severities = [SEVERITIES[s] for s in severity or SEVERITIES]
    async with audited(request, who, "R", "episode.search", None) as s:
        fetched = await s.conn.fetch(
            _WORKLIST,
            severities,
            programme,
            job,
            unacknowledged,
            limit + 1,
            offset,
        )
        more = len(fetched) > limit
        shown = fetched[:limit]
        counts = await s.conn.fetch(
            "SELECT severity, count(*) AS n, count(*) FILTER (WHERE status = 'open') AS fresh "
            "FROM episodes WHERE status <> 'resolved' GROUP BY severity"
        )
        keys = [r["patient_key"] for r in shown]
        vitals = await _latest_vitals(s.conn, keys)
        names = await _display_names(s.conn, [r["patient_id"] for r in shown], api.source)
        position = await current_position(s.conn)
    return {
        "rows": [
            {
                "episode": localised(episode_json(r), language, api),
                "patient": {
                    "patient_id": r["patient_id"],
                    "display_name": names.get(r["patient_id"]),
                    "programme": r["programme"],
                    "day_of_follow_up": (datetime.now(UTC) - r["enrolled_at"]).days,
                },
                "latest_vitals": [
                    {**v, "label": language.kind(v["kind"]), "unit": language.unit(v["unit"])}
                    for v in vitals.get(r["patient_key"], [])
                ],
            }
            for r in shown
        ],
        "counts": {
            s.label: next((c["n"] for c in counts if c["severity"] == s.value), 0) for s in Severity
        },
        "unacknowledged": sum(c["fresh"] for c in counts),
        "next_offset": offset + limit if more else None,
        "feed_position": str(position),
    }


@router.get("/api/v1/episodes/{episode_id}", response_model=EpisodeOut)
async def get_episode(
    request: Request,
    api: Api,
    who: WhoAsks,
    episode_id: DbId,
    lang: Lang = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    language = words(language_of(lang, accept_language, api.language))
    async with audited(request, who, "R", "episode.read", None) as s:
        row = await _the_episode(s, episode_id)
    return localised(episode_json(row), language, api)


@router.get("/api/v1/patients/{patient_id}/episodes", response_model=list[EpisodeOut])
async def patient_episodes(
    request: Request,
    api: Api,
    who: WhoAsks,
    patient_id: PatientId,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    lang: Lang = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> list[dict[str, Any]]:
    """The patient's episodes, the latest first, with their findings and dispositions."""
    language = words(language_of(lang, accept_language, api.language))
    async with audited(request, who, "R", "episode.history", patient_id) as s:
        key = await the_patient(s, patient_id)
        rows = await s.conn.fetch(
            f"{_EPISODES} WHERE ep.patient_key = $1 ORDER BY ep.episode_id DESC LIMIT $2",
            key,
            limit,
        )
    return [localised(episode_json(r), language, api) for r in rows]


@router.post(
    "/api/v1/episodes/{episode_id}/acknowledge", response_model=EpisodeOut, responses=_CONFLICT
)
async def acknowledge(
    request: Request, api: Api, who: WhoAsks, episode_id: DbId, lang: Lang = None
) -> dict[str, Any]:
    """Someone is on it: the episode leaves the new items (and silences its banner)."""
    action = _Action(request, api, who, episode_id, lang)
    return await action.run(
        "acknowledge", lambda c: actions.acknowledge(c, episode_id, who.subject)
    )


@router.post(
    "/api/v1/episodes/{episode_id}/resolve", response_model=EpisodeOut, responses=_CONFLICT
)
async def resolve(
    request: Request,
    api: Api,
    who: WhoAsks,
    episode_id: DbId,
    body: Resolution,
    lang: Lang = None,
) -> dict[str, Any]:
    """Done, and what was done: the disposition (docs/alerts.md) and a free note."""
    if not body.disposition.chosen_by_clinicians:
        raise Refused(400, f"disposition: {body.disposition.value!r} is recorded by telemon")
    action = _Action(request, api, who, episode_id, lang)
    return await action.run(
        "resolve",
        lambda c: actions.resolve(c, episode_id, who.subject, body.disposition, body.note),
    )


@router.post("/api/v1/episodes/{episode_id}/snooze", response_model=EpisodeOut, responses=_CONFLICT)
async def snooze(
    request: Request,
    api: Api,
    who: WhoAsks,
    episode_id: DbId,
    body: SnoozeRequest,
    lang: Lang = None,
) -> dict[str, Any]:
    if body.until <= datetime.fromtimestamp(api.clock.now_ms() / 1000, UTC):
        raise Refused(400, "until: must be in the future")
    action = _Action(request, api, who, episode_id, lang)
    return await action.run(
        "snooze", lambda c: actions.snooze(c, episode_id, who.subject, body.until)
    )


@router.post(
    "/api/v1/episodes/{episode_id}/escalate", response_model=EpisodeOut, responses=_CONFLICT
)
async def escalate(
    request: Request, api: Api, who: WhoAsks, episode_id: DbId, body: Note, lang: Lang = None
) -> dict[str, Any]:
    """To red: a clinician's judgement, or a hand-over to the physician on call."""
    action = _Action(request, api, who, episode_id, lang)
    return await action.run(
        "escalate", lambda c: actions.escalate(c, episode_id, who.subject, body.note)
    )


@dataclass(frozen=True, slots=True)
class _Action:
    """A clinician acting on an episode: audited, refused once it is resolved, timed."""

    request: Request
    api: ApiContext
    who: Clinician
    episode_id: int
    lang: str | None

    async def run(
        self, subtype: str, change: Callable[[Connection], Awaitable[None]]
    ) -> dict[str, Any]:
        api = self.api
        accept = self.request.headers.get("accept-language")
        language = words(language_of(self.lang, accept, api.language))
        async with audited(self.request, self.who, "U", f"episode.{subtype}", None) as s:
            before = await _the_episode(s, self.episode_id)
            if before["episode_status"] == "resolved":
                raise Refused(409, f"episode {self.episode_id} is already resolved")
            try:
                await change(s.conn)
            except actions.EpisodeActionError as error:  # resolved since, by someone else
                raise Refused(409, str(error)) from error
            after = await _the_episode(s, self.episode_id)
        handled = {
            "acknowledge": api.metrics.time_to_acknowledge,
            "resolve": api.metrics.time_to_resolve,
        }
        if subtype in handled and after["episode_status"] != before["episode_status"]:
            waited = (datetime.now(UTC) - before["severity_since"]).total_seconds()
            handled[subtype].labels(Severity(before["episode_severity"]).label).observe(waited)
        return localised(episode_json(after), language, api)


async def _the_episode(s: Session, episode_id: int) -> asyncpg.Record:
    row = await s.conn.fetchrow(f"{_EPISODES} WHERE ep.episode_id = $1", episode_id)
    if row is None:  # absent, or another team's: one answer
        raise Refused(404, f"no episode {episode_id} among your care teams' patients")
    s.patient_id = row["patient_id"]
    return row


def localised(episode: dict[str, Any], language: Words, api: ApiContext) -> dict[str, Any]:
    """An episode with its words in the reader's language: rule titles, findings in
    clinical words, the disposition."""
    timezone = api.config.timezone
    for finding in episode["findings"]:
        explanation = finding["explanation"]
        if isinstance(explanation, str):
            explanation = finding["explanation"] = json.loads(explanation)
        finding["title"] = language.rule_title(finding["rule_id"])
        finding["summary"] = language.finding(explanation, finding["severity"], timezone)
    disposition = episode["disposition"]
    episode["disposition_label"] = (
        language.section("disposition").get(disposition) if disposition else None
    )
    return episode


async def _latest_vitals(
    conn: Connection, patient_keys: Sequence[int]
) -> Mapping[int, list[dict[str, Any]]]:
    """Each patient's latest value of each measured vital, over the last three days."""
    if not patient_keys:
        return {}
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (r.patient_key, r.kind) r.patient_key, k.kind, r.value, k.unit,
               r.measured_at
        FROM readings r JOIN vital_kinds k ON k.code = r.kind
        WHERE r.patient_key = ANY($1::int[]) AND r.kind = ANY($2::smallint[])
          AND r.measured_at > now() - interval '3 days' AND r.measured_at <= now()
        ORDER BY r.patient_key, r.kind, r.measured_at DESC
        """,
        list(patient_keys),
        _SHOWN_KINDS,
    )
    vitals: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        vitals.setdefault(r["patient_key"], []).append(
            {k: r[k] for k in ("kind", "value", "unit", "measured_at")}
        )
    return vitals


async def _display_names(
    conn: Connection, patient_ids: Sequence[str], source: str
) -> Mapping[str, str]:
    """The names of those patients whose identity the clinician reads (each read audited by
    the database)."""
    if not patient_ids:
        return {}
    rows = await conn.fetch(
        "SELECT patient_id, display_name FROM patient_display_names($1::text[], $2)",
        list(patient_ids),
        source,
    )
    return {r["patient_id"]: r["display_name"] for r in rows}
