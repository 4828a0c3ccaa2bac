//! The command line (DESIGN §13): the real `triggerd` binary, run as a child process against
//! the real server on loopback, with its own HOME so profiles land in a temporary directory.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, success_data, TestApp};

/// What a run of the binary gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn expect(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code; {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }
}

/// A user: a HOME of their own, and the server's URL and key in the environment or a profile.
struct User {
    home: TempDir,
    env: Vec<(String, String)>,
}

impl User {
    fn new() -> Self {
        Self {
            home: TempDir::new().expect("home"),
            env: Vec::new(),
        }
    }

    /// A user whose environment names `app` and `key`, acting in `project`.
    fn with_env(app: &TestApp, key: &str, project: &str) -> Self {
        let mut user = Self::new();
        user.env = vec![
            ("TRIGGERD_URL".into(), app.address.clone()),
            ("TRIGGERD_API_KEY".into(), key.into()),
            ("TRIGGERD_PROJECT".into(), project.into()),
        ];
        user
    }

    fn dir(&self) -> &Path {
        self.home.path()
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, "", &[]).await
    }

    /// The binary with this user's HOME and environment (nothing else of the test's).
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_triggerd"));
        cmd.args(args)
            .current_dir(self.dir())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir())
            .env("XDG_CONFIG_HOME", self.dir().join(".config"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run_with(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the triggerd binary starts");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).await.expect("stdin");
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("triggerd {args:?} did not finish within 60 s"))
            .expect("output");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the binary with stdout piped, for commands that keep printing.
    fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null()).stderr(Stdio::inherit());
        cmd.spawn().expect("the triggerd binary starts")
    }

    fn write(&self, rel: &str, text: &str) -> String {
        let path = self.dir().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// An account `acme` with project `acme/default/payments` and an admin key of it.
async fn acme(app: &TestApp) -> String {
    app.create_project("acme", "default", "payments").await;
    app.create_key("acme", "admin", None).await
}

const PROJECT: &str = "acme/default/payments";

/// `key` with its last character replaced by another, so the secret is wrong (a plain `x`
/// would leave a key that ends in `x` unchanged, one time in 64).
fn with_last_char_changed(key: &str) -> String {
    let (head, last) = key.split_at(key.len() - 1);
    format!("{head}{}", if last == "x" { "y" } else { "x" })
}

fn pipeline_doc(id: &str, command: &str) -> String {
    format!(
        "kind: Pipeline\naccount: acme\norg: default\nproject: payments\npipeline:\n  name: {id}\n  identifier: {id}\n  stages:\n    - stage:\n        identifier: build\n        name: Build\n        steps:\n          - step:\n              identifier: run\n              type: Run\n              timeout: 1m\n              spec:\n                shell: sh\n                command: {command}\n"
    )
}

fn trigger_doc(pipeline: &str, id: &str, condition: Option<&str>) -> String {
    let conditions = match condition {
        Some(value) => format!(
            "\n          - key: <+trigger.payload.ref>\n            operator: Equals\n            value: {value}"
        ),
        None => " []".into(),
    };
    format!(
        "kind: Trigger\naccount: acme\norg: default\nproject: payments\ntrigger:\n  name: {id}\n  identifier: {id}\n  pipelineIdentifier: {pipeline}\n  enabled: true\n  source:\n    type: Webhook\n    spec:\n      type: Custom\n      spec:\n        payloadConditions:{conditions}\n        headerConditions: []\n"
    )
}

const RULE_DOC: &str = "kind: EventRule\naccount: acme\norg: default\nproject: payments\neventRule:\n  identifier: ops\n  name: Ops\n  enabled: false\n  events: [pipeline_end]\n  pipelines: ['*']\n  url: http://127.0.0.1:9/events\n  headers:\n    X-Team: ops\n";

const SETTING_DOC: &str = "kind: Setting\naccount: acme\norg: default\nproject: payments\nsetting:\n  name: mandate_custom_webhook_authorization\n  value: true\n";

#[tokio::test]
async fn login_keeps_the_key_in_a_private_profile_and_refuses_bad_keys_in_one_line() {
    let app = spawn_app().await;
    let key = acme(&app).await;
    let user = User::new();

    let run = user
        .run_with(&["login", "--url", &app.address], &format!("{key}\n"), &[])
        .await;
    run.expect(0);
    assert!(run.stdout.contains("account acme"), "{run:#?}");
    let profile = user.dir().join(".config/triggerd/profiles.toml");
    let text = std::fs::read_to_string(&profile).expect("profile written");
    assert!(text.contains(&app.address) && text.contains(&key), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&profile).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the profile holds a key");
    }
    let run = user.run(&["use", PROJECT]).await;
    run.expect(0);
    let run = user.run(&["whoami"]).await;
    run.expect(0);
    assert!(
        run.stdout.contains("admin") && run.stdout.contains(PROJECT),
        "{run:#?}"
    );
    let run = user.run(&["whoami", "-o", "json"]).await;
    assert_eq!(run.expect(0).json()["accountIdentifier"], "acme");

    // A wrong key: refused (1), one line, and the profile keeps the old key.
    let wrong = with_last_char_changed(&key);
    let run = user
        .run_with(&["login", "--url", &app.address], &wrong, &[])
        .await;
    run.expect(1);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(run.stderr.contains("INVALID_TOKEN"), "{run:#?}");
    assert!(std::fs::read_to_string(&profile).unwrap().contains(&key));
    // The environment overrides the profile.
    let run = user
        .run_with(&["whoami"], "", &[("TRIGGERD_API_KEY", &wrong)])
        .await;
    run.expect(1);
    assert!(run.stderr.contains("INVALID_TOKEN"), "{run:#?}");

    // The key never comes from argv; no key at all is a usage error.
    user.run(&["login", "--url", &app.address, "--key", &key])
        .await
        .expect(3);
    let run = user
        .run_with(&["login", "--url", &app.address], "", &[])
        .await;
    run.expect(3);
    assert!(run.stderr.contains("no API key"), "{run:#?}");

    // A server that is not there: exit 3, one line naming it.
    let run = user
        .run_with(&["whoami"], "", &[("TRIGGERD_URL", "http://127.0.0.1:9")])
        .await;
    run.expect(3);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(
        run.stderr.contains("cannot reach http://127.0.0.1:9"),
        "{run:#?}"
    );
}

