"""The alert rules over the simulator's honest cohort, today's rules beside the current ones,
in the same run: are worsening patients alerted early enough, and what does it cost the
care team?

The simulator's messages (send-time order) go through the decoder and two engines in
batches, with a sweep every simulated hour: one runs *today's rules* (the rules and
parameters before issue 18: no confirmation, no usual SpO2, no trend rules, the SpO2
baseline of version 1), grouped as today's lifecycle does (one alert per patient and rule,
a firing within the cool-down of the last one belongs to it); the other runs the current
rules (alerts/programmes.toml), grouped into patient episodes (alerts.replay.Episodes)
handled by a modelled care team (`CareTeam`, docs/alerts.md "The cohort's care team").

A worsening patient's follow-up ends at their hospitalisation. Figures:
- alerted before the hospitalisation: an orange or red clinical firing between onset and
  hospitalisation; the lead time is from the first one to the hospitalisation;
- worklist items per deterioration: the orange or red items (alerts today, episodes now,
  both jobs) with an orange or red firing between onset and hospitalisation (an item
  opened before the onset and still open counts, from its first firing after it);
- stable patients: orange or red clinical items per 10 patient-days (the missing-data
  items, which chase data, are counted apart).

    python -m loadtests.alert_cohort                    # 5,000 patients, 14 days
    python -m loadtests.alert_cohort --patients 600 --days 12 --covid-only
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from alerts.catalogue import RULES
from alerts.engine import Candidate, Engine, PatientProfile
from alerts.model import Disposition, Job, Severity
from alerts.programmes import AlertConfig, load_config
from alerts.replay import Episode, Episodes
from devices.decode import Decoder
from devices.registry import Programme
from devices.simulator import CohortConfig, SimPatient, Simulation, build_cohort
from tests.records import Record

__all__ = ["CareTeam", "CohortFigures", "Figures", "RuleAlerts", "judge", "report", "todays_rules"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
HOUR_US = 1000 * HOUR_MS
NAN = float("nan")

# What issue 18 added or changed, and how today's rules read: switched back by parameter.
NEW_RULES = frozenset({"baseline_deviation", "news2_rising", "spo2_unconfirmed"})
TODAY: Mapping[str, float] = {
    "spo2_scale1.confirm": 0,
    "spo2_scale1.below_usual_points": NAN,
    "spo2_covid.confirm": 0,
    "spo2_covid.below_usual_points": NAN,
    "spo2_scale2.confirm": 0,
    "heart_rate.confirm": 0,
    "news2.confirm": 0,
    "spo2_drop_baseline.drop_points": 3,
    "spo2_drop_baseline.recent_hours": 0,
    "spo2_drop_baseline.baseline_days": 7,
    "spo2_drop_baseline.min_readings": 5,
}


def todays_rules(config: AlertConfig) -> AlertConfig:
    """`config` with the rules and parameters of before issue 18."""
    programmes = {}
    for programme, entry in config.programmes.items():
        rules = tuple(r for r in entry.rules if r not in NEW_RULES)
        mine = {k: v for k, v in TODAY.items() if k.partition(".")[0] in rules}
        programmes[programme] = dataclasses.replace(
            entry, rules=rules, parameters={**entry.parameters, **mine}
        )
    return dataclasses.replace(config, programmes=programmes)


@dataclass(frozen=True, slots=True)
class CareTeam:
    """The cohort's clinicians (docs/alerts.md). An episode is handled `call_hours` after it
    reached its severity (red 1 h, orange 4 h, info 12 h): the patient is called. A call
    finds a deteriorating patient (onset passed, not yet hospitalised) worse: their orange
    or red episode stays open, watched, until the hospitalisation, resolved "sent to
    emergency or hospitalised"; anything else is resolved then ("no action needed", data
    items "data chased", unless the awaited data came first)."""

    deteriorating: Mapping[int, tuple[int, int]]  # patient -> (onset, hospitalisation), µs
    call_us: Mapping[Severity, int] = field(
        default_factory=lambda: {
            Severity.RED: HOUR_US,
            Severity.ORANGE: 4 * HOUR_US,
            Severity.INFO: 12 * HOUR_US,
        }
    )

    def resolution(self, episode: Episode) -> tuple[int, Disposition] | None:
        reached = episode.reached(episode.severity)
        assert reached is not None
        call = reached + self.call_us[episode.severity]
        if episode.job is Job.DATA:
            return call, Disposition.DATA_CHASED
        window = self.deteriorating.get(episode.patient_key)
        if episode.severity >= Severity.ORANGE and window and window[0] <= call < window[1]:
            return None  # watched until the hospitalisation
        return call, Disposition.CALLED_NO_ACTION


@dataclass(slots=True)
class RuleAlert:
    """Today's unit of work: one alert per (patient, rule) episode of the cool-down."""

    patient_key: int
    rule_id: str
    severity: Severity
    first_us: int
    last_us: int
    alerting_us: list[int]  # its orange and red firings


