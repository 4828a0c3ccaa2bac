//! API key hashing and verification.
//!
//! Keys are stored only as argon2id hashes. Verifying one costs milliseconds of CPU and 19 MiB
//! of memory, so:
//! - verified keys are cached (keyed by key id, holding the SHA-256 of the presented key,
//!   compared in constant time) for at most `ttl`;
//! - concurrent requests with the same uncached key wait for one verification instead of each
//!   running their own (a cold cache under load would otherwise start a herd of them);
//! - argon2 runs on a fixed pool of `argon2_threads` threads, which bounds both the CPU it takes
//!   and the memory the allocator keeps per thread (on the tokio blocking pool every new thread
//!   kept its own 19 MiB);
//! - failed verifications are rate-limited per key id *and client address*, and per client
//!   address, so a flood of wrong secrets cannot exhaust the CPU, and strangers who know a key
//!   id cannot lock its owner out by spending a budget the owner needs (the owner, calling
//!   from another address, has a budget of its own);
//! - an unknown, revoked or expired key id costs the same argon2 verification (against a dummy
//!   hash) as a known one, so the answer time does not tell whether a key id exists.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use super::{AuthError, Principal};
use crate::domain::ids::{AccountId, ApiKey, KeyId};
use crate::store::{now_millis, ApiKeyRecord, Millis, Store, StoreError};

/// Failed verifications allowed per key id and client address in a burst, and refilled per
/// second.
const FAILURE_BURST: f64 = 10.0;
const FAILURE_REFILL_PER_SEC: f64 = 1.0;
/// Failed verifications allowed per client address (whatever the key id) in a burst, and
/// refilled per second.
const SOURCE_FAILURE_BURST: f64 = 40.0;
const SOURCE_FAILURE_REFILL_PER_SEC: f64 = 4.0;

/// Past this many failure budgets, those that have refilled are forgotten.
const MAX_BUDGETS: usize = 100_000;

tokio::task_local! {
    /// The client address of the request being served, when known.
    static SOURCE: std::net::IpAddr;
}

/// Runs `f` with `source` as the client address failed verifications are charged to (the
/// HTTP middleware wraps every request with it).
pub async fn with_source<F: std::future::Future>(
    source: Option<std::net::IpAddr>,
    f: F,
) -> F::Output {
    match source {
        Some(ip) => SOURCE.scope(ip, f).await,
        None => f.await,
    }
}

fn current_source() -> Option<std::net::IpAddr> {
    SOURCE.try_with(|s| *s).ok()
}

/// What a failure budget is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Budget {
    /// One key id, from one client address (`None`: outside a request).
    Key(KeyId, Option<std::net::IpAddr>),
    /// One client address, every key id.
    Source(std::net::IpAddr),
}

impl Budget {
    fn limits(&self) -> (f64, f64) {
        match self {
            Budget::Key(..) => (FAILURE_BURST, FAILURE_REFILL_PER_SEC),
            Budget::Source(_) => (SOURCE_FAILURE_BURST, SOURCE_FAILURE_REFILL_PER_SEC),
        }
    }
}

/// A hash no presented key matches, verified in place of a missing one so that an unknown key
/// id costs what a known one does.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let key = ApiKey::generate(&AccountId::root());
        hash_key(&key).unwrap_or_default()
    })
}

struct CachedKey {
    digest: [u8; 32],
    principal: Principal,
    expires_at: Option<Millis>,
    cached_at: Instant,
    /// Set when announcements may have been missed: the next use re-reads the key's record.
    stale: bool,
}

struct FailureBucket {
    tokens: f64,
    updated: Instant,
}

/// Verifies presented API keys against the store, with the cache and limits described above.
pub struct KeyVerifier {
    verified: Mutex<HashMap<KeyId, CachedKey>>,
    /// Bumped by every `forget`, so a verification that raced a revocation is not cached.
    revocations: AtomicU64,
    failures: Mutex<HashMap<Budget, FailureBucket>>,
    /// One gate per key id being verified; see [`KeyVerifier::verify`].
    inflight: Mutex<HashMap<KeyId, Arc<tokio::sync::Mutex<()>>>>,
    pool: Argon2Pool,
    ttl: Duration,
}

