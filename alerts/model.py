"""The vocabulary of the alert engine: severities, rules, parameters, firings.

A rule is a pure function over column arrays. It reads the batch's readings,
the patients' history and their parameters, and returns the rows (or
patients) that fire, with the values that made them fire. It does no I/O and
reads no clock: `now` comes in with the context.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

import numpy as np
import numpy.typing as npt

from alerts.history import History

F = npt.NDArray[np.float64]
Slots = npt.NDArray[np.int32] | npt.NDArray[np.int64] | npt.NDArray[np.intp]

__all__ = [
    "Disposition",
    "Firings",
    "Job",
    "Parameter",
    "Rows",
    "Rule",
    "RuleContext",
    "RuleKind",
    "RuleParameters",
    "Scores",
    "Severity",
]


class Severity(IntEnum):
    """info: dashboard; orange: review or call back; red: prompt medical review (advise 15)."""

    INFO = 1
    ORANGE = 2
    RED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Job(StrEnum):
    """What a rule's findings ask of the care team: the episode they join."""

    CLINICAL = "clinical"  # review the patient: a worsening
    DATA = "data"  # chase the data: missing measures, adherence


class Disposition(StrEnum):
    """What was done about an episode, recorded when it is resolved (docs/alerts.md)."""

    CALLED_NO_ACTION = "called_no_action"  # patient called, no action needed
    ADVICE_GIVEN = "advice_given"
    TREATMENT_ADJUSTED = "treatment_adjusted"
    REFERRED = "referred"  # to the GP or a specialist
    EMERGENCY = "emergency"  # sent to emergency, or hospitalised
    ARTEFACT = "artefact"  # a measurement error or artefact
    DATA_CHASED = "data_chased"  # the patient reminded, the device checked
    DATA_RECEIVED = "data_received"  # by telemon: the data a data episode waited for came

    @property
    def clinical_action(self) -> bool:
        """Whether the episode led to a clinical action: what the alerts' positive
        predictive value, as clinicians judged it, counts."""
        return self in _CLINICAL_ACTIONS

    @property
    def chosen_by_clinicians(self) -> bool:
        return self is not Disposition.DATA_RECEIVED


_CLINICAL_ACTIONS = frozenset(
    {
        Disposition.ADVICE_GIVEN,
        Disposition.TREATMENT_ADJUSTED,
        Disposition.REFERRED,
        Disposition.EMERGENCY,
    }
)


class RuleKind(StrEnum):
    READING = "reading"  # evaluated on arrival, over the batch's current readings
    SWEEP = "sweep"  # evaluated periodically, over every patient (missing data, adherence)


@dataclass(frozen=True, slots=True)
class Parameter:
    default: float
    unit: str
    description: str
    verified: bool = True  # False: a design default ([U] in docs/clinical.md), unpublished


@dataclass(frozen=True, slots=True)
class Rows:
    """Readings of a batch, as the rules see them (one entry per reading)."""

    slot: npt.NDArray[np.int32]  # patient index in the History
    kind: npt.NDArray[np.int16]  # catalogue code
    value: npt.NDArray[np.float64]
    measured_at: npt.NDArray[np.int64]  # µs
    current: npt.NDArray[np.bool_]  # recent enough to raise a current-value alert

    def __len__(self) -> int:
        return len(self.slot)

    def take(self, index: npt.NDArray[np.intp]) -> Rows:
        return Rows(
            self.slot[index],
            self.kind[index],
            self.value[index],
            self.measured_at[index],
            self.current[index],
        )

    @classmethod
    def empty(cls) -> Rows:
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.int16),
            np.empty(0, np.float64),
            np.empty(0, np.int64),
            np.empty(0, np.bool_),
        )


class RuleParameters:
    """One rule's parameters, looked up for the patients a rule evaluates. "enabled" (1 or
    0) says whether the rule runs for a patient; the patient parameters
    (alerts.catalogue.PATIENT_PARAMETERS) are there too. `per_slot` gives parameters
    the engine sets per patient at each sweep (the programme's UTC offset)."""

    __slots__ = ("_column", "_per_slot", "_set_of", "_table")

    def __init__(
        self,
        table: F,
        column: Mapping[str, int],
        set_of: npt.NDArray[np.int32],
        per_slot: Mapping[str, F] | None = None,
    ) -> None:
        self._table = table
        self._column = column
        self._set_of = set_of
        self._per_slot = per_slot or {}

    def value(self, name: str, slot: Slots) -> F:
        """Parameter `name` of each patient in `slot`."""
        if name in self._per_slot:
            return self._per_slot[name][slot]
        return np.asarray(self._table[:, self._column[name]].take(self._set_of[slot]))

    def of(self, slot: Slots) -> dict[str, F]:
        """Every parameter of each patient in `slot`, by name."""
        rows = self._table.take(self._set_of[slot], axis=0)
        found = {name: rows[:, j] for name, j in self._column.items()}
        found.update({name: values[slot] for name, values in self._per_slot.items()})
        return found


@dataclass(frozen=True, slots=True)
class RuleContext:
    rows: Rows
    history: History
    params: RuleParameters  # this rule's parameters, looked up by slot
    now_us: npt.NDArray[np.int64]  # per slot (sweeps); the engine's "now"


@dataclass(frozen=True, slots=True)
class Scores:
    """Every aggregate score a rule computed, alerting or not: one per scored set."""

    slot: npt.NDArray[np.int32]
    at: npt.NDArray[np.int64]  # event time it was scored at, µs
    score: npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class Firings:
    """What fired: one entry per firing (a reading, or a patient for sweeps)."""

    slot: npt.NDArray[np.int32]
    severity: npt.NDArray[np.int8]
    at: npt.NDArray[np.int64]  # event time it fired at, µs
    values: Mapping[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    scores: Scores | None = None  # an aggregate rule's every score (NEWS2's distribution)

    def __len__(self) -> int:
        return len(self.slot)

    @classmethod
    def none(cls) -> Firings:
        return cls(np.empty(0, np.int32), np.empty(0, np.int8), np.empty(0, np.int64))


Evaluate = Callable[[RuleContext], Firings]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    version: int
    title: str
    source: str  # the clinical source, as cited in docs/clinical.md
    kind: RuleKind
    kinds: frozenset[int]  # catalogue codes it reads (for READING rules: what triggers it)
    severities: tuple[Severity, ...]
    parameters: Mapping[str, Parameter]
    evaluate: Evaluate
    disableable: bool = True
    resolved_by_kinds: frozenset[int] = frozenset()  # data that closes its alerts
    job: Job = Job.CLINICAL

    def defaults(self) -> dict[str, float]:
        return {name: p.default for name, p in self.parameters.items()}
