//! The pipeline YAML of DESIGN §6.1, parsed once into typed values and fully validated.
//!
//! Every mistake (an unknown step type, a bad duration, a duplicate identifier, a reference to a
//! step that has not run yet, an expression spliced into a shell command) is caught when the
//! pipeline is saved and reported with its exact place, so the engine can trust every
//! [`PipelineSpec`] it is handed. The body is walked as a generic tree instead of through
//! `#[derive(Deserialize)]` so that errors carry Harness-style paths (`stages[1].steps[0]`), and so
//! that Harness's extra keys are tolerated around steps while a typo inside a step is not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::ids::{truncate_for_message, Identifier};
use super::{BodyFormat, DomainError};

/// At most this many stages in a pipeline.
pub const MAX_STAGES: usize = 100;
/// At most this many steps in a stage.
pub const MAX_STEPS_PER_STAGE: usize = 100;
/// Largest Run `command`, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Longest pipeline, stage, step or trigger name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Most retries a step may ask for.
pub const MAX_RETRIES: u32 = 10;
/// The variable value that marks a required runtime input (DESIGN §6.2).
pub const RUNTIME_INPUT: &str = "<+input>";

const STEP_TYPES: &str = "Run, Http, Approval, Wait";
const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const STEP_KEYS: &[&str] = &[
    "identifier",
    "name",
    "description",
    "type",
    "timeout",
    "retries",
    "continueOnFailure",
    "spec",
];

/// A validated pipeline (DESIGN §6.1).
///
/// `Serialize` writes the Harness-shaped object that sits under the top-level `pipeline:` key;
/// [`PipelineSpec::to_json`] and [`PipelineSpec::to_yaml`] add that key.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// Display name: required, at most [`MAX_NAME_CHARS`] characters.
    pub name: String,
    /// The pipeline identifier.
    pub identifier: Identifier,
    /// Free text.
    pub description: Option<String>,
    /// Harness tags, kept as given.
    pub tags: BTreeMap<String, String>,
    /// `orgIdentifier` as written in the body, unvalidated, for the caller to compare with the URL.
    pub org_identifier: Option<String>,
    /// `projectIdentifier` as written in the body, unvalidated, for the caller to compare with the URL.
    pub project_identifier: Option<String>,
    /// Pipeline variables, in declaration order; names are unique identifiers.
    pub variables: Vec<Variable>,
    /// Stages in run order: at least one, at most [`MAX_STAGES`].
    pub stages: Vec<Stage>,
}

/// A pipeline variable, readable as `<+pipeline.variables.NAME>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// The name: a valid identifier, unique in the pipeline.
    pub name: String,
    /// The declared type.
    pub var_type: VariableType,
    /// Where the value comes from.
    pub value: VariableValue,
    /// The value used when a runtime input is not given; only allowed with `<+input>`.
    pub default: Option<Value>,
    /// Free text.
    pub description: Option<String>,
}

/// The type of a pipeline variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariableType {
    /// Any text (the default).
    String,
    /// A number; a literal value must be numeric.
    Number,
}

impl VariableType {
    /// The Harness spelling: `String` or `Number`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::Number => "Number",
        }
    }
}

/// The value of a pipeline variable.
#[derive(Debug, Clone, PartialEq)]
pub enum VariableValue {
    /// `<+input>`: the trigger's `inputYaml` or the manual run must supply it.
    RuntimeInput,
    /// A literal, or a string containing `<+...>` expressions resolved at run time. A `String`
    /// variable's literal is always a JSON string; a `Number` variable's is a JSON number unless it
    /// is an expression.
    Literal(Value),
}

/// A stage: steps that run in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Display name; defaults to the identifier.
    pub name: String,
    /// Unique among the pipeline's stages.
    pub identifier: Identifier,
    /// At least one step, at most [`MAX_STEPS_PER_STAGE`].
    pub steps: Vec<Step>,
}

/// A step of a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique among all the pipeline's steps.
    pub identifier: Identifier,
    /// Display name; defaults to the identifier.
    pub name: String,
    /// How long the step may run (for Approval: how long it waits before `Expired`).
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure, `0..=MAX_RETRIES`.
    pub retries: u32,
    /// When true, a failure of this step does not fail the stage.
    pub continue_on_failure: bool,
    /// What the step does.
    pub spec: StepSpec,
}

/// What a step does, by step `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum StepSpec {
    /// Runs `command` with `shell` in a child process.
    Run {
        /// The interpreter.
        shell: Shell,
        /// The script text; never contains `<+` (values arrive through `env`).
        command: String,
        /// Extra environment; values may contain expressions.
        env: BTreeMap<String, String>,
    },
    /// Calls a URL.
    Http {
        /// Upper-case method, one of GET POST PUT PATCH DELETE HEAD OPTIONS (default GET).
        method: String,
        /// `http://` or `https://` URL; may contain expressions.
        url: String,
        /// Request headers; values may contain expressions.
        headers: BTreeMap<String, String>,
        /// Request body; may contain expressions.
        body: Option<String>,
        /// Statuses that count as success; empty means any 2xx.
        expected_status: Vec<u16>,
        /// Timeout of the HTTP call itself.
        timeout: Option<Duration>,
    },
    /// Pauses the execution until approved, rejected or timed out.
    Approval {
        /// Shown to the approver.
        message: String,
    },
    /// Sleeps without holding a worker.
    Wait {
        /// How long to wait.
        duration: Duration,
    },
}

impl StepSpec {
    /// The step `type` as written in the YAML.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Run { .. } => "Run",
            Self::Http { .. } => "Http",
            Self::Approval { .. } => "Approval",
            Self::Wait { .. } => "Wait",
        }
    }
}

/// The interpreter of a Run step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// `sh` (the default).
    Sh,
    /// `bash`.
    Bash,
}

impl Shell {
    /// The program name: `sh` or `bash`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sh => "sh",
            Self::Bash => "bash",
        }
    }
}

impl PipelineSpec {
    /// Variables whose value is `<+input>` (required runtime inputs), in declaration order.
    pub fn runtime_inputs(&self) -> impl Iterator<Item = &Variable> {
        self.variables
            .iter()
            .filter(|v| v.value == VariableValue::RuntimeInput)
    }

    /// Whether any step is a Run step: the only kind that makes a working directory.
    pub fn has_run_steps(&self) -> bool {
        self.stages
            .iter()
            .flat_map(|stage| &stage.steps)
            .any(|step| matches!(step.spec, StepSpec::Run { .. }))
    }

    /// The Harness shape `{"pipeline": {...}}`, durations written as text like `"10m"`.
    pub fn to_json(&self) -> Value {
        // Cannot fail: every map key is a string.
        serde_json::to_value(PipelineDoc { pipeline: self }).unwrap_or(Value::Null)
    }

    /// The same document as [`PipelineSpec::to_json`], as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&PipelineDoc { pipeline: self }).unwrap_or_default()
    }
}

/// Parses and validates a pipeline body (`pipeline:` at the top), YAML or JSON.
pub fn parse_pipeline(text: &str, format: BodyFormat) -> Result<PipelineSpec, DomainError> {
    PipelineSpec::from_value(&format.parse(text)?)
}

impl PipelineSpec {
    /// Validates an already-decoded pipeline document, such as the stored [`PipelineSpec::to_json`].
    pub fn from_value(root: &Value) -> Result<PipelineSpec, DomainError> {
        parse_pipeline_value(root)
    }
}

fn parse_pipeline_value(root: &Value) -> Result<PipelineSpec, DomainError> {
    let Some(body) = root.as_object().and_then(|m| m.get("pipeline")) else {
        return Err(DomainError::invalid(
            "The body must have a top-level 'pipeline' key (pipeline: {name, identifier, stages})",
        ));
    };
    let map = as_map(body, "pipeline")?;
    reject_keys(
        map,
        &[
            "name",
            "identifier",
            "description",
            "tags",
            "orgIdentifier",
            "projectIdentifier",
            "variables",
            "stages",
        ],
        &[
            (
                "properties",
                "there is no codebase to clone; a Run step can fetch what it needs",
            ),
            (
                "notificationRules",
                "use an event rule (DESIGN §8) to be told of pipeline events",
            ),
            ("timeout", "set timeout on each step"),
        ],
        "pipeline",
    )?;
    let name = required_name(map, "name", "pipeline.name")?;
    let identifier = required_identifier(map, "pipeline.identifier")?;
    let spec = PipelineSpec {
        name,
        identifier,
        description: opt_string(map, "description", "pipeline.description")?,
        tags: opt_string_map(map, "tags", "pipeline.tags")?,
        org_identifier: opt_scalar(map, "orgIdentifier", "pipeline.orgIdentifier")?,
        project_identifier: opt_scalar(map, "projectIdentifier", "pipeline.projectIdentifier")?,
        variables: parse_variables(map.get("variables"))?,
        stages: parse_stages(map.get("stages"))?,
    };
    check_unique_identifiers(&spec.stages)?;
    check_references(&spec)?;
    Ok(spec)
}

/// Parses a duration such as `30s`, `10m`, `1h30m`, `500ms`, `2d`, `1w` or `0s`.
///
/// Units (`w d h m s ms`) go from largest to smallest, each at most once; a bare number, a sign,
/// a fraction or a total beyond [`MAX_DURATION`] is rejected.
pub fn parse_duration(text: &str) -> Result<Duration, DomainError> {
    let bad = |why: String| {
        DomainError::invalid(format!(
            "invalid duration '{}': {why} (expected e.g. 30s, 10m, 1h30m, 500ms, 2d)",
            truncate_for_message(text)
        ))
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty".to_owned()));
    }
    if trimmed.starts_with('-') {
        return Err(bad("it must not be negative".to_owned()));
    }
    let mut rest = trimmed;
    let mut total_ms: u64 = 0;
    let mut previous_rank: Option<u8> = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad(format!(
                "expected a whole number at '{}'",
                truncate_for_message(rest)
            )));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("it is too large".to_owned()))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let (rank, unit_ms): (u8, u64) = match unit {
            "w" => (0, 7 * 86_400_000),
            "d" => (1, 86_400_000),
            "h" => (2, 3_600_000),
            "m" => (3, 60_000),
            "s" => (4, 1_000),
            "ms" => (5, 1),
            "" => {
                return Err(bad(format!(
                    "missing unit after {number}; use ms, s, m, h, d or w"
                )))
            }
            other => {
                return Err(bad(format!(
                    "unknown unit '{}'; use whole numbers with ms, s, m, h, d or w",
                    truncate_for_message(other)
                )))
            }
        };
        if previous_rank.is_some_and(|p| p >= rank) {
            return Err(bad(
                "units must go from largest to smallest, each at most once".to_owned(),
            ));
        }
        previous_rank = Some(rank);
        total_ms = number
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| bad("it is too large".to_owned()))?;
        rest = &rest[unit_len..];
    }
    let total = Duration::from_millis(total_ms);
    if total > MAX_DURATION {
        return Err(bad(format!(
            "it is longer than {}, the longest supported",
            format_duration(MAX_DURATION)
        )));
    }
    Ok(total)
}

