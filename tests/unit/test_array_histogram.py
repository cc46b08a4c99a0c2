"""A histogram fed whole arrays reads like the client library's own."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from ingest.pipeline.metrics import ArrayHistogram


def test_array_histogram_matches_the_client_histogram() -> None:
    """Feeding a whole array gives what observing each value would."""
    values = np.random.default_rng(7).exponential(1.0, 5000)
    values[:10] = [0.05, 0.1, 1.0, 2.0, 0.0, 300.0, 1e6, 0.049, 0.051, 86_400.0]
    ours = CollectorRegistry()
    theirs = CollectorRegistry()
    buckets = (0.05, 0.1, 0.5, 1.0, 2.0, 300.0)
    ArrayHistogram("x_seconds", "x", buckets, ours).observe_many(values)
    reference = Histogram("x_seconds", "x", buckets=buckets, registry=theirs)
    for v in values:
        reference.observe(float(v))
    for le in [*map(str, buckets), "+Inf"]:
        labels = {"le": le}
        assert ours.get_sample_value("x_seconds_bucket", labels) == theirs.get_sample_value(
            "x_seconds_bucket", labels
        )
    assert ours.get_sample_value("x_seconds_sum") == pytest.approx(
        theirs.get_sample_value("x_seconds_sum")
    )
    assert ours.get_sample_value("x_seconds_count") == 5000
