//! The client commands: `login`, `whoami`, `use`, `get`, `fire`, `status`, `logs`, execution
//! control, `keys` and `rules`. Each is a thin layer over the REST API of DESIGN §3.

use std::collections::HashMap;
use std::future::Future;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Value};

use super::api::{Api, Body};
use super::output::{self, cell, time_cell, Format, Table};
use super::profile::{self, Profile, ProfileFile, ProjectPath};
use super::{CliError, CliResult, Exit};

/// What every client command gets from the global flags.
pub struct Context {
    /// `--profile` / `TRIGGERD_PROFILE`.
    pub profile: Option<String>,
    /// `--project` / `TRIGGERD_PROJECT`.
    pub project: Option<String>,
    /// `-o`.
    pub output: Format,
}

/// Runs a client command on a small single-threaded runtime.
pub fn block_on<F: Future<Output = CliResult>>(f: F) -> CliResult {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::usage(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}

/// A connected client: the API and the project it acts in, when one is known.
pub struct Session {
    /// The REST client.
    pub api: Api,
    /// `--project`, `TRIGGERD_PROJECT` or the profile's.
    pub project: Option<ProjectPath>,
    /// The profile's name.
    pub profile: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Context {
    /// The server, key and project: environment first, then the profile.
    pub fn connect(&self) -> Result<Session, CliError> {
        let path = profile::path()?;
        let file = ProfileFile::load(&path)?;
        let name = file.chosen(self.profile.as_deref());
        let stored = file.profiles.get(&name).cloned();
        if stored.is_none() && self.profile.is_some() {
            return Err(CliError::usage(format!(
                "there is no profile '{name}' in {}; create it with `triggerd login --url URL --profile {name}`",
                path.display()
            )));
        }
        let stored = stored.unwrap_or_default();
        let env_url = env("TRIGGERD_URL");
        let url = env_url
            .clone()
            .or_else(|| Some(stored.url.clone()).filter(|u| !u.is_empty()))
            .ok_or_else(|| {
                CliError::usage("no server: run `triggerd login --url URL` or set TRIGGERD_URL")
            })?;
        // The profile's key goes only to the profile's server.
        let same_server = env_url
            .as_deref()
            .is_none_or(|u| u.trim_end_matches('/') == stored.url.trim_end_matches('/'));
        let key = env("TRIGGERD_API_KEY").or(stored.api_key.filter(|_| same_server));
        let project = self
            .project
            .clone()
            .filter(|p| !p.is_empty())
            .or(stored.project)
            .map(|p| ProjectPath::parse(&p))
            .transpose()?;
        Ok(Session {
            api: Api::new(&url, key)?,
            project,
            profile: name,
        })
    }
}

impl Session {
    /// The project, or a usage error saying how to name one.
    pub fn project(&self) -> Result<&ProjectPath, CliError> {
        self.project.as_ref().ok_or_else(|| {
            CliError::usage(
                "no project: pass --project ACCOUNT/ORG/PROJECT or run `triggerd use ACCOUNT/ORG/PROJECT`",
            )
        })
    }

    /// The account to act in: the project's, else the key's own (not for the root key).
    pub fn account(&self) -> Result<String, CliError> {
        if let Some(p) = &self.project {
            return Ok(p.account.clone());
        }
        match self.api.key().and_then(key_account) {
            Some(acc) if acc != "_root" => Ok(acc.to_owned()),
            _ => Err(CliError::usage(
                "no account: pass --project ACCOUNT/ORG/PROJECT or run `triggerd use ACCOUNT/ORG/PROJECT`",
            )),
        }
    }

    /// `P/...` path segments of the project followed by `rest`.
    pub fn in_project<'a>(&'a self, rest: &[&'a str]) -> Result<Vec<&'a str>, CliError> {
        let p = self.project()?;
        let mut segments = vec![
            "api",
            "v1",
            "accounts",
            p.account.as_str(),
            "orgs",
            p.org.as_str(),
            "projects",
            p.project.as_str(),
        ];
        segments.extend_from_slice(rest);
        Ok(segments)
    }
}

/// The account a key names: `pat.<account>.<keyId>.<secret>`.
fn key_account(key: &str) -> Option<&str> {
    let mut parts = key.split('.');
    (parts.next() == Some("pat"))
        .then(|| parts.next())
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// login, whoami, use

/// `triggerd login`.
#[derive(Args)]
pub struct LoginArgs {
    /// The server's base URL.
    #[arg(long)]
    url: String,
    /// Store the profile without checking the key against the server.
    #[arg(long)]
    no_verify: bool,
}

/// Reads the key from a hidden prompt on a terminal, else the first line of stdin.
fn read_key() -> Result<String, CliError> {
    let key = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("API key: ")
            .map_err(|e| CliError::usage(format!("reading the key: {e}")))?
    } else {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("reading the key from stdin: {e}")))?;
        text.lines().next().unwrap_or("").to_owned()
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(CliError::usage(
            "no API key given: type it at the prompt or pipe it on stdin (never as an argument)",
        ));
    }
    if key_account(&key).is_none() {
        return Err(CliError::usage(
            "that is not a triggerd API key: keys look like pat.<account>.<keyId>.<secret>",
        ));
    }
    Ok(key)
}

/// `triggerd login --url URL`: checks the key, then stores the profile (mode 0600).
pub fn login(ctx: &Context, args: LoginArgs) -> CliResult {
    let key = read_key()?;
    let project = ctx
        .project
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(ProjectPath::parse)
        .transpose()?;
    let api = Api::new(&args.url, Some(key.clone()))?;
    let who = if args.no_verify {
        None
    } else {
        Some(block_on_value(api.get(&["api", "v1", "whoami"], &[]))?)
    };
    let path = profile::path()?;
    let mut file = ProfileFile::load(&path)?;
    let name = file.chosen(ctx.profile.as_deref());
    let previous_project = file.profiles.get(&name).and_then(|p| p.project.clone());
    file.profiles.insert(
        name.clone(),
        Profile {
            url: api.base().to_owned(),
            api_key: Some(key),
            project: project.map(|p| p.to_string()).or(previous_project),
        },
    );
    file.current = Some(name.clone());
    file.save(&path)?;
    match who {
        Some(who) => println!(
            "Logged in to {} as key {} ({}, account {}); saved as profile '{name}' in {}",
            api.base(),
            cell(&who["keyIdentifier"]),
            cell(&who["role"]),
            cell(&who["accountIdentifier"]),
            path.display()
        ),
        None => println!(
            "Saved {} as profile '{name}' in {} (key not checked)",
            api.base(),
            path.display()
        ),
    }
    Ok(Exit::Success)
}

fn block_on_value<F: Future<Output = Result<Value, CliError>>>(f: F) -> Result<Value, CliError> {
    let mut out = Value::Null;
    block_on(async {
        out = f.await?;
        Ok(Exit::Success)
    })?;
    Ok(out)
}

/// `triggerd whoami`.
pub async fn whoami(ctx: &Context) -> CliResult {
    let s = ctx.connect()?;
    let mut who = s.api.get(&["api", "v1", "whoami"], &[]).await?;
    who["server"] = json!(s.api.base());
    who["profile"] = json!(s.profile);
    who["project"] = json!(s.project.as_ref().map(ToString::to_string));
    if ctx.output != Format::Table {
        output::print_document(ctx.output, &who)?;
        return Ok(Exit::Success);
    }
    println!("server:   {}", s.api.base());
    println!("profile:  {}", s.profile);
    println!(
        "key:      {} ({})",
        cell(&who["keyIdentifier"]),
        cell(&who["name"])
    );
    println!("account:  {}", cell(&who["accountIdentifier"]));
    println!("role:     {}", cell(&who["role"]));
    if let Some(projects) = who["projects"].as_array() {
        let names: Vec<String> = projects.iter().map(cell).collect();
        println!("limited:  {}", names.join(", "));
    }
    println!(
        "project:  {}",
        s.project.as_ref().map_or_else(
            || "- (set one with `triggerd use`)".into(),
            ToString::to_string
        )
    );
    Ok(Exit::Success)
}

/// `triggerd use ACCOUNT/ORG/PROJECT`.
pub fn use_project(ctx: &Context, project: &str) -> CliResult {
    let project = ProjectPath::parse(project)?;
    let path = profile::path()?;
    let mut file = ProfileFile::load(&path)?;
    let name = file.chosen(ctx.profile.as_deref());
    let Some(profile) = file.profiles.get_mut(&name) else {
        return Err(CliError::usage(format!(
            "there is no profile '{name}' yet: run `triggerd login --url URL` first"
        )));
    };
    profile.project = Some(project.to_string());
    file.save(&path)?;
    println!("Profile '{name}' now acts in {project}");
    Ok(Exit::Success)
}

// ---------------------------------------------------------------------------------------------
// get

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Accounts (every account for the root key, else the key's own).
    Accounts,
    /// Projects of the account.
    Projects,
    /// Pipelines of the project.
    Pipelines,
    /// Triggers of the project (or of `--pipeline`).
    Triggers,
    /// Webhook events received, newest first.
    Events,
    /// Executions, newest first.
    Executions,
    /// Outbound event rules.
    Rules,
    /// Deliveries of `--rule` (or of every rule).
    Deliveries,
    /// API keys of the account.
    Keys,
}

/// `triggerd get KIND [NAME]`.
#[derive(Args)]
pub struct GetArgs {
    /// What to list.
    #[arg(value_enum)]
    kind: Kind,
    /// Show one item in full: a pipeline, `PIPELINE/TRIGGER`, a rule, an execution id or an
    /// event id.
    name: Option<String>,
    /// Only this status (case does not matter), for events, executions and deliveries.
    #[arg(long)]
    status: Option<String>,
    /// Only this pipeline (executions, triggers).
    #[arg(long)]
    pipeline: Option<String>,
    /// Only this trigger (events).
    #[arg(long)]
    trigger: Option<String>,
    /// Only this rule (deliveries).
    #[arg(long)]
    rule: Option<String>,
    /// Only this org (projects).
    #[arg(long)]
    org: Option<String>,
    /// At most this many items; 0 lists all.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// `triggerd get`.
pub async fn get(ctx: &Context, args: GetArgs) -> CliResult {
    let s = ctx.connect()?;
    if let Some(name) = &args.name {
        let doc = get_one(&s, args.kind, name).await?;
        let format = match ctx.output {
            Format::Table => Format::Yaml,
            f => f,
        };
        output::print_document(format, &doc)?;
        return Ok(Exit::Success);
    }
    let items = list_kind(&s, &args).await?;
    if ctx.output != Format::Table {
        output::print_document(ctx.output, &Value::Array(items))?;
        return Ok(Exit::Success);
    }
    let (table, empty) = table_of(args.kind, &items);
    table.print(&empty);
    Ok(Exit::Success)
}

async fn get_one(s: &Session, kind: Kind, name: &str) -> Result<Value, CliError> {
    match kind {
        Kind::Accounts => s.api.get(&["api", "v1", "accounts", name], &[]).await,
        Kind::Pipelines => s.api.get(&s.in_project(&["pipelines", name])?, &[]).await,
        Kind::Triggers => {
            let (pipe, trig) = split_trigger(name)?;
            s.api
                .get(&s.in_project(&["pipelines", pipe, "triggers", trig])?, &[])
                .await
        }
        Kind::Rules => s.api.get(&s.in_project(&["eventrules", name])?, &[]).await,
        Kind::Executions => s.api.get(&s.in_project(&["executions", name])?, &[]).await,
        Kind::Events => {
            let account = s.account()?;
            s.api
                .get(
                    &["webhook", "triggerExecutionDetails", name],
                    &[("accountIdentifier", &account)],
                )
                .await
        }
        Kind::Deliveries => match name.split_once('/') {
            Some((rule, id)) => {
                s.api
                    .get(&s.in_project(&["eventrules", rule, "deliveries", id])?, &[])
                    .await
            }
            None => Err(CliError::usage(
                "name a delivery as RULE/DELIVERY_ID, e.g. ops/3f2a…",
            )),
        },
        Kind::Projects | Kind::Keys => Err(CliError::usage(format!(
            "`get {}` lists only; drop the name",
            kind.to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned())
        ))),
    }
}

async fn list_kind(s: &Session, a: &GetArgs) -> Result<Vec<Value>, CliError> {
    let status = a.status.as_deref().unwrap_or("");
    match a.kind {
        Kind::Accounts => {
            let root = s.api.key().and_then(key_account) == Some("_root");
            if root {
                s.api.list(&["api", "v1", "accounts"], &[], a.limit).await
            } else {
                let acc = s.account()?;
                Ok(vec![
                    s.api.get(&["api", "v1", "accounts", &acc], &[]).await?,
                ])
            }
        }
        Kind::Projects => {
            let acc = s.account()?;
            let orgs = match &a.org {
                Some(org) => vec![org.clone()],
                None => s
                    .api
                    .list(&["api", "v1", "accounts", &acc, "orgs"], &[], 0)
                    .await?
                    .iter()
                    .filter_map(|o| o["identifier"].as_str().map(str::to_owned))
                    .collect(),
            };
            let mut projects = Vec::new();
            for org in &orgs {
                let segments = ["api", "v1", "accounts", &acc, "orgs", org, "projects"];
                for mut p in s.api.list(&segments, &[], a.limit).await? {
                    p["path"] = json!(format!("{acc}/{org}/{}", cell(&p["identifier"])));
                    projects.push(p);
                }
            }
            Ok(projects)
        }
        Kind::Pipelines => {
            s.api
                .list(&s.in_project(&["pipelines"])?, &[], a.limit)
                .await
        }
        Kind::Triggers => {
            let pipelines = match &a.pipeline {
                Some(p) => vec![p.clone()],
                None => names(&s.api.list(&s.in_project(&["pipelines"])?, &[], 0).await?),
            };
            let mut triggers = Vec::new();
            for pipe in &pipelines {
                let segments = s.in_project(&["pipelines", pipe, "triggers"])?;
                triggers.extend(s.api.list(&segments, &[], a.limit).await?);
            }
            Ok(triggers)
        }
        Kind::Events => {
            let trigger = a.trigger.as_deref().unwrap_or("");
            s.api
                .list(
                    &s.in_project(&["webhookevents"])?,
                    &[("triggerIdentifier", trigger), ("status", status)],
                    a.limit,
                )
                .await
        }
        Kind::Executions => {
            let pipeline = a.pipeline.as_deref().unwrap_or("");
            s.api
                .list(
                    &s.in_project(&["executions"])?,
                    &[("pipelineIdentifier", pipeline), ("status", status)],
                    a.limit,
                )
                .await
        }
        Kind::Rules => {
            s.api
                .list(&s.in_project(&["eventrules"])?, &[], a.limit)
                .await
        }
        Kind::Deliveries => {
            let rules = match &a.rule {
                Some(r) => vec![r.clone()],
                None => names(&s.api.list(&s.in_project(&["eventrules"])?, &[], 0).await?),
            };
            let mut deliveries = Vec::new();
            for rule in &rules {
                let segments = s.in_project(&["eventrules", rule, "deliveries"])?;
                deliveries.extend(
                    s.api
                        .list(&segments, &[("status", status)], a.limit)
                        .await?,
                );
            }
            Ok(deliveries)
        }
        Kind::Keys => {
            let acc = s.account()?;
            s.api
                .get(&["api", "v1", "accounts", &acc, "apikeys"], &[])
                .await
                .map(|v| match v {
                    Value::Array(items) => items,
                    other => other["content"].as_array().cloned().unwrap_or_default(),
                })
        }
    }
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["identifier"].as_str().map(str::to_owned))
        .collect()
}

