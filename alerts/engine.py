"""The alert engine: patients' history and parameters, and the rules run over them.

`evaluate` takes a batch of stored readings (arrival order): it updates the
history, runs every reading rule over the batch and returns one candidate per
(patient, rule) that fired: the most severe, then the latest firing. `sweep`
runs the missing-data and adherence rules over every followed patient. The
engine decides nothing about alerts: the lifecycle (open, absorb, escalate,
cool down) is applied by alerts.lifecycle inside the batch transaction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from alerts.catalogue import PATIENT_PARAMETERS, RULES
from alerts.history import History
from alerts.model import Firings, Rows, Rule, RuleContext, RuleKind, Severity
from alerts.programmes import ENABLED, AlertConfig
from devices.catalogue import BY_CODE
from devices.registry import DeviceType, Programme

__all__ = ["DEVICE_TYPES", "PROGRAMMES", "Candidate", "Engine", "PatientProfile"]

PROGRAMMES = list(Programme)
DEVICE_TYPES = list(DeviceType)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A rule that fired for a patient: what the lifecycle will open, absorb or escalate."""

    patient_key: int
    rule_id: str
    rule_version: int
    severity: Severity
    fired_at_us: int  # event time
    explanation: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PatientProfile:
    """What the engine needs to know of a patient before their first reading."""

    patient_key: int
    programme: Programme
    enrolled_us: int
    partition: int
    devices: Sequence[tuple[int, DeviceType]] = ()  # (device_key, type)
    overrides: Mapping[str, float] = field(default_factory=dict)  # "<rule>.<name>" -> value