/// The longest duration anywhere (a wait, a timeout, a setting): a year. Longer ones are refused
/// when saved, so that a deadline computed from one can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Writes a duration the way [`parse_duration`] reads it (`1h30m`, `500ms`, `0s`), to the
/// millisecond.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let count = ms / size;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(unit);
            ms %= size;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Variables

fn parse_variables(value: Option<&Value>) -> Result<Vec<Variable>, DomainError> {
    let items = opt_list(value, "pipeline.variables")?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut variables = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let variable = parse_variable(item, i)?;
        if let Some(first) = seen.insert(variable.name.clone(), i) {
            return Err(DomainError::invalid(format!(
                "variables[{i}]: duplicate variable name '{}' (also variables[{first}]); variable names must be unique",
                variable.name
            )));
        }
        variables.push(variable);
    }
    Ok(variables)
}

fn parse_variable(item: &Value, index: usize) -> Result<Variable, DomainError> {
    let base = format!("variables[{index}]");
    let map = as_map(item, &base)?;
    let name = required_string(map, "name", &format!("{base}.name"))?;
    Identifier::parse(&name, &format!("{base}.name"))?;
    let ctx = format!("{base} (name '{name}')");
    let var_type = match opt_string(map, "type", &format!("{ctx}: type"))?.as_deref() {
        None | Some("String") => VariableType::String,
        Some("Number") => VariableType::Number,
        Some(other) => {
            return Err(DomainError::invalid(format!(
                "{ctx}: type '{}' is not supported; expected String or Number",
                truncate_for_message(other)
            )))
        }
    };
    let raw = map.get("value").filter(|v| !v.is_null()).ok_or_else(|| {
        DomainError::invalid(format!(
            "{ctx}: value is required (a literal, an expression, or {RUNTIME_INPUT})"
        ))
    })?;
    let value = match raw {
        Value::String(s) if s.trim() == RUNTIME_INPUT => VariableValue::RuntimeInput,
        Value::String(s) if s.contains(RUNTIME_INPUT) => {
            return Err(DomainError::invalid(format!(
                "{ctx}: value '{}' is not supported; write value: {RUNTIME_INPUT} and put a default under default:",
                truncate_for_message(s)
            )))
        }
        other => VariableValue::Literal(typed_literal(other, var_type, &format!("{ctx}: value"))?),
    };
    let default = match map.get("default").filter(|v| !v.is_null()) {
        None => None,
        Some(_) if value != VariableValue::RuntimeInput => {
            return Err(DomainError::invalid(format!(
                "{ctx}: default is only allowed when value is {RUNTIME_INPUT}"
            )))
        }
        Some(v) => Some(typed_literal(v, var_type, &format!("{ctx}: default"))?),
    };
    Ok(Variable {
        name,
        var_type,
        value,
        default,
        description: opt_string(map, "description", &format!("{ctx}: description"))?,
    })
}

