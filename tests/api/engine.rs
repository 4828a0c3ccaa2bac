//! The execution engine through the real server (DESIGN §6): real child processes for Run
//! steps, Wait steps that hold no worker, failure rules and the status summary.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, success_data, TestApp, TestTrigger};

/// Stores a pipeline `deploy` with these stages as the trigger's pipeline.
async fn put_pipeline(app: &TestApp, t: &TestTrigger, stages: &str) {
    let yaml = format!("pipeline:\n  name: deploy\n  identifier: deploy\n  stages:\n{stages}");
    app.put_pipeline_yaml(t, &yaml).await;
}

/// Fires the trigger and returns the event id.
async fn fire(app: &TestApp, t: &TestTrigger, body: &Value) -> String {
    let res = app
        .post_webhook(&t.v3_path(), None, &body.to_string())
        .await;
    let data = success_data(res).await;
    data["eventCorrelationId"]
        .as_str()
        .expect("event id")
        .to_owned()
}

/// Long-polls the status endpoint until the execution settles (at most ~30 s).
async fn settled(app: &TestApp, t: &TestTrigger, event: &str) -> Value {
    for _ in 0..6 {
        let res = app
            .request(
                Method::GET,
                &format!(
                    "/webhook/triggerExecutionDetails/{event}?accountIdentifier={}&wait=5",
                    t.account
                ),
            )
            .send()
            .await
            .expect("request");
        let data = success_data(res).await;
        let summary = data["executionDetails"]["pipelineExecutionSummary"].clone();
        let status = summary["status"].as_str().unwrap_or_default();
        if !matches!(status, "Queued" | "Running") {
            return summary;
        }
    }
    panic!("execution of event {event} did not settle in 30 s");
}

fn stage(id: &str, steps: &str) -> String {
    format!("    - stage:\n        identifier: {id}\n        steps:\n{steps}")
}

fn run_step(id: &str, extra: &str, command: &str) -> String {
    format!(
        "          - step:\n              identifier: {id}\n              type: Run\n{extra}              spec:\n                command: {command}\n"
    )
}

/// A Run step `id` that runs until the test creates the file it returns (the gate).
fn gated_step(app: &TestApp, id: &str) -> (String, std::path::PathBuf) {
    let gate = app.dir.path().join(format!("{id}-gate"));
    let step = run_step(
        id,
        "",
        &format!("'while [ ! -f {} ]; do sleep 0.05; done'", gate.display()),
    );
    (step, gate)
}

fn node<'a>(summary: &'a Value, stage: &str) -> &'a Value {
    let id = format!("{}-{stage}", summary["planExecutionId"].as_str().unwrap());
    &summary["layoutNodeMap"][id]
}

#[tokio::test]
async fn run_steps_execute_for_real_and_pass_outputs_between_steps() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let pwd = app.dir.path().join("first-pwd");
    let first = run_step(
        "first",
        "",
        &format!(
            "'echo building; echo \"TAG=v1.$TRIGGERD_STEP\" >> \"$TRIGGERD_OUTPUT\"; pwd > {}'",
            pwd.display()
        ),
    );
    let second = format!(
        "{}                env:\n                  TAG: <+steps.first.output.TAG>\n",
        run_step(
            "second",
            "",
            "'test \"$TAG\" = v1.first && grep -q ref \"$TRIGGERD_PAYLOAD_FILE\"'"
        )
    );
    let check = format!(
        "{}                env:\n                  TAG: <+execution.steps.build.steps.first.output.TAG>\n",
        run_step("check", "", "'test \"$TAG\" = v1.first'")
    );
    // The script starts with SIGPIPE at its default, though the server and the supervisor
    // ignore it (its bit in the mask of ignored signals).
    let signals = run_step(
        "signals",
        "",
        "'test $(( 0x$(awk \"/^SigIgn/ {print \\$2}\" /proc/$$/status) & 0x1000 )) -eq 0'",
    );
    put_pipeline(
        &app,
        &t,
        &format!(
            "{}{}",
            stage("build", &format!("{first}{second}")),
            stage("verify", &format!("{check}{signals}"))
        ),
    )
    .await;

    let event = fire(&app, &t, &json!({"ref": "refs/heads/main"})).await;
    let summary = settled(&app, &t, &event).await;

    assert_eq!(summary["status"], "Success", "{summary}");
    assert_eq!(summary["totalStagesCount"], 2);
    assert_eq!(summary["successfulStagesCount"], 2);
    let build = node(&summary, "build");
    assert_eq!(build["status"], "Success", "{summary}");
    assert_eq!(
        build["edgeLayoutList"]["nextIds"][0],
        format!("{}-verify", summary["planExecutionId"].as_str().unwrap())
    );
    assert!(summary["startTs"].is_i64() && summary["endTs"].is_i64());
    assert_eq!(summary["startingNodeId"], build["nodeUuid"]);
    // The steps ran in the execution's own working directory, removed once it ended.
    let work_dir = std::fs::read_to_string(&pwd).expect("the first step wrote its directory");
    let work_dir = std::path::Path::new(work_dir.trim_end());
    assert!(
        work_dir.ends_with(summary["planExecutionId"].as_str().unwrap()),
        "{work_dir:?}"
    );
    assert!(!work_dir.exists(), "{work_dir:?} is left behind");
}

