"""The digest of a (patient, device) pair: how an ingest member holds the enrolled
pairs of its partitions and finds a batch's pairs among them (ingest.pipeline.
registry_cache, whose query has PostgreSQL compute the same digest). Computed by the
decoder, in its worker process."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["pair_digests"]


def pair_digests(patient_ids: Sequence[str], device_ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    """Each (patient, device) pair's MD5 digest, a row of two 64-bit halves per pair: of
    the patient id's length, ':', the patient id, then the device id (the length keeps
    "a" and "b:c" apart from "a:b" and "c")."""
    known = _digests
    digests = b"".join(
        [known.get(pair) or _digest(pair) for pair in zip(patient_ids, device_ids, strict=True)]
    )
    return np.frombuffer(digests, np.uint64).reshape(-1, 2)


# A device sends again and again (every minute for some): each pair's digest is computed
# once and remembered, this many at most (20-30 MB with the identifiers it keeps alive).
_REMEMBERED_PAIRS = 131_072
_digests: dict[tuple[str, str], bytes] = {}


def _digest(pair: tuple[str, str]) -> bytes:
    patient_id, device_id = pair
    text = f"{len(patient_id)}:{patient_id}{device_id}".encode(errors="surrogatepass")
    digest = hashlib.md5(text, usedforsecurity=False).digest()
    if len(_digests) >= _REMEMBERED_PAIRS:
        _digests.clear()
    _digests[pair] = digest
    return digest