class RuleAlerts:
    """Today's grouping: a firing within the cool-down of the alert's last firing belongs
    to it (escalating it if more severe), a later one raises a new alert."""

    def __init__(self, cooldown_us: Mapping[Severity, int]) -> None:
        self._cooldown_us = cooldown_us
        self._latest: dict[tuple[int, str], RuleAlert] = {}
        self.all: list[RuleAlert] = []

    def add(self, candidates: Iterable[Candidate]) -> None:
        for c in candidates:
            alert = self._latest.get((c.patient_key, c.rule_id))
            if (
                alert is not None
                and c.fired_at_us <= alert.last_us + self._cooldown_us[alert.severity]
            ):
                alert.severity = max(alert.severity, c.severity)
                alert.last_us = max(alert.last_us, c.fired_at_us)
            else:
                alert = RuleAlert(
                    c.patient_key, c.rule_id, c.severity, c.fired_at_us, c.fired_at_us, []
                )
                self._latest[(c.patient_key, c.rule_id)] = alert
                self.all.append(alert)
            if c.severity >= Severity.ORANGE:
                alert.alerting_us.append(c.fired_at_us)


@dataclass(frozen=True, slots=True)
class Item:
    """An orange or red item of a worklist, as the figures count it."""

    patient_key: int
    rule_ids: tuple[str, ...]  # the rule (today), or the findings' rules (episodes)
    clinical: bool
    alerting_us: tuple[int, ...]  # its orange and red firings, in time order

    def alerting_between(self, start_us: int, end_us: int) -> int | None:
        """Its first orange or red firing in [start, end): an item opened before a
        deterioration, still open, counts from the first firing of the deterioration."""
        return min((t for t in self.alerting_us if start_us <= t < end_us), default=None)


@dataclass(frozen=True, slots=True)
class Figures:
    """One rule set's figures on the cohort."""

    worsening: int
    alerted: int  # worsening patients alerted before their hospitalisation
    lead_hours: list[tuple[float, float]]  # (deterioration hours, lead hours) per alerted
    items_per_deterioration: list[int]  # per worsening patient
    clinical_items_per_deterioration: list[int]
    stable_patient_days: float
    stable_clinical: Counter[str]  # stable patients' orange/red clinical items, by rule
    stable_data: int  # and their orange/red data items
    stable_clinical_items: int

    @property
    def stable_per_10_patient_days(self) -> float:
        return 10 * self.stable_clinical_items / self.stable_patient_days

    @property
    def stable_data_per_10_patient_days(self) -> float:
        return 10 * self.stable_data / self.stable_patient_days

    def median_lead(self, at_least_hours: float = 0) -> float:
        leads = [lead for hours, lead in self.lead_hours if hours >= at_least_hours]
        return statistics.median(leads) if leads else NAN


@dataclass(frozen=True, slots=True)
class CohortFigures:
    patients: int
    days: float
    today: Figures
    now: Figures
    now_findings: Counter[str]  # stable patients' orange/red findings, by rule (now)