#[tokio::test]
async fn apply_twice_changes_nothing_and_export_round_trips() {
    let app = spawn_app().await;
    let key = acme(&app).await;
    let user = User::with_env(&app, &key, PROJECT);
    user.write(
        "config/pipelines/build.yaml",
        &pipeline_doc("build", "echo built"),
    );
    user.write(
        "config/triggers.yaml",
        &format!(
            "{}---\n{}",
            trigger_doc("build", "on_push", None),
            trigger_doc("build", "on_main", Some("refs/heads/main"))
        ),
    );
    user.write("config/rules/ops.yaml", RULE_DOC);
    user.write("config/settings.yml", SETTING_DOC);
    user.write("config/notes.txt", "not a document");

    let first = user.run(&["apply", "-f", "config", "-o", "json"]).await;
    let actions = first.expect(0).json();
    let created: Vec<&str> = actions
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "created")
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        ["Setting", "Pipeline", "Trigger", "Trigger", "EventRule"],
        "{first:#?}"
    );
    let stored = app
        .with_key(
            Method::GET,
            "/api/v1/accounts/acme/orgs/default/projects/payments/pipelines/build/triggers/on_main",
            &key,
        )
        .send()
        .await
        .unwrap();
    let trigger = success_data(stored).await;
    let updated_at = trigger["updatedAt"].clone();

    let second = user.run(&["apply", "-f", "config", "-o", "json"]).await;
    let actions = second.expect(0).json();
    assert!(
        actions
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] == "unchanged"),
        "{second:#?}"
    );
    assert_eq!(actions.as_array().unwrap().len(), 5);
    let again = app
        .with_key(
            Method::GET,
            "/api/v1/accounts/acme/orgs/default/projects/payments/pipelines/build/triggers/on_main",
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        success_data(again).await["updatedAt"],
        updated_at,
        "not rewritten"
    );

    // export -> apply round-trips.
    let run = user.run(&["export", "--dir", "exported"]).await;
    run.expect(0);
    assert_eq!(run.stdout.lines().count(), 5, "{run:#?}");
    let third = user.run(&["apply", "-f", "exported", "-o", "json"]).await;
    let actions = third.expect(0).json();
    assert_eq!(actions.as_array().unwrap().len(), 5, "{third:#?}");
    assert!(
        actions
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] == "unchanged"),
        "{third:#?}"
    );

    // --dry-run shows the change and makes none.
    user.write(
        "config/pipelines/build.yaml",
        &pipeline_doc("build", "echo rebuilt"),
    );
    let run = user.run(&["apply", "-f", "config", "--dry-run"]).await;
    run.expect(0);
    assert!(
        run.stderr
            .contains("would change  Pipeline   acme/default/payments/build"),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("+") && run.stderr.contains("echo rebuilt"),
        "{run:#?}"
    );
    let res = app
        .with_key(
            Method::GET,
            "/api/v1/accounts/acme/orgs/default/projects/payments/pipelines/build",
            &key,
        )
        .send()
        .await
        .unwrap();
    assert!(success_data(res).await["yaml"]
        .as_str()
        .unwrap()
        .contains("echo built"));
    let run = user.run(&["apply", "-f", "config"]).await;
    run.expect(0);
    assert!(run.stderr.contains("changed       Pipeline"), "{run:#?}");
}

