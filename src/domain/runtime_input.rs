//! A trigger's `inputYaml` (DESIGN §6.2): the values it gives the pipeline's `<+input>`
//! variables, with `<+...>` expressions resolved against each webhook.
//!
//! [`InputTemplate::compile`] parses the YAML and every expression in it once;
//! [`InputTemplate::check_against`] is the save-time check against the pipeline (unknown
//! variables, fixed variables, missing inputs); [`InputTemplate::resolve`] runs at intake and
//! gives the resolved input YAML, or a message naming the variable that is missing or mistyped.

use serde_json::{Map, Value};

use super::ids::truncate_for_message;
use super::pipeline::{PipelineSpec, VariableType, VariableValue};
use super::DomainError;
use crate::expr::template::Template;
use crate::expr::value::{number_of, render, type_name, Num};
use crate::expr::{Reference, Resolver};

/// `runtimeInput` when there is nothing to give (DESIGN §2.3).
pub const EMPTY_RUNTIME_INPUT: &str = "pipeline: {}\n";

/// A compiled `inputYaml`.
#[derive(Debug, Clone, Default)]
pub struct InputTemplate {
    /// `pipeline.identifier`, when written.
    identifier: Option<String>,
    /// `pipeline.variables`, in order.
    variables: Vec<InputVariable>,
    /// Every other key under `pipeline:`, resolved and passed through as written.
    rest: Vec<(String, Node)>,
}

#[derive(Debug, Clone)]
struct InputVariable {
    name: String,
    declared: Option<VariableType>,
    /// `None` when written as `<+input>` (not given).
    value: Option<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Plain(Value),
    Template(Template),
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
}

impl InputTemplate {
    /// Parses `inputYaml` (`None`: the trigger gives no input). Errors name the place, and the
    /// column inside an expression.
    pub fn compile(input_yaml: Option<&str>) -> Result<Self, DomainError> {
        let Some(text) = input_yaml else {
            return Ok(Self::default());
        };
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            DomainError::invalid(format!("trigger.inputYaml is not valid YAML: {e}"))
        })?;
        let pipeline = match doc.get("pipeline") {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(DomainError::invalid(format!(
                    "inputYaml: pipeline must be a mapping, got {}",
                    type_name(other)
                )))
            }
        };
        let mut template = Self::default();
        for (key, value) in pipeline {
            match key.as_str() {
                "identifier" => {
                    template.identifier = Some(
                        value
                            .as_str()
                            .ok_or_else(|| {
                                DomainError::invalid(
                                    "inputYaml: pipeline.identifier must be a string",
                                )
                            })?
                            .to_owned(),
                    );
                }
                "variables" => template.variables = compile_variables(value)?,
                _ => template.rest.push((
                    key.clone(),
                    compile_node(value, &format!("pipeline.{key}"), false)?,
                )),
            }
        }
        Ok(template)
    }

    /// Every reference the input reads.
    pub fn references(&self) -> Vec<&Reference> {
        let mut found = Vec::new();
        let mut stack: Vec<&Node> = self
            .variables
            .iter()
            .filter_map(|v| v.value.as_ref())
            .chain(self.rest.iter().map(|(_, n)| n))
            .collect();
        while let Some(node) = stack.pop() {
            match node {
                Node::Plain(_) => {}
                Node::Template(t) => found.extend(t.references()),
                Node::Map(entries) => stack.extend(entries.iter().map(|(_, n)| n)),
                Node::List(items) => stack.extend(items),
            }
        }
        found
    }

    /// The save-time check against the pipeline: the identifier matches, every variable given
    /// is a runtime input of the pipeline with the same type, and every runtime input without a
    /// default is given.
    pub fn check_against(&self, pipeline: &PipelineSpec) -> Result<(), String> {
        if let Some(id) = &self.identifier {
            if id != pipeline.identifier.as_str() {
                return Err(format!(
                    "inputYaml: pipeline.identifier '{}' is not the trigger's pipeline '{}'",
                    truncate_for_message(id),
                    pipeline.identifier
                ));
            }
        }
        for given in &self.variables {
            let Some(declared) = pipeline.variables.iter().find(|v| v.name == given.name) else {
                return Err(format!(
                    "inputYaml: variable '{}' is not declared by pipeline '{}'",
                    given.name, pipeline.identifier
                ));
            };
            if declared.value != VariableValue::RuntimeInput {
                return Err(format!(
                    "inputYaml: variable '{}' of pipeline '{}' is not a runtime input (its value is fixed, not <+input>)",
                    given.name, pipeline.identifier
                ));
            }
            if let Some(t) = given.declared.filter(|t| *t != declared.var_type) {
                return Err(format!(
                    "inputYaml: variable '{}' is given as type {} but pipeline '{}' declares it {}",
                    given.name,
                    t.as_str(),
                    pipeline.identifier,
                    declared.var_type.as_str()
                ));
            }
        }
        for input in pipeline.runtime_inputs() {
            let given = self
                .variables
                .iter()
                .any(|v| v.name == input.name && v.value.is_some());
            if !given && input.default.is_none() {
                return Err(format!(
                    "inputYaml does not give runtime input '{}' of pipeline '{}' (it has no default)",
                    input.name, pipeline.identifier
                ));
            }
        }
        Ok(())
    }

    /// Resolves the input for one webhook: the resolved YAML, or a message naming the variable
    /// that is missing or mistyped.
    pub fn resolve(&self, pipeline: &PipelineSpec, ctx: &dyn Resolver) -> Result<String, String> {
        self.check_against(pipeline)?;
        let mut variables = Vec::new();
        for input in pipeline.runtime_inputs() {
            let given = self
                .variables
                .iter()
                .find(|v| v.name == input.name)
                .and_then(|v| v.value.as_ref());
            let value = match given.map(|node| resolve_value(node, ctx)) {
                Some(Ok(v)) if !v.is_null() => Some(v),
                Some(Ok(_)) | None => None,
                Some(Err(missing)) => match &input.default {
                    Some(_) => None,
                    None => {
                        return Err(format!(
                            "Runtime input '{}' could not be resolved: {} is not in the webhook",
                            input.name,
                            truncate_for_message(&missing)
                        ))
                    }
                },
            };
            let value = match (value, &input.default) {
                (Some(v), _) => v,
                (None, Some(default)) => default.clone(),
                (None, None) => {
                    return Err(format!(
                        "Runtime input '{}' of pipeline '{}' has no value",
                        input.name, pipeline.identifier
                    ))
                }
            };
            let value = coerce(&input.name, input.var_type, value)?;
            let mut entry = Map::new();
            entry.insert("name".into(), Value::String(input.name.clone()));
            entry.insert("type".into(), Value::String(input.var_type.as_str().into()));
            entry.insert("value".into(), value);
            variables.push(Value::Object(entry));
        }
        if variables.is_empty() && self.identifier.is_none() && self.rest.is_empty() {
            return Ok(EMPTY_RUNTIME_INPUT.to_owned());
        }
        let mut out = Map::new();
        out.insert(
            "identifier".into(),
            Value::String(pipeline.identifier.to_string()),
        );
        if !variables.is_empty() {
            out.insert("variables".into(), Value::Array(variables));
        }
        for (key, node) in &self.rest {
            out.insert(key.clone(), render_node(node, ctx));
        }
        let mut doc = Map::new();
        doc.insert("pipeline".into(), Value::Object(out));
        serde_yaml_ng::to_string(&Value::Object(doc))
            .map_err(|e| format!("The runtime input could not be written as YAML: {e}"))
    }
}

