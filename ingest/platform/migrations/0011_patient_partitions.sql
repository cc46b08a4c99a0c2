-- Which partition of the readings topic a patient's messages go to, so that a member
-- loads the patients of the partitions it is assigned only (alerts.loader), without
-- hashing every patient's id in Python at every assignment.
--
-- kafka_key_hash: Kafka's default partitioner (murmur2 of the UTF-8 key, as aiokafka and
-- the Java client compute it), made positive; the partition is the hash modulo the
-- topic's partition count. 32-bit arithmetic on bigint: x * 0x5bd1e995 mod 2^32 is
-- computed with the multiplier in two 16-bit halves (59797 and 23505), so that no
-- product overflows.
CREATE FUNCTION kafka_key_hash(key text) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    data bytea := convert_to(key, 'UTF8');
    len integer := length(data);
    whole integer := len - len % 4;
    h bigint := 2538058380 # len;   -- the seed 0x9747b28c, xor the length
    k bigint;
    i integer := 0;
BEGIN
    WHILE i < whole LOOP
        k := get_byte(data, i) | (get_byte(data, i + 1) << 8) | (get_byte(data, i + 2) << 16)
             | (get_byte(data, i + 3)::bigint << 24);
        k := (k * 59797 + (((k * 23505) & 65535) << 16)) & 4294967295;
        k := k # (k >> 24);
        k := (k * 59797 + (((k * 23505) & 65535) << 16)) & 4294967295;
        h := ((h * 59797 + (((h * 23505) & 65535) << 16)) & 4294967295) # k;
        i := i + 4;
    END LOOP;
    IF len % 4 >= 3 THEN h := h # (get_byte(data, whole + 2)::bigint << 16); END IF;
    IF len % 4 >= 2 THEN h := h # (get_byte(data, whole + 1)::bigint << 8); END IF;
    IF len % 4 >= 1 THEN
        h := h # get_byte(data, whole);
        h := (h * 59797 + (((h * 23505) & 65535) << 16)) & 4294967295;
    END IF;
    h := h # (h >> 13);
    h := (h * 59797 + (((h * 23505) & 65535) << 16)) & 4294967295;
    h := h # (h >> 15);
    RETURN (h & 2147483647)::integer;
END
$$;

ALTER TABLE patients
    ADD COLUMN key_hash integer NOT NULL GENERATED ALWAYS AS (kafka_key_hash(patient_id)) STORED;

-- Row-level security at a million patients. `patient_key IN (SELECT patient_key FROM
-- patient_care_teams)` was planned for the whole table's size: too big to hash within
-- work_mem, the subquery was scanned again for every row (the worklist took 76 s for a
-- clinician of a 5,000-patient team among 1M patients). Joined to the clinician's
-- memberships, it is estimated at a team's size and hashed once (0.2 s, then less).
DO $$
DECLARE
    patient_table text;
BEGIN
    FOR patient_table IN
        SELECT tablename FROM pg_policies
        WHERE schemaname = current_schema() AND policyname = 'team_patients'
    LOOP
        EXECUTE format('ALTER POLICY team_patients ON %I USING (patient_key IN ('
                       'SELECT t.patient_key FROM patient_care_teams t '
                       'JOIN care_team_members m USING (team_id)))', patient_table);
    END LOOP;
END
$$;

-- A patient's devices (the API's patient view): the unique key leads with device_id,
-- so the lookup by patient scanned every device (0.24 s among 2.9M, 0.08 ms indexed).
CREATE INDEX devices_by_patient ON devices (patient_key);