#[tokio::test]
async fn prune_deletes_only_with_confirmation_and_dry_run_deletes_nothing() {
    let app = spawn_app().await;
    let key = acme(&app).await;
    let user = User::with_env(&app, &key, PROJECT);
    user.write("config/build.yaml", &pipeline_doc("build", "'true'"));
    user.write("config/t1.yaml", &trigger_doc("build", "keep", None));
    user.write("config/t2.yaml", &trigger_doc("build", "drop", None));
    user.run(&["apply", "-f", "config"]).await.expect(0);
    std::fs::remove_file(user.dir().join("config/t2.yaml")).unwrap();

    let run = user
        .run(&["apply", "-f", "config", "--prune", "--dry-run"])
        .await;
    run.expect(0);
    assert!(
        run.stderr
            .contains("would delete  Trigger    acme/default/payments/build/drop"),
        "{run:#?}"
    );
    assert_eq!(trigger_names(&user).await, ["drop", "keep"]);

    // Not a terminal and no --yes: refused, nothing deleted.
    let run = user.run(&["apply", "-f", "config", "--prune"]).await;
    run.expect(3);
    assert!(run.stderr.contains("--yes"), "{run:#?}");
    assert_eq!(trigger_names(&user).await, ["drop", "keep"]);

    let run = user
        .run(&["apply", "-f", "config", "--prune", "--yes"])
        .await;
    run.expect(0);
    assert!(
        run.stderr
            .contains("deleted       Trigger    acme/default/payments/build/drop"),
        "{run:#?}"
    );
    assert_eq!(trigger_names(&user).await, ["keep"]);
}

#[tokio::test]
async fn a_malformed_or_refused_document_is_named_and_changes_nothing() {
    let app = spawn_app().await;
    let key = acme(&app).await;
    let user = User::with_env(&app, &key, PROJECT);
    let bad = user.write("bad.yaml", "kind: Pipeline\naccount: acme\norg: default\n");
    let run = user.run(&["apply", "-f", &bad]).await;
    run.expect(3);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(
        run.stderr.contains("bad.yaml") && run.stderr.contains("`org` and `project`"),
        "{run:#?}"
    );

    // The server refuses the second document: the first is not written either.
    let mixed = format!(
        "{}---\n{}",
        pipeline_doc("good", "'true'"),
        pipeline_doc("bad", "echo <+trigger.payload.x>")
    );
    let path = user.write("mixed.yaml", &mixed);
    let run = user.run(&["apply", "-f", &path]).await;
    run.expect(1);
    assert!(run.stderr.contains("mixed.yaml (document 2)"), "{run:#?}");
    assert!(run.stderr.contains("nothing was changed"), "{run:#?}");
    let run = user.run(&["get", "pipelines", "-o", "json"]).await;
    assert_eq!(run.expect(0).json(), serde_json::json!([]));

    // A server that is not there: exit 3 at once, one line, not one per document.
    let run = user
        .run_with(
            &["apply", "-f", &path],
            "",
            &[("TRIGGERD_URL", "http://127.0.0.1:9")],
        )
        .await;
    run.expect(3);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
}

#[tokio::test]
async fn a_pipeline_and_its_trigger_can_change_together() {
    let app = spawn_app().await;
    let key = acme(&app).await;
    let user = User::with_env(&app, &key, PROJECT);
    let docs = [
        pipeline_doc("build", "'true'"),
        trigger_doc("build", "go", None),
    ]
    .join("---\n");
    let path = user.write("c.yaml", &docs);
    user.run(&["apply", "-f", &path]).await.expect(0);
    // The pipeline gains a runtime input and the trigger fills it, in one apply.
    let pipeline = pipeline_doc("build", "'echo $TAG'").replace(
        "  stages:\n",
        "  variables:\n    - name: tag\n      type: String\n      value: <+input>\n  stages:\n",
    );
    let trigger = format!(
        "{}  inputYaml: |\n    pipeline:\n      identifier: build\n      variables:\n        - name: tag\n          type: String\n          value: <+trigger.payload.tag>\n",
        trigger_doc("build", "go", None)
    );
    let path = user.write("c.yaml", &[pipeline, trigger].join("---\n"));
    let run = user.run(&["apply", "-f", &path, "--dry-run"]).await;
    run.expect(0);
    assert!(run.stderr.contains("would check"), "{run:#?}");
    let run = user.run(&["apply", "-f", &path]).await;
    run.expect(0);
    assert!(run.stderr.contains("changed       Trigger"), "{run:#?}");
    let run = user.run(&["apply", "-f", &path, "-o", "json"]).await;
    let actions = run.expect(0).json();
    assert!(
        actions
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] == "unchanged"),
        "{run:#?}"
    );
}

