//! URLs and the cURL snippet that responses hand out (DESIGN §2.1, §3.1).

use crate::domain::ids::ProjectRef;
use crate::store::TriggerRecord;

/// Quotes `s` for a POSIX shell: single quotes, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `<public_url>/webhook/custom/<token>/v3?...` with every identifier.
pub fn webhook_url(public_url: &str, t: &TriggerRecord) -> String {
    format!(
        "{public_url}/webhook/custom/{}/v3?accountIdentifier={}&orgIdentifier={}&projectIdentifier={}&pipelineIdentifier={}&triggerIdentifier={}",
        t.token, t.scope.account, t.scope.org, t.scope.project, t.pipeline, t.identifier
    )
}

/// The ready-to-paste cURL; carries `X-Api-Key` exactly when the mandate is on.
pub fn curl(public_url: &str, t: &TriggerRecord, key_required: bool) -> String {
    let key = if key_required {
        " -H 'X-Api-Key: sample_api_key'"
    } else {
        ""
    };
    format!(
        "curl -X POST -H 'content-type: application/json'{key} --url {} -d '{{\"sample_key\": \"sample_value\"}}'",
        shell_quote(&webhook_url(public_url, t))
    )
}

/// The status URL of an event.
pub fn api_url(public_url: &str, event_id: &str, account: &str) -> String {
    format!("{public_url}/webhook/triggerExecutionDetails/{event_id}?accountIdentifier={account}")
}

/// The console page of an event: why it fired or did not, and its execution (DESIGN §12).
pub fn ui_url(public_url: &str, p: &ProjectRef, event_id: &str) -> String {
    format!(
        "{public_url}/ui/accounts/{}/orgs/{}/projects/{}/events/{event_id}",
        p.account, p.org, p.project
    )
}

/// The console page of a trigger: its URL, cURL, recent events and YAML.
pub fn ui_setup_url(public_url: &str, p: &ProjectRef, pipeline: &str, trigger: &str) -> String {
    format!(
        "{public_url}/ui/accounts/{}/orgs/{}/projects/{}/pipelines/{pipeline}/triggers/{trigger}",
        p.account, p.org, p.project
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
