#!/usr/bin/env bash
# The results database's two roles. PostgreSQL's image runs this once, when it initialises an empty volume
# (docker-compose.yml mounts it into /docker-entrypoint-initdb.d), as the superuser POSTGRES_USER on
# POSTGRES_DB. Any server works the same way: set those two, psql's PGHOST/PGPORT/PGPASSWORD, and
#   ADAMSCAPE_DB_USER / ADAMSCAPE_DB_PASSWORD  the application role: the scheduler, the CLI and a Ray job's
#                                              driver; it owns the database, so the first `adamscape` that
#                                              connects creates the tables (alembic) as this role
#   ADAMSCAPE_RO_USER / ADAMSCAPE_RO_PASSWORD  the dashboard's read-only role: CONNECT, USAGE on schema public,
#                                              SELECT on every table and view, those the application role
#                                              creates later included (default privileges)
# then `bash docker/postgres-init.sh`. Passwords reach psql as variables, never through a shell or the SQL
# text, so any character is safe here (in a database URL, use URL-safe ones).
set -eo pipefail

: "${POSTGRES_USER:?the superuser to run as}" "${POSTGRES_DB:?the database to set up}"
: "${ADAMSCAPE_DB_USER:?}" "${ADAMSCAPE_DB_PASSWORD:?}" "${ADAMSCAPE_RO_USER:?}" "${ADAMSCAPE_RO_PASSWORD:?}"

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$POSTGRES_DB" \
    -v app="$ADAMSCAPE_DB_USER" -v app_password="$ADAMSCAPE_DB_PASSWORD" \
    -v ro="$ADAMSCAPE_RO_USER" -v ro_password="$ADAMSCAPE_RO_PASSWORD" <<'SQL'
CREATE ROLE :"app" LOGIN PASSWORD :'app_password';
CREATE ROLE :"ro" LOGIN PASSWORD :'ro_password';

-- only these two (and superusers) connect; no temporary tables for the read-only role
ALTER DATABASE :"db" OWNER TO :"app";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"ro";

-- schema public: the application role creates the tables (PostgreSQL < 15 let every role create there)
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"app";
GRANT USAGE ON SCHEMA public TO :"ro";

-- the dashboard reads every table and view: those there now and those the application role creates later
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"ro";
ALTER DEFAULT PRIVILEGES FOR ROLE :"app" IN SCHEMA public GRANT SELECT ON TABLES TO :"ro";
ALTER ROLE :"ro" SET default_transaction_read_only = on;
SQL
