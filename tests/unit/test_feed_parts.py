"""Pure parts of the clinicians' feed: feed positions, chart thresholds, audit outcomes."""

from __future__ import annotations

import pytest

from alerts.programmes import load_config
from devices.registry import Programme
from ingest.api.audit import AuditRecord
from ingest.api.routers.thresholds import chart_thresholds
from ingest.api.stream import FeedPosition


def test_feed_positions_round_trip_and_order_by_transaction_first() -> None:
    position = FeedPosition.parse("742-18")
    assert position == FeedPosition(742, 18)
    assert FeedPosition.parse(str(position)) == position
    assert FeedPosition(741, 99) < FeedPosition(742, 3) < FeedPosition(742, 4)
    too_big = f"{2**63}-1"  # beyond PostgreSQL's bigint: refused here, not a 500 there
    for bad in ("", "742", "742-", "-1-2", "a-b", "1-2-3", "1" * 20 + "-1", too_big):
        with pytest.raises(ValueError, match="not a feed position"):
            FeedPosition.parse(bad)


def test_chart_thresholds_follow_programme_and_overrides() -> None:
    config = load_config()
    lines = chart_thresholds(config, Programme.COVID, {})
    heart = {
        (line["severity"], line["direction"]): line["value"]
        for line in lines
        if line["rule_id"] == "heart_rate"
    }
    assert heart == {("red", "below"): 40, ("orange", "above"): 111, ("red", "above"): 131}
    assert all(line["kind"] for line in lines)

    overridden = chart_thresholds(
        config,
        Programme.COVID,
        {"heart_rate.red_at_or_above": 150, "respiratory_rate.enabled": 0},
    )
    assert ("red", "above", 150) in {
        (line["severity"], line["direction"], line["value"])
        for line in overridden
        if line["rule_id"] == "heart_rate"
    }
    assert not [line for line in overridden if line["rule_id"] == "respiratory_rate"]
    assert [line for line in lines if line["rule_id"] == "respiratory_rate"]


@pytest.mark.parametrize(("status", "outcome"), [(200, 0), (401, 4), (403, 4), (409, 4), (500, 8)])
def test_audit_outcome_follows_fhir(status: int, outcome: int) -> None:
    record = AuditRecord("R", "alert.read", status, "GET /x", None, None, None)
    assert record.outcome == outcome
