//! The page frame and the small widgets every console page uses: status badges, times,
//! durations, copy buttons, pagers, and the hidden CSRF field.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use maud::{html, Markup, DOCTYPE};

use super::session::Signed;
use crate::domain::ids::ProjectRef;
use crate::store::{now_millis, Millis};

/// A full page: the frame, the navigation for `project` when given, and `body`.
pub(crate) fn render(
    status: StatusCode,
    title: &str,
    signed: Option<&Signed>,
    project: Option<&ProjectRef>,
    body: Markup,
) -> HttpResponse {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · triggerd" }
                link rel="stylesheet" href=(*super::assets::CSS_PATH);
                script src=(*super::assets::JS_PATH) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { "triggerd" }
                    @if let Some(p) = project {
                        nav aria-label="Project" {
                            a.scope href="/ui/projects" title="Change project" { (p.account) " / " (p.org) " / " (p.project) }
                            @let base = super::project_path(p);
                            @let manages = signed.is_some_and(|s| s.principal.can_manage(&p.account));
                            @if manages {
                                a href=(format!("{base}/pipelines")) { "Pipelines" }
                                a href=(format!("{base}/triggers")) { "Triggers" }
                            }
                            a href=(format!("{base}/executions")) { "Executions" }
                            a href=(format!("{base}/events")) { "Events" }
                            @if manages {
                                a href=(format!("{base}/eventrules")) { "Event rules" }
                                a href=(format!("{base}/settings")) { "Settings" }
                            }
                        }
                    } @else if signed.is_some() {
                        nav aria-label="Console" { a href="/ui/projects" { "Projects" } }
                    }
                    @if let Some(s) = signed {
                        div.who {
                            @if s.principal.is_root() {
                                a href="/ui/projects" title="Every account" { "root key" }
                            } @else {
                                a href=(format!("/ui/accounts/{}/keys", s.principal.account)) title="API keys of this account" {
                                    (s.principal.account) " · " (s.principal.role.as_str())
                                }
                            }
                            form.inline method="post" action="/ui/signout" {
                                (csrf(s))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.into_string())
}

/// A 200 page.
pub(crate) fn ok(
    title: &str,
    signed: &Signed,
    project: Option<&ProjectRef>,
    body: Markup,
) -> HttpResponse {
    render(StatusCode::OK, title, Some(signed), project, body)
}

/// 303 to `to` (after a form post, so that Back and reload do not post again).
pub(crate) fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.session.csrf); }
}

/// The hidden one-time token of a form that makes a secret (see `Post::once`).
pub(crate) fn once() -> Markup {
    html! { input type="hidden" name="once" value=(super::session::random_token()); }
}

/// A status as a coloured badge; the colour class is derived from the status.
pub(crate) fn badge(status: &str) -> Markup {
    let class = match status {
        code if code.parse::<u16>().is_ok() => {
            if code.starts_with('2') {
                "good"
            } else {
                "bad"
            }
        }
        "Enabled" | "On" => "good",
        "Success" | "SUCCESS" | "Delivered" | "TARGET_EXECUTION_REQUESTED" | "Matched" => "good",
        "Failed"
        | "Errored"
        | "Aborted"
        | "Rejected"
        | "Expired"
        | "FAILED"
        | "Dead"
        | "INVALID_RUNTIME_INPUT_YAML"
        | "EXCEPTION" => "bad",
        "Running" | "Queued" | "Pending" | "Retrying" | "QUEUED" => "busy",
        "ApprovalWaiting" | "Paused" | "InterventionWaiting" | "AsyncWaiting" => "wait",
        _ => "plain",
    };
    html! { span class=(format!("badge {class}")) { (status) } }
}

/// A time as "3 min ago", with the absolute UTC time on hover.
pub(crate) fn when(ms: Millis) -> Markup {
    let iso = chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    html! { time datetime=(iso) title=(iso) { (relative(now_millis() - ms)) } }
}

/// An optional time; a dash when absent.
pub(crate) fn when_opt(ms: Option<Millis>) -> Markup {
    match ms {
        Some(ms) => when(ms),
        None => html! { span.muted { "—" } },
    }
}