/// Checks a literal against the variable type and normalises it: text for `String`, a JSON
/// number for `Number` (expressions stay text).
fn typed_literal(value: &Value, var_type: VariableType, what: &str) -> Result<Value, DomainError> {
    match (var_type, value) {
        (VariableType::String, v) => scalar_text(v).map(Value::String).ok_or_else(|| {
            DomainError::invalid(format!(
                "{what} must be a string, number or boolean, got {}",
                kind_of(v)
            ))
        }),
        (VariableType::Number, Value::Number(_)) => Ok(value.clone()),
        (VariableType::Number, Value::String(s)) if s.contains("<+") => Ok(value.clone()),
        (VariableType::Number, Value::String(s)) => s
            .trim()
            .parse::<serde_json::Number>()
            .map(Value::Number)
            .map_err(|_| {
                DomainError::invalid(format!(
                    "{what} '{}' is not a number (the variable's type is Number)",
                    truncate_for_message(s)
                ))
            }),
        (VariableType::Number, v) => Err(DomainError::invalid(format!(
            "{what} must be a number or an expression (the variable's type is Number), got {}",
            kind_of(v)
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Stages and steps

fn parse_stages(value: Option<&Value>) -> Result<Vec<Stage>, DomainError> {
    let items = opt_list(value, "pipeline.stages")?;
    if items.is_empty() {
        return Err(DomainError::invalid(
            "pipeline.stages must contain at least one stage",
        ));
    }
    if items.len() > MAX_STAGES {
        return Err(DomainError::invalid(format!(
            "pipeline.stages has {} stages; at most {MAX_STAGES} are allowed",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_stage(item, i))
        .collect()
}

fn parse_stage(item: &Value, si: usize) -> Result<Stage, DomainError> {
    let base = format!("stages[{si}]");
    let map = list_item(item, "stage", &base)?;
    let identifier = required_identifier(map, &format!("{base}.identifier"))?;
    let ctx = format!("{base} (identifier '{identifier}')");
    let name =
        opt_name(map, "name", &format!("{ctx}: name"))?.unwrap_or_else(|| identifier.to_string());
    reject_keys(
        map,
        &[
            "identifier",
            "name",
            "description",
            "tags",
            "type",
            "spec",
            "steps",
        ],
        &[
            ("when", "every stage runs; a failed step skips the rest"),
            (
                "failureStrategies",
                "use retries and continueOnFailure on steps",
            ),
            ("variables", "declare variables on the pipeline"),
        ],
        &ctx,
    )?;
    if let Some(spec) = map.get("spec").filter(|v| !v.is_null()) {
        let spec_ctx = format!("{ctx}: spec");
        let spec = as_map(spec, &spec_ctx)?;
        reject_keys(
            spec,
            &["execution"],
            &[(
                "rollbackSteps",
                "there is no rollback; add a step with continueOnFailure",
            )],
            &spec_ctx,
        )?;
        if let Some(execution) = spec.get("execution").filter(|v| !v.is_null()) {
            let execution_ctx = format!("{spec_ctx}.execution");
            reject_keys(
                as_map(execution, &execution_ctx)?,
                &["steps"],
                &[(
                    "rollbackSteps",
                    "there is no rollback; add a step with continueOnFailure",
                )],
                &execution_ctx,
            )?;
        }
    }
    let direct = map.get("steps").filter(|v| !v.is_null());
    let nested = map
        .get("spec")
        .and_then(|s| s.get("execution"))
        .and_then(|e| e.get("steps"))
        .filter(|v| !v.is_null());
    let steps_value = match (direct, nested) {
        (Some(_), Some(_)) => {
            return Err(DomainError::invalid(format!(
                "{ctx}: give the steps either under steps or under spec.execution.steps, not both"
            )))
        }
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => {
            return Err(DomainError::invalid(format!(
                "{ctx}: has no steps; a stage needs at least one step (under steps or spec.execution.steps)"
            )))
        }
    };
    let items = steps_value.as_array().ok_or_else(|| {
        DomainError::invalid(format!(
            "{ctx}: steps must be a list, got {}",
            kind_of(steps_value)
        ))
    })?;
    if items.is_empty() {
        return Err(DomainError::invalid(format!(
            "{ctx}: has no steps; a stage needs at least one step"
        )));
    }
    if items.len() > MAX_STEPS_PER_STAGE {
        return Err(DomainError::invalid(format!(
            "{ctx}: has {} steps; at most {MAX_STEPS_PER_STAGE} are allowed",
            items.len()
        )));
    }
    let steps = items
        .iter()
        .enumerate()
        .map(|(ji, item)| parse_step(item, si, ji))
        .collect::<Result<_, _>>()?;
    Ok(Stage {
        name,
        identifier,
        steps,
    })
}

fn parse_step(item: &Value, si: usize, ji: usize) -> Result<Step, DomainError> {
    let base = format!("stages[{si}].steps[{ji}]");
    let map = list_item(item, "step", &base)?;
    let identifier = required_identifier(map, &format!("{base}.identifier"))?;
    let ctx = format!("{base} (identifier '{identifier}')");
    let at = |key: &str| format!("{ctx}: {key}");
    reject_unknown_keys(map, STEP_KEYS, &ctx)?;
    let name = opt_name(map, "name", &at("name"))?.unwrap_or_else(|| identifier.to_string());
    let timeout = opt_timeout(map, &at("timeout"))?;
    let retries = match map.get("retries").filter(|v| !v.is_null()) {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= MAX_RETRIES)
            .ok_or_else(|| {
                DomainError::invalid(format!(
                    "{ctx}: retries must be a whole number from 0 to {MAX_RETRIES}, got {}",
                    truncate_for_message(&v.to_string())
                ))
            })?,
    };
    let continue_on_failure =
        opt_bool(map, "continueOnFailure", &at("continueOnFailure"))?.unwrap_or(false);
    let Some(step_type) = opt_string(map, "type", &at("type"))? else {
        return Err(DomainError::invalid(format!(
            "{ctx}: type is required; expected one of {STEP_TYPES}"
        )));
    };
    let spec_value = map.get("spec").filter(|v| !v.is_null());
    let empty = Map::new();
    let spec_map = match spec_value {
        Some(v) => as_map(v, &at("spec"))?,
        None if step_type == "Approval" => &empty,
        None if matches!(step_type.as_str(), "Run" | "Http" | "Wait") => {
            return Err(DomainError::invalid(format!(
                "{ctx}: spec is required for a {step_type} step"
            )))
        }
        None => &empty,
    };
    let spec = match step_type.as_str() {
        "Run" => parse_run(spec_map, &ctx)?,
        "Http" => parse_http(spec_map, &ctx)?,
        "Approval" => {
            reject_unknown_keys(spec_map, &["message"], &at("spec"))?;
            StepSpec::Approval {
                message: opt_string(spec_map, "message", &at("spec.message"))?.unwrap_or_default(),
            }
        }
        "Wait" => {
            reject_unknown_keys(spec_map, &["duration"], &at("spec"))?;
            StepSpec::Wait {
                duration: opt_duration(spec_map, "duration", &at("spec.duration"))?.ok_or_else(
                    || DomainError::invalid(format!("{ctx}: spec.duration is required")),
                )?,
            }
        }
        other => {
            return Err(DomainError::invalid(format!(
                "{ctx}: unknown step type '{}'; expected one of {STEP_TYPES}",
                truncate_for_message(other)
            )))
        }
    };
    Ok(Step {
        identifier,
        name,
        timeout,
        retries,
        continue_on_failure,
        spec,
    })
}

fn parse_run(spec: &Map<String, Value>, ctx: &str) -> Result<StepSpec, DomainError> {
    let at = |key: &str| format!("{ctx}: {key}");
    reject_unknown_keys(spec, &["shell", "command", "env"], &at("spec"))?;
    let shell = match opt_string(spec, "shell", &at("spec.shell"))? {
        None => Shell::Sh,
        Some(s) => match s.to_ascii_lowercase().as_str() {
            "sh" => Shell::Sh,
            "bash" => Shell::Bash,
            _ => {
                return Err(DomainError::invalid(format!(
                    "{ctx}: spec.shell '{}' is not supported; expected sh or bash",
                    truncate_for_message(&s)
                )))
            }
        },
    };
    let command = opt_string(spec, "command", &at("spec.command"))?
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            DomainError::invalid(format!(
                "{ctx}: spec.command is required and must not be blank"
            ))
        })?;
    if command.len() > MAX_COMMAND_BYTES {
        return Err(DomainError::invalid(format!(
            "{ctx}: spec.command is {} bytes; at most {MAX_COMMAND_BYTES} are allowed",
            command.len()
        )));
    }
    if command.contains("<+") {
        return Err(DomainError::invalid(format!(
            "{ctx}: spec.command must not contain expressions (<+...>); pass values through env instead"
        )));
    }
    if command.contains('\0') {
        return Err(DomainError::invalid(format!(
            "{ctx}: spec.command must not contain NUL characters"
        )));
    }
    let env = opt_string_map(spec, "env", &at("spec.env"))?;
    for (key, value) in &env {
        if !is_env_name(key) {
            return Err(DomainError::invalid(format!(
                "{ctx}: spec.env key '{}' is not a valid variable name (expected ^[A-Za-z_][A-Za-z0-9_]*$)",
                truncate_for_message(key)
            )));
        }
        if key.starts_with("TRIGGERD_") {
            return Err(DomainError::invalid(format!(
                "{ctx}: spec.env key '{key}' is reserved (triggerd sets the TRIGGERD_* variables itself)"
            )));
        }
        if value.contains('\0') {
            return Err(DomainError::invalid(format!(
                "{ctx}: spec.env.{key} must not contain NUL characters"
            )));
        }
    }
    Ok(StepSpec::Run {
        shell,
        command,
        env,
    })
}

fn parse_http(spec: &Map<String, Value>, ctx: &str) -> Result<StepSpec, DomainError> {
    let at = |key: &str| format!("{ctx}: {key}");
    reject_unknown_keys(
        spec,
        &[
            "method",
            "url",
            "headers",
            "body",
            "expectedStatus",
            "timeout",
        ],
        &at("spec"),
    )?;
    let method = match opt_string(spec, "method", &at("spec.method"))? {
        None => "GET".to_owned(),
        Some(m) => {
            let upper = m.trim().to_ascii_uppercase();
            if !HTTP_METHODS.contains(&upper.as_str()) {
                return Err(DomainError::invalid(format!(
                    "{ctx}: spec.method '{}' is not supported; expected one of {}",
                    truncate_for_message(&m),
                    HTTP_METHODS.join(", ")
                )));
            }
            upper
        }
    };
    let url = opt_string(spec, "url", &at("spec.url"))?
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            DomainError::invalid(format!("{ctx}: spec.url is required and must not be blank"))
        })?;
    if url.chars().any(char::is_control) {
        return Err(DomainError::invalid(format!(
            "{ctx}: spec.url must not contain control characters"
        )));
    }
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
    else {
        return Err(DomainError::invalid(format!(
            "{ctx}: spec.url '{}' must start with http:// or https://",
            truncate_for_message(&url)
        )));
    };
    // Expressions may fill the path and query, never the host: a webhook sender must not be
    // able to point the call at another machine (SSRF).
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[..host_end].contains("<+") {
        return Err(DomainError::invalid(format!(
            "{ctx}: spec.url '{}' has an expression in its host; expressions may only appear in the path and query",
            truncate_for_message(&url)
        )));
    }
    let headers = opt_string_map(spec, "headers", &at("spec.headers"))?;
    for (name, value) in &headers {
        if !is_header_name(name) {
            return Err(DomainError::invalid(format!(
                "{ctx}: spec.headers key '{}' is not a valid HTTP header name",
                truncate_for_message(name)
            )));
        }
        if value.contains(['\r', '\n', '\0']) {
            return Err(DomainError::invalid(format!(
                "{ctx}: spec.headers.{name} must not contain line breaks or NUL characters"
            )));
        }
    }
    let body = match spec.get("body") {
        None | Some(Value::Null) => None,
        // A mapping or list is sent as compact JSON, which is what a YAML author means by it.
        Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v.to_string()),
        Some(v) => scalar_text(v),
    };
    let expected_status = match spec.get("expectedStatus") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_u64()
                    .filter(|n| (100..=599).contains(n))
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| {
                        DomainError::invalid(format!(
                            "{ctx}: spec.expectedStatus[{i}] must be an HTTP status code from 100 to 599, got {}",
                            truncate_for_message(&v.to_string())
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(DomainError::invalid(format!(
                "{ctx}: spec.expectedStatus must be a list of status codes like [200, 201], got {}",
                kind_of(v)
            )))
        }
    };
    Ok(StepSpec::Http {
        method,
        url,
        headers,
        body,
        expected_status,
        timeout: opt_timeout(spec, &at("spec.timeout"))?,
    })
}

/// Takes `{key: {...}}` out of a list item, naming Harness constructs we do not run.
fn list_item<'a>(
    item: &'a Value,
    key: &str,
    what: &str,
) -> Result<&'a Map<String, Value>, DomainError> {
    let map = as_map(item, what)?;
    match map.get(key) {
        Some(inner) => as_map(inner, &format!("{what}.{key}")),
        None if map.contains_key("parallel") => Err(DomainError::invalid(format!(
            "{what}: parallel {key}s are not supported; list them one after another"
        ))),
        None if map.contains_key("stepGroup") => Err(DomainError::invalid(format!(
            "{what}: step groups are not supported; list the steps one after another"
        ))),
        None => Err(DomainError::invalid(format!(
            "{what} must be a mapping with a '{key}' key, like - {key}: {{identifier: ...}}"
        ))),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An RFC 9110 token, which is what a header name must be.
pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// ---------------------------------------------------------------------------------------------
// Cross-checks: unique identifiers and references

fn check_unique_identifiers(stages: &[Stage]) -> Result<(), DomainError> {
    let mut stage_seen: HashMap<&str, usize> = HashMap::new();
    let mut step_seen: HashMap<&str, (usize, usize)> = HashMap::new();
    for (si, stage) in stages.iter().enumerate() {
        if let Some(first) = stage_seen.insert(stage.identifier.as_str(), si) {
            return Err(DomainError::invalid(format!(
                "stages[{si}]: duplicate stage identifier '{}' (also stages[{first}]); stage identifiers must be unique in the pipeline",
                stage.identifier
            )));
        }
        for (ji, step) in stage.steps.iter().enumerate() {
            if let Some((fs, fj)) = step_seen.insert(step.identifier.as_str(), (si, ji)) {
                return Err(DomainError::invalid(format!(
                    "stages[{si}].steps[{ji}]: duplicate step identifier '{}' (also stages[{fs}].steps[{fj}]); step identifiers must be unique in the pipeline",
                    step.identifier
                )));
            }
        }
    }
    Ok(())
}

/// A `<+...>` reference that names something in the pipeline.
enum Reference<'a> {
    /// `<+steps.STEP...>`: a step of the same stage.
    Step(&'a str),
    /// `<+execution.steps.STAGE...>`, optionally `.steps.STEP...`.
    Execution {
        stage: &'a str,
        step: Option<&'a str>,
    },
    /// `<+pipeline.variables.NAME>`.
    Variable(&'a str),
}

/// Finds the three reference forms the pipeline can check; anything else is the expression
/// module's business.
fn references(text: &str) -> Vec<(String, Reference<'_>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("<+") {
        let from = &rest[pos..];
        let inner = &from[2..];
        let reference = if let Some(r) = inner.strip_prefix("steps.") {
            Some(Reference::Step(identifier_prefix(r)))
        } else if let Some(r) = inner.strip_prefix("execution.steps.") {
            let stage = identifier_prefix(r);
            let step = r[stage.len()..]
                .strip_prefix(".steps.")
                .map(identifier_prefix);
            Some(Reference::Execution { stage, step })
        } else {
            inner
                .strip_prefix("pipeline.variables.")
                .map(|r| Reference::Variable(identifier_prefix(r)))
        };
        if let Some(reference) = reference {
            let end = from.find('>').map_or(from.len(), |i| i + 1);
            found.push((truncate_for_message(&from[..end]), reference));
        }
        rest = inner;
    }
    found
}

fn identifier_prefix(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Where a text with references sits: in a variable, or in step `step` of stage `stage`.
#[derive(Clone, Copy)]
enum Place<'a> {
    Variable(&'a str),
    Step { stage: usize, step: usize },
}

struct Layout<'a> {
    stages: HashMap<&'a str, usize>,
    steps: HashMap<&'a str, (usize, usize)>,
    stage_ids: Vec<&'a str>,
    variables: HashSet<&'a str>,
}

fn check_references(spec: &PipelineSpec) -> Result<(), DomainError> {
    let layout = Layout {
        stages: spec
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.identifier.as_str(), i))
            .collect(),
        steps: spec
            .stages
            .iter()
            .enumerate()
            .flat_map(|(si, s)| {
                s.steps
                    .iter()
                    .enumerate()
                    .map(move |(ji, step)| (step.identifier.as_str(), (si, ji)))
            })
            .collect(),
        stage_ids: spec.stages.iter().map(|s| s.identifier.as_str()).collect(),
        variables: spec.variables.iter().map(|v| v.name.as_str()).collect(),
    };
    for (i, variable) in spec.variables.iter().enumerate() {
        let ctx = format!("variables[{i}] (name '{}')", variable.name);
        let place = Place::Variable(&variable.name);
        if let VariableValue::Literal(Value::String(text)) = &variable.value {
            check_text(&layout, place, &format!("{ctx}: value"), text)?;
        }
        if let Some(Value::String(text)) = &variable.default {
            check_text(&layout, place, &format!("{ctx}: default"), text)?;
        }
    }
    for (si, stage) in spec.stages.iter().enumerate() {
        for (ji, step) in stage.steps.iter().enumerate() {
            let ctx = format!(
                "stages[{si}].steps[{ji}] (identifier '{}')",
                step.identifier
            );
            let place = Place::Step {
                stage: si,
                step: ji,
            };
            for (field, text) in expression_fields(&step.spec) {
                check_text(&layout, place, &format!("{ctx}: {field}"), text)?;
            }
        }
    }
    Ok(())
}

/// The step fields where expressions are allowed, with their paths.
fn expression_fields(spec: &StepSpec) -> Vec<(String, &str)> {
    match spec {
        StepSpec::Run { env, .. } => env
            .iter()
            .map(|(k, v)| (format!("spec.env.{k}"), v.as_str()))
            .collect(),
        StepSpec::Http {
            url, headers, body, ..
        } => std::iter::once(("spec.url".to_owned(), url.as_str()))
            .chain(
                headers
                    .iter()
                    .map(|(k, v)| (format!("spec.headers.{k}"), v.as_str())),
            )
            .chain(body.iter().map(|b| ("spec.body".to_owned(), b.as_str())))
            .collect(),
        StepSpec::Approval { .. } | StepSpec::Wait { .. } => Vec::new(),
    }
}

fn check_text(
    layout: &Layout<'_>,
    place: Place<'_>,
    what: &str,
    text: &str,
) -> Result<(), DomainError> {
    for (shown, reference) in references(text) {
        let fail = |problem: String| {
            Err(DomainError::invalid(format!(
                "{what}: reference '{shown}' {problem}"
            )))
        };
        let (here_stage, here_step) = match place {
            Place::Step { stage, step } => (stage, step),
            Place::Variable(name) => match reference {
                Reference::Variable("") => return fail("does not name a variable".to_owned()),
                Reference::Variable(v) if v == name => {
                    return fail("makes the variable refer to itself".to_owned())
                }
                Reference::Variable(v) if !layout.variables.contains(v) => {
                    return fail(format!("names undeclared variable '{v}'"))
                }
                Reference::Variable(_) => continue,
                Reference::Step(_) | Reference::Execution { .. } => {
                    return fail(
                        "is not allowed here: variables are resolved before any step runs"
                            .to_owned(),
                    )
                }
            },
        };
        match reference {
            Reference::Variable("") => return fail("does not name a variable".to_owned()),
            Reference::Variable(v) if !layout.variables.contains(v) => {
                return fail(format!("names undeclared variable '{v}'"))
            }
            Reference::Variable(_) => {}
            Reference::Step("") => return fail("does not name a step".to_owned()),
            Reference::Step(x) => match layout.steps.get(x) {
                None => return fail(format!("names unknown step '{x}'")),
                Some(&(s, _)) if s != here_stage => {
                    let stage = layout.stage_ids.get(s).copied().unwrap_or_default();
                    return fail(format!(
                        "names step '{x}' of stage '{stage}', not of this stage; use <+execution.steps.{stage}.steps.{x}.output.KEY> for other stages"
                    ));
                }
                Some(&(_, j)) if j == here_step => {
                    return fail(format!(
                        "names step '{x}' itself; a step can only use outputs of earlier steps"
                    ))
                }
                Some(&(_, j)) if j > here_step => {
                    return fail(format!(
                        "names step '{x}', which runs later; a step can only use outputs of earlier steps"
                    ))
                }
                Some(_) => {}
            },
            Reference::Execution { stage: "", .. } => {
                return fail("does not name a stage".to_owned())
            }
            Reference::Execution { stage, step } => {
                let Some(&s) = layout.stages.get(stage) else {
                    return fail(format!("names unknown stage '{stage}'"));
                };
                if s > here_stage {
                    return fail(format!(
                        "names stage '{stage}', which runs later; only earlier stages and this one can be referenced"
                    ));
                }
                match step {
                    None => {}
                    Some("") => return fail("does not name a step".to_owned()),
                    Some(x) => match layout.steps.get(x) {
                        Some(&(xs, _)) if xs != s => {
                            return fail(format!("names step '{x}', which is not in stage '{stage}'"))
                        }
                        None => return fail(format!("names unknown step '{x}' in stage '{stage}'")),
                        Some(&(_, j)) if s == here_stage && j >= here_step => {
                            return fail(format!(
                                "names step '{x}', which has not run yet at this point; a step can only use outputs of earlier steps"
                            ))
                        }
                        Some(_) => {}
                    },
                }
            }
        }
    }
    // Anything else that is not a reference the engine knows, written correctly, is refused
    // here too (with the column), not rendered as empty at run time.
    crate::expr::template::Template::parse(text)
        .map_err(|e| DomainError::invalid(format!("{what}: {e}")))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output in the Harness shape

#[derive(Serialize)]
struct PipelineDoc<'a> {
    pipeline: &'a PipelineSpec,
}

impl Serialize for PipelineSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PipelineOut {
            name: &self.name,
            identifier: &self.identifier,
            org_identifier: self.org_identifier.as_deref(),
            project_identifier: self.project_identifier.as_deref(),
            description: self.description.as_deref(),
            tags: &self.tags,
            variables: self.variables.iter().map(VariableOut::from).collect(),
            stages: self
                .stages
                .iter()
                .map(|stage| StageItem {
                    stage: StageOut {
                        name: &stage.name,
                        identifier: &stage.identifier,
                        steps: stage
                            .steps
                            .iter()
                            .map(|step| StepItem {
                                step: StepOut::from(step),
                            })
                            .collect(),
                    },
                })
                .collect(),
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PipelineOut<'a> {
    name: &'a str,
    identifier: &'a Identifier,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    tags: &'a BTreeMap<String, String>,
    variables: Vec<VariableOut<'a>>,
    stages: Vec<StageItem<'a>>,
}

#[derive(Serialize)]
struct VariableOut<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    var_type: &'static str,
    value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

impl<'a> From<&'a Variable> for VariableOut<'a> {
    fn from(v: &'a Variable) -> Self {
        Self {
            name: &v.name,
            var_type: v.var_type.as_str(),
            value: match &v.value {
                VariableValue::RuntimeInput => Value::String(RUNTIME_INPUT.to_owned()),
                VariableValue::Literal(value) => value.clone(),
            },
            default: v.default.as_ref(),
            description: v.description.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct StageItem<'a> {
    stage: StageOut<'a>,
}

#[derive(Serialize)]
struct StageOut<'a> {
    name: &'a str,
    identifier: &'a Identifier,
    steps: Vec<StepItem<'a>>,
}

#[derive(Serialize)]
struct StepItem<'a> {
    step: StepOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StepOut<'a> {
    identifier: &'a Identifier,
    name: &'a str,
    #[serde(rename = "type")]
    step_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    retries: u32,
    continue_on_failure: bool,
    spec: SpecOut<'a>,
}

