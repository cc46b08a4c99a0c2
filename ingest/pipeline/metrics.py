"""Every Prometheus metric of the ingest pipeline, in one place (a step keeps its own:
alerts.metrics).

Names follow Prometheus conventions (`_total`, `_seconds`, base units). Labels
are bounded: a reject reason, a Kafka partition number, never a patient or a
device. The registry is injectable so each test uses a fresh one; production
uses the default registry, which adds the client's process collectors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from devices.contract import RejectReason

__all__ = ["LATENCY_BUCKETS", "ArrayHistogram", "IngestMetrics"]

LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
    86_400.0,
)


class ArrayHistogram(Collector):
    """A histogram fed a whole numpy array per call (one call per batch, not per reading)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # last: above every bound
        self._sum = 0.0
        registry.register(self)

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        if len(values) == 0:
            return
        slots = np.searchsorted(self._bounds, values, side="left")
        self._counts += np.bincount(slots, minlength=len(self._counts))
        self._sum += float(values.sum())

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        cumulative = np.cumsum(self._counts)
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self._bounds, cumulative, strict=False)]
        buckets.append(("+Inf", int(cumulative[-1])))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=self._sum
        )


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(f"telemon_ingest_{name}", doc, labels, registry=registry)

        self.registry = registry
        self.messages_consumed = counter("messages_consumed_total", "Kafka records consumed.")
        self.readings_consumed = counter(
            "readings_consumed_total", "Readings in consumed messages that could be parsed."
        )
        self.readings_stored = counter(
            "readings_stored_total", "Readings made durable in PostgreSQL."
        )
        self.readings_duplicate = counter(
            "readings_duplicate_total",
            "Readings already stored (same device, kind and measured_at), not stored again.",
        )
        self.rejected = counter(
            "rejected_total",
            "Dead-lettered messages (whole-message reasons) and readings, by reason.",
            ["reason"],
        )
        for reason in RejectReason:
            self.rejected.labels(reason.value)
        self.messages_skipped = counter(
            "messages_skipped_total",
            "Records below the partition's stored offset (already durable; a replay or a "
            "member that lost its partition).",
        )
        self.batches = counter("batches_written_total", "Batch transactions committed.")
        self.write_errors = counter(
            "write_errors_total",
            "Failed batch transactions, by whether they are retried.",
            ["kind"],
        )
        self.kafka_commit_failures = counter(
            "kafka_commit_failures_total",
            "Kafka offset commits that failed (harmless: offsets are stored in PostgreSQL).",
        )
        self.dead_letters_published = counter(
            "dead_letters_published_total", "Dead-letter records relayed to the DLQ topic."
        )
        self.dead_letters_parked = counter(
            "dead_letters_parked_total",
            "unknown_device dead letters parked: replayed on their own if the device is "
            "enrolled for the patient within the window.",
        )
        self.dead_letters_replayed = counter(
            "dead_letters_replayed_total",
            "Dead letters replayed, by outcome (stored, duplicate, rejected again).",
            ["outcome"],
        )
        for outcome in ("stored", "duplicate", "rejected"):
            self.dead_letters_replayed.labels(outcome)
        self.dead_letters_expired = counter(
            "dead_letters_expired_total",
            "Parked dead letters whose window passed before an enrolment (parking leader).",
        )
        self.batch_messages = Histogram(
            "telemon_ingest_batch_messages",
            "Messages per written batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000),
            registry=registry,
        )
        self.write_seconds = Histogram(
            "telemon_ingest_write_seconds",
            "Duration of one batch transaction.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.durable_latency = ArrayHistogram(
            "telemon_ingest_durable_latency_seconds",
            "From a reading's measured_at (device time) to its commit in PostgreSQL.",
            LATENCY_BUCKETS,
            registry,
        )
        self.consumer_lag = Gauge(
            "telemon_ingest_consumer_lag",
            "Messages behind the partition's high watermark.",
            ["partition"],
            registry=registry,
        )
        self.paused = Gauge(
            "telemon_ingest_paused",
            "1 while partitions are paused by back-pressure.",
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "telemon_ingest_assigned_partitions",
            "Partitions this member owns.",
            registry=registry,
        )
        self.in_flight_batches = Gauge(
            "telemon_ingest_in_flight_batches",
            "Batches decoded and waiting to be written.",
            registry=registry,
        )
        self.dead_letters_waiting = Gauge(
            "telemon_ingest_parked_dead_letters",
            "Dead letters parked now, waiting for their device's enrolment (parking leader).",
            registry=registry,
        )
        self.dead_letter_backlog = Gauge(
            "telemon_ingest_dead_letter_backlog",
            "Dead letters stored but not yet relayed to the DLQ topic.",
            registry=registry,
        )
