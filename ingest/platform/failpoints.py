"""Failpoints: named places where a reliability test may make the process die or fail.

Only a crash placed exactly between two steps shows that the steps' order is
safe (FoundationDB and TiKV test this way). `TELEMON_FAILPOINTS` lists
`name=probability` pairs, for instance `after_database_commit=0.05`; at each
pass through a listed point the fault happens with that probability. Unset,
which is the only setting for production, a failpoint is a dictionary lookup.

Crash points (`failpoint`: the process exits at once, no cleanup, like kill -9):
  after_database_commit        a batch is durable in PostgreSQL, its Kafka commit not sent
  replay_send                  a replayer (the CLI, the parking leader) before sending a record
Fault points (`fault`: the caller fails as the real fault would make it fail):
  relay_send_episode_events    the alerts topic unreachable, before sending a record
  relay_send_dead_letters      the same for the dead-letter topic
"""

from __future__ import annotations

import os
import random

__all__ = ["EXIT_STATUS", "failpoint", "fault"]

EXIT_STATUS = 86  # tells a test's crash from any other exit

_ARMED = {
    name.strip(): float(probability)
    for name, _, probability in (
        item.partition("=") for item in os.environ.get("TELEMON_FAILPOINTS", "").split(",") if item
    )
}


def failpoint(name: str) -> None:
    probability = _ARMED.get(name)
    if probability is not None and random.random() < probability:
        os._exit(EXIT_STATUS)


def fault(name: str) -> bool:
    """Whether to fail here, this time."""
    probability = _ARMED.get(name)
    return probability is not None and random.random() < probability