type PoolJob = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that run argon2 work.
struct Argon2Pool {
    tx: std::sync::mpsc::SyncSender<PoolJob>,
}

/// Hash jobs that may wait for a pool thread before callers get `Overloaded`.
const POOL_QUEUE: usize = 1024;

impl Argon2Pool {
    fn new(threads: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<PoolJob>(POOL_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("triggerd-argon2-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().recv();
                    match job {
                        Ok(job) => {
                            job();
                            // argon2 just freed 19 MiB.
                            crate::memory::trim_this_thread();
                        }
                        Err(_) => break, // the verifier was dropped
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start an argon2 thread");
            }
        }
        Self { tx }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.tx
            .try_send(Box::new(move || {
                let _ = done_tx.send(f());
            }))
            .map_err(|_| StoreError::Overloaded)?;
        done_rx.await.map_err(|_| StoreError::ShuttingDown)
    }
}

/// Removes a key id's gate from `inflight` once nobody else holds or waits on it.
struct GateCleanup<'a> {
    inflight: &'a Mutex<HashMap<KeyId, Arc<tokio::sync::Mutex<()>>>>,
    key_id: &'a KeyId,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for GateCleanup<'_> {
    fn drop(&mut self) {
        let mut inflight = self.inflight.lock();
        // Ours and the map's: nobody else can take a clone while we hold the map lock.
        if Arc::strong_count(&self.gate) == 2 {
            inflight.remove(self.key_id);
        }
    }
}

/// Hashes a key with argon2id and a random salt, into a PHC string. CPU-heavy: call from a
/// blocking context.
pub fn hash_key(key: &ApiKey) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(key.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::db("hashing an API key", HashError(e.to_string())))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HashError(String);

fn verify_hash(presented: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(presented.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

impl KeyVerifier {
    /// A verifier with `argon2_threads` concurrent hashes and a cache TTL (capped at 5 min).
    pub fn new(argon2_threads: usize, ttl: Duration) -> Self {
        Self {
            verified: Mutex::new(HashMap::new()),
            revocations: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            pool: Argon2Pool::new(argon2_threads),
            ttl: ttl.min(Duration::from_secs(300)),
        }
    }

    /// Hashes a new key on the bounded argon2 pool.
    pub async fn hash(&self, key: &ApiKey) -> Result<String, StoreError> {
        let key = key.clone();
        self.pool.run(move || hash_key(&key)).await?
    }

    /// Verifies `presented` for a request on `account`. The root key is valid for every account.
    pub async fn verify(
        &self,
        store: &dyn Store,
        presented: &str,
        account: &AccountId,
    ) -> Result<Principal, AuthError> {
        let key = ApiKey::parse(presented).ok_or(AuthError::InvalidKey)?;
        if key.account() != account && !key.account().is_root() {
            return Err(AuthError::InvalidKey);
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some(principal) = self.cached(key.key_id(), &digest) {
            return Ok(principal);
        }

        // Single flight: the first request for this key id verifies; the others wait here and
        // then find it in the cache.
        let gate = Arc::clone(
            self.inflight
                .lock()
                .entry(key.key_id().clone())
                .or_default(),
        );
        let cleanup = GateCleanup {
            inflight: &self.inflight,
            key_id: key.key_id(),
            gate,
        };
        let _turn = cleanup.gate.lock().await;
        if let Some(principal) = self.cached(key.key_id(), &digest) {
            return Ok(principal);
        }

        let revocations = self.revocations.load(Ordering::Acquire);
        let record = store
            .get_api_key(key.key_id())
            .await?
            .filter(|r| usable(r, key.account()));
        let known = record
            .as_ref()
            .is_some_and(|_| self.verified_before(key.key_id(), &digest));
        if !known && !self.take_failure_budget(key.key_id(), false) {
            return Err(AuthError::InvalidKey);
        }
        // An unknown key id is verified against a dummy hash: the same work, the same time.
        let candidate = presented.to_owned();
        let hash = record.as_ref().map(|r| r.hash.clone());
        let ok = self
            .pool
            .run(move || match &hash {
                Some(hash) => verify_hash(&candidate, hash),
                None => verify_hash(&candidate, dummy_hash()),
            })
            .await?;
        let Some(record) = record.filter(|_| ok) else {
            self.take_failure_budget(key.key_id(), true);
            return Err(AuthError::InvalidKey);
        };
        let Some(principal) = active_principal(&record) else {
            return Err(AuthError::InvalidKey);
        };
        let mut verified = self.verified.lock();
        if self.revocations.load(Ordering::Acquire) == revocations {
            verified.insert(
                record.key_id,
                CachedKey {
                    digest,
                    principal: principal.clone(),
                    expires_at: record.expires_at,
                    cached_at: Instant::now(),
                    stale: false,
                },
            );
        }
        Ok(principal)
    }

    /// Makes every cached key stale (another node's revocations may have been missed): its
    /// next use re-reads its record, so a revoked key is refused. Its digest is kept, so
    /// [`KeyVerifier::verified_before`] still spares its owner the failure budget.
    pub fn mark_all_stale(&self) {
        let mut verified = self.verified.lock();
        self.revocations.fetch_add(1, Ordering::AcqRel);
        for entry in verified.values_mut() {
            entry.stale = true;
        }
    }

    /// Drops a key from the cache at once (on revoke).
    pub fn forget(&self, key_id: &KeyId) {
        let mut verified = self.verified.lock();
        self.revocations.fetch_add(1, Ordering::AcqRel);
        verified.remove(key_id);
    }

    /// The principal of a fresh cache entry whose digest matches. A stale entry is kept (until
    /// replaced or forgotten) so that [`KeyVerifier::verified_before`] can still recognise the key.
    fn cached(&self, key_id: &KeyId, digest: &[u8; 32]) -> Option<Principal> {
        let verified = self.verified.lock();
        let entry = verified.get(key_id)?;
        let fresh = !entry.stale
            && entry.cached_at.elapsed() < self.ttl
            && entry.expires_at.is_none_or(|t| t > now_millis());
        (fresh && bool::from(entry.digest.ct_eq(digest))).then(|| entry.principal.clone())
    }

    /// True when exactly this key was verified before (its cache entry may be stale). Such a key
    /// skips the failure budget, so strangers who know a key id cannot lock its owner out by
    /// spending the budget with wrong secrets.
    fn verified_before(&self, key_id: &KeyId, digest: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .get(key_id)
            .is_some_and(|e| bool::from(e.digest.ct_eq(digest)))
    }

    /// Checks (and, when `spend`, consumes) the failure budgets of a key id from the current
    /// client address and of that address. Returns false when either is exhausted.
    fn take_failure_budget(&self, key_id: &KeyId, spend: bool) -> bool {
        let source = current_source();
        let mut budgets = vec![Budget::Key(key_id.clone(), source)];
        budgets.extend(source.map(Budget::Source));
        let mut failures = self.failures.lock();
        let now = Instant::now();
        if failures.len() >= MAX_BUDGETS {
            // Forget the budgets that have refilled since their last failure.
            failures.retain(|budget, bucket| {
                let (burst, refill) = budget.limits();
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * refill < burst
            });
        }
        let mut allowed = true;
        for budget in &budgets {
            let (burst, refill) = budget.limits();
            let bucket = failures.entry(budget.clone()).or_insert(FailureBucket {
                tokens: burst,
                updated: now,
            });
            let elapsed = now.duration_since(bucket.updated).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * refill).min(burst);
            bucket.updated = now;
            allowed &= bucket.tokens >= 1.0;
        }
        if allowed && spend {
            for budget in &budgets {
                if let Some(bucket) = failures.get_mut(budget) {
                    bucket.tokens -= 1.0;
                }
            }
        }
        // Full buckets carry no information: drop them so the map stays small.
        for budget in budgets {
            let (burst, _) = budget.limits();
            if failures.get(&budget).is_some_and(|b| b.tokens >= burst) {
                failures.remove(&budget);
            }
        }
        allowed
    }
}

/// The principal of a key that is neither revoked nor expired.
pub fn active_principal(record: &ApiKeyRecord) -> Option<Principal> {
    usable(record, &record.account).then(|| Principal {
        key_id: record.key_id.clone(),
        account: record.account.clone(),
        role: record.role,
        projects: record.projects.clone(),
    })
}

fn usable(record: &ApiKeyRecord, claimed_account: &AccountId) -> bool {
    &record.account == claimed_account
        && record.revoked_at.is_none()
        && record.expires_at.is_none_or(|t| t > now_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_the_same_key() {
        let acc = AccountId::parse("acc").unwrap();
        let key = ApiKey::generate(&acc);
        let other = ApiKey::generate(&acc);
        let phc = hash_key(&key).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_hash(key.expose_secret(), &phc));
        assert!(!verify_hash(other.expose_secret(), &phc));
        assert!(!verify_hash(key.expose_secret(), "not a hash"));
    }

    #[tokio::test]
    async fn a_resync_rereads_revocations_without_locking_out_the_owner() {
        use crate::store::{sqlite::SqliteStore, ApiKeyRecord, Role, Store as _};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), Default::default()).expect("store");
        let acc = AccountId::parse("acc").unwrap();
        store.put_account(&acc, "acc").await.unwrap();
        let key = ApiKey::generate(&acc);
        store
            .insert_api_key(ApiKeyRecord {
                key_id: key.key_id().clone(),
                account: acc.clone(),
                name: "ci".into(),
                role: Role::Executor,
                projects: None,
                hash: hash_key(&key).unwrap(),
                created_at: now_millis(),
                expires_at: None,
                revoked_at: None,
            })
            .await
            .unwrap();
        let v = KeyVerifier::new(1, Duration::from_secs(300));
        v.verify(&store, key.expose_secret(), &acc).await.unwrap();
        // A stranger who knows the key id spends its failure budget.
        let wrong = format!("pat.acc.{}.{}", key.key_id(), "x".repeat(32));
        while v.take_failure_budget(key.key_id(), true) {}
        assert!(v.verify(&store, &wrong, &acc).await.is_err());

        v.mark_all_stale();
        v.verify(&store, key.expose_secret(), &acc)
            .await
            .expect("the owner's key, verified before, still works after a resync");

        store.revoke_api_key(&acc, key.key_id()).await.unwrap();
        v.verify(&store, key.expose_secret(), &acc)
            .await
            .expect("cached: this node missed the revocation");
        v.mark_all_stale();
        assert!(
            v.verify(&store, key.expose_secret(), &acc).await.is_err(),
            "after a resync the revocation is read"
        );
        store.close().await;
    }

    #[test]
    fn failure_budget_runs_out_and_refills() {
        let v = KeyVerifier::new(1, Duration::from_secs(60));
        let id = KeyId::generate();
        for _ in 0..FAILURE_BURST as usize {
            assert!(v.take_failure_budget(&id, true));
        }
        assert!(!v.take_failure_budget(&id, false));
        v.failures
            .lock()
            .get_mut(&Budget::Key(id.clone(), None))
            .unwrap()
            .updated -= Duration::from_secs(2);
        assert!(v.take_failure_budget(&id, false));
    }

    #[tokio::test]
    async fn failures_are_charged_to_the_key_id_from_one_address_and_to_that_address() {
        let v = KeyVerifier::new(1, Duration::from_secs(60));
        let id = KeyId::generate();
        let stranger = std::net::IpAddr::from([192, 0, 2, 1]);
        let owner = std::net::IpAddr::from([192, 0, 2, 2]);
        with_source(Some(stranger), async {
            while v.take_failure_budget(&id, true) {}
        })
        .await;
        assert!(
            with_source(Some(owner), async { v.take_failure_budget(&id, false) }).await,
            "another address keeps its budget for the same key id"
        );
        // The stranger's address runs out across key ids too.
        let spent = with_source(Some(stranger), async {
            let mut n = 0;
            while v.take_failure_budget(&KeyId::generate(), true) {
                n += 1;
            }
            n
        })
        .await;
        assert_eq!(spent as f64, SOURCE_FAILURE_BURST - FAILURE_BURST);
    }
}
