//! Pipelines: the list, a pipeline's YAML with editing (save-time errors shown with the API's
//! message, which names the line and column), its triggers, and "Run" with a form for its
//! runtime inputs.

use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde_json::{json, Value};

use super::projects::{managed_project, readable_project};
use super::{project_path, view, ConsoleError, InPage as _, Post, Signed};
use crate::domain::ids::{Identifier, ProjectRef};
use crate::domain::pipeline::PipelineSpec;
use crate::domain::BodyFormat;
use crate::error::Error;
use crate::service::{require_manage, require_read, Gateway};

const P: &str = "/accounts/{acc}/orgs/{org}/projects/{proj}";
/// Pipelines per page, and triggers shown on a pipeline's page.
const PAGE: u32 = 50;

const NEW_PIPELINE: &str = "pipeline:
  name: Build
  identifier: build
  stages:
    - stage:
        name: Build
        identifier: build
        steps:
          - step:
              identifier: compile
              type: Run
              timeout: 10m
              spec:
                shell: sh
                command: echo building
";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource(format!("{P}/pipelines"))
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        super::resource(format!("{P}/pipelines/{{pipe}}"))
            .route(web::get().to(show))
            .route(web::post().to(save)),
    )
    .service(super::resource(format!("{P}/pipelines/{{pipe}}/run")).route(web::post().to(run)));
}

/// The identifier at `pointer` (such as `/pipeline/identifier`) of a YAML document: what a
/// new document's page is called.
pub(super) fn yaml_identifier(text: &str, pointer: &str) -> Result<Identifier, Error> {
    let doc: Value = BodyFormat::Yaml.parse(text)?;
    let field = pointer.trim_start_matches('/').replace('/', ".");
    let id = doc
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidRequest(format!("Invalid request: the YAML needs {field}")))?;
    Ok(Identifier::parse(id, &field)?)
}

async fn list(
    req: HttpRequest,
    signed: Signed,
    q: web::Query<std::collections::HashMap<String, String>>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let project = managed_project(&req, &signed, &gw).await.in_page(&signed)?;
    list_page(
        &signed,
        &gw,
        &project,
        q.get("cursor").map(String::as_str),
        None,
    )
    .await
    .in_page(&signed)
}

async fn list_page(
    signed: &Signed,
    gw: &Gateway,
    project: &ProjectRef,
    cursor: Option<&str>,
    draft: Option<(&str, &str)>,
) -> Result<HttpResponse, ConsoleError> {
    let page = gw.store.list_pipelines(project, cursor, PAGE).await?;
    let base = project_path(project);
    let (error, text) = draft.map_or((None, NEW_PIPELINE), |(e, t)| (Some(e), t));
    let body = html! {
        @if page.items.is_empty() && cursor.is_none() {
            div.empty { "No pipelines yet: create one below, or with " code { "triggerd apply -f pipeline.yaml" } "." }
        } @else {
            table {
                thead { tr { th { "Pipeline" } th { "Name" } th { "Stages" } th { "Updated" } } }
                tbody {
                    @for p in &page.items {
                        tr {
                            td { a href=(format!("{base}/pipelines/{}", p.identifier)) { (p.identifier) } }
                            td { (p.name) }
                            td { (p.spec.pointer("/pipeline/stages").and_then(Value::as_array).map_or(0, Vec::len)) }
                            td { (view::when(p.updated_at)) }
                        }
                    }
                }
            }
            (view::pager(&format!("{base}/pipelines"), &[], page.next_cursor.as_deref()))
        }
        h2 #new { "New pipeline" }
        (view::YamlForm { action: &format!("{base}/pipelines"), label: "Pipeline YAML", text, error, button: "Create pipeline", extra: html! {} }.render(signed))
    };
    let status = view::status_for(error.is_some());
    Ok(view::render(
        status,
        "Pipelines",
        Some(signed),
        Some(project),
        body,
    ))
}

