-- Alerts with a lifecycle, their events (the outbox of telemon.alerts.v1), and
-- per-patient threshold overrides with their history.

CREATE TABLE alerts (
    alert_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_key integer NOT NULL REFERENCES patients,
    rule_id text NOT NULL,
    rule_version integer NOT NULL,
    severity smallint NOT NULL CHECK (severity BETWEEN 1 AND 3),   -- 1 info, 2 orange, 3 red
    status text NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    snoozed_until timestamptz,
    first_fired_at timestamptz NOT NULL,      -- event time of the episode's first firing
    last_fired_at timestamptz NOT NULL,       -- event time of its latest firing
    raised_at timestamptz NOT NULL,           -- when telemon raised it (wall clock)
    fire_count integer NOT NULL DEFAULT 1,
    explanation jsonb NOT NULL,               -- rule, version, values, parameters, window
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at timestamptz,
    resolved_by text,
    resolution text
);
-- One episode open per patient and rule.
CREATE UNIQUE INDEX alerts_one_active ON alerts (patient_key, rule_id) WHERE status <> 'resolved';
CREATE INDEX alerts_by_patient_rule ON alerts (patient_key, rule_id, last_fired_at DESC);
CREATE INDEX alerts_worklist ON alerts (status, severity DESC, raised_at DESC);

CREATE TABLE alert_events (
    event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id bigint NOT NULL REFERENCES alerts,
    patient_key integer NOT NULL,
    type text NOT NULL CHECK (type IN ('raised', 'escalated', 'acknowledged', 'snoozed',
                                       'resolved')),
    severity smallint NOT NULL,
    status text NOT NULL,
    at timestamptz NOT NULL,
    actor text NOT NULL,                      -- 'telemon', or the clinician
    detail jsonb NOT NULL DEFAULT '{}',
    published_at timestamptz
);
CREATE INDEX alert_events_unpublished ON alert_events (event_id) WHERE published_at IS NULL;
CREATE INDEX alert_events_by_alert ON alert_events (alert_id);

CREATE TABLE threshold_overrides (
    patient_key integer NOT NULL REFERENCES patients,
    parameter text NOT NULL,                  -- "<rule>.<name>" or "patient.<name>"
    value double precision NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    note text,
    PRIMARY KEY (patient_key, parameter)
);
CREATE TABLE threshold_override_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_key integer NOT NULL,
    parameter text NOT NULL,
    value double precision,                   -- NULL: override removed
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL,
    note text
);
