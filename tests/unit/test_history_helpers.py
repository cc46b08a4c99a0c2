"""The history's array helpers: keys to rows, ordering and runs, whatever the keys; rings
with rows for the patients who measure their kind only."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import given
from hypothesis import strategies as st

from alerts.history import (
    NO_TIME,
    CgmDays,
    KeyIndex,
    Latest,
    Ring,
    first_of_runs,
    last_of_runs,
    stable_order,
)

slots = st.lists(st.integers(0, 2**31 - 1) | st.integers(0, 40), max_size=300).map(
    lambda keys: np.array(keys, np.int32)
)


@given(slots)
def test_stable_order_is_a_stable_argsort(keys: npt.NDArray[np.int32]) -> None:
    assert stable_order(keys).tolist() == np.argsort(keys, kind="stable").tolist()


@given(slots)
def test_runs_of_sorted_keys(keys: npt.NDArray[np.int32]) -> None:
    keys = np.sort(keys)
    first, last = first_of_runs(keys), last_of_runs(keys)
    assert keys[first].tolist() == keys[last].tolist() == sorted(set(keys.tolist()))
    assert np.flatnonzero(first).tolist() == [
        i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]
    ]


def test_unknown_keys_have_no_row_even_before_any_key_is_added() -> None:
    index = KeyIndex()
    assert index.rows(np.array([7, 0, -1])).tolist() == [-1, -1, -1]
    assert index.add([42]).tolist() == [0]
    assert index.add([5, 42, 5]).tolist() == [1, 0, 1]
    assert index.rows(np.array([5, 42, 43, 5_000_000, -3])).tolist() == [1, 0, -1, -1, -1]
    assert index.rows(np.array([42, 5])).tolist() == [0, 1]
    assert index.keys.tolist() == [42, 5]
    assert (index.row(5), index.row(6), len(index)) == (1, None, 2)


@given(st.lists(st.lists(st.integers(0, 5000), max_size=30), max_size=8))
def test_keys_get_rows_in_order_of_first_appearance(batches: list[list[int]]) -> None:
    index, seen = KeyIndex(), list[int]()
    for batch in batches:
        rows = index.add(batch)
        seen.extend(k for k in dict.fromkeys(batch) if k not in seen)
        assert rows.tolist() == [seen.index(k) for k in batch]
    assert index.keys.tolist() == seen


def test_a_ring_has_rows_only_for_the_slots_that_had_its_readings() -> None:
    ring = Ring(capacity=1000, size=4)
    ring.insert(
        np.array([7, 3, 7], np.int32), np.array([1.0, 2.0, 3.0]), np.array([10, 20, 30], np.int64)
    )
    ring.insert(np.array([7], np.int32), np.array([9.0]), np.array([10], np.int64))  # a re-send
    assert np.count_nonzero(ring.row) == 2
    assert len(ring.head) < 1000
    ring.insert(np.arange(100, 200, dtype=np.int32), np.ones(100), np.full(100, 5, np.int64))
    assert np.count_nonzero(ring.row) == 102  # grown in place, the first rows kept
    assert ring.times[ring.row[100]].tolist() == [5, *[NO_TIME] * 3]
    values, inside = ring.window(
        np.array([7, 3, 5], np.int32), np.zeros(3, np.int64), np.full(3, 100, np.int64)
    )
    assert [sorted(v[i].tolist()) for v, i in zip(values, inside, strict=True)] == [
        [1.0, 3.0],
        [2.0],
        [],
    ]
    previous, found = ring.latest_before(np.array([7, 5], np.int32), np.array([30, 30], np.int64))
    assert previous[0] == 1.0
    assert found.tolist() == [True, False]


def test_latest_values_are_the_newest_by_time_for_the_slots_that_had_some() -> None:
    latest = Latest(capacity=100)
    latest.insert(
        np.array([4, 4, 9, 4], np.int32),
        np.array([1.0, 2.0, 3.0, 4.0]),
        np.array([20, 10, 5, 20], np.int64),  # of equal times, the last to arrive
    )
    latest.insert(np.array([9], np.int32), np.array([7.0]), np.array([4], np.int64))  # older
    value, time = latest.of(np.array([4, 9, 50], np.int32))
    assert value[:2].tolist() == [4.0, 3.0]
    assert time.tolist() == [20, 5, NO_TIME]
    assert np.count_nonzero(latest.row) == 2


def test_cgm_days_count_each_reading_once_in_time_order() -> None:
    day = 86_400_000_000
    cgm = CgmDays(capacity=10)
    cgm.count(
        np.array([3, 3, 3], np.int32), np.array([60.0, 100.0, 60.0]), np.array([day, day + 1, day])
    )
    cgm.count(np.array([3], np.int32), np.array([50.0]), np.array([day + 1]))  # not newer
    days, below, total = cgm.of(np.array([3, 5], np.int32))
    assert (days[0, 1], below[0, 1], total[0, 1]) == (1, 1, 2)
    assert total[1].sum() == 0
    assert (days[1] == -1).all()
    cgm.restore(
        np.array([5], np.int32),
        np.array([17]),
        np.array([2], np.int32),
        np.array([9], np.int32),
        np.array([17 * day], np.int64),
    )
    days, below, total = cgm.of(np.array([5], np.int32))
    assert (days[0, 1], below[0, 1], total[0, 1]) == (17, 2, 9)
