-- A device's unique key leads with its patient: the same constraint, and the index of a
-- patient's devices as well (the API's patient view, the export), so devices_by_patient
-- (0011) is redundant and dropped. Every lookup gives both columns or the patient only;
-- an enrolment maintains one index fewer, and appends to this one in patient order (the
-- devices of 1M patients: 2.9M rows, 45 s -> 26 s with the enrolment's staging, issue 22).
ALTER TABLE devices
    DROP CONSTRAINT devices_device_id_patient_key_key,
    ADD CONSTRAINT devices_patient_key_device_id_key UNIQUE (patient_key, device_id);
DROP INDEX devices_by_patient;
