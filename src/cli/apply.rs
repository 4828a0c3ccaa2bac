//! `triggerd apply` and `triggerd export`: configuration as code.
//!
//! A document is YAML with a `kind` (`Pipeline`, `Trigger`, `EventRule`, `Setting`), the scope
//! it belongs to (`account`, `org`, `project`) and the resource body under a key named after
//! the kind, in the shape the REST API takes:
//!
//! ```yaml
//! kind: Pipeline
//! account: acme
//! org: default
//! project: payments
//! pipeline:
//!   identifier: deploy
//!   stages: [...]
//! ```
//!
//! `apply` first asks the server what each document would become (`PUT ...?dryRun=true`: the
//! server validates and canonicalises it and stores nothing), compares that with what is
//! stored, and only then writes what differs, in dependency order: scopes, settings,
//! pipelines, triggers, event rules. Any document the server refuses stops the run before
//! anything is written.

use std::collections::BTreeSet;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};

use super::api::{Api, Body};
use super::client::{Context, Session};
use super::output::{self, Format};
use super::profile::ProjectPath;
use super::{CliError, CliResult, Exit};

/// `triggerd apply`.
#[derive(Args)]
pub struct ApplyArgs {
    /// A YAML file, a directory (every .yaml/.yml/.json file in it, recursively) or `-`.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    /// Show what would change, with a diff; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also delete pipelines, triggers and event rules of the documents' projects that the
    /// input no longer holds (asks first unless --yes).
    #[arg(long)]
    prune: bool,
    /// Do not ask before pruning.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// `triggerd export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The directory to write (created if missing); one file per document.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

/// The kinds of document, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum DocKind {
    Setting,
    Pipeline,
    Trigger,
    EventRule,
}

impl DocKind {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "Setting" => Some(Self::Setting),
            "Pipeline" => Some(Self::Pipeline),
            "Trigger" => Some(Self::Trigger),
            "EventRule" => Some(Self::EventRule),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Setting => "Setting",
            Self::Pipeline => "Pipeline",
            Self::Trigger => "Trigger",
            Self::EventRule => "EventRule",
        }
    }

    /// The key that holds the body.
    fn body_key(self) -> &'static str {
        match self {
            Self::Setting => "setting",
            Self::Pipeline => "pipeline",
            Self::Trigger => "trigger",
            Self::EventRule => "eventRule",
        }
    }
}

/// Where a setting applies: an account, an org or a project.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Scope {
    account: String,
    org: Option<String>,
    project: Option<String>,
}

impl Scope {
    fn project(&self) -> Option<ProjectPath> {
        Some(ProjectPath {
            account: self.account.clone(),
            org: self.org.clone()?,
            project: self.project.clone()?,
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.account)?;
        for part in [&self.org, &self.project].into_iter().flatten() {
            write!(f, "/{part}")?;
        }
        Ok(())
    }
}

/// One parsed document.
#[derive(Debug)]
struct Doc {
    /// `FILE` or `FILE (document N)`.
    source: String,
    kind: DocKind,
    scope: Scope,
    /// The pipeline for a trigger; empty otherwise.
    pipeline: String,
    /// The identifier (the setting's name for a setting).
    id: String,
    /// The body, as the REST API takes it.
    body: Value,
}

impl Doc {
    /// One line naming the document and what went wrong with it.
    fn failure(&self, e: &CliError) -> String {
        format!(
            "{}: {} {}: {}",
            self.source,
            self.kind.name(),
            self.name(),
            e.message
        )
    }

    fn name(&self) -> String {
        match self.kind {
            DocKind::Trigger => format!("{}/{}/{}", self.scope, self.pipeline, self.id),
            _ => format!("{}/{}", self.scope, self.id),
        }
    }

