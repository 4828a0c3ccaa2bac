//! Storage: the [`Store`] trait that every backend implements, the records it speaks in, and
//! the in-memory hot-lookup cache. All SQL lives below this folder.
//!
//! Callers see only the trait, so a PostgreSQL backend can be added without touching them.

pub mod cache;
pub(crate) mod cursor;
mod event_ids;
pub mod executions;
pub mod outbound;
pub mod postgres;
pub mod relay;
pub mod sqlite;

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use serde::Serialize;

use crate::config::{Database, Settings};

use crate::domain::ids::{AccountId, EventId, Identifier, KeyId, PlanExecutionId, ProjectRef};
use crate::domain::settings::{ScopedValue, SettingChain};

/// Errors a backend reports. Each maps to one envelope code at the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A resource the write depends on does not exist (e.g. the org of a new project).
    #[error("{0}")]
    ParentMissing(String),
    /// A list cursor that this store did not hand out.
    #[error("Invalid request: cursor is not one this server returned")]
    InvalidCursor,
    /// The store cannot take more work now (however it is built: a full write queue, an
    /// exhausted connection pool); the caller should retry shortly.
    #[error("the store is overloaded")]
    Overloaded,
    /// The database cannot be reached; nothing was written. The caller should retry shortly.
    #[error("the database is unreachable")]
    Unavailable,
    /// The writer has stopped (shutting down).
    #[error("the store is shutting down")]
    ShuttingDown,
    /// A worker's write under a lease it no longer holds (it ran out, or the execution was
    /// claimed again or let go): nothing was written. Only the engine sees it; the worker
    /// stops, since another worker owns the execution now.
    #[error("the lease on the execution was lost")]
    LeaseLost,
    /// The database failed; `context` says during what.
    #[error("{context}")]
    Database {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub(crate) fn db(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Database {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Epoch milliseconds, the time unit of every stored timestamp.
pub type Millis = i64;

/// The current time in epoch milliseconds.
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// An account.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// `accountIdentifier`.
    pub identifier: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
}

/// An org or a project: a named node in the tenancy tree.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// Its own identifier: the org's, or the project's.
    pub identifier: String,
    /// The account.
    pub account_identifier: String,
    /// The org (for an org, its own identifier).
    pub org_identifier: String,
    /// The project, for a project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_identifier: Option<String>,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in its account.
    Admin,
    /// Fire triggers and read status, optionally limited to listed projects.
    Executor,
}

impl Role {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Executor => "executor",
        }
    }

    pub(crate) fn from_stored(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "executor" => Some(Role::Executor),
            _ => None,
        }
    }
}

/// A stored API key: everything but the secret, plus its argon2id hash.
/// `Debug` leaves out the hash.
#[derive(Clone)]
pub struct ApiKeyRecord {
    /// The key id.
    pub key_id: KeyId,
    /// The owning account (`_root` for the root key).
    pub account: AccountId,
    /// A label.
    pub name: String,
    /// The role.
    pub role: Role,
    /// `org/project` pairs the key is limited to; `None` means every project.
    pub projects: Option<Vec<String>>,
    /// argon2id PHC string of the whole key.
    pub hash: String,
    /// Creation time.
    pub created_at: Millis,
    /// Expiry time, if any.
    pub expires_at: Option<Millis>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<Millis>,
}

/// A signed-in console browser (DESIGN §12). It holds no secret: the cookie's token is stored
/// only as its SHA-256, and the key it signed in with is named by id and re-read on every use.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    /// SHA-256 (hex) of the cookie's token.
    pub token_hash: String,
    /// The key that signed in.
    pub key_id: KeyId,
    /// The token every state-changing request must carry.
    pub csrf: String,
    /// The project the picker chose (`account/org/project`).
    pub project: Option<String>,
    /// Sign-in time.
    pub created_at: Millis,
    /// Last request.
    pub last_seen: Millis,
}

/// Where a setting is being written.
#[derive(Debug, Clone)]
pub struct SettingScope {
    /// The account.
    pub account: AccountId,
    /// The org, for org or project scope.
    pub org: Option<Identifier>,
    /// The project, for project scope (requires `org`).
    pub project: Option<Identifier>,
}

/// A stored pipeline.
#[derive(Debug, Clone)]
pub struct PipelineRecord {
    /// Where it lives.
    pub scope: ProjectRef,
    /// Its identifier.
    pub identifier: Identifier,
    /// Its name.
    pub name: String,
    /// Canonical JSON (the Harness `{"pipeline":{...}}` shape).
    pub spec: serde_json::Value,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
}

