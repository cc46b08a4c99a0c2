-- Reimbursement evidence (docs/reimbursement.md): how long each patient's telemonitoring
-- is prescribed, and the episodes a discharge closes.

-- A prescription lasts at most a year; NULL: a year from the enrolment (the initial
-- prescription). `telemon patients renew` moves it.
ALTER TABLE patients ADD COLUMN prescribed_until timestamptz;

-- Who discharged whom, and when (patients.discharged_at is the latest); running ingest
-- processes poll it to stop following the patient.
CREATE TABLE discharges (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_key integer NOT NULL REFERENCES patients,
    discharged_at timestamptz NOT NULL,
    discharged_by text NOT NULL,
    note text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- A discharge resolves the patient's open episodes: recorded by telemon, not chosen.
ALTER TABLE episodes DROP CONSTRAINT episodes_disposition_check;
ALTER TABLE episodes ADD CONSTRAINT episodes_disposition_check CHECK (disposition IN (
    'called_no_action', 'advice_given', 'treatment_adjusted', 'referred', 'emergency',
    'artefact', 'data_chased', 'data_received', 'follow_up_ended'));

-- Prescriptions are overrides with their history: the report reads a patient's at once.
CREATE INDEX threshold_override_history_by_patient
    ON threshold_override_history (patient_key, id);

-- The adherence checks of months 1 and 2 of follow-up, per prescribed measure, as ingest
-- made them when each month ended (alerts.adherence): the evidence of why a patient's
-- telemonitoring went on or stopped, kept when the readings behind them are not.
CREATE TABLE follow_up_checks (
    patient_key integer NOT NULL REFERENCES patients,
    month smallint NOT NULL CHECK (month IN (1, 2)),
    measure text NOT NULL,
    expected integer NOT NULL CHECK (expected >= 0),
    received integer NOT NULL CHECK (received >= 0),
    checked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_key, month, measure)
);
-- Ingest checks months 1 and 2 (alerts.step) and follows discharges.
GRANT INSERT ON follow_up_checks TO telemon_ingest;
