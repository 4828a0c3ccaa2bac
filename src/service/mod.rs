//! Use cases behind the HTTP handlers: intake, status, and management. Handlers parse the
//! request and render the response; everything in between happens here, so the demo seeder and
//! later front ends share one implementation.

pub mod event_rules;
pub mod executions;
pub mod intake;
pub mod links;
pub mod manage;

use std::sync::Arc;

use crate::auth::keys::KeyVerifier;
use crate::auth::{AuthError, Principal};
use crate::domain::ids::{AccountId, KeyId, PlanExecutionId, ProjectRef};
use crate::domain::ratelimit::KeyedLimiter;
use crate::error::Error;
use crate::store::cache::HotCache;
use crate::store::{Change, Store};

/// How many times a change is announced before giving up, and the pause between tries.
const ANNOUNCE_ATTEMPTS: u32 = 3;
const ANNOUNCE_RETRY: std::time::Duration = std::time::Duration::from_millis(200);
/// Shortest time between two announcements of work queued by intake.
const WORK_ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// How long a change's answer waits for its first announcement.
const ANNOUNCE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything a request needs: the store, the hot caches, the key verifier and the settings
/// that shape responses. Shared by every HTTP worker.
pub struct Gateway {
    /// The storage backend.
    pub store: Arc<dyn Store>,
    /// Token → trigger and resolved settings, in memory.
    pub cache: HotCache,
    /// API key verification with its cache.
    pub keys: KeyVerifier,
    /// Base URL for generated links, without a trailing slash.
    pub public_url: String,
    /// Largest accepted body, and how long it may take to arrive.
    pub body_limits: BodyLimits,
    /// When intake last announced queued work to the other nodes (epoch ms).
    pub last_work_announce: std::sync::atomic::AtomicI64,
    /// Per-trigger `rateLimit` buckets, keyed by webhook token.
    pub rate_limits: KeyedLimiter<String>,
    /// The execution engine, told when work is queued.
    pub engine: crate::engine::EngineHandle,
    /// Sends outbound events (the Test endpoint sends directly).
    pub sender: crate::outbound::deliver::Sender,
    /// The outbound dispatcher, told when deliveries are queued.
    pub dispatcher: crate::outbound::dispatcher::DispatcherHandle,
    /// This node's id (random at each start): the owner of its leases, shown in `/readyz`.
    pub node_id: String,
    /// Turns for evaluating JEXL conditions, which run off the HTTP workers: one per CPU, so
    /// that a flood of expensive expressions queues instead of taking every core.
    pub evaluations: tokio::sync::Semaphore,
}

/// The message for a key that is malformed, unknown, revoked, expired or wrong.
pub fn invalid_key_message(account: &str) -> String {
    format!("Invalid call: Invalid token or token expired. Account id for API called: {account}")
}

/// The message for a missing key where one is mandatory.
pub fn mandate_message(project: &ProjectRef) -> String {
    format!(
        "Invalid request: Authorization is mandatory for custom triggers in {}:{}:{}. Please add X-Api-Key header in the request",
        project.account, project.org, project.project
    )
}

/// The rule of [`Gateway::authorize_manage`] for a principal already verified (the console's
/// session): admin of `account`, or root.
pub fn require_manage(principal: &Principal, account: &AccountId) -> Result<(), Error> {
    if principal.can_manage(account) {
        Ok(())
    } else {
        Err(Error::AccessDenied(format!(
            "Missing permission to manage account {account}: this API key has role {}",
            principal.role.as_str()
        )))
    }
}

/// The rule of [`Gateway::authorize_execute`] for a verified principal.
pub fn require_execute(principal: &Principal, project: &ProjectRef) -> Result<(), Error> {
    if principal.can_execute(project) {
        Ok(())
    } else {
        Err(Error::AccessDenied(format!(
            "Missing permission to execute pipelines in {project}"
        )))
    }
}

