"""Rules over stored history, without writing alerts: try a rule change before switching it on.

The engine is fed the stored readings in event-time order, one step (an hour
by default) at a time, as if each step had just arrived, and swept at the end
of every step. A warm-up before `start` fills the trend windows; what fires
during it is not reported.

Firings are grouped as the care team sees them (`Episodes`, the model of
docs/alerts.md, "Episodes"): each firing is a finding of its rule; a patient
has at most one unresolved episode per job (review the patient, chase the
data), which the findings join. Who resolves episodes, and when, is a
`Clinicians` policy: a replay's clinicians resolve an episode once its
findings have been quiet for the cool-down of its severity, so a replay of
one rule counts that rule's episodes as the lifecycle would raise them;
loadtests/alert_cohort.py models a care team that calls the patient.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from alerts.catalogue import RESOLVED_BY_DATA, RULES
from alerts.engine import Candidate, Engine
from alerts.history import DAY_US, HOUR_US
from alerts.loader import load_profiles
from alerts.model import Disposition, Job, Severity
from alerts.programmes import AlertConfig, ConfigError, check_parameter
from devices.registry import Programme
from ingest.platform import Connection

__all__ = [
    "Clinicians",
    "Episode",
    "Episodes",
    "Finding",
    "QuietForCooldown",
    "ReplayReport",
    "replay",
]

WARM_UP_US = 14 * DAY_US  # the longest trend window (CGM time below range)


@dataclass(slots=True)
class Finding:
    """A rule's firings for a patient while unresolved: one finding of an episode."""

    rule_id: str
    severity: Severity
    first_us: int
    last_us: int
    firings: int = 1
    data_since_us: int | None = None  # a missing-data finding: the data that resolves it
    resolved_us: int | None = None


@dataclass(slots=True)
class Episode:
    """What the care team handles: a patient's findings of one job, until resolved."""

    patient_key: int
    job: Job
    severity: Severity
    opened_us: int
    findings: list[Finding] = field(default_factory=list)
    raised_us: dict[Severity, int] = field(default_factory=dict)  # when it reached each
    alerting_us: list[int] = field(default_factory=list)  # its orange and red firings
    resolved_us: int | None = None
    disposition: Disposition | None = None

    @property
    def last_us(self) -> int:
        return max(f.last_us for f in self.findings)

    def reached(self, severity: Severity) -> int | None:
        """When the episode first reached `severity` or above (None: it has not)."""
        times = [t for s, t in self.raised_us.items() if s >= severity]
        return min(times) if times else None


class Clinicians(Protocol):
    def resolution(self, episode: Episode) -> tuple[int, Disposition] | None:
        """When (event time) and how the care team resolves this open episode as it stands,
        or None while they would not. Asked again whenever the episode changes."""
        ...


@dataclass(frozen=True, slots=True)
class QuietForCooldown:
    """A replay's clinicians: an episode is resolved once its findings have been quiet for
    the cool-down of its severity (no disposition is known: "no action needed")."""

    cooldown_us: Mapping[Severity, int]

    def resolution(self, episode: Episode) -> tuple[int, Disposition] | None:
        return episode.last_us + self.cooldown_us[episode.severity], Disposition.CALLED_NO_ACTION


