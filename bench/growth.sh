#!/usr/bin/env bash
# Growth benchmark (issue 13): intake and status on an empty SQLite database, then on the same
# database holding EVENTS more webhook events (default 1,000,000), in one run.
#
#   bench/growth.sh [seconds=10] [events=1000000] [connections=64]
#
# Rows, measured twice (empty, then grown):
#   no-match intake  v3 intake + X-Api-Key, a payload condition that does not match: every
#                    request writes an event row and its index entries, and the engine stays
#                    idle, so the database's size is what changes between the two runs
#   status           GET triggerExecutionDetails of an event that has not been read yet
#                    (`status_cold`, one request per event, so the read reaches the database),
#                    then of the newest event over and over (`status`; settled, so from
#                    memory after the first read)
# Between the runs triggerd is stopped and the events are added with Python's sqlite3: copies of
# an event the server stored, each with a fresh random id (12 random bytes, as the server makes
# them) and its own time, in one project, through the server's own schema and indexes. Then
# triggerd starts again on the grown file. Needs wrk and python3. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
EVENTS=${2:-1000000}
CONNS=${3:-64}
PORTS_OF_NODES=(18085)
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet --bin triggerd
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
  echo "${label}: $(sql 'SELECT count(*) FROM webhook_events') events, database $(du -sm "$TMP"/bench.db | cut -f1) MiB, RSS $(rss "${NODE_PIDS[0]}") MiB"
}

echo "== growth: ${DURATION}s per row, $CONNS connections, wrk -t2, on $(nproc) cores"
start_triggerd sqlite
add_nomatch_trigger
EMPTY=$(rows empty); echo "$EMPTY"
stop_nodes

python3 - "$TMP/bench.db" "$EVENTS" <<'PY'
import os, sqlite3, sys, time
path, n = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path)
cols = [r[1] for r in db.execute("PRAGMA table_info(webhook_events)")]
template = dict(zip(cols, db.execute("SELECT * FROM webhook_events LIMIT 1").fetchone()))
place = ", ".join("?" for _ in cols)
start, t0 = template["created_at"] - n, time.time()
def rows():
    for i in range(n):
        r = dict(template)
        r["event_id"] = os.urandom(12).hex()
        r["created_at"] = start + i
        yield [r[c] for c in cols]
with db:
    db.executemany(f"INSERT INTO webhook_events ({', '.join(cols)}) VALUES ({place})", rows())
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(f"added {n} events in {time.time() - t0:.0f} s", file=sys.stderr)
PY

start_nodes "${PORTS[@]}"
GROWN=$(rows grown); echo "$GROWN"

printf '%s\n%s\n' "$EMPTY" "$GROWN" >"$TMP/rows"
python3 - "$EVENTS" "$TMP/rows" <<'PY'
import sys
events = int(sys.argv[1])
rate = {}
for line in open(sys.argv[2]):
    name, *kvs = line.split()
    rate.update({name: float(kv.split("=")[1]) for kv in kvs if kv.startswith("rps=")})
for row in ("nomatch", "status_cold", "status"):
    e, g = rate[f"empty_{row}"], rate[f"grown_{row}"]
    print(f"{row:<12} empty {e:>8.0f}/s, with {events:,} more events {g:>8.0f}/s "
          f"({g / e - 1:+.1%}; target: within 10%)")
PY
