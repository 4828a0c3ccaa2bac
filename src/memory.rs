//! Handing freed memory back to the system.
//!
//! The binary's allocator (mimalloc, `src/main.rs`) keeps what a thread freed in that thread's
//! heap until the thread itself collects it, and SQLite's page cache and statements come from
//! glibc's malloc, which keeps what a burst freed in its arenas (75 MiB resident, idle, after
//! forty 900 KB webhooks on a server that started at 19 MiB) until `malloc_trim`. The calls are
//! the binary's to make (this crate has no unsafe code): `main` registers them with
//! [`set_trim`] and [`set_thread_trim`]. `serve` then runs the process-wide one every
//! [`TRIM_EVERY`] from a thread of its own ([`spawn_trimmer`]), and each long-lived thread
//! collects its own heap: the HTTP workers every [`TRIM_EVERY`] ([`on_http_worker`]), an
//! argon2 thread after each key check ([`trim_this_thread`]), the runtime's threads and the
//! SQLite writer after their work, at most every [`TRIM_EVERY`] ([`now_and_then`]). The writer
//! collects once more when it goes idle: with the truncation of its idle WAL (`checkpoint.rs`). A
//! runtime thread that goes idle within [`TRIM_EVERY`] of its last collection keeps what it freed
//! since, until its next work (the engine's timers wake them).

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often freed memory is handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

static TRIM: OnceLock<fn()> = OnceLock::new();
static THREAD_TRIM: OnceLock<fn()> = OnceLock::new();

thread_local! {
    /// When this thread last collected its heap.
    static LAST_TRIM: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether this HTTP worker already runs its collecting task.
    static HTTP_WORKER_TRIMS: Cell<bool> = const { Cell::new(false) };
}

/// Registers the function the trimmer thread runs every [`TRIM_EVERY`]: what can be handed
/// back from any thread (glibc's arenas, mimalloc's shared arenas).
pub fn set_trim(trim: fn()) {
    let _ = TRIM.set(trim);
}

/// Registers the function that hands what the calling thread freed back to the system.
pub fn set_thread_trim(trim: fn()) {
    let _ = THREAD_TRIM.set(trim);
}

/// Hands what this thread freed back to the system now. For threads that just freed much (an
/// argon2 verification: 19 MiB).
pub fn trim_this_thread() {
    if let Some(&trim) = THREAD_TRIM.get() {
        trim();
        LAST_TRIM.with(|last| last.set(Some(Instant::now())));
    }
}

/// Hands what this thread freed back to the system when it last did so [`TRIM_EVERY`] ago or
/// more. For a thread about to wait for work: cheap enough to call each time (a clock read).
pub fn now_and_then() {
    if THREAD_TRIM.get().is_none() {
        return;
    }
    let due = LAST_TRIM.with(|last| last.get().is_none_or(|at| at.elapsed() >= TRIM_EVERY));
    if due {
        trim_this_thread();
    }
}

/// Called on each HTTP worker thread as it builds its app: starts, once per thread, a task that
/// collects the thread's heap every [`TRIM_EVERY`]. An idle worker wakes for nothing else.
pub fn on_http_worker() {
    if THREAD_TRIM.get().is_none() || HTTP_WORKER_TRIMS.with(|started| started.replace(true)) {
        return;
    }
    actix_web::rt::spawn(async {
        loop {
            actix_web::rt::time::sleep(TRIM_EVERY).await;
            trim_this_thread();
        }
    });
}

/// Starts the thread that calls the process-wide function every [`TRIM_EVERY`]; without one,
/// nothing.
pub fn spawn_trimmer() {
    let Some(&trim) = TRIM.get() else { return };
    let spawned = std::thread::Builder::new()
        .name("triggerd-memory".into())
        .spawn(move || loop {
            std::thread::sleep(TRIM_EVERY);
            trim();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the memory trimmer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static TRIMS: Cell<usize> = const { Cell::new(0) };
    }

    /// Counts the calling thread's trims (other tests' threads count their own).
    fn count() {
        TRIMS.with(|n| n.set(n.get() + 1));
    }

    #[test]
    fn a_thread_trims_when_due_and_when_asked() {
        set_thread_trim(count);
        let trims = || TRIMS.with(Cell::get);
        now_and_then();
        assert_eq!(trims(), 1, "a thread that never trimmed is due");
        now_and_then();
        assert_eq!(trims(), 1, "not again within TRIM_EVERY");
        trim_this_thread();
        assert_eq!(trims(), 2, "asked: trims at once");
        let long_ago = Instant::now()
            .checked_sub(TRIM_EVERY)
            .expect("a clock past boot");
        LAST_TRIM.with(|last| last.set(Some(long_ago)));
        now_and_then();
        assert_eq!(trims(), 3, "due again after TRIM_EVERY");
    }
}
