"""A national programme on one node: what telemon costs as the enrolled population grows.

    python -m loadtests.population --patients 10000 100000 1000000
    python -m loadtests.population --quick          # 10,000 and 100,000, smaller drains
    python -m loadtests.population --patients 1000000 --skip-ingest   # enrolment, API, report

For each population, in one schema of the embedded PostgreSQL (12-partition topics on
the embedded broker):

1. enrolment: the simulator's cohort (its programme mix, one device or more per patient)
   written as a CSV file and imported by `telemon enroll --csv`, timed from the command's
   start to its exit;
2. a member's start: `telemon ingest` alone in a new group, with messages waiting; time
   from the process's start to its first durable batch (committed offset), which comes
   after the alert state of all 12 partitions was rebuilt, and its RSS then (with the
   decode worker);
3. the drain rate of single-reading messages spread uniformly over every enrolled patient
   (each its first device's first vital, at the cohort's usual value), against the same
   number of messages from 10,000 of them, each drained by a new member in the same run;
   RSS while draining (peak). The second member starts with the first drain's readings as
   history;
3b. an hour of readings from every patient: a message from each device of each patient
   with a reading of every vital it measures, in the last hour, drained by a new member;
   its RSS once drained (a ring's row is made at a patient's first reading of a kind and
   is of fixed size after: more readings of the hour would not add to it);
4. a takeover under load: messages produced at a steady rate over every patient; a member
   drains, a second joins (each then holds 6 partitions), then the first is stopped
   (SIGTERM); time from the stop until every partition's committed offset has moved past
   where it was when the first member exited (the second member keeps the state of its 6
   partitions and loads that of the 6 it takes over). Once drained: stored readings
   against produced messages, and the ledger's messages and duplicates;
5. the clinicians' API (`telemon api`, care teams of 5,000 patients, the clinician in one,
   2 % of all patients with an open episode, 10 % with a resolved one): p50 / p99 of the
   worklist and of a patient view (the patient and their episodes), sequential requests;
6. `telemon report` of last month, the enrolments moved back to the 90 days before it
   (the readings are only those of this run: a month's readings of the whole cohort,
   some 60 million rows at 1M patients, are not generated).

Targets (issue 22): enrolment of 1M patients < 60 s; a member ready < 30 s with RSS
< 1 GB; uniform drain >= 80 % of the 10,000-patient drain; takeover < 30 s, nothing lost
or duplicated; API p99 < 200 ms; the monthly report < 2 min.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from devices.catalogue import BY_KIND, ValueType, VitalKind
from devices.registry import CSV_COLUMNS, Programme
from devices.simulator import VITAL_MODELS, CohortConfig, SimPatient, VitalModel, build_cohort
from ingest.api.auth import DevIssuer
from ingest.api.teams import add_member
from ingest.platform import Settings, client_options, connect, make_producer
from ingest.platform.kafka import ensure_topics
from loadtests.common import (
    RESULTS,
    benchmark_stack,
    drop_topics,
    http_port,
    iso_ms,
    isolated,
    process,
    produce,
    telemon_ingest,
)

HOT_PATIENTS = 10_000
OPEN_EPISODE_SHARE = 0.02
RESOLVED_EPISODE_SHARE = 0.10
TEAM_PATIENTS = 5_000
TIMED_BUDGET_S = 90  # per endpoint: fewer requests than asked when they are slow
STRIDE = 7_919  # a prime: message n goes to patient (n * STRIDE) % N, every patient in turn


@dataclass
class Figures:
    patients: int = 0
    devices: int = 0
    enrol_s: float = 0.0
    ready_s: float = 0.0
    ready_rss_mb: float = 0.0
    ready_rebuild_s: float = 0.0  # of which the alert state's rebuild
    patients_loaded: int = 0
    drain_messages: int = 0
    uniform_msgs_per_s: float = 0.0
    uniform_peak_rss_mb: float = 0.0
    hot_msgs_per_s: float = 0.0
    ready_with_history_s: float = 0.0
    ready_with_history_rss_mb: float = 0.0
    every_vital_messages: int = 0
    every_vital_rss_mb: float = 0.0  # once drained
    takeover_s: float = 0.0
    takeover_rebuild_s: float = 0.0  # of which the alert state's rebuild
    takeover_produced: int = 0
    takeover_stored: int = 0
    takeover_ledger_messages: int = 0
    takeover_duplicates: int = 0
    open_episodes: int = 0
    worklist_p50_ms: float = 0.0
    worklist_p99_ms: float = 0.0
    patient_p50_ms: float = 0.0
    patient_p99_ms: float = 0.0
    report_s: float = 0.0


# -- the cohort and its messages ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sender:
    """A patient's first device sending its first vital at the cohort's usual value."""

    key: bytes
    head: str  # the message up to the measurement time

    @classmethod
    def of(cls, patient: SimPatient) -> Sender:
        device = patient.devices[0]
        kind = device.model.kinds[0]
        model = VITAL_MODELS[patient.programme][kind]
        value = round(model.mean, model.decimals)
        head = (
            f'{{"device_id": "{device.device_id}", "patient_id": "{patient.patient_id}", '
            f'"readings": [{{"kind": "{kind.value}", "value": {value}, '
            f'"unit": "{BY_KIND[kind].unit}", "measured_at": "'
        )
        return cls(patient.patient_id.encode(), head)

    def message(self, measured_at: str) -> tuple[bytes, bytes]:
        return self.key, f'{self.head}{measured_at}"}}]}}'.encode()


def every_vital(cohort: Sequence[SimPatient], measured_at: str) -> list[tuple[bytes, bytes]]:
    """A message from each device of each patient, a reading of every vital it measures at
    the patient's programme's usual value."""
    messages = []
    for patient in cohort:
        models = VITAL_MODELS[patient.programme]
        for device in patient.devices:
            readings = ", ".join(
                f'{{"kind": "{kind.value}", "value": {_usual(models, kind)}, '
                f'"unit": "{BY_KIND[kind].unit}", "measured_at": "{measured_at}"}}'
                for kind in device.model.kinds
            )
            body = (
                f'{{"device_id": "{device.device_id}", "patient_id": "{patient.patient_id}", '
                f'"readings": [{readings}]}}'
            )
            messages.append((patient.patient_id.encode(), body.encode()))
    return messages


def _usual(models: Mapping[VitalKind, VitalModel], kind: VitalKind) -> str:
    """A vital's usual value as JSON: no symptom, grade 0, a measure's mean."""
    value_type = BY_KIND[kind].value_type
    if value_type is ValueType.BOOLEAN:
        return "false"
    if value_type is ValueType.GRADE:
        return "0"
    model = models.get(kind) or VITAL_MODELS[Programme.COVID][kind]
    return str(round(model.mean, model.decimals))


def write_enrollment_csv(cohort: Sequence[SimPatient], path: Path) -> int:
    """The cohort as `telemon enroll --csv` reads it; returns the number of devices."""
    rows = [
        f"{p.patient_id},{p.programme.value},{d.device_id},{d.model.device_type.value}\n"
        for p in cohort
        for d in p.devices
    ]
    path.write_text(",".join(CSV_COLUMNS) + "\n" + "".join(rows), encoding="utf-8")
    return len(rows)


def spread(senders: Sequence[Sender], count: int, start_ms: int) -> Iterator[tuple[bytes, bytes]]:
    """`count` messages over every sender in turn (a stride through them, so consecutive
    messages are far apart); a sender's k-th message is measured at start + k s."""
    n_senders = len(senders)
    for n in range(count):
        sender = senders[(n * STRIDE) % n_senders]
        yield sender.message(iso_ms(start_ms + (n // n_senders) * 1000))


# -- watching a member -------------------------------------------------------------------


class Offsets:
    """The group's committed offsets of the readings topic (Kafka's view of durability)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer = AIOKafkaConsumer(
            **client_options(settings), group_id=settings.consumer_group
        )
        self._tps: list[TopicPartition] = []

    async def __aenter__(self) -> Offsets:
        await self._consumer.start()
        topic = self._settings.readings_topic
        self._tps = [
            TopicPartition(topic, p) for p in self._consumer.partitions_for_topic(topic) or []
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def committed(self) -> dict[int, int]:
        return {tp.partition: await self._consumer.committed(tp) or 0 for tp in self._tps}


def rss_mb(pid: int) -> float:
    """Resident set of the process and its children (the decode worker), in MB."""
    own = psutil.Process(pid)
    total = 0
    for p in [own, *own.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker that just ended
            if "resource_tracker" not in " ".join(p.cmdline()):
                total += p.memory_info().rss
    return total / 2**20


@dataclass(frozen=True)
class Run:
    ready_s: float  # process start -> first committed offset
    ready_rss_mb: float
    drain_msgs_per_s: float  # first committed offset -> all committed
    peak_rss_mb: float
    rebuild_s: float  # the alert state's, at the assignment
    patients_loaded: int
    drained_rss_mb: float  # once every message is committed


async def drained_by_new_member(settings: Settings, total: int, timeout_s: float = 1800) -> Run:
    """Start a member with `total` messages waiting: its start, drain and RSS."""
    port = http_port()
    started = time.monotonic()
    async with (
        process(telemon_ingest(), settings, http_port=port) as child,
        Offsets(settings) as offsets,
    ):
        ready_at = ready_rss = 0.0
        first_count = 0
        peak = 0.0
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            committed = sum((await offsets.committed()).values())
            now = time.monotonic()
            rss = rss_mb(child.pid)
            peak = max(peak, rss)
            # Ready: a batch durable, and the alert state rebuilt (its gauge set at the end).
            if committed and not ready_at and gauge(port, "telemon_alerts_rebuild_seconds"):
                ready_at, ready_rss, first_count = now, rss, committed
            if committed >= total:
                return Run(
                    ready_at - started,
                    ready_rss,
                    (total - first_count) / max(now - ready_at, 1e-9),
                    peak,
                    gauge(port, "telemon_alerts_rebuild_seconds"),
                    int(gauge(port, "telemon_alerts_patients")),
                    rss,
                )
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{settings.consumer_group}: not drained in {timeout_s} s")


def gauge(port: int, name: str) -> float:
    """A metric of the member listening on `port` (0 until it answers)."""
    try:
        response = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return 0.0
    with response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def on_topic(settings: Settings, name: str) -> Settings:
    """The same schema with another readings topic and consumer group."""
    return settings.model_copy(
        update={
            "readings_topic": f"{settings.database_schema}.{name}",
            "consumer_group": f"{settings.database_schema}-{name}",
        }
    )


# -- the measurements --------------------------------------------------------------------


async def enrol(settings: Settings, cohort: Sequence[SimPatient], figures: Figures) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "cohort.csv"
        figures.devices = write_enrollment_csv(cohort, path)
        started = time.monotonic()
        async with process(["-m", "ingest.cli", "enroll", "--csv", str(path)], settings) as child:
            code = await asyncio.to_thread(child.wait)
        figures.enrol_s = time.monotonic() - started
    if code:
        raise RuntimeError(f"telemon enroll --csv exited with {code}")
    print(f"  enrolment: {figures.devices} devices in {figures.enrol_s:.1f} s", flush=True)


async def drains(
    settings: Settings, senders: Sequence[Sender], count: int, figures: Figures
) -> None:
    now_ms = int(time.time() * 1000)
    uniform, hot = on_topic(settings, "uniform"), on_topic(settings, "hot")
    for s in (uniform, hot):
        await ensure_topics(s)
    # Recent readings (the rules evaluate them), the two drains ten minutes apart.
    await produce(uniform, spread(senders, count, now_ms - 10 * 60_000))
    await produce(hot, spread(senders[:HOT_PATIENTS], count, now_ms - 20 * 60_000))
    run = await drained_by_new_member(uniform, count)
    figures.ready_s, figures.ready_rss_mb = run.ready_s, run.ready_rss_mb
    figures.ready_rebuild_s, figures.patients_loaded = run.rebuild_s, run.patients_loaded
    figures.uniform_msgs_per_s, figures.uniform_peak_rss_mb = run.drain_msgs_per_s, run.peak_rss_mb
    print(
        f"  member ready in {run.ready_s:.1f} s ({figures.patients_loaded} patients' state "
        f"rebuilt in {run.rebuild_s:.1f} s), "
        f"RSS {run.ready_rss_mb:.0f} MB; uniform drain {run.drain_msgs_per_s:.0f} msg/s, "
        f"peak RSS {run.peak_rss_mb:.0f} MB",
        flush=True,
    )
    run = await drained_by_new_member(hot, count)
    figures.hot_msgs_per_s = run.drain_msgs_per_s
    figures.ready_with_history_s = run.ready_s
    figures.ready_with_history_rss_mb = run.ready_rss_mb
    print(
        f"  member ready in {run.ready_s:.1f} s with history (rebuilt in "
        f"{run.rebuild_s:.1f} s), RSS {run.ready_rss_mb:.0f} MB; "
        f"drain over {HOT_PATIENTS} patients {run.drain_msgs_per_s:.0f} msg/s "
        f"(uniform / hot = {figures.uniform_msgs_per_s / run.drain_msgs_per_s:.2f})",
        flush=True,
    )
    for s in (uniform, hot):
        await drop_topics(s)


async def hour_of_readings(
    settings: Settings, cohort: Sequence[SimPatient], figures: Figures
) -> None:
    """Every vital of every device of every patient, measured half an hour ago, drained by
    a new member: its RSS with every patient's every ring in use."""
    topic = on_topic(settings, "hour")
    await ensure_topics(topic)
    messages = every_vital(cohort, iso_ms(int(time.time() * 1000) - 30 * 60_000))
    figures.every_vital_messages = len(messages)
    await produce(topic, iter(messages))
    del messages
    run = await drained_by_new_member(topic, figures.every_vital_messages)
    figures.every_vital_rss_mb = run.drained_rss_mb
    print(
        f"  an hour of readings from every patient ({figures.every_vital_messages} messages, "
        f"every vital of every device): drained at {run.drain_msgs_per_s:.0f} msg/s, "
        f"RSS once drained {run.drained_rss_mb:.0f} MB (peak {run.peak_rss_mb:.0f} MB)",
        flush=True,
    )
    await drop_topics(topic)


async def produce_steadily(
    settings: Settings, senders: Sequence[Sender], rate: float, stop: asyncio.Event, start_ms: int
) -> int:
    """`rate` messages/s until `stop`, spread over every sender; returns how many."""
    producer = make_producer(settings, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    sent = 0
    try:
        started = time.monotonic()
        messages = spread(senders, int(rate * 3600), start_ms)
        while not stop.is_set():
            elapsed = time.monotonic() - started
            due = int(elapsed * rate) - sent
            pending = [
                await producer.send(settings.readings_topic, key=key, value=value)
                for key, value in _take(messages, due)
            ]
            sent += len(pending)
            await asyncio.gather(*pending)
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()
    return sent


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    while not await condition():  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(0.2)


async def working(offsets: Offsets, *ports: int) -> bool:
    """The group has committed, and the members at `ports` share its partitions evenly (a
    rebalance that added one is done)."""
    committed = await offsets.committed()
    if not sum(committed.values()):
        return False
    held = [await asyncio.to_thread(gauge, p, "telemon_ingest_assigned_partitions") for p in ports]
    return held == [len(committed) // len(ports)] * len(ports)


async def all_moved(offsets: Offsets, before: dict[int, int]) -> bool:
    """Every partition's committed offset is past `before`."""
    return all(after > before[p] for p, after in (await offsets.committed()).items())


async def all_committed(offsets: Offsets, total: int) -> bool:
    return sum((await offsets.committed()).values()) >= total


def _take(iterator: Iterator[tuple[bytes, bytes]], n: int) -> Iterator[tuple[bytes, bytes]]:
    for _ in range(n):
        item = next(iterator, None)
        if item is None:
            return
        yield item


async def takeover(
    settings: Settings, senders: Sequence[Sender], args: argparse.Namespace, figures: Figures
) -> None:
    steady = on_topic(settings, "takeover")
    await ensure_topics(steady)
    start_ms = int(time.time() * 1000) - 3 * 3_600_000  # apart from the drains' readings
    stop = asyncio.Event()
    producing = asyncio.create_task(
        produce_steadily(steady, senders, args.takeover_rate, stop, start_ms)
    )
    first_port, second_port = http_port(), http_port()
    async with (
        Offsets(steady) as offsets,
        process(telemon_ingest(), steady, http_port=first_port) as first,
    ):
        # The first member works alone, then the second joins it: a rebalance in which
        # each keeps or loads the state of its half, as when a member is added. (Started
        # together, both would be in tansu's first generation, 0, from which aiokafka
        # sends no LeaveGroup: Kafka's first is 1. The stopped member's partitions would
        # then wait out its session timeout.)
        await until(lambda: working(offsets, first_port))
        async with process(telemon_ingest(), steady, http_port=second_port):
            await until(lambda: working(offsets, first_port, second_port))
            await asyncio.sleep(5)
            stopped = time.monotonic()
            first.terminate()
            await asyncio.to_thread(first.wait)
            before = await offsets.committed()
            await until(lambda: all_moved(offsets, before))
            figures.takeover_s = time.monotonic() - stopped
            figures.takeover_rebuild_s = await asyncio.to_thread(
                gauge, second_port, "telemon_alerts_rebuild_seconds"
            )
            await asyncio.sleep(5)
            stop.set()
            figures.takeover_produced = await producing
            await until(lambda: all_committed(offsets, figures.takeover_produced))
    assert settings.database_url is not None
    conn = await connect(settings.database_url, settings.database_schema)
    try:
        figures.takeover_stored = await conn.fetchval(
            "SELECT count(*) FROM readings WHERE measured_at >= to_timestamp($1 / 1000.0) "
            "AND measured_at < to_timestamp($1 / 1000.0) + interval '9 minutes'",
            start_ms,
        )
        ledger = await conn.fetchrow(
            "SELECT coalesce(sum(messages), 0) AS messages, "
            "coalesce(sum(readings_duplicate), 0) AS duplicates "
            "FROM ingest_ledger WHERE consumer_group = $1",
            steady.consumer_group,
        )
    finally:
        await conn.close()
    assert ledger is not None
    figures.takeover_ledger_messages = int(ledger["messages"])
    figures.takeover_duplicates = int(ledger["duplicates"])
    print(
        f"  takeover (from the first member's SIGTERM) under {args.takeover_rate:.0f} msg/s: "
        f"{figures.takeover_s:.1f} s (state rebuilt in {figures.takeover_rebuild_s:.1f} s); "
        f"{figures.takeover_produced} produced, {figures.takeover_stored} stored, "
        f"ledger {figures.takeover_ledger_messages} messages, "
        f"{figures.takeover_duplicates} duplicates",
        flush=True,
    )
    await drop_topics(steady)


async def open_episodes(settings: Settings) -> tuple[int, list[str]]:
    """Care teams of 5,000 patients, the clinician in one; 2 % of patients with an open
    clinical episode (a third of them red, a third orange), 10 % with a resolved one.
    Returns the open episodes, and the patients of the clinician's team."""
    assert settings.database_url is not None
    conn = await connect(settings.database_url, settings.database_schema)
    try:
        teams = max(1, await conn.fetchval("SELECT count(*) FROM patients") // TEAM_PATIENTS)
        await conn.execute(
            "INSERT INTO care_teams (team_id, name) SELECT 'team-' || n, 'Team ' || n "
            "FROM generate_series(0, $1 - 1) n",
            teams,
        )
        await conn.execute(
            "INSERT INTO patient_care_teams (team_id, patient_key) "
            "SELECT 'team-' || patient_key % $1, patient_key FROM patients",
            teams,
        )
        await add_member(conn, "team-0", "dr.bench")
        await conn.execute(
            """
            INSERT INTO episodes (patient_key, job, severity, severity_since, status,
                                  first_fired_at, last_fired_at, opened_at, resolved_at,
                                  resolved_by, disposition)
            SELECT patient_key, 'clinical', 1 + patient_key % 3,
                   now() - (patient_key % 1440) * interval '1 minute', 'resolved',
                   now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
                   now() - interval '12 hours', 'dr.bench', 'called_no_action'
            FROM patients WHERE random() < $1
            """,
            RESOLVED_EPISODE_SHARE,
        )
        await conn.execute(
            """
            INSERT INTO episodes (patient_key, job, severity, severity_since, status,
                                  first_fired_at, last_fired_at, opened_at)
            SELECT patient_key, 'clinical', 1 + patient_key % 3,
                   now() - (patient_key % 1440) * interval '1 minute', 'open',
                   now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour'
            FROM patients WHERE random() < $1
            """,
            OPEN_EPISODE_SHARE,
        )
        await conn.execute("ANALYZE")
        mine = await conn.fetchval(
            "SELECT array_agg(patient_id) FROM patients JOIN patient_care_teams "
            "USING (patient_key) WHERE team_id = 'team-0'"
        )
        opened = await conn.fetchval("SELECT count(*) FROM episodes WHERE status = 'open'")
        return int(opened), list(mine)
    finally:
        await conn.close()


async def api_latency(settings: Settings, args: argparse.Namespace, figures: Figures) -> None:
    import httpx

    figures.open_episodes, team = await open_episodes(settings)
    with tempfile.TemporaryDirectory() as keys:
        port = http_port()
        api = settings.model_copy(
            update={"api_port": port, "dev_issuer_key_file": Path(keys) / "dev.pem"}
        )
        assert api.token_issuer is not None
        # One clinician's sequential requests: above the rate a clinician is allowed.
        async with process(["-m", "ingest.cli", "api"], api, api_port=port, api_rate_per_s=1e4):
            url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=url, timeout=300) as client:
                await _until_up(client)
                token = DevIssuer(api.token_issuer, Path(keys) / "dev.pem").token(
                    "dr.bench", None, settings.oidc_audience
                )
                client.headers["Authorization"] = f"Bearer {token}"
                worklist = await _timed(client, ["/api/v1/worklist"] * args.requests)
                patients = [team[n * STRIDE % len(team)] for n in range(args.requests)]
                patient = await _timed(
                    client,
                    [f"/api/v1/patients/{p}" for p in patients],
                    [f"/api/v1/patients/{p}/episodes" for p in patients],
                )
    figures.worklist_p50_ms, figures.worklist_p99_ms = _percentiles(worklist)
    figures.patient_p50_ms, figures.patient_p99_ms = _percentiles(patient)
    print(
        f"  API with {figures.open_episodes} open episodes, teams of {TEAM_PATIENTS}: worklist p50 "
        f"{figures.worklist_p50_ms:.0f} ms p99 {figures.worklist_p99_ms:.0f} ms; patient view "
        f"p50 {figures.patient_p50_ms:.0f} ms p99 {figures.patient_p99_ms:.0f} ms",
        flush=True,
    )


async def _until_up(client: object) -> None:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    for _ in range(300):
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/healthz")).status_code < 500:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError("telemon api did not start")


async def _timed(client: object, *paths: Sequence[str]) -> list[float]:
    """Milliseconds of each request (or group of requests, one per sequence), in order."""
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    durations = []
    budget_ends = time.perf_counter() + TIMED_BUDGET_S
    for group in zip(*paths, strict=True):
        started = time.perf_counter()
        for path in group:
            (await client.get(path)).raise_for_status()
        durations.append((time.perf_counter() - started) * 1000)
        if started > budget_ends and len(durations) > 2:
            break
    return durations[1:]  # the first warms the connection pool


def _percentiles(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), statistics.quantiles(ms, n=100)[98]


async def report(settings: Settings, args: argparse.Namespace, figures: Figures) -> None:
    """The report of last month, the cohort's enrolments spread over the 90 days before
    it (so that every patient is followed all month, and months 1 and 2 of follow-up end
    in it for two thirds of them)."""
    this_month = datetime.now(UTC).date().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    assert settings.database_url is not None
    conn = await connect(settings.database_url, settings.database_schema)
    try:
        await conn.execute(
            "UPDATE patients SET enrolled_at = $1::date - (patient_key % 90) * interval '1 day'",
            last_month,
        )
        await conn.execute("VACUUM ANALYZE patients")
    finally:
        await conn.close()
    period = ["--from", last_month.isoformat(), "--to", this_month.isoformat()]
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        command = ["-m", "ingest.cli", "report", *period, "--out", out]
        async with process(command, settings) as child:
            code = await asyncio.to_thread(child.wait)
        figures.report_s = time.monotonic() - started
    if code:
        raise RuntimeError(f"telemon report exited with {code}")
    print(f"  telemon report of {last_month:%Y-%m}: {figures.report_s:.1f} s", flush=True)


async def population(base: Settings, patients: int, args: argparse.Namespace) -> Figures:
    print(f"{patients} patients:", flush=True)
    figures = Figures(patients=patients)
    cohort = build_cohort(CohortConfig(patients=patients, seed=22))
    senders = [Sender.of(p) for p in cohort]
    settings = await isolated(base, f"pop{patients}")
    await enrol(settings, cohort, figures)
    if not args.skip_ingest:
        figures.drain_messages = args.messages or max(300_000, patients)
        await drains(settings, senders, figures.drain_messages, figures)
        await hour_of_readings(settings, cohort, figures)
        del cohort
        await takeover(settings, senders, args, figures)
    for measure in (api_latency, report):
        try:
            await measure(settings, args, figures)
        except Exception as error:  # noqa: BLE001 - reported, and the next one measured
            print(f"  {measure.__name__} failed: {error!r}", flush=True)
    return figures


def verdict(f: Figures) -> list[str]:
    checks = [
        ("enrolment", f"{f.enrol_s:.1f} s", f.enrol_s < 60, "< 60 s for 1M"),
        ("member ready", f"{f.ready_s:.1f} s", f.ready_s < 30, "< 30 s"),
        ("member ready with history", f"{f.ready_with_history_s:.1f} s", None, ""),
        ("RSS when ready", f"{f.ready_rss_mb:.0f} MB", f.ready_rss_mb < 1024, "< 1 GB"),
        (
            "uniform / 10k-patient drain",
            f"{f.uniform_msgs_per_s / max(f.hot_msgs_per_s, 1e-9):.2f}",
            f.uniform_msgs_per_s >= 0.8 * f.hot_msgs_per_s,
            ">= 0.80",
        ),
        ("peak RSS draining", f"{f.uniform_peak_rss_mb:.0f} MB", None, ""),
        ("RSS after an hour of everyone's", f"{f.every_vital_rss_mb:.0f} MB", None, ""),
        ("takeover", f"{f.takeover_s:.1f} s", f.takeover_s < 30, "< 30 s"),
        (
            "takeover lost / duplicated",
            f"{f.takeover_produced - f.takeover_stored} / {f.takeover_duplicates}",
            f.takeover_produced == f.takeover_stored == f.takeover_ledger_messages
            and not f.takeover_duplicates,
            "0 / 0",
        ),
        ("worklist p99", f"{f.worklist_p99_ms:.0f} ms", f.worklist_p99_ms < 200, "< 200 ms"),
        ("patient view p99", f"{f.patient_p99_ms:.0f} ms", f.patient_p99_ms < 200, "< 200 ms"),
        ("monthly report", f"{f.report_s:.1f} s", f.report_s < 120, "< 120 s"),
    ]
    mark = {True: "OK", False: "MISSED", None: ""}
    return [
        f"  {name:30s} {value:>12s}  {target:16s} {mark[ok]}" for name, value, ok, target in checks
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--messages", type=int, default=0, help="per drain; default: max(300,000, patients)"
    )
    parser.add_argument("--takeover-rate", type=float, default=10_000, help="messages/s")
    parser.add_argument("--requests", type=int, default=300, help="per API endpoint")
    parser.add_argument("--quick", action="store_true", help="10k and 100k, smaller runs")
    parser.add_argument(
        "--skip-ingest", action="store_true", help="enrolment, API and report only (no readings)"
    )
    args = parser.parse_args()
    if args.quick:
        args.patients, args.messages = [10_000, 100_000], 100_000
        args.requests = 100
    with benchmark_stack() as base:
        results = [asyncio.run(population(base, patients, args)) for patients in args.patients]
    for f in results:
        print("\n".join([f"\n{f.patients} patients ({f.devices} devices):", *verdict(f)]))
    RESULTS.mkdir(exist_ok=True)
    print(json.dumps([asdict(f) for f in results]))


if __name__ == "__main__":
    main()
