"""Accepted readings as columns: what the writer stores and the steps see."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

__all__ = ["ReadingRows"]


@dataclass(frozen=True, slots=True)
class ReadingRows:
    """Accepted readings, one array per `readings` column (received_at is set at write)."""

    patient_key: npt.NDArray[np.int32]
    device_key: npt.NDArray[np.int32]
    kind: npt.NDArray[np.int16]
    value: npt.NDArray[np.float64]
    measured_at_us: npt.NDArray[np.int64]  # µs since the Unix epoch
    source_partition: npt.NDArray[np.int32]
    source_offset: npt.NDArray[np.int64]
    reference_us: npt.NDArray[np.int64]  # the record's "now" (not stored): current or back-fill

    def __len__(self) -> int:
        return len(self.kind)

    def select(self, mask: npt.NDArray[np.bool_]) -> ReadingRows:
        return ReadingRows(
            self.patient_key[mask],
            self.device_key[mask],
            self.kind[mask],
            self.value[mask],
            self.measured_at_us[mask],
            self.source_partition[mask],
            self.source_offset[mask],
            self.reference_us[mask],
        )

    @classmethod
    def concat(cls, parts: list[ReadingRows]) -> ReadingRows:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    @classmethod
    def empty(cls) -> ReadingRows:
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.int32),
            np.empty(0, np.int16),
            np.empty(0, np.float64),
            np.empty(0, np.int64),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.int64),
        )
