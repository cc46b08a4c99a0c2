"""The binary COPY payload of reading rows."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ingest.pipeline.pgcopy import (
    PG_EPOCH_US,
    READING_LAYOUT,
    copy_row,
    decode_rows,
    encode_readings,
)
from ingest.pipeline.rows import ReadingRows


def rows(n: int) -> ReadingRows:
    return ReadingRows(
        patient_key=np.arange(n, dtype=np.int32),
        device_key=np.arange(n, dtype=np.int32) + 100,
        kind=np.full(n, 1, np.int16),
        value=np.linspace(90, 99, n),
        measured_at_us=np.full(n, PG_EPOCH_US + 1, np.int64),
        source_partition=np.full(n, 3, np.int32),
        source_offset=np.arange(n, dtype=np.int64),
        reference_us=np.full(n, PG_EPOCH_US + 2, np.int64),
    )


def test_copy_payload_has_the_binary_layout() -> None:
    payload = encode_readings(rows(2), received_at_us=PG_EPOCH_US + 2)
    assert payload.startswith(b"PGCOPY\n\xff\r\n\x00")
    assert payload.endswith(b"\xff\xff")
    body = payload[19:-2]
    row_size = 2 + 8 * 4 + (4 + 4 + 2 + 8 + 8 + 8 + 4 + 8)
    assert len(body) == 2 * row_size
    fields, length, patient = struct.unpack_from(">hii", body, 0)
    assert (fields, length, patient) == (8, 4, 0)
    measured = struct.unpack_from(">q", body, 2 + 4 + 4 + 4 + 4 + 4 + 2 + 4 + 8 + 4)[0]
    assert measured == 1


LAYOUT = (("patient_key", ">i4"), ("value", ">f8"))
ROW = copy_row(LAYOUT)
HEADER, TRAILER = b"PGCOPY\n\xff\r\n\x00" + bytes(8), b"\xff\xff"


def copy_of(*rows: tuple[int, float]) -> bytes:
    return (
        HEADER
        + b"".join(struct.pack(">hiiid", 2, 4, key, 8, value) for key, value in rows)
        + TRAILER
    )


def test_a_copy_is_read_back_as_columns() -> None:
    rows = decode_rows(memoryview(copy_of((7, 36.6), (-1, 99.5))), ROW)
    assert rows["patient_key"].tolist() == [7, -1]
    assert rows["value"].tolist() == [36.6, 99.5]


def test_the_readings_written_are_read_back() -> None:
    written = rows(3)
    read = decode_rows(
        memoryview(encode_readings(written, received_at_us=PG_EPOCH_US)),
        copy_row(READING_LAYOUT),
    )
    assert read["device_key"].tolist() == written.device_key.tolist()
    assert read["value"].tolist() == written.value.tolist()
    assert (read["measured_at"] + PG_EPOCH_US).tolist() == written.measured_at_us.tolist()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", "not a binary COPY payload"),
        (b"COPY" + copy_of((1, 2.0))[4:], "not a binary COPY payload"),
        (copy_of((1, 2.0))[:-3] + TRAILER, "not a binary COPY payload"),  # a row cut short
        (HEADER + struct.pack(">hiiid", 3, 4, 1, 8, 2.0) + TRAILER, "without 2 columns"),
        (HEADER + struct.pack(">hiiid", 2, 4, 1, -1, 2.0) + TRAILER, "value is NULL"),
    ],
)
def test_a_payload_not_of_these_columns_is_refused(payload: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        decode_rows(memoryview(payload), ROW)
