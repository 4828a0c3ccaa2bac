//! Which events' status answers a commit may have changed, told to the status cache before the
//! commit is acknowledged (see [`crate::store::Store::watch_statuses`]).
//!
//! One process owns the database file (see lock.rs) and every write goes through the writer's
//! connection, so temporary triggers on that connection see every change: a changed or deleted
//! execution, a step written or deleted (by its execution's event), a deleted event (retention),
//! and any change to a pipeline, which a queued execution's planned steps are read from (every
//! event then). The triggers call a function that collects the event ids during the
//! transaction; the writer hands them on once the transaction has committed, before it answers
//! the callers, so a caller that wrote and then polls never gets the answer from before its
//! own write.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

use crate::domain::ids::EventId;
use crate::store::{StatusWatcher, StoreError, StoreResult};

/// Name of the SQL function the triggers call with an event id, or NULL for "any event".
const FUNCTION: &str = "triggerd_status_changed";

/// The triggers, created on the writer's connection only (TEMP: they exist for it alone and
/// are never stored in the database file).
const TRIGGERS: &str = "
CREATE TEMP TRIGGER watch_executions_update AFTER UPDATE ON main.executions
    WHEN OLD.event_id IS NOT NULL
    BEGIN SELECT triggerd_status_changed(OLD.event_id); END;
CREATE TEMP TRIGGER watch_executions_delete AFTER DELETE ON main.executions
    WHEN OLD.event_id IS NOT NULL
    BEGIN SELECT triggerd_status_changed(OLD.event_id); END;
CREATE TEMP TRIGGER watch_steps_insert AFTER INSERT ON main.execution_steps
    BEGIN SELECT triggerd_status_changed(event_id) FROM main.executions
        WHERE plan_execution_id = NEW.plan_execution_id AND event_id IS NOT NULL; END;
CREATE TEMP TRIGGER watch_steps_update AFTER UPDATE ON main.execution_steps
    BEGIN SELECT triggerd_status_changed(event_id) FROM main.executions
        WHERE plan_execution_id = NEW.plan_execution_id AND event_id IS NOT NULL; END;
CREATE TEMP TRIGGER watch_steps_delete AFTER DELETE ON main.execution_steps
    BEGIN SELECT triggerd_status_changed(event_id) FROM main.executions
        WHERE plan_execution_id = OLD.plan_execution_id AND event_id IS NOT NULL; END;
CREATE TEMP TRIGGER watch_events_delete AFTER DELETE ON main.webhook_events
    BEGIN SELECT triggerd_status_changed(OLD.event_id); END;
CREATE TEMP TRIGGER watch_pipelines_insert AFTER INSERT ON main.pipelines
    BEGIN SELECT triggerd_status_changed(NULL); END;
CREATE TEMP TRIGGER watch_pipelines_update AFTER UPDATE ON main.pipelines
    BEGIN SELECT triggerd_status_changed(NULL); END;
CREATE TEMP TRIGGER watch_pipelines_delete AFTER DELETE ON main.pipelines
    BEGIN SELECT triggerd_status_changed(NULL); END;
";

/// What the triggers collected since the last flush, and who is told.
#[derive(Default)]
pub(super) struct StatusChanges {
    pending: Mutex<Changed>,
    watcher: OnceLock<StatusWatcher>,
}

#[derive(Default)]
struct Changed {
    events: Vec<EventId>,
    all: bool,
}

impl StatusChanges {
    /// Creates the triggers and their function on `conn`, the writer's connection.
    pub(super) fn install(self: &Arc<Self>, conn: &Connection) -> StoreResult<()> {
        let changes = Arc::clone(self);
        // Collected whether or not anyone watches yet: a transaction still open when the
        // watcher is set is told in full when it commits.
        conn.create_scalar_function(FUNCTION, 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
            let id: Option<String> = ctx.get(0)?;
            let mut pending = changes.pending.lock();
            match id {
                // Stored ids parse; one that does not has no status to cache anyway.
                Some(id) => pending.events.extend(EventId::parse(&id)),
                None => pending.all = true,
            }
            Ok(None::<i64>)
        })
        .and_then(|()| conn.execute_batch(TRIGGERS))
        .map_err(|e| StoreError::db("watching status changes", e))
    }

    /// Sets who is told; false when someone already is.
    pub(super) fn watch(&self, watcher: StatusWatcher) -> bool {
        self.watcher.set(watcher).is_ok()
    }

    /// Tells the watcher what the transaction that just ended changed (committed or not: an
    /// answer read again is never wrong).
    pub(super) fn flush(&self) {
        let mut changed = std::mem::take(&mut *self.pending.lock());
        // One execution is often written several times in a transaction, one after the other.
        changed.events.dedup();
        let Some(watcher) = self.watcher.get() else {
            return;
        };
        if changed.all {
            watcher(None);
        } else if !changed.events.is_empty() {
            watcher(Some(&changed.events));
        }
    }
}