#[tokio::test]
async fn a_failed_step_fails_its_stage_and_skips_the_rest() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let steps = format!(
        "{}{}",
        run_step("boom", "", "'echo about to fail >&2; exit 3'"),
        run_step("never", "", "'touch should-not-exist'")
    );
    put_pipeline(
        &app,
        &t,
        &format!(
            "{}{}",
            stage("build", &steps),
            stage("later", &run_step("x", "", "'true'"))
        ),
    )
    .await;

    let event = fire(&app, &t, &json!({})).await;
    let summary = settled(&app, &t, &event).await;

    assert_eq!(summary["status"], "Failed", "{summary}");
    let message = summary["failureInfo"]["message"].as_str().unwrap();
    assert!(
        message.contains("boom") && message.contains("exit code 3"),
        "{message}"
    );
    assert_eq!(node(&summary, "build")["status"], "Failed");
    assert_eq!(node(&summary, "later")["status"], "Skipped");
    assert_eq!(summary["failedStagesCount"], 1);
}

#[tokio::test]
async fn continue_on_failure_and_retries_follow_the_step_settings() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    // Fails on the first attempt, succeeds on the second (the work dir lives for the execution).
    let flaky = run_step(
        "flaky",
        "              retries: 1\n",
        "'if [ -f tried ]; then exit 0; fi; touch tried; exit 1'",
    );
    let tolerated = run_step(
        "tolerated",
        "              continueOnFailure: true\n",
        "'exit 7'",
    );
    put_pipeline(
        &app,
        &t,
        &stage(
            "build",
            &format!("{flaky}{tolerated}{}", run_step("after", "", "'true'")),
        ),
    )
    .await;

    let event = fire(&app, &t, &json!({})).await;
    let summary = settled(&app, &t, &event).await;

    assert_eq!(summary["status"], "Success", "{summary}");
    assert_eq!(node(&summary, "build")["status"], "Success");
}

#[tokio::test]
async fn env_values_with_shell_metacharacters_arrive_verbatim_and_never_run() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let marker = app.dir.path().join("injected");
    let hostile = format!(
        "$(touch {}); rm -rf /nonexistent `touch {}`",
        marker.display(),
        marker.display()
    );
    let step = format!(
        "{}                env:\n                  VALUE: <+trigger.payload.value>\n",
        run_step("echo", "", "'printf %s \"$VALUE\" > seen; test \"$(cat seen)\" = \"$VALUE\"; printf \"SEEN=%s\\n\" \"$VALUE\" >> \"$TRIGGERD_OUTPUT\"'")
    );
    put_pipeline(&app, &t, &stage("build", &step)).await;

    let event = fire(&app, &t, &json!({"value": hostile})).await;
    let summary = settled(&app, &t, &event).await;

    assert_eq!(summary["status"], "Success", "{summary}");
    assert!(!marker.exists(), "the payload value ran as a command");
}

/// Steps read the event's headers as it was stored (`<+trigger.header[...]>`): the engine
/// parses them from the stored JSON text, with secret headers masked.
#[tokio::test]
async fn steps_read_the_stored_headers_with_secrets_masked() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let step = format!(
        "{}                env:\n                  ENV_NAME: <+trigger.header['x-deploy-env']>\n                  AUTH: <+trigger.header['authorization']>\n",
        run_step("check", "", "'test \"$ENV_NAME\" = staging && test \"$AUTH\" = \"********\"'")
    );
    put_pipeline(&app, &t, &stage("build", &step)).await;

    let res = app
        .request(Method::POST, &t.v3_path())
        .header("content-type", "application/json")
        .header("X-Deploy-Env", "staging")
        .header("Authorization", "Bearer not-for-steps")
        .body("{}")
        .send()
        .await
        .expect("request");
    let data = success_data(res).await;
    let event = data["eventCorrelationId"].as_str().expect("event id");
    let summary = settled(&app, &t, event).await;

    assert_eq!(summary["status"], "Success", "{summary}");
}

#[tokio::test]
async fn a_wait_step_holds_no_worker() {
    let app = spawn_app_with(|s| s.workers = 1).await;
    let t = app.create_trigger().await;
    put_pipeline(
        &app,
        &t,
        &stage(
            "build",
            "          - step: {identifier: pause, type: Wait, spec: {duration: 3s}}\n",
        ),
    )
    .await;
    let waiting = fire(&app, &t, &json!({})).await;
    // Once it runs, it has its own snapshot of the pipeline; then change the pipeline to one
    // quick Run step for the next webhook.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let data = success_data(app.get_status(&waiting, &t.account, None).await).await;
        if data["executionDetails"]["pipelineExecutionSummary"]["status"] == "Running" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never started: {data}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    put_pipeline(&app, &t, &stage("build", &run_step("quick", "", "'true'"))).await;

    let quick = fire(&app, &t, &json!({})).await;
    let quick = settled(&app, &t, &quick).await;
    let still_waiting = app.get_status(&waiting, &t.account, None).await;
    let still_waiting = success_data(still_waiting).await;

    assert_eq!(quick["status"], "Success", "{quick}");
    assert_eq!(
        still_waiting["executionDetails"]["pipelineExecutionSummary"]["status"], "Running",
        "the waiting execution is still in its Wait step"
    );
    let waited = settled(&app, &t, &waiting).await;
    assert_eq!(waited["status"], "Success", "{waited}");
}

