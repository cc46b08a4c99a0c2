"""The alert step's Prometheus metrics: what the rules raised, how fast, how much state.

Labels are bounded: a rule id, a severity, an outcome; never a patient.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from alerts.lifecycle import Applied
from alerts.model import Severity
from ingest.pipeline import LATENCY_BUCKETS, ArrayHistogram

__all__ = ["AlertMetrics"]


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.findings = Counter(
            "telemon_alerts_findings_total",
            "New findings (a rule's firing, not folded into an open finding), by rule and "
            "severity.",
            ["rule", "severity"],
            registry=registry,
        )
        self.opened = Counter(
            "telemon_alerts_episodes_opened_total",
            "Episodes opened (worklist items), by job (clinical, data) and severity.",
            ["job", "severity"],
            registry=registry,
        )
        self.escalated = Counter(
            "telemon_alerts_episodes_escalated_total",
            "Unresolved episodes whose severity rose.",
            registry=registry,
        )
        self.resolved_by_data = Counter(
            "telemon_alerts_resolved_by_data_total",
            "Missing-data findings resolved by the data arriving.",
            registry=registry,
        )
        self.firings = Counter(
            "telemon_alerts_firings_total",
            "Rule firings folded into an open finding, or dropped (cool-down, old news).",
            ["outcome"],
            registry=registry,
        )
        self.evaluation_seconds = Histogram(
            "telemon_alerts_evaluation_seconds",
            "Reading rules over one batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        self.sweep_seconds = Histogram(
            "telemon_alerts_sweep_seconds",
            "Missing-data and adherence rules over every patient.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0),
            registry=registry,
        )
        self.latency = ArrayHistogram(
            "telemon_alerts_latency_seconds",
            "From the measured_at of the reading that raised a finding (or made it more "
            "severe) to its being durable.",
            LATENCY_BUCKETS,
            registry,
        )
        self.patients = Gauge(
            "telemon_alerts_patients",
            "Patients whose history this member holds.",
            registry=registry,
        )
        self.rebuild_seconds = Gauge(
            "telemon_alerts_rebuild_seconds",
            "How long the latest assignment took to rebuild the state of its partitions' "
            "patients from PostgreSQL.",
            registry=registry,
        )
        self.events_published = Counter(
            "telemon_alerts_events_published_total",
            "Episode events relayed to the alerts topic.",
            registry=registry,
        )
        self.event_backlog = Gauge(
            "telemon_alerts_event_backlog",
            "Episode events stored but not yet relayed.",
            registry=registry,
        )

    def observe(self, applied: Applied) -> None:
        """What one committed transaction did to findings and episodes."""
        for (rule, severity), count in applied.findings.items():
            self.findings.labels(rule, Severity(severity).label).inc(count)
        for (job, severity), count in applied.opened.items():
            self.opened.labels(job, Severity(severity).label).inc(count)
        self.escalated.inc(applied.escalated)
        self.resolved_by_data.inc(applied.resolved_by_data)
        self.firings.labels("absorbed").inc(applied.absorbed)
        self.firings.labels("dropped").inc(applied.dropped)
        self.latency.observe_many(np.array(applied.raise_latency_s, np.float64))
