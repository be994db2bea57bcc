#!/usr/bin/env bash
# Reproduces the load numbers of BENCHMARKS.md on one machine: builds release binaries, starts
# the servers on loopback, runs waotp-load against them and prints every report.
# Usage: benches/load.sh [runs]   (default 3 runs of each scenario; medians go in BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SECRET=bench-secret
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet --features load --bin waotp --bin waotp-bare --bin waotp-load
bin=target/release

wait_ready() { until curl -sf "$1" >/dev/null; do sleep 0.05; done; }

# The COD scenario drives the API with one key far beyond the default per-key rate limit.
start_waotp() { # data dir, port, extra env...
  local data=$1 port=$2; shift 2
  env WAOTP_DATA_DIR="$data" WAOTP_APP_SECRET=$SECRET WAOTP_API_KEYS=bench-key WAOTP_LOG=warn \
    WAOTP_LISTEN=127.0.0.1:$port WAOTP_API_RATE=1000000 WAOTP_API_BURST=1000000 "$@" $bin/waotp serve >"$work/waotp-$port.log" 2>&1 &
  echo $!
}

echo "### (a) webhook saturation, unique signed POSTs, durable 200 — and (f) the bare handler"
for i in $(seq "$RUNS"); do
  pid=$(start_waotp "$work/sat-$i" 18180)
  WAOTP_APP_SECRET=$SECRET WAOTP_LISTEN=127.0.0.1:18181 $bin/waotp-bare >/dev/null 2>&1 &
  bare=$!
  wait_ready http://127.0.0.1:18180/readyz
  $bin/waotp-load --url http://127.0.0.1:18180/webhook --bare-url http://127.0.0.1:18181/webhook \
    --secret $SECRET --concurrency 64 --duration 10 --warmup 2 --server-pid "$pid" --bare-pid "$bare"
  kill "$pid" "$bare"; wait "$pid" "$bare" 2>/dev/null || true
done

echo "### (b) open loop at fixed rates"
for rate in 500 2000 5000; do
  for i in $(seq "$RUNS"); do
    pid=$(start_waotp "$work/rate-$rate-$i" 18180)
    wait_ready http://127.0.0.1:18180/readyz
    $bin/waotp-load --url http://127.0.0.1:18180/webhook --secret $SECRET --rate "$rate" \
      --duration 10 --warmup 2 --server-pid "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done

echo "### (c) end-to-end COD verifications (API start, code out, code back, callback)"
for i in $(seq "$RUNS"); do
  pid=$(start_waotp "$work/cod-$i" 18182 WAOTP_OTP_SENDS_PER_HOUR=1000000 \
    WAOTP_CALLBACK_URL=http://127.0.0.1:18099/callback)
  wait_ready http://127.0.0.1:18182/readyz
  $bin/waotp-load --scenario cod --base http://127.0.0.1:18182 --api-key bench-key \
    --concurrency 32 --duration 10 --warmup 2 --server-pid "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

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
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work/idle-$n"
done
