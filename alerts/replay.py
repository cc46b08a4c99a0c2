"""Rules over stored history, without writing alerts: try a rule change before switching it on.

The engine is fed the stored readings in event-time order, one step (an hour
by default) at a time, as if each step had just arrived, and swept at the end
of every step. A warm-up before `start` fills the trend windows; what fires
during it is not reported. Firings become episodes as the lifecycle would
make them, without clinicians: a firing within the cool-down of the
episode's last firing belongs to it (escalating it if more severe), a later
one opens a new episode. Missing-data episodes are not closed by data here,
so a replay may count fewer of them than production would.

The same episode logic judges a simulated cohort (loadtests/alert_cohort.py).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from alerts.catalogue import RULES
from alerts.engine import Candidate, Engine
from alerts.history import DAY_US, HOUR_US
from alerts.loader import load_profiles
from alerts.model import Severity
from alerts.programmes import AlertConfig, ConfigError, check_parameter
from devices.registry import Programme
from ingest.platform import Connection

__all__ = ["Episode", "Episodes", "ReplayReport", "replay"]

WARM_UP_US = 14 * DAY_US  # the longest trend window (CGM time below range)


@dataclass(slots=True)
class Episode:
    patient_key: int
    rule_id: str
    severity: Severity
    first_us: int
    last_us: int
    firings: int = 1


class Episodes:
    """Candidates grouped into clinical episodes by the cool-down, in event time."""

    def __init__(self, cooldown_us: Mapping[Severity, int]) -> None:
        self._cooldown_us = cooldown_us
        self._latest: dict[tuple[int, str], Episode] = {}
        self.all: list[Episode] = []

    def add(self, candidates: Iterable[Candidate]) -> None:
        for c in candidates:
            key = (c.patient_key, c.rule_id)
            episode = self._latest.get(key)
            if (
                episode is not None
                and c.fired_at_us <= episode.last_us + self._cooldown_us[episode.severity]
            ):
                episode.severity = max(episode.severity, c.severity)
                episode.last_us = max(episode.last_us, c.fired_at_us)
                episode.firings += 1
            else:
                episode = Episode(
                    c.patient_key, c.rule_id, c.severity, c.fired_at_us, c.fired_at_us
                )
                self._latest[key] = episode
                self.all.append(episode)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    rule_id: str
    start_us: int
    end_us: int
    readings: int
    patients: int
    episodes: list[tuple[str, Episode]]  # (patient_id, episode) that started in the period

    def by_day(self) -> list[tuple[str, str, int, int]]:
        """(day, severity, episodes, patients) rows, for people to read."""
        counts: Counter[tuple[str, str]] = Counter()
        patients: dict[tuple[str, str], set[str]] = {}
        for patient_id, e in self.episodes:
            day = np.datetime64(e.first_us, "us").astype("datetime64[D]").astype(str)
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
    episodes = Episodes(config.cooldown_us)
    readings = 0
    step_start = start_us - WARM_UP_US
    while step_start < end_us:
        step_end = min(step_start + step_us, end_us)
        readings += await _step(conn, engine, episodes, list(ids), step_start, step_end)
        step_start = step_end
    started = [(ids[e.patient_key], e) for e in episodes.all if e.first_us >= start_us]
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