    /// The REST path of the resource (settings: without their query).
    fn segments(&self) -> Vec<String> {
        let s = &self.scope;
        let mut v: Vec<String> = vec!["api".into(), "v1".into()];
        if self.kind == DocKind::Setting {
            v.extend(["settings".into(), self.id.clone()]);
            return v;
        }
        v.extend([
            "accounts".into(),
            s.account.clone(),
            "orgs".into(),
            s.org.clone().unwrap_or_default(),
            "projects".into(),
            s.project.clone().unwrap_or_default(),
        ]);
        match self.kind {
            DocKind::Pipeline => v.extend(["pipelines".into(), self.id.clone()]),
            DocKind::Trigger => v.extend([
                "pipelines".into(),
                self.pipeline.clone(),
                "triggers".into(),
                self.id.clone(),
            ]),
            DocKind::EventRule => v.extend(["eventrules".into(), self.id.clone()]),
            DocKind::Setting => {}
        }
        v
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        if self.kind != DocKind::Setting {
            return Vec::new();
        }
        let mut q = vec![("accountIdentifier", self.scope.account.clone())];
        if let Some(o) = &self.scope.org {
            q.push(("orgIdentifier", o.clone()));
        }
        if let Some(p) = &self.scope.project {
            q.push(("projectIdentifier", p.clone()));
        }
        q
    }
}

// ---------------------------------------------------------------------------------------------
// reading documents

/// Every file a path names: itself, or the .yaml/.yml/.json files under a directory.
fn files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let meta =
        std::fs::metadata(path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    if !meta.is_dir() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let hidden = entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if entry.is_dir() {
            files(&entry, out)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Parses every document of every path; the first malformed one is the error.
fn read_docs(paths: &[PathBuf]) -> Result<Vec<Doc>, CliError> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::usage(format!("reading stdin: {e}")))?;
            parse_file("<stdin>", &text, &mut docs)?;
            continue;
        }
        let mut list = Vec::new();
        files(path, &mut list)?;
        for file in list {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::usage(format!("{}: {e}", file.display())))?;
            parse_file(&file.display().to_string(), &text, &mut docs)?;
        }
    }
    let mut seen = BTreeSet::new();
    for d in &docs {
        if !seen.insert((d.kind, d.name())) {
            return Err(CliError::usage(format!(
                "{}: {} {} is defined twice",
                d.source,
                d.kind.name(),
                d.name()
            )));
        }
    }
    Ok(docs)
}

fn parse_file(name: &str, text: &str, docs: &mut Vec<Doc>) -> Result<(), CliError> {
    let mut parsed = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| CliError::usage(format!("{name}: not valid YAML: {e}")))?;
        if !value.is_null() {
            parsed.push(value);
        }
    }
    let several = parsed.len() > 1;
    for (i, value) in parsed.into_iter().enumerate() {
        let source = if several {
            format!("{name} (document {})", i + 1)
        } else {
            name.to_owned()
        };
        let doc =
            parse_doc(&source, value).map_err(|m| CliError::usage(format!("{source}: {m}")))?;
        docs.push(doc);
    }
    Ok(())
}