impl<'a> From<&'a Step> for StepOut<'a> {
    fn from(step: &'a Step) -> Self {
        let spec = match &step.spec {
            StepSpec::Run {
                shell,
                command,
                env,
            } => SpecOut::Run {
                shell: shell.as_str(),
                command,
                env,
            },
            StepSpec::Http {
                method,
                url,
                headers,
                body,
                expected_status,
                timeout,
            } => SpecOut::Http {
                method,
                url,
                headers,
                body: body.as_deref(),
                expected_status,
                timeout: timeout.map(format_duration),
            },
            StepSpec::Approval { message } => SpecOut::Approval { message },
            StepSpec::Wait { duration } => SpecOut::Wait {
                duration: format_duration(*duration),
            },
        };
        Self {
            identifier: &step.identifier,
            name: &step.name,
            step_type: step.spec.type_name(),
            timeout: step.timeout.map(format_duration),
            retries: step.retries,
            continue_on_failure: step.continue_on_failure,
            spec,
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum SpecOut<'a> {
    Run {
        shell: &'static str,
        command: &'a str,
        env: &'a BTreeMap<String, String>,
    },
    Http {
        method: &'a str,
        url: &'a str,
        headers: &'a BTreeMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<&'a str>,
        #[serde(rename = "expectedStatus")]
        expected_status: &'a [u16],
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    Approval {
        message: &'a str,
    },
    Wait {
        duration: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Helpers for walking a parsed body; trigger.rs uses them too.

/// How a JSON value's kind reads in an error message.
pub(super) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A string, number or boolean as text; `None` for null, lists and mappings.
pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn as_map<'a>(
    value: &'a Value,
    what: &str,
) -> Result<&'a Map<String, Value>, DomainError> {
    value.as_object().ok_or_else(|| {
        DomainError::invalid(format!("{what} must be a mapping, got {}", kind_of(value)))
    })
}

/// A list, or an empty one when the key is absent or null.
pub(super) fn opt_list<'a>(
    value: Option<&'a Value>,
    what: &str,
) -> Result<&'a [Value], DomainError> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(DomainError::invalid(format!(
            "{what} must be a list, got {}",
            kind_of(other)
        ))),
    }
}

