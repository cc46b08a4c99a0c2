-- The clinicians' feed: care teams, the audit trail, the live stream's order,
-- and row-level security for the API's role (telemon_api). The API connects,
-- then SET ROLE telemon_api and, per request, sets telemon.clinician to the
-- authenticated subject: it sees and changes only the patients of that
-- clinician's teams. The tables' owner (ingest, the CLI) is not restricted.

CREATE TABLE care_teams (
    team_id text PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE care_team_members (
    team_id text NOT NULL REFERENCES care_teams ON DELETE CASCADE,
    clinician text NOT NULL,                  -- the OpenID Connect subject (sub)
    PRIMARY KEY (team_id, clinician)
);
CREATE INDEX care_team_members_by_clinician ON care_team_members (clinician);
CREATE TABLE patient_care_teams (
    patient_key integer NOT NULL REFERENCES patients,
    team_id text NOT NULL REFERENCES care_teams ON DELETE CASCADE,
    PRIMARY KEY (team_id, patient_key)
);

-- Shaped after FHIR AuditEvent: action (C R U D E), recorded, outcome (0 success,
-- 4 minor failure: refused), agent (who, from where), source (which API
-- process), entity (what, which patient).
CREATE TABLE audit_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded timestamptz NOT NULL DEFAULT now(),
    action char(1) NOT NULL CHECK (action IN ('C', 'R', 'U', 'D', 'E')),
    subtype text NOT NULL,                    -- the operation, e.g. 'alert.acknowledge'
    outcome smallint NOT NULL CHECK (outcome IN (0, 4, 8, 12)),
    http_status smallint NOT NULL,
    agent text,                               -- NULL: not authenticated
    agent_name text,
    network_address text,
    source text NOT NULL,
    entity text NOT NULL,                     -- the request, e.g. 'GET /api/v1/alerts/42'
    patient_id text,
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_by_patient ON audit_events (patient_id, recorded);
CREATE INDEX audit_events_by_agent ON audit_events (agent, recorded);

-- The live stream serves events in (transaction, id) order, and only those of
-- transactions older than every one still running: the order is then final and
-- a client resuming after an event misses none (ids alone are allotted before
-- commit, so a later-committing transaction can hold a smaller one).
ALTER TABLE alert_events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX alert_events_stream ON alert_events (txid, event_id);

DO $$
BEGIN
    CREATE ROLE telemon_api NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- roles are cluster-wide: another schema's migration made it
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO telemon_api', current_schema());
END
$$;
GRANT SELECT ON programmes, vital_kinds, care_teams TO telemon_api;
GRANT SELECT ON patients, devices, readings, care_team_members, patient_care_teams
    TO telemon_api;
GRANT SELECT, UPDATE ON alerts TO telemon_api;
GRANT SELECT, INSERT ON alert_events, threshold_override_history TO telemon_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON threshold_overrides TO telemon_api;
GRANT INSERT ON audit_events TO telemon_api;

ALTER TABLE care_team_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_memberships ON care_team_members TO telemon_api
    USING (clinician = current_setting('telemon.clinician', true));
ALTER TABLE patient_care_teams ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_teams ON patient_care_teams TO telemon_api
    USING (team_id IN (SELECT team_id FROM care_team_members));

-- Every table of patient data: rows of the clinician's teams' patients only.
DO $$
DECLARE
    patient_table text;
BEGIN
    FOREACH patient_table IN ARRAY ARRAY['patients', 'devices', 'readings', 'alerts',
                                         'alert_events', 'threshold_overrides',
                                         'threshold_override_history'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', patient_table);
        EXECUTE format('CREATE POLICY team_patients ON %I TO telemon_api USING '
                       '(patient_key IN (SELECT patient_key FROM patient_care_teams))',
                       patient_table);
    END LOOP;
END
$$;
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY write_only ON audit_events FOR INSERT TO telemon_api WITH CHECK (true);

-- Whether a patient or an alert exists at all, whoever follows it: the API answers
-- 403 (not your team's) rather than 404 for those. Nothing else is disclosed.
CREATE FUNCTION patient_exists(patient text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT EXISTS (SELECT FROM patients WHERE patient_id = patient) $$;
CREATE FUNCTION alert_exists(alert bigint) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT EXISTS (SELECT FROM alerts WHERE alert_id = alert) $$;
REVOKE ALL ON FUNCTION patient_exists(text), alert_exists(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION patient_exists(text), alert_exists(bigint) TO telemon_api;
