"""The reject-ratio guard: a misconfigured deployment stops, bad luck does not."""

from __future__ import annotations

import pytest

from ingest.pipeline.stages import RejectGuard
from ingest.platform import RejectRatioError


def test_guard_tolerates_rejections_below_the_limit() -> None:
    guard = RejectGuard(limit=0.5, window=100)
    for _ in range(50):
        guard.observe(messages=10, rejected=4)


def test_guard_waits_for_enough_messages_before_judging() -> None:
    guard = RejectGuard(limit=0.5, window=100)
    guard.observe(messages=50, rejected=50)  # half a window of poison: not yet a verdict
    with pytest.raises(RejectRatioError, match="100 of the last 100"):
        guard.observe(messages=50, rejected=50)


def test_guard_forgets_old_batches() -> None:
    """A storm long past does not count against the present."""
    guard = RejectGuard(limit=0.5, window=100)
    guard.observe(messages=40, rejected=40)
    for _ in range(20):
        guard.observe(messages=10, rejected=0)
    guard.observe(messages=30, rejected=30)
