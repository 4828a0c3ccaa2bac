//! The PostgreSQL backend, for several nodes sharing one database (DESIGN §11): a pool of
//! `tokio-postgres` connections with `synchronous_commit = on`, each multi-statement write in
//! one transaction, exclusive work claimed with `FOR UPDATE SKIP LOCKED` under a lease, and
//! uniqueness and counters enforced by the schema rather than by there being one writer.
//!
//! Connection failures (refused, reset, timed out, the server shutting down) are reported as
//! [`StoreError::Unavailable`]; a transaction whose commit did not answer is never reported as
//! written. An exhausted pool is [`StoreError::Overloaded`].

mod event_ids;
mod executions;
mod groups;
mod intake;
mod migrate;
mod notify;
mod outbound;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool, PoolError, Runtime, Timeouts};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{NoTls, Row};

use super::cursor::{decode_name_cursor, decode_time_cursor, encode_cursor, page};
use super::{
    Account, ApiKeyRecord, Change, ConsoleSession, EventFilter, Execution, Millis, NewExecution,
    Page, PipelineRecord, RecordOutcome, Role, Scope, SettingScope, Store, StoreError, StoreResult,
    TriggerRecord, WebhookEvent, IDEMPOTENCY_WINDOW_MS,
};
use crate::domain::ids::{
    token_digest, AccountId, EventId, Identifier, KeyId, PlanExecutionId, ProjectRef,
};
use crate::domain::settings::{ScopedValue, SettingChain};

/// Tuning for the connection pool (the `[postgres]` settings).
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_size: usize,
    /// How long a request waits for a free connection before it is refused as overloaded.
    pub wait: Duration,
    /// How long opening a connection may take before the database counts as unreachable.
    pub connect: Duration,
    /// The server's `statement_timeout` on pooled connections.
    pub statement_timeout: Duration,
    /// The server's `lock_timeout` on pooled connections.
    pub lock_timeout: Duration,
}

/// The server's `idle_in_transaction_session_timeout` on pooled connections: a node that stops
/// half-way through a transaction (hung, partitioned) releases its locks after this long.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(60);

impl Default for PoolOptions {
    fn default() -> Self {
        crate::config::PostgresSettings::default()
            .parse()
            .expect("the default settings are valid")
            .into()
    }
}

impl From<crate::config::Postgres> for PoolOptions {
    fn from(p: crate::config::Postgres) -> Self {
        Self {
            max_size: p.pool_size,
            wait: p.pool_wait,
            connect: p.connect_timeout,
            statement_timeout: p.statement_timeout,
            lock_timeout: p.lock_timeout,
        }
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    /// This store's random id in announcements, so its listener skips its own.
    origin: String,
    /// Changes announced by other nodes, as the listener receives them.
    changes: tokio::sync::broadcast::Sender<Change>,
    /// The listener's task, stopped on close.
    listener: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Webhook events without an `Idempotency-Key`, stored in groups.
    intake: intake::Intake,
    /// Executions ended by this node's workers, in groups.
    ends: groups::Groups<executions::Ends>,
    /// Delivered attempts of this node's dispatcher, in groups.
    attempts: groups::Groups<outbound::Attempts>,
    /// Mints event ids and finds their rows.
    event_ids: event_ids::EventIds,
    /// Where the next purge of old webhook events goes on.
    purge_from: parking_lot::Mutex<crate::store::executions::ProjectKey>,
    /// Runs the connections and intake's writes; stops when the store is dropped.
    _thread: StoreThread,
}

/// A pooled connection.
type Client = deadpool_postgres::Client;

impl PgStore {
    /// Connects to `url`, applies pending migrations (under an advisory lock, so nodes may
    /// start together) and opens the pool.
    pub async fn open(url: &str, options: PoolOptions) -> StoreResult<Self> {
        migrate(url, options.connect).await?;
        let settings = config(url, options.connect)?;
        let mut pooled = settings.clone();
        pooled.options(format!(
            "-c synchronous_commit=on -c statement_timeout={} -c lock_timeout={} \
             -c idle_in_transaction_session_timeout={}",
            options.statement_timeout.as_millis(),
            options.lock_timeout.as_millis(),
            IDLE_IN_TRANSACTION.as_millis()
        ));
        let thread =
            StoreThread::start().map_err(|e| StoreError::db("starting the store's thread", e))?;
        let manager = deadpool_postgres::Manager::from_connect(
            pooled,
            OnStoreThread(thread.runtime.clone()),
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_size.max(1))
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(options.wait),
                create: Some(options.connect),
                recycle: Some(options.connect),
            })
            .build()
            .map_err(|e| StoreError::db("building the connection pool", e))?;
        let event_ids = event_ids::EventIds::load(&client(&pool).await?).await?;
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let listener = tokio::spawn(notify::listen(settings, origin.clone(), changes.clone()));
        Ok(Self {
            intake: intake::Intake::start(
                pool.clone(),
                thread.runtime.clone(),
                intake::WRITES_IN_FLIGHT,
            ),
            ends: groups::Groups::start(
                executions::Ends { pool: pool.clone() },
                thread.runtime.clone(),
                executions::END_WRITES_IN_FLIGHT,
                executions::MAX_QUEUED_ENDS,
            ),
            attempts: groups::Groups::start(
                outbound::Attempts { pool: pool.clone() },
                thread.runtime.clone(),
                outbound::ATTEMPT_WRITES_IN_FLIGHT,
                outbound::MAX_QUEUED_ATTEMPTS,
            ),
            event_ids,
            _thread: thread,
            purge_from: parking_lot::Mutex::default(),
            pool,
            origin,
            changes,
            listener: parking_lot::Mutex::new(Some(listener)),
        })
    }

    /// A connection from the pool.
    async fn client(&self) -> StoreResult<Client> {
        client(&self.pool).await
    }
}

/// The store's thread (`triggerd-pg`): a runtime of its own that makes and drives the pool's
/// connections and runs intake's writes, at the priority of the thread that opened the store
/// (a thread starts at its creator's; `serve` opens it on its main thread, so it is the HTTP
/// workers' priority, above the engine's runtime). Runs until this is dropped.
struct StoreThread {
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl StoreThread {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("triggerd-pg".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            runtime: handle,
            _stop: stop,
        })
    }
}

/// Makes the pool's connections on the store's thread, whichever task asks for one: a
/// connection's socket and its driver belong to the runtime that made it, and die with it. An
/// HTTP worker's runtime stops with the server at shutdown, before the engine's last writes and
/// intake's last group: a connection made there failed under them ("the database is
/// unreachable"), leaving the lease of an execution a worker had just claimed to run out
/// instead of being released.
struct OnStoreThread(tokio::runtime::Handle);

impl deadpool_postgres::Connect for OnStoreThread {
    fn connect(
        &self,
        settings: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let settings = settings.clone();
        let made = self.0.spawn(async move {
            let (client, connection) = settings.connect(NoTls).await?;
            let driver = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "a database connection failed");
                }
            });
            Ok((client, driver))
        });
        Box::pin(async move {
            match made.await {
                Ok(made) => made,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The store's thread has stopped (the store was dropped): the pool's timeout
                // for making a connection answers.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

/// A connection from `pool`: waiting too long for one is `Overloaded`.
async fn client(pool: &Pool) -> StoreResult<Client> {
    pool.get().await.map_err(|e| match e {
        PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => StoreError::Overloaded,
        PoolError::Timeout(_) => StoreError::Unavailable,
        PoolError::Backend(e) => pg_err("connecting to the database")(e),
        PoolError::Closed => StoreError::ShuttingDown,
        e => StoreError::db("connecting to the database", e),
    })
}

/// Parses `url` and sets what every connection needs: a connect timeout and
/// `synchronous_commit = on`, so that a committed write is on the server's disk whatever the
/// server's default says.
fn config(url: &str, connect_timeout: Duration) -> StoreResult<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::db("parsing database_url", e))?;
    config
        .connect_timeout(connect_timeout)
        .options("-c synchronous_commit=on")
        .application_name("triggerd");
    Ok(config)
}

/// Connects to `url` outside any pool and applies pending migrations. Returns how many ran.
pub async fn migrate(url: &str, connect_timeout: Duration) -> StoreResult<usize> {
    let (mut client, connection) = config(url, connect_timeout)?
        .connect(NoTls)
        .await
        .ctx("connecting to the database")?;
    let driver = tokio::spawn(connection);
    let applied = migrate::apply(&mut client).await;
    drop(client);
    let _ = driver.await;
    applied
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Whether an error means the database could not do the work now, though it may a moment
/// later (rather than that it refused the statement): it could not be reached, or it cancelled
/// the statement for a reason of the moment.
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        // Class 08 is "connection exception"; 57P0x the server shutting down or starting up;
        // 53300 too many connections; 57014 a statement cancelled (statement_timeout); 55P03 a
        // lock not granted in time (lock_timeout); 40P01 a deadlock and 40001 a serialization
        // failure (the transaction was rolled back and may be retried); 25006 a read-only
        // server (a standby, during a failover).
        let code = db.code().code();
        return code.starts_with("08")
            || matches!(
                code,
                "57P01"
                    | "57P02"
                    | "57P03"
                    | "53300"
                    | "57014"
                    | "55P03"
                    | "40P01"
                    | "40001"
                    | "25006"
            );
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // The connect timeout has no source of its own.
    e.to_string().starts_with("timeout")
}

/// Maps a driver error: unreachable, timed out or rolled back for a reason of the moment is
/// [`StoreError::Unavailable`] (503 with Retry-After), anything else a database error with
/// `context`.
fn pg_err(context: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError + '_ {
    move |e| {
        if is_unavailable(&e) {
            if e.as_db_error().is_some() {
                // A timeout, deadlock or failover says something about the load or the setup.
                tracing::warn!(error = %e, context, "database statement rolled back");
            } else {
                tracing::debug!(error = %e, context, "database unreachable");
            }
            StoreError::Unavailable
        } else {
            StoreError::db(context.to_owned(), e)
        }
    }
}

/// `.ctx("doing what")` on driver results.
trait PgResultExt<T> {
    fn ctx(self, context: &str) -> StoreResult<T>;
}

impl<T> PgResultExt<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, context: &str) -> StoreResult<T> {
        self.map_err(pg_err(context))
    }
}

/// `s` as PostgreSQL can store it in TEXT: with each NUL character (which it refuses)
/// replaced by U+FFFD. Used for free text that may quote a webhook body or a command's output.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

fn is_fk_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs a (cached) statement and returns its rows.
async fn query(
    c: &impl GenericClient,
    context: &str,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.ctx(context)?;
    c.query(&stmt, params).await.ctx(context)
}

/// Runs a (cached) statement in a transaction of its own, which `setup` (simple statements,
/// such as `SET LOCAL`, or none) begins, and returns its rows: in one round trip. `BEGIN` with
/// `setup`, the statement and `COMMIT` go to the server together (pipelined), not one after
/// the other's answer. Each round trip cost the outbound dispatcher 0.3–0.5 ms on a busy
/// 2-core machine, whose claim and whose groups of attempts were chains of them (issue 13).
///
/// A statement that fails leaves the transaction aborted, which the `COMMIT` ends (as a
/// rollback): the connection goes back to the pool outside any transaction whatever happens.
async fn query_alone(
    c: &Client,
    context: &str,
    setup: &str,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.ctx(context)?;
    let begin = format!("BEGIN; {setup}");
    let (begun, rows, committed) = tokio::join!(
        c.batch_execute(&begin),
        c.query(&stmt, params),
        c.batch_execute("COMMIT")
    );
    begun.ctx(context)?;
    let rows = rows.ctx(context)?;
    committed.ctx(context)?;
    Ok(rows)
}

