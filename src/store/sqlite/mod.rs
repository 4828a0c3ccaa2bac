//! The embedded SQLite backend: bundled SQLite in WAL mode with `synchronous=FULL`, one
//! group-committing writer thread and a small pool of read-only connections.
//!
//! Reads run inline on the calling task: they are indexed point or page lookups that take
//! microseconds in WAL mode (readers never wait for the writer), so handing them to a blocking
//! pool would cost more than it saves.

mod checkpoint;
mod event_ids;
mod executions;
mod lock;
mod migrate;
mod outbound;
mod watch;
mod writer;

pub(crate) use writer::{BATCH_SIZE_METRIC, GROUP_SIZE_METRIC, MAX_PENDING};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use self::checkpoint::Checkpointer;
use self::event_ids::EventIds;
use self::watch::StatusChanges;
use self::writer::{Coalescer, Writer, WriterThread};
use super::cursor::{decode_cursor, decode_name_cursor, decode_time_cursor, encode_cursor, page};
use super::{
    Account, ApiKeyRecord, ConsoleSession, EventFilter, Execution, Millis, NewExecution, Page,
    PipelineRecord, RecordOutcome, Role, Scope, SettingScope, Store, StoreError, StoreResult,
    TriggerRecord, WebhookEvent, IDEMPOTENCY_WINDOW_MS,
};
use crate::domain::ids::{
    token_digest, AccountId, EventId, Identifier, KeyId, PlanExecutionId, ProjectRef,
};
use crate::domain::settings::{ScopedValue, SettingChain};

/// Tuning for the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Writes that may wait for the writer before intake answers 503.
    pub queue_capacity: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// The WAL size past which the writer finishes a checkpoint so the WAL starts over.
    pub wal_limit_bytes: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            max_batch: 512,
            wal_limit_bytes: 256 << 20,
        }
    }
}

/// The writer's page cache (SQLite's default is 2 MiB). Every index leaf a batch touches is
/// read first: a cache that holds the indexes' recent edges saves a read per touched page. It
/// fills only as pages are used, and is released when the writer is idle.
///
/// Not larger: a B-tree rebalance parks a page at a number past the end of the file for a
/// moment (`balance_nonroot` in SQLite 3.46), and from then on every commit walks the whole
/// cache to drop pages past the end (`pcache1TruncateUnsafe`: 6% of all CPU in the profile of
/// no-match intake with 32 MiB). The walk costs what the cache holds, so 8 MiB bounds it to
/// 2,048 pages while still holding the indexes' right edges.
const WRITER_CACHE_KIB: u32 = 8 * 1024;

/// How often the checkpoint thread copies the WAL into the database file while nothing is
/// written, and how long a WAL must stay unwritten before it is truncated. Under writes the
/// passes come as often as the writer's pace needs (`checkpoint::Pace`).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The SQLite store.
pub struct SqliteStore {
    /// Held while the store is open: no other process may use the file.
    lock: Mutex<Option<lock::FileLock>>,
    writer: Writer,
    writer_thread: Mutex<Option<WriterThread>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    readers: ReadPool,
    /// Webhook events, written in groups.
    events: Coalescer<EventWrite, Option<WebhookEvent>>,
    /// Executions' ends, written in groups; each may claim the next execution.
    endings: Coalescer<executions::Ending, Option<crate::store::executions::Claim>>,
    /// Delivery attempts, recorded in groups.
    attempts: Coalescer<outbound::Attempt, ()>,
    /// Mints event ids and finds their rows.
    event_ids: Arc<EventIds>,
    /// Which events' status answers each commit changed, for the status cache.
    statuses: Arc<StatusChanges>,
    /// The project after which retention's next purge of events goes on.
    purge_from: Arc<Mutex<crate::store::executions::ProjectKey>>,
}

/// Parses `sqlite://PATH` (relative or absolute) into a file path.
pub fn path_from_url(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    (!rest.is_empty()).then(|| PathBuf::from(rest))
}

/// Makes the database readable by its owner only: it holds key hashes and every tenant's
/// payloads, and a Run step running as another user must not read it. A new file is created
/// with mode 0600 (no moment when it is readable); an existing one, and its `-wal` and `-shm`
/// files, are set to 0600 (SQLite gives a WAL it creates the database file's mode).
fn make_private(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::db(format!("creating {}", path.display()), e)),
    }
    let mut name = path.as_os_str().to_owned();
    let base = name.clone();
    for suffix in ["", "-wal", "-shm"] {
        name.clone_from(&base);
        name.push(suffix);
        let file = Path::new(&name);
        let Ok(meta) = std::fs::metadata(file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            if let Err(e) = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
                tracing::warn!(error = %e, file = %file.display(), "could not make the database readable by its owner only");
            }
        }
    }
    Ok(())
}

/// A webhook event to record, with the execution it queues (`record_event`).
struct EventWrite {
    event: WebhookEvent,
    /// Where the event goes (see `EventIds::place`), and whether it is found by `legacy_id`.
    rowid: i64,
    legacy: bool,
    execution: Option<NewExecution>,
}

/// Records one event on the writer's connection; `Some(previous)` when its idempotency key was
/// used before (then nothing is written).
fn write_event(
    c: &Connection,
    ids: &EventIds,
    w: &EventWrite,
) -> StoreResult<Option<WebhookEvent>> {
    let e = &w.event;
    if let Some(key) = &e.idempotency_key {
        if let Some(previous) = claim_idempotency_key(c, ids, e, key)? {
            return Ok(Some(previous));
        }
    }
    if let (Some(x), Some(plan)) = (&w.execution, &e.plan_execution_id) {
        executions::insert_execution(
            c,
            &executions::QueuedExecution {
                plan,
                scope: &e.scope,
                pipeline: &e.pipeline,
                pipeline_name: &x.pipeline_name,
                trigger_type: x.trigger_type,
                trigger: Some(&e.trigger),
                event_id: Some(e.event_id.as_str()),
                runtime_input: &e.runtime_input,
                created_at: e.created_at,
                lease: x.lease.as_ref(),
            },
        )?;
    }
    c.prepare_cached(&format!(
        "INSERT INTO webhook_events (rowid, legacy_id, {EVENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            w.rowid,
            w.legacy.then(|| e.event_id.as_str()),
            e.event_id.as_str(),
            e.scope.account.as_str(),
            e.scope.org.as_str(),
            e.scope.project.as_str(),
            e.pipeline,
            e.trigger,
            e.status,
            e.message,
            e.exception_occured,
            e.payload,
            e.headers.get(),
            e.runtime_input,
            e.condition_results.get(),
            e.plan_execution_id.as_ref().map(|p| p.as_str()),
            e.idempotency_key,
            e.created_at
        ])
    })
    .map_err(sql_err("recording a webhook event"))?;
    Ok(None)
}

