#!/usr/bin/env bash
# PostgreSQL from Debian's packages, one cluster under var/postgres, on 127.0.0.1 only: TCP alone, no Unix-domain
# socket (its path, under the checkout, could pass the 107-byte limit wherever a user clones the project).
SERVICE=postgres
source "$(dirname "$0")/lib.sh"
PORT=${RECSYS_POSTGRES__PORT:-25432}
USER_NAME=${RECSYS_POSTGRES__USER:-recsys}
PASSWORD=${RECSYS_POSTGRES__PASSWORD:-recsys}
DATABASE=${RECSYS_POSTGRES__DATABASE:-recsys}
DIR=$VAR_DIR/postgres
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
# initdb and postgres refuse to run as root: run them as this unprivileged account.
RUN_AS=${RECSYS_POSTGRES__OS_USER:-postgres}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$RUN_AS" -- "$@"; else "$@"; fi
}

install() {
  if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    apt_install postgresql
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  mkdir -p "$DIR"
  if [ "$(id -u)" -eq 0 ]; then chown "$RUN_AS" "$DIR"; fi
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    log "initialising cluster in $DIR/data"
    local pwfile; pwfile=$(mktemp); printf '%s\n' "$PASSWORD" >"$pwfile"; chmod 644 "$pwfile"
    as_owner "$PGBIN/initdb" -D "$DIR/data" -U "$USER_NAME" --pwfile="$pwfile" -A scram-sha-256 -E UTF8 \
      >"$DIR/initdb.log" 2>&1 || { rm -f "$pwfile"; die "initdb failed" "$DIR/initdb.log"; }
    rm -f "$pwfile"
  fi
}

answers() {
  PGCONNECT_TIMEOUT=3 PGPASSWORD=$PASSWORD timeout 10 "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d postgres -Atc 'SELECT 1'
}

start() {
  install
  if as_owner "$PGBIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    wait_until 60 "$DIR/postgres.log" "" answers
    log "already up on 127.0.0.1:$PORT"
    ensure_database
    return 0
  fi
  : >"$DIR/postgres.log"; [ "$(id -u)" -eq 0 ] && chown "$RUN_AS" "$DIR/postgres.log"
  as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start \
    >/dev/null 2>&1 || die "pg_ctl start failed" "$DIR/postgres.log"
  wait_until 60 "$DIR/postgres.log" "" answers
  ensure_database
}

ensure_database() {
  local exists
  exists=$(PGPASSWORD=$PASSWORD "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d postgres -Atc \
    "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")
  if [ "$exists" != "1" ]; then
    PGPASSWORD=$PASSWORD "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d postgres -qc "CREATE DATABASE \"$DATABASE\"" \
      || die "could not create database $DATABASE" "$DIR/postgres.log"
    log "created database $DATABASE"
  fi
}

stop() {
  if [ -f "$DIR/data/postmaster.pid" ]; then
    as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  log "stopped"
}

status() {
  if answers >/dev/null 2>&1; then echo "postgres: up on 127.0.0.1:$PORT"; else echo "postgres: down"; exit 1; fi
}

dispatch "$@"