#[tokio::test]
async fn fire_exit_codes_tell_success_failure_and_no_match() {
    let app = spawn_app().await;
    let key = acme(&app).await;
    let user = User::with_env(&app, &key, PROJECT);
    let docs = [
        pipeline_doc("ok", "echo fine"),
        pipeline_doc("broken", "echo oops >&2; exit 3"),
        trigger_doc("ok", "go", Some("refs/heads/main")),
        trigger_doc("broken", "go", None),
    ]
    .join("---\n");
    let path = user.write("all.yaml", &docs);
    user.run(&["apply", "-f", &path]).await.expect(0);

    let main = r#"{"ref":"refs/heads/main"}"#;
    let run = user.run(&["fire", "ok/go", "--data", main, "--wait"]).await;
    run.expect(0);
    assert!(run.stdout.contains("build/run  Success"), "{run:#?}");
    assert!(run.stdout.contains(": Success"), "{run:#?}");

    let run = user.run(&["fire", "broken/go", "--wait"]).await;
    run.expect(1);
    assert!(run.stdout.contains("build/run  Failed"), "{run:#?}");

    let payload = user.write("dev.json", r#"{"ref":"refs/heads/dev"}"#);
    let run = user
        .run(&["fire", "ok/go", "--data", &format!("@{payload}")])
        .await;
    run.expect(2);
    assert!(
        run.stderr
            .contains("NO_MATCHING_TRIGGER_FOR_PAYLOAD_CONDITIONS"),
        "{run:#?}"
    );
    let event_id = run.stdout.trim().to_owned();
    let run = user.run(&["status", &event_id]).await;
    run.expect(2);
    assert!(
        run.stdout.contains("refs/heads/dev"),
        "condition table: {run:#?}"
    );

    // A dry run shows every condition and stores nothing.
    let run = user
        .run_with(&["fire", "ok/go", "--data", "-", "--dry-run"], main, &[])
        .await;
    run.expect(0);
    assert!(
        run.stdout.contains("TARGET_EXECUTION_REQUESTED"),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("<+trigger.payload.ref>") && run.stdout.contains("yes"),
        "{run:#?}"
    );
    let events = user.run(&["get", "events", "-o", "json"]).await;
    assert_eq!(events.expect(0).json().as_array().unwrap().len(), 3);

    // Idempotency: the same key fires once.
    let first = user
        .run(&["fire", "broken/go", "--idempotency-key", "k1"])
        .await;
    let again = user
        .run(&["fire", "broken/go", "--idempotency-key", "k1"])
        .await;
    assert_eq!(first.expect(0).stdout, again.expect(0).stdout);
    assert!(again.stderr.contains("replayed"), "{again:#?}");

    // Usage errors exit 3.
    user.run(&["fire", "no-slash"]).await.expect(3);
    user.run(&["fire", "ok/go", "--header", "nocolon"])
        .await
        .expect(3);
    user.run(&["get", "bogus"]).await.expect(3);
    let run = user.run(&["fire", "ok/missing"]).await;
    run.expect(1);
    assert!(run.stderr.contains("RESOURCE_NOT_FOUND"), "{run:#?}");
}

#[tokio::test]
async fn logs_follow_a_running_step_line_by_line_to_its_end() {
    // One worker: a second execution waits in the queue while the first runs.
    let app = spawn_app_with(|s| s.workers = 1).await;
    let key = acme(&app).await;
    let user = User::with_env(&app, &key, PROJECT);
    let go = user.dir().join("go");
    let script = format!(
        "'echo first; echo oops >&2; while [ ! -f {} ]; do sleep 0.05; done; echo second'",
        go.display()
    );
    let docs = [
        pipeline_doc("slow", &script),
        trigger_doc("slow", "go", None),
    ]
    .join("---\n");
    let path = user.write("slow.yaml", &docs);
    user.run(&["apply", "-f", &path]).await.expect(0);
    let run = user.run(&["fire", "slow/go", "-o", "json"]).await;
    let event = run.expect(0).json();
    let event_id = event["eventCorrelationId"].as_str().unwrap();
    let status = app.get_status(event_id, "acme", Some(&key)).await;
    let execution = success_data(status).await["webhookProcessingDetails"]["pipelineExecutionId"]
        .as_str()
        .unwrap()
        .to_owned();

    // Once the step runs (a queued execution has no step to follow yet)...
    let detail_path =
        format!("/api/v1/accounts/acme/orgs/default/projects/payments/executions/{execution}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let detail = app
            .with_key(Method::GET, &detail_path, &key)
            .send()
            .await
            .unwrap();
        if success_data(detail).await["steps"][0]["status"] == "Running" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A queued execution has no steps yet: `logs -f` on its step waits for it.
    let run = user.run(&["fire", "slow/go", "-o", "json"]).await;
    let status = app
        .get_status(
            run.expect(0).json()["eventCorrelationId"].as_str().unwrap(),
            "acme",
            Some(&key),
        )
        .await;
    let queued = success_data(status).await["webhookProcessingDetails"]["pipelineExecutionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut waiting = user.spawn(&["logs", &queued, "build/run", "-f"]);

    // ...`logs -f` prints the first lines while the step still runs, then the rest, then ends.
    let mut child = user.spawn(&["logs", &execution, "build/run", "-f"]);
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let seen = read_until(
        &mut out,
        "first\n",
        "the first line arrives while the step runs",
    )
    .await;
    assert!(child.try_wait().unwrap().is_none(), "still following");
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the queued execution's follower waits for its step"
    );
    let detail = app
        .with_key(
            Method::GET,
            &format!("/api/v1/accounts/acme/orgs/default/projects/payments/executions/{execution}"),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(success_data(detail).await["steps"][0]["status"], "Running");

    // The live lines, with their stream and time, over the API.
    let lines = app
        .with_key(
            Method::GET,
            &format!("/api/v1/accounts/acme/orgs/default/projects/payments/executions/{execution}/logs/build/run?format=json"),
            &key,
        )
        .send()
        .await
        .unwrap();
    let lines = success_data(lines).await;
    assert_eq!(lines["complete"], false, "{lines}");
    let streams: Vec<(&str, &str)> = lines["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["stream"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert!(
        streams.contains(&("stdout", "first")) && streams.contains(&("stderr", "oops")),
        "{lines}"
    );
    assert!(lines["lines"][0]["ts"].as_i64().unwrap() > 0);

    std::fs::write(&go, "").unwrap();
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(30), out.read_to_string(&mut rest))
        .await
        .expect("follow ends with the step")
        .unwrap();
    assert!(rest.contains("second"), "{seen}{rest}");
    assert!(child.wait().await.unwrap().success());
    // The queued one ran after it (`go` exists now), and its follower printed it all.
    let mut queued_log = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        waiting
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut queued_log),
    )
    .await
    .expect("the queued execution's follower ends with its step")
    .unwrap();
    assert!(
        queued_log.contains("first") && queued_log.contains("second"),
        "{queued_log}"
    );
    assert!(waiting.wait().await.unwrap().success());

    let run = user.run(&["logs", &execution]).await;
    run.expect(0);
    assert!(
        run.stdout.contains("==> build/run (Success) <=="),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("first") && run.stdout.contains("second"),
        "{run:#?}"
    );
    let run = user.run(&["logs", &execution, "nope"]).await;
    run.expect(1);
    assert!(run.stderr.contains("its steps: build/run"), "{run:#?}");
}