/// The rule of [`Gateway::authorize_read`] for a verified principal.
pub fn require_read(principal: &Principal, project: &ProjectRef) -> Result<(), Error> {
    if principal.can_execute(project) {
        Ok(())
    } else {
        Err(Error::AccessDenied(format!(
            "Missing permission to read {project}"
        )))
    }
}

/// The rule of [`Gateway::authorize_account_read`] for a verified principal: a key of the
/// account, or root.
pub fn require_account(principal: &Principal, account: &AccountId) -> Result<(), Error> {
    if principal.is_root() || &principal.account == account {
        Ok(())
    } else {
        Err(Error::InvalidToken(invalid_key_message(account.as_str())))
    }
}

/// What a request body may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest accepted body, in bytes.
    pub max_bytes: usize,
    /// How long the whole body may take to arrive, from the end of the headers.
    pub deadline: std::time::Duration,
}

impl Gateway {
    /// Applies `change` to this node at once and announces it to the other nodes. The first
    /// try is awaited for at most [`ANNOUNCE_WAIT`]; retries go on in the background, so a
    /// struggling database never holds up the answer to a change that is already committed.
    /// An announcement that still fails is logged, and the other nodes catch up at their
    /// listener's next resynchronisation (at most 30 s).
    pub async fn changed(&self, change: Change) {
        self.apply(&change);
        let first = tokio::time::timeout(ANNOUNCE_WAIT, self.store.announce(&change)).await;
        if matches!(first, Ok(Ok(()))) {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            for attempt in 2..=ANNOUNCE_ATTEMPTS {
                tokio::time::sleep(ANNOUNCE_RETRY).await;
                match store.announce(&change).await {
                    Ok(()) => return,
                    Err(e) if attempt == ANNOUNCE_ATTEMPTS => {
                        tracing::warn!(error = %e, ?change, "announcing a change to the other nodes failed");
                    }
                    Err(_) => {}
                }
            }
        });
    }

    /// An execution was queued by intake: this node's engine looks at once, and the other
    /// nodes are told with at most one announcement per [`WORK_ANNOUNCE_EVERY`] from this node
    /// (a NOTIFY per webhook would cost intake more than it saves; between announcements the
    /// other nodes find queued work at their next poll, within 100 ms). Never waits.
    pub fn work_queued(&self) {
        self.engine.notify();
        let now = crate::store::now_millis();
        let last = self
            .last_work_announce
            .load(std::sync::atomic::Ordering::Relaxed);
        if now - last < WORK_ANNOUNCE_EVERY.as_millis() as i64
            || self
                .last_work_announce
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.announce(&Change::Work).await {
                tracing::debug!(error = %e, "announcing queued work failed; other nodes poll");
            }
        });
    }

    /// Applies a change, made here or announced by another node, to this node's caches and
    /// loops.
    pub fn apply(&self, change: &Change) {
        match change {
            Change::Triggers => self.cache.invalidate_all_triggers(),
            Change::Settings => self.cache.invalidate_settings(),
            Change::KeyRevoked { key_id } => {
                if let Some(key_id) = KeyId::parse(key_id) {
                    self.keys.forget(&key_id);
                }
            }
            Change::Abort { execution } => {
                if let Some(id) = PlanExecutionId::parse(execution) {
                    self.engine.abort(&id);
                }
            }
            Change::Work => self.engine.notify(),
            Change::Deliveries => self.dispatcher.notify(),
            Change::Resync => {
                self.cache.invalidate_all_triggers();
                self.cache.invalidate_settings();
                self.keys.mark_all_stale();
                self.engine.notify();
                self.dispatcher.notify();
            }
        }
    }

    /// Verifies a management key: admin of `account`, or root.
    pub async fn authorize_manage(
        &self,
        api_key: Option<&str>,
        account: &AccountId,
    ) -> Result<Principal, Error> {
        let principal = self.verify_key(api_key, account).await?;
        require_manage(&principal, account)?;
        Ok(principal)
    }

    /// Verifies a key against its own account: who is calling (`GET /api/v1/whoami`).
    pub async fn whoami(&self, api_key: Option<&str>) -> Result<Principal, Error> {
        let account = api_key
            .and_then(crate::domain::ids::ApiKey::parse)
            .map(|k| k.account().clone())
            .ok_or_else(|| {
                Error::InvalidToken(
                    "Invalid call: X-Api-Key header with a key of the form pat.<account>.<keyId>.<secret> is required".into(),
                )
            })?;
        self.verify_key(api_key, &account).await
    }

    /// Verifies the root key.
    pub async fn authorize_root(
        &self,
        api_key: Option<&str>,
        account: &AccountId,
    ) -> Result<Principal, Error> {
        let principal = self.verify_key(api_key, account).await?;
        if principal.is_root() {
            Ok(principal)
        } else {
            Err(Error::AccessDenied(
                "Missing permission: only the root key may create or change accounts".into(),
            ))
        }
    }

    /// Verifies the root key on a route that names no account (`GET /api/v1/accounts`): a valid
    /// key of an account is 403, like on the other root-only routes; no key or an invalid one
    /// is 401.
    pub async fn authorize_root_only(&self, api_key: Option<&str>) -> Result<Principal, Error> {
        let principal = self.whoami(api_key).await?;
        if principal.is_root() {
            Ok(principal)
        } else {
            Err(Error::AccessDenied(
                "Missing permission: only the root key may list accounts".into(),
            ))
        }
    }

    /// Verifies a key that may read `account`, its orgs and its projects: any key of the
    /// account, or root. A key limited to some projects then sees only those
    /// ([`Gateway::list_orgs`], [`Gateway::list_projects`]).
    pub async fn authorize_account_read(
        &self,
        api_key: Option<&str>,
        account: &AccountId,
    ) -> Result<Principal, Error> {
        self.verify_key(api_key, account).await
    }

    /// Applies the intake/status key rules of DESIGN §2.1 step 5 for `project`: a present key
    /// must be valid and allowed to execute there; an absent key is refused when `required`.
    pub async fn authorize_execute(
        &self,
        api_key: Option<&str>,
        project: &ProjectRef,
        required: bool,
    ) -> Result<Option<Principal>, Error> {
        let Some(key) = api_key else {
            return if required {
                Err(Error::InvalidRequest(mandate_message(project)))
            } else {
                Ok(None)
            };
        };
        let principal = self.verify_key(Some(key), &project.account).await?;
        require_execute(&principal, project)?;
        Ok(Some(principal))
    }

    /// Verifies a key that may read status, events and executions in `project` (any key of the
    /// account that may execute there). A missing key is 401, as everywhere on the management
    /// API.
    pub async fn authorize_read(
        &self,
        api_key: Option<&str>,
        project: &ProjectRef,
    ) -> Result<Principal, Error> {
        let principal = self.verify_key(api_key, &project.account).await?;
        require_read(&principal, project)?;
        Ok(principal)
    }

    /// The principal of a console session's key (DESIGN §12), read afresh: `None` once the key
    /// is revoked, expired or gone, which ends the session.
    pub async fn session_principal(&self, key_id: &KeyId) -> Result<Option<Principal>, Error> {
        Ok(self
            .store
            .get_api_key(key_id)
            .await?
            .as_ref()
            .and_then(crate::auth::keys::active_principal))
    }

    async fn verify_key(
        &self,
        api_key: Option<&str>,
        account: &AccountId,
    ) -> Result<Principal, Error> {
        let Some(key) = api_key else {
            return Err(Error::InvalidToken(format!(
                "Invalid call: X-Api-Key header is required. Account id for API called: {account}"
            )));
        };
        self.keys
            .verify(self.store.as_ref(), key, account)
            .await
            .map_err(|e| match e {
                AuthError::InvalidKey => Error::InvalidToken(invalid_key_message(account.as_str())),
                AuthError::Store(e) => e.into(),
            })
    }
}
