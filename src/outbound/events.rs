//! Which pipeline and stage events an execution's state implies (DESIGN §8), decided here once
//! for every backend. A backend loads the execution with its step statuses inside the write
//! that changed it, asks [`implied_events`] what to add to the outbox, and stores the answer
//! together with the new [`SentEvents`] in the same transaction.

use std::collections::BTreeSet;

use crate::domain::event_rule::ExecutionEvent;
use crate::store::executions::{stage_rollups, status, RunState};

/// The start and end events of an execution already added to the outbox, so each is added
/// once (`p` pipeline start, `x` pipeline end, `sN`/`eN` start/end of stage N).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentEvents(BTreeSet<String>);

impl SentEvents {
    /// Reads the stored form (comma-separated marks; `None` when nothing was sent).
    pub fn parse(stored: Option<&str>) -> Self {
        Self(
            stored
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// The stored form.
    pub fn to_stored(&self) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Marks `key` sent; true when it was not before.
    fn mark(&mut self, key: String) -> bool {
        self.0.insert(key)
    }
}

/// An event to add to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// `pipeline_start`, `stage_end`, ...
    pub event_type: &'static str,
    /// The JSON body (Harness v1 shape) with its own random `id`.
    pub body: String,
}

/// The events `run`'s state implies that `sent` does not hold yet, in the order they happened;
/// marks them in `sent`. With `control`, also the `*_pause` (`Some(true)`) or `*_continue`
/// (`Some(false)`) events of the execution and its current stage, which are sent on every real
/// pause or resume. `project_name` is the display name of the execution's project.
pub fn implied_events(
    run: &RunState,
    project_name: &str,
    sent: &mut SentEvents,
    control: Option<bool>,
) -> Vec<OutboxEntry> {
    let x = &run.execution;
    let stages = stage_rollups(run);
    let terminal = status::is_terminal(&x.status);
    // Pausing or resuming an execution that never started is not an event of it.
    let control = control.filter(|_| x.started_at.is_some());
    let base = ExecutionEvent {
        event_type: "",
        project: (x.scope.project.as_str(), project_name),
        pipeline: (&x.pipeline, &x.pipeline_name),
        stage: None,
        trigger: x.trigger.as_deref(),
        trigger_type: &x.trigger_type,
        event_correlation_id: x.event_id.as_deref(),
        execution_id: x.plan_execution_id.as_str(),
        started_at: x.started_at,
        completed_at: x.ended_at,
        status: Some(&x.status),
    };
    let mut events: Vec<(&'static str, ExecutionEvent<'_>)> = Vec::new();
    if x.started_at.is_some() && sent.mark("p".into()) {
        events.push(("pipeline_start", base.clone()));
    }
    for (i, stage) in stages.iter().enumerate() {
        let stage_event = || ExecutionEvent {
            stage: Some((&stage.id, &stage.name)),
            started_at: stage.start,
            completed_at: stage.end.or(x.ended_at),
            status: Some(stage.status),
            ..base.clone()
        };
        if stage.started() && sent.mark(format!("s{i}")) {
            events.push(("stage_start", stage_event()));
        }
        if stage.started() && (stage.done() || terminal) && sent.mark(format!("e{i}")) {
            let mut end = stage_event();
            if !stage.done() {
                // The execution ended while the stage was still going: it shares its fate.
                end.status = Some(&x.status);
            }
            events.push(("stage_end", end));
        }
        if let Some(paused) = control {
            if stage.started() && !stage.done() {
                let kind = if paused {
                    "stage_pause"
                } else {
                    "stage_continue"
                };
                events.push((kind, stage_event()));
            }
        }
    }
    if let Some(paused) = control {
        let (kind, stage_kind) = if paused {
            ("pipeline_pause", "stage_pause")
        } else {
            ("pipeline_continue", "stage_continue")
        };
        // The pipeline event comes before its stage's.
        let at = events
            .iter()
            .position(|(k, _)| *k == stage_kind)
            .unwrap_or(events.len());
        events.insert(at, (kind, base.clone()));
    }
    if terminal && sent.mark("x".into()) {
        events.push(("pipeline_end", base.clone()));
    }
    events
        .into_iter()
        .map(|(event_type, event)| OutboxEntry {
            event_type,
            body: ExecutionEvent {
                event_type,
                ..event
            }
            .body()
            .to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{AccountId, Identifier, PlanExecutionId, ProjectRef};
    use crate::store::executions::StepRecord;
    use crate::store::Execution;

    fn step(stage_index: u32, step_index: u32, status: &str) -> StepRecord {
        StepRecord {
            stage_index,
            step_index,
            stage: format!("stage{stage_index}"),
            stage_name: format!("Stage {stage_index}"),
            step: format!("step{step_index}"),
            step_name: String::new(),
            step_type: "Run".into(),
            status: status.into(),
            attempt: 0,
            started_at: (status != status::NOT_STARTED).then_some(10),
            ended_at: matches!(status, status::SUCCESS | status::FAILED).then_some(20),
            outputs: Default::default(),
            message: None,
            log: None,
        }
    }

    fn run(execution_status: &str, steps: Vec<StepRecord>) -> RunState {
        RunState {
            execution: Execution {
                plan_execution_id: PlanExecutionId::generate(),
                scope: ProjectRef {
                    account: AccountId::parse("acme").expect("account"),
                    org: Identifier::parse("default", "org").expect("org"),
                    project: Identifier::parse("payments", "project").expect("project"),
                },
                pipeline: "deploy".into(),
                pipeline_name: "Deploy".into(),
                status: execution_status.into(),
                trigger_type: "MANUAL".into(),
                trigger: None,
                event_id: None,
                run_sequence: 1,
                runtime_input: String::new(),
                created_at: 1,
                started_at: Some(5),
                ended_at: status::is_terminal(execution_status).then_some(30),
            },
            pipeline_spec: None,
            steps,
            failure_message: None,
        }
    }

    fn kinds(entries: &[OutboxEntry]) -> Vec<&'static str> {
        entries.iter().map(|e| e.event_type).collect()
    }

    #[test]
    fn each_start_and_end_is_implied_once_in_order() {
        let mut sent = SentEvents::default();
        let running = run(status::RUNNING, vec![step(0, 0, status::RUNNING)]);
        let first = implied_events(&running, "Payments", &mut sent, None);
        assert_eq!(kinds(&first), ["pipeline_start", "stage_start"]);
        assert!(implied_events(&running, "Payments", &mut sent, None).is_empty());
        let done = run(status::SUCCESS, vec![step(0, 0, status::SUCCESS)]);
        let last = implied_events(&done, "Payments", &mut sent, None);
        assert_eq!(kinds(&last), ["stage_end", "pipeline_end"]);
        assert_eq!(SentEvents::parse(Some(&sent.to_stored())), sent);
    }

    #[test]
    fn a_stage_cut_short_by_the_end_shares_the_execution_status() {
        let mut sent = SentEvents::parse(Some("p,s0"));
        let aborted = run(
            status::ABORTED,
            vec![step(0, 0, status::SUCCESS), step(0, 1, status::NOT_STARTED)],
        );
        let entries = implied_events(&aborted, "Payments", &mut sent, None);
        assert_eq!(kinds(&entries), ["stage_end", "pipeline_end"]);
        let body: serde_json::Value = serde_json::from_str(&entries[0].body).expect("json");
        assert_eq!(body["data"]["status"], "ABORTED", "{body}");
    }

    #[test]
    fn pause_and_continue_put_the_pipeline_event_first_and_repeat_every_time() {
        let paused = run(
            status::PAUSED,
            vec![step(0, 0, status::SUCCESS), step(0, 1, status::NOT_STARTED)],
        );
        let mut sent = SentEvents::parse(Some("p,s0"));
        for _ in 0..2 {
            let entries = implied_events(&paused, "Payments", &mut sent, Some(true));
            assert_eq!(kinds(&entries), ["pipeline_pause", "stage_pause"]);
        }
        let entries = implied_events(&paused, "Payments", &mut sent, Some(false));
        assert_eq!(kinds(&entries), ["pipeline_continue", "stage_continue"]);
    }

    #[test]
    fn an_execution_that_never_started_has_no_pause_event() {
        let mut queued = run(status::PAUSED, vec![]);
        queued.execution.started_at = None;
        let mut sent = SentEvents::default();
        assert!(implied_events(&queued, "Payments", &mut sent, Some(true)).is_empty());
    }
}
