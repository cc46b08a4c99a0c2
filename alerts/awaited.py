"""The data open missing-data findings wait for, so that a batch hands the lifecycle only
the arrivals that may resolve one: most batches, none at all.

A (patient, rule) is awaited from the moment the engine emits a missing-data candidate
for it (or, after an assignment, while PostgreSQL holds such a finding open) until data
of one of the rule's kinds arrives measured at or after the latest `data_since` seen for
it: the lifecycle then resolves the finding, if a clinician has not already.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from alerts.catalogue import RESOLVED_BY_DATA
from alerts.engine import Candidate
from alerts.lifecycle import Arrivals

__all__ = ["AwaitedData"]


class AwaitedData:
    def __init__(self) -> None:
        self._since_us: dict[tuple[int, str], int] = {}  # (patient key, rule) -> data since

    def __len__(self) -> int:
        return len(self._since_us)

    def clear(self) -> None:
        self._since_us.clear()

    def expect(self, patient_key: int, rule_id: str, data_since_us: int) -> None:
        key = (patient_key, rule_id)
        self._since_us[key] = max(self._since_us.get(key, data_since_us), data_since_us)

    def expect_candidates(self, candidates: Iterable[Candidate]) -> None:
        for c in candidates:
            if c.rule_id in RESOLVED_BY_DATA:
                since_s = c.explanation["values"].get("data_since_s") or 0.0
                self.expect(c.patient_key, c.rule_id, int(since_s * 1e6))

    def arrivals(
        self,
        patient_key: npt.NDArray[np.int32],
        kind: npt.NDArray[np.int16],
        measured_at_us: npt.NDArray[np.int64],
    ) -> Arrivals:
        """The latest reading per (awaited patient, kind) of a batch; what it answers is no
        longer awaited."""
        if not self._since_us:
            return Arrivals.none()
        awaited = np.fromiter({p for p, _ in self._since_us}, np.int64)
        mine = np.isin(patient_key, awaited)
        if not mine.any():
            return Arrivals.none()
        arrivals = _latest(patient_key[mine], kind[mine], measured_at_us[mine])
        for patient, code, at in zip(
            arrivals.patient_key, arrivals.kind, arrivals.latest_us, strict=True
        ):
            for rule_id, kinds in RESOLVED_BY_DATA.items():
                since = self._since_us.get((patient, rule_id))
                if since is not None and code in kinds and at >= since:
                    del self._since_us[(patient, rule_id)]
        return arrivals


def _latest(
    patient_key: npt.NDArray[np.int32],
    kind: npt.NDArray[np.int16],
    measured_at_us: npt.NDArray[np.int64],
) -> Arrivals:
    """The latest measured_at per (patient, kind)."""
    pairs = np.stack([patient_key.astype(np.int64), kind.astype(np.int64)])
    unique, inverse = np.unique(pairs, axis=1, return_inverse=True)
    latest = np.full(unique.shape[1], np.iinfo(np.int64).min)
    np.maximum.at(latest, inverse.ravel(), measured_at_us)
    return Arrivals(unique[0].tolist(), unique[1].tolist(), latest.tolist())