/// A stored custom trigger.
/// `Debug` leaves out the token and the spec (which may hold a signing secret).
#[derive(Clone)]
pub struct TriggerRecord {
    /// Where it lives.
    pub scope: ProjectRef,
    /// The pipeline it fires.
    pub pipeline: Identifier,
    /// Its identifier.
    pub identifier: Identifier,
    /// Its name.
    pub name: String,
    /// The immutable webhook token.
    pub token: String,
    /// Whether it accepts events.
    pub enabled: bool,
    /// Canonical JSON (`{"trigger":{...}}`), secrets included.
    pub spec: serde_json::Value,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
}

/// JSON text as it was serialised: written to the database, and into answers, as it is, and
/// never parsed into a tree on the way (issue 13: building and printing trees of an event's
/// headers and condition results took 7 % of an HTTP worker on intake).
pub type JsonText = Box<serde_json::value::RawValue>;

/// `text` as [`JsonText`], when it is JSON.
pub fn json_text(text: String) -> Result<JsonText, serde_json::Error> {
    serde_json::value::RawValue::from_string(text)
}

/// The tree of JSON text, for the few readers that walk it (the console, the engine).
pub fn json_tree(text: &serde_json::value::RawValue) -> serde_json::Value {
    serde_json::from_str(text.get()).unwrap_or(serde_json::Value::Null)
}

/// A webhook event as stored (and as the status endpoint reports it).
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    /// `eventCorrelationId`.
    pub event_id: EventId,
    /// Where the trigger lives.
    pub scope: ProjectRef,
    /// Its pipeline.
    pub pipeline: String,
    /// Its trigger.
    pub trigger: String,
    /// `webhookProcessingDetails.status`.
    pub status: String,
    /// Human-readable outcome.
    pub message: String,
    /// Harness's `exceptionOccured`.
    pub exception_occured: bool,
    /// The body as received.
    pub payload: String,
    /// Received headers (JSON object), secret headers removed.
    pub headers: JsonText,
    /// Resolved runtime input YAML.
    pub runtime_input: String,
    /// Per-condition results (JSON array).
    pub condition_results: JsonText,
    /// The execution requested, if any.
    pub plan_execution_id: Option<PlanExecutionId>,
    /// The caller's `Idempotency-Key`, if given.
    pub idempotency_key: Option<String>,
    /// Receipt time.
    pub created_at: Millis,
}

/// An execution to queue together with its event.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Its id.
    pub plan_execution_id: PlanExecutionId,
    /// The pipeline's display name at queue time.
    pub pipeline_name: String,
    /// `WEBHOOK_CUSTOM` or `MANUAL`.
    pub trigger_type: &'static str,
    /// Queued leased to an idle worker of this node, which runs it without a claim.
    pub lease: Option<executions::QueueLease>,
}

/// A stored execution (the engine issue extends this with stages and steps).
#[derive(Debug, Clone)]
pub struct Execution {
    /// `planExecutionId`.
    pub plan_execution_id: PlanExecutionId,
    /// Where it runs.
    pub scope: ProjectRef,
    /// The pipeline.
    pub pipeline: String,
    /// The pipeline's name at queue time.
    pub pipeline_name: String,
    /// Execution status (`Queued`, `Running`, ...).
    pub status: String,
    /// `WEBHOOK_CUSTOM` or `MANUAL`.
    pub trigger_type: String,
    /// The trigger that fired it.
    pub trigger: Option<String>,
    /// The event that fired it.
    pub event_id: Option<String>,
    /// Per-pipeline run counter.
    pub run_sequence: i64,
    /// Resolved runtime input YAML.
    pub runtime_input: String,
    /// Queue time.
    pub created_at: Millis,
    /// Start time.
    pub started_at: Option<Millis>,
    /// End time.
    pub ended_at: Option<Millis>,
}

/// What recording an event did.
#[derive(Debug)]
pub enum RecordOutcome {
    /// The event (and its execution, if any) is committed.
    Stored(WebhookEvent),
    /// An event with the same `Idempotency-Key` was already stored within 24 h; nothing was written.
    Replayed(WebhookEvent),
}

/// One page of a list and the cursor for the next.
#[derive(Debug)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Opaque cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for listing webhook events.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this pipeline's events.
    pub pipeline: Option<String>,
    /// Only this trigger's events (a trigger identifier is unique within its pipeline).
    pub trigger: Option<String>,
    /// Only events with this status, a `webhookProcessingDetails.status` value.
    pub status: Option<&'static str>,
}