class Episodes:
    """Candidates grouped into patient episodes, in event time (docs/alerts.md, "Episodes").

    For each candidate (patient, rule, severity, fired_at), after the care team's
    resolutions due by then: the rule's unresolved finding in the patient's open episode
    of its job absorbs it (its severity rises with a more severe firing, and the
    episode's); otherwise, against the rule's latest (resolved) finding, a firing at or
    before its last firing is old news, and one within the cool-down of its own severity
    and no more severe is dropped; otherwise it is a new finding, joining the open
    episode of its job (escalating it if more severe) or opening one. Missing-data
    findings are resolved by the data they wait for (`arrived`); a data episode whose
    findings are all resolved closes itself."""

    def __init__(self, cooldown_us: Mapping[Severity, int], clinicians: Clinicians) -> None:
        self._cooldown_us = cooldown_us
        self._clinicians = clinicians
        self._open: dict[tuple[int, Job], Episode] = {}
        self._latest: dict[tuple[int, str], Finding] = {}
        self._ended: dict[int, int] = {}  # patient -> end of follow-up
        self.all: list[Episode] = []
        self.dropped = 0

    def add(self, candidates: Iterable[Candidate]) -> None:
        for c in sorted(candidates, key=lambda c: c.fired_at_us):
            self._add(c)

    def _add(self, c: Candidate) -> None:
        ended = self._ended.get(c.patient_key)
        if ended is not None and c.fired_at_us >= ended:
            return  # after the follow-up ended
        self.settle(c.patient_key, c.fired_at_us)
        job = RULES[c.rule_id].job
        episode = self._open.get((c.patient_key, job))
        latest = self._latest.get((c.patient_key, c.rule_id))
        if episode is not None and latest is not None and latest.resolved_us is None:
            latest.firings += 1
            latest.last_us = max(latest.last_us, c.fired_at_us)
            latest.severity = max(latest.severity, c.severity)
            self._since(latest, c)
            self._raise(episode, c.severity, c.fired_at_us)
            return
        if latest is not None and (
            c.fired_at_us <= latest.last_us
            or (
                c.fired_at_us <= latest.last_us + self._cooldown_us[c.severity]
                and c.severity <= latest.severity
            )
        ):
            self.dropped += 1
            return
        finding = Finding(c.rule_id, c.severity, c.fired_at_us, c.fired_at_us)
        self._since(finding, c)
        self._latest[(c.patient_key, c.rule_id)] = finding
        if episode is None:
            episode = Episode(c.patient_key, job, c.severity, c.fired_at_us)
            episode.raised_us[c.severity] = c.fired_at_us
            self._open[(c.patient_key, job)] = episode
            self.all.append(episode)
        episode.findings.append(finding)
        self._raise(episode, c.severity, c.fired_at_us)

    @staticmethod
    def _since(finding: Finding, c: Candidate) -> None:
        if c.rule_id in RESOLVED_BY_DATA:
            since_s = c.explanation["values"].get("data_since_s") or 0.0
            finding.data_since_us = max(finding.data_since_us or 0, int(since_s * 1e6))

    @staticmethod
    def _raise(episode: Episode, severity: Severity, at_us: int) -> None:
        if severity > episode.severity:
            episode.severity = severity
        episode.raised_us.setdefault(severity, at_us)
        if severity >= Severity.ORANGE:
            episode.alerting_us.append(at_us)

    def arrived(self, patient_key: int, kind: int, measured_at_us: int) -> None:
        """Data of a kind arrived: it resolves the missing-data findings waiting for it."""
        episode = self._open.get((patient_key, Job.DATA))
        if episode is None:
            return
        for f in episode.findings:
            if (
                f.resolved_us is None
                and f.data_since_us is not None
                and kind in RESOLVED_BY_DATA[f.rule_id]
                and measured_at_us >= f.data_since_us
            ):
                f.resolved_us = max(measured_at_us, f.last_us)
        if all(f.resolved_us is not None for f in episode.findings):
            self._close(episode, max(f.resolved_us or 0 for f in episode.findings))
            episode.disposition = Disposition.DATA_RECEIVED

    def settle(self, patient_key: int, now_us: int) -> None:
        """Apply the care team's resolutions of this patient's episodes due by `now_us`."""
        for job in Job:
            episode = self._open.get((patient_key, job))
            if episode is None:
                continue
            due = self._clinicians.resolution(episode)
            if due is not None and due[0] <= now_us:
                self._close(episode, due[0])
                episode.disposition = due[1]

    def end_follow_up(self, patient_key: int, at_us: int, disposition: Disposition) -> None:
        """The patient's follow-up ends (a hospitalisation): what is open is resolved."""
        self.settle(patient_key, at_us)
        for job in Job:
            episode = self._open.get((patient_key, job))
            if episode is not None:
                self._close(episode, at_us)
                episode.disposition = disposition
        self._ended[patient_key] = at_us

    def finish(self, now_us: int) -> None:
        """The care team's resolutions due by `now_us`, for every patient."""
        for patient_key in {p for p, _ in self._open}:
            self.settle(patient_key, now_us)

    def _close(self, episode: Episode, at_us: int) -> None:
        episode.resolved_us = at_us
        for f in episode.findings:
            if f.resolved_us is None:
                f.resolved_us = at_us
        del self._open[(episode.patient_key, episode.job)]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    rule_id: str
    start_us: int
    end_us: int
    readings: int
    patients: int
    episodes: list[tuple[str, Episode]]  # (patient_id, episode) opened in the period

    def by_day(self) -> list[tuple[str, str, int, int]]:
        """(day, severity, episodes, patients) rows, for people to read."""
        counts: Counter[tuple[str, str]] = Counter()
        patients: dict[tuple[str, str], set[str]] = {}
        for patient_id, e in self.episodes:
            day = np.datetime64(e.opened_us, "us").astype("datetime64[D]").astype(str)
            key = (day, e.severity.label)
            counts[key] += 1
            patients.setdefault(key, set()).add(patient_id)
        return [(d, s, n, len(patients[(d, s)])) for (d, s), n in sorted(counts.items())]