fn compile_variables(value: &Value) -> Result<Vec<InputVariable>, DomainError> {
    let Value::Array(items) = value else {
        return Err(DomainError::invalid(format!(
            "inputYaml: pipeline.variables must be a list of {{name, value}}, got {}",
            type_name(value)
        )));
    };
    let mut variables: Vec<InputVariable> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let what = format!("inputYaml: pipeline.variables[{i}]");
        let map = item.as_object().ok_or_else(|| {
            DomainError::invalid(format!("{what} must be a mapping with name and value"))
        })?;
        let name = map
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| DomainError::invalid(format!("{what}: name is required")))?
            .to_owned();
        if variables.iter().any(|v| v.name == name) {
            return Err(DomainError::invalid(format!(
                "{what}: variable '{}' is given twice",
                truncate_for_message(&name)
            )));
        }
        let declared = match map.get("type").and_then(Value::as_str) {
            None => None,
            Some("String") => Some(VariableType::String),
            Some("Number") => Some(VariableType::Number),
            Some(other) => {
                return Err(DomainError::invalid(format!(
                    "{what}: type '{}' is not supported; expected String or Number",
                    truncate_for_message(other)
                )))
            }
        };
        let value = match map.get("value") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let node = compile_node(v, &format!("pipeline.variables[{i}].value"), true)?;
                match &node {
                    Node::Template(t) if t.as_single_reference() == Some(&Reference::Input) => None,
                    _ => Some(node),
                }
            }
        };
        variables.push(InputVariable {
            name,
            declared,
            value,
        });
    }
    Ok(variables)
}

