#!/usr/bin/env bash
# Outbound benchmark (DESIGN §10, issue 5): signed deliveries per second to a local receiver.
#
#   bench/outbound.sh [fire_seconds=2] [concurrency=64] [backend=sqlite | postgres]
#
# 1. Starts triggerd (release) on a fresh database with a one-step pipeline (Wait 0s) and an
#    event rule sending every event to a closed port, with a one-attempt retry schedule.
# 2. Fires webhooks with wrk for `fire_seconds`; every execution's 4 events fail once and end
#    `Failed`, so the deliveries pile up in the database. Waits until every execution has ended
#    and every event is a delivery that has failed.
# 3. Points the rule at a receiver (the raw actix example, which parses each JSON body and
#    answers 200) and recovers every failed delivery at once: the dispatcher drains them with
#    `outbound.concurrency` attempts in flight, each one signed, sent, and recorded durably.
# 4. Reads the attempts' own timestamps: delivered / (last attempt end - first attempt start).
# Needs wrk and python3 (psql for PostgreSQL, at 127.0.0.1:5432 with trust auth; the run creates
# its own database and drops it). Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
FIRE=${1:-2}
CONCURRENCY=${2:-64}
BACKEND=${3:-sqlite}
PORT=18083
RECEIVER=18084
CLOSED=18085
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet --bin triggerd --example raw_actix
TMP=$(mktemp -d)
source bench/lib.sh
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; stop_nodes; drop_databases; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ROOT="pat._root.$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n').$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
API=http://127.0.0.1:$PORT/api/v1
P=/accounts/bench/orgs/default/projects/bench
call() { curl -sf -X "$1" -H "X-Api-Key: $ROOT" -H "content-type: ${4:-application/json}" --data-binary "$3" "$API$2"; }
# none_pending: whether the rule has no pending delivery. Looked for with curl and grep, not a
# python3 per look: ten looks a second of an interpreter (a pyenv shim on the development
# machine: a shell and four more processes each) took a sixth of the CPU the drain measures.
none_pending() {
  curl -sf -H "X-Api-Key: $ROOT" "$API$P/eventrules/bench/deliveries?status=Pending&limit=1" \
    | grep -q '"content":\[\]'
}
wait_until_no_pending() {
  for _ in $(seq 6000); do none_pending && return; sleep 0.1; done
  echo "deliveries still pending after 600 s" >&2; exit 1
}
# wait_until_all_queued: every execution has ended and the outbox is empty, so that every
# delivery of the fired webhooks exists. A delivery made after the rule points at the receiver
# would be attempted there at once, before the recover, and start the measured window early.
wait_until_all_queued() {
  for _ in $(seq 600); do
    [ "$(sql "SELECT (SELECT COUNT(*) FROM executions WHERE ended_at IS NULL) + (SELECT COUNT(*) FROM outbox_events)")" = 0 ] && return
    sleep 0.5
  done
  echo "executions or outbox events left after 300 s" >&2; exit 1
}

./target/release/examples/raw_actix 127.0.0.1:$RECEIVER >/dev/null 2>&1 &
PIDS+=($!)
[ "$BACKEND" = sqlite ] || [ "$BACKEND" = postgres ] || { echo "backend: sqlite or postgres" >&2; exit 1; }
new_database "$BACKEND"
NODE_ENV="TRIGGERD_OUTBOUND__ALLOWED_CIDRS=127.0.0.0/8 TRIGGERD_OUTBOUND__RETRY_SCHEDULE=0s TRIGGERD_OUTBOUND__CONCURRENCY=$CONCURRENCY TRIGGERD_LOG__LEVEL=error" \
  start_nodes $PORT
call PUT /accounts/bench '{"name":"bench"}' >/dev/null
call PUT $P '{"name":"bench"}' >/dev/null
printf 'pipeline:\n  name: one\n  identifier: one\n  stages:\n    - stage:\n        identifier: s\n        steps:\n          - step: {identifier: w, type: Wait, spec: {duration: 0s}}\n' \
  | call PUT $P/pipelines/one @- application/yaml >/dev/null
token=$(printf 'trigger:\n  name: t\n  identifier: t\n  source: {type: Webhook, spec: {type: Custom, spec: {}}}\n' \
  | call PUT $P/pipelines/one/triggers/t @- application/yaml \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["customWebhookToken"])')
call PUT $P/eventrules/bench "{\"sendEverything\":true,\"url\":\"http://127.0.0.1:$CLOSED/\"}" >/dev/null
url="http://127.0.0.1:$PORT/webhook/custom/$token/v3?accountIdentifier=bench&orgIdentifier=default&projectIdentifier=bench"
wrk -t2 -c16 -d"${FIRE}s" -s bench/post.lua "$url" >/dev/null
# Whether the fan-out kept pace with the engine while the webhooks came: the events still in the
# outbox at the end of the fire, against the deliveries made from the others.
sql "SELECT (SELECT COUNT(*) FROM executions), (SELECT COUNT(*) FROM executions WHERE ended_at IS NOT NULL), \
  (SELECT COUNT(*) FROM deliveries WHERE event_type != 'ping'), (SELECT COUNT(*) FROM outbox_events)" \
  | awk -F'|' '{printf "after the fire: %d executions, %d ended, %d deliveries made, %d events still in the outbox\n", $1, $2, $3, $4}'
wait_until_all_queued
wait_until_no_pending
START=$(python3 -c 'import time; print(int(time.time()*1000))')
call PUT $P/eventrules/bench "{\"sendEverything\":true,\"url\":\"http://127.0.0.1:$RECEIVER/\"}" >/dev/null
call POST $P/eventrules/bench/recover '{"since":0}' | python3 -c 'import json,sys; print("queued again:", json.load(sys.stdin)["data"]["queued"])'
wait_until_no_pending
stop_nodes
# The recovered deliveries' attempts only: each one's first failed. Pointing the rule at the
# receiver also queues a `ping` (DESIGN §8), delivered at once, before the recover: counted, it
# started the window a few hundred milliseconds early.
ROW=$(sql "SELECT COUNT(*), MIN(started_at), MAX(started_at + duration_ms) FROM delivery_attempts \
  WHERE response_status BETWEEN 200 AND 299 AND attempt > 1 AND started_at >= $START")
FAILED=$(sql "SELECT COUNT(*) FROM deliveries WHERE status != 'Success'")
python3 - "$ROW" "$FAILED" "$CONCURRENCY" "$BACKEND" <<'PY'
import sys
ok, first, last = (int(v) for v in sys.argv[1].split("|"))
secs = (last - first) / 1000
print(f"{sys.argv[4]}: {ok} signed deliveries in {secs:.2f} s = {ok / secs:.0f} deliveries/s "
      f"(concurrency {sys.argv[3]}; deliveries not delivered: {sys.argv[2]})")
PY
echo "target: >= 5000 signed deliveries/s (DESIGN §10)"
