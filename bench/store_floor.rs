//! The store's own ceiling for intake (issue 13): how many webhook events per second the SQLite
//! store commits when nothing else runs. No HTTP, no load generator and no engine: `CONCURRENCY`
//! tasks call `record_event` in a loop, as the HTTP workers do, on the server's own store code
//! (its writer thread, group commit, `synchronous=FULL`). Intake over HTTP cannot be faster than
//! this, since it does the same writes and more on the same two cores.
//!
//! Run: `cargo run --release --example store_floor -- DB SECONDS CONCURRENCY STATUS [ROW]`
//!
//! `DB` is a database made by the server, holding at least one event of status `STATUS`
//! (`bench/intake.sh` makes one). Each write copies the newest such event with a fresh event id
//! (and, when it queued an execution, a fresh execution id), as intake would. It prints `ROW`
//! (default `store`) with the events committed per second and the process's CPU time per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use triggerd::domain::ids::{EventId, PlanExecutionId};
use triggerd::store::sqlite::{SqliteStore, WriterOptions};
use triggerd::store::{now_millis, NewExecution, Store};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, fields 14 and 15 of proc(5); 100 ticks per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: store_floor DB SECONDS CONCURRENCY STATUS [ROW]");
        std::process::exit(2);
    }
    let (path, status) = (std::path::PathBuf::from(&args[1]), args[4].clone());
    let seconds: u64 = args[2].parse().expect("SECONDS");
    let concurrency: usize = args[3].parse().expect("CONCURRENCY");
    let row = args.get(5).cloned().unwrap_or_else(|| "store".into());

    // The event, and the pipeline's display name that intake gives its execution.
    let (template_id, pipeline_name): (String, Option<String>) = rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.query_row(
                "SELECT e.event_id, x.pipeline_name FROM webhook_events e \
                     LEFT JOIN executions x ON x.plan_execution_id = e.plan_execution_id \
                     WHERE e.status = ?1 ORDER BY e.created_at DESC LIMIT 1",
                [&status],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .unwrap_or_else(|e| panic!("no event with status {status} in {}: {e}", path.display()));
    let store = Arc::new(SqliteStore::open(&path, WriterOptions::default()).expect("open"));
    let template = store
        .get_event(&EventId::parse(&template_id).expect("event id"))
        .await
        .expect("read")
        .expect("template event");
    let pipeline_name = pipeline_name.unwrap_or_default();

    let committed = Arc::new(AtomicU64::new(0));
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (store, committed, template) =
                (Arc::clone(&store), Arc::clone(&committed), template.clone());
            let pipeline_name = pipeline_name.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let mut event = template.clone();
                    event.event_id = store.new_event_id().await.expect("an event id");
                    event.created_at = now_millis();
                    let execution = event.plan_execution_id.as_mut().map(|plan| {
                        *plan = PlanExecutionId::generate();
                        NewExecution {
                            plan_execution_id: plan.clone(),
                            pipeline_name: pipeline_name.clone(),
                            trigger_type: "WEBHOOK_CUSTOM",
                            lease: None,
                        }
                    });
                    store.record_event(event, execution).await.expect("write");
                    committed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let (elapsed, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let n = committed.load(Ordering::Relaxed).max(1) as f64;
    println!(
        "{row} rps={:.0} cpu_us_per_event={:.1} events={n:.0}",
        n / elapsed,
        cpu / n * 1e6
    );
}
