#!/usr/bin/env bash
# Intake benchmark (DESIGN §10): v3 intake with X-Api-Key against a minimal actix handler that
# parses the same body, measured in the same run, on loopback. Prints both rates, p99s and the
# ratios (target >= 0.5 for intake, >= 0.6 for status reads).
#
#   bench/intake.sh [seconds=15] [connections=64] [backends=sqlite | all | conditions]
#
# backends: a comma-separated list of sqlite, postgres (one node) and postgres2 (two nodes on one
# PostgreSQL database, the load split evenly across them: one wrk per node), or `all` for the
# three, measured side by side in one run, each on a fresh database. PostgreSQL must run at
# 127.0.0.1:5432 with trust auth (each run creates its own database and drops it).
#
# With `conditions`, it measures what condition evaluation adds (SQLite): the same 10 KiB
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
MODE=${3:-sqlite}
[ "$MODE" = all ] && MODE=sqlite,postgres,postgres2
PORTS_OF_NODES=(18080 18083)
RAW_PORT=18081
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
source bench/lib.sh

cargo build --release --quiet --bin triggerd --example raw_actix
TMP=$(mktemp -d)
RAW_PID=""
cleanup() { kill $RAW_PID 2>/dev/null || true; stop_nodes; drop_databases; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
ROOT="pat._root.$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n').$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
API=http://127.0.0.1:${PORTS_OF_NODES[0]}/api/v1
P=/accounts/bench/orgs/default/projects/bench
call() { curl -sf -X "$1" -H "X-Api-Key: $ROOT" -H "content-type: ${4:-application/json}" --data-binary "$3" "$API$2"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['data']['$1'])"; }

# Starts triggerd (one or two nodes, by backend) on a fresh database with account/project/
# pipeline "bench"/"hello" and an executor key; sets PORTS, KEY and QUERY (the demo trigger's
# intake path with its query).
start_triggerd() { # [backend=sqlite]
  local backend=${1:-sqlite}
  stop_nodes
  new_database "$backend"
  PORTS=("${PORTS_OF_NODES[@]:0:$(node_count "$backend")}")
  start_nodes "${PORTS[@]}"
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
  QUERY="/webhook/custom/$token/v3?accountIdentifier=bench&orgIdentifier=default&projectIdentifier=bench&pipelineIdentifier=hello&triggerIdentifier=hello_trigger"
  URL="http://127.0.0.1:${PORTS[0]}$QUERY"
}

run() { # name url key [body file]
  BENCH_BODY_FILE="${4:-}" BENCH_API_KEY="$3" wrk -t2 -c"$CONNS" -d3s -s bench/post.lua "$2" >/dev/null   # warm-up
  local out; out=$(BENCH_BODY_FILE="${4:-}" BENCH_API_KEY="$3" wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s bench/post.lua "$2")
  echo "$out" | grep -E 'Non-2xx' >&2 || true
  echo "$1 $(echo "$out" | grep '^RESULT' | sed 's/^RESULT //')"
}

# run_nodes NAME SCRIPT PATH [KEY]: wrk on every node at once, the connections split evenly;
# prints NAME with the summed rate and the worst p99.
run_nodes() {
  local name=$1 script=$2 path=$3 key=${4:-} port per=$((CONNS / ${#PORTS[@]}))
  for port in "${PORTS[@]}"; do
    BENCH_API_KEY="$key" wrk -t2 -c"$per" -d3s -s "$script" "http://127.0.0.1:$port$path" >/dev/null &
  done
  wait
  for port in "${PORTS[@]}"; do
    BENCH_API_KEY="$key" wrk -t2 -c"$per" -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$port$path" >"$TMP/wrk-$port" &
  done
  wait
  python3 - "$name" "${PORTS[@]/#/$TMP/wrk-}" <<'PY'
import sys
rows = []
for path in sys.argv[2:]:
    line = next(l for l in open(path) if l.startswith("RESULT"))
    rows.append({k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])})
print(f"{sys.argv[1]} rps={sum(r['rps'] for r in rows):.0f} p50_ms={max(r['p50_ms'] for r in rows):.2f} "
      f"p99_ms={max(r['p99_ms'] for r in rows):.2f} requests={sum(r['requests'] for r in rows):.0f} "
      f"errors={sum(r['errors'] for r in rows):.0f}")
PY
}

./target/release/examples/raw_actix 127.0.0.1:$RAW_PORT >/dev/null 2>&1 &
RAW_PID=$!
wait_port $RAW_PORT

if [ "$MODE" != conditions ]; then
  echo "== ${DURATION}s per target, $CONNS connections, wrk -t2, on $(nproc) cores"
  RAW=$(run raw_actix "http://127.0.0.1:$RAW_PORT/" "")
  echo "$RAW"
  LINES=("$RAW")
  for backend in ${MODE//,/ }; do
    start_triggerd "$backend"
    TRG=$(run_nodes "${backend}_v3_intake" bench/post.lua "$QUERY" "$KEY")
    echo "$TRG"
    EVENT=$(curl -s -H "X-Api-Key: $ROOT" "$API$P/webhookevents?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["content"][0]["eventId"])')
    STS=$(run_nodes "${backend}_status" bench/get.lua "/webhook/triggerExecutionDetails/$EVENT?accountIdentifier=bench")
    echo "$STS"
    MEM=""
    for pid in "${NODE_PIDS[@]}"; do MEM="$MEM $(rss "$pid")"; done
    echo "${backend}: RSS after the run (MiB):$MEM"
    LINES+=("$TRG" "$STS")
    stop_nodes
  done
  python3 - "${LINES[@]}" <<'PY'
import sys
def parse(line):
    name, *kvs = line.split()
    return name, {k: float(v) for k, v in (kv.split("=") for kv in kvs)}
raw = parse(sys.argv[1])[1]["rps"]
rows = dict(parse(l) for l in sys.argv[2:])
print(f"{'backend':<10} {'intake/s':>9} {'x floor':>8} {'p99 ms':>7} {'status/s':>9} {'x floor':>8}")
for name in [n[:-len("_v3_intake")] for n in rows if n.endswith("_v3_intake")]:
    i, s = rows[f"{name}_v3_intake"], rows[f"{name}_status"]
    print(f"{name:<10} {i['rps']:>9.0f} {i['rps']/raw:>8.2f} {i['p99_ms']:>7.2f} {s['rps']:>9.0f} {s['rps']/raw:>8.2f}")
if "sqlite_v3_intake" in rows:
    base = rows["sqlite_v3_intake"]["rps"]
    for name in ("postgres", "postgres2"):
        if f"{name}_v3_intake" in rows:
            print(f"{name} intake / sqlite intake = {rows[f'{name}_v3_intake']['rps'] / base:.2f} (target for postgres >= 0.50)")
print("targets: intake >= 0.50 x floor, status >= 0.60 x floor (DESIGN §10)")
PY
fi

if [ "$MODE" = conditions ]; then
  BODY=bench/fixtures/payload-10k.json
  echo "== conditions: 10 KiB body, trigger without and with 6 conditions, fresh database per run"
  RESULTS=()
  for round in 1 2 3; do
    start_triggerd sqlite
    PLAIN=$(run plain_10k "$URL" "$KEY" "$BODY"); echo "$PLAIN"
    start_triggerd sqlite
    CTOKEN=$(call PUT $P/pipelines/hello/triggers/conditional @bench/fixtures/conditions-trigger.yaml application/yaml | field customWebhookToken)
    CURL="http://127.0.0.1:${PORTS[0]}/webhook/custom/$CTOKEN/v3?accountIdentifier=bench&orgIdentifier=default&projectIdentifier=bench"
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
