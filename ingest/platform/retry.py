"""Retry an operation on transient database errors, with capped, jittered exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ingest.platform.errors import is_transient_database_error

__all__ = ["retry_transient"]

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    max_backoff_s: float,
    attempts: int | None = None,
    after_failure: Callable[[BaseException], Awaitable[None]] | None = None,
) -> T:
    """Run `operation` until it succeeds; a non-transient error is raised at once.

    `after_failure` runs after each transient failure (drop a broken connection,
    mark the database unhealthy). With `attempts`, the last transient error is
    raised after that many tries; without, it retries until cancelled.
    """
    attempt = 0
    while True:
        try:
            result = await operation()
        except Exception as error:
            if not is_transient_database_error(error) or attempt + 1 == attempts:
                raise
            if after_failure is not None:
                await after_failure(error)
            delay = min(max_backoff_s, 0.05 * 2**attempt) * random.uniform(0.5, 1.0)
            log.warning(
                "%s failed (%s: %s); retry %d in %.2f s",
                what,
                type(error).__name__,
                error,
                attempt + 1,
                delay,
            )
            attempt += 1
            await asyncio.sleep(delay)
        else:
            if attempt:
                log.info("%s succeeded after %d retries", what, attempt)
            return result
