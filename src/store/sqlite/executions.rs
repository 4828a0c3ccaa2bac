//! [`ExecutionStore`] on SQLite: the queue, leases and step rows. Every write goes through the
//! single writer, so a claim is atomic: two workers can never lease the same execution. The
//! lease clock is this process's (one process owns the file), read inside the writer so a
//! lease is checked at the moment the write is applied.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::outbound::write_events;
use super::{
    decode_time_cursor, encode_cursor, execution_row, page, sql_err, SqliteStore, EXECUTION_COLS,
};
use crate::domain::ids::{LeaseToken, PlanExecutionId, ProjectRef};
use crate::engine::control::{self, ControlAction};
use crate::store::executions::{
    status, AlreadyStarted, Claim, Claimed, Control, ControlOutcome, ExecutionFilter,
    ExecutionStore, LogLine, NewManualExecution, NextClaim, ProjectKey, Purged, QueueLease,
    RunState, Start, StepRecord, PURGE_PROJECTS,
};
use crate::store::{now_millis, Execution, Millis, Page, StoreError, StoreResult};

const STEP_COLS: &str = "stage_index, step_index, stage_id, stage_name, step_id, step_name, \
     step_type, status, attempt, started_at, ended_at, outputs, message, log";
const STEP_COLS_WITHOUT_LOG: &str = "stage_index, step_index, stage_id, stage_name, step_id, \
     step_name, step_type, status, attempt, started_at, ended_at, outputs, message";

/// The project after `(?1, ?2, ?3)` that has webhook events, from the listing index
/// `webhook_events_by_project`.
pub(super) const NEXT_EVENT_PROJECT: &str = "SELECT account_id, org_id, project_id \
    FROM webhook_events WHERE (account_id, org_id, project_id) > (?1, ?2, ?3) \
    ORDER BY account_id, org_id, project_id LIMIT 1";

/// Deletes up to `?5` of the project `(?1, ?2, ?3)`'s webhook events made before `?4` whose
/// execution is gone: the front of the project's range of `webhook_events_by_project`.
pub(super) const PURGE_PROJECT_EVENTS: &str = "DELETE FROM webhook_events WHERE rowid IN ( \
    SELECT e.rowid FROM webhook_events e \
    WHERE e.account_id = ?1 AND e.org_id = ?2 AND e.project_id = ?3 AND e.created_at < ?4 \
    AND NOT EXISTS (SELECT 1 FROM executions x WHERE x.plan_execution_id = e.plan_execution_id) \
    LIMIT ?5)";

