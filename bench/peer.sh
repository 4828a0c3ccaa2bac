#!/usr/bin/env bash
# Peer benchmark: adnanh/webhook (Debian package `webhook`, 2.8), the side of the comparison
# that is not triggerd, measured on loopback with the same wrk client and body as triggerd's
# intake (bench/post.lua, `wrk -t2 -c<connections>`).
#
#   bench/peer.sh [seconds=10] [connections=64]       # standalone: the three lines below
#   source bench/peer.sh; peer_true [seconds] [conns] # from another benchmark, same run
#
# Each measurement starts its own webhook on a fresh temp dir (hooks.json generated there),
# and prints one line that parses like intake.sh's (`name key=value ...`, every value a number):
#   webhook_true    (127.0.0.1:18091) a hook running /bin/true per request, its rule matched
#                   (the X-Api-Key header equals a generated key, as triggerd's intake checks
#                   a key; the body is parsed as JSON, no payload condition, like the hello
#                   trigger). webhook answers BEFORE the command ends: without
#                   include-command-output-in-response it starts the command in a goroutine
#                   and replies at once. That is what we measure, because it is the same
#                   contract as triggerd's intake (answer once the event is accepted, run the
#                   work afterwards). 3 s warm-up, then `seconds` measured.
#   webhook_nomatch (18092) the same hook with a second rule, payload `ref` must equal
#                   refs/heads/never, which the body does not meet: no command runs. webhook
#                   still answers 200 ("Hook rules were not satisfied."). Warm-up as above.
#   webhook_ran     (18093) a hook whose command is a shell script doing `echo x >> FILE`, hit
#                   for `seconds` (no warm-up: every line counts). Afterwards it waits until
#                   webhook has no child left, is back under 50 open fds and FILE has not grown
#                   for 1 s (at most 120 s), then counts the lines (a few dozen more than wrk
#                   counted can run: the requests in flight when wrk stops). Extra fields:
#                   ran= (lines), ran_per_s= (lines / wrk's seconds), never_ran= (fraction of
#                   the 2xx answers whose command never ran: webhook answers 200 first, then
#                   fails to start the command, e.g. "too many open files", which it logs only
#                   when verbose, so no client can tell), non2xx=, sock_errors= (what wrk saw),
#                   drain_s= (how long commands went on after wrk stopped), peak_fds=,
#                   peak_children= (webhook's, sampled every 0.2 s during the run), nofile=
#                   (webhook's open-files limit).
#   webhook_sync    (18091, only with PEER_SYNC=1 standalone, or `peer_sync`) /bin/true with
#                   include-command-output-in-response: the answer waits for the command.
#
# Environment: BENCH_LOCK=FILE takes `flock FILE` around each measurement (webhook, wrk and the
# drain); leave it unset when the caller already holds that lock (a second open would block).
# PEER_NOFILE=N runs webhook under `ulimit -n N` (at most the hard limit, unless the container may
# raise it). PEER_LOG=1 runs webhook with -logfile (verbose) and prints, on stderr, how many of
# its log lines say "too many open files"; the logging slows webhook enough to change the result.
# Installs webhook and wrk with apt-get when missing. Loopback only; each measurement stops by
# itself, kills its webhook and removes its temp dir (EXIT trap in the function's subshell, so a
# caller's own traps are untouched). Takes about 3 x seconds + 10 s, plus the drain.

PEER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEER_POST_LUA="$PEER_DIR/post.lua"

