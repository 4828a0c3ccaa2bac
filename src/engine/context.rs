//! What a running step's expressions can read (DESIGN §5): the trigger context plus pipeline
//! variables, the current stage, and the outputs of steps that have run.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::domain::pipeline::{PipelineSpec, VariableValue};
use crate::expr::context::TriggerContext;
use crate::expr::template::Template;
use crate::expr::{Reference, Resolver};
use crate::store::executions::StepRecord;

/// The context of one step of one execution.
pub struct ExecutionContext<'a> {
    /// The webhook as expressions see it (payload, stored headers, ids).
    pub trigger: &'a TriggerContext<'a>,
    /// `<+pipeline.sequenceId>`.
    pub sequence_id: i64,
    /// `<+pipeline.variables.NAME>`, resolved.
    pub variables: &'a BTreeMap<String, Value>,
    /// The stage the step is in.
    pub stage: &'a str,
    /// Every step of the execution, for `<+steps...>` and `<+execution.steps...>`.
    pub steps: &'a [StepRecord],
}

impl Resolver for ExecutionContext<'_> {
    fn resolve(&self, reference: &Reference) -> Option<Value> {
        match reference {
            Reference::SequenceId => Some(Value::from(self.sequence_id)),
            Reference::Variable(name) => self.variables.get(name).cloned(),
            Reference::StageIdentifier => Some(Value::String(self.stage.to_owned())),
            Reference::StepOutput { stage, step, key } => {
                let stage = stage.as_deref().unwrap_or(self.stage);
                self.steps
                    .iter()
                    .find(|s| s.stage == stage && s.step == *step)
                    .and_then(|s| s.outputs.get(key))
                    .map(|v| Value::String(v.clone()))
            }
            other => self.trigger.resolve(other),
        }
    }
}

/// The pipeline variables of an execution: runtime inputs from its resolved input YAML,
/// literals as written with their `<+...>` expressions rendered against the trigger.
pub fn variables(
    pipeline: &PipelineSpec,
    runtime_input: &str,
    trigger: &TriggerContext<'_>,
) -> BTreeMap<String, Value> {
    // Parsed only for a pipeline that takes runtime inputs: most take none, and parsing the
    // YAML was 5 % of the engine's CPU per `Wait 0s` execution.
    let input: Value = if pipeline.runtime_inputs().next().is_some() {
        serde_yaml_ng::from_str(runtime_input).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let given = |name: &str| {
        input
            .pointer("/pipeline/variables")
            .and_then(Value::as_array)
            .and_then(|vars| {
                vars.iter()
                    .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            })
            .and_then(|v| v.get("value"))
            .cloned()
    };
    pipeline
        .variables
        .iter()
        .map(|v| {
            let value = match &v.value {
                VariableValue::RuntimeInput => given(&v.name)
                    .or_else(|| v.default.clone())
                    .unwrap_or(Value::Null),
                VariableValue::Literal(Value::String(text)) if text.contains("<+") => {
                    Template::parse(text)
                        .map(|t| t.render_value(trigger).unwrap_or(Value::Null))
                        .unwrap_or(Value::Null)
                }
                VariableValue::Literal(value) => value.clone(),
            };
            (v.name.clone(), value)
        })
        .collect()
}
