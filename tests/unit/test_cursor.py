"""The intake cursor: each record once, from where it was told to start, no unconfirmed gap."""

from __future__ import annotations

from ingest.pipeline.cursor import IntakeCursor


class _R:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def offsets(taken: tuple[list[_R], dict[str, int]]) -> list[int]:
    records, seek_back = taken
    assert seek_back == {}
    return [r.offset for r in records]


def test_cursor_takes_each_record_once_from_its_start() -> None:
    cursor = IntakeCursor()
    cursor.start("p0", 10)
    assert offsets(cursor.take({"p0": [_R(8), _R(9), _R(10), _R(11)]})) == [10, 11]
    assert offsets(cursor.take({"p0": [_R(10), _R(11), _R(12)]})) == [12]  # a repeat


def test_cursor_reads_a_gap_again_before_believing_it() -> None:
    cursor = IntakeCursor()
    cursor.start("p0", 10)
    cursor.start("p1", 0)
    # A fetch answered from the wrong place: nothing taken, p0 is read again from 10.
    taken, seek_back = cursor.take({"p0": [_R(554)], "p1": [_R(0)]})
    assert [r.offset for r in taken] == [0]
    assert seek_back == {"p0": 10}
    assert offsets(cursor.take({"p0": [_R(10), _R(11)]})) == [10, 11]
    # A real gap (transaction markers) is repeated from exactly there, then taken.
    assert cursor.take({"p0": [_R(15)]}) == ([], {"p0": 12})
    assert offsets(cursor.take({"p0": [_R(15), _R(16)]})) == [15, 16]
    # A restart forgets what was re-read.
    cursor.start("p0", 20)
    assert cursor.take({"p0": [_R(22)]}) == ([], {"p0": 20})


def test_cursor_takes_nothing_between_a_revoke_and_the_next_seek() -> None:
    cursor = IntakeCursor()
    cursor.start("p0", 0)
    cursor.stop_all()
    assert cursor.take({"p0": [_R(0)], "p1": [_R(0)]}) == ([], {})
    cursor.start("p1", 5)
    assert offsets(cursor.take({"p0": [_R(1)], "p1": [_R(5)]})) == [5]
