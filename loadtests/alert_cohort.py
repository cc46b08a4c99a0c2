"""The alert engine over a simulated Covidom-like cohort: are worsening patients alerted
before their deterioration peaks, and how often do stable patients raise alerts?

The simulator's messages (send-time order) go through the decoder and the
engine in batches, with a missing-data sweep every simulated hour; firings
become episodes as the lifecycle makes them (alerts.replay.Episodes). A
worsening patient counts as alerted when an orange or red episode starts
between the onset and the peak of the deterioration. Stable patients' orange
and red episodes are counted per 10 patient-days, all rules together.

    python -m loadtests.alert_cohort                    # 5,000 patients, 14 days
    python -m loadtests.alert_cohort --patients 500 --days 7
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections import Counter
from dataclasses import dataclass

import numpy as np

from alerts.engine import Engine, PatientProfile
from alerts.model import Severity
from alerts.programmes import load_config
from alerts.replay import Episode, Episodes
from devices.decode import Decoder
from devices.simulator import CohortConfig, SimPatient, Simulation, build_cohort
from tests.records import Record

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class CohortFigures:
    patients: int
    days: float
    worsening: int
    alerted_before_peak: int
    lead_hours: list[float]  # first alert -> peak, per alerted worsening patient
    stable_patient_days: float
    stable_alerts: Counter[str]  # orange and red episodes of stable patients, by rule

    @property
    def stable_alerts_per_10_patient_days(self) -> float:
        return 10 * sum(self.stable_alerts.values()) / self.stable_patient_days


def judge(config: CohortConfig, batch: int = 2_000) -> CohortFigures:
    """Run the cohort's `config.days` through the engine and judge the alerts."""
    cohort = build_cohort(config)
    keys = {p.patient_id: n for n, p in enumerate(cohort, start=1)}
    device_keys = {d.device_id: n for n, d in enumerate((d for p in cohort for d in p.devices), 1)}
    alert_config = load_config()
    engine = Engine(alert_config)
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
    episodes = Episodes(alert_config.cooldown_us)
    decoder = Decoder(max_message_bytes=1 << 20, future_tolerance_s=300)
    end_ms = config.start_ms + int(config.days * DAY_MS)
    next_sweep_ms = config.start_ms + HOUR_MS
    messages = itertools.takewhile(
        lambda m: m.timestamp_ms < end_ms, Simulation(cohort, start_ms=config.start_ms, seed=3)
    )
    for chunk in iter(lambda: list(itertools.islice(messages, batch)), []):
        now_ms = chunk[-1].timestamp_ms
        decoded = decoder.decode(
            [
                Record(m.value, m.key, offset=i, timestamp=m.timestamp_ms)
                for i, m in enumerate(chunk)
            ],
            now_ms,
        )
        patient = np.array([keys[p] for p in decoded.messages.patient_id], np.int32)
        device = np.array([device_keys[d] for d in decoded.messages.device_id], np.int32)
        episodes.add(
            engine.evaluate(
                patient[decoded.message],
                decoded.kind,
                decoded.value,
                decoded.measured_at_us,
                decoded.reference_us,
                device[decoded.message],
            )
        )
        while next_sweep_ms <= now_ms:
            episodes.add(engine.sweep({0: next_sweep_ms * 1000}))
            next_sweep_ms += HOUR_MS
    return _figures(config, cohort, keys, episodes.all)


def _figures(
    config: CohortConfig, cohort: list[SimPatient], keys: dict[str, int], all_: list[Episode]
) -> CohortFigures:
    alerting = [e for e in all_ if e.severity >= Severity.ORANGE]
    by_patient: dict[int, list[Episode]] = {}
    for e in alerting:
        by_patient.setdefault(e.patient_key, []).append(e)
    worsening = [p for p in cohort if p.worsening is not None]
    lead_hours = []
    for p in worsening:
        assert p.worsening is not None
        onset_us, peak_us = p.worsening.onset_ms * 1000, p.worsening.hospitalised_ms * 1000
        starts = [e.first_us for e in by_patient.get(keys[p.patient_id], [])]
        in_time = [t for t in starts if onset_us <= t <= peak_us]
        if in_time:
            lead_hours.append((peak_us - min(in_time)) / 3.6e9)
    stable = {keys[p.patient_id] for p in cohort if p.worsening is None}
    return CohortFigures(
        patients=len(cohort),
        days=config.days,
        worsening=len(worsening),
        alerted_before_peak=len(lead_hours),
        lead_hours=lead_hours,
        stable_patient_days=len(stable) * config.days,
        stable_alerts=Counter(e.rule_id for e in alerting if e.patient_key in stable),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=5_000)
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    f = judge(CohortConfig(patients=args.patients, days=args.days, seed=args.seed))
    print(f"cohort: {f.patients:,} patients over {f.days:g} days, {f.worsening} worsening")
    lead = statistics.median(f.lead_hours) if f.lead_hours else float("nan")
    verdict = "met" if f.alerted_before_peak == f.worsening else "MISSED"
    print(
        f"worsening alerted before the peak: {f.alerted_before_peak}/{f.worsening} "
        f"(median lead {lead:.1f} h; target all: {verdict})"
    )
    rate = f.stable_alerts_per_10_patient_days
    verdict = "met" if rate < 1 else "MISSED"
    print(f"stable patients: {rate:.2f} orange/red alerts per 10 patient-days (< 1: {verdict})")
    for rule, count in f.stable_alerts.most_common():
        print(f"    {rule:<24}{count:>6}")


if __name__ == "__main__":
    main()
