"""Firings grouped into patient episodes as the care team handles them (replays, the cohort):
one open episode per patient and job, findings per rule, the cool-down after resolution."""

from __future__ import annotations

import numpy as np

from alerts.engine import Candidate, Explanations
from alerts.model import Disposition, Job, Severity
from alerts.replay import Episode, Episodes, QuietForCooldown
from loadtests.alert_cohort import CareTeam

HOUR = 3_600_000_000
COOLDOWN = {Severity.INFO: 24 * HOUR, Severity.ORANGE: 6 * HOUR, Severity.RED: HOUR}
NOTHING = Explanations({}, {}, {})
INFO, ORANGE, RED = Severity.INFO, Severity.ORANGE, Severity.RED


def firing(patient: int, severity: Severity, hours: float, rule: str = "heart_rate") -> Candidate:
    return Candidate(patient, rule, 1, severity, int(hours * HOUR), NOTHING, 0)


def missed(patient: int, hours: float, data_since_hours: float) -> Candidate:
    explanations = Explanations({}, {"data_since_s": np.array([data_since_hours * 3600.0])}, {})
    return Candidate(patient, "questionnaire_missed", 1, ORANGE, int(hours * HOUR), explanations, 0)


def summary(episodes: Episodes) -> list[tuple[int, Job, Severity, list[tuple[str, int]]]]:
    return [
        (e.patient_key, e.job, e.severity, [(f.rule_id, f.firings) for f in e.findings])
        for e in episodes.all
    ]


def test_one_open_episode_per_patient_and_job_with_a_finding_per_rule() -> None:
    """The five-rule upload is one episode of five findings; its severity is the highest."""
    episodes = Episodes(COOLDOWN, QuietForCooldown(COOLDOWN))
    rules = ["spo2_scale1", "spo2_covid", "respiratory_rate", "heart_rate", "news2"]
    severities = [RED, RED, RED, ORANGE, RED]
    episodes.add(firing(1, s, 0, rule) for rule, s in zip(rules, severities, strict=True))
    episodes.add([firing(1, ORANGE, 0.5, "spo2_scale1"), firing(2, ORANGE, 0.5)])
    ((patient, job, severity, findings), other) = summary(episodes)
    assert (patient, job, severity) == (1, Job.CLINICAL, RED)
    assert sorted(findings) == sorted(
        [
            ("spo2_scale1", 2),
            ("spo2_covid", 1),
            ("respiratory_rate", 1),
            ("heart_rate", 1),
            ("news2", 1),
        ]
    )
    assert other == (2, Job.CLINICAL, ORANGE, [("heart_rate", 1)])


def test_escalation_then_the_cooldown_after_resolution() -> None:
    episodes = Episodes(COOLDOWN, QuietForCooldown(COOLDOWN))
    episodes.add([firing(1, INFO, 0)])  # an isolated reading, awaiting confirmation
    episodes.add([firing(1, RED, 0.2)])  # confirmed: the same finding rises, and the episode
    (episode,) = episodes.all
    assert (episode.severity, episode.reached(ORANGE), episode.reached(RED)) == (
        RED,
        int(0.2 * HOUR),
        int(0.2 * HOUR),
    )
    episodes.add([firing(1, ORANGE, 1.5)])  # resolved at 1.2 h; within orange's cool-down
    episodes.add([firing(1, ORANGE, 0.1, "news2")])  # another rule: a finding of its own
    assert len(episodes.all) == 2
    # Past red's cool-down of the resolved finding: a new finding, joining the open episode
    # and escalating it.
    episodes.add([firing(1, RED, 1.6)])
    assert [e.severity for e in episodes.all] == [RED, RED]
    assert [f.rule_id for f in episodes.all[1].findings] == ["news2", "heart_rate"]
    assert episodes.all[0].disposition is Disposition.CALLED_NO_ACTION
    assert episodes.dropped == 1
    episodes.finish(10 * HOUR)  # resolved at 2.6 h (the red finding's cool-down)
    episodes.add([firing(1, RED, 0.05, "news2")])  # old news: before its last firing (0.1 h)
    assert len(episodes.all) == 2
    assert episodes.dropped == 2


def test_missing_data_is_an_episode_of_its_own_resolved_by_the_data() -> None:
    episodes = Episodes(COOLDOWN, QuietForCooldown(COOLDOWN))
    episodes.add([missed(1, 12, 5), firing(1, ORANGE, 12.5)])
    data, clinical = episodes.all
    assert (data.job, clinical.job) == (Job.DATA, Job.CLINICAL)
    episodes.arrived(1, _questionnaire_code(), 4 * HOUR)  # before the missed deadline's window
    assert data.resolved_us is None
    episodes.arrived(1, _questionnaire_code(), 13 * HOUR)
    resolved = episodes.all[0]  # the same episode, read again (mypy narrowed `data`)
    assert (resolved.resolved_us, resolved.disposition) == (13 * HOUR, Disposition.DATA_RECEIVED)
    assert clinical.resolved_us is None


def test_the_cohort_care_team_watches_a_deterioration_until_the_hospitalisation() -> None:
    """A call finds patient 1 deteriorating: the episode stays open, every later firing joins
    it, and the hospitalisation resolves it. Patient 2 is stable: resolved after the call."""
    team = CareTeam({1: (0, 40 * HOUR)})
    episodes = Episodes(COOLDOWN, team)
    episodes.add([firing(1, ORANGE, 2), firing(2, ORANGE, 2)])
    episodes.add([firing(1, ORANGE, 20, "news2"), firing(2, ORANGE, 20)])
    episodes.add([firing(1, RED, 30, "spo2_covid")])
    episodes.end_follow_up(1, 40 * HOUR, Disposition.EMERGENCY)
    episodes.add([firing(1, RED, 41, "spo2_unconfirmed")])  # after the follow-up: ignored
    first: list[Episode] = [e for e in episodes.all if e.patient_key == 1]
    assert [(e.severity, len(e.findings), e.disposition) for e in first] == [
        (RED, 3, Disposition.EMERGENCY)
    ]
    stable: list[tuple[int | None, Disposition | None]] = [
        (e.resolved_us, e.disposition) for e in episodes.all if e.patient_key == 2
    ]
    assert stable == [(6 * HOUR, Disposition.CALLED_NO_ACTION), (None, None)]


def _questionnaire_code() -> int:
    from devices.catalogue import BY_KIND
    from devices.catalogue import VitalKind as K

    return BY_KIND[K.DYSPNOEA].code