/// Deletes up to `batch` webhook events made before `cutoff` whose execution is gone, project by
/// project from the one after `from`, and leaves `from` where the next purge goes on: back at
/// the start once the walk has reached the last project (migration 0012 dropped the index of
/// their times; see [`PURGE_PROJECTS`]).
pub(super) fn purge_events(
    c: &Connection,
    cutoff: Millis,
    batch: u32,
    from: &mut ProjectKey,
) -> rusqlite::Result<usize> {
    let mut next = c.prepare_cached(NEXT_EVENT_PROJECT)?;
    let mut purge = c.prepare_cached(PURGE_PROJECT_EVENTS)?;
    let (batch, mut purged) = (batch as usize, 0);
    for _ in 0..PURGE_PROJECTS {
        let Some(project) = next
            .query_row(params![from.0, from.1, from.2], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?
        else {
            *from = ProjectKey::default();
            break;
        };
        purged += purge.execute(params![
            project.0,
            project.1,
            project.2,
            cutoff,
            batch - purged
        ])?;
        if purged == batch {
            // `from` stays before this project, whose old events may not all be gone yet.
            break;
        }
        *from = project;
    }
    Ok(purged)
}

/// The steps of the execution `?1`, by the table's key (migration 0010): its creation time, then
/// its id.
pub(super) const STEPS_OF: &str = "execution_created_at = \
     (SELECT created_at FROM executions WHERE plan_execution_id = ?1) AND plan_execution_id = ?1";

fn step_row(row: &Row<'_>) -> rusqlite::Result<StepRecord> {
    let outputs: String = row.get(11)?;
    Ok(StepRecord {
        stage_index: row.get(0)?,
        step_index: row.get(1)?,
        stage: row.get(2)?,
        stage_name: row.get(3)?,
        step: row.get(4)?,
        step_name: row.get(5)?,
        step_type: row.get(6)?,
        status: row.get(7)?,
        attempt: row.get(8)?,
        started_at: row.get(9)?,
        ended_at: row.get(10)?,
        outputs: serde_json::from_str(&outputs).unwrap_or_default(),
        message: row.get(12)?,
        log: row.get(13)?,
    })
}

fn upsert_step(
    c: &rusqlite::Connection,
    id: &PlanExecutionId,
    s: &StepRecord,
) -> rusqlite::Result<usize> {
    let outputs = serde_json::to_string(&s.outputs).unwrap_or_else(|_| "{}".into());
    c.prepare_cached(&format!(
        "INSERT OR REPLACE INTO execution_steps (execution_created_at, plan_execution_id, {STEP_COLS}) \
         VALUES ((SELECT created_at FROM executions WHERE plan_execution_id = ?1), \
         ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    ))?
    .execute(params![
        id.as_str(),
        s.stage_index,
        s.step_index,
        s.stage,
        s.stage_name,
        s.step,
        s.step_name,
        s.step_type,
        s.status,
        s.attempt,
        s.started_at,
        s.ended_at,
        outputs,
        s.message,
        s.log
    ])
}

/// An execution to queue.
pub(super) struct QueuedExecution<'a> {
    pub plan: &'a PlanExecutionId,
    pub scope: &'a ProjectRef,
    pub pipeline: &'a str,
    pub pipeline_name: &'a str,
    pub trigger_type: &'a str,
    pub trigger: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub runtime_input: &'a str,
    pub created_at: Millis,
    /// Queued leased to an idle worker (see [`QueueLease`]).
    pub lease: Option<&'a QueueLease>,
}

/// Inserts a `Queued` execution numbered by the pipeline's counter; returns its number.
pub(super) fn insert_execution(
    c: &rusqlite::Connection,
    x: &QueuedExecution<'_>,
) -> StoreResult<i64> {
    let p = x.scope;
    let key = params![
        p.account.as_str(),
        p.org.as_str(),
        p.project.as_str(),
        x.pipeline
    ];
    // The pipeline's counter, bumped then read: on the writer, in this transaction, so no other
    // write comes between. Two lookups of the same row cost the writer less than one
    // `INSERT .. ON CONFLICT DO UPDATE .. RETURNING` (which SQLite runs through an ephemeral
    // table for the returned row: 9.5 % of the writer's samples in matched intake, issue 13).
    let bumped = c
        .prepare_cached(
            "UPDATE pipeline_counters SET last = last + 1 \
             WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4",
        )
        .and_then(|mut s| s.execute(key))
        .map_err(sql_err("numbering an execution"))?;
    let run_sequence: i64 = if bumped == 0 {
        c.prepare_cached(
            "INSERT INTO pipeline_counters (account_id, org_id, project_id, pipeline_id, last) \
             VALUES (?1, ?2, ?3, ?4, 1)",
        )
        .and_then(|mut s| s.execute(key))
        .map_err(sql_err("numbering an execution"))?;
        1
    } else {
        c.prepare_cached(
            "SELECT last FROM pipeline_counters \
             WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 AND pipeline_id = ?4",
        )
        .and_then(|mut s| s.query_row(key, |r| r.get(0)))
        .map_err(sql_err("numbering an execution"))?
    };
    c.prepare_cached(&format!(
        "INSERT INTO executions ({EXECUTION_COLS}, lease_owner, lease_until, lease_token) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'Queued', ?7, ?8, ?9, ?10, ?11, ?12, NULL, NULL, ?13, ?14, ?15)"
    ))
    .and_then(|mut s| {
        // By the lease clock, as a claim's (`claim_runnable`).
        let lease_until = x.lease.map(|l| now_millis() + l.lease_ms);
        s.execute(params![
            x.plan.as_str(),
            p.account.as_str(),
            p.org.as_str(),
            p.project.as_str(),
            x.pipeline,
            x.pipeline_name,
            x.trigger_type,
            x.trigger,
            x.event_id,
            run_sequence,
            x.runtime_input,
            x.created_at,
            x.lease.map(|l| l.owner.as_str()),
            lease_until,
            x.lease.map(|l| l.token.as_str())
        ])
    })
    .map_err(sql_err("queueing an execution"))?;
    Ok(run_sequence)
}

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn queue_execution(&self, new: NewManualExecution) -> StoreResult<Execution> {
        let created_at = now_millis();
        self.writer
            .write(move |c| {
                let plan = PlanExecutionId::generate();
                let run_sequence = insert_execution(
                    c,
                    &QueuedExecution {
                        plan: &plan,
                        scope: &new.scope,
                        pipeline: new.pipeline.as_str(),
                        pipeline_name: &new.pipeline_name,
                        trigger_type: "MANUAL",
                        trigger: None,
                        event_id: None,
                        runtime_input: &new.runtime_input,
                        created_at,
                        lease: None,
                    },
                )?;
                Ok(Execution {
                    plan_execution_id: plan,
                    scope: new.scope,
                    pipeline: new.pipeline.to_string(),
                    pipeline_name: new.pipeline_name,
                    status: status::QUEUED.into(),
                    trigger_type: "MANUAL".into(),
                    trigger: None,
                    event_id: None,
                    run_sequence,
                    runtime_input: new.runtime_input,
                    created_at,
                    started_at: None,
                    ended_at: None,
                })
            })
            .await
    }

    async fn list_executions(
        &self,
        p: &ProjectRef,
        filter: &ExecutionFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<Execution>> {
        let (before_ts, before_id) = decode_time_cursor(cursor)?;
        let items = self.read("listing executions", |c| {
            c.prepare_cached(&format!(
                "SELECT {EXECUTION_COLS} FROM executions WHERE account_id = ?1 AND org_id = ?2 AND project_id = ?3 \
                 AND (?4 IS NULL OR pipeline_id = ?4) AND (?5 IS NULL OR status = ?5) \
                 AND (created_at, plan_execution_id) < (?6, ?7) \
                 ORDER BY created_at DESC, plan_execution_id DESC LIMIT ?8"
            ))?
            .query_map(
                params![
                    p.account.as_str(),
                    p.org.as_str(),
                    p.project.as_str(),
                    filter.pipeline,
                    filter.status,
                    before_ts,
                    before_id,
                    limit + 1
                ],
                execution_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(page(items, limit, |x| {
            encode_cursor(&[&x.created_at.to_string(), x.plan_execution_id.as_str()])
        }))
    }

    async fn recover_executions(&self, now: Millis) -> StoreResult<u64> {
        self.writer
            .write(move |c| {
                c.execute(
                    "UPDATE executions SET lease_owner = NULL, lease_until = NULL, lease_token = NULL \
                     WHERE lease_owner IS NOT NULL OR lease_token IS NOT NULL",
                    [],
                )
                .map_err(sql_err("releasing leases"))?;
                let marked = c
                    .execute(
                        "UPDATE execution_steps SET status = ?1, message = 'interrupted', ended_at = ?2 \
                         WHERE status = ?3 AND step_type IN ('Run', 'Http')",
                        params![status::FAILED, now, status::RUNNING],
                    )
                    .map_err(sql_err("marking interrupted steps"))?;
                Ok(marked as u64)
            })
            .await
    }

    async fn claim_executions(
        &self,
        owner: &str,
        limit: u32,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Vec<Claimed>> {
        let owner = owner.to_owned();
        let claims = self
            .writer
            .write(move |c| claim_runnable(c, &owner, limit, now, lease_ms))
            .await?;
        // The workers read what they run themselves, off the writer's thread.
        Ok(claims
            .into_iter()
            .map(|claim| Claimed { claim, work: None })
            .collect())
    }

    async fn renew_lease(&self, claim: &Claim, lease_ms: i64) -> StoreResult<Option<Control>> {
        let claim = claim.clone();
        self.writer
            .write(move |c| {
                let until = now_millis() + lease_ms;
                let pending: Option<Option<String>> = c
                    .prepare_cached(
                        "UPDATE executions SET lease_until = ?3 \
                         WHERE plan_execution_id = ?1 AND lease_token = ?2 \
                         RETURNING control",
                    )
                    .and_then(|mut s| {
                        s.query_row(
                            params![claim.id.as_str(), claim.token.as_str(), until],
                            |r| r.get(0),
                        )
                        .optional()
                    })
                    .map_err(sql_err("renewing a lease"))?;
                match pending {
                    Some(pending) => Ok(control::from_stored(pending.as_deref())),
                    None => Err(StoreError::LeaseLost),
                }
            })
            .await
    }

    async fn release_lease(&self, claim: &Claim) -> StoreResult<()> {
        let claim = claim.clone();
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE executions SET lease_owner = NULL, lease_until = NULL, lease_token = NULL \
                         WHERE plan_execution_id = ?1 AND lease_token = ?2",
                    )
                    .and_then(|mut s| s.execute(params![claim.id.as_str(), claim.token.as_str()]))
                    .map_err(sql_err("releasing a lease"))?;
                if n == 0 {
                    return Err(StoreError::LeaseLost);
                }
                Ok(())
            })
            .await
    }

    async fn load_run(&self, id: &PlanExecutionId) -> StoreResult<Option<RunState>> {
        self.read("loading an execution", |c| read_run(c, id))
    }

    async fn start_execution(
        &self,
        claim: &Claim,
        pipeline_spec: serde_json::Value,
        steps: Vec<StepRecord>,
        now: Millis,
    ) -> StoreResult<bool> {
        let claim = claim.clone();
        let spec = pipeline_spec.to_string();
        self.writer
            .write(move |c| {
                fence(c, &claim)?;
                start(c, &claim.id, &spec, &steps, now)
            })
            .await
    }

    async fn update_step(&self, claim: &Claim, step: StepRecord) -> StoreResult<()> {
        let claim = claim.clone();
        self.writer
            .write(move |c| {
                fence(c, &claim)?;
                upsert_step(c, &claim.id, &step).map_err(sql_err("updating a step"))?;
                write_events(c, &claim.id, now_millis(), None)
                    .map_err(sql_err("writing execution events"))?;
                Ok(())
            })
            .await
    }

    async fn park_execution(&self, claim: &Claim, wake_at: Millis) -> StoreResult<()> {
        let claim = claim.clone();
        self.writer
            .write(move |c| {
                fence(c, &claim)?;
                if apply_pending_control(c, &claim.id)? {
                    return Ok(());
                }
                c.prepare_cached(
                    "UPDATE executions SET wake_at = ?2, lease_owner = NULL, lease_until = NULL, \
                     lease_token = NULL WHERE plan_execution_id = ?1",
                )
                .and_then(|mut s| s.execute(params![claim.id.as_str(), wake_at]))
                .map_err(sql_err("parking an execution"))?;
                Ok(())
            })
            .await
    }

    async fn finish_execution(
        &self,
        claim: &Claim,
        begun: Option<Start>,
        steps: Vec<StepRecord>,
        final_status: &str,
        failure_message: Option<String>,
        now: Millis,
        next: Option<&NextClaim>,
    ) -> StoreResult<Option<Claimed>> {
        let ending = Ending {
            claim: claim.clone(),
            begun: begun.map(|b| (b.pipeline_spec.to_string(), b.steps, b.at)),
            steps,
            status: final_status.to_owned(),
            failure_message,
            now,
            next: next.cloned(),
        };
        let (_, claimed) = self.endings.write_waiting(ending).await?;
        // The worker reads what it runs itself, off the writer's thread.
        Ok(claimed.map(|claim| Claimed { claim, work: None }))
    }

    async fn control_execution(
        &self,
        id: &PlanExecutionId,
        control: Control,
        comment: Option<String>,
        now: Millis,
    ) -> StoreResult<ControlOutcome> {
        let id = id.clone();
        self.writer
            .write(move |c| {
                // A worker holds the execution while its lease lasts by the lease clock.
                let row: Option<(String, bool, Option<String>)> = c
                    .prepare_cached(
                        "SELECT status, lease_owner IS NOT NULL AND lease_until >= ?2, control \
                         FROM executions WHERE plan_execution_id = ?1",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![id.as_str(), now_millis()], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional()
                    })
                    .map_err(sql_err("reading an execution for a control request"))?;
                let Some((current, leased, pending)) = row else {
                    return Ok(ControlOutcome::Missing);
                };
                apply_control(
                    c,
                    &id,
                    &current,
                    leased,
                    pending.as_deref(),
                    control,
                    comment,
                    now,
                )
                .map_err(sql_err("applying a control request"))
            })
            .await
    }

    async fn pending_control(&self, id: &PlanExecutionId) -> StoreResult<Option<Control>> {
        self.read("reading a control request", |c| read_control(c, id))
    }

    async fn hold_execution(
        &self,
        claim: &Claim,
        hold_status: &str,
        wake_at: Option<Millis>,
    ) -> StoreResult<()> {
        let claim = claim.clone();
        let hold_status = hold_status.to_owned();
        self.writer
            .write(move |c| {
                fence(c, &claim)?;
                let id = &claim.id;
                if apply_pending_control(c, id)? {
                    return Ok(());
                }
                c.prepare_cached(
                    "UPDATE executions SET status = ?2, wake_at = ?3, lease_owner = NULL, \
                     lease_until = NULL, lease_token = NULL, control = NULL \
                     WHERE plan_execution_id = ?1",
                )
                .and_then(|mut s| s.execute(params![id.as_str(), hold_status, wake_at]))
                .map_err(sql_err("holding an execution"))?;
                let paused = (hold_status == status::PAUSED).then_some(true);
                write_events(c, id, now_millis(), paused)
                    .map_err(sql_err("writing execution events"))?;
                Ok(())
            })
            .await
    }

    async fn purge_before(&self, cutoff: Millis, batch: u32) -> StoreResult<Purged> {
        let purge_from = Arc::clone(&self.purge_from);
        self.writer
            .write(move |c| {
                let executions = c
                    .prepare_cached(
                        "DELETE FROM executions WHERE plan_execution_id IN ( \
                           SELECT plan_execution_id FROM executions WHERE ended_at < ?1 \
                           AND status IN ('Success', 'Failed', 'Aborted', 'Expired', 'ApprovalRejected', 'Errored') \
                           LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![cutoff, batch]))
                    .map_err(sql_err("purging old executions"))?;
                // The cursor moves only once the purge has committed: a failed one is walked again.
                let mut from = purge_from.lock().clone();
                let events = purge_events(c, cutoff, batch, &mut from)
                    .map_err(sql_err("purging old webhook events"))?;
                c.prepare_cached(
                    "DELETE FROM idempotency_keys \
                     WHERE (account_id, org_id, project_id, pipeline_id, trigger_id, key) IN ( \
                       SELECT account_id, org_id, project_id, pipeline_id, trigger_id, key \
                       FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![cutoff, batch]))
                .map_err(sql_err("purging old idempotency keys"))?;
                Ok((executions as u64, events as u64, from))
            })
            .await
            .map(|(executions, events, from)| {
                let purged = Purged::new(executions, events, batch, &from);
                *self.purge_from.lock() = from;
                purged
            })
    }

    async fn append_step_log(
        &self,
        claim: &Claim,
        stage: &str,
        step: &str,
        lines: Vec<LogLine>,
    ) -> StoreResult<()> {
        let (claim, stage, step) = (claim.clone(), stage.to_owned(), step.to_owned());
        self.writer
            .write(move |c| {
                fence(c, &claim)?;
                let mut insert = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO step_log_lines \
                         (plan_execution_id, stage_id, step_id, seq, stream, ts, line) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(sql_err("appending to a step log"))?;
                for l in &lines {
                    insert
                        .execute(params![
                            claim.id.as_str(),
                            stage,
                            step,
                            l.seq,
                            l.stream,
                            l.ts,
                            l.text
                        ])
                        .map_err(sql_err("appending to a step log"))?;
                }
                Ok(())
            })
            .await
    }

    async fn step_log(
        &self,
        id: &PlanExecutionId,
        stage: &str,
        step: &str,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<LogLine>> {
        let (id, stage, step) = (id.clone(), stage.to_owned(), step.to_owned());
        self.read("reading a step log", move |c| {
            c.prepare_cached(
                "SELECT seq, stream, ts, line FROM step_log_lines \
                 WHERE plan_execution_id = ?1 AND stage_id = ?2 AND step_id = ?3 AND seq > ?4 \
                 ORDER BY seq LIMIT ?5",
            )?
            .query_map(params![id.as_str(), stage, step, after, limit], |r| {
                Ok(LogLine {
                    seq: r.get(0)?,
                    stream: r.get(1)?,
                    ts: r.get(2)?,
                    text: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    async fn list_steps(&self, id: &PlanExecutionId) -> StoreResult<Vec<StepRecord>> {
        let id = id.clone();
        self.read("listing execution steps", move |c| {
            c.prepare_cached(&format!(
                "SELECT {STEP_COLS} FROM execution_steps WHERE {STEPS_OF} \
                 ORDER BY stage_index, step_index"
            ))?
            .query_map([id.as_str()], step_row)?
            .collect()
        })
    }
}

/// One control request against an execution in status `current`, inside the writer's
/// transaction: carries out what [`control::decide`] says. An execution a worker holds
/// (`leased`) is only flagged; the worker applies it.
#[allow(clippy::too_many_arguments)]
fn apply_control(
    c: &rusqlite::Connection,
    id: &PlanExecutionId,
    current: &str,
    leased: bool,
    pending: Option<&str>,
    request: Control,
    comment: Option<String>,
    now: Millis,
) -> rusqlite::Result<ControlOutcome> {
    let flag = |value: Option<&str>| {
        c.execute(
            "UPDATE executions SET control = ?2 WHERE plan_execution_id = ?1",
            params![id.as_str(), value],
        )
    };
    let comment = comment.as_deref();
    match control::decide(current, leased, control::from_stored(pending), request) {
        ControlAction::NotAllowed => Ok(ControlOutcome::NotAllowed(current.to_owned())),
        ControlAction::Signal(request) => {
            flag(control::stored(request))?;
            Ok(ControlOutcome::Signalled)
        }
        ControlAction::Withdraw => {
            flag(None)?;
            Ok(ControlOutcome::Applied)
        }
        ControlAction::AbortNow => {
            c.execute(
                &format!(
                    "UPDATE execution_steps SET status = ?2, ended_at = ?3, message = 'aborted' \
                     WHERE {STEPS_OF} AND status IN ('Running', 'ApprovalWaiting')"
                ),
                params![id.as_str(), status::ABORTED, now],
            )?;
            c.execute(
                &format!("UPDATE execution_steps SET status = ?2 WHERE {STEPS_OF} AND status = ?3"),
                params![id.as_str(), status::SKIPPED, status::NOT_STARTED],
            )?;
            finish(
                c,
                id,
                status::ABORTED,
                Some(&control::abort_message(comment)),
                now,
                true,
            )?;
            Ok(ControlOutcome::Applied)
        }
        ControlAction::PauseNow { announce } => {
            c.execute(
                // The lease goes too: a worker whose lease ran out may no longer write.
                "UPDATE executions SET status = ?2, control = NULL, lease_owner = NULL, \
                 lease_until = NULL, lease_token = NULL WHERE plan_execution_id = ?1",
                params![id.as_str(), status::PAUSED],
            )?;
            if announce {
                write_events(c, id, now, Some(true))?;
            }
            Ok(ControlOutcome::Applied)
        }
        ControlAction::ResumeNow => {
            c.execute(
                "UPDATE executions SET status = CASE WHEN pipeline_spec IS NULL THEN ?2 ELSE ?3 END, \
                 control = NULL, wake_at = NULL WHERE plan_execution_id = ?1",
                params![id.as_str(), status::QUEUED, status::RUNNING],
            )?;
            write_events(c, id, now, Some(false))?;
            Ok(ControlOutcome::Applied)
        }
        ControlAction::Settle { approve } => {
            let step: Option<String> = c
                .query_row(
                    &format!(
                        "SELECT step_id FROM execution_steps WHERE {STEPS_OF} AND status = ?2"
                    ),
                    params![id.as_str(), status::APPROVAL_WAITING],
                    |r| r.get(0),
                )
                .optional()?;
            let note = control::approval_note(approve, comment);
            let step_status = if approve {
                status::SUCCESS
            } else {
                status::APPROVAL_REJECTED
            };
            c.execute(
                &format!(
                    "UPDATE execution_steps SET status = ?2, ended_at = ?3, message = ?4 \
                     WHERE {STEPS_OF} AND status = ?5"
                ),
                params![
                    id.as_str(),
                    step_status,
                    now,
                    note,
                    status::APPROVAL_WAITING
                ],
            )?;
            if approve {
                c.execute(
                    "UPDATE executions SET status = ?2, wake_at = NULL WHERE plan_execution_id = ?1",
                    params![id.as_str(), status::RUNNING],
                )?;
            } else {
                c.execute(
                    &format!(
                        "UPDATE execution_steps SET status = ?2 WHERE {STEPS_OF} AND status = ?3"
                    ),
                    params![id.as_str(), status::SKIPPED, status::NOT_STARTED],
                )?;
                let message = control::rejection_message(step.as_deref(), &note);
                finish(c, id, status::APPROVAL_REJECTED, Some(&message), now, true)?;
            }
            Ok(ControlOutcome::Applied)
        }
    }
}

/// Inside a park or hold: a control request that arrived while the worker was finishing its
/// step is applied now, as the worker lets go (an abort ends the execution, a pause pauses it),
/// instead of being lost. True when one was applied.
fn apply_pending_control(c: &rusqlite::Connection, id: &PlanExecutionId) -> StoreResult<bool> {
    let pending: Option<String> = c
        .prepare_cached("SELECT control FROM executions WHERE plan_execution_id = ?1")
        .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)))
        .optional()
        .map_err(sql_err("reading a control request"))?
        .flatten();
    let Some(request) = control::from_stored(pending.as_deref()) else {
        return Ok(false);
    };
    c.execute(
        "UPDATE executions SET lease_owner = NULL, lease_until = NULL, lease_token = NULL \
         WHERE plan_execution_id = ?1",
        [id.as_str()],
    )
    .map_err(sql_err("releasing a lease"))?;
    apply_control(
        c,
        id,
        status::RUNNING,
        false,
        None,
        request,
        None,
        now_millis(),
    )
    .map_err(sql_err("applying a control request"))?;
    Ok(true)
}

/// An execution's end, as [`ExecutionStore::finish_execution`] was asked for it: written with
/// the other ends queued meanwhile, under one savepoint (see [`super::writer::Coalescer`]).
pub(super) struct Ending {
    claim: Claim,
    /// The start written with it: the pipeline snapshot, its steps, when.
    begun: Option<(String, Vec<StepRecord>, Millis)>,
    steps: Vec<StepRecord>,
    status: String,
    failure_message: Option<String>,
    now: Millis,
    next: Option<NextClaim>,
}

/// Writes an execution's end (see [`Ending`]); the claim of the next execution, when asked
/// for one and one is runnable.
pub(super) fn write_ending(c: &rusqlite::Connection, e: &Ending) -> StoreResult<Option<Claim>> {
    let id = &e.claim.id;
    // Without an enabled event rule in the project, nothing reads the state between a start
    // and an end written together: the execution's row is then written once, started and
    // ended, and each step once, as it ended, instead of as it started and again as it ended.
    let events = fenced_has_event_rules(c, &e.claim)?;
    let failure = e.failure_message.as_deref();
    let end = sql_err("finishing an execution");
    match &e.begun {
        Some((spec, begun, at)) if !events => {
            if !start_and_finish(c, id, spec, *at, &e.status, failure, e.now).map_err(end)? {
                return Err(AlreadyStarted::error());
            }
            for step in StepRecord::with_ends(begun, &e.steps) {
                upsert_step(c, id, &step).map_err(sql_err("adding execution steps"))?;
            }
        }
        begun => {
            if let Some((spec, begun, at)) = begun {
                if !start(c, id, spec, begun, *at)? {
                    return Err(AlreadyStarted::error());
                }
            }
            for step in &e.steps {
                upsert_step(c, id, step).map_err(sql_err("updating a step"))?;
            }
            finish(c, id, &e.status, failure, e.now, events).map_err(end)?;
        }
    }
    match &e.next {
        Some(n) => claim_one(c, n, e.now),
        None => Ok(None),
    }
}

/// Starts and ends an execution never started before in one write of its row (see
/// [`start`] and [`finish`]); false when it had started already, writing nothing.
fn start_and_finish(
    c: &rusqlite::Connection,
    id: &PlanExecutionId,
    spec: &str,
    started_at: Millis,
    final_status: &str,
    failure_message: Option<&str>,
    now: Millis,
) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "UPDATE executions SET pipeline_spec = ?2, status = ?3, started_at = ?4, \
         failure_message = ?5, ended_at = ?6, \
         lease_owner = NULL, lease_until = NULL, lease_token = NULL, wake_at = NULL, control = NULL \
         WHERE plan_execution_id = ?1 AND pipeline_spec IS NULL",
    )?
    .execute(params![
        id.as_str(),
        spec,
        final_status,
        started_at,
        failure_message,
        now
    ])
    .map(|changed| changed > 0)
}

/// Leases up to `limit` runnable executions to `owner` (see
/// [`ExecutionStore::claim_executions`]).
fn claim_runnable(
    c: &rusqlite::Connection,
    owner: &str,
    limit: u32,
    now: Millis,
    lease_ms: i64,
) -> StoreResult<Vec<Claim>> {
    let lease_now = now_millis();
    let ids = c
        .prepare_cached(
            "SELECT plan_execution_id FROM executions \
             WHERE claim_at <= ?1 ORDER BY claim_at LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![now.min(lease_now), limit], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(sql_err("claiming executions"))?;
    let mut claims = Vec::with_capacity(ids.len());
    for id in ids {
        let id = PlanExecutionId::parse(&id)
            .ok_or_else(|| StoreError::db("claiming executions", BadId(id.clone())))?;
        let token = LeaseToken::generate();
        c.prepare_cached(
            "UPDATE executions SET lease_owner = ?2, lease_until = ?3, lease_token = ?4 \
             WHERE plan_execution_id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                id.as_str(),
                owner,
                lease_now + lease_ms,
                token.as_str()
            ])
        })
        .map_err(sql_err("claiming executions"))?;
        claims.push(Claim { id, token });
    }
    Ok(claims)
}

/// The next execution for the worker that ended one (see [`NextClaim`]).
fn claim_one(
    c: &rusqlite::Connection,
    next: &NextClaim,
    now: Millis,
) -> StoreResult<Option<Claim>> {
    Ok(claim_runnable(c, &next.owner, 1, now, next.lease_ms)?.pop())
}

/// Inside a worker's write: fails with [`StoreError::LeaseLost`], before anything is written,
/// unless the execution still carries `claim`'s token (see [`ExecutionStore`]'s "Leases" for
/// why the token, not the expiry, is the fence). The writer applies one job at a time, so the
/// lease cannot change before the job's writes are done.
fn fence(c: &rusqlite::Connection, claim: &Claim) -> StoreResult<()> {
    c.prepare_cached("SELECT 1 FROM executions WHERE plan_execution_id = ?1 AND lease_token = ?2")
        .and_then(|mut s| {
            s.query_row(params![claim.id.as_str(), claim.token.as_str()], |_| Ok(()))
                .optional()
        })
        .map_err(sql_err("checking a lease"))?
        .ok_or(StoreError::LeaseLost)
}

/// Whether the execution's project has an enabled event rule (when it has none, writing the
/// events an execution's state implies adds nothing, see `write_events`), read with the fence
/// (see [`fence`]): a [`StoreError::LeaseLost`] when the claim no longer holds the execution.
fn fenced_has_event_rules(c: &rusqlite::Connection, claim: &Claim) -> StoreResult<bool> {
    c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM event_rules r WHERE r.account_id = x.account_id \
           AND r.org_id = x.org_id AND r.project_id = x.project_id AND r.enabled = 1) \
         FROM executions x WHERE x.plan_execution_id = ?1 AND x.lease_token = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![claim.id.as_str(), claim.token.as_str()], |r| {
            r.get(0)
        })
        .optional()
    })
    .map_err(sql_err("checking a lease"))?
    .ok_or(StoreError::LeaseLost)
}

/// Starts an execution that has not started (see `start_execution`), with the events its
/// state implies (see `write_events`); false, writing nothing, when it had.
fn start(
    c: &rusqlite::Connection,
    id: &PlanExecutionId,
    spec: &str,
    steps: &[StepRecord],
    now: Millis,
) -> StoreResult<bool> {
    let started = c
        .prepare_cached(
            "UPDATE executions SET pipeline_spec = ?2, status = ?3, started_at = ?4 \
             WHERE plan_execution_id = ?1 AND pipeline_spec IS NULL",
        )
        .and_then(|mut s| s.execute(params![id.as_str(), spec, status::RUNNING, now]))
        .map_err(sql_err("starting an execution"))?;
    if started == 0 {
        return Ok(false);
    }
    for step in steps {
        upsert_step(c, id, step).map_err(sql_err("adding execution steps"))?;
    }
    write_events(c, id, now, None).map_err(sql_err("writing execution events"))?;
    Ok(true)
}

/// Ends an execution; with `events`, adds the events its state implies (see `write_events`);
/// without, the caller has found that its project has no enabled event rule.
fn finish(
    c: &rusqlite::Connection,
    id: &PlanExecutionId,
    final_status: &str,
    failure_message: Option<&str>,
    now: Millis,
    events: bool,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE executions SET status = ?2, failure_message = ?3, ended_at = ?4, \
         started_at = COALESCE(started_at, ?4), \
         lease_owner = NULL, lease_until = NULL, lease_token = NULL, wake_at = NULL, control = NULL \
         WHERE plan_execution_id = ?1",
    )?
    .execute(params![id.as_str(), final_status, failure_message, now])?;
    if events {
        write_events(c, id, now, None)?;
    }
    Ok(())
}

