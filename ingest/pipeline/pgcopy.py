"""PostgreSQL binary COPY payloads built with numpy, without a per-row Python loop.

Every column of `readings` is fixed-width, so a row is one record of a packed
big-endian structured dtype: field count, then (length, value) per column.
"""

from __future__ import annotations

import struct

import numpy as np

from ingest.pipeline.rows import ReadingRows

__all__ = ["PG_EPOCH_US", "READING_COLUMNS", "encode_readings"]

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix µs

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)

# (column, big-endian type) in table order.
_LAYOUT = (
    ("patient_key", ">i4"),
    ("device_key", ">i4"),
    ("kind", ">i2"),
    ("value", ">f8"),
    ("measured_at", ">i8"),
    ("received_at", ">i8"),
    ("source_partition", ">i4"),
    ("source_offset", ">i8"),
)
READING_COLUMNS = tuple(name for name, _ in _LAYOUT)

_ROW = np.dtype(
    [("fields", ">i2")]
    + [item for name, kind in _LAYOUT for item in ((f"{name}_len", ">i4"), (name, kind))]
)


def encode_readings(rows: ReadingRows, received_at_us: int) -> bytes:
    """The COPY ... FROM STDIN (FORMAT binary) payload for `rows`."""
    out = np.empty(len(rows), dtype=_ROW)
    out["fields"] = len(_LAYOUT)
    for name, kind in _LAYOUT:
        out[f"{name}_len"] = np.dtype(kind).itemsize
    out["patient_key"] = rows.patient_key
    out["device_key"] = rows.device_key
    out["kind"] = rows.kind
    out["value"] = rows.value
    out["measured_at"] = rows.measured_at_us - PG_EPOCH_US
    out["received_at"] = received_at_us - PG_EPOCH_US
    out["source_partition"] = rows.source_partition
    out["source_offset"] = rows.source_offset
    return _HEADER + out.tobytes() + _TRAILER
