"""What the rules remember of each patient: numpy arrays indexed by a patient slot.

Per patient: the latest value of each kind measured (NEWS2, last transmission
times), small rings of recent readings for the trend rules and graded answers, CGM
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

# Catalogue codes are sparse; state uses a dense kind index (the catalogue's order).
_MAX_CODE = max(v.code for v in CATALOGUE) + 1
_KIND_INDEX = np.full(_MAX_CODE, -1, dtype=np.int16)
for _i, _vital in enumerate(CATALOGUE):
    _KIND_INDEX[_vital.code] = _i
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


class SparseRows:
    """Per-slot state with a row for the slots that need one only, made at the slot's first
    reading of its kind: most patients never measure most kinds (a diabetes patient no
    SpO2), and a row for every patient and kind was 2.7 kB a patient (issue 22). Row 0 is
    empty and never written: the row of every slot without readings, so that reads need
    no special case. Subclasses keep their arrays by row and say how they grow."""

    def __init__(self, capacity: int) -> None:
        self.row = np.zeros(capacity, np.int32)  # per slot; 0: no reading yet
        self._rows = 1  # rows in use, the empty one included
        self._room = 1  # rows allocated

    def grow(self, capacity: int) -> None:
        """Room for `capacity` slots."""
        self.row = np.concatenate([self.row, np.zeros(capacity - len(self.row), np.int32)])

    def rows_of(self, slot: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """The slots' rows, made for those that have none yet."""
        row = self.row[slot]
        new = np.sort(slot[row == 0])  # np.unique hashes: 0.7 s for a million slots
        new = new[first_of_runs(new)]
        if len(new):
            rows = self._rows + np.arange(len(new), dtype=np.int32)
            self._rows += len(new)
            if self._rows > self._room:
                self._room = max(2 * self._room, self._rows)
                self._reserve(self._room)
            self.row[new] = rows
            row = self.row[slot]
        return row

    def _reserve(self, rows: int) -> None:
        raise NotImplementedError


def extended(array: npt.NDArray[A], rows: int, fill: float | int) -> npt.NDArray[A]:
    """`array` with `rows` rows, the new ones `fill`: resized in place, so that a large
    array's pages are moved (realloc, mremap) rather than copied. Nothing may hold a view
    of `array`: the state's arrays are read by `take`, which copies."""
    before = len(array)
    array.resize((rows, *array.shape[1:]), refcheck=False)
    array[before:] = fill
    return array


class Ring(SparseRows):
    """The last `size` readings inserted, per slot (arrival order; windows filter by time)."""

    def __init__(self, capacity: int, size: int) -> None:
        super().__init__(capacity)
        self.values = np.zeros((1, size))
        self.times = np.full((1, size), NO_TIME)
        self.head = np.zeros(1, np.int64)
        self.newest = np.full(1, NO_TIME)  # the latest time ever inserted, per row

    def _reserve(self, rows: int) -> None:
        self.values = extended(self.values, rows, 0.0)
        self.times = extended(self.times, rows, NO_TIME)
        self.head = extended(self.head, rows, 0)
        self.newest = extended(self.newest, rows, NO_TIME)

    def insert(
        self,
        slot: npt.NDArray[np.int32],
        value: npt.NDArray[np.float64],
        time: npt.NDArray[np.int64],
    ) -> None:
        """Append readings (in arrival order); a reading whose time is there already is not."""
        if not len(slot):
            return
        row = self.rows_of(slot)
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


class Latest(SparseRows):
    """Per slot, the value and time of its newest reading of one kind; of equal times, the
    last to arrive."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.value = np.zeros(1)
        self.time = np.full(1, NO_TIME)

    def _reserve(self, rows: int) -> None:
        self.value = extended(self.value, rows, 0.0)
        self.time = extended(self.time, rows, NO_TIME)

    def insert(
        self,
        slot: npt.NDArray[np.int32],
        value: npt.NDArray[np.float64],
        time: npt.NDArray[np.int64],
    ) -> None:
        row = self.rows_of(slot)
        newer = time > self.time[row]
        row, value, time = row[newer], value[newer], time[newer]
        np.maximum.at(self.time, row, time)
        newest = time == self.time[row]
        self.value[row[newest]] = value[newest]

    def of(
        self, slot: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Per slot: the latest value and its time (NO_TIME where none)."""
        row = self.row.take(slot)
        return self.value.take(row), self.time.take(row)