fn table_of(kind: Kind, items: &[Value]) -> (Table, String) {
    let (headers, empty): (&[&'static str], &str) = match kind {
        Kind::Accounts => (&["ACCOUNT", "NAME"], "No accounts."),
        Kind::Projects => (&["PROJECT", "NAME"], "No projects."),
        Kind::Pipelines => (
            &["PIPELINE", "NAME", "UPDATED"],
            "No pipelines yet: create one with `triggerd apply -f pipeline.yaml`.",
        ),
        Kind::Triggers => (
            &["TRIGGER", "NAME", "ENABLED", "UPDATED"],
            "No triggers yet: create one with `triggerd apply -f trigger.yaml`.",
        ),
        Kind::Events => (
            &["EVENT", "TRIGGER", "STATUS", "EXECUTION", "RECEIVED"],
            "No events.",
        ),
        Kind::Executions => (
            &[
                "EXECUTION",
                "PIPELINE",
                "STATUS",
                "TRIGGER",
                "STARTED",
                "ENDED",
            ],
            "No executions.",
        ),
        Kind::Rules => (
            &["RULE", "ENABLED", "URL", "FAILING SINCE"],
            "No event rules.",
        ),
        Kind::Deliveries => (
            &[
                "DELIVERY", "RULE", "EVENT", "STATUS", "ATTEMPTS", "RESPONSE", "UPDATED",
            ],
            "No deliveries.",
        ),
        Kind::Keys => (
            &["KEY", "NAME", "ROLE", "PROJECTS", "EXPIRES", "REVOKED"],
            "No API keys.",
        ),
    };
    let mut table = Table::new(headers);
    for i in items {
        let row = match kind {
            Kind::Accounts => vec![cell(&i["identifier"]), cell(&i["name"])],
            Kind::Projects => vec![cell(&i["path"]), cell(&i["name"])],
            Kind::Pipelines => vec![
                cell(&i["identifier"]),
                cell(&i["name"]),
                time_cell(&i["updatedAt"]),
            ],
            Kind::Triggers => vec![
                format!(
                    "{}/{}",
                    cell(&i["pipelineIdentifier"]),
                    cell(&i["identifier"])
                ),
                cell(&i["name"]),
                cell(&i["enabled"]),
                time_cell(&i["updatedAt"]),
            ],
            Kind::Events => vec![
                cell(&i["eventId"]),
                format!(
                    "{}/{}",
                    cell(&i["pipelineIdentifier"]),
                    cell(&i["triggerIdentifier"])
                ),
                cell(&i["status"]),
                cell(&i["pipelineExecutionId"]),
                time_cell(&i["eventCreatedAt"]),
            ],
            Kind::Executions => vec![
                cell(&i["planExecutionId"]),
                cell(&i["pipelineIdentifier"]),
                cell(&i["status"]),
                cell(&i["triggerIdentifier"]),
                time_cell(&i["startTs"]),
                time_cell(&i["endTs"]),
            ],
            Kind::Rules => vec![
                cell(&i["identifier"]),
                cell(&i["enabled"]),
                cell(&i["url"]),
                time_cell(&i["failingSince"]),
            ],
            Kind::Deliveries => vec![
                cell(&i["id"]),
                cell(&i["ruleIdentifier"]),
                cell(&i["eventType"]),
                cell(&i["status"]),
                cell(&i["attemptCount"]),
                cell(&i["responseStatus"]),
                time_cell(&i["updatedAt"]),
            ],
            Kind::Keys => vec![
                cell(&i["identifier"]),
                cell(&i["name"]),
                cell(&i["role"]),
                i["projects"].as_array().map_or_else(
                    || "all".into(),
                    |p| p.iter().map(cell).collect::<Vec<_>>().join(","),
                ),
                time_cell(&i["expiresAt"]),
                time_cell(&i["revokedAt"]),
            ],
        };
        table.row(row);
    }
    (table, empty.to_owned())
}

fn split_trigger(name: &str) -> Result<(&str, &str), CliError> {
    name.split_once('/')
        .filter(|(p, t)| !p.is_empty() && !t.is_empty() && !t.contains('/'))
        .ok_or_else(|| {
            CliError::usage(format!(
                "'{name}' is not a trigger: write PIPELINE/TRIGGER, e.g. deploy/on_push"
            ))
        })
}

// ---------------------------------------------------------------------------------------------
// fire, status

/// `triggerd fire PIPELINE/TRIGGER`.
#[derive(Args)]
pub struct FireArgs {
    /// The trigger, as `PIPELINE/TRIGGER`.
    #[arg(value_name = "PIPELINE/TRIGGER")]
    trigger: String,
    /// The payload: JSON text, `@FILE`, or `-` for stdin (default `{}`).
    #[arg(long, short = 'd')]
    data: Option<String>,
    /// An extra request header, `NAME:VALUE` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Sent as `Idempotency-Key`: a retry with the same key fires once.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Evaluate the conditions and show them; store and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Follow the execution, stage by stage and step by step, until it settles.
    #[arg(long)]
    wait: bool,
}

fn read_data(data: Option<&str>) -> Result<Vec<u8>, CliError> {
    match data {
        None => Ok(b"{}".to_vec()),
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| CliError::usage(format!("reading the payload from stdin: {e}")))?;
            Ok(bytes)
        }
        Some(path) if path.starts_with('@') => std::fs::read(&path[1..])
            .map_err(|e| CliError::usage(format!("reading the payload {}: {e}", &path[1..]))),
        Some(text) => Ok(text.as_bytes().to_vec()),
    }
}

fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>, CliError> {
    raw.iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| CliError::usage(format!("'{h}' is not a header: write NAME:VALUE")))
        })
        .collect()
}

const NOT_FIRED: &[&str] = &[
    "NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS",
    "NO_MATCHING_TRIGGER_FOR_HEADER_CONDITIONS",
    "NO_MATCHING_TRIGGER_FOR_JEXL_CONDITIONS",
];

/// The exit code of an event status: fired, not matched, or failed.
fn event_exit(status: &str) -> Exit {
    match status {
        "TARGET_EXECUTION_REQUESTED" => Exit::Success,
        s if NOT_FIRED.contains(&s) => Exit::NoMatch,
        _ => Exit::Failed,
    }
}

/// `triggerd fire`.
pub async fn fire(ctx: &Context, args: FireArgs) -> CliResult {
    let s = ctx.connect()?;
    let (pipe, trig) = split_trigger(&args.trigger)?;
    let payload = read_data(args.data.as_deref())?;
    let mut headers = parse_headers(&args.headers)?;
    if let Some(k) = &args.idempotency_key {
        headers.push(("Idempotency-Key".into(), k.clone()));
    }
    if args.dry_run {
        headers.push(("X-Trigger-Dry-Run".into(), "true".into()));
    }
    let p = s.project()?.clone();
    let trigger = s
        .api
        .get(&s.in_project(&["pipelines", pipe, "triggers", trig])?, &[])
        .await?;
    let token = trigger["customWebhookToken"].as_str().unwrap_or("");
    let url = s.api.url(
        &["webhook", "custom", token, "v3"],
        &[
            ("accountIdentifier", &p.account),
            ("orgIdentifier", &p.org),
            ("projectIdentifier", &p.project),
            ("pipelineIdentifier", pipe),
            ("triggerIdentifier", trig),
        ],
    );
    let content_type = if serde_json::from_slice::<Value>(&payload).is_ok() {
        "application/json"
    } else {
        "text/plain"
    };
    let answer = s
        .api
        .send(
            Method::POST,
            url,
            Body::Raw(content_type, payload),
            &headers,
        )
        .await?;
    let data = answer.data;
    if args.dry_run {
        let dry = &data["dryRun"];
        let status = dry["status"].as_str().unwrap_or("");
        if ctx.output != Format::Table {
            output::print_document(ctx.output, dry)?;
        } else {
            println!("dry run: {}", paint(status));
            print_conditions(&dry["conditionResults"]);
            if let Some(input) = dry["runtimeInput"].as_str() {
                println!("runtime input:\n{}", input.trim_end());
            }
        }
        return Ok(event_exit(status));
    }
    let event_id = data["eventCorrelationId"].as_str().unwrap_or("").to_owned();
    let status = answer
        .headers
        .get("x-trigger-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if answer.headers.contains_key("idempotent-replayed") {
        eprintln!("(replayed: this Idempotency-Key fired before; nothing new was recorded)");
    }
    if !args.wait {
        if ctx.output != Format::Table {
            let mut doc = data.clone();
            doc["triggerStatus"] = json!(status);
            output::print_document(ctx.output, &doc)?;
        } else {
            println!("{event_id}");
            eprintln!("{}  {}", paint(&status), cell(&data["apiUrl"]));
        }
        return Ok(event_exit(&status));
    }
    if ctx.output == Format::Table {
        println!("event {event_id}: {}", paint(&status));
    }
    follow_event(ctx, &s, &event_id).await
}

