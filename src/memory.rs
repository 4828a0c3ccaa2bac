//! Handing freed memory back to the system. glibc's malloc keeps what a burst freed in its
//! per-thread arenas (75 MiB resident, idle, after forty 900 KB webhooks on a server that
//! started at 19 MiB); `malloc_trim` returns it (23 MiB). The call is the binary's to make
//! (this crate has no unsafe code): `main` registers it with [`set_trim`], and `serve` runs it
//! every [`TRIM_EVERY`] from a thread of its own.

use std::sync::OnceLock;
use std::time::Duration;

/// How often freed memory is handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

static TRIM: OnceLock<fn()> = OnceLock::new();

/// Registers the function that hands freed memory back to the system.
pub fn set_trim(trim: fn()) {
    let _ = TRIM.set(trim);
}

/// Starts the thread that calls the registered function every [`TRIM_EVERY`]; without one,
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