/// Runs a (cached) statement that returns at most one row.
async fn query_opt(
    c: &impl GenericClient,
    context: &str,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Option<Row>> {
    let stmt = c.prepare_cached(sql).await.ctx(context)?;
    c.query_opt(&stmt, params).await.ctx(context)
}

/// Runs a (cached) statement that returns exactly one row.
async fn query_one(
    c: &impl GenericClient,
    context: &str,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Row> {
    let stmt = c.prepare_cached(sql).await.ctx(context)?;
    c.query_one(&stmt, params).await.ctx(context)
}

/// Runs a (cached) statement; returns how many rows it changed.
async fn execute(
    c: &impl GenericClient,
    context: &str,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<u64> {
    execute_raw(c, sql, params).await.ctx(context)
}

/// [`execute`] with the driver's error, for callers that tell some errors apart.
async fn execute_raw(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.execute(&stmt, params).await
}

/// One column of a row.
fn col<'a, T: FromSql<'a>>(r: &'a Row, idx: usize) -> StoreResult<T> {
    r.try_get(idx)
        .map_err(|e| StoreError::db(format!("reading column {idx}"), e))
}

/// A stored value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("stored {0} is invalid")]
struct Invalid(&'static str);

fn invalid(what: &'static str) -> StoreError {
    StoreError::db("reading a stored row", Invalid(what))
}

/// A JSON column, as a tree or kept as its text ([`crate::store::JsonText`]).
fn json_col<T: serde::de::DeserializeOwned>(r: &Row, idx: usize) -> StoreResult<T> {
    let text: String = col(r, idx)?;
    serde_json::from_str(&text).map_err(|e| StoreError::db("reading a JSON column", e))
}

fn identifier_col(r: &Row, idx: usize) -> StoreResult<Identifier> {
    let s: String = col(r, idx)?;
    Identifier::parse(&s, "stored identifier").map_err(|_| invalid("identifier"))
}

fn project_cols(r: &Row, first: usize) -> StoreResult<ProjectRef> {
    let account: String = col(r, first)?;
    Ok(ProjectRef {
        account: AccountId::parse(&account).map_err(|_| invalid("account id"))?,
        org: identifier_col(r, first + 1)?,
        project: identifier_col(r, first + 2)?,
    })
}

fn project_params(p: &ProjectRef) -> [&str; 3] {
    [p.account.as_str(), p.org.as_str(), p.project.as_str()]
}

fn scope_row(r: &Row, has_project: bool) -> StoreResult<Scope> {
    let o = usize::from(has_project);
    Ok(Scope {
        identifier: col(r, 1 + o)?,
        account_identifier: col(r, 0)?,
        org_identifier: col(r, 1)?,
        project_identifier: if has_project { Some(col(r, 2)?) } else { None },
        name: col(r, 2 + o)?,
        created_at: col(r, 3 + o)?,
        updated_at: col(r, 4 + o)?,
    })
}

fn account_row(r: &Row) -> StoreResult<Account> {
    Ok(Account {
        identifier: col(r, 0)?,
        name: col(r, 1)?,
        created_at: col(r, 2)?,
        updated_at: col(r, 3)?,
    })
}

const API_KEY_COLS: &str =
    "key_id, account_id, name, role, projects, hash, created_at, expires_at, revoked_at";

const SESSION_COLS: &str = "token_hash, key_id, csrf, project, created_at, last_seen";

fn session_row(r: &Row) -> StoreResult<ConsoleSession> {
    let key_id: String = col(r, 1)?;
    Ok(ConsoleSession {
        token_hash: col(r, 0)?,
        key_id: KeyId::parse(&key_id).ok_or_else(|| invalid("key id"))?,
        csrf: col(r, 2)?,
        project: col(r, 3)?,
        created_at: col(r, 4)?,
        last_seen: col(r, 5)?,
    })
}

fn api_key_row(r: &Row) -> StoreResult<ApiKeyRecord> {
    let key_id: String = col(r, 0)?;
    let account: String = col(r, 1)?;
    let role: String = col(r, 3)?;
    let projects: Option<String> = col(r, 4)?;
    Ok(ApiKeyRecord {
        key_id: KeyId::parse(&key_id).ok_or_else(|| invalid("key id"))?,
        account: AccountId::parse(&account).map_err(|_| invalid("account id"))?,
        name: col(r, 2)?,
        role: Role::from_stored(&role).ok_or_else(|| invalid("role"))?,
        projects: projects
            .map(|p| serde_json::from_str(&p).map_err(|_| invalid("project list")))
            .transpose()?,
        hash: col(r, 5)?,
        created_at: col(r, 6)?,
        expires_at: col(r, 7)?,
        revoked_at: col(r, 8)?,
    })
}

/// The columns [`pipeline_row`] reads (a macro so that other statements can include it).
macro_rules! pipeline_cols {
    () => {
        "account_id, org_id, project_id, id, name, spec, created_at, updated_at"
    };
}
use pipeline_cols;
const PIPELINE_COLS: &str = pipeline_cols!();

fn pipeline_row(r: &Row) -> StoreResult<PipelineRecord> {
    pipeline_row_at(r, 0)
}

/// A pipeline from the [`PIPELINE_COLS`] that start at column `at`.
fn pipeline_row_at(r: &Row, at: usize) -> StoreResult<PipelineRecord> {
    Ok(PipelineRecord {
        scope: project_cols(r, at)?,
        identifier: identifier_col(r, at + 3)?,
        name: col(r, at + 4)?,
        spec: json_col(r, at + 5)?,
        created_at: col(r, at + 6)?,
        updated_at: col(r, at + 7)?,
    })
}

const TRIGGER_COLS: &str = "account_id, org_id, project_id, pipeline_id, id, name, token, \
     enabled, spec, created_at, updated_at";

fn trigger_row(r: &Row) -> StoreResult<TriggerRecord> {
    Ok(TriggerRecord {
        scope: project_cols(r, 0)?,
        pipeline: identifier_col(r, 3)?,
        identifier: identifier_col(r, 4)?,
        name: col(r, 5)?,
        token: col(r, 6)?,
        enabled: col(r, 7)?,
        spec: json_col(r, 8)?,
        created_at: col(r, 9)?,
        updated_at: col(r, 10)?,
    })
}

macro_rules! event_cols {
    () => {
        "event_id, account_id, org_id, project_id, pipeline_id, trigger_id, status, message, \
         exception_occured, payload, headers, runtime_input, condition_results, \
         plan_execution_id, idempotency_key, created_at"
    };
}
use event_cols;
const EVENT_COLS: &str = event_cols!();

/// Selects `$cols` of the event whose id is `$2` and whose `seq` it leads to is `$1`: at that
/// `seq`, or else one stored before migration 0008 (see event_ids.rs). The second search runs
/// only when the first finds nothing (`LIMIT 1` over `UNION ALL` stops at the first row).
macro_rules! event_by_id {
    ($($cols:tt)*) => {
        concat!(
            "(SELECT ",
            $($cols)*,
            " FROM webhook_events WHERE seq = $1 AND event_id = $2 UNION ALL SELECT ",
            $($cols)*,
            " FROM webhook_events WHERE legacy_id = $2 LIMIT 1)"
        )
    };
}
use event_by_id;

fn event_row(r: &Row) -> StoreResult<WebhookEvent> {
    event_row_at(r, 0)
}

/// An event from the [`EVENT_COLS`] that start at column `at`.
fn event_row_at(r: &Row, at: usize) -> StoreResult<WebhookEvent> {
    let event_id: String = col(r, at)?;
    let plan: Option<String> = col(r, at + 13)?;
    let payload: Vec<u8> = col(r, at + 9)?;
    Ok(WebhookEvent {
        event_id: EventId::parse(&event_id).ok_or_else(|| invalid("event id"))?,
        scope: project_cols(r, at + 1)?,
        pipeline: col(r, at + 4)?,
        trigger: col(r, at + 5)?,
        status: col(r, at + 6)?,
        message: col(r, at + 7)?,
        exception_occured: col(r, at + 8)?,
        payload: String::from_utf8(payload).map_err(|_| invalid("webhook body"))?,
        headers: json_col(r, at + 10)?,
        runtime_input: col(r, at + 11)?,
        condition_results: json_col(r, at + 12)?,
        plan_execution_id: plan.and_then(|p| PlanExecutionId::parse(&p)),
        idempotency_key: col(r, at + 14)?,
        created_at: col(r, at + 15)?,
    })
}

/// The columns [`execution_row`] reads (a macro so that other column lists can extend it).
macro_rules! execution_cols {
    () => {
        "plan_execution_id, account_id, org_id, project_id, pipeline_id, pipeline_name, status, \
         trigger_type, trigger_id, event_id, run_sequence, runtime_input, created_at, started_at, \
         ended_at"
    };
}
use execution_cols;
const EXECUTION_COLS: &str = execution_cols!();

fn execution_row(r: &Row) -> StoreResult<Execution> {
    execution_row_at(r, 0)
}

/// An execution from the [`EXECUTION_COLS`] that start at column `at`.
fn execution_row_at(r: &Row, at: usize) -> StoreResult<Execution> {
    let id: String = col(r, at)?;
    Ok(Execution {
        plan_execution_id: PlanExecutionId::parse(&id).ok_or_else(|| invalid("execution id"))?,
        scope: project_cols(r, at + 1)?,
        pipeline: col(r, at + 4)?,
        pipeline_name: col(r, at + 5)?,
        status: col(r, at + 6)?,
        trigger_type: col(r, at + 7)?,
        trigger: col(r, at + 8)?,
        event_id: col(r, at + 9)?,
        run_sequence: col(r, at + 10)?,
        runtime_input: col(r, at + 11)?,
        created_at: col(r, at + 12)?,
        started_at: col(r, at + 13)?,
        ended_at: col(r, at + 14)?,
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

/// Creates a named scope row (account, org or project), or renames it. Returns whether it was
/// created; a missing parent is the driver's foreign-key error.
async fn upsert_scope(
    c: &impl GenericClient,
    table: &str,
    key_cols: &[&str],
    key: &[&str],
    name: &str,
    now: Millis,
) -> Result<bool, tokio_postgres::Error> {
    let n = key_cols.len();
    let cols = key_cols.join(", ");
    let marks = (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut params: Vec<&(dyn ToSql + Sync)> = key.iter().map(|k| k as _).collect();
    params.push(&name);
    params.push(&now);
    let inserted = execute_raw(
        c,
        &format!(
            "INSERT INTO {table} ({cols}, name, created_at, updated_at) \
             VALUES ({marks}, ${}, ${}, ${}) ON CONFLICT DO NOTHING",
            n + 1,
            n + 2,
            n + 2
        ),
        &params,
    )
    .await?;
    if inserted == 1 {
        return Ok(true);
    }
    let where_clause = key_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    execute_raw(
        c,
        &format!(
            "UPDATE {table} SET name = ${}, updated_at = ${} WHERE {where_clause}",
            n + 1,
            n + 2
        ),
        &params,
    )
    .await?;
    Ok(false)
}

#[async_trait]
impl Store for PgStore {
    async fn ready(&self) -> StoreResult<bool> {
        let c = self.client().await?;
        Ok(migrate::current_version(&c).await? == migrate::latest_version())
    }

    async fn close(&self) {
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
        self.intake.flush().await;
        self.ends.flush().await;
        self.attempts.flush().await;
        self.pool.close();
    }

    async fn announce(&self, change: &Change) -> StoreResult<()> {
        let payload = serde_json::to_string(&notify::Announcement {
            origin: self.origin.clone(),
            change: change.clone(),
        })
        .map_err(|e| StoreError::db("encoding an announcement", e))?;
        let c = self.client().await?;
        c.execute("SELECT pg_notify($1, $2)", &[&notify::CHANNEL, &payload])
            .await
            .ctx("announcing a change")?;
        Ok(())
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn put_account(&self, id: &AccountId, name: &str) -> StoreResult<(Account, bool)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let now = super::now_millis();
        let created = upsert_scope(&tx, "accounts", &["id"], &[id.as_str()], name, now)
            .await
            .ctx("writing an account")?;
        if created {
            upsert_scope(
                &tx,
                "orgs",
                &["account_id", "id"],
                &[id.as_str(), "default"],
                "Default",
                now,
            )
            .await
            .ctx("creating the default org")?;
        }
        let row = query_one(
            &tx,
            "reading an account",
            "SELECT id, name, created_at, updated_at FROM accounts WHERE id = $1",
            &[&id.as_str()],
        )
        .await?;
        let account = account_row(&row)?;
        tx.commit().await.ctx("committing an account")?;
        Ok((account, created))
    }

    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>> {
        let c = self.client().await?;
        query_opt(
            &c,
            "reading an account",
            "SELECT id, name, created_at, updated_at FROM accounts WHERE id = $1",
            &[&id.as_str()],
        )
        .await?
        .as_ref()
        .map(account_row)
        .transpose()
    }

    async fn list_accounts(&self, cursor: Option<&str>, limit: u32) -> StoreResult<Page<Account>> {
        let after = decode_name_cursor(cursor)?;
        let c = self.client().await?;
        let items = query(
            &c,
            "listing accounts",
            "SELECT id, name, created_at, updated_at FROM accounts WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &(i64::from(limit) + 1)],
        )
        .await?
        .iter()
        .map(account_row)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(items, limit, |a| encode_cursor(&[&a.identifier])))
    }

    async fn put_org(
        &self,
        acc: &AccountId,
        org: &Identifier,
        name: &str,
    ) -> StoreResult<(Scope, bool)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let created = upsert_scope(
            &tx,
            "orgs",
            &["account_id", "id"],
            &[acc.as_str(), org.as_str()],
            name,
            super::now_millis(),
        )
        .await
        .map_err(|e| {
            if is_fk_violation(&e) {
                StoreError::ParentMissing(format!("Account {acc} does not exist"))
            } else {
                pg_err("writing an org")(e)
            }
        })?;
        let row = query_one(
            &tx,
            "reading an org",
            "SELECT account_id, id, name, created_at, updated_at FROM orgs WHERE account_id = $1 AND id = $2",
            &[&acc.as_str(), &org.as_str()],
        )
        .await?;
        let scope = scope_row(&row, false)?;
        tx.commit().await.ctx("committing an org")?;
        Ok((scope, created))
    }

    async fn get_org(&self, acc: &AccountId, org: &Identifier) -> StoreResult<Option<Scope>> {
        let c = self.client().await?;
        query_opt(
            &c,
            "reading an org",
            "SELECT account_id, id, name, created_at, updated_at FROM orgs WHERE account_id = $1 AND id = $2",
            &[&acc.as_str(), &org.as_str()],
        )
        .await?
        .map(|r| scope_row(&r, false))
        .transpose()
    }

    async fn list_orgs(
        &self,
        acc: &AccountId,
        only: Option<&[String]>,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Scope>> {
        let after = decode_name_cursor(cursor)?;
        let c = self.client().await?;
        let items = query(
            &c,
            "listing orgs",
            "SELECT account_id, id, name, created_at, updated_at FROM orgs WHERE account_id = $1 \
             AND ($2::text[] IS NULL OR id = ANY($2)) AND id > $3 ORDER BY id LIMIT $4",
            &[&acc.as_str(), &only, &after, &(i64::from(limit) + 1)],
        )
        .await?
        .iter()
        .map(|r| scope_row(r, false))
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(items, limit, |o| encode_cursor(&[&o.identifier])))
    }

    async fn delete_org(&self, acc: &AccountId, org: &Identifier) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let key: [&(dyn ToSql + Sync); 2] = [&acc.as_str(), &org.as_str()];
        execute(
            &tx,
            "deleting org settings",
            "DELETE FROM settings WHERE account_id = $1 AND org_id = $2",
            &key,
        )
        .await?;
        let n = execute(
            &tx,
            "deleting an org",
            "DELETE FROM orgs WHERE account_id = $1 AND id = $2",
            &key,
        )
        .await?;
        tx.commit().await.ctx("committing an org deletion")?;
        Ok(n > 0)
    }

    async fn put_project(&self, p: &ProjectRef, name: &str) -> StoreResult<(Scope, bool)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let [acc, org, proj] = project_params(p);
        let created = upsert_scope(
            &tx,
            "projects",
            &["account_id", "org_id", "id"],
            &[acc, org, proj],
            name,
            super::now_millis(),
        )
        .await
        .map_err(|e| {
            if is_fk_violation(&e) {
                StoreError::ParentMissing(format!("Org {acc}/{org} does not exist"))
            } else {
                pg_err("writing a project")(e)
            }
        })?;
        let row = query_one(
            &tx,
            "reading a project",
            "SELECT account_id, org_id, id, name, created_at, updated_at FROM projects \
             WHERE account_id = $1 AND org_id = $2 AND id = $3",
            &[&acc, &org, &proj],
        )
        .await?;
        let scope = scope_row(&row, true)?;
        tx.commit().await.ctx("committing a project")?;
        Ok((scope, created))
    }

    async fn get_project(&self, p: &ProjectRef) -> StoreResult<Option<Scope>> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        query_opt(
            &c,
            "reading a project",
            "SELECT account_id, org_id, id, name, created_at, updated_at FROM projects \
             WHERE account_id = $1 AND org_id = $2 AND id = $3",
            &[&acc, &org, &proj],
        )
        .await?
        .map(|r| scope_row(&r, true))
        .transpose()
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
        let c = self.client().await?;
        let items = query(
            &c,
            "listing projects",
            "SELECT account_id, org_id, id, name, created_at, updated_at FROM projects \
             WHERE account_id = $1 AND org_id = $2 AND ($3::text[] IS NULL OR id = ANY($3)) \
             AND id > $4 ORDER BY id LIMIT $5",
            &[
                &acc.as_str(),
                &org.as_str(),
                &only,
                &after,
                &(i64::from(limit) + 1),
            ],
        )
        .await?
        .iter()
        .map(|r| scope_row(r, true))
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(items, limit, |p| encode_cursor(&[&p.identifier])))
    }

    async fn delete_project(&self, p: &ProjectRef) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let [acc, org, proj] = project_params(p);
        let key: [&(dyn ToSql + Sync); 3] = [&acc, &org, &proj];
        execute(
            &tx,
            "deleting project settings",
            "DELETE FROM settings WHERE account_id = $1 AND org_id = $2 AND project_id = $3",
            &key,
        )
        .await?;
        let n = execute(
            &tx,
            "deleting a project",
            "DELETE FROM projects WHERE account_id = $1 AND org_id = $2 AND id = $3",
            &key,
        )
        .await?;
        tx.commit().await.ctx("committing a project deletion")?;
        Ok(n > 0)
    }

    async fn insert_api_key(&self, key: ApiKeyRecord) -> StoreResult<bool> {
        let c = self.client().await?;
        let projects = key
            .projects
            .as_ref()
            .map(|p| serde_json::to_string(p).unwrap_or_else(|_| "[]".into()));
        let stored = execute(
            &c,
            "storing an API key",
            &format!(
                "INSERT INTO api_keys ({API_KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT DO NOTHING"
            ),
            &[
                &key.key_id.as_str(),
                &key.account.as_str(),
                &key.name,
                &key.role.as_str(),
                &projects,
                &key.hash,
                &key.created_at,
                &key.expires_at,
                &key.revoked_at,
            ],
        )
        .await?;
        Ok(stored == 1)
    }

    async fn get_api_key(&self, key_id: &KeyId) -> StoreResult<Option<ApiKeyRecord>> {
        let c = self.client().await?;
        query_opt(
            &c,
            "reading an API key",
            &format!("SELECT {API_KEY_COLS} FROM api_keys WHERE key_id = $1"),
            &[&key_id.as_str()],
        )
        .await?
        .as_ref()
        .map(api_key_row)
        .transpose()
    }

    async fn list_api_keys(&self, acc: &AccountId) -> StoreResult<Vec<ApiKeyRecord>> {
        let c = self.client().await?;
        query(
            &c,
            "listing API keys",
            &format!(
                "SELECT {API_KEY_COLS} FROM api_keys WHERE account_id = $1 ORDER BY created_at, key_id"
            ),
            &[&acc.as_str()],
        )
        .await?
        .iter()
        .map(api_key_row)
        .collect()
    }

    async fn revoke_api_key(&self, acc: &AccountId, key_id: &KeyId) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "revoking an API key",
            "UPDATE api_keys SET revoked_at = $1 WHERE account_id = $2 AND key_id = $3 AND revoked_at IS NULL",
            &[&super::now_millis(), &acc.as_str(), &key_id.as_str()],
        )
        .await?;
        Ok(n > 0)
    }

    async fn has_root_key(&self) -> StoreResult<bool> {
        let c = self.client().await?;
        let row = query_one(
            &c,
            "looking for a root key",
            "SELECT EXISTS(SELECT 1 FROM api_keys WHERE account_id = '_root' AND revoked_at IS NULL)",
            &[],
        )
        .await?;
        col(&row, 0)
    }

    async fn create_session(&self, s: ConsoleSession, idle_before: Millis) -> StoreResult<()> {
        let c = self.client().await?;
        execute(
            &c,
            "deleting idle console sessions",
            "DELETE FROM console_sessions WHERE last_seen < $1",
            &[&idle_before],
        )
        .await?;
        execute(
            &c,
            "storing a console session",
            &format!(
                "INSERT INTO console_sessions ({SESSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"
            ),
            &[
                &s.token_hash,
                &s.key_id.as_str(),
                &s.csrf,
                &s.project,
                &s.created_at,
                &s.last_seen,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<ConsoleSession>> {
        let c = self.client().await?;
        query_opt(
            &c,
            "reading a console session",
            &format!("SELECT {SESSION_COLS} FROM console_sessions WHERE token_hash = $1"),
            &[&token_hash],
        )
        .await?
        .as_ref()
        .map(session_row)
        .transpose()
    }

    async fn touch_session(
        &self,
        token_hash: &str,
        last_seen: Millis,
        project: Option<&str>,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        execute(
            &c,
            "recording a console session's use",
            "UPDATE console_sessions SET last_seen = $2, project = COALESCE($3, project) WHERE token_hash = $1",
            &[&token_hash, &last_seen, &project],
        )
        .await?;
        Ok(())
    }

    async fn claim_session_once(&self, token_hash: &str, once: &str) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "claiming a console form's one-time token",
            "UPDATE console_sessions SET used_once = $2 \
             WHERE token_hash = $1 AND (used_once IS NULL OR used_once <> $2)",
            &[&token_hash, &once],
        )
        .await?;
        Ok(n > 0)
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        let c = self.client().await?;
        execute(
            &c,
            "deleting a console session",
            "DELETE FROM console_sessions WHERE token_hash = $1",
            &[&token_hash],
        )
        .await?;
        Ok(())
    }

    async fn put_setting(
        &self,
        scope: &SettingScope,
        name: &str,
        value: ScopedValue,
    ) -> StoreResult<()> {
        let (acc, org, proj) = settings_key(scope);
        let c = self.client().await?;
        execute(
            &c,
            "writing a setting",
            "INSERT INTO settings (account_id, org_id, project_id, name, value, allow_overrides, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (account_id, org_id, project_id, name) DO UPDATE SET \
             value = EXCLUDED.value, allow_overrides = EXCLUDED.allow_overrides, updated_at = EXCLUDED.updated_at",
            &[&acc, &org, &proj, &name, &value.value, &value.allow_overrides, &super::now_millis()],
        )
        .await?;
        Ok(())
    }

    async fn delete_setting(&self, scope: &SettingScope, name: &str) -> StoreResult<bool> {
        let (acc, org, proj) = settings_key(scope);
        let c = self.client().await?;
        let n = execute(
            &c,
            "deleting a setting",
            "DELETE FROM settings WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND name = $4",
            &[&acc, &org, &proj, &name],
        )
        .await?;
        Ok(n > 0)
    }

    async fn setting_chain(&self, scope: &SettingScope, name: &str) -> StoreResult<SettingChain> {
        let (acc, org, proj) = settings_key(scope);
        let c = self.client().await?;
        let rows = query(
            &c,
            "reading settings",
            "SELECT org_id, project_id, value, allow_overrides FROM settings \
             WHERE account_id = $1 AND name = $2 AND \
             ((org_id = '' AND project_id = '') OR (org_id = $3 AND project_id = '') OR (org_id = $3 AND project_id = $4))",
            &[&acc, &name, &org, &proj],
        )
        .await?;
        let mut chain = SettingChain::default();
        for r in &rows {
            let (o, p): (String, String) = (col(r, 0)?, col(r, 1)?);
            let v = ScopedValue {
                value: col(r, 2)?,
                allow_overrides: col(r, 3)?,
            };
            match (o.is_empty(), p.is_empty()) {
                (true, _) => chain.account = Some(v),
                (false, true) if !org.is_empty() => chain.org = Some(v),
                (false, false) if !proj.is_empty() => chain.project = Some(v),
                _ => {}
            }
        }
        Ok(chain)
    }

    async fn put_pipeline(&self, p: PipelineRecord) -> StoreResult<bool> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(&p.scope);
        let spec = p.spec.to_string();
        // One statement creates it or replaces all but its creation time; `xmax = 0` holds for
        // a row this statement inserted, not for one it updated.
        let row = c
            .prepare_cached(&format!(
                "INSERT INTO pipelines ({PIPELINE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (account_id, org_id, project_id, id) DO UPDATE SET \
                 name = EXCLUDED.name, spec = EXCLUDED.spec, updated_at = EXCLUDED.updated_at \
                 RETURNING xmax = 0"
            ))
            .await
            .ctx("writing a pipeline")?;
        let created = c
            .query_one(
                &row,
                &[
                    &acc,
                    &org,
                    &proj,
                    &p.identifier.as_str(),
                    &p.name,
                    &spec,
                    &p.created_at,
                    &p.updated_at,
                ],
            )
            .await
            .map_err(|e| {
                if is_fk_violation(&e) {
                    StoreError::ParentMissing(format!("Project {} does not exist", p.scope))
                } else {
                    pg_err("writing a pipeline")(e)
                }
            })?;
        col(&created, 0)
    }

    async fn get_pipeline(
        &self,
        p: &ProjectRef,
        id: &Identifier,
    ) -> StoreResult<Option<PipelineRecord>> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        query_opt(
            &c,
            "reading a pipeline",
            &format!(
                "SELECT {PIPELINE_COLS} FROM pipelines WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND id = $4"
            ),
            &[&acc, &org, &proj, &id.as_str()],
        )
        .await?
        .as_ref()
        .map(pipeline_row)
        .transpose()
    }

    async fn list_pipelines(
        &self,
        p: &ProjectRef,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<PipelineRecord>> {
        let after = decode_name_cursor(cursor)?;
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        let items = query(
            &c,
            "listing pipelines",
            &format!(
                "SELECT {PIPELINE_COLS} FROM pipelines WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
                 AND id > $4 ORDER BY id LIMIT $5"
            ),
            &[&acc, &org, &proj, &after, &(i64::from(limit) + 1)],
        )
        .await?
        .iter()
        .map(pipeline_row)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(items, limit, |p| {
            encode_cursor(&[p.identifier.as_str()])
        }))
    }

    async fn delete_pipeline(&self, p: &ProjectRef, id: &Identifier) -> StoreResult<bool> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        let n = execute(
            &c,
            "deleting a pipeline",
            "DELETE FROM pipelines WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND id = $4",
            &[&acc, &org, &proj, &id.as_str()],
        )
        .await?;
        Ok(n > 0)
    }

    async fn put_trigger(&self, t: TriggerRecord) -> StoreResult<(TriggerRecord, bool)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let [acc, org, proj] = project_params(&t.scope);
        let spec = t.spec.to_string();
        let digest = token_digest(&t.token);
        let inserted = tx
            .prepare_cached(&format!(
                "INSERT INTO triggers ({TRIGGER_COLS}, token_sha256) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (account_id, org_id, project_id, pipeline_id, id) DO NOTHING"
            ))
            .await
            .ctx("creating a trigger")?;
        let inserted = tx
            .execute(
                &inserted,
                &[
                    &acc,
                    &org,
                    &proj,
                    &t.pipeline.as_str(),
                    &t.identifier.as_str(),
                    &t.name,
                    &t.token,
                    &t.enabled,
                    &spec,
                    &t.created_at,
                    &t.updated_at,
                    &digest.as_slice(),
                ],
            )
            .await
            .map_err(|e| {
                if is_fk_violation(&e) {
                    StoreError::ParentMissing(format!(
                        "Pipeline {} does not exist in {}",
                        t.pipeline, t.scope
                    ))
                } else {
                    pg_err("creating a trigger")(e)
                }
            })?;
        if inserted == 1 {
            tx.commit().await.ctx("committing a trigger")?;
            return Ok((t, true));
        }
        // It exists: everything but its token and creation time is replaced.
        let row = query_one(
            &tx,
            "updating a trigger",
            "UPDATE triggers SET name = $6, enabled = $7, spec = $8, updated_at = $9 \
             WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND pipeline_id = $4 AND id = $5 \
             RETURNING token, created_at",
            &[
                &acc,
                &org,
                &proj,
                &t.pipeline.as_str(),
                &t.identifier.as_str(),
                &t.name,
                &t.enabled,
                &spec,
                &t.updated_at,
            ],
        )
        .await?;
        let stored = TriggerRecord {
            token: col(&row, 0)?,
            created_at: col(&row, 1)?,
            ..t
        };
        tx.commit().await.ctx("committing a trigger")?;
        Ok((stored, false))
    }

    async fn get_trigger(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
    ) -> StoreResult<Option<TriggerRecord>> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        query_opt(
            &c,
            "reading a trigger",
            &format!(
                "SELECT {TRIGGER_COLS} FROM triggers WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
                 AND pipeline_id = $4 AND id = $5"
            ),
            &[&acc, &org, &proj, &pipeline.as_str(), &id.as_str()],
        )
        .await?
        .as_ref()
        .map(trigger_row)
        .transpose()
    }

    async fn get_trigger_by_token(&self, token: &str) -> StoreResult<Option<TriggerRecord>> {
        let c = self.client().await?;
        query_opt(
            &c,
            "reading a trigger by token",
            &format!("SELECT {TRIGGER_COLS} FROM triggers WHERE token_sha256 = $1"),
            &[&token_digest(token).as_slice()],
        )
        .await?
        .as_ref()
        .map(trigger_row)
        .transpose()
    }

    async fn list_triggers(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<TriggerRecord>> {
        let after = decode_name_cursor(cursor)?;
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        let items = query(
            &c,
            "listing triggers",
            &format!(
                "SELECT {TRIGGER_COLS} FROM triggers WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
                 AND pipeline_id = $4 AND id > $5 ORDER BY id LIMIT $6"
            ),
            &[&acc, &org, &proj, &pipeline.as_str(), &after, &(i64::from(limit) + 1)],
        )
        .await?
        .iter()
        .map(trigger_row)
        .collect::<StoreResult<Vec<_>>>()?;
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
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        let [acc, org, proj] = project_params(p);
        let key: [&(dyn ToSql + Sync); 5] = [&acc, &org, &proj, &pipeline.as_str(), &id.as_str()];
        let Some(row) = query_opt(
            &tx,
            "reading a trigger",
            &format!(
                "SELECT {TRIGGER_COLS} FROM triggers WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
                 AND pipeline_id = $4 AND id = $5 FOR UPDATE"
            ),
            &key,
        )
        .await?
        else {
            return Ok(None);
        };
        let mut t = trigger_row(&row)?;
        t.enabled = enabled;
        t.updated_at = super::now_millis();
        if let Some(obj) = t.spec.get_mut("trigger").and_then(|v| v.as_object_mut()) {
            obj.insert("enabled".into(), serde_json::Value::Bool(enabled));
        }
        let spec = t.spec.to_string();
        execute(
            &tx,
            "updating a trigger",
            "UPDATE triggers SET enabled = $6, spec = $7, updated_at = $8 \
             WHERE account_id = $1 AND org_id = $2 AND project_id = $3 AND pipeline_id = $4 AND id = $5",
            &[key[0], key[1], key[2], key[3], key[4], &enabled, &spec, &t.updated_at],
        )
        .await?;
        tx.commit().await.ctx("committing a trigger")?;
        Ok(Some(t))
    }

    async fn delete_trigger(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
    ) -> StoreResult<Option<String>> {
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        query_opt(
            &c,
            "deleting a trigger",
            "DELETE FROM triggers WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
             AND pipeline_id = $4 AND id = $5 RETURNING token",
            &[&acc, &org, &proj, &pipeline.as_str(), &id.as_str()],
        )
        .await?
        .map(|r| col(&r, 0))
        .transpose()
    }

    async fn record_event(
        &self,
        event: WebhookEvent,
        execution: Option<NewExecution>,
    ) -> StoreResult<RecordOutcome> {
        // An execution is queued only under the id the event names.
        let execution = execution.filter(|_| event.plan_execution_id.is_some());
        let placed = self.event_ids.place(&self.pool, &event.event_id).await?;
        let Some(key) = &event.idempotency_key else {
            // The common case: stored with whatever other events are being stored.
            return self
                .intake
                .record(event, placed, execution)
                .await
                .map(RecordOutcome::Stored);
        };
        // The key may belong to an event already, so nothing is numbered before it is claimed,
        // in the transaction that stores the event.
        let mut c = self.client().await?;
        let tx = c.transaction().await.ctx("starting a transaction")?;
        if let Some(previous) = claim_idempotency_key(&tx, &self.event_ids, &event, key).await? {
            return Ok(RecordOutcome::Replayed(previous));
        }
        let queued = match &execution {
            Some(x) => Some((
                x,
                executions::next_run_sequence_in(&tx, &event.scope, &event.pipeline).await?,
            )),
            None => None,
        };
        intake::insert_events(&tx, &[(&event, placed, queued)]).await?;
        tx.commit().await.ctx("committing a webhook event")?;
        Ok(RecordOutcome::Stored(event))
    }

    async fn new_event_id(&self) -> StoreResult<EventId> {
        self.event_ids.mint(&self.pool).await
    }

    async fn get_event(&self, id: &EventId) -> StoreResult<Option<WebhookEvent>> {
        let c = self.client().await?;
        read_event(&c, &self.event_ids, id).await
    }

    async fn load_work(
        &self,
        id: &PlanExecutionId,
    ) -> StoreResult<Option<crate::store::executions::Work>> {
        self.read_work(id).await
    }

    async fn get_event_with_run(
        &self,
        id: &EventId,
    ) -> StoreResult<Option<(WebhookEvent, Option<crate::store::executions::RunState>)>> {
        self.read_event_with_run(id).await
    }

    async fn list_events(
        &self,
        p: &ProjectRef,
        filter: &EventFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<WebhookEvent>> {
        let (before_ts, before_id) = decode_time_cursor(cursor)?;
        let c = self.client().await?;
        let [acc, org, proj] = project_params(p);
        let items = query(
            &c,
            "listing webhook events",
            &format!(
                "SELECT {EVENT_COLS} FROM webhook_events WHERE account_id = $1 AND org_id = $2 AND project_id = $3 \
                 AND ($4::text IS NULL OR trigger_id = $4) AND ($5::text IS NULL OR status = $5) \
                 AND ($9::text IS NULL OR pipeline_id = $9) \
                 AND (created_at, event_id) < ($6, $7) \
                 ORDER BY created_at DESC, event_id DESC LIMIT $8"
            ),
            &[
                &acc,
                &org,
                &proj,
                &filter.trigger,
                &filter.status,
                &before_ts,
                &before_id,
                &(i64::from(limit) + 1),
                &filter.pipeline,
            ],
        )
        .await?
        .iter()
        .map(event_row)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(items, limit, |e| {
            encode_cursor(&[&e.created_at.to_string(), e.event_id.as_str()])
        }))
    }

    async fn get_execution(&self, id: &PlanExecutionId) -> StoreResult<Option<Execution>> {
        let c = self.client().await?;
        query_opt(
            &c,
            "reading an execution",
            &format!("SELECT {EXECUTION_COLS} FROM executions WHERE plan_execution_id = $1"),
            &[&id.as_str()],
        )
        .await?
        .as_ref()
        .map(execution_row)
        .transpose()
    }
}