/// Opens the database `settings.database_url` names (the backend is picked by its scheme) and
/// applies pending migrations.
pub async fn open(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match settings.database() {
        Some(Database::Sqlite(path)) => {
            let store = sqlite::SqliteStore::open(
                &path,
                sqlite::WriterOptions {
                    queue_capacity: settings.writer.queue_capacity,
                    max_batch: settings.writer.max_batch,
                    wal_limit_bytes: settings.writer.wal_limit_mib << 20,
                },
            )
            .with_context(|| format!("opening database {}", path.display()))?;
            Ok(Arc::new(store))
        }
        Some(Database::Postgres(url)) => {
            let options = settings.postgres.parse()?.into();
            let store = postgres::PgStore::open(&url, options)
                .await
                .with_context(|| format!("opening database {}", postgres::redacted(&url)))?;
            Ok(Arc::new(store))
        }
        None => anyhow::bail!(
            "database_url = {:?} is not supported",
            settings.database_url
        ),
    }
}

/// Creates the database if needed and applies pending migrations; says what it did.
pub async fn migrate(settings: &Settings) -> anyhow::Result<String> {
    match settings.database() {
        Some(Database::Sqlite(path)) => {
            let applied = sqlite::migrate(&path)?;
            Ok(format!(
                "{applied} migration(s) applied to {}",
                path.display()
            ))
        }
        Some(Database::Postgres(url)) => {
            let shown = postgres::redacted(&url);
            let connect = settings.postgres.parse()?.connect_timeout;
            let applied = postgres::migrate(&url, connect)
                .await
                .with_context(|| format!("migrating database {shown}"))?;
            Ok(format!("{applied} migration(s) applied to {shown}"))
        }
        None => anyhow::bail!(
            "database_url = {:?} is not supported",
            settings.database_url
        ),
    }
}

/// A change that every node sharing the database must hear about: caches to drop, work to
/// look for. A node applies it to itself at once and announces it to the others
/// ([`Store::announce`]), who receive it from [`Store::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Triggers (or the pipelines and projects they hang from) changed: drop cached triggers.
    Triggers,
    /// Settings or the scopes they resolve along changed: drop resolved settings.
    Settings,
    /// A key was revoked: drop it from the verified-key cache.
    KeyRevoked {
        /// The key id.
        key_id: String,
    },
    /// An execution held by a worker is to be aborted: the node running it kills its step.
    Abort {
        /// The plan execution id.
        execution: String,
    },
    /// Executions became runnable (queued, resumed, approved): look for work.
    Work,
    /// Deliveries were queued: look for them.
    Deliveries,
    /// Announcements may have been missed (the listener reconnected): drop every cache.
    Resync,
}

/// Told which events' status answers a commit may have changed; `None` for any event (see
/// [`Store::watch_statuses`]).
pub type StatusWatcher = std::sync::Arc<dyn Fn(Option<&[EventId]>) + Send + Sync>;

/// Window within which an `Idempotency-Key` replays the original response.
pub const IDEMPOTENCY_WINDOW_MS: Millis = 24 * 3600 * 1000;

