#!/usr/bin/env bash
# Reproduces the load numbers of BENCHMARKS.md on one machine: builds release binaries, starts
# the servers on loopback, runs waotp-load against them and prints every report.
# Usage: benches/load.sh [runs] [sections]
#   runs: of each scenario, default 3 (medians go in BENCHMARKS.md)
#   sections: letters of the sections to run, default all: a (with f), b, c, d (with e), g, p
# LOAD_NO_BUILD=1 uses the binaries already in target/release instead of building them.
# Section p needs a PostgreSQL server: the one WAOTP_BENCH_DATABASE_URL names
# (postgres://user@host:port/db, a user that may create databases), or else a throwaway cluster
# started like CI's (.ci/postgres.sh: Debian's postgresql, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SECTIONS=${2:-abcdgp}
section() { [[ $SECTIONS == *"$1"* ]]; }
SECRET=bench-secret
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

bins=(--bin waotp --bin waotp-load)
if section a; then bins+=(--bin waotp-bare); fi
[[ -n ${LOAD_NO_BUILD:-} ]] || cargo build --release --quiet --features load "${bins[@]}"
bin=target/release

wait_ready() { # up to a minute, so that a server that failed to start stops the script
  for _ in $(seq 1200); do curl -sf "$1" >/dev/null && return; sleep 0.05; done
  echo "no answer from $1" >&2; return 1
}
# The servers are not this shell's children (started in a command substitution), so `wait` does
# not wait for them: poll until each has exited, so that the next one can bind the port.
stop() { kill "$@" 2>/dev/null || true; for p in "$@"; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done; }

# The COD scenario drives the API with one key far beyond the default per-key rate limit.
start_waotp() { # data dir, port, extra env...
  local data=$1 port=$2; shift 2
  env WAOTP_DATA_DIR="$data" WAOTP_APP_SECRET=$SECRET WAOTP_API_KEYS=bench-key WAOTP_LOG=warn \
    WAOTP_LISTEN=127.0.0.1:$port WAOTP_API_RATE=1000000 WAOTP_API_BURST=1000000 "$@" $bin/waotp serve >"$work/waotp-$port.log" 2>&1 &
  echo $!
}

if section a; then
echo "### (a) webhook saturation, unique signed POSTs, durable 200 — and (f) the bare handler"
for i in $(seq "$RUNS"); do
  pid=$(start_waotp "$work/sat-$i" 18180)
  WAOTP_APP_SECRET=$SECRET WAOTP_LISTEN=127.0.0.1:18181 $bin/waotp-bare >/dev/null 2>&1 &
  bare=$!
  wait_ready http://127.0.0.1:18180/readyz
  $bin/waotp-load --url http://127.0.0.1:18180/webhook --bare-url http://127.0.0.1:18181/webhook \
    --secret $SECRET --concurrency 64 --duration 10 --warmup 2 --server-pid "$pid" --bare-pid "$bare"
  stop "$pid" "$bare"
done
fi

if section b; then
echo "### (b) open loop at fixed rates"
for rate in 500 2000 5000; do
  for i in $(seq "$RUNS"); do
    pid=$(start_waotp "$work/rate-$rate-$i" 18180)
    wait_ready http://127.0.0.1:18180/readyz
    $bin/waotp-load --url http://127.0.0.1:18180/webhook --secret $SECRET --rate "$rate" \
      --duration 10 --warmup 2 --server-pid "$pid"
    stop "$pid"
  done
done
fi