async fn create(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let project = managed_project(&req, signed, &gw).await.in_page(signed)?;
    let text = post.raw("yaml");
    let stored = async {
        let id = yaml_identifier(text, "/pipeline/identifier")?;
        if gw.store.get_pipeline(&project, &id).await?.is_some() {
            return Err(Error::Duplicate(format!(
                "Pipeline {id} already exists in {project}; edit it on its own page"
            )));
        }
        gw.put_pipeline(&project, &id, text, BodyFormat::Yaml, false)
            .await?;
        Ok(id)
    };
    match stored.await {
        Ok(id) => Ok(view::see_other(&format!(
            "{}/pipelines/{id}",
            project_path(&project)
        ))),
        Err(e) if e.status() < 500 => list_page(
            signed,
            &gw,
            &project,
            None,
            Some((&e.public_message(), text)),
        )
        .await
        .in_page(signed),
        Err(e) => Err(e).in_page(signed),
    }
}

async fn show(
    req: HttpRequest,
    signed: Signed,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    // Any key that may run the pipeline sees its page; only a managing key its YAML and triggers.
    let project = readable_project(&req, &signed, &gw)
        .await
        .in_page(&signed)?;
    let id = crate::http::path_identifier(&req, "pipe", "pipelineIdentifier").in_page(&signed)?;
    pipeline_page(&signed, &gw, &project, &id, None)
        .await
        .in_page(&signed)
}

/// A refused edit or run, shown on the pipeline's page.
enum Refused<'a> {
    Save { error: String, text: &'a str },
    Run { error: String },
}

async fn pipeline_page(
    signed: &Signed,
    gw: &Gateway,
    project: &ProjectRef,
    id: &Identifier,
    refused: Option<Refused<'_>>,
) -> Result<HttpResponse, ConsoleError> {
    let record = gw
        .store
        .get_pipeline(project, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("Pipeline {id} does not exist in {project}")))?;
    let spec = PipelineSpec::from_value(&record.spec).map_err(Error::from)?;
    let manages = require_manage(&signed.principal, &project.account).is_ok();
    let triggers = if manages {
        gw.list_triggers(project, id, None, PAGE).await?.items
    } else {
        Vec::new()
    };
    let base = format!("{}/pipelines/{id}", project_path(project));
    let stored_yaml = spec.to_yaml();
    let (save_error, text, run_error) = match &refused {
        Some(Refused::Save { error, text }) => (Some(error.as_str()), *text, None),
        Some(Refused::Run { error }) => (None, stored_yaml.as_str(), Some(error.as_str())),
        None => (None, stored_yaml.as_str(), None),
    };
    let body = html! {
        p.hint { "Updated " (view::when(record.updated_at)) " · "
            a href=(format!("{}/executions?pipelineIdentifier={id}", project_path(project))) { "Executions of this pipeline" } }
        h2 { "Run" }
        @if let Some(e) = run_error { (view::error_box(e)) }
        (run_form(signed, &base, &spec))
        @if !manages {
            p.muted { "Your key may run this pipeline; its definition and triggers need an admin key." }
        } @else {
        h2 { "Triggers" }
        @if triggers.is_empty() {
            div.empty {
                "No triggers yet: create one to start this pipeline from a webhook. "
                a href=(format!("{}/triggers?pipelineIdentifier={id}#new", project_path(project))) { "Create a trigger" }
            }
        } @else {
            table {
                thead { tr { th { "Trigger" } th { "Enabled" } th { "Webhook URL" } } }
                tbody {
                    @for t in &triggers {
                        tr {
                            td { a href=(format!("{base}/triggers/{}", t.identifier)) { (t.identifier) } }
                            td { @if t.enabled { "yes" } @else { span.muted { "no" } } }
                            td { code { (t.webhook_url) } }
                        }
                    }
                }
            }
        }
        h2 #edit { "YAML" }
        (view::YamlForm { action: &base, label: "Pipeline YAML", text, error: save_error, button: "Save", extra: html! {} }.render(signed))
        }
    };
    let status = view::status_for(refused.is_some());
    Ok(view::render(
        status,
        &format!("Pipeline {id}"),
        Some(signed),
        Some(project),
        body,
    ))
}