# peer_require: installs webhook and wrk (Debian packages) when missing.
peer_require() {
  local pkg missing=()
  for pkg in webhook wrk; do command -v "$pkg" >/dev/null || missing+=("$pkg"); done
  [ ${#missing[@]} = 0 ] && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo apt-get install -y "${missing[@]}" >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y "${missing[@]}" >&2; }
}

# _peer_setup PORT HOOK-JSON...: in the calling subshell, takes BENCH_LOCK if set, makes
# PEER_TMP, writes the hooks, starts webhook on 127.0.0.1:PORT (PEER_PID) and arms the EXIT
# trap that undoes all of it.
_peer_setup() {
  local port=$1; shift
  set -euo pipefail
  peer_require
  if [ -n "${PEER_NOFILE:-}" ] && ! (ulimit -n "$PEER_NOFILE") 2>/dev/null; then
    echo "cannot set ulimit -n $PEER_NOFILE (hard limit $(ulimit -Hn))" >&2; exit 1
  fi
  if [ -n "${BENCH_LOCK:-}" ]; then exec {PEER_LOCK_FD}>"$BENCH_LOCK"; flock "$PEER_LOCK_FD"; fi
  PEER_TMP=$(mktemp -d)
  PEER_PID=""
  trap _peer_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  PEER_KEY="wh-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  printf 'echo x >> %s/ran.txt\n' "$PEER_TMP" | { echo '#!/bin/sh'; cat; } >"$PEER_TMP/append.sh"
  chmod +x "$PEER_TMP/append.sh"
  (IFS=,; echo "[$*]") | sed -e "s|@KEY@|$PEER_KEY|g" -e "s|@TMP@|$PEER_TMP|g" >"$PEER_TMP/hooks.json"
  local log=()
  [ "${PEER_LOG:-}" = 1 ] && log=(-logfile "$PEER_TMP/webhook.log")
  (
    [ -n "${PEER_NOFILE:-}" ] && ulimit -n "$PEER_NOFILE"
    exec webhook -hooks "$PEER_TMP/hooks.json" -ip 127.0.0.1 -port "$port" "${log[@]}" >"$PEER_TMP/webhook.out" 2>&1
  ) &
  PEER_PID=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0; sleep 0.1; done
  echo "webhook on $port never answered:" >&2
  cat "$PEER_TMP/webhook.out" >&2
  exit 1
}

_peer_cleanup() {
  if [ -n "${PEER_PID:-}" ]; then
    kill "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
  fi
  [ -n "${PEER_TMP:-}" ] && rm -rf "$PEER_TMP"
  PEER_PID="" PEER_TMP=""
}

# Hook definitions: a rule matching the X-Api-Key header, and one the benchmark body misses.
_PEER_KEY_RULE='{"match":{"type":"value","value":"@KEY@","parameter":{"source":"header","name":"X-Api-Key"}}}'
_PEER_MISS_RULE='{"match":{"type":"value","value":"refs/heads/never","parameter":{"source":"payload","name":"ref"}}}'
_peer_hook() { # id command [extra json fields] [rule]
  printf '{"id":"%s","execute-command":"%s","response-message":"ok"%s,"trigger-rule":%s}' \
    "$1" "$2" "${3:-}" "${4:-$_PEER_KEY_RULE}"
}

# _peer_wrk NAME URL SECONDS CONNS [warmup seconds]: wrk with post.lua and the key; prints
# `NAME rps=.. p50_ms=.. p99_ms=.. requests=.. errors=..`; wrk's full output in $PEER_TMP/wrk.txt.
_peer_wrk() {
  local name=$1 url=$2 secs=$3 conns=$4 warm=${5:-0}
  if [ "$warm" -gt 0 ]; then
    BENCH_API_KEY="$PEER_KEY" wrk -t2 -c"$conns" -d"${warm}s" -s "$PEER_POST_LUA" "$url" >/dev/null
  fi
  BENCH_API_KEY="$PEER_KEY" wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$PEER_POST_LUA" "$url" >"$PEER_TMP/wrk.txt"
  grep -E 'Non-2xx|Socket errors' "$PEER_TMP/wrk.txt" | sed "s/^/$name: /" >&2 || true
  echo "$name $(grep '^RESULT' "$PEER_TMP/wrk.txt" | sed 's/^RESULT //')"
}

_peer_args() { PEER_SECS=${1:-${PEER_DURATION:-${DURATION:-10}}}; PEER_CONNS=${2:-${PEER_CONNECTIONS:-${CONNS:-64}}}; }

# peer_true [seconds] [connections]: webhook_true (see the header).
peer_true() (
  _peer_args "$@"
  _peer_setup 18091 "$(_peer_hook true /bin/true)"
  _peer_wrk webhook_true "http://127.0.0.1:18091/hooks/true" "$PEER_SECS" "$PEER_CONNS" 3
)

# peer_sync [seconds] [connections]: webhook_sync, the answer waits for /bin/true to end.
peer_sync() (
  _peer_args "$@"
  _peer_setup 18091 "$(_peer_hook sync /bin/true ',"include-command-output-in-response":true')"
  _peer_wrk webhook_sync "http://127.0.0.1:18091/hooks/sync" "$PEER_SECS" "$PEER_CONNS" 3
)

# peer_nomatch [seconds] [connections]: webhook_nomatch, the rule misses, nothing runs.
peer_nomatch() (
  _peer_args "$@"
  _peer_setup 18092 "$(_peer_hook nomatch /bin/true "" "{\"and\":[$_PEER_KEY_RULE,$_PEER_MISS_RULE]}")"
  local probe
  probe=$(curl -s -H 'Content-Type: application/json' -H "X-Api-Key: $PEER_KEY" --data-binary \
    '{"ref":"refs/heads/main"}' http://127.0.0.1:18092/hooks/nomatch)
  [ "$probe" = "Hook rules were not satisfied." ] || { echo "nomatch hook answered '$probe'" >&2; exit 1; }
  _peer_wrk webhook_nomatch "http://127.0.0.1:18092/hooks/nomatch" "$PEER_SECS" "$PEER_CONNS" 3
)

# peer_ran [seconds] [connections]: webhook_ran, commands that really ran (see the header).
peer_ran() (
  _peer_args "$@"
  _peer_setup 18093 "$(_peer_hook ran "@TMP@/append.sh")"
  local file="$PEER_TMP/ran.txt"
  # A probe request must run the command, or the count below means nothing.
  curl -s -o /dev/null -H 'Content-Type: application/json' -H "X-Api-Key: $PEER_KEY" --data-binary '{}' \
    http://127.0.0.1:18093/hooks/ran
  for _ in $(seq 50); do [ -s "$file" ] && break; sleep 0.1; done
  [ -s "$file" ] || { echo "the ran hook never wrote $file" >&2; exit 1; }
  : >"$file"
  # Sample webhook's open fds and children while wrk runs.
  (
    peak_fds=0 peak_children=0
    while [ ! -e "$PEER_TMP/stop-sampling" ]; do
      f=$(ls /proc/"$PEER_PID"/fd 2>/dev/null | wc -l)
      c=$(pgrep -c -P "$PEER_PID" || true)
      [ "$f" -gt "$peak_fds" ] && peak_fds=$f
      [ "$c" -gt "$peak_children" ] && peak_children=$c
      echo "$peak_fds $peak_children" >"$PEER_TMP/peaks"
      sleep 0.2
    done
  ) &
  local sampler=$!
  local line
  line=$(_peer_wrk webhook_ran "http://127.0.0.1:18093/hooks/ran" "$PEER_SECS" "$PEER_CONNS")
  touch "$PEER_TMP/stop-sampling"; wait "$sampler" || true
  # Drain: until webhook has no child, holds under 50 fds (no command waiting to start: each one
  # holds its pipes from before the fork) and the file has not grown for 1 s (at most 120 s).
  local last=-1 now still=0 deadline=$((SECONDS + 120)) drain_start=$EPOCHREALTIME drain_s=0.0
  while [ $SECONDS -lt $deadline ]; do
    now=$(wc -l <"$file")
    if [ "$now" = "$last" ] && ! pgrep -P "$PEER_PID" >/dev/null \
      && [ "$(ls /proc/"$PEER_PID"/fd 2>/dev/null | wc -l)" -lt 50 ]; then
      still=$((still + 1)); [ $still -ge 5 ] && break
    else
      still=0; drain_s=$(awk -v a="$EPOCHREALTIME" -v b="$drain_start" 'BEGIN { printf "%.1f", a - b }')
    fi
    last=$now
    sleep 0.2
  done
  [ $SECONDS -lt $deadline ] || echo "webhook_ran: commands still running 120 s after wrk stopped" >&2
  local nofile
  nofile=$(awk '/Max open files/ {print $4}' /proc/"$PEER_PID"/limits)
  if [ "${PEER_LOG:-}" = 1 ]; then
    echo "webhook_ran: log lines with 'too many open files': $(grep -c 'too many open files' "$PEER_TMP/webhook.log" || true)," \
      "'error occurred': $(grep -c 'error occurred' "$PEER_TMP/webhook.log" || true)" >&2
    grep -m3 'too many open files' "$PEER_TMP/webhook.log" | sed 's/^/webhook_ran:   /' >&2 || true
  fi
  python3 - "$line" "$(wc -l <"$file")" "$PEER_SECS" "$PEER_TMP/wrk.txt" "$drain_s" "$(cat "$PEER_TMP/peaks" 2>/dev/null || echo '0 0')" "$nofile" <<'PY'
import re, sys
line, ran, secs, wrk_path, drain, peaks, nofile = sys.argv[1:]
wrk = open(wrk_path).read()
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)) else 0
sock = sum(map(int, m.groups())) if (m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk)) else 0
requests = int(re.search(r"requests=(\d+)", line).group(1))
ok = requests - non2xx
ran = int(ran)
never = max(0, ok - ran) / ok if ok else 0.0
fds, children = peaks.split()
print(f"{line} ran={ran} ran_per_s={ran / float(secs):.0f} never_ran={never:.3f} non2xx={non2xx} "
      f"sock_errors={sock} drain_s={drain} peak_fds={fds} peak_children={children} nofile={nofile}")
PY
)

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  peer_require
  SECS=${1:-10}
  CONNS=${2:-64}
  echo "== adnanh/$(webhook -version), ${SECS}s per target, $CONNS connections, wrk -t2, on $(nproc) cores"
  start=$SECONDS
  peer_true "$SECS" "$CONNS"
  peer_nomatch "$SECS" "$CONNS"
  peer_ran "$SECS" "$CONNS"
  [ "${PEER_SYNC:-}" = 1 ] && peer_sync "$SECS" "$CONNS"
  echo "peer.sh took $((SECONDS - start)) s"
fi
