"""Every aggregate score the rules computed (NEWS2), alerting or not, counted per day: the
evidence report's distribution (`alert_scores`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import NamedTuple

from ingest.platform import Connection

__all__ = ["ScoreKey", "ScoreRow", "count_scores", "score_arrays", "scores_cte", "to_count"]


class ScoreKey(NamedTuple):
    """What aggregate scores are counted by."""

    rule_id: str
    partition: int  # the patient's, so that each member counts in rows of its own
    day: int  # of the scored set's event time, days since 1970-01-01 (UTC)
    programme: str
    score: int


ScoreRow = tuple[ScoreKey, int]  # a count of scored sets to add


def to_count(scores: Mapping[ScoreKey, int], stored_in: Set[int]) -> list[ScoreRow]:
    """A batch's scores to add to the day's counts, for the partitions where it stored
    readings: a batch a member that lost its partitions wrote already, or a replay of
    stored readings (all duplicates), counts nothing again. Each partition's rows are its
    owner's: members do not wait on each other's counts. Sorted: rows locked in one order."""
    return sorted((k, n) for k, n in scores.items() if k.partition in stored_in)


# The upsert of the counts, as the body of a CTE of a statement whose parameters from
# $(offset + 1) on are `score_arrays` (alerts.lifecycle writes them with the episodes).
_SCORES_CTE = """
    INSERT INTO alert_scores AS s (rule_id, partition, day, programme, score, sets)
    SELECT r, p, date '1970-01-01' + d, g, c, n
    FROM unnest(${a}::text[], ${b}::int[], ${c}::int[], ${d}::text[], ${e}::smallint[],
                ${f}::bigint[]) AS x(r, p, d, g, c, n)
    ON CONFLICT (rule_id, partition, day, programme, score)
        DO UPDATE SET sets = s.sets + EXCLUDED.sets
    RETURNING 1
"""


def scores_cte(offset: int) -> str:
    return _SCORES_CTE.format(**{k: offset + i + 1 for i, k in enumerate("abcdef")})


def score_arrays(
    counted: Sequence[ScoreRow],
) -> tuple[list[str], list[int], list[int], list[str], list[int], list[int]]:
    return (
        [k.rule_id for k, _ in counted],
        [k.partition for k, _ in counted],
        [k.day for k, _ in counted],
        [k.programme for k, _ in counted],
        [k.score for k, _ in counted],
        [n for _, n in counted],
    )


async def count_scores(
    conn: Connection, scores: Mapping[ScoreKey, int], stored_in: Set[int]
) -> None:
    """The counts of `to_count` in a statement of their own."""
    counted = to_count(scores, stored_in)
    if not counted:
        return
    await conn.execute("WITH counted AS (" + scores_cte(0) + ") SELECT 1", *score_arrays(counted))
