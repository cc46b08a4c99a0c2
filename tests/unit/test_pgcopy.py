"""The binary COPY payload of reading rows."""

from __future__ import annotations

import struct

import numpy as np

from ingest.pipeline.pgcopy import PG_EPOCH_US, encode_readings
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
