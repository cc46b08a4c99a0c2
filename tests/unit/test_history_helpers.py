"""The history's array helpers: keys to rows, ordering and runs, whatever the keys."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import given
from hypothesis import strategies as st

from alerts.history import KeyIndex, first_of_runs, last_of_runs, stable_order

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
    assert index.add(42) == 0
    assert index.add(5) == 1
    assert index.add(42) == 0
    assert index.rows(np.array([5, 42, 43, 5_000_000, -3])).tolist() == [1, 0, -1, -1, -1]
    assert index.rows(np.array([42, 5])).tolist() == [0, 1]