class CgmDays(SparseRows):
    """Per slot with CGM readings: how many, and how many below range, on each of the last
    CGM_DAYS days (a ring of days), and the newest reading counted. Each reading counts
    once and in time order: one not newer than the newest counted (a re-send, a back-fill)
    is not counted."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.day = np.full((1, CGM_DAYS), -1, np.int64)
        self.below = np.zeros((1, CGM_DAYS), np.int32)
        self.total = np.zeros((1, CGM_DAYS), np.int32)
        self.last = np.full(1, NO_TIME)

    def _reserve(self, rows: int) -> None:
        self.day = extended(self.day, rows, -1)
        self.below = extended(self.below, rows, 0)
        self.total = extended(self.total, rows, 0)
        self.last = extended(self.last, rows, NO_TIME)

    def count(
        self,
        slot: npt.NDArray[np.int32],
        value: npt.NDArray[np.float64],
        time: npt.NDArray[np.int64],
    ) -> None:
        order = np.lexsort((time, slot))
        row, value, time = self.rows_of(slot[order]), value[order], time[order]
        fresh = time > self.last[row]
        fresh[1:] &= ~((row[1:] == row[:-1]) & (time[1:] == time[:-1]))
        row, value, time = row[fresh], value[fresh], time[fresh]
        if not len(row):
            return
        day = time // DAY_US
        bucket = day % CGM_DAYS
        stale = self.day[row, bucket] < day
        self.below[row[stale], bucket[stale]] = 0
        self.total[row[stale], bucket[stale]] = 0
        self.day[row[stale], bucket[stale]] = day[stale]
        np.add.at(self.below, (row, bucket), (value < CGM_LOW_MG_DL).astype(np.int32))
        np.add.at(self.total, (row, bucket), 1)
        np.maximum.at(self.last, row, time)

    def restore(
        self,
        slot: npt.NDArray[np.int32],
        day: npt.NDArray[np.int64],
        below: npt.NDArray[np.int32],
        total: npt.NDArray[np.int32],
        last: npt.NDArray[np.int64],
    ) -> None:
        """Set the counts of (slot, day) pairs as PostgreSQL summed them (a rebuild)."""
        row = self.rows_of(slot)
        bucket = day % CGM_DAYS
        self.day[row, bucket] = day
        self.below[row, bucket] = below
        self.total[row, bucket] = total
        np.maximum.at(self.last, row, last)

    def of(
        self, slot: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """Per slot: the days of its buckets (-1: none), and their readings below and all."""
        row = self.row.take(slot)
        return (
            self.day.take(row, axis=0),
            self.below.take(row, axis=0),
            self.total.take(row, axis=0),
        )


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
    time through a table indexed by key (a dict of a million keys took 100 MB, of three
    million devices 300 MB: issue 22)."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.int64)  # by row: the keys in the order they were added
        self._table = np.full(0, -1, np.int32)  # key -> row, -1 for none

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, keys: Sequence[int] | npt.NDArray[np.integer]) -> npt.NDArray[np.int32]:
        """Each key's row, made for the keys that have none yet (rows in order of first
        appearance)."""
        keys = np.asarray(keys, np.int64)
        distinct, first = np.unique(keys, return_index=True)
        unknown = self.rows(distinct) < 0
        if unknown.any():
            new = keys[np.sort(first[unknown])]  # in order of appearance
            start = len(self.keys)
            largest = int(new.max())
            if largest >= len(self._table):
                grown = np.full(max(2 * len(self._table), largest + 1, 1024), -1, np.int32)
                grown[: len(self._table)] = self._table
                self._table = grown
            self._table[new] = np.arange(start, start + len(new), dtype=np.int32)
            self.keys = np.concatenate([self.keys, new])
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

    def row(self, key: int) -> int | None:
        """The key's row, None if unknown."""
        row = int(self.rows([key])[0])
        return None if row < 0 else row


