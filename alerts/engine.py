"""The alert engine: patients' history and parameters, and the rules run over them.

`evaluate` takes a batch of stored readings (arrival order): it updates the
history, runs every reading rule over the batch and returns one candidate per
(patient, rule) that fired: the most severe, then the latest firing. `sweep`
runs the missing-data and adherence rules over every followed patient; the adherence
of months 1 and 2 is checked from PostgreSQL (alerts.adherence) when a month ends,
the engine says whose (`months_to_check`) and keeps the outcome (`month_checked`). The
engine decides nothing about alerts: the lifecycle (open, absorb, escalate,
cool down) is applied by alerts.lifecycle inside the batch transaction.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from alerts.calendar import calendar
from alerts.catalogue import RULES
from alerts.history import DAY_US, NO_TIME, History, last_of_runs, stable_order, with_room
from alerts.model import Firings, Rows, Rule, RuleContext, RuleKind, Scores, Severity
from alerts.parameters import Parameters
from alerts.programmes import ENABLED, AlertConfig
from alerts.protocol import MEASURES
from alerts.scores import ScoreKey
from devices.catalogue import BY_CODE
from devices.registry import DeviceType, Programme

__all__ = [
    "DEVICE_TYPES",
    "PROGRAMMES",
    "Candidate",
    "Engine",
    "Explanations",
    "PatientProfile",
    "Roster",
]

PROGRAMMES = list(Programme)
DEVICE_TYPES = list(DeviceType)


class Explanations:
    """What one rule's candidates of one batch were fired by, read out only when asked for
    (most candidates are absorbed or dropped by the lifecycle, unread)."""

    __slots__ = ("_described", "_thresholds", "_values")

    def __init__(
        self,
        described: Mapping[str, Any],
        values: Mapping[str, npt.NDArray[np.floating[Any]]],
        thresholds: Mapping[str, npt.NDArray[np.floating[Any]]],
    ) -> None:
        self._described = described
        self._values = values
        self._thresholds = thresholds

    def of(self, row: int) -> dict[str, Any]:
        return {
            **self._described,
            "values": {name: _number(column[row]) for name, column in self._values.items()},
            "parameters": {name: _number(column[row]) for name, column in self._thresholds.items()},
        }


@dataclass(slots=True)  # not frozen: built by the ten thousand, and frozen costs 5x
class Candidate:
    """A rule that fired for a patient: what the lifecycle will open, absorb or escalate."""

    patient_key: int
    rule_id: str
    rule_version: int
    severity: Severity
    fired_at_us: int  # event time
    _explanations: Explanations = field(repr=False, compare=False)
    _row: int = field(repr=False, compare=False)

    @property
    def explanation(self) -> dict[str, Any]:
        """Rule, version, title, source, kinds, the values that fired it, the parameters."""
        return self._explanations.of(self._row)


@dataclass(frozen=True, slots=True)
class PatientProfile:
    """What the engine needs to know of a patient before their first reading."""

    patient_key: int
    programme: Programme
    enrolled_us: int
    partition: int
    devices: Sequence[tuple[int, DeviceType]] = ()  # (device_key, type)
    overrides: Mapping[str, float] = field(default_factory=dict)  # "<rule>.<name>" -> value


@dataclass(frozen=True, slots=True)
class Roster:
    """Many patients' profiles as columns, as the loader reads them from PostgreSQL (a
    PatientProfile per patient took 10 s of a million patients' rebuild)."""

    patient_key: npt.NDArray[np.int32]
    programme: npt.NDArray[np.int8]  # index in PROGRAMMES
    enrolled_us: npt.NDArray[np.int64]
    partition: npt.NDArray[np.int32]
    device_key: npt.NDArray[np.int32]
    device_owner: npt.NDArray[np.int32]  # the patient_key of the device's patient
    device_type: npt.NDArray[np.int8]  # index in DEVICE_TYPES
    overrides: Mapping[int, Mapping[str, float]]  # by patient key, for those who have some

    @classmethod
    def of(cls, profiles: Sequence[PatientProfile]) -> Roster:
        devices = [
            (key, p.patient_key, DEVICE_TYPES.index(t)) for p in profiles for key, t in p.devices
        ]
        return cls(
            np.array([p.patient_key for p in profiles], np.int32),
            np.array([PROGRAMMES.index(p.programme) for p in profiles], np.int8),
            np.array([p.enrolled_us for p in profiles], np.int64),
            np.array([p.partition for p in profiles], np.int32),
            np.array([d[0] for d in devices], np.int32),
            np.array([d[1] for d in devices], np.int32),
            np.array([d[2] for d in devices], np.int8),
            {p.patient_key: p.overrides for p in profiles if p.overrides},
        )


