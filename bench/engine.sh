#!/usr/bin/env bash
# Engine benchmark (DESIGN §10, issue 4): one-step pipelines completed end to end per second.
#
#   bench/engine.sh [fire_seconds=3] [workers=8]
#
# For each pipeline (a `Wait 0s` step, then a Run `true` step) it starts triggerd on a fresh
# database, fires webhooks with wrk for `fire_seconds`, waits until every queued execution has
# ended, stops triggerd, and reads the executions' own timestamps from the database:
# completed / (last end - first start). Needs wrk and python3. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
FIRE=${1:-3}
WORKERS=${2:-8}
PORT=18082
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet --bin triggerd
TMP=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ROOT="pat._root.$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n').$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
API=http://127.0.0.1:$PORT/api/v1
P=/accounts/bench/orgs/default/projects/bench
call() { curl -sf -X "$1" -H "X-Api-Key: $ROOT" -H "content-type: ${4:-application/json}" --data-binary "$3" "$API$2"; }

measure() { # name step-yaml
  rm -f "$TMP"/engine.db*
  TRIGGERD_ROOT_KEY="$ROOT" TRIGGERD_LOG__LEVEL=warn TRIGGERD_WORKERS=$WORKERS \
    ./target/release/triggerd serve --listen 127.0.0.1:$PORT --database-url "sqlite://$TMP/engine.db" >"$TMP/log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
  call PUT /accounts/bench '{"name":"bench"}' >/dev/null
  call PUT $P '{"name":"bench"}' >/dev/null
  printf 'pipeline:\n  name: one\n  identifier: one\n  stages:\n    - stage:\n        identifier: s\n        steps:\n          - step: %s\n' "$2" \
    | call PUT $P/pipelines/one @- application/yaml >/dev/null
  local token
  token=$(printf 'trigger:\n  name: t\n  identifier: t\n  source: {type: Webhook, spec: {type: Custom, spec: {}}}\n' \
    | call PUT $P/pipelines/one/triggers/t @- application/yaml \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["customWebhookToken"])')
  local url="http://127.0.0.1:$PORT/webhook/custom/$token/v3?accountIdentifier=bench&orgIdentifier=default&projectIdentifier=bench"
  wrk -t2 -c16 -d"${FIRE}s" -s bench/post.lua "$url" >/dev/null
  # Wait (at most 300 s) until nothing is queued or running.
  for _ in $(seq 3000); do
    local left
    left=$(curl -s -H "X-Api-Key: $ROOT" "$API$P/executions?status=Queued&limit=1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["content"]))')
    left=$((left + $(curl -s -H "X-Api-Key: $ROOT" "$API$P/executions?status=Running&limit=1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["content"]))')))
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  python3 - "$TMP/engine.db" "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("SELECT status, COUNT(*), MIN(started_at), MAX(ended_at), MIN(created_at) FROM executions GROUP BY status").fetchall()
done = sum(n for s, n, *_ in rows if s == "Success")
total = sum(n for _, n, *_ in rows)
first = min(r[2] for r in rows if r[2] is not None)
last = max(r[3] for r in rows if r[3] is not None)
queued_first = min(r[4] for r in rows)
secs = (last - first) / 1000
print(f"{sys.argv[2]}: {done}/{total} succeeded in {secs:.1f} s of engine time "
      f"= {done / secs:.0f} executions/s (first queued to last ended: {(last - queued_first) / 1000:.1f} s)")
PY
}

echo "== engine: one-step pipelines, $WORKERS workers, webhooks fired for ${FIRE}s with wrk -c16, $(nproc) cores"
measure wait_0s "{identifier: w, type: Wait, spec: {duration: 0s}}"
measure run_true "{identifier: r, type: Run, spec: {command: 'true'}}"
echo "target: >= 2000 Wait 0s executions/s (DESIGN §10)"