fn open_rw(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::db(format!("opening database {}", path.display()), e))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;
         PRAGMA busy_timeout=5000;
         PRAGMA temp_store=MEMORY;",
    )
    .map_err(|e| StoreError::db("configuring the database connection", e))?;
    Ok(conn)
}

/// Creates the database if needed and applies pending migrations. Returns how many ran.
/// Refused while another process has the database open.
pub fn migrate(path: &Path) -> StoreResult<usize> {
    let _lock = lock::lock(path)?;
    make_private(path)?;
    let mut conn = open_rw(path)?;
    migrate::apply(&mut conn)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`, and starts the writer.
    pub fn open(path: &Path, options: WriterOptions) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::db(format!("creating {}", dir.display()), e))?;
        }
        let lock = lock::lock(path)?;
        make_private(path)?;
        let mut conn = open_rw(path)?;
        migrate::apply(&mut conn)?;
        let event_ids = Arc::new(EventIds::load(&conn)?);
        // Checkpoints are the checkpoint thread's (see checkpoint.rs). A WAL that starts over
        // keeps its file, so commits reuse its blocks. The WAL passes the limit by what is
        // written between two checks, and SQLite cuts the file back to `journal_size_limit` in
        // the first commit after a restart: set to the limit itself, that freed the overshoot
        // on every restart, an ftruncate that held the writer for 17-94 ms. At twice the limit
        // only an overshoot larger than the limit itself is cut; the idle truncation still
        // empties the file.
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={}; PRAGMA cache_size=-{};",
            options.wal_limit_bytes.saturating_mul(2),
            WRITER_CACHE_KIB
        ))
        .map_err(|e| StoreError::db("configuring the writer connection", e))?;
        let statuses = Arc::new(StatusChanges::default());
        statuses.install(&conn)?;
        let flush = Arc::clone(&statuses);
        let (nudge, wakes) = checkpoint::nudges(path, options.wal_limit_bytes);
        let (writer, thread) =
            Writer::start(conn, options.queue_capacity, options.max_batch, move || {
                flush.flush();
                nudge.after_commit();
            })
            .map_err(|e| StoreError::db("starting the writer thread", e))?;
        let checkpointer = Checkpointer::start(
            open_rw(path)?,
            writer.clone(),
            wakes,
            CHECKPOINT_EVERY,
            options.wal_limit_bytes,
        )
        .map_err(|e| StoreError::db("starting the checkpoint thread", e))?;
        Ok(Self {
            lock: Mutex::new(Some(lock)),
            events: {
                let ids = Arc::clone(&event_ids);
                Coalescer::new(writer.clone(), move |c, w| write_event(c, &ids, w))
            },
            endings: Coalescer::new(writer.clone(), executions::write_ending),
            attempts: Coalescer::new(writer.clone(), outbound::write_attempt),
            event_ids,
            statuses,
            purge_from: Arc::default(),
            writer,
            writer_thread: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: ReadPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            },
        })
    }

    /// Commits every queued write and stops the writer. Later writes fail with `ShuttingDown`.
    async fn shutdown(&self) {
        let checkpointer = self.checkpointer.lock().take();
        if let Some(checkpointer) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || checkpointer.stop()).await;
        }
        let thread = self.writer_thread.lock().take();
        if let Some(thread) = thread {
            thread.shutdown().await;
        }
        // Every write is committed: another process may have the file now.
        self.lock.lock().take();
    }

    fn read<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        self.readers.with(what, f)
    }
}

/// Read-only connections, opened on demand and kept for reuse.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

const MAX_IDLE_READERS: usize = 16;

impl ReadPool {
    fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let conn = match self.idle.lock().pop() {
            Some(c) => c,
            None => Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .and_then(|c| c.busy_timeout(std::time::Duration::from_secs(5)).map(|_| c))
            .map_err(|e| StoreError::db("opening a read connection", e))?,
        };
        // One transaction, so that a read of several statements sees one state of the
        // database, and the snapshot (with the page cache that WAL mode drops whenever the
        // writer committed since) is taken once, not per statement.
        let result = in_read_transaction(&conn, f).map_err(|e| StoreError::db(what.to_owned(), e));
        let mut idle = self.idle.lock();
        // One still in a transaction (its end failed) is not used again.
        if idle.len() < MAX_IDLE_READERS && conn.is_autocommit() {
            idle.push(conn);
        }
        result
    }
}

fn read_pipeline(
    c: &Connection,
    p: &ProjectRef,
    id: &Identifier,
) -> rusqlite::Result<Option<PipelineRecord>> {
    c.prepare_cached(&format!(
        "SELECT {PIPELINE_COLS} FROM pipelines WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4"
    ))?
    .query_row(
        [p.account.as_str(), p.org.as_str(), p.project.as_str(), id.as_str()],
        pipeline_row,
    )
    .optional()
}

/// The event of this id: at the rowid the id leads to, or else one stored before migration 0011
/// (see event_ids.rs). Two lookups, not one `OR`: SQLite searched both for every id, a random
/// leaf of `legacy_id`'s index even for an id found at its rowid, which on a database upgraded
/// with a million events is a page read from the OS on most status reads.
fn read_event(
    c: &Connection,
    ids: &EventIds,
    id: &EventId,
) -> rusqlite::Result<Option<WebhookEvent>> {
    let at_rowid = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLS} FROM webhook_events WHERE rowid = ?1 AND event_id = ?2"
        ))?
        .query_row(params![ids.rowid(id), id.as_str()], event_row)
        .optional()?;
    if at_rowid.is_some() {
        return Ok(at_rowid);
    }
    c.prepare_cached(&format!(
        "SELECT {EVENT_COLS} FROM webhook_events WHERE legacy_id = ?1"
    ))?
    .query_row([id.as_str()], event_row)
    .optional()
}

fn in_read_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = f(conn);
    // A read changes nothing: ending it either way only releases the snapshot.
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.prepare_cached(end).and_then(|mut s| s.execute([]));
    let value = result?;
    ended?;
    Ok(value)
}

/// A JSON column, as a tree or kept as its text ([`crate::store::JsonText`]).
fn json_col<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn conversion_error(idx: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        format!("stored {what} is invalid").into(),
    )
}

fn identifier_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Identifier> {
    let s: String = row.get(idx)?;
    Identifier::parse(&s, "stored identifier").map_err(|_| conversion_error(idx, "identifier"))
}

fn account_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<AccountId> {
    let s: String = row.get(idx)?;
    AccountId::parse(&s).map_err(|_| conversion_error(idx, "account id"))
}

fn project_cols(row: &Row<'_>, first: usize) -> rusqlite::Result<ProjectRef> {
    Ok(ProjectRef {
        account: account_col(row, first)?,
        org: identifier_col(row, first + 1)?,
        project: identifier_col(row, first + 2)?,
    })
}

fn scope_row(row: &Row<'_>, has_project: bool) -> rusqlite::Result<Scope> {
    let o = if has_project { 1 } else { 0 };
    Ok(Scope {
        identifier: row.get(1 + o)?,
        account_identifier: row.get(0)?,
        org_identifier: row.get(1)?,
        project_identifier: if has_project { Some(row.get(2)?) } else { None },
        name: row.get(2 + o)?,
        created_at: row.get(3 + o)?,
        updated_at: row.get(4 + o)?,
    })
}

/// An `only` list as the JSON array `json_each` reads (`NULL` for no restriction).
fn only_json(only: Option<&[String]>) -> Option<String> {
    only.map(|ids| serde_json::Value::from(ids.to_vec()).to_string())
}

fn account_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        identifier: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
    })
}

const API_KEY_COLS: &str =
    "key_id, account_id, name, role, projects, hash, created_at, expires_at, revoked_at";

const SESSION_COLS: &str = "token_hash, key_id, csrf, project, created_at, last_seen";

fn session_row(row: &Row<'_>) -> rusqlite::Result<ConsoleSession> {
    let key_id: String = row.get(1)?;
    Ok(ConsoleSession {
        token_hash: row.get(0)?,
        key_id: KeyId::parse(&key_id).ok_or_else(|| conversion_error(1, "key id"))?,
        csrf: row.get(2)?,
        project: row.get(3)?,
        created_at: row.get(4)?,
        last_seen: row.get(5)?,
    })
}

fn api_key_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let key_id: String = row.get(0)?;
    let role: String = row.get(3)?;
    let projects: Option<String> = row.get(4)?;
    Ok(ApiKeyRecord {
        key_id: KeyId::parse(&key_id).ok_or_else(|| conversion_error(0, "key id"))?,
        account: account_col(row, 1)?,
        name: row.get(2)?,
        role: Role::from_stored(&role).ok_or_else(|| conversion_error(3, "role"))?,
        projects: projects
            .map(|p| serde_json::from_str(&p).map_err(|_| conversion_error(4, "project list")))
            .transpose()?,
        hash: row.get(5)?,
        created_at: row.get(6)?,
        expires_at: row.get(7)?,
        revoked_at: row.get(8)?,
    })
}

const PIPELINE_COLS: &str =
    "account_id, org_id, project_id, id, name, spec, created_at, updated_at";

fn pipeline_row(row: &Row<'_>) -> rusqlite::Result<PipelineRecord> {
    Ok(PipelineRecord {
        scope: project_cols(row, 0)?,
        identifier: identifier_col(row, 3)?,
        name: row.get(4)?,
        spec: json_col(row, 5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

const TRIGGER_COLS: &str =
    "account_id, org_id, project_id, pipeline_id, id, name, token, enabled, spec, created_at, updated_at";

fn trigger_row(row: &Row<'_>) -> rusqlite::Result<TriggerRecord> {
    Ok(TriggerRecord {
        scope: project_cols(row, 0)?,
        pipeline: identifier_col(row, 3)?,
        identifier: identifier_col(row, 4)?,
        name: row.get(5)?,
        token: row.get(6)?,
        enabled: row.get(7)?,
        spec: json_col(row, 8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

const EVENT_COLS: &str =
    "event_id, account_id, org_id, project_id, pipeline_id, trigger_id, status, \
     message, exception_occured, payload, headers, runtime_input, condition_results, \
     plan_execution_id, idempotency_key, created_at";

fn event_row(row: &Row<'_>) -> rusqlite::Result<WebhookEvent> {
    let event_id: String = row.get(0)?;
    let plan: Option<String> = row.get(13)?;
    Ok(WebhookEvent {
        event_id: EventId::parse(&event_id).ok_or_else(|| conversion_error(0, "event id"))?,
        scope: project_cols(row, 1)?,
        pipeline: row.get(4)?,
        trigger: row.get(5)?,
        status: row.get(6)?,
        message: row.get(7)?,
        exception_occured: row.get(8)?,
        payload: row.get(9)?,
        headers: json_col(row, 10)?,
        runtime_input: row.get(11)?,
        condition_results: json_col(row, 12)?,
        plan_execution_id: plan.and_then(|p| PlanExecutionId::parse(&p)),
        idempotency_key: row.get(14)?,
        created_at: row.get(15)?,
    })
}

const EXECUTION_COLS: &str = "plan_execution_id, account_id, org_id, project_id, pipeline_id, \
     pipeline_name, status, trigger_type, trigger_id, event_id, run_sequence, runtime_input, \
     created_at, started_at, ended_at";

fn execution_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
    let id: String = row.get(0)?;
    Ok(Execution {
        plan_execution_id: PlanExecutionId::parse(&id)
            .ok_or_else(|| conversion_error(0, "execution id"))?,
        scope: project_cols(row, 1)?,
        pipeline: row.get(4)?,
        pipeline_name: row.get(5)?,
        status: row.get(6)?,
        trigger_type: row.get(7)?,
        trigger: row.get(8)?,
        event_id: row.get(9)?,
        run_sequence: row.get(10)?,
        runtime_input: row.get(11)?,
        created_at: row.get(12)?,
        started_at: row.get(13)?,
        ended_at: row.get(14)?,
    })
}

fn settings_key(scope: &SettingScope) -> (String, String, String) {
    (
        scope.account.to_string(),
        scope
            .org
            .as_ref()
            .map(|o| o.to_string())
            .unwrap_or_default(),
        scope
            .project
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    )
}

fn sql_err(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::db(what, e)
}

/// Upserts a named scope row; returns whether it was created.
fn upsert_scope(
    conn: &Connection,
    table: &str,
    key_cols: &[&str],
    key: &[&dyn rusqlite::ToSql],
    name: &str,
    now: Millis,
) -> rusqlite::Result<bool> {
    let where_clause = key_cols
        .iter()
        .map(|c| format!("{c} = ?"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let mut update_params: Vec<&dyn rusqlite::ToSql> = vec![&name, &now];
    update_params.extend_from_slice(key);
    let updated = conn.execute(
        &format!("UPDATE {table} SET name = ?, updated_at = ? WHERE {where_clause}"),
        update_params.as_slice(),
    )?;
    if updated > 0 {
        return Ok(false);
    }
    let cols = key_cols.join(", ");
    let marks = vec!["?"; key_cols.len() + 3].join(", ");
    let mut insert_params: Vec<&dyn rusqlite::ToSql> = key.to_vec();
    insert_params.extend_from_slice(&[&name, &now, &now]);
    conn.execute(
        &format!("INSERT INTO {table} ({cols}, name, created_at, updated_at) VALUES ({marks})"),
        insert_params.as_slice(),
    )?;
    Ok(true)
}

/// Claims `key` for `e` in `idempotency_keys`: the key is free, or its holder is older than
/// the window. Returns the holder's event when the key is taken (the caller replays it).
fn claim_idempotency_key(
    c: &Connection,
    ids: &EventIds,
    e: &WebhookEvent,
    key: &str,
) -> StoreResult<Option<WebhookEvent>> {
    let scope = params![
        e.scope.account.as_str(),
        e.scope.org.as_str(),
        e.scope.project.as_str(),
        e.pipeline,
        e.trigger,
        key
    ];
    let claimed = c
        .prepare_cached(
            "INSERT INTO idempotency_keys (account_id, org_id, project_id, pipeline_id, trigger_id, key, event_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (account_id, org_id, project_id, pipeline_id, trigger_id, key) \
             DO UPDATE SET event_id = excluded.event_id, created_at = excluded.created_at \
             WHERE idempotency_keys.created_at <= ?9 RETURNING event_id",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    e.scope.account.as_str(),
                    e.scope.org.as_str(),
                    e.scope.project.as_str(),
                    e.pipeline,
                    e.trigger,
                    key,
                    e.event_id.as_str(),
                    e.created_at,
                    e.created_at - IDEMPOTENCY_WINDOW_MS
                ],
                |_| Ok(()),
            )
            .optional()
        })
        .map_err(sql_err("claiming an idempotency key"))?;
    if claimed.is_some() {
        return Ok(None);
    }
    let holder = c
        .prepare_cached(
            "SELECT event_id FROM idempotency_keys \
             WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4 \
               AND trigger_id = ?5 AND key = ?6",
        )
        .and_then(|mut s| s.query_row(scope, |r| r.get::<_, String>(0)).optional())
        .and_then(|holder| match holder.as_deref().and_then(EventId::parse) {
            Some(holder) => read_event(c, ids, &holder),
            None => Ok(None),
        })
        .map_err(sql_err("looking up an idempotency key"))?;
    match holder {
        Some(previous) => Ok(Some(previous)),
        None => {
            // The holder's event is gone (purged): the key passes to this event.
            c.prepare_cached(
                "UPDATE idempotency_keys SET event_id = ?7, created_at = ?8 WHERE account_id = ?1 \
                 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4 AND trigger_id = ?5 AND key = ?6",
            )
            .and_then(|mut s| {
                s.execute(params![
                    e.scope.account.as_str(),
                    e.scope.org.as_str(),
                    e.scope.project.as_str(),
                    e.pipeline,
                    e.trigger,
                    key,
                    e.event_id.as_str(),
                    e.created_at
                ])
            })
            .map_err(sql_err("claiming an idempotency key"))?;
            Ok(None)
        }
    }
}

fn is_fk_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

#[async_trait]
impl Store for SqliteStore {
    fn watch_statuses(&self, watcher: crate::store::StatusWatcher) -> bool {
        self.statuses.watch(watcher)
    }

    async fn ready(&self) -> StoreResult<bool> {
        self.read("checking readiness", |c| {
            let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            Ok(version == migrate::latest_version())
        })
    }

    async fn close(&self) {
        self.shutdown().await;
    }

    async fn put_account(&self, id: &AccountId, name: &str) -> StoreResult<(Account, bool)> {
        let (id, name) = (id.to_string(), name.to_owned());
        self.writer
            .write(move |c| {
                let now = super::now_millis();
                let created = upsert_scope(c, "accounts", &["id"], &[&id], &name, now)
                    .map_err(sql_err("writing an account"))?;
                if created {
                    upsert_scope(
                        c,
                        "orgs",
                        &["account_id", "id"],
                        &[&id, &"default"],
                        "Default",
                        now,
                    )
                    .map_err(sql_err("creating the default org"))?;
                }
                let account = c
                    .query_row(
                        "SELECT id, name, created_at, updated_at FROM accounts WHERE id = ?1",
                        [&id],
                        account_row,
                    )
                    .map_err(sql_err("reading an account"))?;
                Ok((account, created))
            })
            .await
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        self.read("reading an account", |c| {
            c.prepare_cached("SELECT id, name, created_at, updated_at FROM accounts WHERE id = ?1")?
                .query_row([id.as_str()], account_row)
                .optional()
        })
    }

    async fn list_accounts(&self, cursor: Option<&str>, limit: u32) -> StoreResult<Page<Account>> {
        let after = decode_name_cursor(cursor)?;
        let items = self.read("listing accounts", |c| {
            c.prepare_cached(
                "SELECT id, name, created_at, updated_at FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![after, limit + 1], account_row)?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(page(items, limit, |a| encode_cursor(&[&a.identifier])))
    }

    async fn put_org(
        &self,
        acc: &AccountId,
        org: &Identifier,
        name: &str,
    ) -> StoreResult<(Scope, bool)> {
        let (acc, org, name) = (acc.to_string(), org.to_string(), name.to_owned());
        self.writer
            .write(move |c| {
                let now = super::now_millis();
                let created = upsert_scope(c, "orgs", &["account_id", "id"], &[&acc, &org], &name, now)
                    .map_err(|e| {
                        if is_fk_violation(&e) {
                            StoreError::ParentMissing(format!("Account {acc} does not exist"))
                        } else {
                            StoreError::db("writing an org", e)
                        }
                    })?;
                let scope = c
                    .query_row(
                        "SELECT account_id, id, name, created_at, updated_at FROM orgs WHERE account_id = ?1 AND id = ?2",
                        [&acc, &org],
                        |r| scope_row(r, false),
                    )
                    .map_err(sql_err("reading an org"))?;
                Ok((scope, created))
            })
            .await
    }

    async fn get_org(&self, acc: &AccountId, org: &Identifier) -> StoreResult<Option<Scope>> {
        self.read("reading an org", |c| {
            c.prepare_cached(
                "SELECT account_id, id, name, created_at, updated_at FROM orgs WHERE account_id = ?1 AND id = ?2",
            )?
            .query_row([acc.as_str(), org.as_str()], |r| scope_row(r, false))
            .optional()
        })
    }

    async fn list_orgs(
        &self,
        acc: &AccountId,
        only: Option<&[String]>,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Scope>> {
        let after = decode_name_cursor(cursor)?;
        let only = only_json(only);
        let items = self.read("listing orgs", |c| {
            c.prepare_cached(
                "SELECT account_id, id, name, created_at, updated_at FROM orgs WHERE account_id = ?1 \
                 AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2))) \
                 AND id > ?3 ORDER BY id LIMIT ?4",
            )?
            .query_map(params![acc.as_str(), only, after, limit + 1], |r| {
                scope_row(r, false)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(page(items, limit, |o| encode_cursor(&[&o.identifier])))
    }

    async fn delete_org(&self, acc: &AccountId, org: &Identifier) -> StoreResult<bool> {
        let (acc, org) = (acc.to_string(), org.to_string());
        self.writer
            .write(move |c| {
                c.execute(
                    "DELETE FROM settings WHERE account_id = ?1 AND org_id = ?2",
                    [&acc, &org],
                )
                .map_err(sql_err("deleting org settings"))?;
                let n = c
                    .execute(
                        "DELETE FROM orgs WHERE account_id = ?1 AND id = ?2",
                        [&acc, &org],
                    )
                    .map_err(sql_err("deleting an org"))?;
                Ok(n > 0)
            })
            .await
    }

    async fn put_project(&self, p: &ProjectRef, name: &str) -> StoreResult<(Scope, bool)> {
        let (acc, org, proj, name) = (
            p.account.to_string(),
            p.org.to_string(),
            p.project.to_string(),
            name.to_owned(),
        );
        self.writer
            .write(move |c| {
                let now = super::now_millis();
                let created = upsert_scope(
                    c,
                    "projects",
                    &["account_id", "org_id", "id"],
                    &[&acc, &org, &proj],
                    &name,
                    now,
                )
                .map_err(|e| {
                    if is_fk_violation(&e) {
                        StoreError::ParentMissing(format!("Org {acc}/{org} does not exist"))
                    } else {
                        StoreError::db("writing a project", e)
                    }
                })?;
                let scope = c
                    .query_row(
                        "SELECT account_id, org_id, id, name, created_at, updated_at FROM projects \
                         WHERE account_id = ?1 AND org_id = ?2 AND id = ?3",
                        [&acc, &org, &proj],
                        |r| scope_row(r, true),
                    )
                    .map_err(sql_err("reading a project"))?;
                Ok((scope, created))
            })
            .await
    }

    async fn get_project(&self, p: &ProjectRef) -> StoreResult<Option<Scope>> {
        self.read("reading a project", |c| {
            c.prepare_cached(
                "SELECT account_id, org_id, id, name, created_at, updated_at FROM projects \
                 WHERE account_id = ?1 AND org_id = ?2 AND id = ?3",
            )?
            .query_row(
                [p.account.as_str(), p.org.as_str(), p.project.as_str()],
                |r| scope_row(r, true),
            )
            .optional()
        })
    }

    async fn list_projects(
        &self,
        acc: &AccountId,
        org: &Identifier,
        only: Option<&[String]>,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Scope>> {
        let after = decode_name_cursor(cursor)?;
        let only = only_json(only);
        let items = self.read("listing projects", |c| {
            c.prepare_cached(
                "SELECT account_id, org_id, id, name, created_at, updated_at FROM projects \
                 WHERE account_id = ?1 AND org_id = ?2 \
                 AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3))) \
                 AND id > ?4 ORDER BY id LIMIT ?5",
            )?
            .query_map(
                params![acc.as_str(), org.as_str(), only, after, limit + 1],
                |r| scope_row(r, true),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(page(items, limit, |p| encode_cursor(&[&p.identifier])))
    }

    async fn delete_project(&self, p: &ProjectRef) -> StoreResult<bool> {
        let (acc, org, proj) = (
            p.account.to_string(),
            p.org.to_string(),
            p.project.to_string(),
        );
        self.writer
            .write(move |c| {
                c.execute(
                    "DELETE FROM settings WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3",
                    [&acc, &org, &proj],
                )
                .map_err(sql_err("deleting project settings"))?;
                let n = c
                    .execute(
                        "DELETE FROM projects WHERE account_id = ?1 AND org_id = ?2 AND id = ?3",
                        [&acc, &org, &proj],
                    )
                    .map_err(sql_err("deleting a project"))?;
                Ok(n > 0)
            })
            .await
    }

    async fn insert_api_key(&self, key: ApiKeyRecord) -> StoreResult<bool> {
        self.writer
            .write(move |c| {
                let projects = key
                    .projects
                    .as_ref()
                    .map(|p| serde_json::to_string(p).unwrap_or_else(|_| "[]".into()));
                // One unrevoked root key: checked in the same statement, which SQLite's
                // writer lock makes atomic across processes.
                let stored = c.execute(
                    &format!(
                        "INSERT INTO api_keys ({API_KEY_COLS}) \
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 \
                         WHERE ?2 <> '_root' OR NOT EXISTS ( \
                           SELECT 1 FROM api_keys WHERE account_id = '_root' AND revoked_at IS NULL) \
                         ON CONFLICT DO NOTHING"
                    ),
                    params![
                        key.key_id.as_str(),
                        key.account.as_str(),
                        key.name,
                        key.role.as_str(),
                        projects,
                        key.hash,
                        key.created_at,
                        key.expires_at,
                        key.revoked_at
                    ],
                )
                .map_err(sql_err("storing an API key"))?;
                Ok(stored == 1)
            })
            .await
    }

    async fn get_api_key(&self, key_id: &KeyId) -> StoreResult<Option<ApiKeyRecord>> {
        self.read("reading an API key", |c| {
            c.prepare_cached(&format!(
                "SELECT {API_KEY_COLS} FROM api_keys WHERE key_id = ?1"
            ))?
            .query_row([key_id.as_str()], api_key_row)
            .optional()
        })
    }

    async fn list_api_keys(&self, acc: &AccountId) -> StoreResult<Vec<ApiKeyRecord>> {
        self.read("listing API keys", |c| {
            c.prepare_cached(&format!(
                "SELECT {API_KEY_COLS} FROM api_keys WHERE account_id = ?1 ORDER BY created_at, key_id"
            ))?
            .query_map([acc.as_str()], api_key_row)?
            .collect()
        })
    }

    async fn revoke_api_key(&self, acc: &AccountId, key_id: &KeyId) -> StoreResult<bool> {
        let (acc, key_id) = (acc.to_string(), key_id.to_string());
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "UPDATE api_keys SET revoked_at = ?1 WHERE account_id = ?2 AND key_id = ?3 AND revoked_at IS NULL",
                        params![super::now_millis(), acc, key_id],
                    )
                    .map_err(sql_err("revoking an API key"))?;
                Ok(n > 0)
            })
            .await
    }

    async fn has_root_key(&self) -> StoreResult<bool> {
        self.read("looking for a root key", |c| {
            c.query_row(
                "SELECT EXISTS(SELECT 1 FROM api_keys WHERE account_id = '_root' AND revoked_at IS NULL)",
                [],
                |r| r.get(0),
            )
        })
    }

    async fn create_session(&self, s: ConsoleSession, idle_before: Millis) -> StoreResult<()> {
        self.writer
            .write(move |c| {
                c.execute(
                    "DELETE FROM console_sessions WHERE last_seen < ?1",
                    [idle_before],
                )
                .map_err(sql_err("deleting idle console sessions"))?;
                c.execute(
                    &format!("INSERT INTO console_sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                    params![s.token_hash, s.key_id.as_str(), s.csrf, s.project, s.created_at, s.last_seen],
                )
                .map_err(sql_err("storing a console session"))?;
                Ok(())
            })
            .await
    }

    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<ConsoleSession>> {
        self.read("reading a console session", |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM console_sessions WHERE token_hash = ?1"
            ))?
            .query_row([token_hash], session_row)
            .optional()
        })
    }

    async fn touch_session(
        &self,
        token_hash: &str,
        last_seen: Millis,
        project: Option<&str>,
    ) -> StoreResult<()> {
        let (token_hash, project) = (token_hash.to_owned(), project.map(str::to_owned));
        self.writer
            .write(move |c| {
                c.execute(
                    "UPDATE console_sessions SET last_seen = ?2, project = COALESCE(?3, project) WHERE token_hash = ?1",
                    params![token_hash, last_seen, project],
                )
                .map_err(sql_err("recording a console session's use"))?;
                Ok(())
            })
            .await
    }

    async fn claim_session_once(&self, token_hash: &str, once: &str) -> StoreResult<bool> {
        let (token_hash, once) = (token_hash.to_owned(), once.to_owned());
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "UPDATE console_sessions SET used_once = ?2 \
                         WHERE token_hash = ?1 AND (used_once IS NULL OR used_once <> ?2)",
                        params![token_hash, once],
                    )
                    .map_err(sql_err("claiming a console form's one-time token"))?;
                Ok(n > 0)
            })
            .await
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        let token_hash = token_hash.to_owned();
        self.writer
            .write(move |c| {
                c.execute(
                    "DELETE FROM console_sessions WHERE token_hash = ?1",
                    [token_hash],
                )
                .map_err(sql_err("deleting a console session"))?;
                Ok(())
            })
            .await
    }

    async fn put_setting(
        &self,
        scope: &SettingScope,
        name: &str,
        value: ScopedValue,
    ) -> StoreResult<()> {
        let (acc, org, proj) = settings_key(scope);
        let name = name.to_owned();
        self.writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO settings (account_id, org_id, project_id, name, value, allow_overrides, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (account_id, org_id, project_id, name) DO UPDATE SET \
                     value = excluded.value, allow_overrides = excluded.allow_overrides, updated_at = excluded.updated_at",
                    params![acc, org, proj, name, value.value, value.allow_overrides, super::now_millis()],
                )
                .map_err(sql_err("writing a setting"))?;
                Ok(())
            })
            .await
    }

    async fn delete_setting(&self, scope: &SettingScope, name: &str) -> StoreResult<bool> {
        let (acc, org, proj) = settings_key(scope);
        let name = name.to_owned();
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "DELETE FROM settings WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND name = ?4",
                        params![acc, org, proj, name],
                    )
                    .map_err(sql_err("deleting a setting"))?;
                Ok(n > 0)
            })
            .await
    }

    async fn setting_chain(&self, scope: &SettingScope, name: &str) -> StoreResult<SettingChain> {
        let (acc, org, proj) = settings_key(scope);
        self.read("reading settings", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT org_id, project_id, value, allow_overrides FROM settings \
                 WHERE account_id = ?1 AND name = ?2 AND \
                 ((org_id = '' AND project_id = '') OR (org_id = ?3 AND project_id = '') OR (org_id = ?3 AND project_id = ?4))",
            )?;
            let mut chain = SettingChain::default();
            let rows = stmt.query_map(params![acc, name, org, proj], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    ScopedValue {
                        value: r.get(2)?,
                        allow_overrides: r.get(3)?,
                    },
                ))
            })?;
            for row in rows {
                let (o, p, v) = row?;
                match (o.is_empty(), p.is_empty()) {
                    (true, _) => chain.account = Some(v),
                    (false, true) if !org.is_empty() => chain.org = Some(v),
                    (false, false) if !proj.is_empty() => chain.project = Some(v),
                    _ => {}
                }
            }
            Ok(chain)
        })
    }

    async fn put_pipeline(&self, p: PipelineRecord) -> StoreResult<bool> {
        self.writer
            .write(move |c| {
                let spec = p.spec.to_string();
                let existed: bool = c
                    .query_row(
                        "SELECT EXISTS(SELECT 1 FROM pipelines WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4)",
                        params![p.scope.account.as_str(), p.scope.org.as_str(), p.scope.project.as_str(), p.identifier.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(sql_err("reading a pipeline"))?;
                let result = if existed {
                    c.execute(
                        "UPDATE pipelines SET name = ?5, spec = ?6, updated_at = ?7 \
                         WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4",
                        params![p.scope.account.as_str(), p.scope.org.as_str(), p.scope.project.as_str(), p.identifier.as_str(), p.name, spec, p.updated_at],
                    )
                } else {
                    c.execute(
                        &format!("INSERT INTO pipelines ({PIPELINE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                        params![p.scope.account.as_str(), p.scope.org.as_str(), p.scope.project.as_str(), p.identifier.as_str(), p.name, spec, p.created_at, p.updated_at],
                    )
                };
                result.map_err(|e| {
                    if is_fk_violation(&e) {
                        StoreError::ParentMissing(format!("Project {} does not exist", p.scope))
                    } else {
                        StoreError::db("writing a pipeline", e)
                    }
                })?;
                Ok(!existed)
            })
            .await
    }

    async fn get_pipeline(
        &self,
        p: &ProjectRef,
        id: &Identifier,
    ) -> StoreResult<Option<PipelineRecord>> {
        self.read("reading a pipeline", |c| read_pipeline(c, p, id))
    }

    async fn list_pipelines(
        &self,
        p: &ProjectRef,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<PipelineRecord>> {
        let after = decode_cursor(cursor, 1)?
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default();
        let items = self.read("listing pipelines", |c| {
            c.prepare_cached(&format!(
                "SELECT {PIPELINE_COLS} FROM pipelines WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 \
                 AND id > ?4 ORDER BY id LIMIT ?5"
            ))?
            .query_map(
                params![p.account.as_str(), p.org.as_str(), p.project.as_str(), after, limit + 1],
                pipeline_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(page(items, limit, |p| {
            encode_cursor(&[p.identifier.as_str()])
        }))
    }

    async fn delete_pipeline(&self, p: &ProjectRef, id: &Identifier) -> StoreResult<bool> {
        let key = [
            p.account.to_string(),
            p.org.to_string(),
            p.project.to_string(),
            id.to_string(),
        ];
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "DELETE FROM pipelines WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND id = ?4",
                        key,
                    )
                    .map_err(sql_err("deleting a pipeline"))?;
                Ok(n > 0)
            })
            .await
    }

    async fn put_trigger(&self, t: TriggerRecord) -> StoreResult<(TriggerRecord, bool)> {
        self.writer
            .write(move |c| {
                let key = params![
                    t.scope.account.as_str(),
                    t.scope.org.as_str(),
                    t.scope.project.as_str(),
                    t.pipeline.as_str(),
                    t.identifier.as_str()
                ];
                let existing = c
                    .query_row(
                        &format!("SELECT {TRIGGER_COLS} FROM triggers WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4 AND id = ?5"),
                        key,
                        trigger_row,
                    )
                    .optional()
                    .map_err(sql_err("reading a trigger"))?;
                let spec = t.spec.to_string();
                match existing {
                    Some(old) => {
                        c.execute(
                            "UPDATE triggers SET name = ?6, enabled = ?7, spec = ?8, updated_at = ?9 \
                             WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4 AND id = ?5",
                            params![t.scope.account.as_str(), t.scope.org.as_str(), t.scope.project.as_str(), t.pipeline.as_str(), t.identifier.as_str(), t.name, t.enabled, spec, t.updated_at],
                        )
                        .map_err(sql_err("updating a trigger"))?;
                        let stored = TriggerRecord {
                            token: old.token,
                            created_at: old.created_at,
                            ..t
                        };
                        Ok((stored, false))
                    }
                    None => {
                        c.execute(
                            &format!("INSERT INTO triggers ({TRIGGER_COLS}, token_sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                            params![t.scope.account.as_str(), t.scope.org.as_str(), t.scope.project.as_str(), t.pipeline.as_str(), t.identifier.as_str(), t.name, t.token, t.enabled, spec, t.created_at, t.updated_at, token_digest(&t.token).as_slice()],
                        )
                        .map_err(|e| {
                            if is_fk_violation(&e) {
                                StoreError::ParentMissing(format!("Pipeline {} does not exist in {}", t.pipeline, t.scope))
                            } else {
                                StoreError::db("creating a trigger", e)
                            }
                        })?;
                        Ok((t, true))
                    }
                }
            })
            .await
    }

    async fn get_trigger(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
    ) -> StoreResult<Option<TriggerRecord>> {
        self.read("reading a trigger", |c| {
            c.prepare_cached(&format!(
                "SELECT {TRIGGER_COLS} FROM triggers WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4 AND id = ?5"
            ))?
            .query_row(
                [p.account.as_str(), p.org.as_str(), p.project.as_str(), pipeline.as_str(), id.as_str()],
                trigger_row,
            )
            .optional()
        })
    }

    async fn get_trigger_by_token(&self, token: &str) -> StoreResult<Option<TriggerRecord>> {
        self.read("reading a trigger by token", |c| {
            c.prepare_cached(&format!(
                "SELECT {TRIGGER_COLS} FROM triggers WHERE token_sha256 = ?1"
            ))?
            .query_row([token_digest(token).as_slice()], trigger_row)
            .optional()
        })
    }

    async fn list_triggers(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<TriggerRecord>> {
        let after = decode_cursor(cursor, 1)?
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default();
        let items = self.read("listing triggers", |c| {
            c.prepare_cached(&format!(
                "SELECT {TRIGGER_COLS} FROM triggers WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 \
                 AND pipeline_id = ?4 AND id > ?5 ORDER BY id LIMIT ?6"
            ))?
            .query_map(
                params![p.account.as_str(), p.org.as_str(), p.project.as_str(), pipeline.as_str(), after, limit + 1],
                trigger_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(page(items, limit, |t| {
            encode_cursor(&[t.identifier.as_str()])
        }))
    }

    async fn set_trigger_enabled(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
        enabled: bool,
    ) -> StoreResult<Option<TriggerRecord>> {
        let key = [
            p.account.to_string(),
            p.org.to_string(),
            p.project.to_string(),
            pipeline.to_string(),
            id.to_string(),
        ];
        self.writer
            .write(move |c| {
                let select = format!("SELECT {TRIGGER_COLS} FROM triggers WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4 AND id = ?5");
                let Some(mut t) = c.query_row(&select, rusqlite::params_from_iter(&key), trigger_row).optional().map_err(sql_err("reading a trigger"))? else {
                    return Ok(None);
                };
                t.enabled = enabled;
                t.updated_at = super::now_millis();
                if let Some(obj) = t.spec.get_mut("trigger").and_then(|v| v.as_object_mut()) {
                    obj.insert("enabled".into(), serde_json::Value::Bool(enabled));
                }
                c.execute(
                    "UPDATE triggers SET enabled = ?6, spec = ?7, updated_at = ?8 \
                     WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4 AND id = ?5",
                    params![key[0], key[1], key[2], key[3], key[4], enabled, t.spec.to_string(), t.updated_at],
                )
                .map_err(sql_err("updating a trigger"))?;
                Ok(Some(t))
            })
            .await
    }

    async fn delete_trigger(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
    ) -> StoreResult<Option<String>> {
        let key = [
            p.account.to_string(),
            p.org.to_string(),
            p.project.to_string(),
            pipeline.to_string(),
            id.to_string(),
        ];
        self.writer
            .write(move |c| {
                c.query_row(
                    "DELETE FROM triggers WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4 AND id = ?5 RETURNING token",
                    rusqlite::params_from_iter(&key),
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err("deleting a trigger"))
            })
            .await
    }

    async fn new_event_id(&self) -> StoreResult<EventId> {
        Ok(self.event_ids.mint())
    }

    async fn record_event(
        &self,
        event: WebhookEvent,
        execution: Option<NewExecution>,
    ) -> StoreResult<RecordOutcome> {
        let (rowid, legacy) = self.event_ids.place(&event.event_id);
        let item = EventWrite {
            rowid,
            legacy,
            event,
            execution,
        };
        let (item, replayed) = self.events.write(item).await?;
        Ok(match replayed {
            Some(previous) => RecordOutcome::Replayed(previous),
            None => RecordOutcome::Stored(item.event),
        })
    }

    async fn get_event(&self, id: &EventId) -> StoreResult<Option<WebhookEvent>> {
        self.read("reading a webhook event", |c| {
            read_event(c, &self.event_ids, id)
        })
    }

    async fn get_event_with_run(
        &self,
        id: &EventId,
    ) -> StoreResult<Option<(WebhookEvent, Option<crate::store::executions::RunState>)>> {
        self.read("reading a webhook event and its execution", |c| {
            let Some(event) = read_event(c, &self.event_ids, id)? else {
                return Ok(None);
            };
            let run = match &event.plan_execution_id {
                Some(plan) => executions::read_run(c, plan)?,
                None => None,
            };
            Ok(Some((event, run)))
        })
    }

    async fn load_work(
        &self,
        id: &PlanExecutionId,
    ) -> StoreResult<Option<crate::store::executions::Work>> {
        self.read("reading an execution to run", |c| {
            let Some(run) = executions::read_run(c, id)? else {
                return Ok(None);
            };
            let control = executions::read_control(c, id)?;
            let event = match run.event_id() {
                Some(event) => read_event(c, &self.event_ids, &event)?,
                None => None,
            };
            let pipeline = match run.pipeline_to_start() {
                Some(pipeline) => read_pipeline(c, &run.execution.scope, &pipeline)?,
                None => None,
            };
            Ok(Some(crate::store::executions::Work {
                run,
                control,
                event,
                pipeline,
            }))
        })
    }

    async fn list_events(
        &self,
        p: &ProjectRef,
        filter: &EventFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<WebhookEvent>> {
        let (before_ts, before_id) = decode_time_cursor(cursor)?;
        // The trigger filter is spelled out (not `?4 IS NULL OR ...`) so that SQLite can walk
        // `webhook_events_by_trigger` instead of scanning the project's events.
        let trigger_clause = if filter.trigger.is_some() {
            "AND trigger_id = ?4"
        } else {
            "AND ?4 IS NULL"
        };
        let items = self.read("listing webhook events", |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM webhook_events WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 \
                 {trigger_clause} AND (?5 IS NULL OR status = ?5) AND (?9 IS NULL OR pipeline_id = ?9) \
                 AND (created_at, event_id) < (?6, ?7) \
                 ORDER BY created_at DESC, event_id DESC LIMIT ?8"
            ))?
            .query_map(
                params![
                    p.account.as_str(),
                    p.org.as_str(),
                    p.project.as_str(),
                    filter.trigger,
                    filter.status,
                    before_ts,
                    before_id,
                    limit + 1,
                    filter.pipeline
                ],
                event_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(page(items, limit, |e| {
            encode_cursor(&[&e.created_at.to_string(), e.event_id.as_str()])
        }))
    }

    async fn get_execution(&self, id: &PlanExecutionId) -> StoreResult<Option<Execution>> {
        self.read("reading an execution", |c| {
            c.prepare_cached(&format!(
                "SELECT {EXECUTION_COLS} FROM executions WHERE plan_execution_id = ?1"
            ))?
            .query_row([id.as_str()], execution_row)
            .optional()
        })
    }
}
