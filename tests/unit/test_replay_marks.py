"""Replayed records found in a poll: their readings judged current from the replay request,
their readings and rejections kept per record, replays out of the reject-ratio guard;
which dead letters a batch parks."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from devices.contract import RejectReason
from devices.decode import Decoder, Rejection
from ingest.pipeline.decode_pool import RecordColumns
from ingest.pipeline.metrics import IngestMetrics
from ingest.pipeline.replay_marks import DeadLetterWork, ReplayedPoll
from ingest.pipeline.replays import ReplayTag
from ingest.pipeline.rows import ReadingRows
from ingest.platform import SystemClock
from tests.records import RECORD_MS, message, reading

REQUESTED_MS = RECORD_MS + 3 * 86_400_000  # three days after the original was sent


class _Kafka:
    """What RecordColumns.of reads of an aiokafka ConsumerRecord."""

    def __init__(self, offset: int, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.topic, self.partition, self.offset, self.timestamp = "t", 0, offset, RECORD_MS
        self.key, self.value, self.headers = b"p-000123", value, headers


def _poll() -> tuple[RecordColumns, Any]:
    live = message(reading("spo2", 95))
    replayed = message(reading("spo2", 96), reading("spo2", 130), reading("heart_rate", 70, "/min"))
    tag = ReplayTag((7,), "operator:ana", REQUESTED_MS)
    columns = RecordColumns.of(
        [
            _Kafka(0, json.dumps(live).encode(), []),
            _Kafka(1, json.dumps(replayed).encode(), tag.headers("t/0/0")),
        ]
    )
    decoded = Decoder(max_message_bytes=65536, future_tolerance_s=300).decode(
        columns.records(), REQUESTED_MS
    )
    return columns, decoded


def _rows(decoded: Any) -> tuple[ReadingRows, Any]:
    record_of_row = decoded.messages.record_index[decoded.message]
    n = len(decoded)
    rows = ReadingRows(
        np.ones(n, np.int32),
        np.ones(n, np.int32),
        decoded.kind,
        decoded.value,
        decoded.measured_at_us,
        np.zeros(n, np.int32),
        record_of_row.astype(np.int64),
        decoded.reference_us,
    )
    return rows, record_of_row


def test_only_polls_with_a_replay_have_replay_columns() -> None:
    columns, decoded = _poll()
    assert columns.replay is not None
    assert columns.replay[0] is None
    assert ReplayedPoll.of(RecordColumns(*columns[:7]), decoded) is None


def test_replayed_readings_are_current_as_of_the_request() -> None:
    columns, decoded = _poll()
    poll = ReplayedPoll(columns, decoded)
    rows, record_of_row = _rows(decoded)
    judged = poll.as_of_replay(rows, record_of_row, now_ms=REQUESTED_MS + 1000)
    replayed = record_of_row == 1
    assert (judged.reference_us[replayed] == REQUESTED_MS * 1000).all()
    assert (judged.reference_us[~replayed] == RECORD_MS * 1000).all()  # live: as it was
    clamped = poll.as_of_replay(rows, record_of_row, now_ms=RECORD_MS + 5)
    assert (clamped.reference_us[replayed] == (RECORD_MS + 5) * 1000).all()


def test_each_replayed_record_keeps_its_readings_and_rejections() -> None:
    columns, decoded = _poll()
    poll = ReplayedPoll(columns, decoded)
    rows, record_of_row = _rows(decoded)
    reading_index = decoded.reading_index
    (record,) = poll.replayed(rows, record_of_row, reading_index, decoded.rejections)
    assert (record.partition, record.offset, record.tag.dead_letters) == (0, 1, (7,))
    assert record.reading_index.tolist() == [0, 2]
    assert [(i, reason) for i, reason, _ in record.rejections] == [(1, "out_of_range")]
    assert poll.pairs == [("p-000123", "oxi-7f3a")]
    assert poll.live(record_of_row) == 1  # the replay is not counted by the guard


def _rejection(reason: RejectReason, offset: int, patient: str | None = "p-1") -> Rejection:
    return Rejection("t", 0, offset, 0, b"k", b"v", None, reason, "", None, None, patient, "d")


def test_a_batch_parks_its_unknown_devices_but_not_replays_or_unreadable_ones() -> None:
    metrics = IngestMetrics(CollectorRegistry())
    rejections = [
        _rejection(RejectReason.UNKNOWN_DEVICE, 1),
        _rejection(RejectReason.OUT_OF_RANGE, 2),
        _rejection(RejectReason.UNKNOWN_DEVICE, 3, patient=None),
    ]
    work = DeadLetterWork.of([], rejections, window_s=60, clock=SystemClock(), metrics=metrics)
    assert work is not None
    assert [r.offset for r in work._park] == [1]
    off = DeadLetterWork.of([], rejections, window_s=0, clock=SystemClock(), metrics=metrics)
    assert off is None
    nothing = DeadLetterWork.of(
        [], rejections[1:2], window_s=60, clock=SystemClock(), metrics=metrics
    )
    assert nothing is None