class Engine:
    def __init__(self, config: AlertConfig) -> None:
        self.config = config
        self.history = History()
        self._parameters = Parameters(config)
        self._emitted = _no_emissions()
        self._scores: Counter[ScoreKey] = Counter()
        self._reading_rules = [r for r in RULES.values() if r.kind is RuleKind.READING]
        self._sweep_rules = [r for r in RULES.values() if r.kind is RuleKind.SWEEP]
        self._described = {r.id: _describe(r) for r in RULES.values()}
        self.calendar = calendar(config.timezone.key)

    # -- patients -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every patient (partitions revoked; the next assignment rebuilds)."""
        self.history = History()
        self._parameters = Parameters(self.config)
        self._emitted = _no_emissions()

    def add_patients(self, profiles: Iterable[PatientProfile]) -> None:
        self.add_roster(Roster.of(list(profiles)))

    def add_roster(self, roster: Roster) -> None:
        history = self.history
        slots = history.add(
            roster.patient_key,
            roster.programme,
            roster.enrolled_us,
            self.calendar.day_of(roster.enrolled_us),
            roster.partition,
        )
        owners = history.slots(roster.device_owner)
        history.add_devices(
            roster.device_key, owners, roster.device_type, history.enrolled_us[owners]
        )
        plain = ~np.isin(roster.patient_key, list(roster.overrides))
        for number, programme in enumerate(PROGRAMMES):
            alike = slots[plain & (roster.programme == number)]
            if len(alike):
                self._parameters.assign(alike.astype(np.int64), programme, {})
        overridden: dict[tuple[int, tuple[tuple[str, float], ...]], list[int]] = defaultdict(list)
        for slot, key, number in zip(
            slots[~plain].tolist(),
            roster.patient_key[~plain].tolist(),
            roster.programme[~plain].tolist(),
            strict=True,
        ):
            overridden[number, tuple(sorted(roster.overrides[key].items()))].append(slot)
        for (number, overrides), group in overridden.items():
            self._parameters.assign(np.array(group, np.int64), PROGRAMMES[number], dict(overrides))

    def unknown(self, patient_keys: npt.NDArray[np.int32]) -> list[int]:
        """The given patients the engine has no profile of yet."""
        missing = patient_keys[self.history.slots(patient_keys) < 0]
        return [int(k) for k in np.unique(missing)]

    def override(self, patient_key: int, overrides: Mapping[str, float]) -> None:
        """A clinician changed a patient's thresholds: apply them to the patient's slot."""
        slot = self.history.slot(patient_key)
        if slot is not None:
            programme = PROGRAMMES[int(self.history.programme[slot])]
            self._parameters.assign(slot, programme, overrides)

    def set_discharged(self, patient_keys: Iterable[int]) -> None:
        for key in patient_keys:
            slot = self.history.slot(key)
            if slot is not None:
                self.history.active[slot] = False

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(
        self,
        patient_key: npt.NDArray[np.int32],
        kind: npt.NDArray[np.int16],
        value: npt.NDArray[np.float64],
        measured_at: npt.NDArray[np.int64],
        reference: npt.NDArray[np.int64],
        device_key: npt.NDArray[np.int32] | None = None,
    ) -> list[Candidate]:
        """Readings of a batch (arrival order) into the history, then the reading rules."""
        slot = self.history.slots(patient_key)
        # Patient by patient (arrival order kept within each; unknown patients, -1, left
        # out): every rule treats patients apart, and the state is then read and written
        # in address order instead of at random, which is what its cost was.
        known = np.flatnonzero(slot >= 0)
        order = known[stable_order(slot[known])]
        slot, kind, value, measured_at, reference = (
            slot[order],
            kind[order],
            value[order],
            measured_at[order],
            reference[order],
        )
        device_key = device_key[order] if device_key is not None else None
        self.history.insert(slot, kind, value, measured_at, device_key)
        current = (measured_at >= reference - self.config.current_window_us) & self.history.active[
            slot
        ]
        if not current.any():
            return []
        rows = Rows(slot, kind, value, measured_at, current)
        of_kind = _rows_by_kind(kind[current], np.flatnonzero(current))
        now = np.zeros(0, np.int64)
        candidates: list[Candidate] = []
        for rule in self._reading_rules:
            # Each rule sees the current readings of its kinds, of the patients it runs for,
            # in arrival order.
            parts = [of_kind[code] for code in rule.kinds if code in of_kind]
            if not parts:
                continue
            mine = np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0]
            params = self._parameters.of(rule.id)
            mine = mine[params.value(ENABLED, slot[mine]) == 1]
            if len(mine):
                context = RuleContext(rows.take(mine), self.history, params, now, self.calendar)
                firings = rule.evaluate(context)
                if firings.scores is not None:
                    self._count(rule, firings.scores)
                candidates.extend(self._candidates(rule, firings))
        return candidates

    def take_scores(self) -> Counter[ScoreKey]:
        """The aggregate scores counted since the last call (by `evaluate`)."""
        counted, self._scores = self._scores, Counter()
        return counted

    def _count(self, rule: Rule, scores: Scores) -> None:
        history = self.history
        columns = (
            history.partition[scores.slot].astype(np.int64),
            scores.at // DAY_US,
            history.programme[scores.slot].astype(np.int64),
            scores.score.astype(np.int64),
        )
        # Equal keys side by side (a lexsort: np.unique(axis=0) compares rows as bytes,
        # ten times slower), then one count per run of them.
        keys = np.stack(columns, axis=1)[np.lexsort(columns[::-1])]
        first = np.ones(len(keys), np.bool_)
        first[1:] = (keys[1:] != keys[:-1]).any(axis=1)
        starts = np.flatnonzero(first)
        counts = np.diff(np.append(starts, len(keys)))
        for (partition, day, programme, score), n in zip(
            keys[starts].tolist(), counts.tolist(), strict=True
        ):
            key = ScoreKey(rule.id, partition, day, PROGRAMMES[programme].value, score)
            self._scores[key] += n

    def sweep(self, now_by_partition: Mapping[int, int]) -> list[Candidate]:
        """Missing-data and adherence rules over every followed patient."""
        history = self.history
        if not len(history):
            return []
        now = self._now(now_by_partition)
        rows = Rows.empty()
        candidates: list[Candidate] = []
        for rule in self._sweep_rules:
            params = self._parameters.of(rule.id)
            firings = rule.evaluate(RuleContext(rows, history, params, now, self.calendar))
            candidates.extend(self._candidates(rule, firings))
        return candidates

    def _now(self, now_by_partition: Mapping[int, int]) -> npt.NDArray[np.int64]:
        partition = self.history.partition[: len(self.history)]
        now = np.zeros(max(int(partition.max(initial=0)), *now_by_partition, 0) + 1, np.int64)
        now[list(now_by_partition)] = list(now_by_partition.values())  # 0 for the others
        return now[partition]

    # -- adherence at months 1 and 2 ------------------------------------------------------

    def months_to_check(
        self, now_by_partition: Mapping[int, int], after_us: int, within_us: int
    ) -> list[tuple[int, int]]:
        """(patient key, month) of the followed patients whose month 1 or 2 of follow-up
        ended at least `after_us` ago (late data counted), at most `within_us` ago (older
        ones were checked before this member had them), and is not checked yet."""
        history = self.history
        if not len(history):
            return []
        now = self._now(now_by_partition)
        start = history.start_day[: len(history)].astype(np.int64)
        due: list[tuple[int, int]] = []
        for month in (1, 2):
            ended = self.calendar.start_of(self.calendar.add_months(start, month))
            ready = (
                history.active[: len(history)]
                & (history.month_expected[: len(history), month - 1] < 0)
                & (ended + after_us <= now)
                & (ended + within_us > now)
            )
            due.extend((key, month) for key in history.patient_key[np.flatnonzero(ready)].tolist())
        return due

    def month_checked(
        self, patient_key: int, month: int, measure: str, expected: int, received: int
    ) -> None:
        """A month's check: its worst measure ("" if none was prescribed), the data expected
        and received of it; the adherence rules read it at the next sweep."""
        slot = self.history.slot(patient_key)
        if slot is not None:
            self.history.month_measure[slot, month - 1] = (
                list(MEASURES).index(measure) if measure else -1
            )
            self.history.month_expected[slot, month - 1] = expected
            self.history.month_received[slot, month - 1] = received

    def _not_repeats(
        self, rule: Rule, chosen: npt.NDArray[np.intp], firings: Firings
    ) -> npt.NDArray[np.intp]:
        """Drop firings that repeat the last one emitted (no more severe, within the repeat
        window): the lifecycle could only absorb them, or drop them within a cool-down.
        Remember the others as emitted."""
        window = self.config.repeat_window_us
        if not window:
            return chosen
        emitted = self._emitted[rule.id]
        emitted.reserve(len(self.history))
        slot = firings.slot[chosen]
        severity = firings.severity[chosen]
        at = firings.at[chosen]
        repeat = (
            (emitted.at[slot] != NO_TIME)
            & (severity <= emitted.severity[slot])
            & (at <= emitted.at[slot] + window)
        )
        kept: npt.NDArray[np.intp] = chosen[~repeat]
        slot = slot[~repeat]
        emitted.severity[slot] = severity[~repeat]
        emitted.at[slot] = np.maximum(emitted.at[slot], at[~repeat])
        return kept

    def _candidates(self, rule: Rule, firings: Firings) -> list[Candidate]:
        """One candidate per patient: the most severe firing, then the latest."""
        if not len(firings):
            return []
        params = self._parameters.of(rule.id)
        enabled = params.value(ENABLED, firings.slot) == 1
        if not enabled.any():
            return []
        order = np.lexsort((firings.at, firings.severity, firings.slot))
        order = order[enabled[order]]
        slot = firings.slot[order]
        last = last_of_runs(slot)
        chosen = self._not_repeats(rule, order[last], firings)
        if not len(chosen):
            return []
        slots = firings.slot[chosen]
        explanations = Explanations(
            self._described[rule.id],
            {name: v[chosen] for name, v in firings.values.items()},
            {name: params.value(name, slots) for name in rule.parameters},
        )
        return [
            Candidate(patient_key, rule.id, rule.version, _SEVERITY[severity], at, explanations, j)
            for j, (patient_key, severity, at) in enumerate(
                zip(
                    self.history.patient_key[slots].tolist(),
                    firings.severity[chosen].tolist(),
                    firings.at[chosen].tolist(),
                    strict=True,
                )
            )
        ]


