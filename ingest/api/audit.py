"""The audit trail: who read or changed which patient's data, when, from where.

One record per API request that touches patient data, refused ones included
(401, 403), shaped after FHIR AuditEvent. The API's role may only insert;
`telemon audit` reads them as the tables' owner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ingest.platform import Connection

__all__ = ["AuditRecord", "query_audit", "record_audit"]

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


async def record_audit(conn: Connection, source: str, record: AuditRecord) -> None:
    await conn.execute(
        """
        INSERT INTO audit_events (action, subtype, outcome, http_status, agent, agent_name,
                                  network_address, source, entity, patient_id, detail)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)
        """,
        record.action,
        record.subtype,
        record.outcome,
        record.http_status,
        record.agent,
        record.agent_name,
        record.network_address,
        source,
        record.entity,
        record.patient_id,
        json.dumps(record.detail),
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