#[tokio::test]
async fn get_lists_tables_and_keys_are_created_once_and_revoked() {
    let app = spawn_app().await;
    let key = acme(&app).await;
    let user = User::with_env(&app, &key, PROJECT);
    let path = user.write("p.yaml", &pipeline_doc("build", "'true'"));
    user.run(&["apply", "-f", &path]).await.expect(0);
    let run = user.run(&["get", "pipelines"]).await;
    run.expect(0);
    let mut lines = run.stdout.lines();
    assert!(
        lines.next().unwrap().starts_with("PIPELINE  NAME"),
        "{run:#?}"
    );
    assert!(
        lines.next().unwrap().starts_with("build     build"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains('\x1b'), "no colour off a terminal");
    let run = user.run(&["get", "pipelines", "build"]).await;
    assert!(
        run.expect(0).stdout.contains("identifier: build"),
        "{run:#?}"
    );
    let run = user.run(&["get", "triggers"]).await;
    assert!(run.expect(0).stdout.contains("No triggers yet"), "{run:#?}");
    let run = user.run(&["get", "executions", "--status", "bogus"]).await;
    run.expect(1);
    assert!(
        run.stderr.contains("ApprovalWaiting"),
        "names the accepted values: {run:#?}"
    );
    user.run(&["get", "executions", "--status", "success"])
        .await
        .expect(0);

    let run = user
        .run(&["keys", "create", "ci", "--role", "executor", "-o", "json"])
        .await;
    let created = run.expect(0).json();
    let id = created["identifier"].as_str().unwrap().to_owned();
    let executor = created["key"].as_str().unwrap().to_owned();
    let run = user.run(&["keys", "list"]).await;
    assert!(run.expect(0).stdout.contains(&id), "{run:#?}");
    assert!(!run.stdout.contains(&executor), "never the secret");
    user.run(&["keys", "revoke", &id]).await.expect(0);
    let run = user
        .run_with(&["whoami"], "", &[("TRIGGERD_API_KEY", &executor)])
        .await;
    run.expect(1);

    let run = user.run(&["completions", "bash"]).await;
    assert!(run.expect(0).stdout.contains("triggerd"), "{run:#?}");
    let run = user.run(&["fire", "--help"]).await;
    assert!(run.expect(0).stdout.contains("Examples:"), "{run:#?}");
}

#[tokio::test]
async fn init_and_reset_root_key_work_offline_and_the_root_key_variable_never_adds_a_second_key() {
    let user = User::new();
    let url = format!("sqlite://{}", user.dir().join("t.db").display());
    let run = user.run(&["init", "--database-url", &url]).await;
    run.expect(0);
    let first = root_key_in(&run.stdout);
    let run = user.run(&["init", "--database-url", &url]).await;
    run.expect(0);
    assert!(run.stdout.contains("already has a root key"), "{run:#?}");
    assert!(!run.stdout.contains("pat._root"), "printed once: {run:#?}");

    // Another key in TRIGGERD_ROOT_KEY is refused, not added.
    let other = "pat._root.0123456789abcdef01234567.abcdefghijklmnopqrstuvwxyz012345";
    let run = user
        .run_with(
            &["init", "--database-url", &url],
            "",
            &[("TRIGGERD_ROOT_KEY", other)],
        )
        .await;
    run.expect(1);
    assert!(run.stderr.contains("reset-root-key"), "{run:#?}");

    // The lost key is replaced; the old one is revoked.
    let run = user
        .run(&["admin", "reset-root-key", "--database-url", &url])
        .await;
    run.expect(0);
    assert!(run.stdout.contains("Revoked 1 root key(s)"), "{run:#?}");
    let second = root_key_in(&run.stdout);
    assert_ne!(first, second);

    // Resetting to the configured key makes it the one root key.
    let run = user
        .run_with(
            &["admin", "reset-root-key", "--database-url", &url],
            "",
            &[("TRIGGERD_ROOT_KEY", other)],
        )
        .await;
    run.expect(0);
    assert!(!run.stdout.contains("pat._root"), "{run:#?}");
    // Again with the same key: it stays, nothing else is left to revoke.
    let run = user
        .run_with(
            &["admin", "reset-root-key", "--database-url", &url],
            "",
            &[("TRIGGERD_ROOT_KEY", other)],
        )
        .await;
    run.expect(0);
    assert!(run.stdout.contains("Revoked 0 root key(s)"), "{run:#?}");
    // A revoked key cannot come back.
    let run = user
        .run_with(
            &["admin", "reset-root-key", "--database-url", &url],
            "",
            &[("TRIGGERD_ROOT_KEY", second.as_str())],
        )
        .await;
    run.expect(1);
    assert!(run.stderr.contains("revoked before"), "{run:#?}");
    user.run_with(
        &["init", "--database-url", &url],
        "",
        &[("TRIGGERD_ROOT_KEY", other)],
    )
    .await
    .expect(0);
    let run = user
        .run_with(
            &["init", "--database-url", &url],
            "",
            &[("TRIGGERD_ROOT_KEY", second.as_str())],
        )
        .await;
    run.expect(1);
    assert!(run.stderr.contains("revoked"), "{run:#?}");
}

async fn trigger_names(user: &User) -> Vec<String> {
    let run = user.run(&["get", "triggers", "-o", "json"]).await;
    run.expect(0)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["identifier"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads lines from a running command's stdout until they contain `needle` (at most 30 s);
/// returns everything read.
async fn read_until(
    out: &mut tokio::io::BufReader<tokio::process::ChildStdout>,
    needle: &str,
    what: &str,
) -> String {
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !seen.contains(needle) {
            let mut line = String::new();
            assert_ne!(
                out.read_line(&mut line).await.unwrap(),
                0,
                "ended early: {seen}"
            );
            seen.push_str(&line);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within 30 s; read {seen}"));
    seen
}

fn root_key_in(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("pat._root."))
        .unwrap_or_else(|| panic!("no root key in {stdout}"))
        .to_owned()
}

#[tokio::test]
async fn the_examples_directory_applies_with_the_root_key_and_fires_as_its_comments_say() {
    let app = spawn_app().await;
    let user = User::with_env(&app, &app.root_key, PROJECT);
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let run = user.run(&["apply", "-f", examples]).await;
    run.expect(0);
    for line in [
        "created       Account    acme",
        "created       Project    acme/default/payments",
        "created       Pipeline   acme/default/payments/hello",
        "created       Trigger    acme/default/payments/deploy/deploy_on_push",
        "created       EventRule  acme/default/payments/ops",
        "signing secret (shown once): ",
    ] {
        assert!(run.stderr.contains(line), "{line}: {run:#?}");
    }
    let run = user.run(&["apply", "-f", examples]).await;
    run.expect(0);
    assert!(
        run.stderr.lines().all(|l| l.starts_with("unchanged")),
        "{run:#?}"
    );

    let run = user.run(&["fire", "hello/hello_trigger", "--wait"]).await;
    run.expect(0);
    assert!(run.stdout.contains("greet/say_hello  Success"), "{run:#?}");
    let payload = r#"{"ref": "refs/heads/main", "repository": {"name": "api-gateway"}, "commits": [{"id": "1"}], "image": {"tag": "v1.4.2"}}"#;
    let run = user
        .run(&[
            "fire",
            "deploy/deploy_on_push",
            "--wait",
            "--header",
            "X-GitHub-Event: push",
            "--data",
            payload,
        ])
        .await;
    run.expect(0);
    let run = user
        .run(&["fire", "deploy/deploy_on_push", "--data", payload])
        .await;
    run.expect(2);
    assert!(
        run.stderr
            .contains("NO_MATCHING_TRIGGER_FOR_HEADER_CONDITIONS"),
        "{run:#?}"
    );
}

#[tokio::test]
async fn control_commands_and_status_wait_follow_an_approval_to_its_end() {
    let app = spawn_app().await;
    let key = acme(&app).await;
    let user = User::with_env(&app, &key, PROJECT);
    let gate = "kind: Pipeline\naccount: acme\norg: default\nproject: payments\npipeline:\n  identifier: gate\n  name: gate\n  stages:\n    - stage:\n        identifier: ship\n        name: Ship\n        steps:\n          - step: {identifier: approve, type: Approval, timeout: 1h, spec: {message: Ship it?}}\n          - step: {identifier: done, type: Run, spec: {shell: sh, command: echo shipped}}\n";
    let docs = [gate.to_owned(), trigger_doc("gate", "go", None)].join("---\n");
    let path = user.write("gate.yaml", &docs);
    user.run(&["apply", "-f", &path]).await.expect(0);

    let waiting = |app: &TestApp, key: &str, event: &str| {
        let (app, key, event) = (app.address.clone(), key.to_owned(), event.to_owned());
        async move {
            let client = reqwest::Client::new();
            for _ in 0..200 {
                let res = client
                    .get(format!(
                        "{app}/webhook/triggerExecutionDetails/{event}?accountIdentifier=acme"
                    ))
                    .header("X-Api-Key", &key)
                    .send()
                    .await
                    .unwrap();
                let body: Value = res.json().await.unwrap();
                let summary = &body["data"]["executionDetails"]["pipelineExecutionSummary"];
                if summary["status"] == "ApprovalWaiting" {
                    return summary["planExecutionId"].as_str().unwrap().to_owned();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("never waiting for approval");
        }
    };

    // approve: `status --wait` keeps following until the execution ends, then exits 0.
    let event = user
        .run(&["fire", "gate/go"])
        .await
        .expect(0)
        .stdout
        .trim()
        .to_owned();
    let execution = waiting(&app, &key, &event).await;
    let mut follower = user.spawn(&["status", &event, "--wait"]);
    let mut out = tokio::io::BufReader::new(follower.stdout.take().unwrap());
    // Approve only once the follower has seen the approval waiting.
    let mut text = read_until(
        &mut out,
        "waiting for approval: triggerd approve",
        "status --wait shows the approval waiting",
    )
    .await;
    let run = user
        .run(&["approve", &execution, "--comment", "ship it"])
        .await;
    run.expect(0);
    tokio::time::timeout(Duration::from_secs(30), out.read_to_string(&mut text))
        .await
        .expect("status --wait ends")
        .unwrap();
    let status = follower.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("ship/done  Success") && text.contains(": Success"),
        "{text}"
    );

    // reject and abort end it otherwise: the status exit code says it failed.
    for (action, status) in [("reject", "ApprovalRejected"), ("abort", "Aborted")] {
        let event = user
            .run(&["fire", "gate/go"])
            .await
            .expect(0)
            .stdout
            .trim()
            .to_owned();
        let execution = waiting(&app, &key, &event).await;
        let run = user.run(&[action, &execution]).await;
        run.expect(0);
        assert!(run.stdout.contains(status), "{action}: {run:#?}");
        let run = user.run(&["status", &event, "--wait"]).await;
        run.expect(1);
        assert!(run.stdout.contains(status), "{action}: {run:#?}");
    }
    // pause and resume on an ended execution are refused, with the server's reason.
    let run = user.run(&["pause", &execution]).await;
    run.expect(1);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");

    // rules: test (the receiver is not there: the attempt fails, exit 1), rotate, recover.
    let path = user.write("rule.yaml", RULE_DOC);
    user.run(&["apply", "-f", &path]).await.expect(0);
    let run = user.run(&["rules", "test", "ops", "-o", "json"]).await;
    run.expect(1);
    assert!(run.json()["lastError"].is_string(), "{run:#?}");
    let run = user.run(&["rules", "rotate", "ops", "-o", "json"]).await;
    assert!(run.expect(0).json()["signingSecret"]
        .as_str()
        .unwrap()
        .starts_with("whsec_"));
    let run = user
        .run(&["rules", "recover", "ops", "--since", "2026-01-01T00:00:00Z"])
        .await;
    run.expect(1);
    assert!(
        run.stderr.contains("is disabled"),
        "refused with the reason: {run:#?}"
    );
    let run = user
        .run(&["rules", "redeliver", "ops", "no-such-delivery"])
        .await;
    run.expect(1);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
}

#[tokio::test]
async fn whoami_dry_run_and_log_parameters_refuse_bad_input() {
    let app = spawn_app().await;
    let key = acme(&app).await;
    // whoami: no key, a malformed key, a wrong secret.
    let res = app
        .request(Method::GET, "/api/v1/whoami")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "INVALID_TOKEN", "X-Api-Key").await;
    let res = app
        .with_key(Method::GET, "/api/v1/whoami", "nonsense")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "INVALID_TOKEN", "X-Api-Key").await;
    let wrong = with_last_char_changed(&key);
    let res = app
        .with_key(Method::GET, "/api/v1/whoami", &wrong)
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "INVALID_TOKEN", "").await;

    // dryRun must be true or false, and a dry run stores nothing.
    let pipelines = "/api/v1/accounts/acme/orgs/default/projects/payments/pipelines";
    let res = app
        .with_key(Method::PUT, &format!("{pipelines}/p?dryRun=maybe"), &key)
        .header("content-type", "application/yaml")
        .body(crate::helpers::pipeline_yaml("p"))
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "INVALID_REQUEST", "dryRun must be true or false").await;
    let res = app
        .with_key(Method::PUT, &format!("{pipelines}/p?dryRun=true"), &key)
        .header("content-type", "application/yaml")
        .body(crate::helpers::pipeline_yaml("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a dry run is never 201");
    let res = app
        .with_key(Method::GET, &format!("{pipelines}/p"), &key)
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "RESOURCE_NOT_FOUND", "p").await;

    // Log parameters; an unknown step.
    let user = User::with_env(&app, &key, PROJECT);
    let docs = [
        pipeline_doc("build", "'echo hi'"),
        trigger_doc("build", "go", None),
    ]
    .join("---\n");
    let path = user.write("b.yaml", &docs);
    user.run(&["apply", "-f", &path]).await.expect(0);
    let run = user
        .run(&["fire", "build/go", "--wait", "-o", "json"])
        .await;
    let execution = run.expect(0).json()["executionDetails"]["pipelineExecutionSummary"]
        ["planExecutionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let logs =
        format!("/api/v1/accounts/acme/orgs/default/projects/payments/executions/{execution}/logs");
    for (query, message) in [
        ("format=xml", "format must be text or json"),
        ("after=abc", "after must be a line seq"),
        ("follow=maybe", "follow must be true or false"),
    ] {
        let res = app
            .with_key(Method::GET, &format!("{logs}/build/run?{query}"), &key)
            .send()
            .await
            .unwrap();
        assert_error(res, 400, "INVALID_REQUEST", message).await;
    }
    let res = app
        .with_key(Method::GET, &format!("{logs}/build/nope?follow=true"), &key)
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "RESOURCE_NOT_FOUND", "has no step nope").await;
    // A finished step: follow answers its log and ends.
    let res = app
        .with_key(Method::GET, &format!("{logs}/build/run?follow=true"), &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "hi\n");
}
