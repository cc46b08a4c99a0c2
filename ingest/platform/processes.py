"""Process and task helpers: a free port, dying with the parent, cancelling tasks."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket

__all__ = ["cancel_tasks", "die_with_parent", "free_port"]


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


async def cancel_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait for them to end."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
