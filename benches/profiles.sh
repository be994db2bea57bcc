#!/usr/bin/env bash
# Release binaries built with different [profile.release] settings, run alternately on the same
# machine and driven by one load generator: webhook saturation with the bare handler (a, f) and
# COD verifications end to end (c), as in benches/load.sh. See BENCHMARKS.md, "Release profile".
# Usage: LOAD=path/to/waotp-load benches/profiles.sh ROUNDS DIR...   (each DIR holds waotp and
# waotp-bare built with one profile)
set -uo pipefail
cd "$(dirname "$0")/.."   # the bundled flows
ROUNDS=$1; shift
SECRET=bench-secret
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
wait_ready() { until curl -sf "$1" >/dev/null; do sleep 0.05; done; }
start_waotp() { # bin, data dir, port, extra env...
  local bin=$1 data=$2 port=$3; shift 3
  env WAOTP_DATA_DIR="$data" WAOTP_APP_SECRET=$SECRET WAOTP_API_KEYS=bench-key WAOTP_LOG=warn \
    WAOTP_LISTEN=127.0.0.1:$port WAOTP_API_RATE=1000000 WAOTP_API_BURST=1000000 "$@" \
    "$bin/waotp" serve >"$work/waotp-$port.log" 2>&1 &
  echo $!
}
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    echo "### round $round $bin (a) saturation + (f) bare"
    pid=$(start_waotp "$bin" "$work/sat-$round-$(basename "$bin")" 18180)
    WAOTP_APP_SECRET=$SECRET WAOTP_LISTEN=127.0.0.1:18181 "$bin/waotp-bare" >/dev/null 2>&1 &
    bare=$!
    wait_ready http://127.0.0.1:18180/readyz
    "$LOAD" --url http://127.0.0.1:18180/webhook --bare-url http://127.0.0.1:18181/webhook \
      --secret $SECRET --concurrency 64 --duration 8 --warmup 2 --server-pid "$pid" --bare-pid "$bare"
    kill "$pid" "$bare"; wait "$pid" "$bare" 2>/dev/null
    echo "### round $round $bin (c) COD"
    pid=$(start_waotp "$bin" "$work/cod-$round-$(basename "$bin")" 18182 \
      WAOTP_OTP_SENDS_PER_HOUR=1000000 WAOTP_CALLBACK_URL=http://127.0.0.1:18099/callback)
    wait_ready http://127.0.0.1:18182/readyz
    "$LOAD" --scenario cod --base http://127.0.0.1:18182 --api-key bench-key \
      --concurrency 32 --duration 8 --warmup 2 --server-pid "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null
  done
done
