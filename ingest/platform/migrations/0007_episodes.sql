-- Episodes: the care team's unit of work (docs/alerts.md).
--
-- The rules fire per rule: each firing is a *finding* (the former `alerts`, kept
-- for the evidence and for rule analytics). A patient has at most one unresolved
-- episode per job: `clinical` (review the patient) and `data` (chase the data).
-- Its severity is the highest of its findings; clinicians acknowledge, snooze and
-- resolve the episode, with a disposition. Events (the outbox of the alerts topic
-- and the live feed) are about episodes.

CREATE TABLE episodes (
    episode_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_key integer NOT NULL REFERENCES patients,
    job text NOT NULL CHECK (job IN ('clinical', 'data')),
    severity smallint NOT NULL CHECK (severity BETWEEN 1 AND 3),   -- 1 info, 2 orange, 3 red
    severity_since timestamptz NOT NULL,      -- when it reached its severity: the wait counts from
    status text NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    snoozed_until timestamptz,
    first_fired_at timestamptz NOT NULL,      -- event time of its first finding
    last_fired_at timestamptz NOT NULL,       -- event time of its latest firing
    opened_at timestamptz NOT NULL,           -- when telemon opened it (wall clock)
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at timestamptz,
    resolved_by text,                         -- 'telemon' when the data it waited for came
    -- What was done (alerts.model.Disposition); NULL only for episodes resolved before 0007.
    disposition text CHECK (disposition IN (
        'called_no_action', 'advice_given', 'treatment_adjusted', 'referred', 'emergency',
        'artefact', 'data_chased', 'data_received')),
    note text,
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
CREATE UNIQUE INDEX episodes_one_unresolved ON episodes (patient_key, job) WHERE status <> 'resolved';
CREATE INDEX episodes_worklist ON episodes (severity DESC, severity_since) WHERE status <> 'resolved';
CREATE INDEX episodes_by_patient ON episodes (patient_key, episode_id DESC);

-- Findings: what each rule found, inside an episode.
ALTER TABLE alerts RENAME TO findings;
ALTER TABLE findings RENAME COLUMN alert_id TO finding_id;
ALTER INDEX alerts_one_active RENAME TO findings_one_unresolved;
ALTER INDEX alerts_by_patient_rule RENAME TO findings_by_patient_rule;
DROP INDEX alerts_worklist;
ALTER TABLE findings ADD COLUMN episode_id bigint REFERENCES episodes;

-- The alerts of before become findings: each resolved one in an episode of its own, the
-- unresolved ones of a patient and job together in one open episode.
ALTER TABLE findings ADD COLUMN job text;
UPDATE findings SET job = CASE WHEN rule_id IN ('questionnaire_missed', 'hf_weight_missing',
    'glucose_missing', 'device_silent', 'adherence_m1', 'adherence_m2') THEN 'data'
    ELSE 'clinical' END;
ALTER TABLE episodes ADD COLUMN legacy_finding bigint;
INSERT INTO episodes (patient_key, job, severity, severity_since, status, first_fired_at,
                      last_fired_at, opened_at, acknowledged_at, acknowledged_by, resolved_at,
                      resolved_by, disposition, note, legacy_finding)
SELECT patient_key, job, severity, raised_at, 'resolved', first_fired_at, last_fired_at,
       raised_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by,
       CASE WHEN resolution = 'data received' THEN 'data_received' END,
       CASE WHEN resolution <> 'data received' THEN resolution END, finding_id
FROM findings WHERE status = 'resolved';
UPDATE findings f SET episode_id = e.episode_id FROM episodes e WHERE e.legacy_finding = f.finding_id;
ALTER TABLE episodes DROP COLUMN legacy_finding;
INSERT INTO episodes (patient_key, job, severity, severity_since, status, snoozed_until,
                      first_fired_at, last_fired_at, opened_at, acknowledged_at, acknowledged_by)
SELECT patient_key, job, max(severity), min(raised_at),
       CASE WHEN bool_and(status = 'acknowledged') THEN 'acknowledged' ELSE 'open' END,
       max(snoozed_until), min(first_fired_at), max(last_fired_at), min(raised_at),
       max(acknowledged_at), max(acknowledged_by)
FROM findings WHERE status <> 'resolved'
GROUP BY patient_key, job;
UPDATE findings f SET episode_id = e.episode_id
FROM episodes e
WHERE f.episode_id IS NULL AND e.status <> 'resolved' AND e.patient_key = f.patient_key
  AND e.job = f.job;
ALTER TABLE findings DROP COLUMN job;
ALTER TABLE findings ALTER COLUMN episode_id SET NOT NULL;
CREATE INDEX findings_by_episode ON findings (episode_id);

-- A finding is open while its episode is, or until the data it waits for arrives.
ALTER TABLE findings DROP CONSTRAINT alerts_status_check;
UPDATE findings SET status = 'open' WHERE status = 'acknowledged';
ALTER TABLE findings ADD CONSTRAINT findings_status_check CHECK (status IN ('open', 'resolved'));
ALTER TABLE findings DROP COLUMN snoozed_until, DROP COLUMN acknowledged_at,
    DROP COLUMN acknowledged_by;

-- Events are about episodes.
ALTER TABLE alert_events RENAME TO episode_events;
ALTER INDEX alert_events_unpublished RENAME TO episode_events_unpublished;
ALTER INDEX alert_events_stream RENAME TO episode_events_stream;
DROP INDEX alert_events_by_alert;
ALTER TABLE episode_events ADD COLUMN episode_id bigint REFERENCES episodes;
UPDATE episode_events e SET episode_id = f.episode_id FROM findings f WHERE f.finding_id = e.alert_id;
ALTER TABLE episode_events ALTER COLUMN episode_id SET NOT NULL;
ALTER TABLE episode_events DROP COLUMN alert_id;
CREATE INDEX episode_events_by_episode ON episode_events (episode_id);
ALTER TABLE episode_events DROP CONSTRAINT alert_events_type_check;
-- updated: a finding joined the episode, or was resolved by data, without a change of severity
ALTER TABLE episode_events ADD CONSTRAINT episode_events_type_check
    CHECK (type IN ('raised', 'escalated', 'updated', 'acknowledged', 'snoozed', 'resolved'));

-- The clinicians' API: episodes under the same row-level security as every patient table.
GRANT SELECT, UPDATE ON episodes TO telemon_api;
ALTER TABLE episodes ENABLE ROW LEVEL SECURITY;
CREATE POLICY team_patients ON episodes TO telemon_api
    USING (patient_key IN (SELECT patient_key FROM patient_care_teams));

DROP FUNCTION alert_exists(bigint);
CREATE FUNCTION episode_exists(episode bigint) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT EXISTS (SELECT FROM episodes WHERE episode_id = episode) $$;
REVOKE ALL ON FUNCTION episode_exists(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION episode_exists(bigint) TO telemon_api;

-- Open episodes by severity, for the API's metrics (counts and the longest wait; nothing
-- that identifies a patient), readable by the API's role whatever its teams.
DROP FUNCTION open_alert_board();
CREATE FUNCTION open_episode_board()
    RETURNS TABLE (severity smallint, open_episodes bigint, oldest_since timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$
        SELECT severity, count(*), min(severity_since) FROM episodes
        WHERE status = 'open' AND (snoozed_until IS NULL OR snoozed_until < now())
        GROUP BY severity
    $$;
REVOKE ALL ON FUNCTION open_episode_board() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION open_episode_board() TO telemon_api;

-- The worklist shows a patient's name to the clinicians who read identities in one of the
-- patient's teams (the others see the pseudonymous id): their names, each read audited.
CREATE FUNCTION patient_display_names(patients text[], audit_source text)
    RETURNS TABLE (patient_id text, display_name text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$
DECLARE
    reader text := current_setting('telemon.clinician', true);
BEGIN
    RETURN QUERY
    WITH readable AS (
        SELECT DISTINCT p.patient_id AS id,
               initcap(split_part(i.first_names, ' ', 1)) || ' ' || upper(i.birth_family_name)
                   AS name
        FROM patients p
        JOIN patient_identities i ON i.patient_key = p.patient_key
        JOIN patient_care_teams t ON t.patient_key = p.patient_key
        JOIN care_team_members m ON m.team_id = t.team_id
        WHERE p.patient_id = ANY(patients) AND m.clinician = reader AND m.reads_identity
    ), audited AS (
        INSERT INTO audit_events (action, subtype, outcome, http_status, agent, source, entity,
                                  patient_id)
        SELECT 'R', 'identity.name', 0, 200, reader, audit_source, 'patient_identities', r.id
        FROM readable r
    )
    SELECT r.id, r.name FROM readable r;
END
$$;
REVOKE ALL ON FUNCTION patient_display_names(text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION patient_display_names(text[], text) TO telemon_api;
