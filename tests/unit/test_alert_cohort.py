"""The honest simulated cohort through today's rules and the current ones (the figures of
loadtests/alert_cohort.py, on a smaller cohort): the current rules lose no worsening patient,
alert them no later, give one worklist item per deterioration and far fewer to stable
patients."""

from __future__ import annotations

import statistics

import pytest

from devices.registry import Programme
from devices.simulator import CohortConfig
from loadtests.alert_cohort import CohortFigures, judge


@pytest.fixture(scope="module")
def figures() -> CohortFigures:
    config = CohortConfig(
        patients=600, days=12, worsening_share=0.1, programme_mix={Programme.COVID: 1.0}, seed=5
    )
    return judge(config)


def test_no_worsening_patient_is_lost(figures: CohortFigures) -> None:
    assert figures.now.worsening == 60
    assert figures.now.alerted >= figures.today.alerted
    assert figures.now.alerted >= 0.9 * figures.now.worsening


def test_worsening_patients_are_alerted_no_later(figures: CohortFigures) -> None:
    assert figures.now.median_lead() >= figures.today.median_lead()
    assert figures.now.median_lead(36) >= 12


def test_one_worklist_item_per_deterioration(figures: CohortFigures) -> None:
    items = figures.now.items_per_deterioration
    assert statistics.median(items) == 1
    assert max(items) <= 2
    assert statistics.median(figures.today.items_per_deterioration) >= 3  # one per rule


def test_stable_patients_raise_far_fewer_items(figures: CohortFigures) -> None:
    now, today = figures.now, figures.today
    assert now.stable_per_10_patient_days < 0.5
    assert now.stable_per_10_patient_days < today.stable_per_10_patient_days / 3
    # The same low SpO2 counted once: spo2_scale1 and spo2_covid share the episode.
    assert today.stable_clinical["spo2_covid"] == today.stable_clinical["spo2_scale1"]
