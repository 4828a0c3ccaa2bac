#!/usr/bin/env bash
# Latency at a fixed request rate (open model): "p99 of matched intake at half its peak rate".
#
#   bench/p99.sh [seconds=10] [rate=half]   # standalone: the raw actix example on 127.0.0.1:18094,
#                                           # its peak (wrk -t2 -c64, post.lua), then p99_at
#   source bench/p99.sh                     # from another benchmark, then:
#     p99_at RATE URL KEY SECONDS [NAME=p99] [CONNS=64]
#     p99_at_half URL KEY SECONDS [NAME=p99] [CONNS=64]   # peak with wrk first, then half of it
#   P99_WARMUP=seconds (default 2) of the same load before the measured run, not counted.
#   P99_SETTLE=seconds (default 2) to wait between the peak and the fixed-rate run: a server that
#   works after answering (triggerd's engine, webhook's commands) is still draining the peak's
#   backlog, which would otherwise land in the p99.
#
# p99_at POSTs the body of bench/post.lua (or the file BENCH_BODY_FILE) with Content-Type:
# application/json, X-GitHub-Event: push and X-Api-Key: KEY (left out when KEY is empty) at RATE
# requests/s for SECONDS, and prints
#   NAME rate=.. rps=.. p50_ms=.. p99_ms=.. errors=.. cpu_busy=..
# errors = transport errors + non-2xx answers. Requests still in flight at the deadline are
# waited for (-w), not counted as errors. cpu_busy is how busy the machine's cores were over the
# run, in percent of all of them (/proc/stat; oha's own share included): a p99 taken on cores
# that are nearly full measures their run queues as much as the server.
#
# Tool: oha (crates.io), because it is the only candidate here that is open-model with coordinated
# omission corrected: `-q` is the total rate for all connections, and `--latency-correction`
# measures each request from the moment it was due to be sent, not from when a free connection
# sent it, so a server stall shows up in the p99 instead of silently lowering the rate. Debian's
# hey (0.1.4) limits each worker (-q is per worker) and times from the actual send, so a stall is
# hidden (coordinated omission); wrk has no rate option (wrk2, which has one, is not in Debian),
# and a Lua `delay()` per connection is the same closed loop. oha 1.16 does not build without a
# TLS feature; `native-tls` uses the system OpenSSL (libssl-dev) instead of compiling aws-lc:
#   nice -n 19 cargo install oha --locked --no-default-features --features native-tls  (~8 min on 2 cores)
# P99_INSTALL=1 lets the script run that itself when oha is missing. Needs wrk for the peak, and
# python3. Loopback only; stops by itself; the standalone run kills its server at exit.

P99_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

p99_require() {
  command -v oha >/dev/null && return 0
  local cmd=(nice -n 19 cargo install oha --locked --no-default-features --features native-tls)
  if [ "${P99_INSTALL:-}" = 1 ]; then
    echo "installing oha: ${cmd[*]}" >&2
    "${cmd[@]}" >&2
  else
    echo "oha is required: ${cmd[*]} (or P99_INSTALL=1)" >&2
    return 1
  fi
}

# post_body: the body of bench/post.lua's requests, as wrk sends it.
post_body() {
  local body
  body=$(sed -n "s/^wrk\.body = '\(.*\)'\$/\1/p" "$P99_DIR/post.lua")
  [ -n "$body" ] || { echo "no wrk.body line in $P99_DIR/post.lua" >&2; return 1; }
  printf '%s' "$body"
}

