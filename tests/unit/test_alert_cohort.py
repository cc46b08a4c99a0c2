"""A simulated cohort through the engine: worsening patients are alerted before their peak,
stable ones rarely (the figures of loadtests/alert_cohort.py, on a smaller cohort)."""

from __future__ import annotations

from devices.simulator import CohortConfig
from loadtests.alert_cohort import judge


def test_worsening_alerted_before_the_peak_and_stable_patients_quiet() -> None:
    figures = judge(CohortConfig(patients=400, days=10, worsening_share=0.1, seed=5))
    assert figures.worsening == 40
    assert figures.alerted_before_peak == figures.worsening
    assert min(figures.lead_hours) > 0
    assert 0 < figures.stable_alerts_per_10_patient_days < 1