/// The control request waiting for an execution (see `pending_control`).
pub(super) fn read_control(
    c: &rusqlite::Connection,
    id: &PlanExecutionId,
) -> rusqlite::Result<Option<Control>> {
    let control: Option<Option<String>> = c
        .prepare_cached("SELECT control FROM executions WHERE plan_execution_id = ?1")?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()?;
    Ok(control::from_stored(control.flatten().as_deref()))
}

/// A stored plan execution id that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("malformed plan execution id {0:?}")]
struct BadId(String);

/// An execution with its snapshot and steps (without their logs), as `load_run` returns it.
pub(super) fn read_run(
    c: &rusqlite::Connection,
    id: &PlanExecutionId,
) -> rusqlite::Result<Option<RunState>> {
    let Some((execution, spec, failure)) = c
        .prepare_cached(&format!(
            "SELECT {EXECUTION_COLS}, pipeline_spec, failure_message FROM executions \
             WHERE plan_execution_id = ?1"
        ))?
        .query_row([id.as_str()], |r| {
            let spec: Option<String> = r.get(15)?;
            Ok((execution_row(r)?, spec, r.get::<_, Option<String>>(16)?))
        })
        .optional()?
    else {
        return Ok(None);
    };
    // An execution queued and never started has no step rows: they are written when it starts
    // (`start`), or when it ends without starting (aborted). So the lookup, a fifth of what a
    // worker's first read of a new execution cost, is left out.
    if spec.is_none() && execution.status == status::QUEUED {
        return Ok(Some(RunState {
            execution,
            pipeline_spec: None,
            steps: Vec::new(),
            failure_message: failure,
        }));
    }
    // Logs (up to 1 MiB each) are left out: status polls read this often.
    let steps = c
        .prepare_cached(&format!(
            "SELECT {STEP_COLS_WITHOUT_LOG}, NULL FROM execution_steps \
             WHERE {STEPS_OF} ORDER BY stage_index, step_index"
        ))?
        .query_map([id.as_str()], step_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(RunState {
        execution,
        pipeline_spec: spec.and_then(|s: String| serde_json::from_str(&s).ok()),
        steps,
        failure_message: failure,
    }))
}