# p99_at RATE URL KEY SECONDS [NAME] [CONNS]
p99_at() (
  set -euo pipefail
  local rate=$1 url=$2 key=$3 secs=$4 name=${5:-p99} conns=${6:-64}
  p99_require
  local body=() headers=(-H 'X-GitHub-Event: push')
  if [ -n "${BENCH_BODY_FILE:-}" ]; then
    body=(-D "$BENCH_BODY_FILE")
  else
    body=(-d "$(post_body)")
  fi
  [ -n "$key" ] && headers+=(-H "X-Api-Key: $key")
  P99_OUT=$(mktemp)   # not local: the EXIT trap runs after the function's locals are gone
  trap 'rm -f "$P99_OUT"' EXIT
  local cpu_before cpu_after run=(oha --no-tui --output-format json -w -q "$rate" --latency-correction
    -c "$conns" -m POST -T application/json "${headers[@]}" "${body[@]}" "$url")
  # Warm-up at the same rate, not counted: the run's first tenth of a second opens every
  # connection at once on a cold server, which alone held 0.5-0.8 % of a 10 s run's requests
  # over 10 ms (the rows measured with wrk get a warm-up too).
  "${run[@]}" -z "${P99_WARMUP:-2}s" >/dev/null
  cpu_before=$(p99_cpu)
  "${run[@]}" -z "${secs}s" >"$P99_OUT"
  cpu_after=$(p99_cpu)
  python3 - "$name" "$rate" "$P99_OUT" "$cpu_before" "$cpu_after" <<'PY'
import json, sys
name, rate, path, before, after = sys.argv[1:]
(busy0, idle0), (busy1, idle1) = (map(int, x.split()) for x in (before, after))
cpu_busy = 100 * (busy1 - busy0) / max(1, (busy1 - busy0) + (idle1 - idle0))
d = json.load(open(path))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution") or {}
failed = d.get("errorDistribution") or {}
errors = sum(n for c, n in codes.items() if not c.startswith("2")) + sum(failed.values())
if failed:
    print(f"{name}: errors {failed}", file=sys.stderr)
ms = lambda v: (v or 0) * 1000
print(f"{name} rate={rate} rps={s.get('requestsPerSec') or 0:.0f} p50_ms={ms(p.get('p50')):.2f} "
      f"p99_ms={ms(p.get('p99')):.2f} errors={errors} cpu_busy={cpu_busy:.0f}")
PY
)

# p99_cpu: the machine's busy and idle clock ticks so far, summed over its cores (/proc/stat:
# user, nice, system, irq, softirq and steal; idle and iowait).
p99_cpu() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }

# p99_peak URL KEY SECONDS [CONNS]: the closed-loop peak (wrk -t2, post.lua), in requests/s.
p99_peak() (
  set -euo pipefail
  local url=$1 key=$2 secs=$3 conns=${4:-64}
  BENCH_API_KEY="$key" wrk -t2 -c"$conns" -d"${secs}s" -s "$P99_DIR/post.lua" "$url" \
    | sed -n 's/^RESULT rps=\([0-9]*\).*/\1/p'
)

# p99_at_half URL KEY SECONDS [NAME] [CONNS]: the peak over SECONDS, then p99_at half of it.
p99_at_half() (
  set -euo pipefail
  local url=$1 key=$2 secs=$3 name=${4:-p99} conns=${5:-64} peak
  peak=$(p99_peak "$url" "$key" "$secs" "$conns")
  echo "$name: peak ${peak} requests/s (wrk -t2 -c$conns, ${secs}s)" >&2
  sleep "${P99_SETTLE:-2}"
  p99_at $((peak / 2)) "$url" "$key" "$secs" "$name" "$conns"
)

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  cd "$P99_DIR/.."
  SECS=${1:-10}
  RATE=${2:-half}
  PORT=18094
  command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
  p99_require
  RAW_BIN=${P99_RAW_BIN:-./target/release/examples/raw_actix}
  [ -x "$RAW_BIN" ] || { echo "$RAW_BIN is missing: cargo build --release --example raw_actix" >&2; exit 1; }
  RAW_PID=""
  trap '[ -n "$RAW_PID" ] && kill "$RAW_PID" 2>/dev/null; wait 2>/dev/null || true' EXIT
  "$RAW_BIN" 127.0.0.1:$PORT >/dev/null 2>&1 &
  RAW_PID=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
  start=$SECONDS
  if [ "$RATE" = half ]; then
    p99_at_half "http://127.0.0.1:$PORT/" "" "$SECS" raw_actix_half
  else
    p99_at "$RATE" "http://127.0.0.1:$PORT/" "" "$SECS" raw_actix
  fi
  echo "p99.sh took $((SECONDS - start)) s"
fi
