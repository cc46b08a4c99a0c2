-- Open alerts by severity, for the API's metrics (counts and the oldest one's age;
-- nothing that identifies a patient), readable by the API's role whatever its teams.
CREATE FUNCTION open_alert_board()
    RETURNS TABLE (severity smallint, open_alerts bigint, oldest_raised_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$
        SELECT severity, count(*), min(raised_at) FROM alerts
        WHERE status = 'open' AND (snoozed_until IS NULL OR snoozed_until < now())
        GROUP BY severity
    $$;
REVOKE ALL ON FUNCTION open_alert_board() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION open_alert_board() TO telemon_api;