/// "Run": one field per runtime input (`<+input>` variable), with its default.
fn run_form(signed: &Signed, base: &str, spec: &PipelineSpec) -> Markup {
    html! {
        form method="post" action=(format!("{base}/run")) {
            (view::csrf(signed))
            @for v in spec.runtime_inputs() {
                @let field = format!("input.{}", v.name);
                label for=(field) { (v.name) " " span.muted { "(" (v.var_type.as_str()) ")" } }
                input type="text" id=(field) name=(field)
                    value=(v.default.as_ref().map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_owned)).unwrap_or_default())
                    required[v.default.is_none()];
                @if let Some(d) = &v.description { p.hint { (d) } }
            }
            button type="submit" { "Run pipeline" }
        }
    }
}

async fn save(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let project = managed_project(&req, signed, &gw).await.in_page(signed)?;
    let id = crate::http::path_identifier(&req, "pipe", "pipelineIdentifier").in_page(signed)?;
    let text = post.raw("yaml");
    match gw
        .put_pipeline(&project, &id, text, BodyFormat::Yaml, false)
        .await
    {
        Ok(_) => Ok(view::see_other(&format!(
            "{}/pipelines/{id}",
            project_path(&project)
        ))),
        Err(e) if e.status() < 500 => {
            let refused = Refused::Save {
                error: e.public_message(),
                text,
            };
            pipeline_page(signed, &gw, &project, &id, Some(refused))
                .await
                .in_page(signed)
        }
        Err(e) => Err(e).in_page(signed),
    }
}

async fn run(
    req: HttpRequest,
    post: Post,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ConsoleError> {
    let signed = &post.signed;
    let project = readable_project(&req, signed, &gw).await.in_page(signed)?;
    // Running is the API's execute rule (any key that may execute here), not management.
    require_read(&signed.principal, &project).in_page(signed)?;
    let id = crate::http::path_identifier(&req, "pipe", "pipelineIdentifier").in_page(signed)?;
    let record = gw
        .store
        .get_pipeline(&project, &id)
        .await
        .in_page(signed)?
        .ok_or_else(|| Error::NotFound(format!("Pipeline {id} does not exist in {project}")))
        .in_page(signed)?;
    let spec = PipelineSpec::from_value(&record.spec)
        .map_err(Error::from)
        .in_page(signed)?;
    let variables: Vec<Value> = spec
        .runtime_inputs()
        .filter_map(|v| {
            // As text: the runtime input reads a Number from it exactly as from a webhook's
            // inputYaml (an integer stays an integer), and refuses it with the same message.
            let given = post.fields.get(&format!("input.{}", v.name))?.trim();
            if given.is_empty() && v.default.is_some() {
                return None;
            }
            Some(json!({"name": v.name, "value": given}))
        })
        .collect();
    let input = (!variables.is_empty())
        .then(|| {
            serde_yaml_ng::to_string(
                &json!({"pipeline": {"identifier": id.as_str(), "variables": variables}}),
            )
        })
        .transpose()
        .map_err(|e| {
            Error::InvalidRequest(format!(
                "Invalid request: the inputs could not be written as YAML: {e}"
            ))
        })
        .in_page(signed)?;
    match gw.execute_pipeline(&project, &id, input.as_deref()).await {
        Ok(x) => Ok(view::see_other(&format!(
            "{}/executions/{}",
            project_path(&project),
            x.plan_execution_id
        ))),
        Err(e)
            if e.status() < 500 && require_manage(&signed.principal, &project.account).is_ok() =>
        {
            let refused = Refused::Run {
                error: e.public_message(),
            };
            pipeline_page(signed, &gw, &project, &id, Some(refused))
                .await
                .in_page(signed)
        }
        Err(e) => Err(e).in_page(signed),
    }
}
