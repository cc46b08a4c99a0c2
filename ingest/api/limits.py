"""Rate limits and the live-feed cap, per API process (in memory: behind several replicas
the ingress or proxy limits too, docs/operations.md).

Token buckets on the injected clock: one per network address for refused unauthenticated
requests (bad tokens, probes of paths), one per clinician for every request; a count of
open live feeds per clinician. A refusal for a limit is audited once per spell of being
limited, not once per request: the audit trail cannot be filled through the limiter.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ingest.platform import Clock

__all__ = ["Limits", "RateLimiter", "StreamSlots"]


@dataclass
class _Bucket:
    tokens: float
    at: float
    reported: bool = False  # this spell of being limited is in the audit trail already


class RateLimiter:
    """Token buckets by key: `burst` at once, then `rate_per_s`. At most `max_keys` buckets
    are kept (the least recently used go: a forgotten key starts full again)."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Clock, max_keys: int = 100_000
    ) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.reported = False
        return bucket

    def take(self, key: str) -> bool:
        """Spend one token; False (nothing spent) when there is none."""
        bucket = self._bucket(key)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def spend(self, key: str) -> None:
        """Spend one token if there is one (a refusal counted after the fact)."""
        bucket = self._bucket(key)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def exhausted(self, key: str) -> bool:
        return self._bucket(key).tokens < 1

    def first_refusal(self, key: str) -> bool:
        """Whether this is the first refusal of the current spell (then it is audited)."""
        bucket = self._bucket(key)
        first = not bucket.reported
        bucket.reported = True
        return first

    def retry_after_s(self, key: str) -> int:
        bucket = self._bucket(key)
        return max(1, int((1 - bucket.tokens) / self._rate + 0.999))


class StreamSlots:
    """Open live feeds per clinician, at most `per_clinician` each."""

    def __init__(self, per_clinician: int) -> None:
        self._max = per_clinician
        self._open: dict[str, int] = {}

    def take(self, subject: str) -> bool:
        if self._open.get(subject, 0) >= self._max:
            return False
        self._open[subject] = self._open.get(subject, 0) + 1
        return True

    def give_back(self, subject: str) -> None:
        left = self._open.get(subject, 0) - 1
        if left > 0:
            self._open[subject] = left
        else:
            self._open.pop(subject, None)

    @property
    def most(self) -> int:
        return self._max


@dataclass
class Limits:
    anonymous: RateLimiter  # refused requests without a valid token, per network address
    clinician: RateLimiter  # every request, per clinician
    streams: StreamSlots