def judge(config: CohortConfig, batch: int = 2_000) -> CohortFigures:
    """Run the cohort's `config.days` through both rule sets and judge them."""
    cohort = build_cohort(config)
    keys = {p.patient_id: n for n, p in enumerate(cohort, start=1)}
    device_keys = {d.device_id: n for n, d in enumerate((d for p in cohort for d in p.devices), 1)}
    current = load_config()
    engines = (Engine(todays_rules(current)), Engine(current))
    for engine in engines:
        engine.add_patients(
            PatientProfile(
                keys[p.patient_id],
                p.programme,
                config.start_ms * 1000,
                0,
                [(device_keys[d.device_id], d.model.device_type) for d in p.devices],
            )
            for p in cohort
        )
    deteriorating = {
        keys[p.patient_id]: (p.worsening.onset_ms * 1000, p.worsening.hospitalised_ms * 1000)
        for p in cohort
        if p.worsening
    }
    alerts = RuleAlerts(current.cooldown_us)
    episodes = Episodes(current.cooldown_us, CareTeam(deteriorating))
    hospitalisations = sorted((hospital, key) for key, (_, hospital) in deteriorating.items())
    decoder = Decoder(max_message_bytes=1 << 20, future_tolerance_s=300)
    end_ms = config.start_ms + int(config.days * DAY_MS)
    next_sweep_ms = config.start_ms + HOUR_MS
    messages = itertools.takewhile(
        lambda m: m.timestamp_ms < end_ms, Simulation(cohort, start_ms=config.start_ms, seed=3)
    )
    for chunk in iter(lambda: list(itertools.islice(messages, batch)), []):
        now_ms = chunk[-1].timestamp_ms
        while hospitalisations and hospitalisations[0][0] <= now_ms * 1000:
            at_us, key = heapq.heappop(hospitalisations)
            episodes.end_follow_up(key, at_us, Disposition.EMERGENCY)
            for engine in engines:
                engine.set_discharged([key])
        decoded = decoder.decode(
            [
                Record(m.value, m.key, offset=i, timestamp=m.timestamp_ms)
                for i, m in enumerate(chunk)
            ],
            now_ms,
        )
        patient = np.array([keys[p] for p in decoded.messages.patient_id], np.int32)
        device = np.array([device_keys[d] for d in decoded.messages.device_id], np.int32)
        columns = (
            patient[decoded.message],
            decoded.kind,
            decoded.value,
            decoded.measured_at_us,
            decoded.reference_us,
            device[decoded.message],
        )
        alerts.add(engines[0].evaluate(*columns))
        episodes.add(engines[1].evaluate(*columns))
        _arrivals(episodes, columns[0], columns[1], columns[3])
        while next_sweep_ms <= now_ms:
            alerts.add(engines[0].sweep({0: next_sweep_ms * 1000}))
            episodes.add(engines[1].sweep({0: next_sweep_ms * 1000}))
            next_sweep_ms += HOUR_MS
    episodes.finish(end_ms * 1000)
    return _figures(config, cohort, keys, alerts, episodes)


def _arrivals(
    episodes: Episodes,
    patient: npt.NDArray[np.int32],
    kind: npt.NDArray[np.int16],
    measured_at: npt.NDArray[np.int64],
) -> None:
    """The latest reading of each (patient, kind) of a batch, to the missing-data findings."""
    pairs, inverse = np.unique(np.stack([patient, kind]), axis=1, return_inverse=True)
    latest = np.full(pairs.shape[1], np.iinfo(np.int64).min)
    np.maximum.at(latest, inverse.ravel(), measured_at)
    for (p, k), at in zip(pairs.T.tolist(), latest.tolist(), strict=True):
        episodes.arrived(p, k, at)


def _items_today(alerts: RuleAlerts) -> list[Item]:
    return [
        Item(
            a.patient_key,
            (a.rule_id,),
            RULES[a.rule_id].job is Job.CLINICAL,
            tuple(sorted(a.alerting_us)),
        )
        for a in alerts.all
        if a.alerting_us
    ]


def _items_now(episodes: Episodes) -> list[Item]:
    items = []
    for e in episodes.all:
        if e.alerting_us:
            rules = tuple(sorted({f.rule_id for f in e.findings if f.severity >= Severity.ORANGE}))
            items.append(
                Item(e.patient_key, rules, e.job is Job.CLINICAL, tuple(sorted(e.alerting_us)))
            )
    return items


def _judged(
    config: CohortConfig, cohort: list[SimPatient], keys: dict[str, int], items: list[Item]
) -> Figures:
    by_patient: dict[int, list[Item]] = {}
    for item in items:
        by_patient.setdefault(item.patient_key, []).append(item)
    lead_hours, per_deterioration, clinical_per_deterioration = [], [], []
    worsening = [p for p in cohort if p.worsening is not None]
    for p in worsening:
        assert p.worsening is not None
        onset, hospital = p.worsening.onset_ms * 1000, p.worsening.hospitalised_ms * 1000
        mine = [
            (i, at)
            for i in by_patient.get(keys[p.patient_id], [])
            if (at := i.alerting_between(onset, hospital)) is not None
        ]
        clinical = [at for i, at in mine if i.clinical]
        per_deterioration.append(len(mine))
        clinical_per_deterioration.append(len(clinical))
        if clinical:
            lead_hours.append((p.worsening.hours, (hospital - min(clinical)) / 3.6e9))
    stable = {keys[p.patient_id] for p in cohort if p.worsening is None}
    stable_items = [i for i in items if i.patient_key in stable]
    return Figures(
        worsening=len(worsening),
        alerted=len(lead_hours),
        lead_hours=lead_hours,
        items_per_deterioration=per_deterioration,
        clinical_items_per_deterioration=clinical_per_deterioration,
        stable_patient_days=len(stable) * config.days,
        stable_clinical=Counter(r for i in stable_items if i.clinical for r in i.rule_ids),
        stable_data=sum(not i.clinical for i in stable_items),
        stable_clinical_items=sum(i.clinical for i in stable_items),
    )


