-- Interoperability: FHIR input keeps its content type through the dead-letter
-- topic; patients may carry their national health identity (INS).

ALTER TABLE dead_letters ADD COLUMN record_content_type text;

-- The INS (identité nationale de santé) and identity traits of a patient. Readings,
-- alerts and messages keep the pseudonymous patient_id only; this table is the one
-- place a patient's identity lives. The API's role has no privilege on it: it reads
-- it through read_patient_identity(), which lets only members of the patient's care
-- teams who need it (reads_identity) see it, and records every attempt in the audit.
CREATE TABLE patient_identities (
    patient_key integer PRIMARY KEY REFERENCES patients,
    ins_matricule text CHECK (ins_matricule ~ '^[0-9][0-9AB][0-9]{11}[0-9]{2}$'),
    ins_oid text CHECK (ins_oid IN ('1.2.250.1.213.1.4.8',    -- NIR
                                    '1.2.250.1.213.1.4.9',    -- NIA
                                    '1.2.250.1.213.1.4.10',   -- NIR, test
                                    '1.2.250.1.213.1.4.11')), -- NIA, test
    birth_family_name text NOT NULL,
    first_names text NOT NULL,                -- the birth first names, in order
    birth_date date NOT NULL,
    sex char(1) NOT NULL CHECK (sex IN ('M', 'F', 'I')),
    birthplace_code text,                     -- INSEE code of the commune, 99xxx abroad
    status text NOT NULL CHECK (status IN ('provisional', 'recovered', 'validated',
                                           'qualified')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((ins_matricule IS NULL) = (ins_oid IS NULL)),
    -- recovered and qualified identities are those whose INS came from the INSi service
    CHECK (status IN ('provisional', 'validated') OR ins_matricule IS NOT NULL)
);

ALTER TABLE care_team_members ADD COLUMN reads_identity boolean NOT NULL DEFAULT false;

-- The identity of `patient` for the clinician of this transaction (telemon.clinician).
-- One row: permitted false (and nothing else) unless the clinician reads identities in
-- one of the patient's teams; permitted true and NULL traits when none is recorded.
-- Each call writes an audit event, refused or not (a refusal is data, not an error:
-- raising would roll the audit record back with it).
CREATE FUNCTION read_patient_identity(patient text, audit_source text)
    RETURNS TABLE (permitted boolean, ins_matricule text, ins_oid text,
                   birth_family_name text, first_names text, birth_date date, sex char(1),
                   birthplace_code text, status text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$
DECLARE
    reader text := current_setting('telemon.clinician', true);
    allowed boolean;
BEGIN
    SELECT EXISTS (
        SELECT FROM patients p
        JOIN patient_care_teams t USING (patient_key)
        JOIN care_team_members m USING (team_id)
        WHERE p.patient_id = patient AND m.clinician = reader AND m.reads_identity
    ) INTO allowed;
    INSERT INTO audit_events (action, subtype, outcome, http_status, agent, source, entity,
                              patient_id)
    VALUES ('R', 'identity.read', CASE WHEN allowed THEN 0 ELSE 4 END,
            CASE WHEN allowed THEN 200 ELSE 403 END, reader, audit_source,
            'patient_identities', patient);
    IF NOT allowed THEN
        RETURN QUERY SELECT false, NULL::text, NULL::text, NULL::text, NULL::text,
                            NULL::date, NULL::char(1), NULL::text, NULL::text;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT true, i.ins_matricule, i.ins_oid, i.birth_family_name, i.first_names,
               i.birth_date, i.sex, i.birthplace_code, i.status
        FROM (SELECT 1) AS one
        LEFT JOIN patients p ON p.patient_id = patient
        LEFT JOIN patient_identities i ON i.patient_key = p.patient_key;
END
$$;
REVOKE ALL ON FUNCTION read_patient_identity(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION read_patient_identity(text, text) TO telemon_api;