fn paint(word: &str) -> String {
    if output::colour_on_stdout() {
        output::paint_status(word)
    } else {
        word.to_owned()
    }
}

fn print_conditions(results: &Value) {
    let mut table = Table::new(&["TYPE", "KEY", "OPERATOR", "EXPECTED", "ACTUAL", "MATCHED"]);
    for c in results.as_array().into_iter().flatten() {
        table.row(vec![
            cell(&c["type"]),
            cell(&c["key"]),
            cell(&c["operator"]),
            cell(&c["expected"]),
            cell(&c["actual"]),
            if c["matched"] == true { "yes" } else { "NO" }.into(),
        ]);
    }
    table.print("no conditions: every payload matches");
}

/// `triggerd status EVENT_ID`.
#[derive(Args)]
pub struct StatusArgs {
    /// The eventCorrelationId that `fire` (or the webhook answer) gave.
    event_id: String,
    /// Follow the execution until it settles.
    #[arg(long)]
    wait: bool,
}

/// `triggerd status`.
pub async fn status(ctx: &Context, args: StatusArgs) -> CliResult {
    let s = ctx.connect()?;
    if args.wait {
        return follow_event(ctx, &s, &args.event_id).await;
    }
    let account = s.account()?;
    let data = s
        .api
        .get(
            &["webhook", "triggerExecutionDetails", &args.event_id],
            &[("accountIdentifier", &account)],
        )
        .await?;
    let details = &data["webhookProcessingDetails"];
    let summary = &data["executionDetails"]["pipelineExecutionSummary"];
    if ctx.output != Format::Table {
        output::print_document(ctx.output, &data)?;
    } else {
        print_event(details, summary);
    }
    Ok(settled_exit(details, summary))
}

