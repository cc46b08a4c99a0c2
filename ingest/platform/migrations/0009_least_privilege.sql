-- Least privilege (issue 20). Only `telemon migrate` changes the schema, logged in as the
-- tables' owner. The services act as roles that own nothing: the API as telemon_api
-- (0003), ingest and its outbox relays as telemon_ingest (here). Each is NOLOGIN; a
-- deployment gives every service a login of its own that is only a member of its role
-- (docs/operations.md), so neither RESET ROLE nor SET ROLE leads back to the owner.

DO $$
BEGIN
    CREATE ROLE telemon_ingest NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- roles are cluster-wide: another schema's migration made it
END
$$;

-- Ingest reads what the rules and the registry need: every table, and every table the
-- owner makes later (a migration, a readings day) ...
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO telemon_ingest', current_schema());
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO telemon_ingest',
                   current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES '
                   'TO telemon_ingest', current_schema());
END
$$;
-- ... but not who the patients are, nor who read what (it may only add audit records).
REVOKE ALL ON patient_identities, audit_events FROM telemon_ingest;

-- What the batch transaction, the alert step and the outbox relays write.
GRANT INSERT ON readings, dead_letters, ingest_ledger TO telemon_ingest;
GRANT UPDATE (published_at) ON dead_letters TO telemon_ingest;
-- Replays marked in the batch transaction, dead letters parked and expired (0008); the
-- parking leader's replay requests are audited.
GRANT UPDATE (replayed_at, replayed_by, replay_outcome, replay_reason, replay_detail,
              replay_partition, replay_offset, replay_of, parked_until, park_expired_at)
    ON dead_letters TO telemon_ingest;
GRANT INSERT ON audit_events TO telemon_ingest;
GRANT INSERT, UPDATE ON ingest_offsets, alert_scores TO telemon_ingest;
-- The rules open and escalate episodes, add and resolve findings (alerts.lifecycle); the
-- events go out through the outbox (alerts.outbox).
GRANT INSERT, UPDATE ON episodes, findings TO telemon_ingest;
GRANT INSERT, UPDATE (published_at) ON episode_events TO telemon_ingest;

-- Row-level security restricts telemon_api to its clinician's teams; ingest handles every
-- patient's readings, and PostgreSQL refuses COPY into a table under row-level security:
-- its role bypasses it (an attribute only a superuser may give; without it ingest refuses
-- to start and says so). Its grants above still bound what it can touch.
DO $$
BEGIN
    ALTER ROLE telemon_ingest BYPASSRLS;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'ingest needs it: a superuser runs ALTER ROLE telemon_ingest BYPASSRLS';
END
$$;

-- The readings' day tables are made by their owner (PostgreSQL lets only the owner of a
-- partitioned table add partitions): ingest asks for a day, nothing else.
CREATE FUNCTION create_reading_day(day date) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$
BEGIN
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF readings '
                   'FOR VALUES FROM (%L) TO (%L)',
                   'readings_p' || to_char(day, 'YYYYMMDD'),
                   day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
END
$$;
REVOKE ALL ON FUNCTION create_reading_day(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION create_reading_day(date) TO telemon_ingest;

-- The services check at start that the schema is migrated (they never migrate).
GRANT SELECT ON schema_migrations TO telemon_api, telemon_ingest;

-- One answer for "not yours" and "does not exist" (404): the API no longer asks whether
-- a patient or an episode exists elsewhere.
REVOKE EXECUTE ON FUNCTION patient_exists(text), episode_exists(bigint) FROM telemon_api;

-- The audit trail: bounded rows (the API truncates first; this is the backstop), and the
-- patient of a refused request about an episode the clinician may not see, filled in by
-- the owner's trigger: recorded, never shown to the API (it cannot read audit_events).
ALTER TABLE audit_events ADD CONSTRAINT audit_events_bounded CHECK (
    octet_length(subtype) <= 128 AND octet_length(entity) <= 1024
    AND octet_length(coalesce(agent, '')) <= 512
    AND octet_length(coalesce(agent_name, '')) <= 512
    AND octet_length(coalesce(network_address, '')) <= 64
    AND octet_length(coalesce(patient_id, '')) <= 256
    AND octet_length(source) <= 256 AND octet_length(detail::text) <= 4096
) NOT VALID;

CREATE FUNCTION audit_event_patient() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
    AS $$
BEGIN
    IF NEW.patient_id IS NULL AND NEW.detail ->> 'episode_id' ~ '^[0-9]{1,18}$' THEN
        SELECT p.patient_id INTO NEW.patient_id
        FROM episodes e JOIN patients p ON p.patient_key = e.patient_key
        WHERE e.episode_id = (NEW.detail ->> 'episode_id')::bigint;
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION audit_event_patient() FROM PUBLIC;
CREATE TRIGGER audit_events_patient BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_event_patient();
