"""What the rules remember of each patient: numpy arrays indexed by a patient slot.

Per patient: the latest value of every kind (NEWS2, last transmission times),
small rings of recent readings for the trend rules and graded answers, CGM
counts per day, the last reading of each device, and the adherence checks of months 1
and 2 (expected and received data of the worst measure, filled by alerts.adherence).
Inserting a batch is vectorised and idempotent: a reading already in a ring (same
time) is not added twice, CGM readings count once and in time order, latest values
are set-like.

One History serves the partitions a member owns; it is rebuilt from
PostgreSQL when partitions are assigned (alerts.loader).

Rules read patients' rows with `take(slots, axis=0)`: numpy's fancy indexing of
rows (`array[slots]`) is several times slower for the same copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from devices.catalogue import BY_KIND, CATALOGUE, ValueType, VitalKind

__all__ = [
    "CGM_LOW_MG_DL",
    "DAY_US",
    "HOUR_US",
    "NO_TIME",
    "History",
    "KeyIndex",
    "Ring",
    "code_mask",
    "first_of_runs",
    "index_of_code",
    "kind_index",
    "last_of_runs",
    "stable_order",
    "with_room",
]

NO_TIME = np.iinfo(np.int64).min
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US

# Catalogue codes are sparse; state uses a dense kind index. The kinds NEWS2 reads
# together come first, side by side in each patient's row of latest values.
NEWS2_KINDS = (
    VitalKind.RESPIRATORY_RATE,
    VitalKind.SPO2,
    VitalKind.ON_OXYGEN,
    VitalKind.OXYGEN_FLOW,
    VitalKind.SYSTOLIC_BP,
    VitalKind.HEART_RATE,
    VitalKind.NEW_CONFUSION,
    VitalKind.BODY_TEMPERATURE,
)
_ORDER = [*NEWS2_KINDS, *(v.kind for v in CATALOGUE if v.kind not in NEWS2_KINDS)]
_MAX_CODE = max(v.code for v in CATALOGUE) + 1
_KIND_INDEX = np.full(_MAX_CODE, -1, dtype=np.int16)
for _i, _kind in enumerate(_ORDER):
    _KIND_INDEX[BY_KIND[_kind].code] = _i
KINDS = len(CATALOGUE)


def kind_index(kind: VitalKind) -> int:
    return int(_KIND_INDEX[BY_KIND[kind].code])


def index_of_code(code: int) -> int:
    return int(_KIND_INDEX[code])


def stable_order(keys: npt.NDArray[np.int32]) -> npt.NDArray[np.intp]:
    """`np.argsort(keys, kind="stable")` for keys in [0, 2**32): two radix passes of 16
    bits (numpy radix-sorts 16-bit keys only; timsort of 20k slots took 3x as long)."""
    low = np.argsort(keys.astype(np.uint16), kind="stable")
    high = np.argsort((keys[low] >> 16).astype(np.uint16), kind="stable")
    order: npt.NDArray[np.intp] = low[high]
    return order


def first_of_runs(keys: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """For sorted keys: True where a run of equal keys begins."""
    first = np.empty(len(keys), np.bool_)
    first[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return first


def last_of_runs(keys: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """For sorted keys: True where a run of equal keys ends."""
    last = np.empty(len(keys), np.bool_)
    last[-1:] = True
    np.not_equal(keys[1:], keys[:-1], out=last[:-1])
    return last


A = TypeVar("A", bound=np.generic)


def with_room(values: npt.NDArray[A], slots: int, fill: float | int) -> npt.NDArray[A]:
    """`values`, grown by doubling (new entries `fill`) if it has fewer than `slots`."""
    if len(values) >= slots:
        return values
    grown = np.full(max(2 * len(values), slots, 64), fill, values.dtype)
    grown[: len(values)] = values
    return grown


def code_mask(codes: Iterable[int]) -> npt.NDArray[np.bool_]:
    """A table indexed by catalogue code, True for the given codes: `mask[kind]` tests a
    column of kinds against a set in one gather."""
    mask = np.zeros(_MAX_CODE, np.bool_)
    mask[list(codes)] = True
    return mask


# Rings: how many recent readings are kept, per kind (enough for the rules' windows at
# the programmes' schedules; a continuous oximeter keeps its last hour).
RING_SIZES: Mapping[VitalKind, int] = {
    VitalKind.BODY_WEIGHT: 16,
    VitalKind.SPO2: 64,
    VitalKind.VENTILATOR_LEAK: 16,
    # Confirmation (the previous reading) and NEWS2 rising (the previous session's values).
    VitalKind.HEART_RATE: 16,
    VitalKind.RESPIRATORY_RATE: 16,
    VitalKind.BODY_TEMPERATURE: 16,
    **{v.kind: 4 for v in CATALOGUE if v.value_type is ValueType.GRADE},
    VitalKind.DYSPNOEA: 16,  # graded, and a usual value of its own (baseline deviation)
}
CGM_DAYS = 16
CGM_LOW_MG_DL = 70.0  # the consensus "below range" bound the CGM rule counts against


class Ring:
    """The last `size` readings inserted, per slot (arrival order; windows filter by time).

    A slot gets its row at its first reading of the ring's kind: most patients never
    measure most kinds (a diabetes patient no SpO2), and a row for every patient and kind
    was 2.7 kB a patient (issue 22). Row 0 is empty and never written: the row of every
    slot without readings, so that reads need no special case.
    """

    def __init__(self, capacity: int, size: int) -> None:
        self.row = np.zeros(capacity, np.int32)  # per slot; 0: no reading yet
        self.values = np.zeros((1, size))
        self.times = np.full((1, size), NO_TIME)
        self.head = np.zeros(1, np.int64)
        self.newest = np.full(1, NO_TIME)  # the latest time ever inserted, per row
        self._rows = 1  # rows in use, the empty one included

    def grow(self, capacity: int) -> None:
        """Room for `capacity` slots."""
        self.row = np.concatenate([self.row, np.zeros(capacity - len(self.row), np.int32)])

    def _rows_of(self, slot: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """The slots' rows, made for those that have none yet."""
        row = self.row[slot]
        new = np.unique(slot[row == 0])
        if len(new):
            rows = self._rows + np.arange(len(new), dtype=np.int32)
            self._rows += len(new)
            if self._rows > len(self.head):
                self._reserve(max(2 * len(self.head), self._rows))
            self.row[new] = rows
            row = self.row[slot]
        return row

    def _reserve(self, rows: int) -> None:
        extra = rows - len(self.head)
        size = self.values.shape[1]
        self.values = np.vstack([self.values, np.zeros((extra, size))])
        self.times = np.vstack([self.times, np.full((extra, size), NO_TIME)])
        self.head = np.concatenate([self.head, np.zeros(extra, np.int64)])
        self.newest = np.concatenate([self.newest, np.full(extra, NO_TIME)])

    def insert(
        self,
        slot: npt.NDArray[np.int32],
        value: npt.NDArray[np.float64],
        time: npt.NDArray[np.int64],
    ) -> None:
        """Append readings (in arrival order); a reading whose time is there already is not."""
        if not len(slot):
            return
        row = self._rows_of(slot)
        order = stable_order(row)  # by row, arrival order within
        row, value, time = row[order], value[order], time[order]
        fresh = np.ones(len(row), np.bool_)
        fresh[1:] = (row[1:] != row[:-1]) | (time[1:] != time[:-1])  # repeats in batch
        # Only a reading not newer than its row's newest can be in the ring already.
        maybe = np.flatnonzero(time <= self.newest[row])
        if len(maybe):
            fresh[maybe] &= ~(self.times.take(row[maybe], axis=0) == time[maybe, None]).any(axis=1)
        row, value, time = row[fresh], value[fresh], time[fresh]
        if not len(row):
            return
        first = first_of_runs(row)
        starts = np.flatnonzero(first)
        counts = np.append(starts[1:], len(row)) - starts
        rank = np.arange(len(row)) - np.repeat(starts, counts)  # 0, 1, ... within a row
        size = self.values.shape[1]
        position = (self.head[row] + rank) % size
        cell = row.astype(np.int64) * size + position  # later readings overwrite: last n
        np.reshape(self.values, -1, copy=False)[cell] = value
        np.reshape(self.times, -1, copy=False)[cell] = time
        touched = row[starts]
        self.head[touched] = (self.head[touched] + counts) % size
        np.maximum.at(self.newest, row, time)

    def of(
        self, slot: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Per row: the slot's ring values and their times (NO_TIME where none)."""
        row = self.row.take(slot)
        return self.values.take(row, axis=0), self.times.take(row, axis=0)

    def newest_of(self, slot: npt.NDArray[np.int32]) -> npt.NDArray[np.int64]:
        """Per row: the time of the slot's latest ring reading (NO_TIME where none)."""
        newest: npt.NDArray[np.int64] = self.newest.take(self.row.take(slot))
        return newest

    def count(
        self, slot: npt.NDArray[np.int32], start: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.intp]:
        """Per row: how many of the slot's ring readings lie in [start, end) (the times
        alone gathered: cheaper than a window when few rows have enough)."""
        times = self.times.take(self.row.take(slot), axis=0)
        inside = (times >= start[:, None]) & (times < end[:, None]) & (times != NO_TIME)
        counts: npt.NDArray[np.intp] = np.count_nonzero(inside, axis=1)
        return counts

    def window(
        self, slot: npt.NDArray[np.int32], start: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Per row: the slot's ring values, and which of them lie in [start, end)."""
        row = self.row.take(slot)
        times = self.times.take(row, axis=0)
        inside = (times >= start[:, None]) & (times < end[:, None]) & (times != NO_TIME)
        return self.values.take(row, axis=0), inside

    def windows(
        self,
        slot: npt.NDArray[np.int32],
        *bounds: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]],
    ) -> tuple[npt.NDArray[np.float64], list[npt.NDArray[np.bool_]]]:
        """Per row: the slot's ring values, and which lie in each [start, end) of `bounds`
        (one gather of the ring for several windows)."""
        row = self.row.take(slot)
        times = self.times.take(row, axis=0)
        known = times != NO_TIME
        inside = [
            (times >= start[:, None]) & (times < end[:, None]) & known for start, end in bounds
        ]
        return self.values.take(row, axis=0), inside

    def latest_before(
        self, slot: npt.NDArray[np.int32], before: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Per row: the value of the slot's latest ring reading measured before `before`, and
        whether there is one."""
        row = self.row.take(slot)
        times = self.times.take(row, axis=0)
        earlier = np.where(times < before[:, None], times, NO_TIME)
        latest = earlier.argmax(axis=1)
        each = np.arange(len(slot))
        found = earlier[each, latest] != NO_TIME
        value = np.where(found, self.values.take(row, axis=0)[each, latest], np.nan)
        return value, found


def row_medians(
    values: npt.NDArray[np.float64], inside: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Per row, the median of the values inside (every row has at least one)."""
    ordered = np.sort(np.where(inside, values, np.inf), axis=1)  # the others sort last
    count = inside.sum(axis=1)
    row = np.arange(len(values))
    return np.asarray((ordered[row, (count - 1) // 2] + ordered[row, count // 2]) / 2)


class KeyIndex:
    """Integer keys (serial patient or device keys) to dense rows, looked up an array at a
    time through a table indexed by key."""

    def __init__(self) -> None:
        self.row_of: dict[int, int] = {}
        self._table = np.full(0, -1, np.int32)  # key -> row, -1 for none

    def add(self, keys: Sequence[int]) -> npt.NDArray[np.int32]:
        """Each key's row, made for the keys that have none yet."""
        new = [key for key in dict.fromkeys(keys) if key not in self.row_of]
        if new:
            first = len(self.row_of)
            self.row_of.update(zip(new, range(first, first + len(new)), strict=True))
            largest = max(new)
            if largest >= len(self._table):
                grown = np.full(max(2 * len(self._table), largest + 1, 1024), -1, np.int32)
                grown[: len(self._table)] = self._table
                self._table = grown
            self._table[new] = np.arange(first, first + len(new), dtype=np.int32)
        return self.rows(keys)

    def rows(self, keys: Sequence[int] | npt.NDArray[np.integer]) -> npt.NDArray[np.int32]:
        """Each key's row; -1 for unknown keys."""
        keys = np.asarray(keys, np.int64)
        inside = (keys >= 0) & (keys < len(self._table))
        if inside.all():
            found: npt.NDArray[np.int32] = self._table[keys]
            return found
        rows = np.full(len(keys), -1, np.int32)
        rows[inside] = self._table[keys[inside]]  # none inside when the table is empty
        return rows


class History:
    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._patients = KeyIndex()
        self.slot_of = self._patients.row_of  # patient key -> slot
        self.patient_key = np.zeros(capacity, np.int32)
        self.programme = np.zeros(capacity, np.int8)
        self.enrolled_us = np.zeros(capacity, np.int64)
        self.partition = np.zeros(capacity, np.int32)
        self.active = np.zeros(capacity, np.bool_)  # followed (not discharged)
        self.last_value = np.zeros((capacity, KINDS))
        self.last_time = np.full((capacity, KINDS), NO_TIME)
        self.rings = {kind_index(k): Ring(capacity, n) for k, n in RING_SIZES.items()}
        # Each ring's kind as a [start, stop) range of kind indexes, for searchsorted.
        self._ring_bounds = np.array([(k, k + 1) for k in self.rings], np.int16).reshape(-1)
        self.cgm_day = np.full((capacity, CGM_DAYS), -1, np.int64)
        self.cgm_below = np.zeros((capacity, CGM_DAYS), np.int32)
        self.cgm_total = np.zeros((capacity, CGM_DAYS), np.int32)
        self.cgm_last = np.full(capacity, NO_TIME)
        self.start_day = np.zeros(capacity, np.int32)  # local day the follow-up started
        # The adherence checks of months 1 and 2: the worst measure's index in
        # alerts.protocol.MEASURES, its expected (-1: not checked yet) and received data.
        self.month_measure = np.zeros((capacity, 2), np.int8)
        self.month_expected = np.full((capacity, 2), -1, np.int32)
        self.month_received = np.zeros((capacity, 2), np.int32)
        # Devices: each a row, with its patient's slot.
        self._devices = KeyIndex()
        self.device_of = self._devices.row_of  # device key -> row
        self.device_slot = np.zeros(0, np.int32)
        self.device_type = np.zeros(0, np.int8)
        self.device_last = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.slot_of)

    # -- patients and devices -------------------------------------------------------------

    def add(
        self,
        patient_keys: npt.NDArray[np.int32],
        programmes: npt.NDArray[np.int8],
        enrolled_us: npt.NDArray[np.int64],
        start_days: npt.NDArray[np.int64],
        partitions: npt.NDArray[np.int32],
    ) -> npt.NDArray[np.int32]:
        """The patients' slots, created empty for those who are new; their profile set."""
        slots = self._patients.add(patient_keys.tolist())
        if len(self) > self._capacity:
            capacity = self._capacity
            while capacity < len(self):
                capacity *= 2
            self._grow(capacity)
        self.patient_key[slots] = patient_keys
        self.programme[slots] = programmes
        self.enrolled_us[slots] = enrolled_us
        self.start_day[slots] = start_days
        self.partition[slots] = partitions
        self.active[slots] = True
        return slots

    def add_devices(
        self,
        device_keys: npt.NDArray[np.int32],
        slots: npt.NDArray[np.int32],
        types: npt.NDArray[np.int8],
        since_us: npt.NDArray[np.int64],
    ) -> None:
        """Devices (with their patient's slot, type and enrolment); known ones are kept."""
        _, first = np.unique(device_keys, return_index=True)
        new = np.sort(first[self._devices.rows(device_keys[first]) < 0])
        self._devices.add(device_keys[new].tolist())
        self.device_slot = np.concatenate([self.device_slot, slots[new].astype(np.int32)])
        self.device_type = np.concatenate([self.device_type, types[new].astype(np.int8)])
        self.device_last = np.concatenate([self.device_last, since_us[new].astype(np.int64)])

    def slots(self, patient_keys: Sequence[int] | npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """Slots of the given patients; -1 for those not loaded."""
        return self._patients.rows(patient_keys)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity
        for name in (
            "patient_key",
            "programme",
            "enrolled_us",
            "partition",
            "active",
            "cgm_last",
            "start_day",
        ):
            array = getattr(self, name)
            pad = NO_TIME if name == "cgm_last" else 0
            setattr(self, name, np.concatenate([array, np.full(extra, pad, array.dtype)]))
        fills: tuple[tuple[str, float | int], ...] = (
            ("last_value", 0.0),
            ("last_time", NO_TIME),
            ("cgm_day", -1),
            ("cgm_below", 0),
            ("cgm_total", 0),
            ("month_measure", 0),
            ("month_expected", -1),
            ("month_received", 0),
        )
        for name, fill in fills:
            array = getattr(self, name)
            block = np.full((extra, array.shape[1]), fill, array.dtype)
            setattr(self, name, np.vstack([array, block]))
        for ring in self.rings.values():
            ring.grow(capacity)
        self._capacity = capacity

    # -- readings ---------------------------------------------------------------------------

    def insert(
        self,
        slot: npt.NDArray[np.int32],
        kind: npt.NDArray[np.int16],
        value: npt.NDArray[np.float64],
        time: npt.NDArray[np.int64],
        device: npt.NDArray[np.int32] | None = None,
    ) -> None:
        """Take a batch of readings (arrival order) into the state."""
        if not len(slot):
            return
        k = _KIND_INDEX[kind]
        self._latest(slot, k, value, time)
        by_kind = np.argsort(k, kind="stable")  # arrival order within each kind
        bounds = np.searchsorted(k[by_kind], self._ring_bounds)
        for ring, start, stop in zip(self.rings.values(), bounds[0::2], bounds[1::2], strict=True):
            if stop > start:
                mine = by_kind[start:stop]
                ring.insert(slot[mine], value[mine], time[mine])
        cgm = kind == BY_KIND[VitalKind.GLUCOSE_CGM].code
        if cgm.any():
            self._count_cgm(slot[cgm], value[cgm], time[cgm])
        if device is not None and self.device_of:
            rows = self._devices.rows(device)
            seen = rows >= 0
            np.maximum.at(self.device_last, rows[seen], time[seen])

    def _latest(
        self,
        slot: npt.NDArray[np.int32],
        k: npt.NDArray[np.int16],
        value: npt.NDArray[np.float64],
        time: npt.NDArray[np.int64],
    ) -> None:
        cell = slot.astype(np.int64) * KINDS + k  # into the flattened (slot, kind) arrays
        last_time = np.reshape(self.last_time, -1, copy=False)  # views: writes go through
        last_value = np.reshape(self.last_value, -1, copy=False)
        newer = time > last_time[cell]
        cell, value, time = cell[newer], value[newer], time[newer]
        np.maximum.at(last_time, cell, time)
        newest = time == last_time[cell]
        last_value[cell[newest]] = value[newest]  # of equal times, the last to arrive

    def _count_cgm(
        self,
        slot: npt.NDArray[np.int32],
        value: npt.NDArray[np.float64],
        time: npt.NDArray[np.int64],
    ) -> None:
        """Count each CGM reading once, in time order: one not newer than the patient's
        latest counted reading (a re-send, a back-fill) is not counted."""
        order = np.lexsort((time, slot))
        slot, value, time = slot[order], value[order], time[order]
        fresh = time > self.cgm_last[slot]
        fresh[1:] &= ~((slot[1:] == slot[:-1]) & (time[1:] == time[:-1]))
        slot, value, time = slot[fresh], value[fresh], time[fresh]
        if not len(slot):
            return
        day = time // DAY_US
        bucket = day % CGM_DAYS
        stale = self.cgm_day[slot, bucket] < day
        self.cgm_below[slot[stale], bucket[stale]] = 0
        self.cgm_total[slot[stale], bucket[stale]] = 0
        self.cgm_day[slot[stale], bucket[stale]] = day[stale]
        np.add.at(self.cgm_below, (slot, bucket), (value < CGM_LOW_MG_DL).astype(np.int32))
        np.add.at(self.cgm_total, (slot, bucket), 1)
        np.maximum.at(self.cgm_last, slot, time)