/// Compiles a value of the input; `variable_value`: it is a variable's whole value, the only
/// place where `<+input>` (meaning "not given") may stand.
fn compile_node(value: &Value, path: &str, variable_value: bool) -> Result<Node, DomainError> {
    Ok(match value {
        Value::String(s) if s.contains("<+") => {
            let template = Template::parse(s)
                .map_err(|e| DomainError::invalid(format!("inputYaml: {path}: {e}")))?;
            let lone_input =
                variable_value && template.as_single_reference() == Some(&Reference::Input);
            for reference in template.references() {
                if reference == &Reference::Input && !lone_input {
                    return Err(DomainError::invalid(format!(
                        "inputYaml: {path}: <+input> may only be a variable's whole value (meaning: not given)"
                    )));
                }
                if !reference.is_known_at_intake() && !lone_input {
                    return Err(DomainError::invalid(format!(
                        "inputYaml: {path}: {reference} is not known when a webhook arrives; runtime input can read <+trigger.payload...>, <+trigger.header['Name']> and the trigger and pipeline metadata"
                    )));
                }
            }
            Node::Template(template)
        }
        Value::Object(map) => Node::Map(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), compile_node(v, &format!("{path}.{k}"), false)?)))
                .collect::<Result<_, DomainError>>()?,
        ),
        Value::Array(items) => Node::List(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| compile_node(v, &format!("{path}[{i}]"), false))
                .collect::<Result<_, _>>()?,
        ),
        other => Node::Plain(other.clone()),
    })
}

/// A variable's value: a lone reference keeps its JSON type; `Err` names a missing reference.
fn resolve_value(node: &Node, ctx: &dyn Resolver) -> Result<Value, String> {
    match node {
        Node::Template(t) => t.render_value(ctx),
        other => Ok(render_node(other, ctx)),
    }
}

/// Any other value: templates render to text, a missing reference to `""`.
fn render_node(node: &Node, ctx: &dyn Resolver) -> Value {
    match node {
        Node::Plain(v) => v.clone(),
        Node::Template(t) => Value::String(t.render(ctx).text),
        Node::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, n)| (k.clone(), render_node(n, ctx)))
                .collect(),
        ),
        Node::List(items) => Value::Array(items.iter().map(|n| render_node(n, ctx)).collect()),
    }
}