fn print_event(details: &Value, summary: &Value) {
    println!("event:      {}", cell(&details["eventId"]));
    println!(
        "trigger:    {}/{}",
        cell(&details["pipelineIdentifier"]),
        cell(&details["triggerIdentifier"])
    );
    println!("received:   {}", time_cell(&details["eventCreatedAt"]));
    println!(
        "status:     {}",
        paint(details["status"].as_str().unwrap_or("-"))
    );
    println!("message:    {}", cell(&details["message"]));
    if !summary.is_null() {
        println!(
            "execution:  {} {}",
            cell(&summary["planExecutionId"]),
            paint(summary["status"].as_str().unwrap_or("-"))
        );
        if let Some(m) = summary["failureInfo"]["message"]
            .as_str()
            .filter(|m| !m.is_empty())
        {
            println!("failure:    {m}");
        }
    }
    if details["conditionResults"]
        .as_array()
        .is_some_and(|c| !c.is_empty())
    {
        println!();
        print_conditions(&details["conditionResults"]);
    }
}

const TERMINAL: &[&str] = &[
    "Success",
    "Failed",
    "Aborted",
    "Expired",
    "ApprovalRejected",
    "Errored",
];

fn settled_exit(details: &Value, summary: &Value) -> Exit {
    let event = event_exit(details["status"].as_str().unwrap_or(""));
    if event != Exit::Success || summary.is_null() {
        return event;
    }
    match summary["status"].as_str().unwrap_or("") {
        "Success" => Exit::Success,
        s if TERMINAL.contains(&s) => Exit::Failed,
        _ => Exit::Success,
    }
}

