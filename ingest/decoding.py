"""The decode step: on the event loop, or in worker processes.

Decoding is the pipeline's CPU-heavy step (pydantic validation, timestamps,
per-reading bookkeeping). With `decode_workers` > 0 it runs in that many
worker processes, in parallel with fetching and writing, which stay on the
event loop; records go out as plain tuples and come back as column arrays.
Workers ignore SIGINT/SIGTERM (the service drains and then shuts them down)
and die with the service.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

from devices.decode import DecodedBatch, Decoder, RawRecord
from ingest.embedded import die_with_parent

__all__ = ["DecodeStep"]


class _Record(NamedTuple):
    """A record as a worker rebuilds it from a `_Chunk`."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


class _Chunk(NamedTuple):
    """Records as columns: lists of bytes and ints pickle several times faster than objects."""

    topic: str
    partition: list[int]
    offset: list[int]
    timestamp: list[int]
    key: list[bytes | None]
    value: list[bytes | None]

    def records(self) -> list[_Record]:
        return [
            _Record(self.topic, p, o, t, k, v)
            for p, o, t, k, v in zip(
                self.partition, self.offset, self.timestamp, self.key, self.value, strict=True
            )
        ]


class DecodeStep:
    def __init__(self, decoder: Decoder, *, workers: int) -> None:
        self._decoder = decoder
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                # spawn, not fork: the service runs threads and an event loop
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(decoder,),
            )

    async def decode(self, records: Sequence[RawRecord], now_ms: int) -> DecodedBatch:
        if self._pool is None:
            return self._decoder.decode(records, now_ms)
        chunk = _Chunk(
            records[0].topic if records else "",
            [r.partition for r in records],
            [r.offset for r in records],
            [r.timestamp for r in records],
            [r.key for r in records],
            [r.value for r in records],
        )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _decode_in_worker, chunk, now_ms)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


_WORKER_DECODER: Decoder | None = None


def _start_worker(decoder: Decoder) -> None:
    global _WORKER_DECODER
    _WORKER_DECODER = decoder
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)


def _decode_in_worker(chunk: _Chunk, now_ms: int) -> DecodedBatch:
    assert _WORKER_DECODER is not None
    return _WORKER_DECODER.decode(chunk.records(), now_ms)
