"""Every aggregate score the rules computed (NEWS2), alerting or not, counted per day: the
evidence report's distribution (`alert_scores`)."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import NamedTuple

from ingest.platform import Connection

__all__ = ["ScoreKey", "count_scores"]


class ScoreKey(NamedTuple):
    """What aggregate scores are counted by."""

    rule_id: str
    partition: int  # the patient's, so that each member counts in rows of its own
    day: int  # of the scored set's event time, days since 1970-01-01 (UTC)
    programme: str
    score: int


async def count_scores(
    conn: Connection, scores: Mapping[ScoreKey, int], stored_in: Set[int]
) -> None:
    """Add a batch's scores to the day's counts, for the partitions where it stored
    readings: a batch a member that lost its partitions wrote already, or a replay of
    stored readings (all duplicates), counts nothing again. Each partition's rows are its
    owner's: members do not wait on each other's counts."""
    counted = sorted((k, n) for k, n in scores.items() if k.partition in stored_in)
    if not counted:
        return
    await conn.execute(
        """
        INSERT INTO alert_scores AS s (rule_id, partition, day, programme, score, sets)
        SELECT r, p, date '1970-01-01' + d, g, c, n
        FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::smallint[], $6::bigint[])
             AS x(r, p, d, g, c, n)
        ON CONFLICT (rule_id, partition, day, programme, score)
            DO UPDATE SET sets = s.sets + EXCLUDED.sets
        """,
        [k.rule_id for k, _ in counted],
        [k.partition for k, _ in counted],
        [k.day for k, _ in counted],
        [k.programme for k, _ in counted],
        [k.score for k, _ in counted],
        [n for _, n in counted],
    )
