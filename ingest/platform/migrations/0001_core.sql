-- Core ingest schema: registry, readings, dead letters, offsets, ledger.

CREATE TABLE programmes (
    name text PRIMARY KEY
);

CREATE TABLE vital_kinds (
    code smallint PRIMARY KEY,
    kind text NOT NULL UNIQUE,
    unit text NOT NULL,
    value_type text NOT NULL,
    loinc text,
    mdc integer
);

CREATE TABLE patients (
    patient_key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id text NOT NULL UNIQUE,          -- pseudonymous, as in the messages
    programme text NOT NULL REFERENCES programmes,
    enrolled_at timestamptz NOT NULL DEFAULT now(),
    discharged_at timestamptz
);

CREATE TABLE devices (
    device_key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id text NOT NULL,
    patient_key integer NOT NULL REFERENCES patients,
    device_type text NOT NULL,
    enrolled_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, patient_key)
);

-- One row per stored reading, in the catalogue's canonical unit. Partitioned by
-- day of measured_at; ingest creates partitions as needed, retention drops them.
-- device_key determines patient_key, so the key below is also unique on
-- (device, kind, measured_at): a gateway's re-send is a duplicate.
CREATE TABLE readings (
    patient_key integer NOT NULL,
    device_key integer NOT NULL,
    kind smallint NOT NULL,
    value double precision NOT NULL,
    measured_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,         -- when the batch was written
    source_partition integer NOT NULL,        -- provenance in the readings topic
    source_offset bigint NOT NULL,
    PRIMARY KEY (patient_key, kind, measured_at, device_key)
) PARTITION BY RANGE (measured_at);

-- Rejected messages and readings; also the outbox of the dead-letter topic.
CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    reading_index integer,                    -- NULL: the whole message
    reason text NOT NULL,
    detail text NOT NULL,
    message_id text,
    record_key bytea,
    record_value bytea,
    record_timestamp timestamptz NOT NULL,
    rejected_at timestamptz NOT NULL,
    published_at timestamptz,
    UNIQUE NULLS NOT DISTINCT (topic, partition, "offset", reading_index)
);
CREATE INDEX dead_letters_unpublished ON dead_letters (id) WHERE published_at IS NULL;

-- The consumer's position, written in the same transaction as the data.
CREATE TABLE ingest_offsets (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- What each batch did to each partition: the zero-loss reconciliation.
CREATE TABLE ingest_ledger (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    first_offset bigint NOT NULL,
    next_offset bigint NOT NULL,
    messages integer NOT NULL,
    readings_stored integer NOT NULL,
    readings_duplicate integer NOT NULL,
    dead_letters integer NOT NULL,
    written_at timestamptz NOT NULL
);
CREATE INDEX ingest_ledger_partition ON ingest_ledger (consumer_group, topic, partition, first_offset);
