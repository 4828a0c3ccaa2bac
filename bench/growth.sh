#!/usr/bin/env bash
# Growth benchmark (issue 13): intake and status on an empty SQLite database, then on the same
# database holding EVENTS webhook events (default 1,000,000), in one run.
#
#   bench/growth.sh [seconds=10] [events=1000000] [connections=64] [rounds=2]
#
# Rows, measured twice (empty, then grown):
#   no-match intake  v3 intake + X-Api-Key, a payload condition that does not match: every
#                    request writes an event row and its index entries, and the engine stays
#                    idle, so the database's size is what changes between the two runs
#   status           GET triggerExecutionDetails of an event that has not been read yet
#                    (`status_cold`, one request per event, so the read reaches the database),
#                    then of the newest event over and over (`status`; settled, so from
#                    memory after the first read)
# The events are added by the server itself, from no-match webhooks sent as fast as it takes
# them (about 40 s for a million here), so the grown database is one intake made, with the same
# schema, indexes and ids. Then the rows run on the empty and the grown database in turn,
# `rounds` times each (triggerd restarted on the other file in between; the empty one starts from its fresh copy
# every round), so that a drift in the VM's speed during the run falls on both alike: this VM's
# rates move by 15-25 % between runs minutes apart, more than the 10 % the target allows.
# Needs wrk and python3. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
EVENTS=${2:-1000000}
CONNS=${3:-64}
ROUNDS=${4:-2}
PORTS_OF_NODES=(18085)
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
# The same build as the other benchmarks': with an example in it, the dev-dependencies' features
# (tokio's) join the binary's, so building the binary alone would rebuild it.
cargo build --release --quiet --bin triggerd --example store_floor
TMP=$(mktemp -d)
source bench/lib.sh
bench_api
cleanup() { stop_nodes; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

# A wrk script that reads the status of a different event on every request, from a file of ids.
cat >"$TMP/cold.lua" <<'LUA'
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/webhook/triggerExecutionDetails/" .. ids[(n % #ids) + 1] .. "?accountIdentifier=bench")
end
LUA
cat bench/get.lua >>"$TMP/cold.lua"

rows() { # LABEL: no-match intake, cold and hot status on the running node
  local label=$1 port=${PORTS[0]} event
  run "${label}_nomatch" "http://127.0.0.1:$port$NOMATCH_QUERY" "$KEY"
  sql "SELECT event_id FROM webhook_events ORDER BY random() LIMIT 200000" >"$TMP/ids"
  echo "${label}_status_cold $(BENCH_IDS="$TMP/ids" wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$TMP/cold.lua" "http://127.0.0.1:$port/" | sed -n 's/^RESULT //p')"
  event=$(sql "SELECT event_id FROM webhook_events ORDER BY created_at DESC LIMIT 1")
  echo "${label}_status $(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s bench/get.lua "http://127.0.0.1:$port/webhook/triggerExecutionDetails/$event?accountIdentifier=bench" | sed -n 's/^RESULT //p')"
  echo "${label}: $(sql 'SELECT count(*) FROM webhook_events') events, database $(du -sm "${DB_URL#sqlite://}" | cut -f1) MiB, RSS $(rss "${NODE_PIDS[0]}") MiB"
}

echo "== growth: ${DURATION}s per row, $CONNS connections, wrk -t2, on $(nproc) cores, $ROUNDS rounds"
start_triggerd sqlite
add_nomatch_trigger
stop_nodes
mv "$TMP/bench.db" "$TMP/empty.db"
rm -f "$TMP"/bench.db-*
cp "$TMP/empty.db" "$TMP/grown.db"

# The grown database gets its events from the server itself: no-match webhooks, as the rows
# below send, until it holds EVENTS of them. Every event is then stored as intake stores it
# (its id leads to its row), not as an upgraded database's.
DB_URL="sqlite://$TMP/grown.db"
start_nodes "${PORTS[@]}"
grow_started=$(date +%s)
GROWN=0
while [ "$GROWN" -lt "$EVENTS" ]; do
  BENCH_API_KEY="$KEY" wrk -t2 -c"$CONNS" -d5s -s bench/post.lua "http://127.0.0.1:${PORTS[0]}$NOMATCH_QUERY" >/dev/null
  before=$GROWN
  GROWN=$(sql 'SELECT count(*) FROM webhook_events')
  # A node that stopped storing would otherwise keep this loop going for ever.
  [ -n "$GROWN" ] && [ "$GROWN" -gt "$before" ] || {
    echo "the grown database stopped growing at ${GROWN:-?} events" >&2; cat "$TMP"/triggerd-*.log >&2; exit 1; }
done
echo "added $GROWN events in $(($(date +%s) - grow_started)) s through intake"
stop_nodes   # a clean stop folds the WAL into the file

: >"$TMP/rows"
for round in $(seq "$ROUNDS"); do
  for label in empty grown; do
    if [ "$label" = empty ]; then
      rm -f "$TMP"/bench.db*
      cp "$TMP/empty.db" "$TMP/bench.db"
      DB_URL="sqlite://$TMP/bench.db"
    else
      DB_URL="sqlite://$TMP/grown.db"
    fi
    # Write back what the phase before left dirty (the last phase's events, the file deleted
    # above), which the disk would flush before this phase's fsyncs return: without it, the
    # phase after the fill or after the grown one measured the write-back too.
    sync
    start_nodes "${PORTS[@]}"
    rows "$label" | tee -a "$TMP/rows"
    stop_nodes
  done
done

python3 - "$GROWN" "$TMP/rows" <<'PY'
import sys
from collections import defaultdict
events = int(sys.argv[1])
rates = defaultdict(list)
for line in open(sys.argv[2]):
    name, *kvs = line.split()
    rates[name] += [float(kv.split("=")[1]) for kv in kvs if kv.startswith("rps=")]
mean = lambda xs: sum(xs) / len(xs)
for row in ("nomatch", "status_cold", "status"):
    e, g = rates[f"empty_{row}"], rates[f"grown_{row}"]
    each = ", ".join(f"{b / a - 1:+.1%}" for a, b in zip(e, g))
    print(f"{row:<12} empty {mean(e):>8.0f}/s, with {events:,} events {mean(g):>8.0f}/s "
          f"({mean(g) / mean(e) - 1:+.1%}; round by round {each}; target: within 10%)")
PY