class _Emitted:
    """A rule's last candidate emitted, per slot: its severity and event time. Grown when
    the rule first emits (a rule of a programme no one here follows never does)."""

    __slots__ = ("at", "severity")

    def __init__(self) -> None:
        self.severity = np.zeros(0, np.int8)
        self.at = np.zeros(0, np.int64)

    def reserve(self, slots: int) -> None:
        self.severity = with_room(self.severity, slots, 0)
        self.at = with_room(self.at, slots, NO_TIME)


def _no_emissions() -> dict[str, _Emitted]:
    return {rule.id: _Emitted() for rule in RULES.values()}


def _number(value: np.floating[Any]) -> float | None:
    """A float for JSON, NaN (no such bound, no such value) as None."""
    return None if np.isnan(value) else float(value)


def _describe(rule: Rule) -> dict[str, Any]:
    """The part of an explanation every firing of the rule shares."""
    return {
        "rule": rule.id,
        "version": rule.version,
        "title": rule.title,
        "source": rule.source,
        "kinds": sorted(BY_CODE[c].kind.value for c in rule.kinds)
        if rule.kind is RuleKind.READING
        else [],
    }


def _rows_by_kind(
    kind: npt.NDArray[np.int16], rows: npt.NDArray[np.intp]
) -> dict[int, npt.NDArray[np.intp]]:
    """The row numbers of each kind code, in arrival order."""
    order = np.argsort(kind, kind="stable")
    codes, starts = np.unique(kind[order], return_index=True)
    groups = np.split(rows[order], starts[1:])
    return {int(code): group for code, group in zip(codes.tolist(), groups, strict=True)}


_SEVERITY = {int(s): s for s in Severity}
