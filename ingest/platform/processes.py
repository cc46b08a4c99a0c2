"""Process and task helpers: a free port, dying with the parent, cancelling tasks, the
garbage collector of a busy process."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import signal
import socket

__all__ = ["cancel_tasks", "collect_for_throughput", "die_with_parent", "free_port"]


def free_port() -> int:
    """A loopback TCP port nobody listens on (for a server started right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask Linux to send this process `signum` when its parent dies."""
    PR_SET_PDEATHSIG = 1  # noqa: N806 - the Linux constant's name
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)


def collect_for_throughput() -> None:
    """Tune the garbage collector for a process that makes and drops objects by the
    million (records, decoded messages): what exists now (modules, the settings, what
    was loaded at start) is frozen out of its reach, and a young collection waits for
    50,000 more objects than were freed instead of 700. Objects that die young are then
    freed by their reference count before any collection sees them, instead of being
    promoted to the old generation and scanned there again and again (docs/BENCHMARKS.md:
    collections took 0.4 s of each process's CPU in a 2.7 s drain, 0.08 s after)."""
    gc.collect()  # garbage frozen now would stay for good
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


async def cancel_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait for them to end."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
