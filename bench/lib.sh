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

# rss PID: resident memory in MiB.
rss() { ps -o rss= -p "$1" | awk '{printf "%.1f", $1/1024}'; }
