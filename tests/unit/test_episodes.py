"""Firings grouped into episodes as the lifecycle groups them (replays and cohort figures)."""

from __future__ import annotations

from alerts.engine import Candidate, Explanations
from alerts.model import Severity
from alerts.replay import Episodes

HOUR = 3_600_000_000
COOLDOWN = {Severity.INFO: 24 * HOUR, Severity.ORANGE: 6 * HOUR, Severity.RED: HOUR}
NOTHING = Explanations({}, {}, {})


def firing(patient: int, severity: Severity, hours: float, rule: str = "heart_rate") -> Candidate:
    return Candidate(patient, rule, 1, severity, int(hours * HOUR), NOTHING, 0)


def test_firings_within_the_cooldown_are_one_episode_escalated_by_the_worst() -> None:
    episodes = Episodes(COOLDOWN)
    episodes.add([firing(1, Severity.ORANGE, 0), firing(2, Severity.ORANGE, 0)])
    episodes.add([firing(1, Severity.RED, 5)])  # within orange's 6 h: escalates
    episodes.add([firing(1, Severity.ORANGE, 5.5)])  # within red's 1 h of the last firing
    episodes.add([firing(1, Severity.ORANGE, 7)])  # 1.5 h after it: a new episode
    episodes.add([firing(1, Severity.ORANGE, 7, rule="news2")])  # another rule's own
    summary = [(e.patient_key, e.rule_id, e.severity, e.firings) for e in episodes.all]
    assert summary == [
        (1, "heart_rate", Severity.RED, 3),
        (2, "heart_rate", Severity.ORANGE, 1),
        (1, "heart_rate", Severity.ORANGE, 1),
        (1, "news2", Severity.ORANGE, 1),
    ]
