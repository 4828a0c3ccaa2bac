//! WAL checkpoints on their own thread.
//!
//! SQLite normally checkpoints inside the commit that pushes the WAL past 1000 pages, which
//! would put copying pages into the database file on the single writer's critical path. The
//! writer disables that (`wal_autocheckpoint=0`) and this thread runs a PASSIVE checkpoint every
//! interval instead, concurrently with the writer; once a checkpoint has caught up, the next
//! commit starts the WAL from the beginning again, so it stays bounded.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// The running checkpoint thread; [`Checkpointer::stop`] ends it.
pub(super) struct Checkpointer {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts checkpointing through `conn` every `every`.
    pub(super) fn start(conn: Connection, every: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("triggerd-sqlite-checkpoint".into())
            .spawn(move || {
                // Wakes every interval; a stop message or a dropped sender ends the loop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                    }
                }
            })?;
        Ok(Self { stop, handle })
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}
