"""The API's rate limits, its live-feed cap and a feed's end at its token's expiry, on a
clock the test moves."""

from __future__ import annotations

from ingest.api.limits import RateLimiter, StreamSlots
from ingest.api.stream import EXPIRED, FeedPosition, Wakeups, sse_stream


class Clock:
    def __init__(self) -> None:
        self.seconds = 1_000_000.0

    def now_ms(self) -> int:
        return int(self.seconds * 1000)

    def monotonic(self) -> float:
        return self.seconds


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=0.5, burst=2, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [True, True, False]
    assert limiter.take("b")  # another key has its own bucket
    assert limiter.retry_after_s("a") == 2
    clock.seconds += 2
    assert limiter.take("a")
    assert not limiter.take("a")


def test_a_spell_of_refusals_is_reported_once() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1, burst=1, clock=clock)
    limiter.spend("x")
    assert limiter.exhausted("x")
    assert [limiter.first_refusal("x") for _ in range(3)] == [True, False, False]
    clock.seconds += 1  # refilled: a new spell is reported again
    assert not limiter.exhausted("x")
    limiter.spend("x")
    assert limiter.first_refusal("x")


def test_buckets_are_bounded_in_number() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, clock=Clock(), max_keys=2)
    for key in ("a", "b", "c"):
        limiter.spend(key)
    assert not limiter.exhausted("a")  # forgotten: it starts full again
    assert limiter.exhausted("c")


def test_live_feeds_per_clinician_are_capped_and_given_back() -> None:
    slots = StreamSlots(per_clinician=2)
    assert [slots.take("dr-a") for _ in range(3)] == [True, True, False]
    assert slots.take("dr-b")
    slots.give_back("dr-a")
    assert slots.take("dr-a")


async def test_a_feed_ends_at_its_tokens_expiry_and_sends_nothing_after() -> None:
    clock = Clock()
    ends_at = clock.seconds + 60
    reads = 0

    async def read(after: FeedPosition) -> list[tuple[FeedPosition, dict[str, object]]]:
        nonlocal reads
        reads += 1
        if reads == 1:
            return [(FeedPosition(1, 1), {"n": 1})]
        if reads == 3:
            clock.seconds = ends_at  # expires while two more events are there to send
            return [(FeedPosition(1, 2), {"n": 2}), (FeedPosition(1, 3), {"n": 3})]
        return []

    # Wakeups not started: its wait is a short sleep (no notification ever comes).
    stream = sse_stream(
        read, FeedPosition(0, 0), Wakeups(), ends_at_s=ends_at, clock=clock, poll_s=0.01
    )
    sent = [text async for text in stream]
    events = [t for t in sent if t.startswith("id:")]
    assert events == ['id: 1-1\nevent: episode\ndata: {"n": 1}\n\n']
    assert sent[-1] == EXPIRED


async def test_a_feed_ends_without_its_last_word_when_the_server_stops() -> None:
    clock = Clock()
    wakeups = Wakeups()

    async def read(after: FeedPosition) -> list[tuple[FeedPosition, dict[str, object]]]:
        wakeups.close()  # the server stops while these two events are on their way
        return [(FeedPosition(1, 1), {"n": 1}), (FeedPosition(1, 2), {"n": 2})]

    stream = sse_stream(
        read, FeedPosition(0, 0), wakeups, ends_at_s=clock.seconds + 60, clock=clock
    )
    sent = [text async for text in stream]
    assert [text.split(":")[0] for text in sent] == ["retry"]  # no event, and no "end"
