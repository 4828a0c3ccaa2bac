#!/usr/bin/env bash
# Intake benchmark (DESIGN §10): v3 intake with X-Api-Key against a minimal actix handler that
# parses the same body, measured in the same run, on loopback. Prints both rates, p99s and the
# ratio (target >= 0.5).
#
#   bench/intake.sh [seconds=15] [connections=64] [conditions]
#
# With `conditions`, it also measures what condition evaluation adds (issue 3): the same 10 KiB
# push payload (bench/fixtures/payload-10k.json) to a trigger without conditions and to one with
# five payload/header conditions and a JEXL condition (bench/fixtures/conditions-trigger.yaml).
# Each of those runs gets a fresh server and database, alternating over 3 rounds, because a
# database grown by the previous run (10 KiB per event) would otherwise decide the result.
#
# Needs wrk (apt-get install wrk). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15}
CONNS=${2:-64}
MODE=${3:-}
TRIGGERD_PORT=18080
RAW_PORT=18081
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }

cargo build --release --quiet --bin triggerd --example raw_actix
TMP=$(mktemp -d)
RAW_PID=""
TRIGGERD_PID=""
cleanup() { kill $RAW_PID $TRIGGERD_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
ROOT="pat._root.$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n').$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
API=http://127.0.0.1:$TRIGGERD_PORT/api/v1
P=/accounts/bench/orgs/default/projects/bench
call() { curl -sf -X "$1" -H "X-Api-Key: $ROOT" -H "content-type: ${4:-application/json}" --data-binary "$3" "$API$2"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['data']['$1'])"; }

# Starts triggerd on a fresh database with account/project/pipeline "bench"/"hello" and an
# executor key; sets KEY and URL (the plain demo trigger's intake URL).
start_triggerd() {
  stop_triggerd
  rm -f "$TMP"/bench.db*
  TRIGGERD_ROOT_KEY="$ROOT" TRIGGERD_LOG__LEVEL=warn \
    ./target/release/triggerd serve --listen 127.0.0.1:$TRIGGERD_PORT --database-url "sqlite://$TMP/bench.db" >"$TMP/triggerd.log" 2>&1 &
  TRIGGERD_PID=$!
  wait_port $TRIGGERD_PORT
  call PUT /accounts/bench '{"name":"bench"}' >/dev/null
  call PUT $P '{"name":"bench"}' >/dev/null
  # A one-step Wait 0s pipeline: every accepted event is queued and run by the engine, without
  # a child process per event competing with intake for the 2 cores.
  printf 'pipeline:\n  name: Hello\n  identifier: hello\n  stages:\n    - stage:\n        identifier: s\n        steps:\n          - step: {identifier: w, type: Wait, spec: {duration: 0s}}\n' \
    | call PUT $P/pipelines/hello @- application/yaml >/dev/null
  local token
  token=$(sed 's/projectIdentifier: demo/projectIdentifier: bench/' examples/triggers/hello.yaml \
    | call PUT $P/pipelines/hello/triggers/hello_trigger @- application/yaml | field customWebhookToken)
  KEY=$(call POST /accounts/bench/apikeys '{"name":"bench","role":"executor"}' | field key)
  URL="http://127.0.0.1:$TRIGGERD_PORT/webhook/custom/$token/v3?accountIdentifier=bench&orgIdentifier=default&projectIdentifier=bench&pipelineIdentifier=hello&triggerIdentifier=hello_trigger"
}
stop_triggerd() { if [ -n "$TRIGGERD_PID" ]; then kill "$TRIGGERD_PID"; wait "$TRIGGERD_PID" 2>/dev/null || true; TRIGGERD_PID=""; fi; }

run() { # name url key [body file]
  BENCH_BODY_FILE="${4:-}" BENCH_API_KEY="$3" wrk -t2 -c"$CONNS" -d3s -s bench/post.lua "$2" >/dev/null   # warm-up
  local out; out=$(BENCH_BODY_FILE="${4:-}" BENCH_API_KEY="$3" wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s bench/post.lua "$2")
  echo "$out" | grep -E 'Non-2xx' >&2 || true
  echo "$1 $(echo "$out" | grep '^RESULT' | sed 's/^RESULT //')"
}

./target/release/examples/raw_actix 127.0.0.1:$RAW_PORT >/dev/null 2>&1 &
RAW_PID=$!
wait_port $RAW_PORT
start_triggerd

echo "== ${DURATION}s per target, $CONNS connections, wrk -t2, on $(nproc) cores"
RAW=$(run raw_actix "http://127.0.0.1:$RAW_PORT/" "")
echo "$RAW"
TRG=$(run triggerd_v3_intake "$URL" "$KEY")
echo "$TRG"
EVENT=$(curl -s -H "X-Api-Key: $ROOT" "$API$P/webhookevents?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["content"][0]["eventId"])')
STATUS_URL="http://127.0.0.1:$TRIGGERD_PORT/webhook/triggerExecutionDetails/$EVENT?accountIdentifier=bench"
wrk -t2 -c"$CONNS" -d3s "$STATUS_URL" >/dev/null
STS=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s bench/get.lua "$STATUS_URL" | grep '^RESULT' | sed 's/^RESULT /triggerd_status /')
echo "$STS"
python3 - "$RAW" "$TRG" "$STS" <<'PY'
import sys
def rps(line): return float(dict(kv.split("=") for kv in line.split()[1:])["rps"])
raw, trg, sts = rps(sys.argv[1]), rps(sys.argv[2]), rps(sys.argv[3])
print(f"ratio intake/raw = {trg/raw:.2f} (target >= 0.50)")
print(f"ratio status/raw = {sts/raw:.2f} (target >= 0.60)")
PY
echo "RSS of triggerd after the run: $(ps -o rss= -p "$TRIGGERD_PID" | awk '{printf "%.1f MiB", $1/1024}')"

if [ "$MODE" = conditions ]; then
  BODY=bench/fixtures/payload-10k.json
  echo "== conditions: 10 KiB body, trigger without and with 6 conditions, fresh database per run"
  RESULTS=()
  for round in 1 2 3; do
    start_triggerd
    PLAIN=$(run plain_10k "$URL" "$KEY" "$BODY"); echo "$PLAIN"
    start_triggerd
    CTOKEN=$(call PUT $P/pipelines/hello/triggers/conditional @bench/fixtures/conditions-trigger.yaml application/yaml | field customWebhookToken)
    CURL="http://127.0.0.1:$TRIGGERD_PORT/webhook/custom/$CTOKEN/v3?accountIdentifier=bench&orgIdentifier=default&projectIdentifier=bench"
    # The payload must really meet every condition, or this measures the wrong thing.
    curl -s -o /dev/null -D - -X POST -H "X-Api-Key: $KEY" -H 'X-GitHub-Event: push' --data-binary @$BODY "$CURL" \
      | grep -qi 'x-trigger-status: TARGET_EXECUTION_REQUESTED' || { echo "the benchmark payload did not match" >&2; exit 1; }
    COND=$(run conditional_10k "$CURL" "$KEY" "$BODY"); echo "$COND"
    RESULTS+=("$PLAIN" "$COND")
  done
  python3 - "${RESULTS[@]}" <<'PY'
import sys
def f(line): return {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
rows = [f(l) for l in sys.argv[1:]]
def mean(rs, k): return sum(r[k] for r in rs) / len(rs)
p, c = rows[0::2], rows[1::2]
for k in ("rps", "p50_ms", "p99_ms"):
    print(f"{k}: without {mean(p, k):.2f}, with {mean(c, k):.2f} ({mean(c, k)/mean(p, k)-1:+.1%})")
print("target: conditions add at most 5% to intake latency")
PY
fi