/// Fails on the first key of `map` that is not in `allowed`, suggesting the allowed key it is
/// most likely a typo of: an ignored typo (`payloadConditons`) would silently drop what the
/// author meant, so unknown keys fail closed.
pub(super) fn reject_unknown_keys(
    map: &Map<String, Value>,
    allowed: &[&str],
    what: &str,
) -> Result<(), DomainError> {
    reject_keys(map, allowed, &[], what)
}

/// [`reject_unknown_keys`], with `refused`: keys other tools (Harness) accept that triggerd
/// does not support, each refused with its reason instead of being ignored.
pub(super) fn reject_keys(
    map: &Map<String, Value>,
    allowed: &[&str],
    refused: &[(&str, &str)],
    what: &str,
) -> Result<(), DomainError> {
    let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) else {
        return Ok(());
    };
    if let Some((_, why)) = refused.iter().find(|(name, _)| name == key) {
        return Err(DomainError::invalid(format!(
            "{what}: {key} is not supported: {why}"
        )));
    }
    let hint = allowed
        .iter()
        .map(|candidate| (edit_distance(key, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min()
        .map(|(_, candidate)| format!("; did you mean '{candidate}'?"))
        .unwrap_or_default();
    Err(DomainError::invalid(format!(
        "{what}: unknown key '{}'{hint} (expected one of {})",
        truncate_for_message(key),
        allowed.join(", ")
    )))
}

/// The Levenshtein distance between two keys (ASCII case-insensitive), for suggestions; long
/// keys are not compared.
fn edit_distance(a: &str, b: &str) -> usize {
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// A string field; absent or null is `None`, any other kind is an error.
pub(super) fn opt_string(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<String>, DomainError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(DomainError::invalid(format!(
            "{what} must be a string, got {}",
            kind_of(other)
        ))),
    }
}

/// A field kept as text whatever scalar it was written as (YAML reads `123` as a number).
pub(super) fn opt_scalar(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<String>, DomainError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => scalar_text(v).map(Some).ok_or_else(|| {
            DomainError::invalid(format!("{what} must be a string, got {}", kind_of(v)))
        }),
    }
}

pub(super) fn required_string(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<String, DomainError> {
    opt_scalar(map, key, what)?.ok_or_else(|| DomainError::invalid(format!("{what} is required")))
}

/// The `identifier` field of `map`, parsed; `what` is its path.
pub(super) fn required_identifier(
    map: &Map<String, Value>,
    what: &str,
) -> Result<Identifier, DomainError> {
    Identifier::parse(&required_string(map, "identifier", what)?, what)
}

/// A display name: not blank, at most [`MAX_NAME_CHARS`] characters.
pub(super) fn opt_name(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<String>, DomainError> {
    let Some(name) = opt_scalar(map, key, what)? else {
        return Ok(None);
    };
    if name.trim().is_empty() {
        return Err(DomainError::invalid(format!("{what} must not be blank")));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(DomainError::invalid(format!(
            "{what} is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"
        )));
    }
    Ok(Some(name))
}

pub(super) fn required_name(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<String, DomainError> {
    opt_name(map, key, what)?.ok_or_else(|| DomainError::invalid(format!("{what} is required")))
}

pub(super) fn opt_bool(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<bool>, DomainError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(DomainError::invalid(format!(
            "{what} must be true or false, got {}",
            kind_of(other)
        ))),
    }
}

/// A mapping of scalars kept as text; absent or null is empty, a null value is `""`.
pub(super) fn opt_string_map(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<BTreeMap<String, String>, DomainError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(k, v)| match v {
                Value::Null => Ok((k.clone(), String::new())),
                v => scalar_text(v).map(|t| (k.clone(), t)).ok_or_else(|| {
                    DomainError::invalid(format!(
                        "{what}.{} must be a string, got {}",
                        truncate_for_message(k),
                        kind_of(v)
                    ))
                }),
            })
            .collect(),
        Some(other) => Err(DomainError::invalid(format!(
            "{what} must be a mapping, got {}",
            kind_of(other)
        ))),
    }
}

fn opt_duration(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<Duration>, DomainError> {
    let Some(text) = opt_scalar(map, key, what)? else {
        return Ok(None);
    };
    parse_duration(&text)
        .map(Some)
        .map_err(|DomainError::Invalid(e)| DomainError::invalid(format!("{what}: {e}")))
}

/// A `timeout` field: a duration greater than zero (a zero timeout would fail every run).
fn opt_timeout(map: &Map<String, Value>, what: &str) -> Result<Option<Duration>, DomainError> {
    match opt_duration(map, "timeout", what)? {
        Some(Duration::ZERO) => Err(DomainError::invalid(format!(
            "{what} must be greater than 0s"
        ))),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = r#"
pipeline:
  name: Deploy API
  identifier: deploy_api
  variables:
    - name: image_tag
      type: String          # String | Number
      value: <+input>       # required runtime input; or a literal/expression; `default:` allowed
  stages:
    - stage:
        name: Build
        identifier: build
        steps:
          - step:
              identifier: compile
              type: Run
              timeout: 10m
              retries: 0
              continueOnFailure: false
              spec:
                shell: sh
                command: make build TAG="$IMAGE_TAG"
                env: {IMAGE_TAG: <+pipeline.variables.image_tag>}
          - step: {identifier: notify, type: Http,
                   spec: {method: POST, url: "https://ci.example.com/hook", headers: {}, body: "...",
                          expectedStatus: [200, 201], timeout: 30s}}
          - step: {identifier: approve, type: Approval, timeout: 1h, spec: {message: "Ship it?"}}
          - step: {identifier: pause_a_bit, type: Wait, spec: {duration: 30s}}
"#;

    fn yaml(text: &str) -> Result<PipelineSpec, DomainError> {
        parse_pipeline(text, BodyFormat::Yaml)
    }

    fn error(text: &str) -> String {
        match yaml(text) {
            Ok(spec) => panic!("expected an error, got {spec:?}"),
            Err(DomainError::Invalid(message)) => message,
        }
    }

    /// A pipeline with one stage `build` whose steps are the given YAML list items.
    fn with_steps(steps: &str) -> String {
        format!(
            "pipeline:\n  name: P\n  identifier: p\n  variables:\n    - {{name: tag, value: v1}}\n  stages:\n    - stage:\n        identifier: build\n        steps:\n{steps}"
        )
    }

    fn run_step(identifier: &str, extra_spec: &str) -> String {
        format!(
            "          - step: {{identifier: {identifier}, type: Run, spec: {{command: make{extra_spec}}}}}\n"
        )
    }

    #[test]
    fn the_design_example_parses_into_typed_steps() {
        let spec = yaml(DESIGN_EXAMPLE).unwrap();
        assert_eq!(spec.name, "Deploy API");
        assert_eq!(spec.identifier.as_str(), "deploy_api");
        assert_eq!(spec.variables[0].value, VariableValue::RuntimeInput);
        assert_eq!(spec.variables[0].var_type, VariableType::String);
        let steps = &spec.stages[0].steps;
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].timeout, Some(Duration::from_secs(600)));
        assert_eq!(steps[0].name, "compile");
        assert_eq!(
            steps[0].spec,
            StepSpec::Run {
                shell: Shell::Sh,
                command: "make build TAG=\"$IMAGE_TAG\"".to_owned(),
                env: BTreeMap::from([(
                    "IMAGE_TAG".to_owned(),
                    "<+pipeline.variables.image_tag>".to_owned()
                )]),
            }
        );
        assert_eq!(
            steps[1].spec,
            StepSpec::Http {
                method: "POST".to_owned(),
                url: "https://ci.example.com/hook".to_owned(),
                headers: BTreeMap::new(),
                body: Some("...".to_owned()),
                expected_status: vec![200, 201],
                timeout: Some(Duration::from_secs(30)),
            }
        );
        assert_eq!(steps[2].timeout, Some(Duration::from_secs(3600)));
        assert_eq!(
            steps[2].spec,
            StepSpec::Approval {
                message: "Ship it?".to_owned()
            }
        );
        assert_eq!(
            steps[3].spec,
            StepSpec::Wait {
                duration: Duration::from_secs(30)
            }
        );
        assert_eq!(spec.org_identifier, None);
    }

    #[test]
    fn json_bodies_are_accepted_like_yaml() {
        let from_yaml = yaml(DESIGN_EXAMPLE).unwrap();
        let json = serde_json::to_string(&from_yaml.to_json()).unwrap();
        assert_eq!(parse_pipeline(&json, BodyFormat::Json).unwrap(), from_yaml);
    }

    #[test]
    fn to_json_emits_the_harness_shape_and_round_trips() {
        let spec = yaml(DESIGN_EXAMPLE).unwrap();
        let json = spec.to_json();
        let step = &json["pipeline"]["stages"][0]["stage"]["steps"][0]["step"];
        assert_eq!(step["type"], "Run");
        assert_eq!(step["timeout"], "10m");
        assert_eq!(step["continueOnFailure"], false);
        assert_eq!(step["spec"]["shell"], "sh");
        let http = &json["pipeline"]["stages"][0]["stage"]["steps"][1]["step"]["spec"];
        assert_eq!(http["expectedStatus"], serde_json::json!([200, 201]));
        assert_eq!(http["timeout"], "30s");
        assert_eq!(json["pipeline"]["variables"][0]["value"], "<+input>");
        assert_eq!(json["pipeline"]["variables"][0]["type"], "String");
        assert!(json["pipeline"].get("orgIdentifier").is_none());
        assert_eq!(
            parse_pipeline(&json.to_string(), BodyFormat::Json).unwrap(),
            spec
        );
    }

    #[test]
    fn to_yaml_round_trips() {
        let spec = yaml(DESIGN_EXAMPLE).unwrap();
        let text = spec.to_yaml();
        assert!(text.starts_with("pipeline:"), "{text}");
        assert_eq!(yaml(&text).unwrap(), spec);
    }

    #[test]
    fn serialize_writes_the_body_under_the_pipeline_key() {
        let spec = yaml(DESIGN_EXAMPLE).unwrap();
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            spec.to_json()["pipeline"]
        );
    }

    #[test]
    fn harness_nesting_and_extra_keys_are_accepted() {
        let spec = yaml(
            r#"
pipeline:
  name: From Harness
  identifier: from_harness
  projectIdentifier: CD_Docs
  orgIdentifier: default
  description: exported
  tags: {team: api, flag: }
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  identifier: hello
                  name: Say hello
                  type: Run
                  description: greets
                  spec: {shell: Bash, command: echo hi}
"#,
        )
        .unwrap();
        assert_eq!(spec.org_identifier.as_deref(), Some("default"));
        assert_eq!(spec.project_identifier.as_deref(), Some("CD_Docs"));
        assert_eq!(spec.description.as_deref(), Some("exported"));
        assert_eq!(spec.tags["team"], "api");
        assert_eq!(spec.tags["flag"], "");
        let step = &spec.stages[0].steps[0];
        assert_eq!(step.name, "Say hello");
        assert!(matches!(
            step.spec,
            StepSpec::Run {
                shell: Shell::Bash,
                ..
            }
        ));
        let json = spec.to_json();
        assert_eq!(json["pipeline"]["orgIdentifier"], "default");
        assert_eq!(
            parse_pipeline(&json.to_string(), BodyFormat::Json).unwrap(),
            spec
        );
    }

    #[test]
    fn durations_in_all_units_parse() {
        let cases = [
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("0s", 0),
            ("2d", 172_800_000),
            ("1w", 604_800_000),
            ("1m30s500ms", 90_500),
            (" 5s ", 5_000),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in [
            "",
            "  ",
            "10",
            "-1s",
            "1x",
            "1.5h",
            "s",
            "1h 30m",
            "30m1h",
            "1m1m",
            "99999999999999999999s",
            "18446744073709551615d",
            "٣s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let message = parse_duration("10").unwrap_err().to_string();
        assert!(
            message.contains("invalid duration '10': missing unit"),
            "{message}"
        );
    }

    #[test]
    fn formatted_durations_parse_back_to_the_same_value() {
        for ms in [
            0u64,
            1,
            999,
            1_000,
            61_000,
            5_400_000,
            90_061_001,
            604_800_000,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{ms}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn a_body_without_a_pipeline_key_is_rejected() {
        for text in ["", "[]", "3", "trigger: {}", "pipeline: 3"] {
            assert!(yaml(text).is_err(), "{text:?}");
        }
        assert!(error("stages: []").contains("top-level 'pipeline' key"));
        assert!(error("pipeline: [1]").contains("pipeline must be a mapping, got a list"));
    }

    #[test]
    fn syntax_errors_are_reported_as_invalid() {
        assert!(error("pipeline: {name: [").starts_with("Invalid YAML body"));
        let json = parse_pipeline("{", BodyFormat::Json)
            .unwrap_err()
            .to_string();
        assert!(json.starts_with("Invalid JSON body"), "{json}");
    }

    #[test]
    fn the_name_is_required_not_blank_and_bounded() {
        let body = |name: &str| {
            format!("pipeline: {{{name} identifier: p, stages: [{{stage: {{identifier: s, steps: [{{step: {{identifier: w, type: Wait, spec: {{duration: 1s}}}}}}]}}}}]}}")
        };
        assert!(yaml(&body("name: ok,")).is_ok());
        assert_eq!(error(&body("")), "pipeline.name is required");
        assert_eq!(
            error(&body("name: ' ',")),
            "pipeline.name must not be blank"
        );
        let long = format!("name: {},", "x".repeat(257));
        assert!(error(&body(&long)).contains("at most 256"));
    }

    #[test]
    fn a_bad_pipeline_identifier_is_rejected() {
        let message = error("pipeline: {name: P, identifier: 1bad, stages: []}");
        assert!(
            message.starts_with("pipeline.identifier '1bad' is not a valid identifier"),
            "{message}"
        );
        assert_eq!(
            error("pipeline: {name: P, stages: []}"),
            "pipeline.identifier is required"
        );
    }

    #[test]
    fn a_pipeline_needs_a_stage_and_each_stage_a_step() {
        assert_eq!(
            error("pipeline: {name: P, identifier: p}"),
            "pipeline.stages must contain at least one stage"
        );
        assert_eq!(
            error("pipeline: {name: P, identifier: p, stages: []}"),
            "pipeline.stages must contain at least one stage"
        );
        let message =
            error("pipeline: {name: P, identifier: p, stages: [{stage: {identifier: s}}]}");
        assert!(
            message.starts_with("stages[0] (identifier 's'): has no steps"),
            "{message}"
        );
        let message = error(
            "pipeline: {name: P, identifier: p, stages: [{stage: {identifier: s, steps: []}}]}",
        );
        assert!(
            message.starts_with("stages[0] (identifier 's'): has no steps"),
            "{message}"
        );
    }

    #[test]
    fn steps_in_both_places_are_rejected() {
        let message = error(
            "pipeline: {name: P, identifier: p, stages: [{stage: {identifier: s, steps: [], spec: {execution: {steps: []}}}}]}",
        );
        assert!(message.contains("not both"), "{message}");
    }

    #[test]
    fn parallel_stages_and_step_groups_are_named_as_unsupported() {
        let message = error("pipeline: {name: P, identifier: p, stages: [{parallel: []}]}");
        assert_eq!(
            message,
            "stages[0]: parallel stages are not supported; list them one after another"
        );
        let message = error(&with_steps("          - stepGroup: {identifier: g}\n"));
        assert!(
            message.starts_with("stages[0].steps[0]: step groups"),
            "{message}"
        );
        let message = error(&with_steps("          - identifier: loose\n"));
        assert!(
            message.contains("must be a mapping with a 'step' key"),
            "{message}"
        );
    }

    #[test]
    fn duplicate_stage_identifiers_are_rejected() {
        let stage = "{stage: {identifier: s, steps: [{step: {identifier: STEP, type: Approval}}]}}";
        let text = format!(
            "pipeline: {{name: P, identifier: p, stages: [{}, {}]}}",
            stage.replace("STEP", "a"),
            stage.replace("STEP", "b")
        );
        assert_eq!(
            error(&text),
            "stages[1]: duplicate stage identifier 's' (also stages[0]); stage identifiers must be unique in the pipeline"
        );
    }

    #[test]
    fn duplicate_step_identifiers_across_stages_are_rejected() {
        let text = "pipeline: {name: P, identifier: p, stages: [
            {stage: {identifier: one, steps: [{step: {identifier: a, type: Approval}}]}},
            {stage: {identifier: two, steps: [{step: {identifier: b, type: Approval}}, {step: {identifier: a, type: Approval}}]}}]}";
        assert_eq!(
            error(text),
            "stages[1].steps[1]: duplicate step identifier 'a' (also stages[0].steps[0]); step identifiers must be unique in the pipeline"
        );
    }

    #[test]
    fn an_unknown_step_type_lists_the_valid_ones() {
        let text = "pipeline: {name: P, identifier: p, stages: [
            {stage: {identifier: one, steps: [{step: {identifier: a, type: Approval}}]}},
            {stage: {identifier: two, steps: [{step: {identifier: compile, type: Shell, spec: {}}}]}}]}";
        assert_eq!(
            error(text),
            "stages[1].steps[0] (identifier 'compile'): unknown step type 'Shell'; expected one of Run, Http, Approval, Wait"
        );
        let message = error(&with_steps("          - step: {identifier: a}\n"));
        assert_eq!(
            message,
            "stages[0].steps[0] (identifier 'a'): type is required; expected one of Run, Http, Approval, Wait"
        );
    }

    #[test]
    fn a_step_needs_a_valid_identifier() {
        let message = error(&with_steps("          - step: {type: Approval}\n"));
        assert_eq!(message, "stages[0].steps[0].identifier is required");
        let message = error(&with_steps(
            "          - step: {identifier: a-b, type: Approval}\n",
        ));
        assert!(
            message.starts_with("stages[0].steps[0].identifier 'a-b' is not a valid identifier"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_in_a_step_or_its_spec_are_rejected() {
        let message = error(&with_steps(&run_step("a", ", comand: x")));
        assert_eq!(
            message,
            "stages[0].steps[0] (identifier 'a'): spec: unknown key 'comand'; did you mean 'command'? (expected one of shell, command, env)"
        );
        let message = error(&with_steps(
            "          - step: {identifier: a, type: Approval, continueOnFaliure: true}\n",
        ));
        assert!(
            message.starts_with(
                "stages[0].steps[0] (identifier 'a'): unknown key 'continueOnFaliure'"
            ),
            "{message}"
        );
        let message = error(&with_steps(
            "          - step: {identifier: a, type: Wait, spec: {duration: 1s, until: x}}\n",
        ));
        assert!(message.contains("spec: unknown key 'until'"), "{message}");
        let message = error(&with_steps(
            "          - step: {identifier: a, type: Approval, spec: {mesage: x}}\n",
        ));
        assert!(message.contains("spec: unknown key 'mesage'"), "{message}");
    }

    #[test]
    fn run_steps_need_a_command() {
        let message = error(&with_steps(
            "          - step: {identifier: a, type: Run, spec: {shell: sh}}\n",
        ));
        assert_eq!(
            message,
            "stages[0].steps[0] (identifier 'a'): spec.command is required and must not be blank"
        );
        let message = error(&with_steps(
            "          - step: {identifier: a, type: Run, spec: {command: '  '}}\n",
        ));
        assert!(message.ends_with("spec.command is required and must not be blank"));
        let message = error(&with_steps(
            "          - step: {identifier: a, type: Run}\n",
        ));
        assert_eq!(
            message,
            "stages[0].steps[0] (identifier 'a'): spec is required for a Run step"
        );
    }

    #[test]
    fn malformed_or_unknown_references_in_step_fields_are_rejected_with_the_column() {
        let yaml = |env: &str| {
            format!(
                "pipeline:\n  name: p\n  identifier: p\n  stages:\n    - stage:\n        identifier: s\n        steps:\n          - step: {{identifier: a, type: Run, spec: {{command: 'true', env: {{X: '{env}'}}}}}}\n"
            )
        };
        let error = |env: &str| {
            parse_pipeline(&yaml(env), BodyFormat::Yaml)
                .unwrap_err()
                .to_string()
        };
        assert!(
            error("v<+trigger.paylod.x>").contains("unknown reference '<+trigger.paylod.x>'"),
            "{}",
            error("v<+trigger.paylod.x>")
        );
        assert!(error("<+trigger.payload.a").contains("unterminated reference"));
        assert!(error("<+trigger.payload.a.b(1)>").ends_with("at column 22"));
        assert!(parse_pipeline(
            &yaml("<+trigger.payload.a>-<+pipeline.sequenceId>"),
            BodyFormat::Yaml
        )
        .is_ok());
    }

    #[test]
    fn expressions_in_a_run_command_are_rejected() {
        let message = error(&with_steps(
            "          - step: {identifier: a, type: Run, spec: {command: 'echo <+trigger.payload.x>'}}\n",
        ));
        assert_eq!(
            message,
            "stages[0].steps[0] (identifier 'a'): spec.command must not contain expressions (<+...>); pass values through env instead"
        );
    }

    #[test]
    fn oversized_commands_are_rejected() {
        let big = "x".repeat(MAX_COMMAND_BYTES + 1);
        let message = error(&with_steps(&format!(
            "          - step: {{identifier: a, type: Run, spec: {{command: {big}}}}}\n"
        )));
        assert!(message.contains("at most 65536 are allowed"), "{message}");
        let fits = "x".repeat(MAX_COMMAND_BYTES);
        assert!(yaml(&with_steps(&format!(
            "          - step: {{identifier: a, type: Run, spec: {{command: {fits}}}}}\n"
        )))
        .is_ok());
    }

    #[test]
    fn run_shell_env_names_and_values_are_checked() {
        let message = error(&with_steps(&run_step("a", ", shell: zsh")));
        assert!(
            message.ends_with("spec.shell 'zsh' is not supported; expected sh or bash"),
            "{message}"
        );
        let message = error(&with_steps(&run_step("a", ", env: {1BAD: x}")));
        assert!(
            message.contains("spec.env key '1BAD' is not a valid variable name"),
            "{message}"
        );
        let message = error(&with_steps(&run_step("a", ", env: {A-B: x}")));
        assert!(message.contains("spec.env key 'A-B'"), "{message}");
        let message = error(&with_steps(&run_step("a", ", env: {TRIGGERD_OUTPUT: x}")));
        assert!(message.contains("is reserved"), "{message}");
        let message = error(&with_steps(&run_step("a", ", env: {A: [1]}")));
        assert!(
            message.contains("spec.env.A must be a string, got a list"),
            "{message}"
        );
        let spec = yaml(&with_steps(&run_step(
            "a",
            ", env: {PORT: 8080, DEBUG: true, EMPTY: }",
        )))
        .unwrap();
        let StepSpec::Run { env, .. } = &spec.stages[0].steps[0].spec else {
            panic!("not a Run step")
        };
        assert_eq!(env["PORT"], "8080");
        assert_eq!(env["DEBUG"], "true");
        assert_eq!(env["EMPTY"], "");
    }

    #[test]
    fn http_steps_need_a_url() {
        let message = error(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {method: GET}}\n",
        ));
        assert_eq!(
            message,
            "stages[0].steps[0] (identifier 'h'): spec.url is required and must not be blank"
        );
        let message = error(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {url: 'ftp://x'}}\n",
        ));
        assert!(
            message.ends_with("spec.url 'ftp://x' must start with http:// or https://"),
            "{message}"
        );
    }

    #[test]
    fn http_methods_are_upper_cased_and_checked() {
        let spec = yaml(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {method: patch, url: 'https://x'}}\n",
        ))
        .unwrap();
        assert!(
            matches!(&spec.stages[0].steps[0].spec, StepSpec::Http { method, .. } if method == "PATCH")
        );
        let spec = yaml(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {url: 'https://x'}}\n",
        ))
        .unwrap();
        assert!(
            matches!(&spec.stages[0].steps[0].spec, StepSpec::Http { method, expected_status, .. } if method == "GET" && expected_status.is_empty())
        );
        let message = error(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {method: TRACE, url: 'https://x'}}\n",
        ));
        assert!(message.ends_with("spec.method 'TRACE' is not supported; expected one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"), "{message}");
    }

    #[test]
    fn http_expected_statuses_must_be_real_status_codes() {
        for bad in ["[99]", "[600]", "[200, '2xx']", "[-1]", "[200.5]"] {
            let message = error(&with_steps(&format!(
                "          - step: {{identifier: h, type: Http, spec: {{url: 'https://x', expectedStatus: {bad}}}}}\n"
            )));
            assert!(message.contains("spec.expectedStatus["), "{bad}: {message}");
            assert!(message.contains("from 100 to 599"), "{bad}: {message}");
        }
        let message = error(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {url: 'https://x', expectedStatus: 200}}\n",
        ));
        assert!(
            message.contains("must be a list of status codes"),
            "{message}"
        );
    }

    #[test]
    fn http_headers_are_checked_and_mapping_bodies_become_json() {
        let message = error(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {url: 'https://x', headers: {'Bad Name': x}}}\n",
        ));
        assert!(
            message.contains("spec.headers key 'Bad Name' is not a valid HTTP header name"),
            "{message}"
        );
        let message = error(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {url: 'https://x', headers: {X-A: \"a\\r\\nX-B: b\"}}}\n",
        ));
        assert!(
            message.contains("must not contain line breaks"),
            "{message}"
        );
        let spec = yaml(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {url: 'https://x', body: {a: 1}}}\n",
        ))
        .unwrap();
        assert!(
            matches!(&spec.stages[0].steps[0].spec, StepSpec::Http { body: Some(b), .. } if b == r#"{"a":1}"#)
        );
    }

    #[test]
    fn wait_steps_need_a_duration() {
        let message = error(&with_steps(
            "          - step: {identifier: w, type: Wait, spec: {}}\n",
        ));
        assert_eq!(
            message,
            "stages[0].steps[0] (identifier 'w'): spec.duration is required"
        );
        let message = error(&with_steps(
            "          - step: {identifier: w, type: Wait}\n",
        ));
        assert!(
            message.ends_with("spec is required for a Wait step"),
            "{message}"
        );
    }

    #[test]
    fn bad_durations_name_their_field() {
        let message = error(&with_steps(
            "          - step: {identifier: w, type: Approval, timeout: 10}\n",
        ));
        assert!(
            message
                .starts_with("stages[0].steps[0] (identifier 'w'): timeout: invalid duration '10'"),
            "{message}"
        );
        let message = error(&with_steps(
            "          - step: {identifier: w, type: Wait, spec: {duration: 1x}}\n",
        ));
        assert!(
            message.contains("spec.duration: invalid duration '1x'"),
            "{message}"
        );
        let message = error(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {url: 'https://x', timeout: -5s}}\n",
        ));
        assert!(
            message.contains("spec.timeout: invalid duration '-5s'"),
            "{message}"
        );
    }

    #[test]
    fn zero_timeouts_are_rejected_but_zero_waits_are_not() {
        let message = error(&with_steps(
            "          - step: {identifier: w, type: Approval, timeout: 0s}\n",
        ));
        assert_eq!(
            message,
            "stages[0].steps[0] (identifier 'w'): timeout must be greater than 0s"
        );
        let message = error(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {url: 'https://x', timeout: 0ms}}\n",
        ));
        assert!(
            message.ends_with("spec.timeout must be greater than 0s"),
            "{message}"
        );
        assert!(yaml(&with_steps(
            "          - step: {identifier: w, type: Wait, spec: {duration: 0s}}\n"
        ))
        .is_ok());
    }

    #[test]
    fn retries_must_be_between_zero_and_ten() {
        for ok in ["0", "10"] {
            assert!(yaml(&with_steps(&format!(
                "          - step: {{identifier: a, type: Approval, retries: {ok}}}\n"
            )))
            .is_ok());
        }
        for bad in ["11", "-1", "1.5", "'2'", "99999999999"] {
            let message = error(&with_steps(&format!(
                "          - step: {{identifier: a, type: Approval, retries: {bad}}}\n"
            )));
            assert!(
                message.contains("retries must be a whole number from 0 to 10"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn continue_on_failure_must_be_a_boolean() {
        let spec = yaml(&with_steps(
            "          - step: {identifier: a, type: Approval, continueOnFailure: true}\n",
        ))
        .unwrap();
        assert!(spec.stages[0].steps[0].continue_on_failure);
        let message = error(&with_steps(
            "          - step: {identifier: a, type: Approval, continueOnFailure: 'yes'}\n",
        ));
        assert!(
            message.ends_with("continueOnFailure must be true or false, got a string"),
            "{message}"
        );
    }

    #[test]
    fn stage_and_step_limits_are_enforced() {
        let stage = |i: usize| {
            format!("{{stage: {{identifier: s{i}, steps: [{{step: {{identifier: a{i}, type: Approval}}}}]}}}}")
        };
        let stages: Vec<String> = (0..=MAX_STAGES).map(stage).collect();
        let text = format!(
            "pipeline: {{name: P, identifier: p, stages: [{}]}}",
            stages.join(",")
        );
        assert_eq!(
            error(&text),
            "pipeline.stages has 101 stages; at most 100 are allowed"
        );
        let steps: String = (0..=MAX_STEPS_PER_STAGE)
            .map(|i| format!("          - step: {{identifier: a{i}, type: Approval}}\n"))
            .collect();
        assert!(error(&with_steps(&steps)).ends_with("has 101 steps; at most 100 are allowed"));
        let steps: String = (0..MAX_STEPS_PER_STAGE)
            .map(|i| format!("          - step: {{identifier: a{i}, type: Approval}}\n"))
            .collect();
        assert!(yaml(&with_steps(&steps)).is_ok());
    }

    fn with_variables(variables: &str) -> String {
        format!("pipeline: {{name: P, identifier: p, variables: [{variables}], stages: [{{stage: {{identifier: s, steps: [{{step: {{identifier: a, type: Approval}}}}]}}}}]}}")
    }

    #[test]
    fn runtime_inputs_are_listed_in_order_with_defaults() {
        let spec = yaml(&with_variables(
            "{name: a, value: <+input>}, {name: b, value: fixed}, {name: c, type: Number, value: <+input>, default: 3}",
        ))
        .unwrap();
        let names: Vec<&str> = spec.runtime_inputs().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(spec.variables[2].default, Some(serde_json::json!(3)));
        assert_eq!(
            spec.variables[1].value,
            VariableValue::Literal(Value::String("fixed".to_owned()))
        );
        assert_eq!(yaml(&spec.to_yaml()).unwrap(), spec);
    }

    #[test]
    fn variable_literals_are_normalised_to_their_type() {
        let spec = yaml(&with_variables(
            "{name: s, value: 1.10}, {name: n, type: Number, value: '42'}, {name: e, type: Number, value: '<+trigger.payload.n>'}",
        ))
        .unwrap();
        assert_eq!(
            spec.variables[0].value,
            VariableValue::Literal(serde_json::json!("1.1"))
        );
        assert_eq!(
            spec.variables[1].value,
            VariableValue::Literal(serde_json::json!(42))
        );
        assert_eq!(
            spec.variables[2].value,
            VariableValue::Literal(serde_json::json!("<+trigger.payload.n>"))
        );
        assert_eq!(
            parse_pipeline(&spec.to_json().to_string(), BodyFormat::Json).unwrap(),
            spec
        );
    }

    #[test]
    fn bad_variables_are_rejected() {
        let cases = [
            (
                "{name: n, type: Number, value: abc}",
                "variables[0] (name 'n'): value 'abc' is not a number",
            ),
            (
                "{name: n, type: Number, value: true}",
                "value must be a number or an expression",
            ),
            (
                "{name: n, type: Number, value: <+input>, default: x}",
                "default 'x' is not a number",
            ),
            (
                "{name: n, type: Secret, value: x}",
                "type 'Secret' is not supported; expected String or Number",
            ),
            ("{name: n}", "value is required"),
            (
                "{name: n, value: [1]}",
                "value must be a string, number or boolean, got a list",
            ),
            (
                "{name: n, value: x, default: y}",
                "default is only allowed when value is <+input>",
            ),
            (
                "{name: n, value: '<+input>.default(x)'}",
                "write value: <+input>",
            ),
            (
                "{name: 9n, value: x}",
                "variables[0].name '9n' is not a valid identifier",
            ),
            ("{value: x}", "variables[0].name is required"),
            (
                "{name: n, value: x}, {name: n, value: y}",
                "variables[1]: duplicate variable name 'n' (also variables[0])",
            ),
            (
                "{name: n, value: '<+pipeline.variables.n>'}",
                "refer to itself",
            ),
            (
                "{name: n, value: '<+pipeline.variables.zz>'}",
                "names undeclared variable 'zz'",
            ),
            (
                "{name: n, value: '<+steps.a.output.x>'}",
                "variables are resolved before any step runs",
            ),
        ];
        for (variables, expected) in cases {
            let message = error(&with_variables(variables));
            assert!(message.contains(expected), "{variables}: {message}");
        }
        let message = error("pipeline: {name: P, identifier: p, variables: {a: 1}, stages: []}");
        assert_eq!(message, "pipeline.variables must be a list, got a mapping");
    }

    /// Two stages: `build` (steps a, b) and `ship` (steps c, d); `FIELD` in step `b`'s env.
    fn referencing(env_value: &str, in_ship: bool) -> String {
        let (b_env, d_env) = if in_ship {
            (String::new(), format!(", env: {{X: '{env_value}'}}"))
        } else {
            (format!(", env: {{X: '{env_value}'}}"), String::new())
        };
        format!(
            "pipeline: {{name: P, identifier: p, variables: [{{name: tag, value: v}}], stages: [
               {{stage: {{identifier: build, steps: [{{step: {{identifier: a, type: Run, spec: {{command: x}}}}}},
                                                   {{step: {{identifier: b, type: Run, spec: {{command: x{b_env}}}}}}}]}}}},
               {{stage: {{identifier: ship, steps: [{{step: {{identifier: c, type: Run, spec: {{command: x}}}}}},
                                                  {{step: {{identifier: d, type: Run, spec: {{command: x{d_env}}}}}}}]}}}}]}}"
        )
    }

    #[test]
    fn references_to_earlier_steps_and_declared_variables_are_accepted() {
        for (value, in_ship) in [
            ("<+steps.a.output.K>", false),
            ("<+pipeline.variables.tag>", false),
            ("pre <+execution.steps.build.steps.a.output.K> post", false),
            ("<+execution.steps.build.steps.b.output.K>", true),
            ("<+execution.steps.ship.steps.c.output.K>", true),
            (
                "<+steps.c.output.K><+execution.steps.build.steps.a.output.K>",
                true,
            ),
            ("<+trigger.payload.steps.zz>", false),
        ] {
            assert!(yaml(&referencing(value, in_ship)).is_ok(), "{value}");
        }
    }

    #[test]
    fn references_to_unknown_or_later_steps_are_rejected() {
        let cases = [
            ("<+steps.zz.output.K>", false, "stages[0].steps[1] (identifier 'b'): spec.env.X: reference '<+steps.zz.output.K>' names unknown step 'zz'"),
            ("<+steps.b.output.K>", false, "names step 'b' itself"),
            ("<+steps.c.output.K>", false, "names step 'c' of stage 'ship', not of this stage; use <+execution.steps.ship.steps.c.output.KEY>"),
            ("<+steps.a.output.K>", true, "names step 'a' of stage 'build', not of this stage"),
            ("<+steps.>", false, "does not name a step"),
            ("<+execution.steps.nope.steps.a.output.K>", false, "names unknown stage 'nope'"),
            ("<+execution.steps.ship.steps.c.output.K>", false, "names stage 'ship', which runs later"),
            ("<+execution.steps.build.steps.c.output.K>", true, "names step 'c', which is not in stage 'build'"),
            ("<+execution.steps.build.steps.zz.output.K>", true, "names unknown step 'zz' in stage 'build'"),
            ("<+execution.steps.ship.steps.d.output.K>", true, "has not run yet"),
            ("<+execution.steps..steps.a>", true, "does not name a stage"),
            ("<+pipeline.variables.nope>", false, "reference '<+pipeline.variables.nope>' names undeclared variable 'nope'"),
        ];
        for (value, in_ship, expected) in cases {
            let message = error(&referencing(value, in_ship));
            assert!(message.contains(expected), "{value}: {message}");
        }
    }

    #[test]
    fn references_in_http_urls_headers_and_bodies_are_checked() {
        for field in [
            "url: 'https://x/<+steps.later.output.u>'",
            "url: 'https://x', headers: {X-A: '<+steps.later.output.u>'}",
            "url: 'https://x', body: '<+steps.later.output.u>'",
        ] {
            let text = with_steps(&format!(
                "          - step: {{identifier: h, type: Http, spec: {{{field}}}}}\n          - step: {{identifier: later, type: Approval}}\n"
            ));
            assert!(
                error(&text).contains("names step 'later', which runs later"),
                "{field}"
            );
        }
        assert!(yaml(&with_steps(
            "          - step: {identifier: h, type: Http, spec: {url: 'https://ci.example.com/hooks/<+pipeline.variables.tag>?ref=<+trigger.payload.ref>'}}\n"
        ))
        .is_ok());
        for url in [
            "<+pipeline.variables.tag>",
            "https://<+trigger.payload.host>/x",
            "http://ci.example.com:<+trigger.payload.port>/x",
        ] {
            let message = error(&with_steps(&format!(
                "          - step: {{identifier: h, type: Http, spec: {{url: '{url}'}}}}\n"
            )));
            assert!(
                message.contains("must start with http:// or https://")
                    || message.contains("has an expression in its host"),
                "{url}: {message}"
            );
        }
    }

    #[test]
    fn hostile_inputs_return_errors_instead_of_panicking() {
        for text in [
            "pipeline: {stages: [1]}",
            "pipeline: {name: P, identifier: p, stages: [1]}",
            "pipeline: {name: P, identifier: p, stages: [{stage: 1}]}",
            "pipeline: {name: P, identifier: p, stages: [{stage: {identifier: s, steps: 1}}]}",
            "pipeline: {name: P, identifier: p, stages: [{stage: {identifier: s, steps: [1]}}]}",
            "pipeline: {name: P, identifier: p, stages: [{stage: {identifier: s, steps: [{step: []}]}}]}",
            "pipeline: {name: P, identifier: p, stages: [{stage: {identifier: s, steps: [{step: {identifier: a, type: Run, spec: 1}}]}}]}",
            "pipeline: {name: [], identifier: p}",
            "pipeline: {name: P, identifier: {a: 1}}",
            "pipeline: {name: P, identifier: p, tags: [1]}",
            "pipeline: {name: P, identifier: p, tags: {a: {b: 1}}}",
            "pipeline: {name: P, identifier: é}",
            "pipeline: {name: P, identifier: p, stages: [{stage: {identifier: s, steps: [{step: {identifier: a, type: Run, spec: {command: x, env: {X: '<+steps.é'}}}}]}}]}",
        ] {
            assert!(yaml(text).is_err(), "{text}");
        }
        // Malformed expressions outside the three checked forms are refused too.
        let unterminated = "pipeline: {name: P, identifier: p, stages: [{stage: {identifier: s, steps: [{step: {identifier: a, type: Run, spec: {command: x, env: {X: '<+'}}}}]}}]}";
        assert!(yaml(unterminated).is_err());
    }
}
