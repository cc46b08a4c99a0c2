-- kafka_key_hash (0011), the same hash in fewer PL/pgSQL statements: it runs for every
-- patient inserted (the generated column patients.key_hash). A 32-bit value times the
-- multiplier 0x5bd1e995 (1540483477 < 2^31) is below 2^63, so the product fits a bigint
-- without 0011's split into 16-bit halves; each block is mixed in two statements, not five.
-- 1M ids: 3.7 s -> 2.0-2.7 s. Stored hashes are unchanged (the results are the same).
CREATE OR REPLACE FUNCTION kafka_key_hash(key text) RETURNS integer
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
        k := ((get_byte(data, i) | (get_byte(data, i + 1) << 8) | (get_byte(data, i + 2) << 16)
              | (get_byte(data, i + 3)::bigint << 24)) * 1540483477) & 4294967295;
        h := ((h * 1540483477) & 4294967295) # (((k # (k >> 24)) * 1540483477) & 4294967295);
        i := i + 4;
    END LOOP;
    IF len % 4 >= 3 THEN h := h # (get_byte(data, whole + 2)::bigint << 16); END IF;
    IF len % 4 >= 2 THEN h := h # (get_byte(data, whole + 1)::bigint << 8); END IF;
    IF len % 4 >= 1 THEN h := ((h # get_byte(data, whole)) * 1540483477) & 4294967295; END IF;
    h := h # (h >> 13);
    h := (h * 1540483477) & 4294967295;
    RETURN ((h # (h >> 15)) & 2147483647)::integer;
END
$$;
