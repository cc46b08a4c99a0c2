-- A login per service, each only a member of its role (made by `telemon migrate`): they
-- own nothing, so neither RESET ROLE nor anything else leads to the tables' owner.
-- Run by the database's administrator after the first `telemon migrate`:
--   psql -v api='<password>' -v ingest='<password>' -f logins.sql
-- (idempotent: a second run only sets the passwords again).
SELECT format('CREATE ROLE telemon_api_login LOGIN IN ROLE telemon_api')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'telemon_api_login') \gexec
SELECT format('CREATE ROLE telemon_ingest_login LOGIN IN ROLE telemon_ingest')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'telemon_ingest_login') \gexec
ALTER ROLE telemon_api_login PASSWORD :'api';
ALTER ROLE telemon_ingest_login PASSWORD :'ingest';
-- telemon_ingest bypasses row-level security (COPY needs it): only a superuser may say so,
-- which the migration does when it runs as one; here for an owner that is not.
ALTER ROLE telemon_ingest BYPASSRLS;
