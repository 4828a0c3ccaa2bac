# Shared by the benchmarks (sourced): a fresh database per run on the chosen backend, triggerd
# nodes on it, and SQL on it. Backends: sqlite (one node), postgres (one node), postgres2 (two
# nodes on one PostgreSQL database). PostgreSQL runs at 127.0.0.1:5432 with trust auth; each
# run creates its own database and drops it at exit. Needs $TMP set by the caller.
# BENCH_TRIGGERD=path runs another build of triggerd (say, the previous commit's, for a before/after
# in one sitting) instead of ./target/release/triggerd.

PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
BENCH_DBS=()
NODE_PIDS=()

# new_database BACKEND: sets DB_URL to a fresh, empty database.
new_database() {
  case "$1" in
    sqlite)
      rm -f "$TMP"/bench.db*
      DB_URL="sqlite://$TMP/bench.db" ;;
    postgres|postgres2)
      command -v psql >/dev/null || { echo "psql is required for the PostgreSQL backends" >&2; exit 1; }
      local name
      name="triggerd_bench_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $name" >/dev/null
      BENCH_DBS+=("$name")
      DB_URL="${PG_ADMIN_URL%/*}/$name" ;;
    *) echo "unknown backend $1 (sqlite, postgres, postgres2)" >&2; exit 1 ;;
  esac
}

# node_count BACKEND: how many nodes the backend runs.
node_count() { if [ "$1" = postgres2 ]; then echo 2; else echo 1; fi; }

# start_nodes PORT...: starts one triggerd per port on DB_URL (extra env from NODE_ENV) and
# waits until each answers.
start_nodes() {
  local port
  for port in "$@"; do
    env TRIGGERD_ROOT_KEY="$ROOT" TRIGGERD_LOG__LEVEL=warn ${NODE_ENV:-} \
      "${BENCH_TRIGGERD:-./target/release/triggerd}" serve --listen "127.0.0.1:$port" --database-url "$DB_URL" \
      >"$TMP/triggerd-$port.log" 2>&1 &
    NODE_PIDS+=($!)
  done
  for port in "$@"; do
    for _ in $(seq 150); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
    curl -s -o /dev/null "http://127.0.0.1:$port/healthz" || { echo "triggerd on $port never answered" >&2; cat "$TMP/triggerd-$port.log" >&2; exit 1; }
  done
}

# stop_nodes: SIGTERM every node and wait for it.
stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  NODE_PIDS=()
}

# drop_databases: drops every PostgreSQL database this run created.
drop_databases() {
  local db
  for db in "${BENCH_DBS[@]}"; do
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  BENCH_DBS=()
}

# sql QUERY: runs QUERY on DB_URL; rows as `a|b` lines.
sql() {
  case "$DB_URL" in
    sqlite://*)
      python3 -c 'import sqlite3, sys
for row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print("|".join(str(c) for c in row))' \
        "${DB_URL#sqlite://}" "$1" ;;
    *) psql "$DB_URL" -Atc "$1" ;;
  esac
}

# cpu_ticks PID...: the CPU time the processes have used so far (user and system, every thread,
# the exited ones included), in clock ticks (getconf CLK_TCK a second). The process's own line of
# /proc/<pid>/stat: on this VM the per-thread lines (/proc/<pid>/task/<tid>/stat) under-count
# busy threads by up to half against their run time in /proc/<pid>/task/<tid>/schedstat, while
# the process's line agrees with the sum of those run times.
cpu_ticks() {
  local pid total=0
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

# server_ticks: the database server's CPU so far, in clock ticks: every live `postgres` process
# on the machine, and those that have exited (their CPU, reaped, counts in the postmaster's own
# line: cutime and cstime), so that a connection closing between two readings moves its CPU from
# one term to the other instead of out of the sum.
server_ticks() {
  local pid total=0 line
  for pid in $(pgrep -x postgres); do
    line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue   # exited meanwhile
    total=$((total + $(echo "$line" | awk '{print $14 + $15}')))
  done
  line=$(cat "/proc/$(pgrep -o -x postgres)/stat")
  echo $((total + $(echo "$line" | awk '{print $16 + $17}')))
}

# server_mark: on PostgreSQL, the database server's CPU so far (server_ticks) and its WAL
# position, as "TICKS LSN"; nothing on SQLite.
server_mark() {
  case "$DB_URL" in
    sqlite://*) ;;
    *) echo "$(server_ticks) $(psql "$DB_URL" -Atc 'SELECT pg_current_wal_lsn()')" ;;
  esac
}