class History:
    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._patients = KeyIndex()
        self.patient_key = np.zeros(capacity, np.int32)
        self.programme = np.zeros(capacity, np.int8)
        self.enrolled_us = np.zeros(capacity, np.int64)
        self.partition = np.zeros(capacity, np.int32)
        self.active = np.zeros(capacity, np.bool_)  # followed (not discharged)
        self.latest = [Latest(capacity) for _ in range(KINDS)]  # by kind index
        self.rings = {kind_index(k): Ring(capacity, n) for k, n in RING_SIZES.items()}
        self.cgm = CgmDays(capacity)
        self.start_day = np.zeros(capacity, np.int32)  # local day the follow-up started
        # The adherence checks of months 1 and 2: the worst measure's index in
        # alerts.protocol.MEASURES, its expected (-1: not checked yet) and received data.
        self.month_measure = np.zeros((capacity, 2), np.int8)
        self.month_expected = np.full((capacity, 2), -1, np.int32)
        self.month_received = np.zeros((capacity, 2), np.int32)
        # Devices: each a row, with its patient's slot.
        self._devices = KeyIndex()
        self.device_slot = np.zeros(0, np.int32)
        self.device_type = np.zeros(0, np.int8)
        self.device_last = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._patients)

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
        slots = self._patients.add(patient_keys)
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
        self._devices.add(device_keys[new])
        self.device_slot = np.concatenate([self.device_slot, slots[new].astype(np.int32)])
        self.device_type = np.concatenate([self.device_type, types[new].astype(np.int8)])
        self.device_last = np.concatenate([self.device_last, since_us[new].astype(np.int64)])

    @property
    def device_keys(self) -> npt.NDArray[np.int64]:
        """The devices' keys, by row."""
        return self._devices.keys

    def slot(self, patient_key: int) -> int | None:
        """The patient's slot; None if not loaded."""
        return self._patients.row(patient_key)

    def slots(self, patient_keys: Sequence[int] | npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """Slots of the given patients; -1 for those not loaded."""
        return self._patients.rows(patient_keys)

    def latest_of(
        self, slot: npt.NDArray[np.int32], kinds: Sequence[int]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Per slot, a column per kind index: the latest value and its time (NO_TIME: none)."""
        values, times = zip(*(self.latest[k].of(slot) for k in kinds), strict=True)
        return np.column_stack(values), np.column_stack(times)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity
        for name in ("patient_key", "programme", "enrolled_us", "partition", "active", "start_day"):
            array = getattr(self, name)
            setattr(self, name, np.concatenate([array, np.zeros(extra, array.dtype)]))
        fills: tuple[tuple[str, float | int], ...] = (
            ("month_measure", 0),
            ("month_expected", -1),
            ("month_received", 0),
        )
        for name, fill in fills:
            array = getattr(self, name)
            block = np.full((extra, array.shape[1]), fill, array.dtype)
            setattr(self, name, np.vstack([array, block]))
        for sparse in (*self.latest, *self.rings.values(), self.cgm):
            sparse.grow(capacity)
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
        by_kind = np.argsort(k, kind="stable")  # arrival order within each kind
        present, starts = np.unique(k[by_kind], return_index=True)
        for index, mine in zip(present.tolist(), np.split(by_kind, starts[1:]), strict=True):
            s, v, t = slot[mine], value[mine], time[mine]
            self.latest[index].insert(s, v, t)
            if index in self.rings:
                self.rings[index].insert(s, v, t)
            if index == _CGM:
                self.cgm.count(s, v, t)
        if device is not None and len(self._devices):
            rows = self._devices.rows(device)
            seen = rows >= 0
            np.maximum.at(self.device_last, rows[seen], time[seen])


_CGM = kind_index(VitalKind.GLUCOSE_CGM)