/// The storage interface, implemented by every backend (SQLite, PostgreSQL).
///
/// Writes are durable (committed) when the returned future resolves with `Ok`. Each method's
/// doc says what it guarantees when several callers, on one node or on several, call it at
/// once; backends enforce that with constraints, upserts and row locks, never by relying on
/// there being one writer. "Atomic" means one transaction: all of it is stored or none.
#[async_trait]
pub trait Store:
    executions::ExecutionStore + outbound::OutboundStore + Send + Sync + 'static
{
    /// True when the database answers and every migration is applied.
    async fn ready(&self) -> StoreResult<bool>;

    /// Commits every acknowledged write and releases the database; later calls fail with
    /// `ShuttingDown`.
    async fn close(&self);

    /// Tells every other node sharing this database about `change`. A backend that belongs to
    /// one process has nobody to tell.
    async fn announce(&self, change: &Change) -> StoreResult<()> {
        let _ = change;
        Ok(())
    }

    /// The changes other nodes announce, as they arrive; `None` for a backend that belongs to
    /// one process.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// Has `watcher` told, after each commit and before it is acknowledged, which events'
    /// status answers it may have changed: their execution or its steps, or, as `None`, any
    /// event (a pipeline changed, which a queued execution's planned steps are read from).
    /// True when the backend sees every write to its database, so that an answer that is not
    /// final yet may be cached until it changes; false (the default) when other processes
    /// write it too, and nothing is told.
    fn watch_statuses(&self, watcher: StatusWatcher) -> bool {
        let _ = watcher;
        false
    }

    /// Creates or renames an account (and its `default` org on creation), atomically. Returns
    /// the account and whether it was created; of concurrent creators exactly one sees `true`.
    async fn put_account(&self, id: &AccountId, name: &str) -> StoreResult<(Account, bool)>;
    /// Reads an account.
    async fn get_account(&self, id: &AccountId) -> StoreResult<Option<Account>>;
    /// Lists every account by identifier.
    async fn list_accounts(&self, cursor: Option<&str>, limit: u32) -> StoreResult<Page<Account>>;

    /// Creates or renames an org (an upsert). `ParentMissing` when the account does not exist.
    async fn put_org(
        &self,
        acc: &AccountId,
        org: &Identifier,
        name: &str,
    ) -> StoreResult<(Scope, bool)>;
    /// Reads an org.
    async fn get_org(&self, acc: &AccountId, org: &Identifier) -> StoreResult<Option<Scope>>;
    /// Lists an account's orgs by identifier; with `only`, just those of them.
    async fn list_orgs(
        &self,
        acc: &AccountId,
        only: Option<&[String]>,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Scope>>;
    /// Deletes an org and everything configured under it. False when it did not exist.
    async fn delete_org(&self, acc: &AccountId, org: &Identifier) -> StoreResult<bool>;

    /// Creates or renames a project (an upsert). `ParentMissing` when the org does not exist.
    async fn put_project(&self, p: &ProjectRef, name: &str) -> StoreResult<(Scope, bool)>;
    /// Reads a project.
    async fn get_project(&self, p: &ProjectRef) -> StoreResult<Option<Scope>>;
    /// Lists an org's projects by identifier; with `only`, just those of them.
    async fn list_projects(
        &self,
        acc: &AccountId,
        org: &Identifier,
        only: Option<&[String]>,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Scope>>;
    /// Deletes a project and everything configured under it.
    async fn delete_project(&self, p: &ProjectRef) -> StoreResult<bool>;

    /// Stores a new API key, unless its id is taken or it is a root key while an unrevoked
    /// root key exists; returns whether it was stored. Exclusive across processes: of nodes
    /// creating the root key at once, exactly one stores it (PostgreSQL: a unique index;
    /// SQLite: one statement under its writer lock).
    async fn insert_api_key(&self, key: ApiKeyRecord) -> StoreResult<bool>;
    /// Reads a key by id.
    async fn get_api_key(&self, key_id: &KeyId) -> StoreResult<Option<ApiKeyRecord>>;
    /// Lists an account's keys, oldest first.
    async fn list_api_keys(&self, acc: &AccountId) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes a key of `acc`. False when there is no such unrevoked key; of concurrent
    /// revokers exactly one sees `true`.
    async fn revoke_api_key(&self, acc: &AccountId, key_id: &KeyId) -> StoreResult<bool>;
    /// True when a root key exists.
    async fn has_root_key(&self) -> StoreResult<bool>;

    /// Stores a new console session, and deletes the sessions last seen before `idle_before`.
    async fn create_session(&self, session: ConsoleSession, idle_before: Millis)
        -> StoreResult<()>;
    /// Reads a console session by the SHA-256 (hex) of its token.
    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<ConsoleSession>>;
    /// Records a session's use and its chosen project.
    async fn touch_session(
        &self,
        token_hash: &str,
        last_seen: Millis,
        project: Option<&str>,
    ) -> StoreResult<()>;
    /// Deletes a session (sign-out, or found expired).
    async fn delete_session(&self, token_hash: &str) -> StoreResult<()>;
    /// Records `once` as the session's last one-time form token; false when it already was
    /// (the same form posted again).
    async fn claim_session_once(&self, token_hash: &str, once: &str) -> StoreResult<bool>;

    /// Sets a boolean setting at one scope (an upsert: the last writer wins).
    async fn put_setting(
        &self,
        scope: &SettingScope,
        name: &str,
        value: ScopedValue,
    ) -> StoreResult<()>;
    /// Removes a setting at one scope. False when it was not set.
    async fn delete_setting(&self, scope: &SettingScope, name: &str) -> StoreResult<bool>;
    /// The values of a setting along a scope chain (project/org parts may be absent).
    async fn setting_chain(&self, scope: &SettingScope, name: &str) -> StoreResult<SettingChain>;

    /// Creates or replaces a pipeline (an upsert). Returns whether it was created.
    async fn put_pipeline(&self, p: PipelineRecord) -> StoreResult<bool>;
    /// Reads a pipeline.
    async fn get_pipeline(
        &self,
        p: &ProjectRef,
        id: &Identifier,
    ) -> StoreResult<Option<PipelineRecord>>;
    /// Lists a project's pipelines by identifier.
    async fn list_pipelines(
        &self,
        p: &ProjectRef,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<PipelineRecord>>;
    /// Deletes a pipeline and its triggers.
    async fn delete_pipeline(&self, p: &ProjectRef, id: &Identifier) -> StoreResult<bool>;

    /// Creates or replaces a trigger, atomically. The token of an existing trigger is kept
    /// whatever `t.token` says (tokens are unique by constraint). Returns the stored record
    /// and whether it was created.
    async fn put_trigger(&self, t: TriggerRecord) -> StoreResult<(TriggerRecord, bool)>;
    /// Reads a trigger.
    async fn get_trigger(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
    ) -> StoreResult<Option<TriggerRecord>>;
    /// Reads a trigger by its webhook token.
    async fn get_trigger_by_token(&self, token: &str) -> StoreResult<Option<TriggerRecord>>;
    /// Lists a pipeline's triggers by identifier.
    async fn list_triggers(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<TriggerRecord>>;
    /// Enables or disables a trigger; `None` when it does not exist.
    async fn set_trigger_enabled(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
        enabled: bool,
    ) -> StoreResult<Option<TriggerRecord>>;
    /// Deletes a trigger; returns its token when it existed.
    async fn delete_trigger(
        &self,
        p: &ProjectRef,
        pipeline: &Identifier,
        id: &Identifier,
    ) -> StoreResult<Option<String>>;

    /// A new event's id (DESIGN §1: 12 bytes nobody can guess), for [`record_event`]. By
    /// default twelve random bytes; both backends make ids that lead to their own rows instead
    /// (`store/event_ids.rs`), PostgreSQL's with a round trip now and then (a block of row
    /// numbers), which may fail as any read does. An event recorded with an id from elsewhere is
    /// still stored and found (through the index kept for events stored before those ids).
    ///
    /// [`record_event`]: Store::record_event
    async fn new_event_id(&self) -> StoreResult<EventId> {
        Ok(EventId::generate())
    }

    /// Records an event and, when given, queues its execution (numbered by the pipeline's
    /// counter), atomically — unless an event with the same idempotency key exists for the
    /// trigger within 24 h, which is returned instead. Exclusive across processes: of
    /// concurrent events with one key exactly one is stored. Fails fast with `Overloaded`
    /// when the store cannot take the write now, and with `Unavailable` when the database
    /// cannot be reached; in both cases nothing was stored.
    async fn record_event(
        &self,
        event: WebhookEvent,
        execution: Option<NewExecution>,
    ) -> StoreResult<RecordOutcome>;
    /// Reads an event.
    async fn get_event(&self, id: &EventId) -> StoreResult<Option<WebhookEvent>>;
    /// Reads an event and, when it requested one, its execution as
    /// [`load_run`](executions::ExecutionStore::load_run) does: what a status poll shows. A
    /// backend that can reads both at one point in time, in one round.
    async fn get_event_with_run(
        &self,
        id: &EventId,
    ) -> StoreResult<Option<(WebhookEvent, Option<executions::RunState>)>> {
        let Some(event) = self.get_event(id).await? else {
            return Ok(None);
        };
        let run = match &event.plan_execution_id {
            Some(plan) => self.load_run(plan).await?,
            None => None,
        };
        Ok(Some((event, run)))
    }
    /// Reads what a worker needs to run a claimed execution ([`executions::Work`]). A backend
    /// that can reads it all at one point in time, in one round.
    async fn load_work(&self, id: &PlanExecutionId) -> StoreResult<Option<executions::Work>> {
        let Some(run) = self.load_run(id).await? else {
            return Ok(None);
        };
        let control = self.pending_control(id).await?;
        let event = match run.event_id() {
            Some(event) => self.get_event(&event).await?,
            None => None,
        };
        let pipeline = match run.pipeline_to_start() {
            Some(pipeline) => self.get_pipeline(&run.execution.scope, &pipeline).await?,
            None => None,
        };
        Ok(Some(executions::Work {
            run,
            control,
            event,
            pipeline,
        }))
    }
    /// Lists a project's events, newest first.
    async fn list_events(
        &self,
        p: &ProjectRef,
        filter: &EventFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<WebhookEvent>>;
    /// Reads an execution.
    async fn get_execution(&self, id: &PlanExecutionId) -> StoreResult<Option<Execution>>;
}

impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("key_id", &self.key_id)
            .field("account", &self.account)
            .field("role", &self.role)
            .field("projects", &self.projects)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TriggerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerRecord")
            .field("scope", &self.scope)
            .field("pipeline", &self.pipeline)
            .field("identifier", &self.identifier)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}
