"""PostgreSQL binary COPY payloads built and read with numpy, without a per-row Python loop.

A row of fixed-width columns is one record of a packed big-endian structured dtype:
field count, then (length, value) per column. Every column of `readings` is, so a
batch is written as one array; a query of such columns is read back as one
(`decode_rows`): a million rows in milliseconds, where asyncpg's records took seconds.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from ingest.pipeline.rows import ReadingRows
from ingest.platform import Connection

__all__ = [
    "PG_EPOCH_US",
    "READING_COLUMNS",
    "READING_LAYOUT",
    "copy_row",
    "copy_rows",
    "decode_rows",
    "encode_readings",
]

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix µs

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)

# (column, big-endian type) in table order.
READING_LAYOUT = (
    ("patient_key", ">i4"),
    ("device_key", ">i4"),
    ("kind", ">i2"),
    ("value", ">f8"),
    ("measured_at", ">i8"),
    ("received_at", ">i8"),
    ("source_partition", ">i4"),
    ("source_offset", ">i8"),
)
READING_COLUMNS = tuple(name for name, _ in READING_LAYOUT)


def copy_row(layout: tuple[tuple[str, str], ...]) -> np.dtype[np.void]:
    """The record of a binary COPY row of these (column, big-endian type) columns, none
    of them NULL: the field count, then each column's length and value."""
    return np.dtype(
        [("fields", ">i2")]
        + [item for name, kind in layout for item in ((f"{name}_len", ">i4"), (name, kind))]
    )


_ROW = copy_row(READING_LAYOUT)


def decode_rows(payload: memoryview, row: np.dtype[np.void]) -> npt.NDArray[np.void]:
    """The rows of a COPY ... TO STDOUT (FORMAT binary) payload whose rows are `row`
    (from `copy_row`): checked, not copied (a view of `payload`)."""
    body = payload[len(_HEADER) : -len(_TRAILER)]
    if (
        payload[: len(_HEADER)] != _HEADER
        or payload[-len(_TRAILER) :] != _TRAILER
        or len(body) % row.itemsize
    ):
        raise ValueError("not a binary COPY payload of these columns")
    rows = np.frombuffer(body, row)
    assert row.names is not None
    columns = row.names[2::2]
    if (rows["fields"] != len(columns)).any():
        raise ValueError(f"a row without {len(columns)} columns")
    for name in columns:
        if (rows[f"{name}_len"] != row[name].itemsize).any():
            raise ValueError(f"a row whose {name} is NULL or not {row[name].itemsize} bytes")
    return rows


def encode_readings(rows: ReadingRows, received_at_us: int) -> bytes:
    """The COPY ... FROM STDIN (FORMAT binary) payload for `rows`."""
    out = np.empty(len(rows), dtype=_ROW)
    out["fields"] = len(READING_LAYOUT)
    for name, kind in READING_LAYOUT:
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


async def copy_rows(
    conn: Connection, query: str, row: np.dtype[np.void], *args: object
) -> npt.NDArray[np.void]:
    """The rows of `query` (of `row`'s columns), by a binary COPY."""
    chunks: list[bytes] = []

    async def keep(chunk: bytes) -> None:  # a file would be written from a thread, chunk by chunk
        chunks.append(chunk)

    await conn.copy_from_query(query, *args, output=keep, format="binary")
    return decode_rows(memoryview(b"".join(chunks)), row)