async def replay(
    conn: Connection,
    config: AlertConfig,
    rule_id: str,
    start_us: int,
    end_us: int,
    *,
    parameters: Mapping[str, float] | None = None,
    programmes: Iterable[Programme] | None = None,
    step_us: int = HOUR_US,
) -> ReplayReport:
    """What `rule_id` (with `parameters` changed for everyone) would have raised in
    [start, end), for the patients of `programmes` (default: the programmes that run it)."""
    if rule_id not in RULES:
        raise ConfigError(f"unknown rule {rule_id!r} (see `telemon rules list`)")
    parameters = dict(parameters or {})
    for name, value in parameters.items():
        check_parameter(name, value)
    chosen = set(programmes or [p for p, c in config.programmes.items() if rule_id in c.rules])
    engine = Engine(_only(config, rule_id, chosen, parameters))
    patients = await conn.fetch(
        "SELECT patient_key, patient_id FROM patients WHERE programme = ANY($1::text[]) "
        "AND enrolled_at < to_timestamp($2 / 1e6)",
        [p.value for p in chosen],
        end_us,
    )
    ids = {r["patient_key"]: r["patient_id"] for r in patients}
    await load_profiles(conn, engine, list(ids), 1)
    episodes = Episodes(config.cooldown_us, QuietForCooldown(config.cooldown_us))
    readings = 0
    step_start = start_us - WARM_UP_US
    while step_start < end_us:
        step_end = min(step_start + step_us, end_us)
        readings += await _step(conn, engine, episodes, list(ids), step_start, step_end)
        step_start = step_end
    episodes.finish(end_us)
    started = [(ids[e.patient_key], e) for e in episodes.all if e.opened_us >= start_us]
    return ReplayReport(rule_id, start_us, end_us, readings, len(ids), started)


async def _step(
    conn: Connection,
    engine: Engine,
    episodes: Episodes,
    keys: list[int],
    start_us: int,
    end_us: int,
) -> int:
    rows = await conn.fetch(
        """
        SELECT patient_key, kind, value, device_key,
               (extract(epoch FROM measured_at) * 1e6)::bigint AS at_us
        FROM readings
        WHERE patient_key = ANY($1::int[])
          AND measured_at >= to_timestamp($2 / 1e6) AND measured_at < to_timestamp($3 / 1e6)
        ORDER BY measured_at
        """,
        keys,
        start_us,
        end_us,
    )
    if rows:
        at = np.array([r["at_us"] for r in rows], np.int64)
        episodes.add(
            engine.evaluate(
                np.array([r["patient_key"] for r in rows], np.int32),
                np.array([r["kind"] for r in rows], np.int16),
                np.array([r["value"] for r in rows], np.float64),
                at,
                np.full(len(rows), end_us, np.int64),
                np.array([r["device_key"] for r in rows], np.int32),
            )
        )
    episodes.add(engine.sweep({0: end_us}))
    return len(rows)


def _only(
    config: AlertConfig, rule_id: str, programmes: set[Programme], parameters: Mapping[str, float]
) -> AlertConfig:
    """The configuration with `rule_id` as the only rule of the chosen programmes."""
    chosen = {}
    for programme, entry in config.programmes.items():
        rules = (rule_id,) if programme in programmes else ()
        chosen[programme] = dataclasses.replace(
            entry, rules=rules, parameters={**entry.parameters, **parameters}
        )
    return dataclasses.replace(config, programmes=chosen)