def _figures(
    config: CohortConfig,
    cohort: list[SimPatient],
    keys: dict[str, int],
    alerts: RuleAlerts,
    episodes: Episodes,
) -> CohortFigures:
    stable = {keys[p.patient_id] for p in cohort if p.worsening is None}
    findings = Counter(
        f.rule_id
        for e in episodes.all
        if e.patient_key in stable
        for f in e.findings
        if f.severity >= Severity.ORANGE
    )
    return CohortFigures(
        patients=len(cohort),
        days=config.days,
        today=_judged(config, cohort, keys, _items_today(alerts)),
        now=_judged(config, cohort, keys, _items_now(episodes)),
        now_findings=findings,
    )


def _median(values: list[int]) -> float:
    return statistics.median(values) if values else NAN


def report(f: CohortFigures) -> list[str]:
    """The figures as printed, today's beside the current rules'."""
    t, n = f.today, f.now
    met = {True: "met", False: "MISSED"}
    lines = [
        f"cohort: {f.patients:,} patients over {f.days:g} days, {n.worsening} worsening "
        "(each ends in a hospitalisation)",
        f"{'':<52}{'today':>12}{'now':>12}  target",
        f"{'worsening alerted before hospitalisation':<52}"
        f"{f'{t.alerted}/{t.worsening}':>12}{f'{n.alerted}/{n.worsening}':>12}"
        f"  all: {met[n.alerted == n.worsening]}",
        f"{'median lead time, h (all deteriorations)':<52}"
        f"{t.median_lead():>12.1f}{n.median_lead():>12.1f}",
        f"{'median lead time, h (deteriorations of 36 h or more)':<52}"
        f"{t.median_lead(36):>12.1f}{n.median_lead(36):>12.1f}"
        f"  >= 24 h: {met[n.median_lead(36) >= 24]}",
        f"{'worklist items per deterioration, median':<52}"
        f"{_median(t.items_per_deterioration):>12.1f}{_median(n.items_per_deterioration):>12.1f}"
        f"  1: {met[_median(n.items_per_deterioration) <= 1]}",
        f"{'worklist items per deterioration, most':<52}"
        f"{max(t.items_per_deterioration, default=0):>12}"
        f"{max(n.items_per_deterioration, default=0):>12}"
        f"  <= 2: {met[max(n.items_per_deterioration, default=0) <= 2]}",
        f"{'  of which clinical, median / most':<52}"
        f"{_slash(t.clinical_items_per_deterioration):>12}"
        f"{_slash(n.clinical_items_per_deterioration):>12}",
        f"{'stable patients: clinical items per 10 patient-days':<52}"
        f"{t.stable_per_10_patient_days:>12.2f}{n.stable_per_10_patient_days:>12.2f}"
        f"  < 0.3: {met[n.stable_per_10_patient_days < 0.3]}",
        f"{'stable patients: data items per 10 patient-days':<52}"
        f"{t.stable_data_per_10_patient_days:>12.2f}{n.stable_data_per_10_patient_days:>12.2f}",
        "stable patients' orange/red items by rule: today (alerts), now (episodes with a "
        "finding of the rule; findings)",
    ]
    rules = sorted(
        set(t.stable_clinical) | set(n.stable_clinical) | set(f.now_findings),
        key=lambda r: -t.stable_clinical.get(r, 0) - f.now_findings.get(r, 0),
    )
    lines.extend(
        f"    {rule:<24}{t.stable_clinical.get(rule, 0):>8}"
        f"{n.stable_clinical.get(rule, 0):>8}{f.now_findings.get(rule, 0):>8}"
        for rule in rules
    )
    return lines


def _slash(values: list[int]) -> str:
    return f"{_median(values):g} / {max(values, default=0)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=5_000)
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--covid-only", action="store_true", help="COVID-19 patients only (the issue's cohort)"
    )
    args = parser.parse_args()
    config = CohortConfig(patients=args.patients, days=args.days, seed=args.seed)
    if args.covid_only:
        config = dataclasses.replace(config, programme_mix={Programme.COVID: 1.0})
    print("\n".join(report(judge(config))))


if __name__ == "__main__":
    main()
