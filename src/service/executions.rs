//! Executions (DESIGN §3, §6): manual runs, history, detail and step logs.

use super::Gateway;
use crate::domain::ids::{Identifier, PlanExecutionId, ProjectRef};
use crate::domain::pipeline::PipelineSpec;
use crate::domain::runtime_input::InputTemplate;
use crate::error::Error;
use crate::expr::context::TriggerContext;
use crate::store::executions::{
    Control, ControlOutcome, LogLine, NewManualExecution, RunState, StepRecord,
};
use crate::store::Change;
use crate::store::{now_millis, Execution};

impl Gateway {
    /// `POST P/pipelines/{pipe}/execute`: resolves `input_yaml` against the pipeline's runtime
    /// inputs (400 naming the variable when one is missing or mistyped) and queues a `MANUAL`
    /// execution.
    pub async fn execute_pipeline(
        &self,
        project: &ProjectRef,
        pipeline: &Identifier,
        input_yaml: Option<&str>,
    ) -> Result<Execution, Error> {
        let stored = self
            .store
            .get_pipeline(project, pipeline)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("Pipeline {pipeline} does not exist in {project}"))
            })?;
        let spec = PipelineSpec::from_value(&stored.spec)?;
        let input = input_yaml.filter(|text| !text.trim().is_empty());
        let template = InputTemplate::compile(input)?;
        // A manual run has no webhook: payload and header references read as missing.
        let ctx = TriggerContext {
            payload: &serde_json::Value::Null,
            headers: &[],
            event_id: "",
            trigger_identifier: "",
            pipeline_identifier: pipeline.as_str(),
            pipeline_name: &spec.name,
            execution_id: None,
        };
        let runtime_input = template
            .resolve(&spec, &ctx)
            .map_err(|problem| Error::InvalidRequest(format!("Invalid request: {problem}")))?;
        let execution = self
            .store
            .queue_execution(NewManualExecution {
                scope: project.clone(),
                pipeline: pipeline.clone(),
                pipeline_name: spec.name.clone(),
                runtime_input,
            })
            .await?;
        self.changed(Change::Work).await;
        Ok(execution)
    }

    /// `abort`, `pause`, `resume`, `approve` or `reject` an execution of the project.
    pub async fn control_execution(
        &self,
        project: &ProjectRef,
        id: &str,
        control: Control,
        comment: Option<String>,
    ) -> Result<RunState, Error> {
        let run = self.execution(project, id).await?;
        let plan = run.execution.plan_execution_id.clone();
        let action = format!("{control:?}").to_lowercase();
        match self
            .store
            .control_execution(&plan, control, comment, now_millis())
            .await?
        {
            ControlOutcome::Applied => match control {
                Control::Approve | Control::Resume => self.changed(Change::Work).await,
                Control::Abort | Control::Reject => self.engine.forget(&plan),
                Control::Pause => {}
            },
            ControlOutcome::Signalled => {
                if control == Control::Abort {
                    // The node whose worker holds it kills the running step.
                    self.changed(Change::Abort {
                        execution: plan.to_string(),
                    })
                    .await;
                }
            }
            ControlOutcome::NotAllowed(current) => {
                return Err(Error::InvalidRequest(format!(
                    "Invalid request: execution {plan} is {current}; it cannot {action} now"
                )))
            }
            ControlOutcome::Missing => return self.execution(project, id).await,
        }
        self.execution(project, id).await
    }

    /// An execution of the project, with its steps; 404 when there is none.
    pub async fn execution(&self, project: &ProjectRef, id: &str) -> Result<RunState, Error> {
        let not_found = || {
            Error::NotFound(format!(
                "Execution {} does not exist in {project}",
                crate::domain::ids::truncate_for_message(id)
            ))
        };
        let id = PlanExecutionId::parse(id).ok_or_else(not_found)?;
        let run = self
            .store
            .load_run(&id)
            .await?
            .filter(|r| &r.execution.scope == project)
            .ok_or_else(not_found)?;
        self.with_planned_steps(run).await
    }

    /// A queued execution has no steps yet: show the stages it will run, `NotStarted`, from
    /// the pipeline as it is now.
    pub async fn with_planned_steps(&self, mut run: RunState) -> Result<RunState, Error> {
        if run.pipeline_spec.is_some() || !run.steps.is_empty() {
            return Ok(run);
        }
        let Ok(pipeline) = Identifier::parse(&run.execution.pipeline, "pipeline") else {
            return Ok(run);
        };
        if let Some(stored) = self
            .store
            .get_pipeline(&run.execution.scope, &pipeline)
            .await?
        {
            if let Ok(spec) = PipelineSpec::from_value(&stored.spec) {
                run.steps = crate::engine::initial_steps(&spec);
            }
        }
        Ok(run)
    }

    /// A step of an execution, with its stored log; 404 when it has none such.
    pub async fn find_step(
        &self,
        plan: &PlanExecutionId,
        stage: &str,
        step: &str,
    ) -> Result<StepRecord, Error> {
        self.store
            .list_steps(plan)
            .await?
            .into_iter()
            .find(|s| s.stage == stage && s.step == step)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "Execution {plan} has no step {} in stage {}",
                    crate::domain::ids::truncate_for_message(step),
                    crate::domain::ids::truncate_for_message(stage)
                ))
            })
    }

    /// The live lines of a step after `after` (at most [`LOG_PAGE_LINES`]), and whether the log
    /// is complete: the step ended and nothing is left to read.
    pub async fn log_page(
        &self,
        plan: &PlanExecutionId,
        step: &StepRecord,
        after: i64,
    ) -> Result<LogPage, Error> {
        let lines = self
            .store
            .step_log(plan, &step.stage, &step.step, after, LOG_PAGE_LINES)
            .await?;
        Ok(LogPage {
            status: step.status.clone(),
            complete: lines.len() < LOG_PAGE_LINES as usize && step_ended(&step.status),
            next: lines.last().map_or(after, |l| l.seq),
            lines,
        })
    }
}

/// Live log lines returned per read.
pub const LOG_PAGE_LINES: u32 = 1000;

/// True once a step can write no more lines.
pub fn step_ended(status: &str) -> bool {
    !matches!(status, "Running" | "NotStarted")
}

/// One read of a step's live log (`?format=json` of the logs route, and the console).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LogPage {
    /// The step's status.
    pub status: String,
    /// The lines after the requested seq, in order.
    pub lines: Vec<LogLine>,
    /// The seq to ask after next time.
    pub next: i64,
    /// The step ended and every line was read.
    pub complete: bool,
}