/// Follows an event's execution to its end, printing each step as its status changes.
async fn follow_event(ctx: &Context, s: &Session, event_id: &str) -> CliResult {
    let account = s.account()?;
    let table = ctx.output == Format::Table;
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut announced_approval = false;
    loop {
        let path = ["webhook", "triggerExecutionDetails", event_id];
        let query = [("accountIdentifier", account.as_str()), ("wait", "2")];
        let data = patiently(|| s.api.get(&path, &query)).await?;
        let details = &data["webhookProcessingDetails"];
        let summary = &data["executionDetails"]["pipelineExecutionSummary"];
        if summary.is_null() {
            if table {
                print_event(details, summary);
            } else {
                output::print_document(ctx.output, &data)?;
            }
            return Ok(settled_exit(details, summary));
        }
        let id = summary["planExecutionId"].as_str().unwrap_or("").to_owned();
        let exec_status = summary["status"].as_str().unwrap_or("").to_owned();
        if table {
            // Step-level progress needs a key that may read executions; without it the
            // stages of the status answer are shown.
            let steps = match s.project.is_some() && s.api.key().is_some() {
                true => s
                    .api
                    .get(&s.in_project(&["executions", &id])?, &[])
                    .await
                    .ok()
                    .and_then(|d| d["steps"].as_array().cloned()),
                false => None,
            };
            match steps {
                Some(steps) => {
                    for st in &steps {
                        let name = format!(
                            "{}/{}",
                            cell(&st["stageIdentifier"]),
                            cell(&st["stepIdentifier"])
                        );
                        report(&mut seen, name, st);
                    }
                }
                None => {
                    for node in summary["layoutNodeMap"]
                        .as_object()
                        .into_iter()
                        .flat_map(|m| m.values())
                    {
                        report(&mut seen, cell(&node["nodeIdentifier"]), node);
                    }
                }
            }
            if exec_status == "ApprovalWaiting" && !announced_approval {
                announced_approval = true;
                println!("  waiting for approval: triggerd approve {id}   (or reject {id})");
            }
        }
        if TERMINAL.contains(&exec_status.as_str()) {
            if table {
                println!("execution {id}: {}", paint(&exec_status));
                if let Some(m) = summary["failureInfo"]["message"]
                    .as_str()
                    .filter(|m| !m.is_empty())
                {
                    println!("  {m}");
                }
            } else {
                output::print_document(ctx.output, &data)?;
            }
            return Ok(settled_exit(details, summary));
        }
        // A waiting approval or a pause may last hours: look less often.
        let pause = if matches!(exec_status.as_str(), "ApprovalWaiting" | "Paused") {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(200)
        };
        tokio::time::sleep(pause).await;
    }
}

