#!/usr/bin/env python3
"""What the random event-id key costs as the events table grows (issue 13's 1 M-event row).

A model, not triggerd: Python's sqlite3 inserting rows shaped like `webhook_events` (its three
time indexes, the bench's payload and headers) in batches of 32 per `BEGIN IMMEDIATE ... COMMIT`,
WAL, synchronous=FULL and the writer's 8 MiB cache. It times INSERTS inserts on an empty table,
adds GROW rows without syncing, and times INSERTS inserts again. KIND is the id column:

  text  TEXT PRIMARY KEY, 24 hex characters (what triggerd stores)
  blob  BLOB PRIMARY KEY, the same 12 random bytes
  none  no index on the id (what the other B-trees cost alone)

    bench/event_key_model.py KIND DB [GROW=1000000] [INSERTS=60000]

DB is deleted and recreated. Deleting a large file slows this VM's next writes for a while:
run `sync` and wait a few seconds between runs.

What it is not: the CPU it reports includes Python building and binding the rows, and SQLite's
automatic checkpoints run inside the timed commits (triggerd checkpoints on a thread of its own).
Compare KINDs with each other, not with triggerd's figures.
"""
import os
import sqlite3
import sys
import time

kind, path = sys.argv[1], sys.argv[2]
grow = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
inserts = int(sys.argv[4]) if len(sys.argv) > 4 else 60_000
if kind not in ("text", "blob", "none"):
    sys.exit("KIND is text, blob or none")
for suffix in ("", "-wal", "-shm"):
    try:
        os.remove(path + suffix)
    except FileNotFoundError:
        pass

column = {"text": "TEXT PRIMARY KEY", "blob": "BLOB PRIMARY KEY", "none": "BLOB"}[kind]
db = sqlite3.connect(path, isolation_level=None)
db.executescript(f"""
PRAGMA journal_mode=WAL; PRAGMA cache_size=-8192; PRAGMA wal_autocheckpoint=10000;
CREATE TABLE e (id {column}, acc TEXT, org TEXT, proj TEXT, trig TEXT, payload TEXT,
                headers TEXT, created_at INTEGER);
CREATE INDEX e_by_project ON e(acc, org, proj, created_at, id);
CREATE INDEX e_by_trigger ON e(acc, org, proj, trig, created_at, id);
CREATE INDEX e_by_time ON e(created_at);
""")
PAYLOAD = ('{"ref":"refs/heads/main","repository":{"name":"api-server","full_name":"acme/api-server"},'
           '"pusher":{"name":"ci"},"size":4,"sample_key":"sample_value"}')
HEADERS = ('{"host":"127.0.0.1:18080","content-type":"application/json","x-github-event":"push",'
           '"x-api-key":"**************","content-length":"150"}')


def new_id():
    raw = os.urandom(12)
    return raw.hex() if kind == "text" else raw


def insert(n, batch=32):
    for first in range(0, n, batch):
        db.execute("BEGIN IMMEDIATE")
        now = int(time.time() * 1000)
        db.executemany("INSERT INTO e VALUES (?,?,?,?,?,?,?,?)",
                       [(new_id(), "bench", "default", "bench", "nomatch", PAYLOAD, HEADERS, now)
                        for _ in range(min(batch, n - first))])
        db.execute("COMMIT")


def timed(label):
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()
    wall, cpu = time.perf_counter(), time.process_time()
    insert(inserts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{kind} {label}: {inserts / wall:.0f} inserts/s, {cpu / inserts * 1e6:.1f} us CPU per insert",
          flush=True)


insert(2000)
timed("empty")
db.execute("PRAGMA synchronous=OFF")
insert(grow, batch=5000)
timed(f"after {grow} more rows")
print(f"{kind} file: {os.path.getsize(path) // 1_000_000} MB")
