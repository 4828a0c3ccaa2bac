//! Hot lookups served from memory: token → trigger, project → resolved mandate, and event id →
//! an event with its execution, as its status is answered.
//!
//! Triggers and mandates are filled on a miss and dropped whenever the data behind them
//! changes. A generation counter, bumped under the same lock as every invalidation, stops a
//! reader that loaded a row just before a change from caching that stale row just after it.
//! A settled event never changes again; one still running is kept only while the store tells of
//! every change to it (see [`EventStatuses`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;

use super::executions::RunState;
use super::{SettingScope, Store, StoreError, StoreResult, TriggerRecord, WebhookEvent};
use crate::domain::ids::{token_digest, EventId, ProjectRef};
use crate::domain::matching::CompiledConditions;
use crate::domain::pipeline::PipelineSpec;
use crate::domain::runtime_input::InputTemplate;
use crate::domain::settings::{Resolved, MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION};
use crate::domain::trigger::TriggerSpec;
use crate::expr::projection::Projection;

/// A trigger as intake needs it: parsed and compiled once, when cached.
#[derive(Debug)]
pub struct CachedTrigger {
    /// The stored trigger.
    pub record: TriggerRecord,
    /// Its definition.
    pub spec: TriggerSpec,
    /// Its payload, header and JEXL conditions, compiled; or why they do not compile (a trigger
    /// stored by an older release that checked less): its webhooks are then recorded with
    /// `EXCEPTION_WHILE_PROCESSING` instead of failing.
    pub conditions: Result<CompiledConditions, String>,
    /// Its `inputYaml`, compiled; or why it does not compile.
    pub input: Result<InputTemplate, String>,
    /// The parts of a payload the conditions and input read.
    pub projection: Projection,
    /// The name of the pipeline it fires.
    pub pipeline_name: String,
    /// The pipeline it fires, or why it could not be loaded (the webhook is then recorded with
    /// `EXCEPTION_WHILE_PROCESSING` rather than refused).
    pub pipeline: Result<Arc<PipelineSpec>, String>,
}

/// A map whose entries may only be filled by a reader whose load started after the last
/// invalidation.
struct Guarded<K, V> {
    map: RwLock<HashMap<K, V>>,
    generation: AtomicU64,
}

impl<K: std::hash::Hash + Eq, V: Clone> Guarded<K, V> {
    fn new() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        self.map.read().get(key).cloned()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn fill(&self, generation: u64, key: K, value: V) {
        let mut map = self.map.write();
        if self.generation.load(Ordering::Acquire) == generation {
            map.insert(key, value);
        }
    }

    fn clear(&self) {
        let mut map = self.map.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}

/// An event and the execution it requested, as the status endpoint reports them.
#[derive(Debug)]
pub struct EventStatus {
    /// The event.
    pub event: WebhookEvent,
    /// Its execution with its steps, when one was requested.
    pub run: Option<RunState>,
    /// The status endpoint's `data` for it, kept once rendered while it is cached.
    pub rendered: OnceLock<Box<RawValue>>,
}

impl EventStatus {
    /// An event and its execution, not rendered yet.
    pub fn new(event: WebhookEvent, run: Option<RunState>) -> Self {
        Self {
            event,
            run,
            rendered: OnceLock::new(),
        }
    }

    /// Whether neither the event nor its execution can change again: no execution was
    /// requested, or it ended.
    pub fn is_final(&self) -> bool {
        match (&self.event.plan_execution_id, &self.run) {
            (None, _) => true,
            (Some(_), Some(run)) => super::executions::status::is_terminal(&run.execution.status),
            (Some(_), None) => false,
        }
    }

