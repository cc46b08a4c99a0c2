"""Coverage-guided fuzzing of the decoder (atheris, libFuzzer's engine).

    python -m loadtests.fuzz_decoder -max_total_time=600    # ten minutes
    python -m loadtests.fuzz_decoder -runs=30000            # the short run of make test

Each input becomes a record: its first byte says how long the key is (low five
bits) and whether the record is FHIR JSON (top bit), the rest is key then
value. Decoding must never raise, and must account for the
record exactly once: rejected whole (with a reason and a detail), or accepted
with each of its readings either kept or rejected with a reason. The corpus
starts from devices/examples (contract v1 and FHIR). A crash found becomes a regression test in
tests/unit/test_decode.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from devices.decode import Decoder
from devices.fhir_codes import FHIR_CONTENT_TYPE
from tests.records import EXAMPLES, RECORD_MS, Record

DECODER = Decoder(max_message_bytes=64 * 1024, future_tolerance_s=300)


FHIR_BIT = 0x80


def as_record(data: bytes) -> Record:
    key_length = data[0] % 32 if data else 0
    fhir = bool(data) and bool(data[0] & FHIR_BIT)
    return Record(
        value=data[1 + key_length :],
        key=data[1 : 1 + key_length] or None,
        content_type=FHIR_CONTENT_TYPE if fhir else None,
    )


def check_one(data: bytes) -> None:
    record = as_record(data)
    batch = DECODER.decode([record], RECORD_MS)
    whole = [r for r in batch.rejections if r.reading_index is None]
    for rejection in batch.rejections:
        assert rejection.reason, rejection
        assert rejection.detail, rejection
    if len(batch.messages) == 0:
        assert len(whole) == 1, batch.rejections
        assert len(batch.rejections) == 1, batch.rejections
        assert len(batch) == 0
        return
    assert not whole, batch.rejections
    assert len(set(batch.messages.device_id)) == len(batch.messages), "one entry per device"
    count = int(batch.messages.reading_count.sum())
    positions = batch.reading_index.tolist() + [r.reading_index for r in batch.rejections]
    assert sorted(positions) == list(range(count)), (positions, count)


def seeds() -> list[bytes]:
    """The example messages, keyed by their patient."""
    out = []
    key = b"p-000123"
    for path in sorted(EXAMPLES.glob("**/*.json")):
        fhir = FHIR_BIT if "fhir" in path.parts else 0
        out.append(bytes([len(key) | fhir]) + key + path.read_bytes())
    return out


def main() -> None:
    corpus = Path("loadtests/results/fuzz_corpus")
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (corpus / f"example-{i}").write_bytes(seed)
    atheris.Setup([*sys.argv, str(corpus)], check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