if section c; then
echo "### (c) end-to-end COD verifications (API start, code out, code back, callback)"
for i in $(seq "$RUNS"); do
  pid=$(start_waotp "$work/cod-$i" 18182 WAOTP_OTP_SENDS_PER_HOUR=1000000 \
    WAOTP_CALLBACK_URL=http://127.0.0.1:18099/callback)
  wait_ready http://127.0.0.1:18182/readyz
  $bin/waotp-load --scenario cod --base http://127.0.0.1:18182 --api-key bench-key \
    --concurrency 32 --duration 10 --warmup 2 --server-pid "$pid"
  stop "$pid"
done
fi

if section d; then
echo "### (d, e) idle sessions on disk: size, start-up time, resident memory"
for n in 100000 1000000; do
  $bin/waotp-load --scenario seed --data-dir "$work/idle-$n" --flows flows --sessions "$n" 2>/dev/null
  du -sh "$work/idle-$n"
  t0=$(date +%s%N)
  pid=$(start_waotp "$work/idle-$n" 18183)
  wait_ready http://127.0.0.1:18183/readyz
  t1=$(date +%s%N)
  echo "ready after $(( (t1 - t0) / 1000000 )) ms"
  sleep 5; grep VmRSS "/proc/$pid/status"
  stop "$pid"
  rm -rf "$work/idle-$n"
done
fi

if section g; then
echo "### (g) COD with ten numbers: one merchant, ten sandbox numbers, flows through each in turn"
# A tenants file replaces the single-merchant variables (which must then be unset): one merchant
# `bench` whose key is bench-key, ten numbers without tokens (so sandbox mode), each allowed
# Meta's highest rate.
tenants=$work/tenants.toml
{
  echo '[[merchant]]'
  echo 'id = "bench"'
  echo "api_keys = [\"$(printf '%s' bench-key | $bin/waotp tenants key-digest)\"]"
  echo 'callback_url = "http://127.0.0.1:18099/callback"'
  echo "flows = \"$PWD/flows\""
  for n in $(seq 10); do
    echo
    echo '[[merchant.number]]'
    printf 'phone_number_id = "1000000000000%02d"\n' "$n"
    printf 'business_number = "+15550100%03d"\n' "$n"
    echo 'sends_per_second = 1000'
  done
} >"$tenants"
$bin/waotp tenants check "$tenants" >/dev/null
replaced=(WAOTP_ACCESS_TOKEN WAOTP_PHONE_NUMBER_ID WAOTP_BUSINESS_NUMBER WAOTP_API_KEYS
  WAOTP_CALLBACK_URL WAOTP_CALLBACK_SECRET WAOTP_HOOK_BASE_URL WAOTP_WABA_ID WAOTP_SENDS_PER_SECOND)
start_tenants() { # data dir, port
  env "${replaced[@]/#/--unset=}" WAOTP_DATA_DIR="$1" WAOTP_TENANTS="$tenants" WAOTP_LOG=warn WAOTP_LISTEN=127.0.0.1:$2 \
    WAOTP_API_RATE=1000000 WAOTP_API_BURST=1000000 WAOTP_OTP_SENDS_PER_HOUR=1000000 \
    $bin/waotp serve >"$work/waotp-$2.log" 2>&1 &
  echo $!
}
for numbers in 10 1; do
  for i in $(seq "$RUNS"); do
    echo "## --numbers $numbers, run $i"
    pid=$(start_tenants "$work/cod-numbers-$numbers-$i" 18184)
    wait_ready http://127.0.0.1:18184/readyz
    $bin/waotp-load --scenario cod --base http://127.0.0.1:18184 --api-key bench-key \
      --numbers "$numbers" --concurrency 32 --duration 10 --warmup 2
    stop "$pid"
  done
done
fi

if section p; then
echo "### (p) PostgreSQL: webhook saturation, 2,000/s and COD; one instance, then two sharing one database"
# Each run gets a fresh database on the server; the instances differ only in port and data
# directory (which the PostgreSQL engine leaves empty), and waotp-load sends its requests to
# them in turn, as a round-robin load balancer would.
if [[ -n ${WAOTP_BENCH_DATABASE_URL:-} ]]; then
  pg_admin=$WAOTP_BENCH_DATABASE_URL
  psql=psql
else
  # shellcheck source=../.ci/postgres.sh
  source .ci/postgres.sh
  postgres_start
  # postgres_start's EXIT trap replaced this script's: both cleanups now.
  trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"; postgres_stop' EXIT
  pg_admin=$WAOTP_TEST_DATABASE_URL
  psql=$POSTGRES_BINDIR/psql
fi
"$psql" -X -At "$pg_admin" -c 'select version()'
db_url() { # the admin URL with its database replaced by $1 (its query, if any, kept)
  local base=${pg_admin%%\?*}
  echo "${base%/*}/$1${pg_admin#"$base"}"
}
for instances in 1 2; do
  for i in $(seq "$RUNS"); do
    echo "## $instances instance(s) on one database, run $i"
    db=waotp_bench_$$_${instances}_$i
    "$psql" -X -q "$pg_admin" -c "CREATE DATABASE $db"
    pids=(); bases=()
    for n in $(seq "$instances"); do
      port=$((18184 + n))
      pids+=("$(start_waotp "$work/pg-$instances-$i-$n" "$port" WAOTP_DATABASE_URL="$(db_url "$db")" \
        WAOTP_OTP_KEY=bench-otp-key-shared-by-every-instance-0123456789 \
        WAOTP_OTP_SENDS_PER_HOUR=1000000 WAOTP_CALLBACK_URL=http://127.0.0.1:18099/callback)")
      bases+=("http://127.0.0.1:$port")
    done
    for base in "${bases[@]}"; do wait_ready "$base/readyz"; done
    pid_arg=()
    [[ $instances == 1 ]] && pid_arg=(--server-pid "${pids[0]}")
    hooks=$(IFS=,; echo "${bases[*]/%//webhook}")
    # COD first, on the fresh database; then the webhook, at 2,000/s and at saturation.
    echo "# COD end to end"
    $bin/waotp-load --scenario cod --base "$(IFS=,; echo "${bases[*]}")" --api-key bench-key \
      --concurrency 32 --duration 10 --warmup 2 "${pid_arg[@]}"
    echo "# webhook open loop at 2,000/s"
    $bin/waotp-load --url "$hooks" --secret $SECRET --rate 2000 --duration 10 --warmup 2 \
      "${pid_arg[@]}"
    echo "# webhook saturation, 64 in flight"
    $bin/waotp-load --url "$hooks" --secret $SECRET --concurrency 64 --duration 10 --warmup 2 \
      "${pid_arg[@]}"
    stop "${pids[@]}"
    "$psql" -X -q "$pg_admin" -c "DROP DATABASE $db WITH (FORCE)"
  done
done
fi