fn text_field(map: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` must be a non-empty string")),
    }
}

fn parse_doc(source: &str, value: Value) -> Result<Doc, String> {
    let Value::Object(mut map) = value else {
        return Err("a document must be a mapping with `kind`".into());
    };
    let kind_text = text_field(&map, "kind")?.ok_or_else(|| {
        "missing `kind` (one of Pipeline, Trigger, EventRule, Setting)".to_owned()
    })?;
    let kind = DocKind::parse(&kind_text).ok_or_else(|| {
        format!("unknown kind `{kind_text}`; the kinds are Pipeline, Trigger, EventRule, Setting")
    })?;
    let account = text_field(&map, "account")?.ok_or("missing `account`")?;
    let org = text_field(&map, "org")?;
    let project = text_field(&map, "project")?;
    if kind != DocKind::Setting && (org.is_none() || project.is_none()) {
        return Err(format!(
            "a {} needs `account`, `org` and `project`",
            kind.name()
        ));
    }
    if project.is_some() && org.is_none() {
        return Err("`project` needs `org`".into());
    }
    let key = kind.body_key();
    let allowed = ["kind", "account", "org", "project", key];
    if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{extra}`; a {} document has kind, account, org, project and {key}",
            kind.name()
        ));
    }
    let body = map
        .remove(key)
        .filter(Value::is_object)
        .ok_or_else(|| format!("missing `{key}:` with the {} itself", kind.name()))?;
    let scope = Scope {
        account,
        org,
        project,
    };
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let (id, pipeline, body) = match kind {
        DocKind::Pipeline => (
            field("identifier").ok_or("missing `pipeline.identifier`")?,
            String::new(),
            json!({ "pipeline": body }),
        ),
        DocKind::Trigger => (
            field("identifier").ok_or("missing `trigger.identifier`")?,
            field("pipelineIdentifier").ok_or("missing `trigger.pipelineIdentifier`")?,
            json!({ "trigger": body }),
        ),
        DocKind::EventRule => (
            field("identifier").ok_or("missing `eventRule.identifier`")?,
            String::new(),
            body,
        ),
        DocKind::Setting => {
            let name = field("name").ok_or("missing `setting.name`")?;
            if !body.get("value").is_some_and(Value::is_boolean) {
                return Err("`setting.value` must be true or false".into());
            }
            if body.get("allowOverrides").is_some_and(|v| !v.is_boolean()) {
                return Err("`setting.allowOverrides` must be true or false".into());
            }
            if let Some(extra) = body.as_object().and_then(|m| {
                m.keys()
                    .find(|k| !["name", "value", "allowOverrides"].contains(&k.as_str()))
            }) {
                return Err(format!(
                    "unknown key `setting.{extra}`; a setting has name, value and allowOverrides"
                ));
            }
            let mut b = body;
            if let Some(m) = b.as_object_mut() {
                m.remove("name");
            }
            (name, String::new(), b)
        }
    };
    Ok(Doc {
        source: source.to_owned(),
        kind,
        scope,
        pipeline,
        id,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// planning

/// What applying a document does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Create,
    Change(String),
    Unchanged,
    /// A stored trigger whose pipeline this run changes: checked once the pipeline is written
    /// (its inputs may be new).
    Deferred,
}

async fn current(api: &Api, doc: &Doc) -> Result<Option<Value>, CliError> {
    let segs = doc.segments();
    let query = doc.query();
    let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match api.get(&refs(&segs), &q).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_not_found(e: &CliError) -> bool {
    e.message.starts_with("RESOURCE_NOT_FOUND")
}

/// PUTs `doc` (`dry_run`: only validated and canonicalised) and returns the view.
async fn put(api: &Api, doc: &Doc, dry_run: bool) -> Result<Value, CliError> {
    let segs = doc.segments();
    let segments: Vec<&str> = segs.iter().map(String::as_str).collect();
    let mut query = doc.query();
    if dry_run {
        query.push(("dryRun", "true".into()));
    }
    let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Ok(api
        .send(
            Method::PUT,
            api.url(&segments, &q),
            Body::Json(doc.body.clone()),
            &[],
        )
        .await?
        .data)
}

/// The part of a view that a document controls.
fn controlled(doc: &Doc, view: &Value) -> Value {
    match doc.kind {
        DocKind::Setting => {
            let here = &view["setHere"];
            if here.is_null() {
                Value::Null
            } else {
                json!({ "value": here["value"], "allowOverrides": here["allowOverrides"] })
            }
        }
        DocKind::EventRule => rule_body(view),
        DocKind::Pipeline | DocKind::Trigger => view["spec"].clone(),
    }
}

/// The fields of a rule view that are state, not body.
const RULE_STATE: &[&str] = &[
    "accountIdentifier",
    "orgIdentifier",
    "projectIdentifier",
    "signingSecret",
    "previousSecretValidUntil",
    "failingSince",
    "disabledReason",
    "createdAt",
    "updatedAt",
];

/// A rule view without its state: the body a document gives.
fn rule_body(view: &Value) -> Value {
    let mut body = view.clone();
    if let Some(map) = body.as_object_mut() {
        for field in RULE_STATE {
            map.remove(*field);
        }
    }
    body
}

fn desired_setting(doc: &Doc) -> Value {
    json!({
        "value": doc.body["value"],
        "allowOverrides": doc.body.get("allowOverrides").cloned().unwrap_or(json!(true)),
    })
}

fn diff(old: &Value, new: &Value) -> String {
    let old = serde_yaml_ng::to_string(old).unwrap_or_default();
    let new = serde_yaml_ng::to_string(new).unwrap_or_default();
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(2)
        .header("stored", "input")
        .to_string()
}

async fn plan(
    api: &Api,
    doc: &Doc,
    pending_pipelines: &BTreeSet<String>,
) -> Result<Action, CliError> {
    let stored = current(api, doc).await?;
    if doc.kind == DocKind::Setting {
        let want = desired_setting(doc);
        let have = stored
            .as_ref()
            .map(|v| controlled(doc, v))
            .unwrap_or(Value::Null);
        return Ok(if have.is_null() {
            Action::Create
        } else if have == want {
            Action::Unchanged
        } else {
            Action::Change(diff(&have, &want))
        });
    }
    // A trigger of a pipeline this run creates or changes is checked against that pipeline
    // once it is written.
    let pipeline_pending = doc.kind == DocKind::Trigger
        && pending_pipelines.contains(&format!("{}/{}", doc.scope, doc.pipeline));
    if pipeline_pending {
        return Ok(if stored.is_some() {
            Action::Deferred
        } else {
            Action::Create
        });
    }
    let canonical = put(api, doc, true).await?;
    Ok(match stored {
        None => Action::Create,
        Some(stored) => {
            let (have, want) = (controlled(doc, &stored), controlled(doc, &canonical));
            if have == want {
                Action::Unchanged
            } else {
                Action::Change(diff(&have, &want))
            }
        }
    })
}

/// Makes sure the account, org and project exist (creating them, or saying it would).
async fn ensure_scopes(
    api: &Api,
    docs: &[Doc],
    dry_run: bool,
    report: &mut Vec<Value>,
) -> Result<(), CliError> {
    let mut scopes: BTreeSet<(String, Option<String>, Option<String>)> = BTreeSet::new();
    for d in docs {
        scopes.insert((d.scope.account.clone(), None, None));
        if let Some(o) = &d.scope.org {
            scopes.insert((d.scope.account.clone(), Some(o.clone()), None));
            if let Some(p) = &d.scope.project {
                scopes.insert((d.scope.account.clone(), Some(o.clone()), Some(p.clone())));
            }
        }
    }
    for (acc, org, proj) in scopes {
        let mut segments = vec!["api", "v1", "accounts", acc.as_str()];
        let (what, name) = match (&org, &proj) {
            (None, _) => ("Account", acc.clone()),
            (Some(o), None) => {
                segments.extend(["orgs", o.as_str()]);
                ("Org", format!("{acc}/{o}"))
            }
            (Some(o), Some(p)) => {
                segments.extend(["orgs", o.as_str(), "projects", p.as_str()]);
                ("Project", format!("{acc}/{o}/{p}"))
            }
        };
        match api.get(&segments, &[]).await {
            Ok(_) => continue,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        if !dry_run {
            let last = name.rsplit('/').next().unwrap_or(&name).to_owned();
            api.send(
                Method::PUT,
                api.url(&segments, &[]),
                Body::Json(json!({ "name": last })),
                &[],
            )
            .await
            .map_err(|e| CliError::refused(format!("creating {what} {name}: {}", e.message)))?;
        }
        report.push(json!({ "kind": what, "name": name, "action": "created", "source": null }));
        print_action(dry_run, "created", what, &name, None);
    }
    Ok(())
}

fn print_action(dry_run: bool, action: &str, kind: &str, name: &str, source: Option<&str>) {
    let action = match (dry_run, action) {
        (true, "created") => "would create",
        (true, "changed") => "would change",
        (true, "deleted") => "would delete",
        (true, "checked after its pipeline") => "would check",
        (_, a) => a,
    };
    let source = source.map(|s| format!("  ({s})")).unwrap_or_default();
    eprintln!("{action:<12}  {kind:<9}  {name}{source}");
}

// ---------------------------------------------------------------------------------------------
// apply

/// `triggerd apply`.
pub async fn apply(ctx: &Context, args: ApplyArgs) -> CliResult {
    let mut docs = read_docs(&args.paths)?;
    if docs.is_empty() {
        return Err(CliError::usage(
            "no documents found: apply takes YAML files with `kind: Pipeline|Trigger|EventRule|Setting`",
        ));
    }
    docs.sort_by_key(|d| d.kind);
    let s = ctx.connect()?;
    let api = &s.api;
    let mut report = Vec::new();

    // Plan everything first: a document the server refuses stops the run before any write.
    let mut pending_pipelines = BTreeSet::new();
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for doc in &docs {
        match plan(api, doc, &pending_pipelines).await {
            Ok(action) => {
                if doc.kind == DocKind::Pipeline && action != Action::Unchanged {
                    pending_pipelines.insert(doc.name());
                }
                plans.push(action);
            }
            // The server cannot be reached: stop, with exit 3.
            Err(e) if e.exit == Exit::Usage => return Err(e),
            // The scope does not exist yet: it is created below, then the document.
            Err(e) if is_not_found(&e) => plans.push(Action::Create),
            Err(e) => {
                errors.push(doc.failure(&e));
                plans.push(Action::Unchanged);
            }
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("triggerd: {e}");
        }
        return Err(CliError::refused(format!(
            "{} document(s) refused; nothing was changed",
            errors.len()
        )));
    }

    ensure_scopes(api, &docs, args.dry_run, &mut report).await?;
    let mut failed = 0;
    for (doc, planned) in docs.iter().zip(plans) {
        let action = match planned {
            Action::Deferred if !args.dry_run => match plan(api, doc, &BTreeSet::new()).await {
                Ok(action) => action,
                Err(e) if e.exit == Exit::Usage => return Err(e),
                Err(e) => {
                    failed += 1;
                    eprintln!("triggerd: {}", doc.failure(&e));
                    continue;
                }
            },
            other => other,
        };
        let action = &action;
        let word = match action {
            Action::Create => "created",
            Action::Change(_) => "changed",
            Action::Unchanged => "unchanged",
            Action::Deferred => "checked after its pipeline",
        };
        let mut secret = None;
        if !args.dry_run && *action != Action::Unchanged {
            match put(api, doc, false).await {
                Ok(view) => secret = view["signingSecret"].as_str().map(str::to_owned),
                Err(e) if e.exit == Exit::Usage => return Err(e),
                Err(e) => {
                    failed += 1;
                    eprintln!("triggerd: {}", doc.failure(&e));
                    continue;
                }
            }
        }
        print_action(
            args.dry_run,
            word,
            doc.kind.name(),
            &doc.name(),
            Some(&doc.source),
        );
        if let (true, Action::Change(d)) = (args.dry_run, action) {
            eprint!("{}", indent(d));
        }
        let mut entry = json!({
            "kind": doc.kind.name(),
            "name": doc.name(),
            "action": word,
            "source": doc.source,
        });
        if let Some(secret) = secret {
            eprintln!("{:14}signing secret (shown once): {secret}", "");
            entry["signingSecret"] = json!(secret);
        }
        report.push(entry);
    }
    if args.prune {
        failed += prune(&s, &docs, &args, &mut report).await?;
    }
    if ctx.output != Format::Table {
        output::print_document(ctx.output, &Value::Array(report))?;
    }
    if failed > 0 {
        return Err(CliError::refused(format!("{failed} document(s) failed")));
    }
    Ok(Exit::Success)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// Deletes what the documents' projects hold and the input does not; returns the failures.
async fn prune(
    s: &Session,
    docs: &[Doc],
    args: &ApplyArgs,
    report: &mut Vec<Value>,
) -> Result<usize, CliError> {
    let api = &s.api;
    let wanted: BTreeSet<(DocKind, String)> = docs.iter().map(|d| (d.kind, d.name())).collect();
    let projects: BTreeSet<ProjectPath> = docs
        .iter()
        .filter(|d| d.kind != DocKind::Setting)
        .filter_map(|d| d.scope.project())
        .collect();
    // (kind, name, path segments), triggers before their pipelines.
    let mut doomed: Vec<(DocKind, String, Vec<String>)> = Vec::new();
    for p in &projects {
        let base: Vec<String> = [
            "api", "v1", "accounts", &p.account, "orgs", &p.org, "projects", &p.project,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let with = |rest: &[&str]| -> Vec<String> {
            base.iter()
                .cloned()
                .chain(rest.iter().map(|s| s.to_string()))
                .collect()
        };
        let pipes_path = with(&["pipelines"]);
        let pipes = api.list(&refs(&pipes_path), &[], 0).await?;
        let mut pipe_doomed = Vec::new();
        for pipe in &pipes {
            let pid = pipe["identifier"].as_str().unwrap_or("").to_owned();
            let trig_path = with(&["pipelines", &pid, "triggers"]);
            for trig in api.list(&refs(&trig_path), &[], 0).await? {
                let tid = trig["identifier"].as_str().unwrap_or("");
                let name = format!("{p}/{pid}/{tid}");
                if !wanted.contains(&(DocKind::Trigger, name.clone())) {
                    doomed.push((
                        DocKind::Trigger,
                        name,
                        with(&["pipelines", &pid, "triggers", tid]),
                    ));
                }
            }
            let name = format!("{p}/{pid}");
            if !wanted.contains(&(DocKind::Pipeline, name.clone())) {
                pipe_doomed.push((DocKind::Pipeline, name, with(&["pipelines", &pid])));
            }
        }
        doomed.extend(pipe_doomed);
        let rules_path = with(&["eventrules"]);
        for rule in api.list(&refs(&rules_path), &[], 0).await? {
            let rid = rule["identifier"].as_str().unwrap_or("");
            let name = format!("{p}/{rid}");
            if !wanted.contains(&(DocKind::EventRule, name.clone())) {
                doomed.push((DocKind::EventRule, name, with(&["eventrules", rid])));
            }
        }
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    for (kind, name, _) in &doomed {
        print_action(true, "deleted", kind.name(), name, None);
    }
    if args.dry_run {
        return Ok(0);
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(format!(
                "--prune would delete {} resource(s); nothing was deleted. Pass --yes to delete without asking",
                doomed.len()
            )));
        }
        eprint!("Delete these {} resource(s)? [y/N] ", doomed.len());
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Nothing was deleted.");
            return Ok(0);
        }
    }
    let mut failed = 0;
    for (kind, name, path) in doomed {
        let result = api
            .send(Method::DELETE, api.url(&refs(&path), &[]), Body::Empty, &[])
            .await;
        match result {
            Ok(_) => {
                print_action(false, "deleted", kind.name(), &name, None);
                report.push(json!({ "kind": kind.name(), "name": name, "action": "deleted", "source": null }));
            }
            // Deleting a pipeline may have taken its triggers with it.
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                failed += 1;
                eprintln!("triggerd: deleting {} {name}: {}", kind.name(), e.message);
            }
        }
    }
    Ok(failed)
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------
// export

/// The settings a project can hold.
const SETTINGS: &[&str] = &[crate::domain::settings::MANDATE_CUSTOM_WEBHOOK_AUTHORIZATION];

/// `triggerd export`.
pub async fn export(ctx: &Context, args: ExportArgs) -> CliResult {
    let s = ctx.connect()?;
    let p = s.project()?.clone();
    let api = &s.api;
    let scope = |kind: &str, key: &str, body: Value| {
        json!({
            "kind": kind,
            "account": p.account,
            "org": p.org,
            "project": p.project,
            key: body,
        })
    };
    let mut written = Vec::new();
    let mut write = |rel: String, doc: Value| -> Result<(), CliError> {
        let path = args.dir.join(&rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
        }
        let text = serde_yaml_ng::to_string(&doc)
            .map_err(|e| CliError::usage(format!("encoding {rel}: {e}")))?;
        std::fs::write(&path, text)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        written.push(path.display().to_string());
        Ok(())
    };
    for pipe in api.list(&s.in_project(&["pipelines"])?, &[], 0).await? {
        let id = pipe["identifier"].as_str().unwrap_or("").to_owned();
        write(
            format!("pipelines/{id}.yaml"),
            scope("Pipeline", "pipeline", pipe["spec"]["pipeline"].clone()),
        )?;
        for trig in api
            .list(&s.in_project(&["pipelines", &id, "triggers"])?, &[], 0)
            .await?
        {
            let tid = trig["identifier"].as_str().unwrap_or("");
            let mut body = trig["spec"]["trigger"].clone();
            body["pipelineIdentifier"] = json!(id);
            write(
                format!("triggers/{id}.{tid}.yaml"),
                scope("Trigger", "trigger", body),
            )?;
        }
    }
    for rule in api.list(&s.in_project(&["eventrules"])?, &[], 0).await? {
        let id = rule["identifier"].as_str().unwrap_or("").to_owned();
        let mut body = rule_body(&rule);
        body["identifier"] = json!(id);
        write(
            format!("eventrules/{id}.yaml"),
            scope("EventRule", "eventRule", body),
        )?;
    }
    for name in SETTINGS {
        let view = api
            .get(
                &["api", "v1", "settings", name],
                &[
                    ("accountIdentifier", &p.account),
                    ("orgIdentifier", &p.org),
                    ("projectIdentifier", &p.project),
                ],
            )
            .await?;
        let here = &view["setHere"];
        if !here.is_null() {
            write(
                format!("settings/{name}.yaml"),
                scope(
                    "Setting",
                    "setting",
                    json!({ "name": name, "value": here["value"], "allowOverrides": here["allowOverrides"] }),
                ),
            )?;
        }
    }
    if ctx.output != Format::Table {
        output::print_document(ctx.output, &json!(written))?;
    } else if written.is_empty() {
        eprintln!("{p} holds nothing to export");
    } else {
        for w in &written {
            println!("{w}");
        }
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Doc>, CliError> {
        let mut docs = Vec::new();
        parse_file("f.yaml", text, &mut docs)?;
        Ok(docs)
    }

    #[test]
    fn documents_name_their_kind_scope_and_identifier() {
        let docs = parse(
            "kind: Pipeline\naccount: a\norg: o\nproject: p\npipeline:\n  identifier: deploy\n---\n\
             kind: Trigger\naccount: a\norg: o\nproject: p\ntrigger:\n  identifier: on_push\n  pipelineIdentifier: deploy\n---\n\
             kind: Setting\naccount: a\nsetting:\n  name: mandate_custom_webhook_authorization\n  value: true\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].name(), "a/o/p/deploy");
        assert_eq!(docs[0].body, json!({"pipeline": {"identifier": "deploy"}}));
        assert_eq!(docs[1].name(), "a/o/p/deploy/on_push");
        assert_eq!(docs[1].source, "f.yaml (document 2)");
        assert_eq!(docs[2].name(), "a/mandate_custom_webhook_authorization");
        assert_eq!(docs[2].body, json!({"value": true}));
        assert_eq!(docs[2].query(), vec![("accountIdentifier", "a".to_owned())]);
    }

    #[test]
    fn malformed_documents_are_named_with_their_file_and_number() {
        let cases = [
            ("pipeline: {identifier: x}\n", "missing `kind`"),
            ("kind: Pipe\naccount: a\n", "unknown kind `Pipe`"),
            (
                "kind: Pipeline\naccount: a\norg: o\npipeline: {identifier: x}\n",
                "needs `account`, `org` and `project`",
            ),
            (
                "kind: Pipeline\naccount: a\norg: o\nproject: p\npipline: {identifier: x}\n",
                "unknown key `pipline`",
            ),
            (
                "kind: Pipeline\naccount: a\norg: o\nproject: p\npipeline: {name: x}\n",
                "pipeline.identifier",
            ),
            (
                "kind: Trigger\naccount: a\norg: o\nproject: p\ntrigger: {identifier: t}\n",
                "pipelineIdentifier",
            ),
            ("- a\n- b\n", "must be a mapping"),
            (
                "kind: Setting\naccount: a\nsetting: {name: m, value: yes please}\n",
                "true or false",
            ),
            (
                "kind: Setting\naccount: a\nsetting: {name: m, value: true, scope: x}\n",
                "unknown key `setting.scope`",
            ),
            ("kind: [\n", "not valid YAML"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.exit, Exit::Usage);
            assert!(e.message.starts_with("f.yaml"), "{text}: {}", e.message);
            assert!(e.message.contains(want), "{text}: {}", e.message);
        }
        let twice = "kind: Pipeline\naccount: a\norg: o\nproject: p\npipeline: {identifier: x}\n";
        let e = parse(&format!("{twice}---\n{twice}"))
            .and_then(|docs| {
                let mut seen = BTreeSet::new();
                for d in &docs {
                    if !seen.insert(d.name()) {
                        return Err(CliError::usage("defined twice"));
                    }
                }
                Ok(docs)
            })
            .unwrap_err();
        assert!(e.message.contains("twice"));
    }

    #[test]
    fn documents_apply_in_dependency_order() {
        assert!(DocKind::Setting < DocKind::Pipeline);
        assert!(DocKind::Pipeline < DocKind::Trigger);
        assert!(DocKind::Trigger < DocKind::EventRule);
    }
}
