"""The replay tag a replayed record carries, and the outcome judged for each dead letter."""

from __future__ import annotations

from ingest.pipeline.replays import (
    REPLAY_HEADER,
    Outcome,
    ReadingFate,
    ReplayResult,
    ReplayTag,
    judge,
)


def test_a_tag_survives_its_headers() -> None:
    tag = ReplayTag((12, 13), "operator:ana", 1_796_000_000_000)
    headers = [("content-type", b"application/json"), *tag.headers("t/3/41")]
    assert ReplayTag.of(headers) == tag
    assert dict(headers)["telemon.replay.source"] == b"t/3/41"


def test_a_record_without_a_sensible_tag_is_an_ordinary_record() -> None:
    assert ReplayTag.of([("content-type", b"application/fhir+json")]) is None
    assert ReplayTag.of([(REPLAY_HEADER, b"12,x")]) is None
    assert ReplayTag.of([(REPLAY_HEADER, b"\xff")]) is None


def test_one_reading_stored_duplicate_or_rejected_again() -> None:
    fates = [ReadingFate(0, stored=False), ReadingFate(2, stored=True)]
    rejections = [(1, "out_of_range", "readings[1] (spo2): 130 %")]
    assert judge(0, fates, rejections).outcome is Outcome.DUPLICATE
    assert judge(2, fates, rejections).outcome is Outcome.STORED
    assert judge(1, fates, rejections) == ReplayResult(
        Outcome.REJECTED, "out_of_range", "readings[1] (spo2): 130 %"
    )


def test_a_whole_message_rejection_rejects_each_reading_again() -> None:
    rejections = [(None, "unknown_device", "device 'oxi-1' is not enrolled for patient 'p-1'")]
    assert judge(0, [], rejections).reason == "unknown_device"
    assert judge(None, [], rejections).reason == "unknown_device"


def test_a_whole_message_is_stored_if_any_of_its_readings_is() -> None:
    fates = [ReadingFate(0, stored=True), ReadingFate(1, stored=False)]
    result = judge(None, fates, [(2, "unit_not_convertible", "furlong")])
    assert result == ReplayResult(
        Outcome.STORED, None, "1 stored, 1 duplicate, 1 rejected again (unit_not_convertible)"
    )


def test_a_whole_message_already_stored_is_a_duplicate() -> None:
    fates = [ReadingFate(0, stored=False), ReadingFate(1, stored=False)]
    assert judge(None, fates, []).outcome is Outcome.DUPLICATE


def test_a_whole_message_with_nothing_stored_and_a_rejection_is_rejected_again() -> None:
    fates = [ReadingFate(0, stored=False)]
    result = judge(None, fates, [(1, "out_of_range", "too high")])
    assert (result.outcome, result.reason) == (Outcome.REJECTED, "out_of_range")
