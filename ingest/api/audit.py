"""The audit trail: who read or changed which patient's data, when, from where.

One record per API request that touches patient data, and one per refusal or error of
any request (401, 404, 400, 429, 500 ...), shaped after FHIR AuditEvent. Every field is
bounded and printable whatever the client sent (a NUL byte, a 50 KB key id): a record
always fits. The API's role may only insert; `telemon audit` reads them as the tables'
owner.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ingest.platform import Connection

__all__ = ["AuditRecord", "bounded", "log_lost_record", "query_audit", "record_audit"]

log = logging.getLogger(__name__)

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def bounded(text: str | None, limit: int) -> str | None:
    """`text` made printable (control characters as \\xNN) and at most `limit` characters."""
    if text is None:
        return None
    text = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m[0]):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


Action = Literal["C", "R", "U", "D", "E"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    action: Action  # FHIR AuditEvent.action: create, read, update, delete, execute
    subtype: str  # the operation, e.g. "alert.acknowledge"
    http_status: int
    entity: str  # the request, e.g. "POST /api/v1/alerts/42/acknowledge"
    agent: str | None  # the clinician's subject; None when not authenticated
    agent_name: str | None
    network_address: str | None
    patient_id: str | None = None
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def outcome(self) -> int:
        """FHIR AuditEvent.outcome: 0 success, 4 minor failure (refused), 8 serious failure."""
        if self.http_status < 400:
            return 0
        return 4 if self.http_status < 500 else 8


def _detail(detail: dict[str, object]) -> str:
    text = json.dumps(
        {
            bounded(str(k), 64): bounded(v, 300) if isinstance(v, str) else v
            for k, v in detail.items()
        }
    )
    return text if len(text) <= 2000 else json.dumps({"truncated": bounded(text, 1500)})


async def record_audit(conn: Connection, source: str, record: AuditRecord) -> None:
    """Insert the record, every field bounded (migration 0009 checks the bounds too)."""
    await conn.execute(
        """
        INSERT INTO audit_events (action, subtype, outcome, http_status, agent, agent_name,
                                  network_address, source, entity, patient_id, detail)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)
        """,
        record.action,
        bounded(record.subtype, 100),
        record.outcome,
        record.http_status,
        bounded(record.agent, 255),
        bounded(record.agent_name, 255),
        bounded(record.network_address, 45),
        bounded(source, 100),
        bounded(record.entity, 300),
        bounded(record.patient_id, 100),
        _detail(record.detail),
    )


def log_lost_record(source: str, record: AuditRecord, error: BaseException) -> None:
    """The audit trail of last resort: a record PostgreSQL would not take (it is down)
    goes to the process's log, one line, so it can be re-entered."""
    log.error(
        "audit record not stored (%s): %s",
        type(error).__name__,
        json.dumps(
            {
                "source": bounded(source, 100),
                "action": record.action,
                "subtype": bounded(record.subtype, 100),
                "http_status": record.http_status,
                "agent": bounded(record.agent, 255),
                "network_address": bounded(record.network_address, 45),
                "entity": bounded(record.entity, 300),
                "patient_id": bounded(record.patient_id, 100),
            }
        ),
    )


async def query_audit(
    conn: Connection,
    *,
    patient_id: str | None = None,
    agent: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, object]]:
    """Audit records, oldest first, filtered by patient, clinician and time."""
    rows = await conn.fetch(
        """
        SELECT id, recorded, action, subtype, outcome, http_status, agent, agent_name,
               network_address, source, entity, patient_id, detail
        FROM audit_events
        WHERE ($1::text IS NULL OR patient_id = $1)
          AND ($2::text IS NULL OR agent = $2)
          AND ($3::timestamptz IS NULL OR recorded >= $3)
        ORDER BY id LIMIT $4
        """,
        patient_id,
        agent,
        since,
        limit,
    )
    return [
        {**dict(r), "recorded": r["recorded"].isoformat(), "detail": json.loads(r["detail"])}
        for r in rows
    ]
