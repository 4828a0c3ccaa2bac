#!/usr/bin/env bash
# Engine benchmark (DESIGN §10): one-step pipelines completed end to end per second.
#
#   bench/engine.sh [fire_seconds=3] [workers=32] [backends=sqlite | all]
#
# backends: a comma-separated list of sqlite, postgres (one node) and postgres2 (two nodes on one
# PostgreSQL database, each fired at by its own wrk), or `all` for the three, side by side in one
# run. For each pipeline (a `Wait 0s` step, then a Run `true` step) and backend it starts
# triggerd on a fresh database, fires webhooks with wrk for `fire_seconds`, waits until every
# queued execution has ended, stops triggerd, and reads the executions' own timestamps from the
# database: completed / (last end - first start). The engine keeps pace with intake there, so the
# `wait_0s` row is as much intake's rate as the engine's; `wait_0s_drain` measures the engine
# alone, on a backlog built first (see `measure`). Then it counts the commands adnanh/webhook
# (bench/peer.sh) really runs per second from a hook that appends a line to a file: the peer row
# for Run `true` pipelines (it answers 200 at once and drops most commands, so what it answers is
# not what it runs). Needs wrk and python3 (psql for PostgreSQL); installs webhook when missing.
# Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
FIRE=${1:-3}
WORKERS=${2:-32}
BACKENDS=${3:-sqlite}
[ "$BACKENDS" = all ] && BACKENDS=sqlite,postgres,postgres2
PORTS_OF_NODES=(18082 18084)
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet --bin triggerd --example store_floor
TMP=$(mktemp -d)
source bench/lib.sh
source bench/peer.sh
cleanup() { stop_nodes; drop_databases; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
bench_api

# measure BACKEND NAME STEP-YAML [drain]: prints the executions completed per second and the
# nodes' CPU per execution (every thread; without `drain` intake's share too, so the whole cost
# of a matched webhook; not the step spawner's, nor Run steps' own processes). With `drain`, a
# backlog is built first; the nodes are then restarted with WORKERS workers, and the rate counts
# only the executions started after the restart: the engine alone, without intake sharing the
# CPU with it. On SQLite the backlog is written by the store alone (bench/store_floor.rs, 64
# tasks for `fire_seconds`, copies of the events the webhooks made): a worker that ends an
# execution claims the next in the same commit, so even one worker keeps up with intake there.
# On PostgreSQL the webhooks are fired at nodes with one worker each, which fall behind; there it
# also prints the database server's CPU (every `postgres` process on the machine) and the WAL it
# wrote per execution, over the same span as the nodes' CPU.
measure() {
  # Write back what earlier runs left dirty. On ext4 without a journal (this VM's disk), ext4
  # skips every recently freed inode whose table block is still dirty when it allocates one,
  # and each Run step allocates two (its work directory and payload file).
  sync
  new_database "$1"
  local ports=("${PORTS_OF_NODES[@]:0:$(node_count "$1")}") drain=${4:-} since=0
  NODE_ENV="TRIGGERD_WORKERS=$([ -n "$drain" ] && [ "$1" != sqlite ] && echo 1 || echo "$WORKERS")" start_nodes "${ports[@]}"
  call PUT /accounts/bench '{"name":"bench"}' >/dev/null
  call PUT $P '{"name":"bench"}' >/dev/null
  printf 'pipeline:\n  name: one\n  identifier: one\n  stages:\n    - stage:\n        identifier: s\n        steps:\n          - step: %s\n' "$3" \
    | call PUT $P/pipelines/one @- application/yaml >/dev/null
  local token port firing=() cpu_before server_before server_after
  token=$(printf 'trigger:\n  name: t\n  identifier: t\n  source: {type: Webhook, spec: {type: Custom, spec: {}}}\n' \
    | call PUT $P/pipelines/one/triggers/t @- application/yaml \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["customWebhookToken"])')
  cpu_before=$(cpu_ticks "${NODE_PIDS[@]}")
  server_before=$(server_mark)
  for port in "${ports[@]}"; do
    wrk -t2 -c$((16 / ${#ports[@]})) -d"${FIRE}s" -s bench/post.lua \
      "http://127.0.0.1:$port/webhook/custom/$token/v3?accountIdentifier=bench&orgIdentifier=default&projectIdentifier=bench" >/dev/null &
    firing+=($!)
  done
  wait "${firing[@]}"   # not a bare `wait`: the nodes are this shell's children too
  if [ -n "$drain" ]; then
    stop_nodes
    if [ "$1" = sqlite ]; then
      ./target/release/examples/store_floor "${DB_URL#sqlite://}" "$FIRE" 64 TARGET_EXECUTION_REQUESTED backlog >/dev/null
    fi
    since=$(date +%s%3N)
    server_before=$(server_mark)
    NODE_ENV="TRIGGERD_WORKERS=$WORKERS" start_nodes "${ports[@]}"
    cpu_before=0   # fresh processes: all their CPU, like every execution since `since`
  fi
  # The rate comes from the executions' own timestamps, so waiting adds nothing to it.
  wait_for_executions 300
  server_after=$(server_mark)
  local peak cpu
  cpu=$(($(cpu_ticks "${NODE_PIDS[@]}") - cpu_before))
  peak=$(rss_of_nodes peak_rss)
  stop_nodes
  sql "SELECT status, COUNT(*), MIN(started_at), MAX(ended_at), MIN(created_at) FROM executions WHERE started_at >= $since GROUP BY status" \
    | python3 -c '
import sys
rows = [l.strip().split("|") for l in sys.stdin if l.strip()]
num = lambda v: None if v in ("", "None") else int(v)
rows = [(s, int(n), num(a), num(b), num(c)) for s, n, a, b, c in rows]
done = sum(n for s, n, *_ in rows if s == "Success")
total = sum(n for _, n, *_ in rows)
first = min(r[2] for r in rows if r[2] is not None)
last = max(r[3] for r in rows if r[3] is not None)
queued_first = min(r[4] for r in rows)
secs = (last - first) / 1000
cpu_us = float(sys.argv[4]) / float(sys.argv[5]) * 1e6 / max(total, 1)
server = ""
if sys.argv[6]:  # PostgreSQL: server_per_req of every execution counted here
    pg = dict(kv.split("=") for kv in sys.argv[6].split())
    pg_cpu, wal = float(pg["pg_cpu_us"]), pg["wal_bytes"]
    server = f"; the database server {pg_cpu:.0f} us of CPU and {wal} B of WAL per execution"
print(f"{sys.argv[1]:<10} {sys.argv[2]:<15}: {done}/{total} succeeded in {secs:.1f} s of engine time "
      f"= {done / secs:.0f} executions/s (first queued to last ended: {(last - queued_first) / 1000:.1f} s; "
      f"{cpu_us:.0f} us of CPU per execution in the nodes{server}; peak RSS {sys.argv[3]} MiB)")
' "$1" "$2" "$peak" "$cpu" "$(getconf CLK_TCK)" \
    "$(server_per_req "$server_before" "$server_after" "$(sql "SELECT COUNT(*) FROM executions WHERE started_at >= $since")")"
}

echo "== engine: one-step pipelines, $WORKERS workers per node, webhooks fired for ${FIRE}s with wrk -c16, $(nproc) cores"
for backend in ${BACKENDS//,/ }; do
  measure "$backend" wait_0s "{identifier: w, type: Wait, spec: {duration: 0s}}"
  measure "$backend" wait_0s_drain "{identifier: w, type: Wait, spec: {duration: 0s}}" drain
  measure "$backend" run_true "{identifier: r, type: Run, spec: {command: 'true'}}"
done
PEER=$(peer_ran 5 64)
echo "adnanh/webhook, commands really run: $(echo "$PEER" | sed 's/.*ran_per_s=\([0-9.]*\).*never_ran=\([0-9.]*\).*/\1\/s (a share of \2 of its 200s never ran)/')"
echo "targets: Run true pipelines >= 1x the commands adnanh/webhook really runs per second"
echo "target: >= 5000 Wait 0s executions/s (DESIGN §10); peak RSS <= 200 MiB"