/// The event of an id ([`event_by_id!`]).
async fn read_event(
    c: &impl GenericClient,
    ids: &event_ids::EventIds,
    id: &EventId,
) -> StoreResult<Option<WebhookEvent>> {
    const SQL: &str = event_by_id!(event_cols!());
    query_opt(
        c,
        "reading a webhook event",
        SQL,
        &[&ids.seq(id), &id.as_str()],
    )
    .await?
    .as_ref()
    .map(event_row)
    .transpose()
}

/// Makes `e` the owner of its `Idempotency-Key` unless an event of the last 24 hours owns it;
/// returns that event. The primary key decides between two nodes that see the key at once: the
/// second waits for the first to commit and then finds its event.
async fn claim_idempotency_key(
    tx: &impl GenericClient,
    ids: &event_ids::EventIds,
    e: &WebhookEvent,
    key: &str,
) -> StoreResult<Option<WebhookEvent>> {
    let [acc, org, proj] = project_params(&e.scope);
    let expired_before = e.created_at - IDEMPOTENCY_WINDOW_MS;
    let owned = query_opt(
        tx,
        "claiming an idempotency key",
        "INSERT INTO idempotency_keys (account_id, org_id, project_id, pipeline_id, trigger_id, key, event_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (account_id, org_id, project_id, pipeline_id, trigger_id, key) DO UPDATE \
         SET event_id = EXCLUDED.event_id, created_at = EXCLUDED.created_at \
         WHERE idempotency_keys.created_at <= $9 \
         RETURNING event_id",
        &[
            &acc,
            &org,
            &proj,
            &e.pipeline,
            &e.trigger,
            &key,
            &e.event_id.as_str(),
            &e.created_at,
            &expired_before,
        ],
    )
    .await?;
    if owned.is_some() {
        return Ok(None);
    }
    let owner = query_one(
        tx,
        "reading an idempotency key",
        "SELECT event_id FROM idempotency_keys WHERE account_id = $1 AND org_id = $2 \
         AND project_id = $3 AND pipeline_id = $4 AND trigger_id = $5 AND key = $6",
        &[&acc, &org, &proj, &e.pipeline, &e.trigger, &key],
    )
    .await?;
    let owner: String = col(&owner, 0)?;
    let owner_id = EventId::parse(&owner).ok_or_else(|| invalid("event id"))?;
    match read_event(tx, ids, &owner_id).await? {
        Some(previous) => Ok(Some(previous)),
        None => {
            // Its event is gone (retention): the key is free again. The INSERT above left the
            // key's row locked by this transaction, and the takeover names the owner it saw,
            // so two requests can never both take over one key.
            let taken = execute(
                tx,
                "claiming an idempotency key",
                "UPDATE idempotency_keys SET event_id = $7, created_at = $8 WHERE account_id = $1 \
                 AND org_id = $2 AND project_id = $3 AND pipeline_id = $4 AND trigger_id = $5 \
                 AND key = $6 AND event_id = $9",
                &[
                    &acc,
                    &org,
                    &proj,
                    &e.pipeline,
                    &e.trigger,
                    &key,
                    &e.event_id.as_str(),
                    &e.created_at,
                    &owner,
                ],
            )
            .await?;
            if taken == 1 {
                Ok(None)
            } else {
                // Only possible if the row lock were not held; refuse rather than guess.
                Err(StoreError::Unavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! What the API suite cannot show on one node: two nodes on one database at once, and a
    //! database that cannot be reached. They need the local test server (127.0.0.1:5432,
    //! trust authentication, user `postgres`), as the API suite does on PostgreSQL.

    use super::*;
    use crate::domain::event_rule::EventRuleSpec;
    use crate::store::executions::{ExecutionStore, NewManualExecution};
    use crate::store::now_millis;
    use crate::store::outbound::{
        AttemptOutcome, AttemptRecord, EventRuleRecord, NewDelivery, Next, OutboundStore,
        RuleEffect,
    };

    const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

    /// A fresh database, dropped at the end of the test.
    struct Fresh {
        url: String,
        name: String,
    }

    impl Fresh {
        async fn create() -> Fresh {
            let name = format!(
                "triggerd_u_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..16]
            );
            admin(&format!("CREATE DATABASE {name}")).await;
            Fresh {
                url: format!("{SERVER}/{name}"),
                name,
            }
        }

        /// A store (a node) on this database, with the default pool.
        async fn store(&self) -> PgStore {
            PgStore::open(&self.url, PoolOptions::default())
                .await
                .unwrap()
        }

        async fn drop_it(self) {
            admin(&format!("DROP DATABASE {} WITH (FORCE)", self.name)).await;
        }
    }

    /// The single number `sql` (a `COUNT(*)`) answers, with `params`.
    async fn count(
        c: &impl GenericClient,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> i64 {
        c.query_one(sql, params).await.unwrap().get(0)
    }

    /// The first column of every row `sql` returns.
    async fn firsts<T: for<'a> tokio_postgres::types::FromSql<'a>>(
        c: &tokio_postgres::Client,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<T> {
        c.query(sql, params)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn admin(sql: &str) {
        let (client, connection) = tokio_postgres::connect(&format!("{SERVER}/postgres"), NoTls)
            .await
            .expect("the test PostgreSQL server answers on 127.0.0.1:5432");
        let driver = tokio::spawn(connection);
        client.batch_execute(sql).await.expect(sql);
        drop(client);
        let _ = driver.await;
    }

    fn project() -> ProjectRef {
        ProjectRef {
            account: AccountId::parse("acc").unwrap(),
            org: Identifier::parse("default", "org").unwrap(),
            project: Identifier::parse("proj", "project").unwrap(),
        }
    }

    /// The first attempt of delivery `id`, made under `lease` at `now`, answered 200.
    fn delivered(id: &str, lease: &str, now: Millis) -> AttemptOutcome {
        AttemptOutcome {
            lease: lease.into(),
            attempt: AttemptRecord {
                delivery_id: id.into(),
                attempt: 1,
                started_at: now,
                duration_ms: 1,
                url: "http://127.0.0.1:9/".into(),
                request_headers: serde_json::json!({}),
                response_status: Some(200),
                response_headers: None,
                response_body: None,
                error: None,
            },
            next: Next::Done,
            rule: RuleEffect::Healthy,
        }
    }

    /// [`project`], made in `store` with an event rule `ops` to a closed port.
    async fn project_with_rule(store: &PgStore) -> ProjectRef {
        let p = project();
        store.put_account(&p.account, "acc").await.unwrap();
        store.put_project(&p, "proj").await.unwrap();
        let spec: EventRuleSpec =
            serde_json::from_value(serde_json::json!({"url": "http://127.0.0.1:9/"})).unwrap();
        let now = now_millis();
        store
            .put_event_rule(
                EventRuleRecord {
                    scope: p.clone(),
                    identifier: Identifier::parse("ops", "rule").unwrap(),
                    spec,
                    secret: "whsec_x".into(),
                    previous_secret: None,
                    previous_until: None,
                    failing_since: None,
                    disabled_reason: None,
                    created_at: now,
                    updated_at: now,
                },
                None,
            )
            .await
            .unwrap();
        p
    }

    /// Two stores on one database: two nodes.
    async fn two_nodes(db: &Fresh) -> (PgStore, PgStore) {
        let (a, b) = tokio::join!(
            PgStore::open(&db.url, PoolOptions::default()),
            PgStore::open(&db.url, PoolOptions::default())
        );
        (a.expect("node a opens"), b.expect("node b opens"))
    }

    #[tokio::test]
    async fn two_nodes_opening_an_empty_database_at_once_both_migrate_it_once() {
        let db = Fresh::create().await;

        let (a, b) = two_nodes(&db).await;

        assert!(a.ready().await.unwrap() && b.ready().await.unwrap());
        let c = a.client().await.unwrap();
        let versions = count(&c, "SELECT COUNT(*) FROM schema_migrations", &[]).await;
        assert_eq!(versions, migrate::latest_version());
        drop(c);
        a.close().await;
        b.close().await;
        db.drop_it().await;
    }

    #[tokio::test]
    async fn events_stored_before_keep_their_ids_and_new_ones_lead_to_their_seq() {
        let db = Fresh::create().await;
        let (mut c, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(connection);
        // Migration 0008 numbers the events stored before it; one of them queued an execution.
        assert_eq!(migrate::apply_until(&mut c, 7).await.unwrap(), 7);
        let legacy = ["0123456789abcdef01234567", "fedcba9876543210fedcba98"];
        let plan = PlanExecutionId::generate();
        for (n, id) in legacy.iter().enumerate() {
            let plan = (n == 1).then(|| plan.as_str());
            c.execute(
                "INSERT INTO webhook_events (event_id, account_id, org_id, project_id, \
                 pipeline_id, trigger_id, status, message, exception_occured, payload, headers, \
                 runtime_input, condition_results, plan_execution_id, created_at) \
                 VALUES ($1, 'acc', 'default', 'proj', 'p', 't', 'SUCCESS', '', false, '{}', \
                 '{}', '', '[]', $2, $3)",
                &[id, &plan, &(n as i64 + 1)],
            )
            .await
            .unwrap();
        }
        c.execute(
            "INSERT INTO executions (plan_execution_id, account_id, org_id, project_id, \
             pipeline_id, pipeline_name, status, trigger_type, trigger_id, event_id, \
             run_sequence, runtime_input, created_at) \
             VALUES ($1, 'acc', 'default', 'proj', 'p', 'p', 'Queued', 'WEBHOOK_CUSTOM', 't', \
             $2, 1, '', 2)",
            &[&plan.as_str(), &legacy[1]],
        )
        .await
        .unwrap();
        let store = db.store().await;
        let seqs: Vec<(i64, Option<String>)> = c
            .query(
                "SELECT seq, legacy_id FROM webhook_events ORDER BY seq",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            seqs,
            [(1, Some(legacy[0].into())), (2, Some(legacy[1].into()))],
            "numbered in the order they were stored"
        );
        for id in legacy {
            let id = EventId::parse(id).unwrap();
            let found = store.get_event(&id).await.unwrap().map(|e| e.event_id);
            assert_eq!(found, Some(id));
        }
        let (event, run) = store
            .get_event_with_run(&EventId::parse(legacy[1]).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.plan_execution_id.as_ref(), Some(&plan));
        assert_eq!(run.unwrap().execution.plan_execution_id, plan);
        let work = store.load_work(&plan).await.unwrap().unwrap();
        assert_eq!(
            work.event.unwrap().event_id.as_str(),
            legacy[1],
            "the execution's event"
        );

        // A new id leads to its `seq`, past the events stored before, where the event is.
        let (mut e, x) = queueing("deploy");
        e.event_id = store.new_event_id().await.unwrap();
        let (id, queued) = (e.event_id.clone(), e.plan_execution_id.clone().unwrap());
        store.record_event(e, x).await.unwrap();
        let row = c
            .query_one(
                "SELECT seq, legacy_id FROM webhook_events WHERE event_id = $1",
                &[&id.as_str()],
            )
            .await
            .unwrap();
        let (seq, legacy_id): (i64, Option<String>) = (row.get(0), row.get(1));
        assert!(seq > 2, "{seq}");
        assert_eq!(
            legacy_id, None,
            "not in the index of the events stored before"
        );
        assert_eq!(store.event_ids.seq(&id), seq);
        let (event, run) = store.get_event_with_run(&id).await.unwrap().unwrap();
        assert_eq!(
            (event.event_id, run.unwrap().execution.plan_execution_id),
            (id.clone(), queued.clone())
        );
        let work = store.load_work(&queued).await.unwrap().unwrap();
        assert_eq!(work.event.map(|e| e.event_id), Some(id.clone()));

        // An altered id finds nothing; another node on the database reads the same key.
        let mut altered = id.to_bytes();
        altered[0] ^= 0x80;
        let altered = EventId::from_bytes(altered);
        assert!(store.get_event(&altered).await.unwrap().is_none());
        assert!(store.get_event_with_run(&altered).await.unwrap().is_none());
        let other = db.store().await;
        let found = other.get_event(&id).await.unwrap().map(|e| e.event_id);
        assert_eq!(found, Some(id));
        other.close().await;
        store.close().await;

        // A database whose key is gone while events minted with it remain is refused, not
        // given a new key that would lead their ids nowhere.
        c.execute("DELETE FROM store_keys", &[]).await.unwrap();
        assert!(PgStore::open(&db.url, PoolOptions::default())
            .await
            .is_err());
        drop(c);
        db.drop_it().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_mint_from_blocks_of_their_own_and_every_event_is_found_by_its_id() {
        let db = Fresh::create().await;
        migrate(&db.url, Duration::from_secs(5)).await.unwrap();
        let c = {
            let (c, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
            tokio::spawn(connection);
            c
        };
        // Blocks of 4, so that 300 ids a node cross 75 of them, many callers at once.
        c.batch_execute("ALTER SEQUENCE webhook_event_seq INCREMENT BY 4")
            .await
            .unwrap();
        let (a, b) = two_nodes(&db).await;
        async fn mint(store: &PgStore) -> Vec<StoreResult<EventId>> {
            futures_util::future::join_all((0..300).map(|_| store.new_event_id())).await
        }
        let (from_a, from_b) = tokio::join!(mint(&a), mint(&b));
        let (from_a, from_b): (Vec<EventId>, Vec<EventId>) = (
            from_a.into_iter().map(Result::unwrap).collect(),
            from_b.into_iter().map(Result::unwrap).collect(),
        );
        // Each node records its own ids, and a tenth of the other's (those it did not mint).
        async fn record(store: &PgStore, id: &EventId) -> StoreResult<RecordOutcome> {
            let mut e = webhook_event("deploy");
            e.event_id = id.clone();
            store.record_event(e, None).await
        }
        let recorded = futures_util::future::join_all(
            from_a
                .iter()
                .map(|id| record(&a, id))
                .chain(from_b.iter().map(|id| record(&b, id))),
        )
        .await;
        assert!(recorded
            .iter()
            .all(|r| matches!(r, Ok(RecordOutcome::Stored(_)))));
        let mut foreign = Vec::new();
        for _ in 0..30 {
            let id = b.new_event_id().await.unwrap();
            assert!(matches!(
                record(&a, &id).await,
                Ok(RecordOutcome::Stored(_))
            ));
            foreign.push(id);
        }
        for (id, legacy) in from_a
            .iter()
            .chain(&from_b)
            .map(|id| (id, false))
            .chain(foreign.iter().map(|id| (id, true)))
        {
            let row = c
                .query_one(
                    "SELECT seq, legacy_id IS NOT NULL FROM webhook_events WHERE event_id = $1",
                    &[&id.as_str()],
                )
                .await
                .unwrap();
            let (seq, stored_legacy): (i64, bool) = (row.get(0), row.get(1));
            assert_eq!(stored_legacy, legacy, "{id}");
            assert_eq!(
                seq == a.event_ids.seq(id),
                !legacy,
                "{id} at the seq it leads to"
            );
            for node in [&a, &b] {
                let found = node.get_event(id).await.unwrap().map(|e| e.event_id);
                assert_eq!(found.as_ref(), Some(id));
            }
        }
        let distinct: i64 = c
            .query_one("SELECT COUNT(DISTINCT seq) FROM webhook_events", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(distinct, 630);
        a.close().await;
        b.close().await;

        // A sequence set back behind the stored events (a copy made without it) is moved past
        // them when a node starts, so no block holds a `seq` in use.
        c.batch_execute("SELECT setval('webhook_event_seq', 1)")
            .await
            .unwrap();
        let again = db.store().await;
        for _ in 0..10 {
            let mut e = webhook_event("deploy");
            e.event_id = again.new_event_id().await.unwrap();
            let id = e.event_id.clone();
            assert!(matches!(
                again.record_event(e, None).await,
                Ok(RecordOutcome::Stored(_))
            ));
            assert_eq!(
                again.get_event(&id).await.unwrap().map(|e| e.event_id),
                Some(id)
            );
        }
        again.close().await;
        drop(c);
        db.drop_it().await;
    }

    /// A claim walks the claim index from its start and stops at its limit, with the generic
    /// plan its cached statement keeps, whether that plan was made on an empty table or on a
    /// backlog of thousands; it leases the due executions, oldest due first.
    #[tokio::test]
    async fn a_claim_walks_only_the_due_executions_in_order() {
        use crate::store::executions::ExecutionStore as _;
        let db = Fresh::create().await;
        let store = db.store().await;
        let c = store.client().await.unwrap();
        // The plan the claims keep, made on an empty table.
        let plan = plan_of_claims(&c, crate::store::now_millis()).await;
        assert!(walks_the_claim_index(&plan), "{plan}");
        // A backlog of 5,000 queued executions, queued in reverse order of their ids, 4,000 that
        // are not due (live leases, waits until far in the future), and one of each kind that is
        // due before the queued ones or never.
        let far = 9_000_000_000_000_i64;
        c.batch_execute(&format!(
            "INSERT INTO executions (plan_execution_id, account_id, org_id, project_id, \
               pipeline_id, pipeline_name, status, trigger_type, run_sequence, runtime_input, \
               created_at, lease_until, wake_at) \
             SELECT id, 'acc', 'default', 'proj', 'p', 'p', status, 'MANUAL', 0, '', \
               created_at, lease_until, wake_at FROM ( \
               SELECT 'x' || lpad((10000 - n)::text, 21, '0') AS id, 'Queued' AS status, \
                 1000 + n AS created_at, NULL::bigint AS lease_until, NULL::bigint AS wake_at \
               FROM generate_series(1, 5000) n \
               UNION ALL SELECT 'l' || lpad(n::text, 21, '0'), 'Running', n, {far}, NULL \
               FROM generate_series(1, 3000) n \
               UNION ALL SELECT 'w' || lpad(n::text, 21, '0'), 'Running', n, NULL, {far} \
               FROM generate_series(1, 1000) n \
               UNION ALL SELECT rpad('lease_ran_out', 22, '_'), 'Running', 1, 500, NULL \
               UNION ALL SELECT rpad('approval_timed_out', 22, '_'), 'ApprovalWaiting', 2, \
                 NULL, 700 \
               UNION ALL SELECT rpad('approval_open', 22, '_'), 'ApprovalWaiting', 3, NULL, NULL \
               UNION ALL SELECT rpad('paused', 22, '_'), 'Paused', 4, NULL, NULL) rows; \
             ANALYZE executions"
        ))
        .await
        .unwrap();
        let now = crate::store::now_millis();
        let plan = plan_of_claims(&c, now).await;
        // The scan is bounded by the index: the entries not due are never read.
        assert!(walks_the_claim_index(&plan), "{plan}");
        assert!(!plan.contains("Rows Removed by Filter"), "{plan}");
        drop(c);

        let claims = store
            .claim_executions("node", 4, now, 30_000)
            .await
            .unwrap();

        let ids: Vec<&str> = claims.iter().map(|c| c.claim.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "lease_ran_out_________",
                "approval_timed_out____",
                "x000000000000000009999",
                "x000000000000000009998"
            ],
            "due first, then queued first"
        );
        store.close().await;
        db.drop_it().await;
    }

    /// The generic plan of [`executions::CLAIM_SQL`] (the one its cached statement keeps, made
    /// for any values) prepared now with the settings of every claim
    /// ([`executions::PLAN_BY_INDEXES`]), run for a claim of 8 due by `now` and rolled back.
    async fn plan_of_claims(c: &tokio_postgres::Client, now: Millis) -> String {
        c.batch_execute(&format!(
            "{}; PREPARE claims AS {}",
            executions::PLAN_BY_INDEXES,
            executions::CLAIM_SQL
        ))
        .await
        .unwrap();
        let tokens = (0..8).map(|n| format!("'t{n}'")).collect::<Vec<_>>();
        let plan: Vec<String> = firsts(
            c,
            &format!(
                "EXPLAIN ANALYZE EXECUTE claims('node', 30000, {now}, 8, ARRAY[{}])",
                tokens.join(", ")
            ),
            &[],
        )
        .await;
        c.batch_execute("ROLLBACK; DEALLOCATE claims")
            .await
            .unwrap();
        plan.join("\n")
    }

    /// Whether a claim's `plan` walks the claim index from its start in order, never all of
    /// `executions` nor a bitmap of its due rows to sort.
    fn walks_the_claim_index(plan: &str) -> bool {
        plan.contains("Index Scan using executions_claimable")
            && plan.contains("Index Cond: (CASE WHEN")
            && !plan.contains("Seq Scan on executions")
            && !plan.contains("Bitmap")
    }

    /// The generic plan of [`executions::END_SQL`] (the one a cached statement keeps, made for
    /// any values) prepared now with the settings of its groups ([`executions::PLAN_BY_INDEXES`]),
    /// shown for an end of execution `id`.
    async fn plan_of_ends(c: &tokio_postgres::Client, id: &str, now: Millis) -> String {
        c.batch_execute(&format!(
            "{}; PREPARE ends AS {}",
            executions::PLAN_BY_INDEXES,
            executions::END_SQL
        ))
        .await
        .unwrap();
        let plan: Vec<String> = firsts(
            c,
            &format!(
                "EXPLAIN EXECUTE ends(ARRAY['{id}'], ARRAY['t'], ARRAY[NULL], ARRAY['Success'], \
                 ARRAY[NULL]::int8[], ARRAY[NULL], ARRAY[{now}]::int8[], ARRAY[true], {}, \
                 {now}, 'node', 30000, ARRAY['new'], 1)",
                ["'{}'"; 15].join(", ")
            ),
            &[],
        )
        .await;
        c.batch_execute("ROLLBACK; DEALLOCATE ends").await.unwrap();
        plan.join("\n")
    }

    /// Whether `plan` reads `executions` through its indexes only (its primary key, and the
    /// claim index for the claims), never all of it, and joins nothing by hashing or sorting
    /// it.
    fn by_indexes(plan: &str) -> bool {
        plan.contains("using executions_claimable")
            && plan.contains("using executions_pkey")
            && !plan.contains("Seq Scan on executions")
            && !plan
                .lines()
                .any(|l| (l.contains("Hash") || l.contains("Merge")) && l.contains(" Join"))
    }

    /// A group of ends is one statement: each execution that still holds its token is ended,
    /// one that lost it is declined with nothing written, and each ended one whose worker wants
    /// another gets one of the oldest runnable executions, none twice and none of the group's.
    /// Its plan, cached, finds the rows it ends by primary key and the next ones by walking the
    /// claim index, never scanning `executions`, whether it was made on an empty table or a
    /// large one: made without the group's settings, a plan cached while the table was small
    /// hash-joined a scan of the whole table.
    #[tokio::test]
    async fn a_group_of_ends_claims_one_next_for_each_and_never_scans_executions() {
        use super::groups::Write as _;
        use crate::domain::ids::LeaseToken;
        use crate::store::executions::{status, Claim, Claimed, NextClaim};
        use executions::{AtOnce, End};

        let db = Fresh::create().await;
        let store = db.store().await;
        let c = store.client().await.unwrap();
        let now = now_millis();
        // A few executions first, ended in groups, so that a plan could be cached small.
        let id = |n: u32| format!("x{n:021}");
        let queue = |from: u32, to: u32| {
            format!(
                "INSERT INTO executions (plan_execution_id, account_id, org_id, project_id, \
                   pipeline_id, pipeline_name, status, trigger_type, run_sequence, runtime_input, \
                   created_at) \
                 SELECT 'x' || lpad(n::text, 21, '0'), 'acc', 'default', 'proj', 'p', 'p', \
                   'Queued', 'MANUAL', n, '', n FROM generate_series({from}, {to}) n; \
                 UPDATE executions SET lease_owner = 'node', lease_until = {}, \
                   lease_token = 'token' || substr(plan_execution_id, 6) \
                 WHERE created_at BETWEEN {from} AND {from} + 2",
                now + 60_000
            )
        };
        let ends = executions::Ends {
            pool: store.pool.clone(),
        };
        let next = NextClaim {
            owner: "node".into(),
            lease_ms: 30_000,
        };
        // An end of execution `n`, with its right token or a lost one.
        let token = |n: u32| format!("token{n:017}");
        let lost = || "lost".repeat(5) + "00";
        let end = |n: u32, token: String, next: Option<NextClaim>| End {
            claim: Claim {
                id: PlanExecutionId::parse(&id(n)).unwrap(),
                token: LeaseToken::parse(&token).unwrap(),
            },
            begun: None,
            steps: Vec::new(),
            status: status::SUCCESS.to_owned(),
            failure_message: None,
            now,
            next,
        };
        let group = |from: u32| {
            vec![
                end(from, token(from), Some(next.clone())),
                end(from + 1, lost(), Some(next.clone())),
                end(from + 2, token(from + 2), None),
            ]
        };
        // The generic plan of the cached statement, made with the group's settings while
        // the table is empty: it must find rows through the indexes, as it will be kept.
        let small_plan = plan_of_ends(&c, &id(1), now).await;
        assert!(by_indexes(&small_plan), "{small_plan}");
        for round in 0..8 {
            let from = 1 + round * 10;
            c.batch_execute(&queue(from, from + 2)).await.unwrap();
            ends.write(group(from)).await;
        }
        c.batch_execute(&queue(1001, 6000)).await.unwrap();
        let answers: Vec<_> = ends
            .write(group(1001))
            .await
            .into_iter()
            .map(|(end, answer)| (end.claim.id.to_string(), answer.unwrap()))
            .collect();

        let claimed = match &answers[..] {
            [(
                a,
                AtOnce::Ended(Some(Claimed {
                    claim,
                    work: Some(work),
                })),
            ), (b, AtOnce::Declined), (c3, AtOnce::Ended(None))]
                if *a == id(1001) && *b == id(1002) && *c3 == id(1003) =>
            {
                // It had not started: what its worker reads came with the claim.
                assert_eq!(work.run.execution.plan_execution_id, claim.id);
                assert_eq!(work.run.execution.status, status::QUEUED);
                assert!(work.run.steps.is_empty() && work.event.is_none());
                claim.id.to_string()
            }
            _ => panic!("{answers:?}"),
        };
        // The oldest runnable execution not in the group.
        let leased: Vec<String> = firsts(
            &c,
            "SELECT plan_execution_id FROM executions WHERE lease_owner IS NOT NULL \
             AND created_at > 1000 ORDER BY created_at",
            &[],
        )
        .await;
        assert_eq!(leased, [id(1002), claimed.clone()]);
        assert_eq!(claimed, id(1004));
        let ended = count(
            &c,
            "SELECT COUNT(*) FROM executions WHERE status = 'Success' AND created_at > 1000",
            &[],
        )
        .await;
        assert_eq!(ended, 2);

        // An end that ends nothing (an execution that is not there) claims nothing, though its
        // worker wants a next one.
        let leased_before = count(
            &c,
            "SELECT COUNT(*) FROM executions WHERE lease_owner IS NOT NULL",
            &[],
        )
        .await;
        let nothing = ends
            .write(vec![end(9999, token(9999), Some(next.clone()))])
            .await;
        assert!(
            matches!(&nothing[..], [(_, Ok(AtOnce::Declined))]),
            "{:?}",
            nothing.iter().map(|(_, a)| a).collect::<Vec<_>>()
        );
        let leased_after = count(
            &c,
            "SELECT COUNT(*) FROM executions WHERE lease_owner IS NOT NULL",
            &[],
        )
        .await;
        assert_eq!(
            leased_after, leased_before,
            "nothing claimed when nothing ended"
        );

        // Two ends of one execution (a worker whose lease ran out while its end waited, and
        // the worker that claimed it next): only the token holder's ends it, and each is told
        // which. An end whose row another transaction holds is told so at once (to be sent
        // again), not waited for with the whole group behind it; and the lost one's end of
        // that execution is declined as lost.
        c.batch_execute(&format!(
            "UPDATE executions SET lease_owner = 'node', lease_until = {}, \
               lease_token = 'token' || substr(plan_execution_id, 6) \
             WHERE created_at IN (2001, 2002)",
            now + 60_000
        ))
        .await
        .unwrap();
        let mut other = store.client().await.unwrap();
        let holding = other.transaction().await.unwrap();
        holding
            .execute(
                "SELECT 1 FROM executions WHERE plan_execution_id = $1 FOR UPDATE",
                &[&id(2002)],
            )
            .await
            .unwrap();
        let written = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ends.write(vec![
                end(2001, lost(), None),
                end(2001, token(2001), None),
                end(2002, token(2002), None),
                end(2002, lost(), None),
            ]),
        )
        .await
        .expect("a locked row is not waited for");
        holding.rollback().await.unwrap();
        let told: Vec<_> = written
            .into_iter()
            .map(|(_, answer)| format!("{:?}", answer.unwrap()))
            .collect();
        assert_eq!(told, ["Declined", "Ended(None)", "Busy", "Declined"]);
        // Sent again once the row is let go, the busy end ends it.
        let again: Vec<_> = ends
            .write(vec![end(2002, token(2002), None)])
            .await
            .into_iter()
            .map(|(_, answer)| format!("{:?}", answer.unwrap()))
            .collect();
        assert_eq!(again, ["Ended(None)"]);

        // Made on the large table, the plan finds its rows the same way.
        let plan = plan_of_ends(&c, &id(6000), now).await;
        assert!(by_indexes(&plan), "{plan}");
        drop(c);
        store.close().await;
        db.drop_it().await;
    }

    /// An end whose execution's row another transaction holds (another node's claim that
    /// locked it and found it leased) is sent again with the next group, then waited for: it
    /// ends once the row is let go, and nothing is lost meanwhile.
    #[tokio::test]
    async fn an_end_whose_row_is_held_ends_once_it_is_let_go() {
        use crate::domain::ids::LeaseToken;
        use crate::store::executions::{status, Claim, ExecutionStore as _};

        let db = Fresh::create().await;
        let store = db.store().await;
        let id = "x000000000000000000001";
        let token = "token00000000000000001";
        let c = store.client().await.unwrap();
        c.batch_execute(&format!(
            "INSERT INTO executions (plan_execution_id, account_id, org_id, project_id, \
               pipeline_id, pipeline_name, status, trigger_type, run_sequence, runtime_input, \
               created_at, lease_owner, lease_until, lease_token) \
             VALUES ('{id}', 'acc', 'default', 'proj', 'p', 'p', 'Running', 'MANUAL', 1, '', 1, \
               'node', {}, '{token}')",
            now_millis() + 60_000
        ))
        .await
        .unwrap();
        let claim = Claim {
            id: PlanExecutionId::parse(id).unwrap(),
            token: LeaseToken::parse(token).unwrap(),
        };
        let mut other = store.client().await.unwrap();
        let holding = other.transaction().await.unwrap();
        holding
            .execute(
                "SELECT 1 FROM executions WHERE plan_execution_id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .unwrap();
        let (ended, status_while_held) = tokio::join!(
            store.finish_execution(&claim, None, Vec::new(), status::SUCCESS, None, 5, None),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let seen: Vec<String> = firsts(
                    &c,
                    "SELECT status FROM executions WHERE plan_execution_id = $1",
                    &[&id],
                )
                .await;
                holding.commit().await.unwrap();
                seen
            }
        );

        assert!(matches!(ended, Ok(None)), "{ended:?}");
        assert_eq!(status_while_held, [status::RUNNING]);
        let now: Vec<String> = firsts(
            &c,
            "SELECT status || ' ' || ended_at || ' ' || (lease_token IS NULL) FROM executions",
            &[],
        )
        .await;
        assert_eq!(now, ["Success 5 true"]);
        drop(c);
        drop(other);
        store.close().await;
        db.drop_it().await;
    }

    /// A claim whose execution cannot be read with it (a stored value that does not parse) is
    /// still a claim, by the run loop's claim as by an end's: it comes without what its worker
    /// reads, and the worker reads that itself, failing on its own execution.
    #[tokio::test]
    async fn a_claim_whose_work_cannot_be_read_comes_without_it() {
        use super::groups::Write as _;
        use crate::store::executions::{status, Claimed, NextClaim};
        use executions::{AtOnce, End};

        let db = Fresh::create().await;
        let store = db.store().await;
        let c = store.client().await.unwrap();
        c.batch_execute(
            "INSERT INTO executions (plan_execution_id, account_id, org_id, project_id, \
               pipeline_id, pipeline_name, status, trigger_type, run_sequence, runtime_input, \
               created_at) \
             SELECT 'x' || lpad(n::text, 21, '0'), 'not an account!', 'default', 'proj', 'p', \
               'p', 'Queued', 'MANUAL', n, '', n FROM generate_series(1, 2) n",
        )
        .await
        .unwrap();
        let unreadable = |claim: &Claimed, n: u32| {
            claim.work.is_none() && claim.claim.id.as_str() == format!("x{n:021}")
        };

        let claims = store
            .claim_executions("node", 1, now_millis(), 30_000)
            .await
            .unwrap();
        assert!(
            matches!(&claims[..], [first] if unreadable(first, 1)),
            "{claims:?}"
        );
        let ends = executions::Ends {
            pool: store.pool.clone(),
        };
        let answers = ends
            .write(vec![End {
                claim: claims[0].claim.clone(),
                begun: None,
                steps: Vec::new(),
                status: status::SUCCESS.to_owned(),
                failure_message: None,
                now: now_millis(),
                next: Some(NextClaim {
                    owner: "node".into(),
                    lease_ms: 30_000,
                }),
            }])
            .await;
        assert!(
            matches!(&answers[..], [(_, Ok(AtOnce::Ended(Some(next))))] if unreadable(next, 2)),
            "{:?}",
            answers.iter().map(|(_, a)| a).collect::<Vec<_>>()
        );
        drop(c);
        store.close().await;
        db.drop_it().await;
    }

    /// Retention deletes an old execution's steps and log lines with it (no foreign key does,
    /// since migration 0009), and leaves those of the executions it keeps.
    #[tokio::test]
    async fn a_purged_execution_takes_its_steps_and_log_lines_with_it() {
        let db = Fresh::create().await;
        let store = db.store().await;
        let c = store.client().await.unwrap();
        let day = 24 * 60 * 60 * 1000;
        let old = now_millis() - 40 * day;
        // Executions 1-3 ended 40 days ago, 4 ended now and 5 still runs; two steps and two
        // log lines each.
        c.batch_execute(&format!(
            "INSERT INTO executions (plan_execution_id, account_id, org_id, project_id, \
               pipeline_id, pipeline_name, status, trigger_type, run_sequence, runtime_input, \
               created_at, ended_at) \
             SELECT 'x' || n, 'acc', 'default', 'proj', 'p', 'p', \
               CASE WHEN n = 5 THEN 'Running' ELSE 'Success' END, 'MANUAL', n, '', {old}, \
               CASE WHEN n <= 3 THEN {old} WHEN n = 4 THEN {now} END \
             FROM generate_series(1, 5) n; \
             INSERT INTO execution_steps (plan_execution_id, stage_index, step_index, stage_id, \
               stage_name, step_id, step_name, step_type, status) \
             SELECT 'x' || n, 0, i, 's', 's', 'w' || i, 'w', 'Run', 'Success' \
             FROM generate_series(1, 5) n, generate_series(0, 1) i; \
             INSERT INTO step_log_lines (plan_execution_id, stage_id, step_id, seq, stream, ts, \
               line) \
             SELECT 'x' || n, 's', 'w0', i, 'stdout', {old}, 'line' \
             FROM generate_series(1, 5) n, generate_series(0, 1) i",
            now = now_millis(),
        ))
        .await
        .unwrap();

        assert_eq!(
            count(
                &c,
                "SELECT COUNT(*) FROM pg_constraint \
                 WHERE contype = 'f' AND confrelid = 'executions'::regclass",
                &[]
            )
            .await,
            0,
            "no foreign key refers to executions"
        );
        let left =
            |table: &str| format!("SELECT DISTINCT plan_execution_id FROM {table} ORDER BY 1");
        let tables = ["executions", "execution_steps", "step_log_lines"];

        // A purge of two: the third old execution keeps its steps and lines for the next one.
        let purged = store.purge_before(old + 1, 2).await.unwrap();
        assert_eq!(purged.executions, 2);
        let kept: Vec<String> = firsts(&c, &left("executions"), &[]).await;
        for table in tables {
            let ids: Vec<String> = firsts(&c, &left(table), &[]).await;
            assert_eq!(ids, kept, "{table}");
        }
        let purged = store.purge_before(old + 1, 2).await.unwrap();
        assert_eq!(purged.executions, 1);
        for table in tables {
            let ids: Vec<String> = firsts(&c, &left(table), &[]).await;
            assert_eq!(ids, ["x4", "x5"], "{table}");
        }
        for table in ["execution_steps", "step_log_lines"] {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            assert_eq!(count(&c, &sql, &[]).await, 4, "{table}");
        }
        drop(c);
        store.close().await;
        db.drop_it().await;
    }

    /// A connection an HTTP worker's runtime asked for first keeps working after that runtime
    /// stopped (the server's workers stop at shutdown, before the engine's last writes).
    #[tokio::test]
    async fn a_connection_outlives_the_runtime_that_asked_for_it() {
        let db = Fresh::create().await;
        let store = std::sync::Arc::new(db.store().await);
        let (made, made_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let worker = {
            let store = store.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let c = store.client().await.unwrap();
                    c.simple_query("SELECT 1").await.unwrap();
                });
                made.send(()).unwrap();
                stop_rx.recv().unwrap();
                drop(runtime);
            })
        };
        made_rx.await.unwrap();
        // The pool's one connection, taken while the runtime that asked for it still runs.
        let c = store.client().await.unwrap();
        stop.send(()).unwrap();
        worker.join().unwrap();

        let answered = c.simple_query("SELECT 1").await;

        assert!(answered.is_ok(), "{answered:?}");
        drop(c);
        store.close().await;
        db.drop_it().await;
    }

    #[tokio::test]
    async fn an_unreachable_database_is_unavailable() {
        let opened = PgStore::open(
            "postgres://postgres@127.0.0.1:1/none",
            PoolOptions::default(),
        )
        .await;

        assert!(
            matches!(opened, Err(StoreError::Unavailable)),
            "{:?}",
            opened.err()
        );
    }

    #[tokio::test]
    async fn a_store_whose_connections_were_cut_answers_unavailable_or_reconnects() {
        let db = Fresh::create().await;
        let store = db.store().await;
        store.get_account(&project().account).await.unwrap();

        admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ))
        .await;

        // A cut connection fails as unreachable (never as some other error), and the pool
        // replaces it. The server ends its backends a moment after the call above returns, so
        // a call or two may still meet one.
        let mut failures = 0;
        loop {
            match store.get_account(&project().account).await {
                Ok(_) => break,
                Err(StoreError::Unavailable) if failures < 3 => failures += 1,
                Err(e) => panic!("after {failures} failures a cut connection gave {e:?}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        store.close().await;
        db.drop_it().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_fail_while_no_block_can_be_taken_and_are_minted_again_once_one_can() {
        let db = Fresh::create().await;
        migrate(&db.url, Duration::from_secs(5)).await.unwrap();
        // Blocks of one `seq`: every id takes a block.
        let (c, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        tokio::spawn(connection);
        c.batch_execute("ALTER SEQUENCE webhook_event_seq INCREMENT BY 1")
            .await
            .unwrap();
        drop(c);
        let store = db.store().await;
        store.new_event_id().await.unwrap();

        // The database refuses connections: callers that need a block fail, all of them.
        admin(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'",
            db.name
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let minted = futures_util::future::join_all((0..8).map(|_| store.new_event_id())).await;
        assert!(minted.iter().all(Result::is_err), "{minted:?}");

        // Once it takes connections again, ids are minted and lead to their events.
        admin(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await;
        let mut e = webhook_event("deploy");
        e.event_id = store.new_event_id().await.unwrap();
        let id = e.event_id.clone();
        assert!(matches!(
            store.record_event(e, None).await,
            Ok(RecordOutcome::Stored(_))
        ));
        let found = store.get_event(&id).await.unwrap().map(|e| e.event_id);
        assert_eq!(found, Some(id));
        store.close().await;
        db.drop_it().await;
    }

    #[tokio::test]
    async fn a_write_that_waits_past_lock_timeout_is_unavailable_and_stores_nothing() {
        let db = Fresh::create().await;
        let store = PgStore::open(
            &db.url,
            PoolOptions {
                lock_timeout: Duration::from_millis(200),
                ..PoolOptions::default()
            },
        )
        .await
        .unwrap();
        let acc = project().account;
        store.put_account(&acc, "before").await.unwrap();
        // Another session holds the account's row (a hung node, a migration, an operator).
        let (blocker, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        let driver = tokio::spawn(connection);
        blocker
            .batch_execute("BEGIN; SELECT 1 FROM accounts WHERE id = 'acc' FOR UPDATE")
            .await
            .unwrap();

        let blocked = store.put_account(&acc, "during").await;
        assert!(
            matches!(blocked, Err(StoreError::Unavailable)),
            "{blocked:?}"
        );

        blocker.batch_execute("ROLLBACK").await.unwrap();
        let account = store.get_account(&acc).await.unwrap().unwrap();
        assert_eq!(account.name, "before", "the refused write stored nothing");
        store.put_account(&acc, "after").await.unwrap();

        // A group of webhook events whose statement waits past the timeout: each of its events
        // is refused alike, none is stored, and the next event is.
        blocker
            .batch_execute("BEGIN; LOCK TABLE webhook_events IN SHARE MODE")
            .await
            .unwrap();
        let refused = futures_util::future::join_all((0..5).map(|_| {
            let (e, x) = queueing("deploy");
            store.record_event(e, x)
        }))
        .await;
        assert!(
            refused
                .iter()
                .all(|r| matches!(r, Err(StoreError::Unavailable))),
            "{refused:?}"
        );
        blocker.batch_execute("ROLLBACK").await.unwrap();
        let c = store.client().await.unwrap();
        let stored = count(&c, "SELECT COUNT(*) FROM webhook_events", &[]).await;
        assert_eq!(stored, 0, "the refused group stored nothing");
        drop(c);
        let (e, x) = queueing("deploy");
        let after = store.record_event(e, x).await;
        assert!(matches!(after, Ok(RecordOutcome::Stored(_))), "{after:?}");
        drop(blocker);
        let _ = driver.await;
        store.close().await;
        db.drop_it().await;
    }

    #[tokio::test]
    async fn the_same_idempotency_key_on_two_nodes_at_once_stores_one_event() {
        let db = Fresh::create().await;
        let (a, b) = two_nodes(&db).await;
        let event = |_| WebhookEvent {
            idempotency_key: Some("k1".into()),
            ..webhook_event("deploy")
        };
        let (ea, eb) = (event(()), event(()));

        let (ra, rb) = tokio::join!(a.record_event(ea, None), b.record_event(eb, None));

        let outcomes = [ra.unwrap(), rb.unwrap()];
        let stored: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                RecordOutcome::Stored(e) => Some(e.event_id.clone()),
                RecordOutcome::Replayed(_) => None,
            })
            .collect();
        let replayed: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                RecordOutcome::Replayed(e) => Some(e.event_id.clone()),
                RecordOutcome::Stored(_) => None,
            })
            .collect();
        assert_eq!(stored.len(), 1, "one node stores it");
        assert_eq!(replayed, stored, "the other replays that event");
        a.close().await;
        b.close().await;
        db.drop_it().await;
    }

    /// A webhook event of `pipeline` in [`project`] that queues nothing.
    fn webhook_event(pipeline: &str) -> WebhookEvent {
        WebhookEvent {
            event_id: EventId::generate(),
            scope: project(),
            pipeline: pipeline.into(),
            trigger: "on_push".into(),
            status: "TARGET_EXECUTION_REQUESTED".into(),
            message: String::new(),
            exception_occured: false,
            payload: "{}".into(),
            headers: crate::store::json_text("{}".into()).unwrap(),
            runtime_input: String::new(),
            condition_results: crate::store::json_text("[]".into()).unwrap(),
            plan_execution_id: None,
            idempotency_key: None,
            created_at: now_millis(),
        }
    }

    /// A webhook event of `pipeline` that queues an execution.
    fn queueing(pipeline: &str) -> (WebhookEvent, Option<NewExecution>) {
        let plan = PlanExecutionId::generate();
        let event = WebhookEvent {
            plan_execution_id: Some(plan.clone()),
            ..webhook_event(pipeline)
        };
        let execution = NewExecution {
            plan_execution_id: plan,
            pipeline_name: pipeline.into(),
            trigger_type: "WEBHOOK_CUSTOM",
            lease: None,
        };
        (event, Some(execution))
    }

    /// The run sequence numbers of `pipeline`'s executions, in order.
    async fn run_sequences(c: &Client, pipeline: &str) -> Vec<i64> {
        firsts(
            c,
            "SELECT run_sequence FROM executions WHERE pipeline_id = $1 ORDER BY run_sequence",
            &[&pipeline],
        )
        .await
    }

    #[tokio::test]
    async fn events_recorded_at_once_share_commits_and_each_execution_gets_its_own_number() {
        let db = Fresh::create().await;
        let (a, b) = two_nodes(&db).await;
        // On each node: 75 events queueing `deploy`, 45 queueing `build`, 30 queueing nothing,
        // half of those under an id the node did not mint.
        let events = || {
            (0..150).map(|n| match n % 10 {
                0..=4 => (queueing("deploy"), true),
                5..=7 => (queueing("build"), true),
                8 => ((webhook_event("deploy"), None), true),
                _ => ((webhook_event("deploy"), None), false),
            })
        };
        // The ids first, so that the events are then recorded all at once.
        async fn prepare(
            store: &PgStore,
            ((mut e, x), minted): ((WebhookEvent, Option<NewExecution>), bool),
        ) -> (&PgStore, WebhookEvent, Option<NewExecution>, bool) {
            if minted {
                e.event_id = store.new_event_id().await.unwrap();
            }
            (store, e, x, minted)
        }
        let mut prepared = Vec::new();
        for (store, e) in events().map(|e| (&a, e)).chain(events().map(|e| (&b, e))) {
            prepared.push(prepare(store, e).await);
        }
        let recorded = futures_util::future::join_all(prepared.into_iter().map(
            |(store, e, x, minted)| async move {
                let (id, plan) = (e.event_id.clone(), e.plan_execution_id.clone());
                (id, plan, minted, store.record_event(e, x).await)
            },
        ))
        .await;

        let c = a.client().await.unwrap();
        for (id, plan, minted, outcome) in &recorded {
            match outcome {
                Ok(RecordOutcome::Stored(e)) => assert_eq!(&e.event_id, id),
                other => panic!("{id}: {other:?}"),
            }
            let row = c
                .query_one(
                    "SELECT e.plan_execution_id, x.event_id, e.legacy_id IS NULL, \
                     x.event_seq = e.seq FROM webhook_events e \
                     LEFT JOIN executions x ON x.plan_execution_id = e.plan_execution_id \
                     WHERE e.event_id = $1",
                    &[&id.as_str()],
                )
                .await
                .unwrap();
            let (stored_plan, execution_of): (Option<String>, Option<String>) =
                (row.get(0), row.get(1));
            assert_eq!(stored_plan.as_deref(), plan.as_ref().map(|p| p.as_str()));
            let expected_owner = plan.as_ref().map(|_| id.as_str());
            assert_eq!(execution_of.as_deref(), expected_owner, "its execution");
            let (at_its_seq, reached_by_seq): (bool, Option<bool>) = (row.get(2), row.get(3));
            assert_eq!(at_its_seq, *minted, "{id}: found at the seq it leads to");
            assert_eq!(
                reached_by_seq,
                plan.as_ref().map(|_| true),
                "its execution's event"
            );
            // Either node finds it by its id, as a status poll would.
            for node in [&a, &b] {
                let found = node.get_event(id).await.unwrap().map(|e| e.event_id);
                assert_eq!(found.as_ref(), Some(id));
            }
        }
        for (pipeline, queued) in [("deploy", 150), ("build", 90)] {
            assert_eq!(
                run_sequences(&c, pipeline).await,
                (1..=queued).collect::<Vec<i64>>(),
                "{pipeline}"
            );
        }
        // Rows that one transaction wrote share its id (xmin). One commit an event would be
        // 300; each node's first writes (four in flight) go with the few events queued by
        // then, and the events under an id the node did not mint wait for a block of numbers,
        // so the count moves with the scheduling of the threads that run the tests (21 once,
        // in a full run of `cargo test` in CI, where the bound had been 20).
        let commits: i64 = c
            .query_one("SELECT COUNT(DISTINCT xmin::text) FROM webhook_events", &[])
            .await
            .unwrap()
            .get(0);
        assert!(commits <= 40, "300 events took {commits} commits");
        drop(c);
        a.close().await;
        b.close().await;
        db.drop_it().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_that_keep_arriving_while_groups_are_written_are_all_stored_and_answered() {
        let db = Fresh::create().await;
        let store = std::sync::Arc::new(db.store().await);
        // A burst of more than one group's worth, then eight callers one event after another,
        // so that events arrive while groups are being written; some callers stop waiting. The
        // events have ids the store minted, as in intake, so each is queued as soon as it is
        // recorded (one minted elsewhere may first wait for a block of `seq`s, and a caller
        // that stops waiting then stores nothing).
        let burst = futures_util::future::join_all((0..intake::MAX_GROUP + 44).map(|_| async {
            let (mut e, x) = queueing("deploy");
            e.event_id = store.new_event_id().await.unwrap();
            store.record_event(e, x).await
        }));
        let callers: Vec<_> = (0..8)
            .map(|caller| {
                let store = std::sync::Arc::clone(&store);
                tokio::spawn(async move {
                    let mut answered = 0;
                    for n in 0..50 {
                        let (mut e, x) = queueing(if n % 3 == 0 { "build" } else { "deploy" });
                        e.event_id = store.new_event_id().await.unwrap();
                        let wait = match (caller, n % 10) {
                            (0, 0) => Duration::from_micros(50),
                            _ => Duration::from_secs(30),
                        };
                        if let Ok(outcome) =
                            tokio::time::timeout(wait, store.record_event(e, x)).await
                        {
                            assert!(
                                matches!(outcome, Ok(RecordOutcome::Stored(_))),
                                "{outcome:?}"
                            );
                            answered += 1;
                        }
                    }
                    answered
                })
            })
            .collect();

        let burst = tokio::time::timeout(Duration::from_secs(30), burst)
            .await
            .unwrap();
        let mut answered = 0;
        for caller in callers {
            answered += caller.await.unwrap();
        }

        assert!(burst
            .iter()
            .all(|o| matches!(o, Ok(RecordOutcome::Stored(_)))));
        assert!(answered >= 7 * 50, "{answered}");
        // Every event is stored, those whose caller stopped waiting too, once everything
        // queued has been written.
        store.intake.flush().await;
        let c = store.client().await.unwrap();
        for (pipeline, queued) in [("deploy", 300 + 8 * 33), ("build", 8 * 17)] {
            assert_eq!(
                run_sequences(&c, pipeline).await,
                (1..=queued).collect::<Vec<i64>>(),
                "{pipeline}"
            );
        }
        drop(c);
        store.close().await;
        db.drop_it().await;
    }

    #[tokio::test]
    async fn an_event_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_stored() {
        let db = Fresh::create().await;
        let store = db.store().await;
        let (first, x) = queueing("deploy");
        let taken = first.event_id.clone();
        store.record_event(first, x).await.unwrap();
        // Twenty events at once, one of them under an event id already stored.
        let group: Vec<_> = (0..20)
            .map(|n| {
                let (mut e, x) = queueing("deploy");
                if n == 7 {
                    e.event_id = taken.clone();
                }
                let plan = e.plan_execution_id.clone().unwrap();
                (plan, e, x)
            })
            .collect();
        let plans: Vec<_> = group.iter().map(|(plan, _, _)| plan.clone()).collect();

        let outcomes = futures_util::future::join_all(
            group.into_iter().map(|(_, e, x)| store.record_event(e, x)),
        )
        .await;

        let c = store.client().await.unwrap();
        for (n, (outcome, plan)) in outcomes.iter().zip(&plans).enumerate() {
            let execution = count(
                &c,
                "SELECT COUNT(*) FROM executions WHERE plan_execution_id = $1",
                &[&plan.as_str()],
            )
            .await;
            if n == 7 {
                assert!(
                    matches!(outcome, Err(StoreError::Database { .. })),
                    "{outcome:?}"
                );
                assert_eq!(execution, 0, "nothing of the refused event is stored");
            } else {
                assert!(
                    matches!(outcome, Ok(RecordOutcome::Stored(_))),
                    "{outcome:?}"
                );
                assert_eq!(execution, 1);
            }
        }
        let events = count(&c, "SELECT COUNT(*) FROM webhook_events", &[]).await;
        assert_eq!(events, 20, "the first event and the 19 others");
        drop(c);
        store.close().await;
        db.drop_it().await;
    }

    #[tokio::test]
    async fn runs_queued_on_two_nodes_at_once_get_distinct_numbers() {
        let db = Fresh::create().await;
        let (a, b) = two_nodes(&db).await;
        let new = || NewManualExecution {
            scope: project(),
            pipeline: Identifier::parse("deploy", "pipeline").unwrap(),
            pipeline_name: "deploy".into(),
            runtime_input: String::new(),
        };

        let mut numbers = Vec::new();
        for _ in 0..10 {
            let (x, y) = tokio::join!(a.queue_execution(new()), b.queue_execution(new()));
            numbers.push(x.unwrap().run_sequence);
            numbers.push(y.unwrap().run_sequence);
        }

        numbers.sort_unstable();
        assert_eq!(numbers, (1..=20).collect::<Vec<i64>>());
        a.close().await;
        b.close().await;
        db.drop_it().await;
    }

    /// A claim of deliveries walks `deliveries_due` in order and stops at its limit even when
    /// the statistics are those of an empty table and a backlog has come since: without its
    /// settings the planner started from the rule, read every delivery of it through
    /// `deliveries_by_rule` and sorted them, 40 ms a claim in a drain of 5,000.
    #[tokio::test]
    async fn a_claim_of_deliveries_walks_the_due_index_whatever_the_statistics_say() {
        let db = Fresh::create().await;
        let store = db.store().await;
        let p = project_with_rule(&store).await;
        let now = now_millis();
        let c = store.client().await.unwrap();
        // The statistics of an empty table; then four events of each of 1,000 executions
        // pending, and as many delivered.
        c.batch_execute("ANALYZE deliveries; ANALYZE event_rules")
            .await
            .unwrap();
        c.batch_execute(&format!(
            "INSERT INTO deliveries (id, account_id, org_id, project_id, rule_id, webhook_id, \
               execution_id, event_type, payload, status, next_attempt_at, created_at, \
               updated_at) \
             SELECT lpad(to_hex(n), 24, '0'), '{}', '{}', '{}', 'ops', 'msg_' || n, \
               'x' || (n / 4), 'stage_start', '{{}}', \
               CASE WHEN n > 4000 THEN 'Success' ELSE 'Pending' END, {now}, {now}, {now} \
             FROM generate_series(1, 8000) n",
            p.account.as_str(),
            p.org.as_str(),
            p.project.as_str()
        ))
        .await
        .unwrap();

        c.batch_execute(&format!(
            "BEGIN; {}; PREPARE claim AS {}",
            outbound::CLAIM_PLAN,
            outbound::CLAIM_SQL
        ))
        .await
        .unwrap();
        let plan: Vec<String> = firsts(
            &c,
            &format!(
                "EXPLAIN EXECUTE claim({now}, {}, ARRAY[]::text[], 32, 'lease')",
                now + 1
            ),
            &[],
        )
        .await;
        c.batch_execute("ROLLBACK; DEALLOCATE claim").await.unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index Scan using deliveries_due on deliveries d")
                && !plan.contains("deliveries_by_rule")
                && !plan.contains("Sort")
                && !plan.contains("Bitmap"),
            "{plan}"
        );
        drop(c);
        store.close().await;
        db.drop_it().await;
    }

    #[tokio::test]
    async fn a_later_event_of_an_execution_waits_on_every_node_while_an_earlier_one_is_pending() {
        let db = Fresh::create().await;
        let (a, b) = two_nodes(&db).await;
        let p = project_with_rule(&a).await;
        let now = now_millis();
        let delivery = |n: u32| NewDelivery {
            id: format!("{n:024x}"),
            scope: p.clone(),
            rule: "ops".into(),
            webhook_id: format!("msg_{n}"),
            event_type: "stage_start".into(),
            payload: "{}".into(),
            due_at: Some(now),
            execution_id: Some("x1".into()),
            test: false,
        };
        // Both nodes fan out the same two events: each is made once.
        let (fa, fb) = tokio::join!(
            a.fan_out(vec![delivery(1), delivery(2)], 0),
            b.fan_out(
                vec![
                    NewDelivery {
                        id: format!("{:024x}", 11),
                        ..delivery(1)
                    },
                    NewDelivery {
                        id: format!("{:024x}", 12),
                        ..delivery(2)
                    }
                ],
                0
            )
        );
        fa.unwrap();
        fb.unwrap();

        let (ca, cb) = tokio::join!(
            a.claim_deliveries(&[], 10, now, 60_000),
            b.claim_deliveries(&[], 10, now, 60_000)
        );
        let claimed: Vec<_> = ca.unwrap().into_iter().chain(cb.unwrap()).collect();
        assert_eq!(claimed.len(), 1, "only the first event is handed out");
        let first = &claimed[0];
        assert_eq!(first.delivery.webhook_id, "msg_1");
        // While it is attempted, neither node hands out the second.
        assert!(b
            .claim_deliveries(&[], 10, now, 60_000)
            .await
            .unwrap()
            .is_empty());
        assert!(a
            .claim_deliveries(&[], 10, now, 60_000)
            .await
            .unwrap()
            .is_empty());

        a.record_attempt(delivered(&first.delivery.id, &first.lease, now), now)
            .await
            .unwrap();

        let next = b
            .claim_deliveries(&[], 10, now_millis(), 60_000)
            .await
            .unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].delivery.webhook_id, "msg_2");
        a.close().await;
        b.close().await;
        db.drop_it().await;
    }
}