    /// Roughly how much memory it holds, for the cache's budget.
    fn weight(&self) -> usize {
        let e = &self.event;
        let run = self.run.as_ref().map_or(0, |r| {
            // The snapshot and each step's strings; estimated, not measured.
            2048 + r.steps.len() * 512 + r.failure_message.as_ref().map_or(0, String::len)
        });
        // Twice: once as read, once in the rendered answer.
        2 * (1024 + e.payload.len() + e.runtime_input.len() + e.message.len() + run)
    }
}

/// Event statuses, as status polls read them, kept in memory so that polls after the first are
/// answered without the database.
///
/// A settled event never changes again, so it is kept on any backend. One whose execution has
/// not ended is kept only once [`EventStatuses::watch`] was called: the store then tells
/// [`EventStatuses::changed`] about every write that may change its answer, before that write
/// is acknowledged. A reader reserves the event before it reads the store, and what it read is
/// kept only if no change to that event arrived since: a change committed before its read
/// would be in what it read, and one committed after drops the reservation.
///
/// Bounded two ways. By size: two generations of at most [`STATUS_BUDGET`] bytes each; when
/// the current one is full it becomes the previous one (dropping the one before), and a hit in
/// the previous one moves back into the current, so what is polled stays. And by age: an entry
/// older than [`STATUS_TTL`] is read again, so an event that retention deleted, here or on
/// another node, stops being served within that time.
pub struct EventStatuses {
    inner: Mutex<Generations>,
    /// Whether the store tells of every change (see [`EventStatuses::watch`]).
    watched: AtomicBool,
}

#[derive(Default)]
struct Generations {
    current: HashMap<EventId, (Instant, Arc<EventStatus>)>,
    previous: HashMap<EventId, (Instant, Arc<EventStatus>)>,
    bytes: usize,
    /// Reservations of readers that have not put what they read yet.
    reserved: HashMap<EventId, u64>,
    next_reservation: u64,
}

/// A reader's claim that no change to an event has arrived since it began to read it; given
/// back when dropped, so that reads that fail or find nothing leave nothing behind.
pub struct Reservation<'a> {
    cache: &'a EventStatuses,
    id: EventId,
    n: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut g = self.cache.inner.lock();
        if g.reserved.get(&self.id) == Some(&self.n) {
            g.reserved.remove(&self.id);
        }
    }
}

/// The size budget of one generation of [`EventStatuses`].
const STATUS_BUDGET: usize = 8 * 1024 * 1024;
/// How long an event's status is served from memory before it is read again.
const STATUS_TTL: Duration = Duration::from_secs(30);
/// At most this many reservations are held at once (by readers between their reservation and
/// their put); past it they are all dropped, and those readers then keep nothing.
const MAX_RESERVATIONS: usize = 4096;

impl EventStatuses {
    fn new() -> Self {
        Self {
            inner: Mutex::new(Generations::default()),
            watched: AtomicBool::new(false),
        }
    }

    /// The event's status, if it was read within [`STATUS_TTL`] and has not changed since.
    pub fn get(&self, id: &EventId) -> Option<Arc<EventStatus>> {
        let mut g = self.inner.lock();
        if let Some((at, hit)) = g.current.get(id) {
            return (at.elapsed() < STATUS_TTL).then(|| Arc::clone(hit));
        }
        let (at, hit) = g.previous.remove(id)?;
        if at.elapsed() >= STATUS_TTL {
            return None;
        }
        g.insert(id.clone(), at, Arc::clone(&hit));
        Some(hit)
    }

    /// Called before reading the event from the store, when every change is told (otherwise
    /// `None`: only a final status is kept).
    pub fn reserve(&self, id: &EventId) -> Option<Reservation<'_>> {
        if !self.watched.load(Ordering::Acquire) {
            return None;
        }
        let mut g = self.inner.lock();
        if g.reserved.len() >= MAX_RESERVATIONS {
            g.reserved.clear();
        }
        g.next_reservation += 1;
        let n = g.next_reservation;
        g.reserved.insert(id.clone(), n);
        Some(Reservation {
            cache: self,
            id: id.clone(),
            n,
        })
    }

    /// Keeps `status` if `reservation` still holds (no change to the event arrived since it
    /// was taken); without one (the store does not tell of changes), if it is final
    /// ([`EventStatus::is_final`]). A final status may still change while its change is told
    /// (a pipeline's, for the stages of an execution aborted before it started; a deletion), so
    /// a reservation that was dropped keeps nothing, final or not.
    pub fn put(&self, status: &Arc<EventStatus>, reservation: Option<Reservation<'_>>) {
        let id = &status.event.event_id;
        let mut g = self.inner.lock();
        let keep = match &reservation {
            Some(r) => *id == r.id && g.reserved.get(id) == Some(&r.n),
            None => status.is_final(),
        };
        if keep && status.weight() <= STATUS_BUDGET / 16 {
            g.insert(id.clone(), Instant::now(), Arc::clone(status));
        }
        drop(g);
        // Given back here, kept or not.
        drop(reservation);
    }

    /// From now on, statuses that are not final are kept too: the store tells
    /// [`EventStatuses::changed`] of every change.
    pub fn watch(&self) {
        self.watched.store(true, Ordering::Release);
    }

    /// These events' answers may have changed (`None`: any event's): drops them, and the
    /// reservations of readers that may have read them before the change.
    pub fn changed(&self, events: Option<&[EventId]>) {
        let mut g = self.inner.lock();
        match events {
            None => {
                g.current.clear();
                g.previous.clear();
                g.reserved.clear();
                g.bytes = 0;
            }
            Some(events) => {
                for id in events {
                    g.reserved.remove(id);
                    if let Some((_, old)) = g.current.remove(id) {
                        g.bytes -= old.weight();
                    }
                    g.previous.remove(id);
                }
            }
        }
    }
}