/// Runs `request` again while it fails in a way that passes (the server restarting or
/// overloaded, a dropped connection), for up to about a minute, so one blip does not end a
/// `--wait` that a CI job gates on.
async fn patiently<F, Fut>(mut request: F) -> Result<Value, CliError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Value, CliError>>,
{
    let mut delay = Duration::from_millis(500);
    for attempt in 0.. {
        match request().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 12 && transient(&e) => {
                if attempt == 0 {
                    eprintln!("triggerd: {} (retrying)", e.message);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

fn transient(e: &CliError) -> bool {
    e.exit == Exit::Usage && e.message.starts_with("cannot reach")
        || ["SERVICE_UNAVAILABLE", "TOO_MANY_REQUESTS", "UNEXPECTED"]
            .iter()
            .any(|code| e.message.starts_with(code))
}

/// Prints `name`'s status when it changed since it was last seen.
fn report(seen: &mut HashMap<String, String>, name: String, node: &Value) {
    let status = node["status"].as_str().unwrap_or("").to_owned();
    if status.is_empty() || status == "NotStarted" || seen.get(&name) == Some(&status) {
        return;
    }
    let took = match (node["startTs"].as_i64(), node["endTs"].as_i64()) {
        (Some(a), Some(b)) if b >= a => format!("  {:.2}s", (b - a) as f64 / 1000.0),
        _ => String::new(),
    };
    let message = node["message"]
        .as_str()
        .or_else(|| node["failureInfo"]["message"].as_str())
        .filter(|m| !m.is_empty() && status != "Success")
        .map(|m| format!("  {m}"))
        .unwrap_or_default();
    println!("  {name}  {}{took}{message}", paint(&status));
    seen.insert(name, status);
}

// ---------------------------------------------------------------------------------------------
// logs

/// `triggerd logs EXECUTION [STEP]`.
#[derive(Args)]
pub struct LogsArgs {
    /// The plan execution id (it may begin with `-`).
    #[arg(allow_hyphen_values = true)]
    execution: String,
    /// One step: `STAGE/STEP`, or `STEP` when the name is unique.
    step: Option<String>,
    /// Keep printing while the step (or, without STEP, the execution) runs.
    #[arg(long, short = 'f')]
    follow: bool,
}

/// `triggerd logs`.
pub async fn logs(ctx: &Context, args: LogsArgs) -> CliResult {
    let s = ctx.connect()?;
    let detail_path = s.in_project(&["executions", &args.execution])?;
    let several = args.step.is_none();
    let mut printed: Vec<String> = Vec::new();
    loop {
        let detail = s.api.get(&detail_path, &[]).await?;
        let steps = detail["steps"].as_array().cloned().unwrap_or_default();
        let chosen: Vec<&Value> = match &args.step {
            None => steps.iter().collect(),
            Some(name) => vec![pick_step(&steps, name, &args.execution)?],
        };
        let execution_ended = TERMINAL.contains(
            &detail["pipelineExecutionSummary"]["status"]
                .as_str()
                .unwrap_or(""),
        );
        for st in chosen {
            let (stage, step) = (
                st["stageIdentifier"].as_str().unwrap_or(""),
                st["stepIdentifier"].as_str().unwrap_or(""),
            );
            let key = format!("{stage}/{step}");
            if printed.contains(&key) {
                continue;
            }
            let status = st["status"].as_str().unwrap_or("");
            if st["logUrl"].is_null() {
                if status == "NotStarted" && args.follow && !execution_ended {
                    break; // Steps run in order: wait for this one to start.
                }
                printed.push(key); // It never ran, or has no log (Approval, Wait).
                continue;
            }
            if several {
                println!("==> {key} ({status}) <==");
            }
            let logs = s.in_project(&["executions", &args.execution, "logs", stage, step])?;
            let follow = args.follow && !step_ended(status);
            let query: &[(&str, &str)] = if follow { &[("follow", "true")] } else { &[] };
            let mut ends_with_newline = true;
            s.api
                .stream(s.api.url(&logs, query), |chunk| {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(chunk);
                    let _ = out.flush();
                    if let Some(last) = chunk.last() {
                        ends_with_newline = *last == b'\n';
                    }
                })
                .await?;
            if !ends_with_newline {
                println!();
            }
            printed.push(key);
        }
        let all_printed = match &args.step {
            Some(_) => !printed.is_empty(),
            None => execution_ended,
        };
        if !args.follow || all_printed {
            return Ok(Exit::Success);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn step_ended(status: &str) -> bool {
    !matches!(status, "Running" | "NotStarted")
}

fn pick_step<'a>(steps: &'a [Value], name: &str, execution: &str) -> Result<&'a Value, CliError> {
    let matches: Vec<&Value> = steps
        .iter()
        .filter(|st| match name.split_once('/') {
            Some((stage, step)) => st["stageIdentifier"] == stage && st["stepIdentifier"] == step,
            None => st["stepIdentifier"] == name,
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(CliError::refused(format!(
            "execution {execution} has no step {name}; its steps: {}",
            steps
                .iter()
                .map(|st| format!(
                    "{}/{}",
                    cell(&st["stageIdentifier"]),
                    cell(&st["stepIdentifier"])
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(CliError::usage(format!(
            "several stages have a step {name}: write STAGE/STEP"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// approve, reject, abort, pause, resume

/// `triggerd approve|reject|abort|pause|resume EXECUTION`.
#[derive(Args)]
pub struct ControlArgs {
    /// The plan execution id (it may begin with `-`).
    #[arg(allow_hyphen_values = true)]
    execution: String,
    /// A comment stored with the action.
    #[arg(long, short = 'm')]
    comment: Option<String>,
}

/// Sends one control action.
pub async fn control(ctx: &Context, action: &str, args: ControlArgs) -> CliResult {
    let s = ctx.connect()?;
    let body = args.comment.map(|c| json!({ "comment": c }));
    let data = s
        .api
        .post(
            &s.in_project(&["executions", &args.execution, action])?,
            body,
        )
        .await?;
    if ctx.output != Format::Table {
        output::print_document(ctx.output, &data)?;
    } else {
        println!(
            "execution {}: {}",
            args.execution,
            paint(
                data["pipelineExecutionSummary"]["status"]
                    .as_str()
                    .unwrap_or("-")
            )
        );
    }
    Ok(Exit::Success)
}

// ---------------------------------------------------------------------------------------------
// keys

/// `triggerd keys ...`.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once.
    #[command(
        after_help = "Examples:\n  triggerd keys create ci --role executor --projects default/payments\n  triggerd keys create ops-admin --role admin --expires-at 2027-06-30T00:00:00Z"
    )]
    Create {
        /// A name for people.
        name: String,
        /// `admin` (everything in the account) or `executor` (fire and read).
        #[arg(long, default_value = "executor")]
        role: String,
        /// Limit an executor key to these `ORG/PROJECT`s (comma-separated).
        #[arg(long, value_delimiter = ',')]
        projects: Vec<String>,
        /// When the key stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List the account's keys (never their secrets).
    #[command(after_help = "Example:\n  triggerd keys list -o json")]
    List,
    /// Revoke a key; it stops working at once.
    #[command(after_help = "Example:\n  triggerd keys revoke 5f0c3e1a9b7d4c2e8f6a1b3c")]
    Revoke {
        /// The key identifier (see `keys list`).
        key_id: String,
    },
}

/// `triggerd keys`.
pub async fn keys(ctx: &Context, cmd: KeysCommand) -> CliResult {
    let s = ctx.connect()?;
    let acc = s.account()?;
    match cmd {
        KeysCommand::Create {
            name,
            role,
            projects,
            expires_at,
        } => {
            let mut body = json!({ "name": name, "role": role });
            if !projects.is_empty() {
                body["projects"] = json!(projects);
            }
            if let Some(e) = expires_at {
                body["expiresAt"] = json!(e);
            }
            let created = s
                .api
                .post(&["api", "v1", "accounts", &acc, "apikeys"], Some(body))
                .await?;
            if ctx.output != Format::Table {
                output::print_document(ctx.output, &created)?;
            } else {
                eprintln!(
                    "Created key {} in account {acc}. It is shown once; store it now:",
                    cell(&created["identifier"])
                );
                println!("{}", cell(&created["key"]));
            }
        }
        KeysCommand::List => {
            return get(
                ctx,
                GetArgs {
                    kind: Kind::Keys,
                    name: None,
                    status: None,
                    pipeline: None,
                    trigger: None,
                    rule: None,
                    org: None,
                    limit: 0,
                },
            )
            .await;
        }
        KeysCommand::Revoke { key_id } => {
            s.api
                .send(
                    Method::DELETE,
                    s.api
                        .url(&["api", "v1", "accounts", &acc, "apikeys", &key_id], &[]),
                    Body::Empty,
                    &[],
                )
                .await?;
            println!("Revoked key {key_id}");
        }
    }
    Ok(Exit::Success)
}

// ---------------------------------------------------------------------------------------------
// rules

/// `triggerd rules ...`.
#[derive(Subcommand)]
pub enum RulesCommand {
    /// Send a sample event through a rule now (even a disabled one) and show the attempt.
    #[command(after_help = "Example:\n  triggerd rules test ops --event-type pipeline_end")]
    Test {
        /// The rule.
        rule: String,
        /// The sample's event type (default: the rule's first).
        #[arg(long)]
        event_type: Option<String>,
    },
    /// Replace a rule's signing secret and print the new one (once); the old one keeps signing
    /// for a while, so receivers can switch.
    #[command(after_help = "Example:\n  triggerd rules rotate ops")]
    Rotate {
        /// The rule.
        rule: String,
    },
    /// Send one delivery again.
    #[command(after_help = "Example:\n  triggerd rules redeliver ops 0193f1c2-…")]
    Redeliver {
        /// The rule.
        rule: String,
        /// The delivery id (see `get deliveries --rule RULE`).
        delivery: String,
    },
    /// Send again every failed delivery of a rule since a time.
    #[command(after_help = "Example:\n  triggerd rules recover ops --since 2026-11-30T00:00:00Z")]
    Recover {
        /// The rule.
        rule: String,
        /// RFC 3339 time or epoch milliseconds.
        #[arg(long)]
        since: String,
    },
}

/// `triggerd rules`.
pub async fn rules(ctx: &Context, cmd: RulesCommand) -> CliResult {
    let s = ctx.connect()?;
    let data = match &cmd {
        RulesCommand::Test { rule, event_type } => {
            let body = event_type.as_ref().map(|t| json!({ "eventType": t }));
            s.api
                .post(&s.in_project(&["eventrules", rule, "test"])?, body)
                .await?
        }
        RulesCommand::Rotate { rule } => {
            s.api
                .post(&s.in_project(&["eventrules", rule, "rotate-secret"])?, None)
                .await?
        }
        RulesCommand::Redeliver { rule, delivery } => {
            s.api
                .post(
                    &s.in_project(&["eventrules", rule, "deliveries", delivery, "redeliver"])?,
                    None,
                )
                .await?
        }
        RulesCommand::Recover { rule, since } => {
            let since = since
                .parse::<i64>()
                .map_or_else(|_| json!(since), |ms| json!(ms));
            s.api
                .post(
                    &s.in_project(&["eventrules", rule, "recover"])?,
                    Some(json!({ "since": since })),
                )
                .await?
        }
    };
    let format = match ctx.output {
        Format::Table => Format::Yaml,
        f => f,
    };
    output::print_document(format, &data)?;
    if let RulesCommand::Test { .. } = cmd {
        let ok = data["responseStatus"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s));
        if !ok {
            return Ok(Exit::Failed);
        }
    }
    Ok(Exit::Success)
}
