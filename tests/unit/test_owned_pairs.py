"""The registry's owned pairs: found by digest, exactly the pairs they hold."""

from __future__ import annotations

import numpy as np

from devices.pairs import pair_digests
from ingest.pipeline.registry_cache import OwnedPairs

# Pairs whose plain concatenations collide ("a" + "b:c" and "a:b" + "c"), and lengths
# across a digit boundary of the length prefix.
PAIRS = [("a", "b:c"), ("a:b", "c"), ("ab", ":c"), ("p-1", "oxi-1"), ("p-1", "oxi-2")] + [
    (f"p-{n}" + "x" * (n % 12), f"dev-{n}") for n in range(200)
]


def digests(pairs: list[tuple[str, str]]) -> np.ndarray:
    return pair_digests([p for p, _ in pairs], [d for _, d in pairs])


def owned(pairs: list[tuple[str, str]], partitions: list[int] | None = None) -> OwnedPairs:
    n = len(pairs)
    return OwnedPairs(
        digests(pairs),
        np.arange(1, n + 1, dtype=np.int32),
        np.arange(1001, 1001 + n, dtype=np.int32),
        np.array(partitions if partitions is not None else [0] * n, np.int16),
    )


def keys(table: OwnedPairs, pairs: list[tuple[str, str]]) -> list[tuple[int, int]]:
    found = table.find(digests(pairs))
    return list(zip(found.patient_key.tolist(), found.device_key.tolist(), strict=True))


def test_every_pair_held_is_found_with_its_keys_and_no_other() -> None:
    table = owned(PAIRS[::2])
    expected = {pair: (i + 1, 1001 + i) for i, pair in enumerate(PAIRS[::2])}
    assert keys(table, PAIRS) == [expected.get(pair, (-1, -1)) for pair in PAIRS]
    assert keys(table, [("b:c", "a"), ("", ""), ("p-1", "oxi-1 ")]) == [(-1, -1)] * 3


def test_an_identifier_that_is_not_utf_8_has_a_digest_and_is_not_found() -> None:
    assert keys(owned(PAIRS), [("\ud800", "oxi-1")]) == [(-1, -1)]


def test_an_empty_table_finds_nothing() -> None:
    assert keys(OwnedPairs.empty(), PAIRS[:3]) == [(-1, -1)] * 3
    assert keys(OwnedPairs.empty(), []) == []
    assert keys(owned(PAIRS), []) == []


def test_the_pairs_of_some_partitions_and_joined_tables() -> None:
    partitions = [n % 3 for n in range(len(PAIRS))]
    table = owned(PAIRS, partitions)
    kept = table.on({0, 2})
    assert [k != (-1, -1) for k in keys(kept, PAIRS)] == [p != 1 for p in partitions]
    assert len(kept) + len(table.on({1})) == len(table)
    rejoined = OwnedPairs.joined([kept, table.on({1})])
    assert (
        keys(rejoined, PAIRS)
        == keys(table, PAIRS)
        == [(i + 1, 1001 + i) for i in range(len(PAIRS))]
    )


def test_pairs_whose_first_halves_agree_are_left_to_the_database() -> None:
    made_up = digests(PAIRS[:3]).copy()
    made_up[1, 0] = made_up[0, 0]  # a 64-bit collision
    table = OwnedPairs(
        made_up,
        np.array([1, 2, 3], np.int32),
        np.array([11, 12, 13], np.int32),
        np.zeros(3, np.int16),
    )
    assert len(table) == 1
    assert keys(table, PAIRS[:3]) == [(-1, -1), (-1, -1), (3, 13)]