/// Checks a resolved value against the variable type: a `Number` takes a number or text that
/// reads as one; a `String` takes any scalar as its text.
fn coerce(name: &str, var_type: VariableType, value: Value) -> Result<Value, String> {
    match var_type {
        VariableType::Number => match number_of(&value) {
            Some(Num::Int(i)) => Ok(Value::from(i)),
            Some(n @ Num::Float(_)) => n
                .to_value()
                .ok_or_else(|| format!("Runtime input '{name}' is not a finite number")),
            None => Err(format!(
                "Runtime input '{name}' must be a Number, got {} \"{}\"",
                type_name(&value),
                truncate_for_message(&render(&value))
            )),
        },
        VariableType::String => match value {
            Value::Object(_) | Value::Array(_) => Err(format!(
                "Runtime input '{name}' must be a String, got {}",
                type_name(&value)
            )),
            other => Ok(Value::String(render(&other).into_owned())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pipeline::parse_pipeline;
    use crate::domain::BodyFormat;
    use crate::expr::context::TriggerContext;
    use serde_json::json;

    fn pipeline(variables: &str) -> PipelineSpec {
        parse_pipeline(
            &format!(
                "pipeline:\n  name: P\n  identifier: p\n  variables: [{variables}]\n  stages:\n    - stage: {{identifier: s, steps: [{{step: {{identifier: w, type: Wait, spec: {{duration: 0s}}}}}}]}}\n"
            ),
            BodyFormat::Yaml,
        )
        .unwrap()
    }

    fn resolve(input: &str, pipeline: &PipelineSpec, payload: Value) -> Result<String, String> {
        let template = InputTemplate::compile(Some(input)).unwrap();
        let ctx = TriggerContext {
            payload: &payload,
            headers: &[],
            event_id: "e",
            trigger_identifier: "t",
            pipeline_identifier: "p",
            pipeline_name: "P",
            execution_id: None,
        };
        template.resolve(pipeline, &ctx)
    }

    const INPUT: &str = "pipeline:\n  identifier: p\n  variables:\n    - name: tag\n      type: String\n      value: <+trigger.payload.tag>\n    - name: n\n      value: <+trigger.payload.n>\n";

    #[test]
    fn expressions_resolve_and_numbers_keep_their_type() {
        let p = pipeline("{name: tag, value: <+input>}, {name: n, type: Number, value: <+input>}, {name: fixed, value: x}");
        let yaml = resolve(INPUT, &p, json!({"tag": "v1.2", "n": "42"})).unwrap();
        assert_eq!(
            yaml,
            "pipeline:\n  identifier: p\n  variables:\n  - name: tag\n    type: String\n    value: v1.2\n  - name: n\n    type: Number\n    value: 42\n"
        );
    }

    #[test]
    fn missing_and_mistyped_values_name_the_variable() {
        let p = pipeline("{name: tag, value: <+input>}, {name: n, type: Number, value: <+input>}");
        let e = resolve(INPUT, &p, json!({"n": 1})).unwrap_err();
        assert_eq!(e, "Runtime input 'tag' could not be resolved: <+trigger.payload.tag> is not in the webhook");
        let e = resolve(INPUT, &p, json!({"tag": "x", "n": "many"})).unwrap_err();
        assert_eq!(e, "Runtime input 'n' must be a Number, got string \"many\"");
        let e = resolve(INPUT, &p, json!({"tag": {"a": 1}, "n": 1})).unwrap_err();
        assert_eq!(e, "Runtime input 'tag' must be a String, got object");
        let e = resolve(INPUT, &p, json!({"tag": null, "n": 1})).unwrap_err();
        assert!(e.contains("'tag' of pipeline 'p' has no value"), "{e}");
    }

    #[test]
    fn defaults_fill_missing_values() {
        let p = pipeline("{name: tag, value: <+input>, default: latest}, {name: n, type: Number, value: <+input>, default: 3}");
        let yaml = resolve(INPUT, &p, json!({})).unwrap();
        assert!(yaml.contains("value: latest"), "{yaml}");
        assert!(yaml.contains("value: 3"), "{yaml}");
        let yaml = resolve("pipeline: {}\n", &p, json!({})).unwrap();
        assert!(yaml.contains("value: latest"), "{yaml}");
    }

    #[test]
    fn no_inputs_give_the_empty_document() {
        let p = pipeline("");
        assert_eq!(
            resolve("pipeline: {}\n", &p, json!({})).unwrap(),
            EMPTY_RUNTIME_INPUT
        );
        assert_eq!(
            InputTemplate::compile(None).unwrap().resolve(
                &p,
                &TriggerContext {
                    payload: &json!({}),
                    headers: &[],
                    event_id: "e",
                    trigger_identifier: "t",
                    pipeline_identifier: "p",
                    pipeline_name: "P",
                    execution_id: None,
                }
            ),
            Ok(EMPTY_RUNTIME_INPUT.to_owned())
        );
    }

    #[test]
    fn other_keys_are_resolved_as_text() {
        let p = pipeline("");
        let yaml = resolve(
            "pipeline:\n  identifier: p\n  properties:\n    note: 'from <+trigger.payload.who> <+trigger.payload.nobody>'\n",
            &p,
            json!({"who": "ci"}),
        )
        .unwrap();
        assert_eq!(
            yaml,
            "pipeline:\n  identifier: p\n  properties:\n    note: 'from ci '\n"
        );
    }

    #[test]
    fn the_save_time_check_catches_what_can_never_work() {
        let p = pipeline("{name: tag, value: <+input>}, {name: fixed, value: x}, {name: n, type: Number, value: <+input>, default: 1}");
        let check = |input: &str| {
            InputTemplate::compile(Some(input))
                .unwrap()
                .check_against(&p)
        };
        assert_eq!(
            check("pipeline:\n  identifier: other\n"),
            Err("inputYaml: pipeline.identifier 'other' is not the trigger's pipeline 'p'".into())
        );
        assert_eq!(
            check("pipeline:\n  variables: [{name: nope, value: 1}, {name: tag, value: x}]\n"),
            Err("inputYaml: variable 'nope' is not declared by pipeline 'p'".into())
        );
        assert!(check(
            "pipeline:\n  variables: [{name: fixed, value: 1}, {name: tag, value: x}]\n"
        )
        .unwrap_err()
        .contains("'fixed' of pipeline 'p' is not a runtime input"));
        assert!(
            check("pipeline:\n  variables: [{name: tag, type: Number, value: x}]\n")
                .unwrap_err()
                .contains("given as type Number but pipeline 'p' declares it String")
        );
        assert_eq!(
            check("pipeline:\n  variables: [{name: tag, value: <+input>}]\n"),
            Err(
                "inputYaml does not give runtime input 'tag' of pipeline 'p' (it has no default)"
                    .into()
            )
        );
        assert_eq!(
            check("pipeline:\n  variables: [{name: tag, value: x}]\n"),
            Ok(())
        );
    }

    #[test]
    fn compile_errors_give_the_place_and_column() {
        let e = InputTemplate::compile(Some(
            "pipeline:\n  variables: [{name: tag, value: 'v<+trigger.payload.a(>'}]\n",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "inputYaml: pipeline.variables[0].value: unexpected '(' in reference; method calls belong in the jexlCondition, outside <+...> at column 21"
        );
        let e = InputTemplate::compile(Some(
            "pipeline:\n  variables: [{name: tag, value: '<+steps.a.output.b>'}]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not known when a webhook arrives"), "{e}");
        let e = InputTemplate::compile(Some(
            "pipeline:\n  variables: [{name: a, value: 1}, {name: a, value: 2}]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("given twice"), "{e}");
    }
}
