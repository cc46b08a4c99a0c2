"""Dead-letter filters become one parameterised WHERE clause; a replay needs a narrowing one."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest.pipeline.dead_letter_search import Selection, State


def test_every_filter_is_a_parameter() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    where, args = Selection(
        ids=[3, 4],
        reason="unknown_device",
        patient="p-1",
        device="oxi-1",
        since=since,
        partition=2,
        from_offset=10,
        to_offset=20,
        state=State.PARKED,
    ).where()
    assert "p-1" not in where  # values travel as parameters only
    assert args == [[3, 4], "unknown_device", "p-1", b"p-1", "oxi-1", since, 2, 10, 20]
    assert where.startswith("d.parked_until IS NOT NULL")
    assert where.count("$") == len(args)


def test_a_state_alone_does_not_narrow_a_selection() -> None:
    assert not Selection(state=State.OPEN).narrowed
    assert Selection(reason="out_of_range").narrowed
    assert Selection(ids=[1]).narrowed
    assert Selection().where() == ("true", [])
