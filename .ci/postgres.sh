#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: a fresh data directory in a temp dir, trust
# auth, listening on 127.0.0.1 only on a free port (never 5432 or 5433, where a machine's own
# server may be), its unix socket in the temp dir. Stopped and removed on exit, whatever happens.
#
# Sourced by .ci/run (and benches/load.sh):
#   source .ci/postgres.sh && postgres_start
# exports WAOTP_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres and sets an EXIT
# trap that stops the server and deletes its directory.
#
# Run alone, it starts a cluster, runs the command given with the variable set, and stops it:
#   .ci/postgres.sh psql "\$WAOTP_TEST_DATABASE_URL" -c 'select 1'
#   .ci/postgres.sh cargo test --test two_instances

# Debian's `postgresql` is installed when no server binaries are found (apt-get; sudo when not
# root), like chromium in .ci/run.
postgres_install() {
  if postgres_bindir >/dev/null; then return 0; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "postgres: no PostgreSQL server binaries and no apt-get to install them" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
}

# The directory holding initdb, pg_ctl and postgres: pg_config's, or the newest Debian install.
postgres_bindir() {
  local dir
  if command -v pg_config >/dev/null 2>&1; then
    dir="$(pg_config --bindir 2>/dev/null || true)"
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  fi
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
    return 0
  fi
  return 1
}

# Runs a command as the cluster's owner: the `postgres` user when root (initdb and postgres
# refuse to run as root), else the current user.
postgres_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

# Whether something already listens on 127.0.0.1:$1.
postgres_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts the cluster and exports WAOTP_TEST_DATABASE_URL; sets the EXIT trap that removes it.
postgres_start() {
  postgres_install
  local bindir
  bindir="$(postgres_bindir)" || {
    echo "postgres: initdb and pg_ctl not found (pg_config --bindir, /usr/lib/postgresql/*/bin)" >&2
    return 1
  }
  local parent="${TMPDIR:-/tmp}"
  # The owner must reach the directory: as root it is the postgres user, so use /tmp.
  [ "$(id -u)" = 0 ] && parent=/tmp
  POSTGRES_DIR="$(mktemp -d "$parent/waotp-pg.XXXXXX")"
  POSTGRES_BINDIR="$bindir"
  trap postgres_stop EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
      echo "postgres: running as root but there is no postgres user to own the cluster" >&2
      return 1
    fi
    chown postgres: "$POSTGRES_DIR"
  fi
  postgres_as_owner "$bindir/initdb" -D "$POSTGRES_DIR/data" -U postgres --auth=trust \
    --encoding=UTF8 --no-locale >"$POSTGRES_DIR/initdb.log" 2>&1 || {
    cat "$POSTGRES_DIR/initdb.log" >&2
    return 1
  }
  # A free port above the usual ones; another process may take it between the check and the
  # start, so a failed start tries the next candidate.
  local attempt port=""
  for attempt in 1 2 3 4 5 6 7 8; do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if [ "$port" = 5432 ] || [ "$port" = 5433 ] || postgres_port_busy "$port"; then
      continue
    fi
    # The tests kill waotp, never PostgreSQL or the machine: the server's own fsync is not what
    # they check, so it is off to spare CI's disk. Two servers and parallel tests need more
    # than the default 100 connections.
    if postgres_as_owner "$bindir/pg_ctl" -w -t 60 -D "$POSTGRES_DIR/data" \
      -l "$POSTGRES_DIR/server.log" \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $POSTGRES_DIR -c fsync=off -c full_page_writes=off -c max_connections=300" \
      start >/dev/null; then
      POSTGRES_PORT="$port"
      break
    fi
    echo "postgres: could not start on port $port (attempt $attempt):" >&2
    tail -n 5 "$POSTGRES_DIR/server.log" >&2 || true
  done
  if [ -z "${POSTGRES_PORT:-}" ]; then
    echo "postgres: the throwaway cluster did not start" >&2
    return 1
  fi
  export WAOTP_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$POSTGRES_PORT/postgres"
  local version
  version="$("$bindir/psql" -X -At -h 127.0.0.1 -p "$POSTGRES_PORT" -U postgres -d postgres \
    -c 'select version()' 2>/dev/null || "$bindir/postgres" --version)"
  echo "postgres: $version"
  echo "postgres: throwaway cluster in $POSTGRES_DIR; WAOTP_TEST_DATABASE_URL=$WAOTP_TEST_DATABASE_URL"
}

# Stops the server (immediately: nothing in it is kept) and removes its directory. Idempotent.
postgres_stop() {
  local status=$?
  if [ -n "${POSTGRES_DIR:-}" ] && [ -d "$POSTGRES_DIR" ]; then
    if [ -f "$POSTGRES_DIR/data/postmaster.pid" ]; then
      postgres_as_owner "$POSTGRES_BINDIR/pg_ctl" -D "$POSTGRES_DIR/data" -m immediate -w \
        stop >/dev/null 2>&1 || true
    fi
    rm -rf "$POSTGRES_DIR"
    echo "postgres: throwaway cluster stopped and removed"
  fi
  POSTGRES_DIR=""
  return $status
}

# Run alone: start, run the command, stop.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  postgres_start
  if [ $# -gt 0 ]; then
    "$@"
  fi
fi
