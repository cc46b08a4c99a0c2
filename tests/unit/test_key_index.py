"""Keys to rows, an array at a time, whatever the keys."""

from __future__ import annotations

import numpy as np

from alerts.history import KeyIndex


def test_unknown_keys_have_no_row_even_before_any_key_is_added() -> None:
    index = KeyIndex()
    assert index.rows(np.array([7, 0, -1])).tolist() == [-1, -1, -1]
    assert index.add(42) == 0
    assert index.add(5) == 1
    assert index.add(42) == 0
    assert index.rows(np.array([5, 42, 43, 5_000_000, -3])).tolist() == [1, 0, -1, -1, -1]
    assert index.rows(np.array([42, 5])).tolist() == [0, 1]
