#!/bin/sh
# Runs once, when the PostgreSQL volume is created: the schema owner, the service's role and
# the database owned by the owner (see README, "Database roles").
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v owner_password="$CASEMGMT_DB_OWNER_PASSWORD" -v app_password="$CASEMGMT_DB_APP_PASSWORD" <<'SQL'
CREATE ROLE casemgmt_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE casemgmt_app LOGIN PASSWORD :'app_password';
CREATE DATABASE casemgmt OWNER casemgmt_owner;
SQL