fn relative(ago_ms: Millis) -> String {
    let s = ago_ms / 1000;
    match s {
        i64::MIN..=4 => "just now".to_owned(),
        5..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// How long something took (or has taken so far).
pub(crate) fn duration(start: Option<Millis>, end: Option<Millis>) -> String {
    let Some(start) = start else {
        return "—".to_owned();
    };
    let ms = end.unwrap_or_else(now_millis) - start;
    match ms {
        i64::MIN..=999 => format!("{}ms", ms.max(0)),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// A read-only value with a "Copy" button (the button appears when JavaScript runs).
pub(crate) fn copyable(id: &str, label: &str, value: &str) -> Markup {
    html! {
        div.copyable {
            label for=(id) { (label) }
            div.row {
                textarea id=(id) readonly rows=(value.len() / 90 + 1) { (value) }
                button.copy type="button" data-copy=(id) hidden { "Copy" }
            }
        }
    }
}

/// "Next page" for a list, keeping the other query parameters.
pub(crate) fn pager(path: &str, query: &[(&str, &str)], next: Option<&str>) -> Markup {
    let Some(cursor) = next else {
        return html! {};
    };
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query
        .iter()
        .filter(|(k, v)| *k != "cursor" && !v.is_empty())
    {
        q.append_pair(k, v);
    }
    q.append_pair("cursor", cursor);
    html! { p.pager { a href=(format!("{path}?{}", q.finish())) { "Next page →" } } }
}

/// A YAML document's form: the refusal of the last save (the API's message, with its line and
/// column), the text as typed, and the button. `extra` goes inside the form (a one-time token).
pub(crate) struct YamlForm<'a> {
    pub action: &'a str,
    pub label: &'a str,
    pub text: &'a str,
    pub error: Option<&'a str>,
    pub button: &'a str,
    pub extra: Markup,
}

impl YamlForm<'_> {
    pub(crate) fn render(&self, signed: &Signed) -> Markup {
        html! {
            @if let Some(e) = self.error { (error_box(e)) }
            form method="post" action=(self.action) {
                (csrf(signed))
                (self.extra)
                label for="yaml" { (self.label) }
                textarea #yaml name="yaml" rows=(self.text.lines().count().clamp(12, 40)) spellcheck="false" { (self.text) }
                button type="submit" { (self.button) }
            }
        }
    }
}

/// 400 when a form was refused and is shown again, else 200.
pub(crate) fn status_for(refused: bool) -> StatusCode {
    if refused {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

/// A message shown in the page when a form was refused, with the API's own words.
pub(crate) fn error_box(message: &str) -> Markup {
    html! { div.error role="alert" { (message) } }
}

/// A one-time secret, shown once after it was created.
pub(crate) fn secret_once(label: &str, value: &str) -> Markup {
    html! {
        div.secret role="status" {
            p { strong { (label) } " — shown only this once; store it now." }
            (copyable("secret", "Secret", value))
        }
    }
}

/// JSON pretty-printed for a `<pre>`.
pub(crate) fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A body or payload for a `<pre>`: pretty JSON when it parses, else as received.
pub(crate) fn pretty_text(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| pretty(&v))
        .unwrap_or_else(|_| text.to_owned())
}

/// An event's `conditionResults`: expected, actual and matched for every condition.
pub(crate) fn conditions(results: &serde_json::Value) -> Markup {
    let rows = results.as_array().map(Vec::as_slice).unwrap_or_default();
    html! {
        @if rows.is_empty() {
            p.muted { "The trigger has no conditions: every payload fires it." }
        } @else {
            table.conditions {
                thead { tr { th { "Type" } th { "Key" } th { "Operator" } th { "Expected" } th { "Actual" } th { "Matched" } } }
                tbody {
                    @for r in rows {
                        @let matched = r["matched"].as_bool().unwrap_or(false);
                        tr {
                            td { (r["type"].as_str().unwrap_or("")) }
                            td { code { (r["key"].as_str().unwrap_or("")) } }
                            td { (r["operator"].as_str().unwrap_or("")) }
                            td { code { (r["expected"].as_str().unwrap_or("")) } }
                            td {
                                @match r["actual"].as_str() {
                                    Some(a) => code { (a) },
                                    None => span.muted { "(missing)" },
                                }
                                @if let Some(e) = r["error"].as_str() { br; span.muted { (e) } }
                            }
                            td { @if matched { span.badge.good { "yes" } } @else { span.badge.bad { "no" } } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(1_000), "just now");
        assert_eq!(relative(12_000), "12 s ago");
        assert_eq!(relative(180_000), "3 min ago");
        assert_eq!(relative(7_200_000), "2 h ago");
        assert_eq!(relative(3 * 86_400_000), "3 d ago");
    }

    #[test]
    fn durations_pick_their_unit() {
        assert_eq!(duration(Some(0), Some(250)), "250ms");
        assert_eq!(duration(Some(0), Some(2_500)), "2.5s");
        assert_eq!(duration(Some(0), Some(125_000)), "2m 5s");
        assert_eq!(duration(None, None), "—");
    }

    #[test]
    fn text_is_escaped() {
        let m = html! { p { ("<script>alert(1)</script>") } };
        assert!(!m.into_string().contains("<script>"));
    }
}
