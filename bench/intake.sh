#!/usr/bin/env bash
# Intake benchmark (DESIGN §10, issue 13): every inbound row of the performance table in one run,
# on loopback, against a minimal actix handler that parses the same body (the floor) and against
# adnanh/webhook (the peer, Debian package `webhook`, bench/peer.sh).
#
#   bench/intake.sh [seconds=15] [connections=64] [backends=sqlite | all | conditions]
#
# Rows, per backend, each on a fresh database:
#   no-match intake  v3 intake + X-Api-Key, a payload condition that does not match (no
#                    execution), engine idle            vs the peer's rule that does not match
#   no-match, dry    the same requests with X-Trigger-Dry-Run: true: every check, condition and
#                    the answer, nothing stored. What no-match costs beyond it is the store's
#   matched intake   the same trigger without the condition: each event queues a one-step
#                    `Wait 0s` pipeline                 vs the peer answering its /bin/true hook
#   status           GET triggerExecutionDetails of the newest matched event, while the engine
#                    drains the matched round's backlog
#   status settled   the same for a no-match event, settled when stored (engine idle)
#   p99 at half      matched intake at a fixed rate of half the matched peak, open model with
#                    coordinated omission corrected (oha, bench/p99.sh), on a fresh database
#   matched, held    matched intake held for BENCH_SUSTAIN seconds (default 60; 0 leaves the row
#                    out) on a fresh database, with the executions the engine ended per second
#                    meanwhile and how many it left queued (the warm-up's included): the
#                    issue's "sustained for 60 s"
#   memory           resident memory of the node: idle once started, its peak over the rows
#                    above (VmHWM) and the p99 run, and idle again: 11 s after the engine has
#                    run the matched backlog (serve hands freed memory back every 10 s)
#   store: no-match  the ceiling of the no-match and matched rows on SQLite: the store alone
#   store: matched   (bench/store_floor.rs) commits copies of a no-match (matched) event from
#                    CONNS tasks, with no HTTP, no load generator and no engine on the cores.
#                    Intake writes the same rows and does more, so it cannot be faster
# Each triggerd row and the floor also give the server's CPU per request over the measured run
# (`cpu us`: every thread of the process, from /proc/<pid>/stat; the engine's too, for the rows
# it runs during), on PostgreSQL also the database server's (every `postgres` process on the
# machine) and the WAL it wrote per request, the store rows their CPU per event,
# and for the peer, how many /bin/true-like commands it really ran per second (it answers 200 and
# drops most of them); bench/engine.sh compares that with triggerd's Run-step pipelines.
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
# Needs wrk (apt-get install wrk) and, for the peer and the p99 row, webhook (installed with
# apt-get when missing) and oha (see bench/p99.sh; without it the p99 row is left out).
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15}
CONNS=${2:-64}
MODE=${3:-sqlite}
SUSTAIN=${BENCH_SUSTAIN:-60}
[ "$MODE" = all ] && MODE=sqlite,postgres,postgres2
PORTS_OF_NODES=(18080 18083)
RAW_PORT=18081
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
source bench/lib.sh
bench_api
source bench/peer.sh
source bench/p99.sh

cargo build --release --quiet --bin triggerd --example raw_actix --example store_floor
TMP=$(mktemp -d)
RAW_PID=""
cleanup() { kill $RAW_PID 2>/dev/null || true; stop_nodes; drop_databases; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }



# run_nodes NAME SCRIPT PATH [KEY]: wrk on every node at once, the connections split evenly;
# prints NAME with the summed rate, the worst p99, and the nodes' CPU per request over the
# measured run (cpu_us: every thread of every node, the engine's included). With COUNT_ENDS=1,
# also the executions the nodes ended per second over the measured run (ended_per_s) and how
# many were still queued or running at its end (queued_at_end).
run_nodes() {
  local name=$1 script=$2 path=$3 key=${4:-} port per=$((CONNS / ${#PORTS[@]})) before after server_before server_after
  for port in "${PORTS[@]}"; do
    BENCH_API_KEY="$key" wrk -t2 -c"$per" -d3s -s "$script" "http://127.0.0.1:$port$path" >/dev/null &
  done
  wait
  local ended_before="" ended="" queued="" counts=""
  [ -n "${COUNT_ENDS:-}" ] && ended_before=$(sql "SELECT COUNT(*) FROM executions WHERE ended_at IS NOT NULL" || true)
  before=$(cpu_ticks "${NODE_PIDS[@]}")
  server_before=$(server_mark)
  for port in "${PORTS[@]}"; do
    BENCH_API_KEY="$key" wrk -t2 -c"$per" -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$port$path" >"$TMP/wrk-$port" &
  done
  wait
  after=$(cpu_ticks "${NODE_PIDS[@]}")
  server_after=$(server_mark)
  if [ -n "${COUNT_ENDS:-}" ]; then
    ended=$(sql "SELECT COUNT(*) FROM executions WHERE ended_at IS NOT NULL" || true)
    queued=$(sql "SELECT COUNT(*) FROM executions WHERE ended_at IS NULL" || true)
    # A count that failed (a busy database, say) leaves the row without these, not the run.
    if [[ $ended_before =~ ^[0-9]+$ && $ended =~ ^[0-9]+$ && $queued =~ ^[0-9]+$ ]]; then
      counts=" ended_per_s=$(((ended - ended_before) / DURATION)) queued_at_end=$queued"
    else
      echo "could not count the executions for $name" >&2
    fi
  fi
  local line
  line=$(python3 - "$name" "${PORTS[@]/#/$TMP/wrk-}" <<'PY'
import sys
rows = []
for path in sys.argv[2:]:
    line = next(l for l in open(path) if l.startswith("RESULT"))
    rows.append({k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])})
print(f"{sys.argv[1]} rps={sum(r['rps'] for r in rows):.0f} p50_ms={max(r['p50_ms'] for r in rows):.2f} "
      f"p99_ms={max(r['p99_ms'] for r in rows):.2f} requests={sum(r['requests'] for r in rows):.0f} "
      f"errors={sum(r['errors'] for r in rows):.0f}")
PY
)
  echo "$line cpu_us=$(cpu_us_per_req "$before" "$after" "$(requests_of "$line")")$(server_per_req "$server_before" "$server_after" "$(requests_of "$line")")$counts"
}

# floor_row NAME STATUS: store_floor on a fresh copy of the template database.
floor_row() {
  rm -f "$TMP"/floor.db*
  cp "$TMP/floor-template.db" "$TMP/floor.db"
  ./target/release/examples/store_floor "$TMP/floor.db" "$DURATION" "$CONNS" "$2" "$1"
}

# store_floor: the SQLite store's own ceiling for each intake row (bench/store_floor.rs): a
# database made by the server with one event of each kind, then record_event from CONNS tasks
# for DURATION seconds on a fresh copy of it, with nothing else running. Sets STORE_NOM and
# STORE_TRG.
store_floor() {
  local body
  body=$(post_body)
  start_triggerd sqlite
  add_nomatch_trigger
  # The events wrk sends: post.lua's body and headers.
  local post=(curl -sf -o /dev/null -X POST -H "X-Api-Key: $KEY" -H 'Content-Type: application/json'
    -H 'X-GitHub-Event: push' --data-binary "$body")
  "${post[@]}" "$URL"
  "${post[@]}" "http://127.0.0.1:${PORTS[0]}$NOMATCH_QUERY"
  stop_nodes
  cp "$TMP/bench.db" "$TMP/floor-template.db"   # a clean stop folds the WAL into the file
  STORE_NOM=$(floor_row store_nomatch NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS); echo "$STORE_NOM"
  STORE_TRG=$(floor_row store_matched TARGET_EXECUTION_REQUESTED); echo "$STORE_TRG"
  rm -f "$TMP"/floor*.db*
}

./target/release/examples/raw_actix 127.0.0.1:$RAW_PORT >/dev/null 2>&1 &
RAW_PID=$!
wait_port $RAW_PORT


if [ "$MODE" != conditions ]; then
  echo "== ${DURATION}s per target, $CONNS connections, wrk -t2, on $(nproc) cores"
  RAW=$(run raw_actix "http://127.0.0.1:$RAW_PORT/" "" "" "$RAW_PID")
  echo "$RAW"
  LINES=("$RAW")
  PEER_TRUE=$(peer_true "$DURATION" "$CONNS"); echo "$PEER_TRUE"
  PEER_NOMATCH=$(peer_nomatch "$DURATION" "$CONNS"); echo "$PEER_NOMATCH"
  PEER_RAN=$(peer_ran "$DURATION" "$CONNS"); echo "$PEER_RAN"
  LINES+=("$PEER_TRUE" "$PEER_NOMATCH" "$PEER_RAN")
  for backend in ${MODE//,/ }; do
    if [ "$backend" = sqlite ]; then
      store_floor
      LINES+=("$STORE_NOM" "$STORE_TRG")
    fi
    # Write back what the rows before left dirty (the store's ceiling writes and deletes about
    # a gigabyte): the disk flushes it all before a commit's fsync returns, which would fall on
    # the rows below.
    sync
    start_triggerd "$backend"
    add_nomatch_trigger
    sleep 1
    IDLE=$(rss_of_nodes)
    NOM=$(run_nodes "${backend}_nomatch" bench/post.lua "$NOMATCH_QUERY" "$KEY")
    echo "$NOM"
    # The same requests as dry runs: every check and condition, the answer, nothing stored.
    # What the no-match row costs beyond this is the store's.
    DRY=$(BENCH_DRY_RUN=1 run_nodes "${backend}_nomatch_dry" bench/post.lua "$NOMATCH_QUERY" "$KEY")
    echo "$DRY"
    # A no-match event is settled the moment it is stored: its status never changes again.
    SETTLED=$(curl -s -H "X-Api-Key: $ROOT" "$API$P/webhookevents?limit=1&triggerIdentifier=nomatch" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["content"][0]["eventId"])')
    SET=$(run_nodes "${backend}_status_settled" bench/get.lua "/webhook/triggerExecutionDetails/$SETTLED?accountIdentifier=bench")
    echo "$SET"
    TRG=$(run_nodes "${backend}_v3_intake" bench/post.lua "$QUERY" "$KEY")
    echo "$TRG"
    EVENT=$(curl -s -H "X-Api-Key: $ROOT" "$API$P/webhookevents?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["content"][0]["eventId"])')
    STS=$(run_nodes "${backend}_status" bench/get.lua "/webhook/triggerExecutionDetails/$EVENT?accountIdentifier=bench")
    echo "$STS"
    PEAK=$(rss_of_nodes peak_rss)
    AFTER=$(rss_of_nodes)
    # Idle again: the engine has run the matched round's backlog (at most 120 s), and serve
    # has handed freed memory back to the system since (every 10 s, src/memory.rs).
    wait_for_executions 120
    sleep 11
    SETTLED_RSS=$(rss_of_nodes)
    MEM="${backend}_memory idle_mib=$IDLE peak_mib=$PEAK after_mib=$AFTER idle_after_mib=$SETTLED_RSS"
    echo "$MEM"
    LINES+=("$NOM" "$DRY" "$SET" "$TRG" "$STS" "$MEM")
    if command -v oha >/dev/null; then
      # Half the matched peak, on a fresh database: not behind the peak's backlog.
      start_triggerd "$backend"
      HALF=$(python3 -c 'import sys; print(int(float(sys.argv[1].split("rps=")[1].split()[0]) / 2))' "$TRG")
      P99="$(p99_at "$HALF" "$URL" "$KEY" "$DURATION" "${backend}_p99_half" "$CONNS") peak_mib=$(rss_of_nodes peak_rss)"
      echo "$P99"
      LINES+=("$P99")
    fi
    if [ "$SUSTAIN" -gt 0 ]; then
      # Matched intake held for SUSTAIN seconds on a fresh database, with the executions the
      # engine ended meanwhile: intake that outruns its engine only grows a backlog.
      start_triggerd "$backend"
      SUS=$(DURATION=$SUSTAIN COUNT_ENDS=1 run_nodes "${backend}_sustained" bench/post.lua "$QUERY" "$KEY")
      echo "$SUS"
      LINES+=("$SUS")
    fi
    stop_nodes
  done
  python3 - "${LINES[@]}" <<'PY'
import sys
def parse(line):
    name, *kvs = line.split()
    return name, {k: float(v) for k, v in (kv.split("=") for kv in kvs if "=" in kv)}
rows = dict(parse(l) for l in sys.argv[1:])
raw = rows["raw_actix"]["rps"]
peer_true, peer_nomatch, peer_ran = rows["webhook_true"], rows["webhook_nomatch"], rows["webhook_ran"]
raw_cpu = rows["raw_actix"].get("cpu_us")
print(f"floor (raw actix): {raw:.0f}/s" + (f", {raw_cpu:.1f} us of CPU per request" if raw_cpu else "")
      + f"; adnanh/webhook: /bin/true hook answered {peer_true['rps']:.0f}/s, "
      f"no-match {peer_nomatch['rps']:.0f}/s, commands really run {peer_ran['ran_per_s']:.0f}/s "
      f"({peer_ran['never_ran']:.0%} of its 200s never ran)")
print(f"{'backend':<10} {'row':<16} {'rate/s':>8} {'x floor':>8} {'x peer':>7} {'p99 ms':>7} {'cpu us':>7}  target")
for name in [n[:-len("_v3_intake")] for n in rows if n.endswith("_v3_intake")]:
    for row, key, peer, target in (
        ("no-match", f"{name}_nomatch", peer_nomatch, ">= 0.40x floor, >= 1x peer"),
        ("no-match, dry", f"{name}_nomatch_dry", None, "the row above without the store: X-Trigger-Dry-Run"),
        ("matched", f"{name}_v3_intake", peer_true, ">= 0.25x floor, >= 2x peer"),
        ("status", f"{name}_status", None, ">= 0.60x floor"),
        ("status settled", f"{name}_status_settled", None, ">= 0.60x floor"),
    ):
        r = rows[key]
        vs = f"{r['rps'] / peer['rps']:>7.2f}" if peer else f"{'':>7}"
        # PostgreSQL: the database server's CPU and the WAL it wrote, per request.
        server = (f" (database server: {r['pg_cpu_us']:.1f} us of CPU, {r['wal_bytes']:.0f} B of WAL)"
                  if "pg_cpu_us" in r else "")
        print(f"{name:<10} {row:<16} {r['rps']:>8.0f} {r['rps'] / raw:>8.2f} {vs} {r['p99_ms']:>7.2f} "
              f"{r['cpu_us']:>7.1f}  {target}{server}")
    if name == "sqlite" and "store_nomatch" in rows:
        for row, key, intake in (("store: no-match", "store_nomatch", f"{name}_nomatch"),
                                 ("store: matched", "store_matched", f"{name}_v3_intake")):
            r = rows[key]
            print(f"{name:<10} {row:<16} {r['rps']:>8.0f} {r['rps'] / raw:>8.2f} {'':>7} {'':>7} "
                  f"{r['cpu_us_per_event']:>7.1f}  ceiling of the {intake} row: the store alone")
    if f"{name}_sustained" in rows:
        r = rows[f"{name}_sustained"]
        print(f"{name:<10} {'matched, held':<16} {r['rps']:>8.0f} {r['rps'] / raw:>8.2f} {r['rps'] / peer_true['rps']:>7.2f} "
              f"{r['p99_ms']:>7.2f} {r['cpu_us']:>7.1f}  >= 0.25x floor, >= 2x peer, held: the engine ending "
              f"as many as came; it ended {r.get('ended_per_s', float('nan')):.0f}/s meanwhile, "
              f"{r.get('queued_at_end', float('nan')):.0f} left queued")
    if f"{name}_p99_half" in rows:
        r = rows[f"{name}_p99_half"]
        print(f"{name:<10} {'p99 at half':<16} {r['rps']:>8.0f} {'':>8} {'':>7} {r['p99_ms']:>7.2f} {'':>7}  <= 10 ms "
              f"(the cores {r['cpu_busy']:.0f}% busy meanwhile, oha included)")
    m = rows[f"{name}_memory"]
    peak = max(m["peak_mib"], rows.get(f"{name}_p99_half", {}).get("peak_mib", 0))
    print(f"{name:<10} {'memory (MiB)':<16} idle {m['idle_mib']:.1f} at start, {m['idle_after_mib']:.1f} once the "
          f"loads' work is done ({m['after_mib']:.1f} right after them); peak {peak:.1f}  idle <= 30, peak <= 200")
if "sqlite_v3_intake" in rows:
    base = rows["sqlite_v3_intake"]["rps"]
    for name in ("postgres", "postgres2"):
        if f"{name}_v3_intake" in rows:
            print(f"{name} intake / sqlite intake = {rows[f'{name}_v3_intake']['rps'] / base:.2f} (target for postgres >= 0.50)")
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