# server_per_req MARK_BEFORE MARK_AFTER REQUESTS: " pg_cpu_us=… wal_bytes=…", the database
# server's CPU and the WAL it wrote per request between two server_marks; nothing on SQLite.
server_per_req() {
  [ -n "$1" ] && [ -n "$2" ] || return 0
  local wal
  wal=$(psql "$DB_URL" -Atc "SELECT pg_wal_lsn_diff('${2#* }', '${1#* }')")
  echo " pg_cpu_us=$(cpu_us_per_req "${1%% *}" "${2%% *}" "$3") wal_bytes=$(python3 -c "print(round($wal / max($3, 1)))")"
}

# cpu_us_per_req TICKS_BEFORE TICKS_AFTER REQUESTS: microseconds of CPU per request.
cpu_us_per_req() {
  python3 -c 'import sys; b, a, n, hz = map(float, sys.argv[1:]); print(f"{(a - b) / hz * 1e6 / max(n, 1):.1f}")' \
    "$@" "$(getconf CLK_TCK)"
}

# requests_of RESULT_LINE: the requests= field of a wrk RESULT line.
requests_of() { echo "$1" | sed -n 's/.*requests=\([0-9]*\).*/\1/p'; }

# rss PID: resident memory in MiB.
rss() { ps -o rss= -p "$1" | awk '{printf "%.1f", $1/1024}'; }

# peak_rss PID: the most resident memory the process has had since it started (VmHWM), in MiB.
peak_rss() { awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# rss_of_nodes [FUNCTION=rss]: FUNCTION (rss or peak_rss) of the running node that has the most.
rss_of_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do "${1:-rss}" "$pid"; echo; done | sort -n | tail -1
}

# wait_for_executions [SECONDS=300]: waits until no execution on DB_URL is queued or running, at
# most SECONDS. Looks once a second: each look (python3 or psql) takes CPU from the engine.
wait_for_executions() {
  local _
  for _ in $(seq "${1:-300}"); do
    [ "$(sql "SELECT COUNT(*) FROM executions WHERE ended_at IS NULL")" = 0 ] && return 0
    sleep 1
  done
}

# bench_api: after PORTS_OF_NODES is set, a fresh root key (ROOT, passed to the nodes), the
# first node's API base (API), the bench project's path (P), `call METHOD PATH BODY [TYPE]`
# and `field NAME` (a field of an answer's data).
bench_api() {
  ROOT="pat._root.$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n').$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
  API=http://127.0.0.1:${PORTS_OF_NODES[0]}/api/v1
  P=/accounts/bench/orgs/default/projects/bench
  call() { curl -sf -X "$1" -H "X-Api-Key: $ROOT" -H "content-type: ${4:-application/json}" --data-binary "$3" "$API$2"; }
  field() { python3 -c "import json,sys; print(json.load(sys.stdin)['data']['$1'])"; }
}

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

# run NAME URL KEY [BODY_FILE [SERVER_PID]]: wrk with post.lua, a 3 s warm-up then DURATION s on
# CONNS connections; prints NAME with rate, p50, p99, requests and errors, and with SERVER_PID
# the server's CPU per request over the measured run (cpu_us).
run() { # name url key [body file [server pid]]
  BENCH_BODY_FILE="${4:-}" BENCH_API_KEY="$3" wrk -t2 -c"$CONNS" -d3s -s bench/post.lua "$2" >/dev/null   # warm-up
  local out before="" cpu=""
  [ -n "${5:-}" ] && before=$(cpu_ticks "$5")
  out=$(BENCH_BODY_FILE="${4:-}" BENCH_API_KEY="$3" wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s bench/post.lua "$2")
  echo "$out" | grep -E 'Non-2xx' >&2 || true
  local result; result=$(echo "$out" | grep '^RESULT' | sed 's/^RESULT //')
  local requests; requests=$(requests_of "$result")
  if [ -n "$before" ] && [ -n "$requests" ]; then
    cpu=" cpu_us=$(cpu_us_per_req "$before" "$(cpu_ticks "$5")" "$requests")"
  fi
  echo "$1 $result$cpu"
}

# A trigger on the bench pipeline whose payload condition never matches; sets NOMATCH_QUERY.
add_nomatch_trigger() {
  local token
  token=$(printf 'trigger:\n  name: nomatch\n  identifier: nomatch\n  source:\n    type: Webhook\n    spec:\n      type: Custom\n      spec:\n        payloadConditions:\n          - {key: <+trigger.payload.ref>, operator: Equals, value: refs/heads/never}\n' \
    | call PUT $P/pipelines/hello/triggers/nomatch @- application/yaml | field customWebhookToken)
  NOMATCH_QUERY="/webhook/custom/$token/v3?accountIdentifier=bench&orgIdentifier=default&projectIdentifier=bench"
}
