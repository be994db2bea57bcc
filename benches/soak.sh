#!/usr/bin/env bash
# The soak of BENCHMARKS.md: the webhook mix at a fixed rate for a long while, sampling the
# server's resident memory every 30 s. Usage: benches/soak.sh [rate] [seconds]
# (default 2000/s for 600 s).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-2000}
SECONDS_TOTAL=${2:-600}
SECRET=bench-secret
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet --features load --bin waotp --bin waotp-load
bin=target/release

WAOTP_DATA_DIR="$work/data" WAOTP_APP_SECRET=$SECRET WAOTP_API_KEYS=bench-key WAOTP_LOG=warn \
  WAOTP_LISTEN=127.0.0.1:18186 $bin/waotp serve >"$work/waotp.log" 2>&1 &
pid=$!
until curl -sf http://127.0.0.1:18186/readyz >/dev/null; do sleep 0.05; done

(
  t=0
  while kill -0 "$pid" 2>/dev/null; do
    echo "t=${t}s $(grep VmRSS "/proc/$pid/status" | tr -s ' \t' ' ')"
    sleep 30
    t=$((t + 30))
  done
) &
sampler=$!

$bin/waotp-load --url http://127.0.0.1:18186/webhook --secret $SECRET --rate "$RATE" \
  --duration "$SECONDS_TOTAL" --warmup 0 --server-pid "$pid"
kill "$sampler" 2>/dev/null || true
echo "database and journal: $(du -sh "$work/data" | cut -f1)"
kill "$pid"
wait "$pid" 2>/dev/null || true