impl Generations {
    fn insert(&mut self, id: EventId, at: Instant, status: Arc<EventStatus>) {
        let weight = status.weight();
        if self.bytes + weight > STATUS_BUDGET {
            self.previous = std::mem::take(&mut self.current);
            self.bytes = 0;
        }
        self.bytes += weight;
        if let Some((_, old)) = self.current.insert(id, (at, status)) {
            self.bytes -= old.weight();
        }
    }
}

/// The hot-lookup cache in front of a [`Store`].
pub struct HotCache {
    /// Keyed by SHA-256 of the token: the map compares digests, never the token itself.
    triggers: Guarded<[u8; 32], Arc<CachedTrigger>>,
    mandates: Guarded<ProjectRef, Resolved>,
    /// Event statuses for status polls.
    pub statuses: Arc<EventStatuses>,
}

impl Default for HotCache {
    fn default() -> Self {
        Self::new()
    }
}

impl HotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            triggers: Guarded::new(),
            mandates: Guarded::new(),
            statuses: Arc::new(EventStatuses::new()),
        }
    }

    /// The trigger with this token, from memory or the store. Unknown tokens are not cached,
    /// so random tokens cannot grow the cache.
    pub async fn trigger_by_token(
        &self,
        store: &dyn Store,
        token: &str,
    ) -> StoreResult<Option<Arc<CachedTrigger>>> {
        let key = token_digest(token);
        if let Some(hit) = self.triggers.get(&key) {
            return Ok(Some(hit));
        }
        let generation = self.triggers.generation();
        let Some(record) = store.get_trigger_by_token(token).await? else {
            return Ok(None);
        };
        let stored_pipeline = store.get_pipeline(&record.scope, &record.pipeline).await?;
        let pipeline_name = stored_pipeline
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| record.pipeline.to_string());
        let pipeline = match &stored_pipeline {
            Some(p) => PipelineSpec::from_value(&p.spec)
                .map(Arc::new)
                .map_err(|e| format!("pipeline '{}' could not be loaded: {e}", record.pipeline)),
            None => Err(format!("pipeline '{}' does not exist", record.pipeline)),
        };
        let spec = TriggerSpec::from_stored(&record.spec)
            .map_err(|e| StoreError::db("reading a stored trigger", e))?;
        let conditions = CompiledConditions::compile(&spec).map_err(|e| e.to_string());
        let input = InputTemplate::compile(spec.input_yaml.as_deref()).map_err(|e| e.to_string());
        let projection = Projection::of(
            conditions
                .iter()
                .flat_map(|c| c.references())
                .chain(input.iter().flat_map(|i| i.references())),
        );
        let entry = Arc::new(CachedTrigger {
            record,
            spec,
            conditions,
            input,
            projection,
            pipeline_name,
            pipeline,
        });
        self.triggers.fill(generation, key, Arc::clone(&entry));
        Ok(Some(entry))
    }

    /// The resolved `mandate_custom_webhook_authorization` for a project.
    pub async fn mandate(&self, store: &dyn Store, project: &ProjectRef) -> StoreResult<Resolved> {
        if let Some(hit) = self.mandates.get(project) {
            return Ok(hit);
        }
        let generation = self.mandates.generation();
        let scope = SettingScope {
            account: project.account.clone(),
            org: Some(project.org.clone()),
            project: Some(project.project.clone()),
        };
        let resolved = store
            .setting_chain(&scope, MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION)
            .await?
            .resolve();
        self.mandates.fill(generation, project.clone(), resolved);
        Ok(resolved)
    }

    /// Drops every cached trigger (after a trigger, or a pipeline, project or org it hangs
    /// from, changed: trigger changes are rare, and another node announcing one names no
    /// token).
    pub fn invalidate_all_triggers(&self) {
        self.triggers.clear();
    }

    /// Drops every resolved setting (after any setting changed).
    pub fn invalidate_settings(&self) {
        self.mandates.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{AccountId, Identifier, PlanExecutionId};

    fn status(payload_bytes: usize, plan: Option<PlanExecutionId>) -> Arc<EventStatus> {
        let scope = ProjectRef {
            account: AccountId::parse("acc").unwrap(),
            org: Identifier::parse("default", "org").unwrap(),
            project: Identifier::parse("proj", "project").unwrap(),
        };
        Arc::new(EventStatus::new(
            WebhookEvent {
                event_id: EventId::generate(),
                scope,
                pipeline: "p".into(),
                trigger: "t".into(),
                status: "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS".into(),
                message: String::new(),
                exception_occured: false,
                payload: "x".repeat(payload_bytes),
                headers: crate::store::json_text("{}".into()).unwrap(),
                runtime_input: String::new(),
                condition_results: crate::store::json_text("[]".into()).unwrap(),
                plan_execution_id: plan,
                idempotency_key: None,
                created_at: 0,
            },
            None,
        ))
    }

    #[test]
    fn only_final_events_are_kept() {
        let cache = EventStatuses::new();
        let settled = status(10, None);
        // An execution was requested but is not there (yet): it may still change.
        let pending = status(10, Some(PlanExecutionId::generate()));

        cache.put(&settled, None);
        cache.put(&pending, None);
        // Not watched: a reservation is not even given.
        assert!(cache.reserve(&pending.event.event_id).is_none());

        assert!(cache.get(&settled.event.event_id).is_some());
        assert!(cache.get(&pending.event.event_id).is_none());
    }

    #[test]
    fn memory_stays_within_two_generations_and_what_is_read_stays() {
        let cache = EventStatuses::new();
        let polled = status(1000, None);
        cache.put(&polled, None);
        let per_entry = polled.weight();
        let others: Vec<_> = (0..3 * STATUS_BUDGET / per_entry)
            .map(|_| status(1000, None))
            .collect();

        for (i, s) in others.iter().enumerate() {
            cache.put(s, None);
            if i % 100 == 0 {
                assert!(
                    cache.get(&polled.event.event_id).is_some(),
                    "dropped at {i}"
                );
            }
        }

        let g = cache.inner.lock();
        let held: usize = g
            .current
            .values()
            .chain(g.previous.values())
            .map(|(_, s)| s.weight())
            .sum();
        assert!(held <= 2 * STATUS_BUDGET, "{held} bytes held");
        assert!(g.current.len() + g.previous.len() < others.len() / 2);
        // Too large to keep: read from the store each time.
        drop(g);
        let huge = status(STATUS_BUDGET, None);
        cache.put(&huge, None);
        assert!(cache.get(&huge.event.event_id).is_none());
    }

    #[test]
    fn a_running_event_is_kept_while_watched_until_it_changes() {
        let cache = EventStatuses::new();
        cache.watch();
        let running = status(10, Some(PlanExecutionId::generate()));
        let id = &running.event.event_id;

        let reservation = cache.reserve(id);
        cache.put(&running, reservation);
        assert!(cache.get(id).is_some());

        cache.changed(Some(std::slice::from_ref(id)));
        assert!(cache.get(id).is_none());
        assert_eq!(cache.inner.lock().bytes, 0);
    }

    #[test]
    fn what_was_read_before_a_change_is_not_kept() {
        let cache = EventStatuses::new();
        cache.watch();
        let running = status(10, Some(PlanExecutionId::generate()));
        let other = status(10, Some(PlanExecutionId::generate()));
        let id = &running.event.event_id;

        // Reserved, read, then a change arrives before the put: what was read may be older.
        let reservation = cache.reserve(id);
        cache.changed(Some(&[other.event.event_id.clone(), id.clone()]));
        cache.put(&running, reservation);
        assert!(cache.get(id).is_none());

        // A later reader's reservation replaces an earlier one: only the later one keeps.
        let first = cache.reserve(id);
        let second = cache.reserve(id);
        cache.put(&running, first);
        assert!(cache.get(id).is_none());
        cache.put(&running, second);
        assert!(cache.get(id).is_some());

        // A change to any event drops everything, reservations included.
        let reservation = cache.reserve(&other.event.event_id);
        cache.changed(None);
        assert!(cache.get(id).is_none());
        cache.put(&other, reservation);
        assert!(cache.get(&other.event.event_id).is_none());

        // Final or not: what was read before a change is not kept while changes are told.
        let settled = status(10, None);
        let reservation = cache.reserve(&settled.event.event_id);
        cache.changed(Some(std::slice::from_ref(&settled.event.event_id)));
        cache.put(&settled, reservation);
        assert!(cache.get(&settled.event.event_id).is_none());
    }

    #[test]
    fn reservations_are_given_back_when_dropped_and_stay_bounded_while_held() {
        let cache = EventStatuses::new();
        cache.watch();
        for _ in 0..10 {
            // A read that failed or found nothing: never put.
            drop(cache.reserve(&EventId::generate()));
        }
        assert!(cache.inner.lock().reserved.is_empty());

        let held: Vec<_> = (0..3 * MAX_RESERVATIONS)
            .map(|_| cache.reserve(&EventId::generate()))
            .collect();
        assert!(cache.inner.lock().reserved.len() <= MAX_RESERVATIONS);
        drop(held);
    }
}