class Engine:
    def __init__(self, config: AlertConfig) -> None:
        self.config = config
        self.history = History()
        self._params = _no_parameters()
        self._reading_rules = [r for r in RULES.values() if r.kind is RuleKind.READING]
        self._sweep_rules = [r for r in RULES.values() if r.kind is RuleKind.SWEEP]

    # -- patients -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every patient (partitions revoked; the next assignment rebuilds)."""
        self.history = History()
        self._params = _no_parameters()

    def add_patients(self, profiles: Iterable[PatientProfile]) -> None:
        for profile in profiles:
            slot = self.history.add(
                profile.patient_key,
                PROGRAMMES.index(profile.programme),
                profile.enrolled_us,
                profile.partition,
            )
            for device_key, device_type in profile.devices:
                self.history.add_device(
                    device_key, slot, DEVICE_TYPES.index(device_type), profile.enrolled_us
                )
            self._set_parameters(slot, profile.programme, profile.overrides)

    def knows(self, patient_keys: Iterable[int]) -> list[int]:
        """The given patients the engine has no profile of yet."""
        return [k for k in set(patient_keys) if k not in self.history.slot_of]

    def override(self, patient_key: int, overrides: Mapping[str, float]) -> None:
        """A clinician changed a patient's thresholds: apply them to the patient's slot."""
        slot = self.history.slot_of.get(patient_key)
        if slot is not None:
            programme = PROGRAMMES[int(self.history.programme[slot])]
            self._set_parameters(slot, programme, overrides)

    def _set_parameters(
        self, slot: int, programme: Programme, overrides: Mapping[str, float]
    ) -> None:
        chosen = self.config.programmes[programme]
        for rule_id, params in self._params.items():
            rule = RULES[rule_id]
            for name in params:
                if len(params[name]) <= slot:
                    grown = np.full(max(2 * len(params[name]), slot + 1, 64), np.nan)
                    grown[: len(params[name])] = params[name]
                    params[name] = grown
                params[name][slot] = self._resolve(
                    rule, name, chosen.rules, chosen.parameters, overrides
                )

    @staticmethod
    def _resolve(
        rule: Rule,
        name: str,
        rules: Sequence[str],
        programme: Mapping[str, float],
        patient: Mapping[str, float],
    ) -> float:
        if name == ENABLED:
            listed = rule.id in rules
            value = patient.get(f"{rule.id}.{ENABLED}", programme.get(f"{rule.id}.{ENABLED}", 1))
            return 1.0 if listed and (value == 1 or not rule.disableable) else 0.0
        key = f"patient.{name}" if name in PATIENT_PARAMETERS else f"{rule.id}.{name}"
        default = (
            PATIENT_PARAMETERS[name] if name in PATIENT_PARAMETERS else rule.parameters[name]
        ).default
        return float(patient.get(key, programme.get(key, default)))

    def set_discharged(self, patient_keys: Iterable[int]) -> None:
        for key in patient_keys:
            slot = self.history.slot_of.get(key)
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
        known = slot >= 0
        if not known.all():
            slot, kind, value, measured_at, reference = (
                slot[known],
                kind[known],
                value[known],
                measured_at[known],
                reference[known],
            )
            device_key = device_key[known] if device_key is not None else None
        self.history.insert(slot, kind, value, measured_at, device_key)
        current = (measured_at >= reference - self.config.current_window_us) & self.history.active[
            slot
        ]
        rows = Rows(slot, kind, value, measured_at, current)
        if not current.any():
            return []
        now = np.zeros(0, np.int64)
        candidates: list[Candidate] = []
        for rule in self._reading_rules:
            if not (np.isin(kind, list(rule.kinds)) & current).any():
                continue
            firings = rule.evaluate(RuleContext(rows, self.history, self._params[rule.id], now))
            candidates.extend(self._candidates(rule, firings))
        return candidates

    def sweep(self, now_by_partition: Mapping[int, int]) -> list[Candidate]:
        """Missing-data and adherence rules over every followed patient."""
        history = self.history
        if not len(history):
            return []
        partition = history.partition[: len(history)]
        now = np.array([now_by_partition.get(int(p), 0) for p in partition], np.int64)
        offsets = {int(t): self.config.utc_offset_hours(int(t)) for t in np.unique(now)}
        offset = np.array([offsets[int(t)] for t in now])
        rows = Rows.empty()
        candidates: list[Candidate] = []
        for rule in self._sweep_rules:
            params = dict(self._params[rule.id])
            params["utc_offset_hours"] = _padded(offset, len(params[ENABLED]))
            firings = rule.evaluate(
                RuleContext(rows, history, params, _padded(now, len(params[ENABLED])))
            )
            candidates.extend(self._candidates(rule, firings))
        return candidates

    def _candidates(self, rule: Rule, firings: Firings) -> list[Candidate]:
        """One candidate per patient: the most severe firing, then the latest."""
        if not len(firings):
            return []
        enabled = self._params[rule.id][ENABLED][firings.slot] == 1
        if not enabled.any():
            return []
        order = np.lexsort((firings.at, firings.severity, firings.slot))
        order = order[enabled[order]]
        slot = firings.slot[order]
        last = np.r_[slot[1:] != slot[:-1], True]
        chosen = order[last]
        params = self._params[rule.id]
        out = []
        for i in chosen.tolist():
            s = int(firings.slot[i])
            values = {name: _number(v[i]) for name, v in firings.values.items()}
            out.append(
                Candidate(
                    patient_key=int(self.history.patient_key[s]),
                    rule_id=rule.id,
                    rule_version=rule.version,
                    severity=Severity(int(firings.severity[i])),
                    fired_at_us=int(firings.at[i]),
                    explanation={
                        "rule": rule.id,
                        "version": rule.version,
                        "title": rule.title,
                        "source": rule.source,
                        "values": values,
                        "parameters": {n: _number(params[n][s]) for n in rule.parameters},
                        "kinds": sorted(
                            BY_CODE[c].kind.value
                            for c in rule.kinds
                            if rule.kind is RuleKind.READING
                        ),
                    },
                )
            )
        return out


def _no_parameters() -> dict[str, dict[str, npt.NDArray[np.float64]]]:
    """Per rule, per parameter: one value per slot. "enabled" says whether the rule runs."""
    return {
        rule.id: {name: np.zeros(0) for name in [*rule.parameters, ENABLED, *PATIENT_PARAMETERS]}
        for rule in RULES.values()
    }


def _number(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def _padded(values: npt.NDArray[Any], length: int) -> npt.NDArray[Any]:
    if len(values) >= length:
        return values
    out = np.zeros(length, values.dtype)
    out[: len(values)] = values
    return out