#[tokio::test]
async fn kill_9_mid_step_loses_nothing_and_runs_nothing_twice() {
    use crate::durability::{made_up_root_key, set_up_trigger, Daemon};
    let dir = tempfile::tempdir().expect("temp dir");
    let root = made_up_root_key();
    let envs = [
        ("TRIGGERD_ROOT_KEY", root.as_str()),
        ("TRIGGERD_WORKERS", "1"),
    ];
    let mut first = Daemon::start(dir.path(), "first", &[], &envs).await;
    let t = set_up_trigger(&first, &root).await;
    let runs = dir.path().join("runs");
    // A slow webhook sleeps in its first step; a fast one does not. Each run of a step is
    // appended to `runs`, so a step that ran twice would show.
    let command = format!(
        "'echo \"$TRIGGERD_EVENT_ID $TRIGGERD_STEP\" >> {runs}; if grep -q slow \"$TRIGGERD_PAYLOAD_FILE\"; then sleep 20; fi'",
        runs = runs.display()
    );
    let pipeline = format!(
        "pipeline:\n  name: deploy\n  identifier: deploy\n  stages:\n{}",
        stage(
            "build",
            &format!(
                "{}{}",
                run_step("work", "", &command),
                run_step("after", "", &command)
            )
        )
    );
    let res = first
        .request(
            Method::PUT,
            "/api/v1/accounts/acc/orgs/default/projects/proj/pipelines/deploy",
        )
        .header("X-Api-Key", &root)
        .header("content-type", "application/yaml")
        .body(pipeline)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let fire = |body: &'static str| {
        first
            .request(Method::POST, &t.v3_path)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let slow = success_data(fire(r#"{"mode":"slow"}"#).await.expect("request")).await;
    let fast = success_data(fire(r#"{"mode":"fast"}"#).await.expect("request")).await;
    let (slow, fast) = (
        slow["eventCorrelationId"].as_str().unwrap().to_owned(),
        fast["eventCorrelationId"].as_str().unwrap().to_owned(),
    );
    // Kill it while the slow step runs (and the fast execution waits for the only worker).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&runs)
        .unwrap_or_default()
        .contains(&slow)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow step never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill_hard();

    let second = Daemon::start(dir.path(), "second", &[], &envs).await;
    let summary = |event: String| {
        let request = second.request(
            Method::GET,
            &format!("/webhook/triggerExecutionDetails/{event}?accountIdentifier=acc&wait=10"),
        );
        async move {
            for _ in 0..3 {
                let data =
                    success_data(request.try_clone().unwrap().send().await.expect("request")).await;
                let s = data["executionDetails"]["pipelineExecutionSummary"].clone();
                if !matches!(s["status"].as_str(), Some("Queued" | "Running")) {
                    return s;
                }
            }
            panic!("event {event} did not settle after the restart");
        }
    };
    let slow_summary = summary(slow.clone()).await;
    let fast_summary = summary(fast.clone()).await;

    assert_eq!(slow_summary["status"], "Failed", "{slow_summary}");
    let message = slow_summary["failureInfo"]["message"].as_str().unwrap();
    assert!(message.contains("interrupted"), "{message}");
    assert_eq!(
        fast_summary["status"], "Success",
        "the queued execution ran after the restart: {fast_summary}"
    );
    let log = std::fs::read_to_string(&runs).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{slow} work"),
            format!("{fast} work"),
            format!("{fast} after")
        ],
        "each step ran once; the interrupted execution's next step was skipped"
    );
}

/// POSTs `P/pipelines/deploy/execute` with `body`.
async fn execute(app: &TestApp, t: &TestTrigger, body: Value) -> reqwest::Response {
    app.with_key(
        Method::POST,
        &format!("{}/pipelines/deploy/execute", t.project_path()),
        &t.admin_key,
    )
    .json(&body)
    .send()
    .await
    .expect("request")
}

/// GETs a management path with the admin key and returns `data`.
async fn get_data(app: &TestApp, t: &TestTrigger, path: &str) -> Value {
    let res = app
        .with_key(
            Method::GET,
            &format!("{}{path}", t.project_path()),
            &t.admin_key,
        )
        .send()
        .await
        .expect("request");
    success_data(res).await
}

/// Waits (at most 30 s) until the execution's detail shows a settled status.
async fn settled_detail(app: &TestApp, t: &TestTrigger, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let data = get_data(app, t, &format!("/executions/{id}")).await;
        let status = data["pipelineExecutionSummary"]["status"]
            .as_str()
            .unwrap_or_default();
        if !matches!(status, "Queued" | "Running") {
            return data;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {data}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_manual_run_with_input_shows_in_history_detail_and_logs() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let yaml = format!(
        "pipeline:\n  name: deploy\n  identifier: deploy\n  variables:\n    - {{name: tag, value: <+input>}}\n  stages:\n{}",
        stage(
            "build",
            &format!(
                "{}                env:\n                  TAG: <+pipeline.variables.tag>\n",
                run_step("say", "", "'echo \"deploying $TAG\"; echo \"DEPLOYED=$TAG\" >> \"$TRIGGERD_OUTPUT\"'")
            )
        )
    );
    let res = app
        .with_key(
            Method::PUT,
            &format!("{}/pipelines/deploy", t.project_path()),
            &app.root_key,
        )
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .expect("request");
    assert!(res.status().is_success());

    let missing = execute(&app, &t, json!({})).await;
    let queued = execute(
        &app,
        &t,
        json!({"inputYaml": "pipeline:\n  variables:\n    - {name: tag, value: v9}\n"}),
    )
    .await;

    crate::helpers::assert_error(
        missing,
        400,
        "INVALID_REQUEST",
        "inputYaml does not give runtime input 'tag' of pipeline 'deploy'",
    )
    .await;
    let queued = success_data(queued).await;
    assert_eq!(queued["triggerType"], "MANUAL");
    let id = queued["planExecutionId"].as_str().unwrap().to_owned();
    let detail = settled_detail(&app, &t, &id).await;
    assert_eq!(
        detail["pipelineExecutionSummary"]["status"], "Success",
        "{detail}"
    );
    let step = &detail["steps"][0];
    assert_eq!(step["status"], "Success");
    assert_eq!(step["attempt"], 1);
    assert_eq!(step["outputs"]["DEPLOYED"], "v9");
    let log_url = step["logUrl"].as_str().expect("log link");
    let log = app
        .client
        .get(log_url)
        .header("X-Api-Key", &t.admin_key)
        .send()
        .await
        .expect("request");
    assert_eq!(log.status(), 200);
    assert_eq!(log.text().await.unwrap(), "deploying v9\n");
    let history = get_data(
        &app,
        &t,
        "/executions?pipelineIdentifier=deploy&status=Success",
    )
    .await;
    assert_eq!(history["content"][0]["planExecutionId"], id.as_str());
    let none = get_data(&app, &t, "/executions?status=Failed").await;
    assert_eq!(none["content"], json!([]));
}

#[tokio::test]
async fn execution_history_pages_by_cursor_and_refuses_strangers() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    for _ in 0..3 {
        success_data(execute(&app, &t, json!({})).await).await;
    }

    let first = get_data(&app, &t, "/executions?limit=2").await;
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = get_data(&app, &t, &format!("/executions?limit=2&cursor={cursor}")).await;

    assert_eq!(first["content"].as_array().unwrap().len(), 2);
    assert_eq!(second["content"].as_array().unwrap().len(), 1);
    assert!(second["nextCursor"].is_null());
    let sequences: Vec<i64> = first["content"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["content"].as_array().unwrap())
        .map(|x| x["runSequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [3, 2, 1], "newest first");
    let path = format!("{}/executions", t.project_path());
    let anonymous = app
        .request(Method::GET, &path)
        .send()
        .await
        .expect("request");
    crate::helpers::assert_error(anonymous, 401, "INVALID_TOKEN", "").await;
    let unknown = app
        .with_key(
            Method::GET,
            &format!("{path}/nosuchexecution"),
            &t.admin_key,
        )
        .send()
        .await
        .expect("request");
    crate::helpers::assert_error(unknown, 404, "RESOURCE_NOT_FOUND", "does not exist").await;
    let bad_cursor = app
        .with_key(
            Method::GET,
            &format!("{path}?cursor=bm90LW91cnM"),
            &t.admin_key,
        )
        .send()
        .await
        .expect("request");
    crate::helpers::assert_error(bad_cursor, 400, "INVALID_REQUEST", "cursor").await;
}

/// POSTs a control action with the admin key.
async fn control(
    app: &TestApp,
    t: &TestTrigger,
    id: &str,
    action: &str,
    body: Value,
) -> reqwest::Response {
    app.with_key(
        Method::POST,
        &format!("{}/executions/{id}/{action}", t.project_path()),
        &t.admin_key,
    )
    .json(&body)
    .send()
    .await
    .expect("request")
}

/// Waits (at most 20 s) until the execution's detail reports `status`.
async fn reaches(app: &TestApp, t: &TestTrigger, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let data = get_data(app, t, &format!("/executions/{id}")).await;
        if data["pipelineExecutionSummary"]["status"] == status {
            return data;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {status}: {data}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (at most 20 s) until the execution's first step runs.
async fn first_step_running(app: &TestApp, t: &TestTrigger, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let data = get_data(app, t, &format!("/executions/{id}")).await;
        if data["steps"][0]["status"] == "Running" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never started: {data}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Stores the pipeline and queues a manual run of it; returns the plan execution id.
async fn run_manually(app: &TestApp, t: &TestTrigger, stages: &str) -> String {
    put_pipeline(app, t, stages).await;
    let data = success_data(execute(app, t, json!({})).await).await;
    data["planExecutionId"].as_str().unwrap().to_owned()
}

const APPROVAL: &str =
    "          - step: {identifier: ship_it, type: Approval, spec: {message: Ship it?}}\n";

/// A stage `release`: an [`APPROVAL`], then a Run step `go`.
fn approval_then_go() -> String {
    stage(
        "release",
        &format!("{APPROVAL}{}", run_step("go", "", "'true'")),
    )
}

#[tokio::test]
async fn an_approved_step_lets_the_pipeline_continue() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = run_manually(&app, &t, &approval_then_go()).await;

    let waiting = reaches(&app, &t, &id, "ApprovalWaiting").await;
    let approved = control(&app, &t, &id, "approve", json!({"comment": "looks good"})).await;

    assert_eq!(waiting["steps"][0]["status"], "ApprovalWaiting");
    assert_eq!(waiting["steps"][1]["status"], "NotStarted");
    assert_eq!(
        node(&waiting["pipelineExecutionSummary"], "release")["status"],
        "ApprovalWaiting"
    );
    success_data(approved).await;
    let done = reaches(&app, &t, &id, "Success").await;
    assert_eq!(done["steps"][0]["message"], "approved: looks good");
    assert_eq!(done["steps"][1]["status"], "Success");
}

#[tokio::test]
async fn a_rejected_step_ends_the_pipeline_and_a_late_approval_is_refused() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = run_manually(&app, &t, &approval_then_go()).await;
    reaches(&app, &t, &id, "ApprovalWaiting").await;

    success_data(control(&app, &t, &id, "reject", json!({"comment": "not today"})).await).await;
    let late = control(&app, &t, &id, "approve", json!({})).await;

    let done = reaches(&app, &t, &id, "ApprovalRejected").await;
    assert_eq!(
        done["pipelineExecutionSummary"]["failureInfo"]["message"],
        "Approval step ship_it was rejected: not today"
    );
    assert_eq!(done["steps"][1]["status"], "Skipped");
    crate::helpers::assert_error(
        late,
        400,
        "INVALID_REQUEST",
        "is ApprovalRejected; it cannot approve now",
    )
    .await;
}

#[tokio::test]
async fn a_status_answered_from_memory_changes_with_each_acknowledged_write() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    put_pipeline(&app, &t, &approval_then_go()).await;
    let event = fire(&app, &t, &json!({})).await;
    let summary = || async {
        let res = app.get_status(&event, &t.account, None).await;
        success_data(res).await["executionDetails"]["pipelineExecutionSummary"].clone()
    };
    let waiting = settled(&app, &t, &event).await;
    assert_eq!(waiting["status"], "ApprovalWaiting", "{waiting}");
    let plan = waiting["planExecutionId"].as_str().expect("id").to_owned();
    // Read while waiting (and kept), then read again.
    assert_eq!(summary().await["status"], "ApprovalWaiting");
    assert_eq!(summary().await["status"], "ApprovalWaiting");
    if !crate::helpers::on_postgres() {
        // Kept indeed: a change behind the store's back (another connection to the file) is
        // not seen.
        let sql = format!(
            "UPDATE executions SET pipeline_name = 'behind' WHERE plan_execution_id = '{plan}'"
        );
        assert_eq!(app.execute_sql(&sql).await, 1);
        assert_eq!(summary().await["name"], "deploy", "answered from memory");
    }

    // A waiting approval that no worker holds is settled by the request itself: one read
    // right after it is acknowledged, without retrying, already sees it.
    success_data(control(&app, &t, &plan, "reject", json!({"comment": "not today"})).await).await;
    let rejected = summary().await;

    assert_eq!(rejected["status"], "ApprovalRejected", "{rejected}");
    assert_eq!(
        node(&rejected, "release")["status"],
        "ApprovalRejected",
        "{rejected}"
    );
}

#[tokio::test]
async fn an_approval_nobody_answers_expires_at_its_timeout() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let step = "          - step: {identifier: ship_it, type: Approval, timeout: 1s, spec: {message: Ship it?}}\n";
    let id = run_manually(
        &app,
        &t,
        &stage(
            "release",
            &format!("{step}{}", run_step("go", "", "'true'")),
        ),
    )
    .await;

    let done = reaches(&app, &t, &id, "Expired").await;

    assert_eq!(done["steps"][0]["status"], "Expired");
    assert_eq!(done["steps"][1]["status"], "Skipped");
    assert_eq!(
        node(&done["pipelineExecutionSummary"], "release")["status"],
        "Expired"
    );
}

#[tokio::test]
async fn abort_kills_the_running_step_and_skips_the_rest() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let marker = app.dir.path().join("survived");
    let slow = run_step(
        "slow",
        "",
        &format!("'echo started; sleep 30; touch {}'", marker.display()),
    );
    let id = run_manually(
        &app,
        &t,
        &stage(
            "build",
            &format!("{slow}{}", run_step("next", "", "'true'")),
        ),
    )
    .await;
    first_step_running(&app, &t, &id).await;

    let started = std::time::Instant::now();
    success_data(control(&app, &t, &id, "abort", json!({"comment": "wrong branch"})).await).await;
    let done = reaches(&app, &t, &id, "Aborted").await;

    assert!(
        started.elapsed() < Duration::from_secs(10),
        "abort took {:?}",
        started.elapsed()
    );
    assert_eq!(done["steps"][0]["status"], "Aborted");
    assert_eq!(done["steps"][1]["status"], "Skipped");
    assert!(!marker.exists(), "the aborted step's script went on");
    let again = control(&app, &t, &id, "abort", json!({})).await;
    crate::helpers::assert_error(again, 400, "INVALID_REQUEST", "is Aborted").await;
}

#[tokio::test]
async fn a_worker_whose_lease_is_taken_kills_its_step_and_writes_nothing_more() {
    // The shortest lease: renewed every second, so the loss is noticed within one.
    let app = spawn_app_with(|s| s.node.lease = "3s".into()).await;
    let t = app.create_trigger().await;
    let pid_file = app.dir.path().join("slow.pid");
    let slow = run_step(
        "slow",
        "",
        &format!("'echo $$ > {}; exec sleep 30'", pid_file.display()),
    );
    let id = run_manually(
        &app,
        &t,
        &stage(
            "build",
            &format!("{slow}{}", run_step("next", "", "'true'")),
        ),
    )
    .await;
    first_step_running(&app, &t, &id).await;
    let pid = wait_for_pid(&pid_file).await;

    // What another worker's claim looks like to this one: another token, a long lease.
    let far = triggerd::store::now_millis() + 600_000;
    let taken = app
        .execute_sql(&format!(
            "UPDATE executions SET lease_token = 'another-claim', lease_until = {far} \
             WHERE plan_execution_id = '{id}'"
        ))
        .await;
    assert_eq!(taken, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while is_alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the step of a worker that lost its lease still runs"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let after = get_data(&app, &t, &format!("/executions/{id}")).await;
    let still_taken = app
        .execute_sql(&format!(
            "UPDATE executions SET lease_token = lease_token \
             WHERE plan_execution_id = '{id}' AND lease_token = 'another-claim'"
        ))
        .await;

    assert_eq!(after["pipelineExecutionSummary"]["status"], "Running");
    assert_eq!(
        after["steps"][0]["status"], "Running",
        "the killed step is the new owner's to settle"
    );
    assert_eq!(after["steps"][1]["status"], "NotStarted");
    assert_eq!(still_taken, 1, "the lease was not released");
}

/// Waits (at most 20 s) for a step to write its process id to `path`.
async fn wait_for_pid(path: &std::path::Path) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pid in {path:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether a process runs (a zombie waiting to be reaped does not).
fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name in parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

#[tokio::test]
async fn pause_takes_effect_before_the_next_step_and_resume_continues() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    // The first step runs until the test opens the gate, so the pause lands while it runs.
    let (first, gate) = gated_step(&app, "first");
    let id = run_manually(
        &app,
        &t,
        &stage(
            "build",
            &format!("{first}{}", run_step("second", "", "'true'")),
        ),
    )
    .await;
    first_step_running(&app, &t, &id).await;

    success_data(control(&app, &t, &id, "pause", json!({})).await).await;
    std::fs::write(&gate, "").unwrap();
    let paused = reaches(&app, &t, &id, "Paused").await;
    success_data(control(&app, &t, &id, "resume", json!({})).await).await;
    let done = reaches(&app, &t, &id, "Success").await;

    assert_eq!(paused["steps"][0]["status"], "Success");
    assert_eq!(
        paused["steps"][1]["status"], "NotStarted",
        "paused before the next step"
    );
    assert_eq!(done["steps"][1]["status"], "Success");
}

#[tokio::test]
async fn no_more_than_workers_executions_run_at_once() {
    let app = spawn_app_with(|s| s.workers = 2).await;
    let t = app.create_trigger().await;
    let log = app.dir.path().join("overlap");
    let step = run_step(
        "work",
        "",
        &format!(
            "'echo + >> {log}; sleep 0.4; echo - >> {log}'",
            log = log.display()
        ),
    );
    put_pipeline(&app, &t, &stage("build", &step)).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            success_data(execute(&app, &t, json!({})).await).await["planExecutionId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    for id in &ids {
        reaches(&app, &t, id, "Success").await;
    }

    let (mut now, mut most) = (0, 0);
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        now += if line == "+" { 1 } else { -1 };
        most = most.max(now);
    }
    assert_eq!(
        most, 2,
        "two workers run two executions at a time, never more"
    );
}

#[tokio::test]
async fn a_queued_execution_whose_pipeline_was_deleted_fails_with_the_reason() {
    let app = spawn_app_with(|s| s.workers = 1).await;
    let t = app.create_trigger().await;
    let (step, gate) = gated_step(&app, "hold");
    // The one worker holds the first run while the second waits for it, not started.
    let first = run_manually(&app, &t, &stage("build", &step)).await;
    first_step_running(&app, &t, &first).await;
    let second = success_data(execute(&app, &t, json!({})).await).await["planExecutionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = app
        .with_key(
            Method::DELETE,
            &format!("{}/pipelines/deploy", t.project_path()),
            &t.admin_key,
        )
        .send()
        .await
        .expect("request");
    assert!(deleted.status().is_success(), "{}", deleted.status());
    std::fs::write(&gate, "").unwrap();

    let ran = settled_detail(&app, &t, &first).await;
    let orphan = settled_detail(&app, &t, &second).await;

    assert_eq!(
        ran["pipelineExecutionSummary"]["status"], "Success",
        "a started execution runs its own snapshot"
    );
    let summary = &orphan["pipelineExecutionSummary"];
    assert_eq!(summary["status"], "Failed");
    assert_eq!(
        summary["failureInfo"]["message"],
        "Pipeline deploy no longer exists"
    );
}

#[tokio::test]
async fn control_needs_an_admin_key_and_a_known_action() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let id = run_manually(&app, &t, &stage("release", APPROVAL)).await;
    reaches(&app, &t, &id, "ApprovalWaiting").await;
    let executor = app.create_key("acc", "executor", None).await;

    let by_executor = app
        .with_key(
            Method::POST,
            &format!("{}/executions/{id}/approve", t.project_path()),
            &executor,
        )
        .send()
        .await
        .expect("request");
    let unknown = control(&app, &t, &id, "explode", json!({})).await;

    crate::helpers::assert_error(by_executor, 403, "NG_ACCESS_DENIED", "").await;
    crate::helpers::assert_error(
        unknown,
        404,
        "RESOURCE_NOT_FOUND",
        "abort, pause, resume, approve and reject",
    )
    .await;
    let still = get_data(&app, &t, &format!("/executions/{id}")).await;
    assert_eq!(
        still["pipelineExecutionSummary"]["status"],
        "ApprovalWaiting"
    );
}

fn http_step(id: &str, spec: &str) -> String {
    format!("          - step:\n              identifier: {id}\n              type: Http\n              spec:\n{spec}")
}

#[tokio::test]
async fn http_steps_call_a_real_server_with_expressions_and_pass_the_response_on() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let receiver = crate::helpers::TestReceiver::start(201, r#"{"deployed":"yes"}"#, &[]).await;
    let call = http_step(
        "notify",
        &format!(
            "                method: POST\n                url: {}/hooks/<+trigger.payload.service>\n                headers: {{X-Ref: <+trigger.payload.ref>}}\n                body: '{{\"sha\": \"<+trigger.payload.sha>\"}}'\n                expectedStatus: [201]\n",
            receiver.url
        ),
    );
    let check = format!(
        "{}                env:\n                  STATUS: <+steps.notify.output.status>\n                  BODY: <+steps.notify.output.body>\n",
        run_step("check", "", "'test \"$STATUS\" = 201 && test \"$BODY\" = \"{\\\"deployed\\\":\\\"yes\\\"}\"'")
    );
    put_pipeline(&app, &t, &stage("ship", &format!("{call}{check}"))).await;

    let event = fire(
        &app,
        &t,
        &json!({"service": "api", "ref": "refs/heads/main", "sha": "abc123"}),
    )
    .await;
    let summary = settled(&app, &t, &event).await;

    assert_eq!(summary["status"], "Success", "{summary}");
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hooks/api");
    assert_eq!(got[0].header("x-ref"), Some("refs/heads/main"));
    assert_eq!(got[0].body, r#"{"sha": "abc123"}"#);
}

#[tokio::test]
async fn a_webhook_sender_cannot_rewrite_an_http_steps_url() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let receiver = crate::helpers::TestReceiver::start(200, "ok", &[]).await;
    let call = http_step(
        "notify",
        &format!(
            "                url: '{}/in/<+trigger.payload.p>?q=<+trigger.payload.q>'\n",
            receiver.url
        ),
    );
    put_pipeline(&app, &t, &stage("ship", &call)).await;

    let hostile = fire(&app, &t, &json!({"p": "../../admin", "q": "a&b=c#frag"})).await;
    let summary = settled(&app, &t, &hostile).await;
    assert_eq!(summary["status"], "Success", "{summary}");
    let climbing = fire(&app, &t, &json!({"p": "..", "q": "x"})).await;
    let summary = settled(&app, &t, &climbing).await;

    assert_eq!(summary["status"], "Failed", "{summary}");
    let message = summary["failureInfo"]["message"].as_str().unwrap();
    assert!(message.contains("climb the path"), "{message}");
    let got = receiver.requests();
    assert_eq!(got.len(), 1, "the climbing URL was never called");
    assert_eq!(got[0].path, "/in/..%2F..%2Fadmin?q=a%26b%3Dc%23frag");
}

#[tokio::test]
async fn an_unexpected_status_fails_the_step_and_redirects_are_not_followed() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let target = crate::helpers::TestReceiver::start(200, "ok", &[]).await;
    let location = format!("{}/elsewhere", target.url);
    let redirecting =
        crate::helpers::TestReceiver::start(302, "", &[("Location", location.as_str())]).await;
    let failing = crate::helpers::TestReceiver::start(500, "boom", &[]).await;
    let steps = format!(
        "{}{}",
        http_step(
            "moved",
            &format!(
                "                url: {}/start\n                expectedStatus: [302]\n",
                redirecting.url
            )
        ),
        http_step(
            "broken",
            &format!("                url: {}/x\n", failing.url)
        ),
    );
    put_pipeline(&app, &t, &stage("ship", &steps)).await;

    let event = fire(&app, &t, &json!({})).await;
    let summary = settled(&app, &t, &event).await;

    assert_eq!(summary["status"], "Failed", "{summary}");
    let message = summary["failureInfo"]["message"].as_str().unwrap();
    assert!(
        message.contains("broken") && message.contains("answered 500"),
        "{message}"
    );
    assert_eq!(redirecting.requests().len(), 1);
    assert!(target.requests().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn executions_and_events_past_retention_are_purged_and_recent_ones_kept() {
    let mut app = spawn_app_with(|s| s.retention_days = 30).await;
    let t = app.create_trigger().await;
    let old = fire(&app, &t, &json!({"n": "old"})).await;
    let recent = fire(&app, &t, &json!({"n": "recent"})).await;
    let old_summary = settled(&app, &t, &old).await;
    settled(&app, &t, &recent).await;
    app.stop().await;
    // Age the first event and its execution to 40 days.
    let forty_days = 40 * 24 * 60 * 60 * 1000_i64;
    let aged = app
        .execute_sql(&format!(
            "UPDATE webhook_events SET created_at = created_at - {forty_days} WHERE event_id = '{old}'"
        ))
        .await;
    assert_eq!(aged, 1);
    let aged = app
        .execute_sql(&format!(
            "UPDATE executions SET created_at = created_at - {forty_days}, ended_at = ended_at - {forty_days} \
             WHERE plan_execution_id = '{}'",
            old_summary["planExecutionId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(aged, 1);

    let app = app.restart().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<String> = app
            .events(&t)
            .await
            .iter()
            .map(|e| e["eventId"].as_str().unwrap().to_owned())
            .collect();
        if events == [recent.clone()] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not purged: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let history = get_data(&app, &t, "/executions").await;
    assert_eq!(history["content"].as_array().unwrap().len(), 1, "{history}");
    // The purged execution's steps go with it (SQLite keys them by the execution's time, which
    // this test changed); the kept one's stay. An UPDATE that changes nothing counts the rows
    // on both backends.
    let steps_of = |id: &str| {
        format!("UPDATE execution_steps SET attempt = attempt WHERE plan_execution_id = '{id}'")
    };
    let old_plan = old_summary["planExecutionId"].as_str().unwrap();
    assert_eq!(
        app.execute_sql(&steps_of(old_plan)).await,
        0,
        "steps left behind"
    );
    let kept = history["content"][0]["planExecutionId"].as_str().unwrap();
    assert!(app.execute_sql(&steps_of(kept)).await > 0, "{history}");
    // The event and its execution go in one transaction, so its status is gone as well. Any
    // other answer is printed; a last one that is not the 404 fails with its body.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let gone = loop {
        let res = app.get_status(&old, &t.account, None).await;
        if res.status() == 404 || tokio::time::Instant::now() >= deadline {
            break res;
        }
        eprintln!("status of a purged event: {}", res.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    crate::helpers::assert_error(gone, 404, "RESOURCE_NOT_FOUND", "doesn't exist").await;
}

#[tokio::test]
async fn the_status_shows_a_queued_execution_with_its_stages_then_its_end() {
    let app = spawn_app_with(|s| s.workers = 1).await;
    let t = app.create_trigger().await;
    let (step, gate) = gated_step(&app, "hold");
    put_pipeline(
        &app,
        &t,
        &format!(
            "{}{}",
            stage("build", &step),
            stage("ship", &run_step("go", "", "'true'"))
        ),
    )
    .await;
    let first = fire(&app, &t, &json!({})).await;
    let second = fire(&app, &t, &json!({})).await;

    let queued = success_data(app.get_status(&second, &t.account, None).await).await;
    std::fs::write(&gate, "").unwrap();
    let first_done = settled(&app, &t, &first).await;
    let second_done = settled(&app, &t, &second).await;

    let summary = &queued["executionDetails"]["pipelineExecutionSummary"];
    assert_eq!(summary["status"], "Queued", "{summary}");
    assert_eq!(summary["totalStagesCount"], 2);
    assert_eq!(node(summary, "build")["status"], "NotStarted");
    assert_eq!(node(summary, "ship")["status"], "NotStarted");
    assert_eq!(
        summary["startingNodeId"],
        node(summary, "build")["nodeUuid"]
    );
    for done in [first_done, second_done] {
        assert_eq!(done["status"], "Success", "{done}");
        assert_eq!(node(&done, "ship")["status"], "Success");
    }
}

#[tokio::test]
async fn an_http_step_whose_receiver_is_down_fails_with_the_reason() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    // A loopback port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let call = http_step(
        "notify",
        &format!("                url: http://127.0.0.1:{port}/hook\n"),
    );
    put_pipeline(
        &app,
        &t,
        &stage(
            "ship",
            &format!("{call}{}", run_step("after", "", "'true'")),
        ),
    )
    .await;

    let event = fire(&app, &t, &json!({})).await;
    let summary = settled(&app, &t, &event).await;

    assert_eq!(summary["status"], "Failed", "{summary}");
    let message = summary["failureInfo"]["message"].as_str().unwrap();
    assert!(
        message.contains("notify") && message.contains(&format!("127.0.0.1:{port}/hook failed")),
        "{message}"
    );
    let id = summary["planExecutionId"].as_str().unwrap();
    let detail = get_data(&app, &t, &format!("/executions/{id}")).await;
    assert_eq!(detail["steps"][1]["status"], "Skipped");
}

#[tokio::test]
async fn execute_and_control_refuse_missing_pipelines_executions_and_bad_input() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;

    let no_pipeline = app
        .with_key(
            Method::POST,
            &format!("{}/pipelines/nosuch/execute", t.project_path()),
            &t.admin_key,
        )
        .send()
        .await
        .expect("request");
    let bad_yaml = execute(&app, &t, json!({"inputYaml": "pipeline: ["})).await;
    let unknown_field = execute(&app, &t, json!({"inputs": "x"})).await;
    let no_execution = control(&app, &t, "0123456789abcdefghijkl", "abort", json!({})).await;

    crate::helpers::assert_error(
        no_pipeline,
        404,
        "RESOURCE_NOT_FOUND",
        "Pipeline nosuch does not exist",
    )
    .await;
    crate::helpers::assert_error(
        bad_yaml,
        400,
        "INVALID_REQUEST",
        "inputYaml is not valid YAML",
    )
    .await;
    crate::helpers::assert_error(unknown_field, 400, "INVALID_REQUEST", "inputs").await;
    crate::helpers::assert_error(no_execution, 404, "RESOURCE_NOT_FOUND", "does not exist").await;
    let history = get_data(&app, &t, "/executions").await;
    assert_eq!(history["content"], json!([]), "nothing was queued");
}
