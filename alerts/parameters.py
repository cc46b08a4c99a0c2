"""Every rule's parameters for every patient, stored once per distinct set.

A patient follows their programme's parameters (alerts/programmes.toml) unless a
clinician overrode some (alerts.actions). Patients with the same programme and
the same overrides share one *parameter set*: a row in each rule's table. Each
patient slot holds only the number of its set. The tables stay a few rows long
whatever the number of patients, so the rules' many lookups hit the cache, and
a million patients cost four bytes each instead of a copy of every parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from alerts.catalogue import PATIENT_PARAMETERS, RULES
from alerts.history import with_room
from alerts.model import Rule, RuleParameters, Slots
from alerts.programmes import ENABLED, AlertConfig
from devices.registry import Programme

__all__ = ["Parameters"]


class Parameters:
    def __init__(self, config: AlertConfig) -> None:
        self._config = config
        self._set_of = np.zeros(0, np.int32)  # per slot: its parameter set
        self._sets: dict[tuple[Programme, tuple[tuple[str, float], ...]], int] = {}
        self._columns = {
            rule.id: {n: j for j, n in enumerate([*rule.parameters, ENABLED, *PATIENT_PARAMETERS])}
            for rule in RULES.values()
        }
        self._tables = {rule_id: np.zeros((0, len(c))) for rule_id, c in self._columns.items()}

    def of(self, rule_id: str) -> RuleParameters:
        return RuleParameters(self._tables[rule_id], self._columns[rule_id], self._set_of)

    def assign(
        self, slot: int | Slots, programme: Programme, overrides: Mapping[str, float]
    ) -> None:
        """The given patients follow `programme` with these overrides ("<rule>.<name>")."""
        key = (programme, tuple(sorted(overrides.items())))
        number = self._sets.get(key)
        if number is None:
            number = self._sets[key] = len(self._sets)
            self._add_set(programme, overrides)
        self._set_of = with_room(self._set_of, int(np.max(slot, initial=-1)) + 1, 0)
        self._set_of[slot] = number

    def _add_set(self, programme: Programme, overrides: Mapping[str, float]) -> None:
        chosen = self._config.programmes[programme]
        for rule_id, column in self._columns.items():
            rule = RULES[rule_id]
            row = [_resolve(rule, n, chosen.rules, chosen.parameters, overrides) for n in column]
            self._tables[rule_id] = np.vstack([self._tables[rule_id], row])


def _resolve(
    rule: Rule,
    name: str,
    rules: Sequence[str],
    programme: Mapping[str, float],
    patient: Mapping[str, float],
) -> float:
    """A parameter's value: the patient's override, else the programme's, else the
    default. A rule is enabled if the programme lists it and nobody disabled it (or it
    cannot be disabled)."""
    if name == ENABLED:
        listed = rule.id in rules
        value = patient.get(f"{rule.id}.{ENABLED}", programme.get(f"{rule.id}.{ENABLED}", 1))
        return 1.0 if listed and (value == 1 or not rule.disableable) else 0.0
    key = f"patient.{name}" if name in PATIENT_PARAMETERS else f"{rule.id}.{name}"
    default = (
        PATIENT_PARAMETERS[name] if name in PATIENT_PARAMETERS else rule.parameters[name]
    ).default
    return float(patient.get(key, programme.get(key, default)))
