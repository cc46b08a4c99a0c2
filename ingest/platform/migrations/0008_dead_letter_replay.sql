-- Dead letters that can come back (docs/adr/0002-dead-letter-replay.md): whose they
-- are, parking of unknown devices until their enrolment, and what became of a replay.

ALTER TABLE dead_letters
    -- As the message said, when the decoder got that far (NULL: not readable).
    ADD COLUMN patient_id text,
    ADD COLUMN device_id text,
    -- unknown_device: replayed on its own once the device is enrolled for the patient,
    -- until then; park_expired_at: the window passed first (a plain dead letter again).
    ADD COLUMN parked_until timestamptz,
    ADD COLUMN park_expired_at timestamptz,
    -- A dead letter of a replayed record (rejected again): the dead letter it replays.
    ADD COLUMN replay_of bigint REFERENCES dead_letters,
    -- Written in the batch transaction that stored (or rejected again) the replayed
    -- record, once: when, who asked, the outcome and the record that carried the replay.
    ADD COLUMN replayed_at timestamptz,
    ADD COLUMN replayed_by text,
    ADD COLUMN replay_outcome text CHECK (replay_outcome IN ('stored', 'duplicate', 'rejected')),
    ADD COLUMN replay_reason text,            -- rejected again: the new reason
    ADD COLUMN replay_detail text,
    ADD COLUMN replay_partition integer,
    ADD COLUMN replay_offset bigint,
    ADD CONSTRAINT dead_letters_replay_whole
        CHECK ((replayed_at IS NULL) = (replay_outcome IS NULL));

-- The parking leader's look: parked, not expired, not replayed, by (patient, device).
CREATE INDEX dead_letters_parked ON dead_letters (patient_id, device_id)
    WHERE parked_until IS NOT NULL AND park_expired_at IS NULL AND replayed_at IS NULL;
CREATE INDEX dead_letters_by_patient ON dead_letters (patient_id, rejected_at);
CREATE INDEX dead_letters_by_time ON dead_letters (rejected_at);
CREATE INDEX dead_letters_replayed ON dead_letters (replayed_at) WHERE replayed_at IS NOT NULL;
CREATE INDEX dead_letters_replay_of ON dead_letters (replay_of) WHERE replay_of IS NOT NULL;

-- Every enrolment, whatever its path (telemon enroll, a CSV, the simulator, SQL), wakes
-- the parking leader; it also looks periodically, so a missed notification costs a delay.
CREATE FUNCTION notify_enrolment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('telemon_enrolment', current_schema());
    RETURN NULL;
END
$$;
CREATE TRIGGER devices_enrolled AFTER INSERT ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION notify_enrolment();
