//! What a Run step can reach beyond its own script (issue 12 item 10): every process it starts
//! ends with it, including those that leave its session, and including when the server is
//! killed.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::durability::{made_up_root_key, set_up_trigger, Daemon};
use crate::helpers::{spawn_app, success_data, TestTrigger};

/// A pipeline `deploy` whose one Run step runs `command`.
fn run_pipeline(command: &str) -> String {
    let indented: String = command
        .lines()
        .map(|l| format!("                  {l}\n"))
        .collect();
    format!(
        "pipeline:\n  name: deploy\n  identifier: deploy\n  stages:\n    - stage:\n        name: Build\n        identifier: build\n        steps:\n          - step:\n              identifier: run\n              type: Run\n              timeout: 5m\n              spec:\n                shell: sh\n                command: |\n{indented}"
    )
}

/// A script line that starts `sleep 1000` in a new session (out of the step's process group)
/// and writes its pid to `file`, then waits until the file is written.
fn escape_into_new_session(file: &Path) -> String {
    let f = file.display();
    format!(
        "setsid sh -c 'echo $$ > {f}.tmp && mv {f}.tmp {f} && exec sleep 1000' </dev/null >/dev/null 2>&1 &\nwhile [ ! -s {f} ]; do sleep 0.05; done\n"
    )
}

/// Puts a Run pipeline on `t` whose script first starts a process in a new session (its pid
/// in `pid_file`), then runs `then`.
async fn put_escaping_pipeline(
    app: &crate::helpers::TestApp,
    t: &TestTrigger,
    pid_file: &Path,
    then: &str,
) {
    app.put_pipeline_yaml(
        t,
        &run_pipeline(&format!("{}{then}", escape_into_new_session(pid_file))),
    )
    .await;
}

fn read_pid(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .expect("the pid file")
        .trim()
        .parse()
        .expect("a pid")
}

/// Alive, and not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

async fn wait_until_dead(pid: i32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        if Instant::now() > deadline {
            // Clean up before failing, so no sleeper outlives the test.
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("{what} (pid {pid}) outlived its step");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_file(file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fires `t` and waits until its execution ended; returns the execution's status.
async fn fire_and_wait(app: &crate::helpers::TestApp, t: &TestTrigger) -> String {
    let data = fire_and_wait_with(app, t, "{}").await;
    data["executionDetails"]["pipelineExecutionSummary"]["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Fires `t` with `body` and waits until its execution ended; returns the status answer.
async fn fire_and_wait_with(app: &crate::helpers::TestApp, t: &TestTrigger, body: &str) -> Value {
    let res = app.post_webhook(&t.v3_path(), None, body).await;
    let id = success_data(res).await["eventCorrelationId"]
        .as_str()
        .expect("id")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = app.get_status(&id, &t.account, Some(&t.admin_key)).await;
        let data = success_data(res).await;
        let status = data["executionDetails"]["pipelineExecutionSummary"]["status"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if ["Success", "Failed", "Aborted", "Errored"].contains(&status.as_str()) {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "the execution did not end: {data}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_process_that_leaves_its_steps_session_is_killed_when_the_step_ends() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let pid_file = app.dir.path().join("escaped.pid");
    put_escaping_pipeline(&app, &t, &pid_file, "echo started").await;

    assert_eq!(fire_and_wait(&app, &t).await, "Success");

    let pid = read_pid(&pid_file);
    wait_until_dead(pid, "a process started with setsid").await;
}

#[tokio::test]
async fn killing_the_server_hard_kills_its_running_steps_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = made_up_root_key();
    let envs = [("TRIGGERD_ROOT_KEY", root.as_str())];
    let mut daemon = Daemon::start(dir.path(), "isolation", &[], &envs).await;
    let t = set_up_trigger(&daemon, &root).await;
    let (in_group, detached) = (
        dir.path().join("child.pid"),
        dir.path().join("detached.pid"),
    );
    let script = format!(
        "sleep 1000 &\necho $! > {g}.tmp && mv {g}.tmp {g}\n{}wait\n",
        escape_into_new_session(&detached),
        g = in_group.display()
    );
    let res = daemon
        .request(
            Method::PUT,
            "/api/v1/accounts/acc/orgs/default/projects/proj/pipelines/deploy",
        )
        .header("X-Api-Key", &root)
        .header("content-type", "application/yaml")
        .body(run_pipeline(&script))
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let res = daemon
        .request(Method::POST, &t.v3_path)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    let _: Value = success_data(res).await;
    wait_for_file(&in_group).await;
    wait_for_file(&detached).await;

    daemon.kill_hard();

    wait_until_dead(read_pid(&in_group), "a background job of the step").await;
    wait_until_dead(read_pid(&detached), "a process started with setsid").await;
}

#[tokio::test]
async fn the_sqlite_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = crate::helpers::spawn_sqlite_app_with(|_| {}).await;
    let t = app.create_trigger().await;
    let res = app.post_webhook(&t.v3_path(), None, "{}").await;
    assert_eq!(res.status(), 200, "something written, so the WAL exists");
    let db = app.settings.database_url.trim_start_matches("sqlite://");
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{db}{suffix}");
        let mode = std::fs::metadata(&file).expect(&file).permissions().mode();
        assert_eq!(mode & 0o077, 0, "{file} has mode {mode:o}");
    }
}

#[tokio::test]
async fn an_existing_database_readable_by_others_is_made_private_when_opened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("old.db");
    std::fs::write(&db, b"").expect("an empty file is a valid new SQLite database");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let app = crate::helpers::spawn_sqlite_app_with(|s| {
        s.database_url = format!("sqlite://{}", db.display());
    })
    .await;
    let mode = std::fs::metadata(&db).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    drop(app);
}

#[tokio::test]
async fn the_root_key_is_not_left_in_the_servers_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = made_up_root_key();
    let envs = [("TRIGGERD_ROOT_KEY", root.as_str())];
    let daemon = Daemon::start(dir.path(), "rootkey", &[], &envs).await;
    // The key works: it was handed over.
    let t = set_up_trigger(&daemon, &root).await;
    assert!(!t.admin_key.is_empty());

    let secret = root.rsplit('.').next().unwrap();
    match std::fs::read(format!("/proc/{}/environ", daemon.pid())) {
        Ok(environ) => {
            let environ = String::from_utf8_lossy(&environ);
            assert!(
                !environ.contains(secret),
                "the key is in /proc/<pid>/environ"
            );
            assert!(!environ.contains("TRIGGERD_ROOT_KEY="), "{environ}");
        }
        // Not root: the server is not dumpable, so its environment cannot be read at all.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}"),
    }
}

/// The outputs of the first step of the execution `event` started.
async fn step_outputs(app: &crate::helpers::TestApp, t: &TestTrigger) -> Value {
    outputs_of_event(app, t, 0).await
}

/// The step outputs of the execution of `t`'s `nth` latest event.
async fn outputs_of_event(app: &crate::helpers::TestApp, t: &TestTrigger, nth: usize) -> Value {
    let events = app.events(t).await;
    let execution = events[nth]["pipelineExecutionId"]
        .as_str()
        .expect("an execution");
    let res = app
        .with_key(
            Method::GET,
            &format!("{}/executions/{execution}", t.project_path()),
            &t.admin_key,
        )
        .send()
        .await
        .expect("request");
    success_data(res).await["steps"][0]["outputs"].clone()
}

#[tokio::test]
async fn a_server_started_as_root_runs_steps_as_nobody_who_reads_neither_the_database_nor_the_server(
) {
    // The default `run_user`: as root, `nobody`; as anyone else, the server's own user.
    let app = crate::helpers::spawn_sqlite_app_with(|s| s.run_user = None).await;
    let t = app.create_trigger().await;
    let db = app.settings.database_url.trim_start_matches("sqlite://");
    app.put_pipeline_yaml(
        &t,
        &run_pipeline(&format!(
            "echo \"uid=$(id -u)\" >> \"$TRIGGERD_OUTPUT\"\n\
             if cat '{db}' >/dev/null 2>&1; then echo db=readable; else echo db=denied; fi >> \"$TRIGGERD_OUTPUT\"\n\
             if cat /proc/{server}/environ >/dev/null 2>&1; then echo server=readable; else echo server=denied; fi >> \"$TRIGGERD_OUTPUT\"\n\
             echo \"home=$HOME\" >> \"$TRIGGERD_OUTPUT\"\n\
             echo \"supervisor=$(awk '/^Uid:/ {{print $2}}' /proc/$PPID/status)\" >> \"$TRIGGERD_OUTPUT\"\n\
             spawner=$(awk '{{print $4}}' /proc/$PPID/stat)\n\
             if cat /proc/$spawner/environ >/dev/null 2>&1; then echo spawner=readable; else echo spawner=denied; fi >> \"$TRIGGERD_OUTPUT\"\n\
             echo ok > written-here\n",
            server = std::process::id()
        )),
    )
    .await;

    assert_eq!(fire_and_wait(&app, &t).await, "Success");
    let outputs = step_outputs(&app, &t).await;

    let euid = rustix::process::geteuid().as_raw();
    if euid == 0 {
        let nobody = std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("nobody:x:"))
            .and_then(|rest| rest.split(':').next())
            .expect("a nobody user")
            .to_owned();
        assert_eq!(outputs["uid"], nobody.as_str(), "{outputs}");
        assert_eq!(
            outputs["supervisor"],
            nobody.as_str(),
            "the supervisor runs as the step's user too: {outputs}"
        );
        assert_eq!(outputs["spawner"], "denied", "{outputs}");
        assert_eq!(outputs["db"], "denied", "{outputs}");
        assert_eq!(
            outputs["server"], "denied",
            "the server's environment: {outputs}"
        );
        assert!(
            outputs["home"]
                .as_str()
                .is_some_and(|h| h.contains("triggerd-work")),
            "HOME is the step's working directory: {outputs}"
        );
    } else {
        assert_eq!(outputs["uid"], euid.to_string().as_str(), "{outputs}");
    }
}

#[tokio::test]
async fn a_spawner_that_was_killed_is_started_again_for_the_next_step() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    // The script's parent is its supervisor, whose parent is the spawner. Field 19 of its own
    // stat line is its nice value.
    app.put_pipeline_yaml(
        &t,
        &run_pipeline(
            "echo \"spawner=$(awk '{print $4}' /proc/$PPID/stat)\" >> \"$TRIGGERD_OUTPUT\"\n\
             echo \"nice=$(awk '{print $19}' /proc/$$/stat)\" >> \"$TRIGGERD_OUTPUT\"",
        ),
    )
    .await;
    // Steps run at the engine's priority (`engine_nice`, 10 by default), the first spawner's
    // and the one started again alike.
    let own = crate::priority::nice_of(&std::fs::read_to_string("/proc/self/stat").expect("stat"));
    let engine = (own + 10).min(19).to_string();
    assert_eq!(fire_and_wait(&app, &t).await, "Success");
    assert_eq!(step_outputs(&app, &t).await["nice"], engine.as_str());
    let first: i32 = step_outputs(&app, &t).await["spawner"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("the spawner's pid");
    assert!(
        std::fs::read_to_string(format!("/proc/{first}/cmdline"))
            .is_ok_and(|c| c.contains("step-spawner")),
        "pid {first} is the spawner"
    );

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    wait_until_dead(first, "the spawner").await;

    assert_eq!(fire_and_wait(&app, &t).await, "Success");
    let second = step_outputs(&app, &t).await["spawner"].clone();
    assert!(
        second.as_str().is_some_and(|p| p != first.to_string()),
        "a new spawner: {second}"
    );
    assert_eq!(step_outputs(&app, &t).await["nice"], engine.as_str());
}

#[tokio::test]
async fn a_script_that_kills_its_supervisor_fails_its_step_and_its_processes_are_killed() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let marker = app.dir.path().join("survived");
    // The supervisor runs as the script's user, so the script can kill it; the runner then
    // gets no wait status (the status pipe closes empty) and kills the step's session.
    app.put_pipeline_yaml(
        &t,
        &run_pipeline(&format!(
            "kill -9 $PPID\nsleep 3\ntouch {}",
            marker.display()
        )),
    )
    .await;

    let data = fire_and_wait_with(&app, &t, "{}").await;

    assert_eq!(
        data["executionDetails"]["pipelineExecutionSummary"]["status"], "Failed",
        "{data}"
    );
    assert!(
        data.to_string().contains("killed by signal 9 (SIGKILL)"),
        "the step says how it ended: {data}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "the script outlived its supervisor");
    // The spawner is unaffected: the next step runs.
    app.put_pipeline_yaml(&t, &run_pipeline("true")).await;
    assert_eq!(fire_and_wait(&app, &t).await, "Success");
}

#[tokio::test]
async fn a_working_directory_goes_to_the_next_execution_only_when_no_process_of_its_step_is_left() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let inode = "echo \"inode=$(stat -c %i .)\" >> \"$TRIGGERD_OUTPUT\"";
    // What arrived in the directory from an earlier step, looked for after two seconds.
    let look = format!(
        "left=$(ls | grep -c -e artifact -e leftover)\nsleep 2\n{inode}\n\
         echo \"left=$left $(ls | grep -c -e artifact -e leftover)\" >> \"$TRIGGERD_OUTPUT\""
    );

    // A step that ended through its supervisor: its directory, emptied, is the next one's.
    let first = step_outputs_of(&app, &t, &format!("{inode}\ntouch artifact")).await;
    let second = step_outputs_of(&app, &t, &look).await;
    assert_eq!(
        second["inode"], first["inode"],
        "kept and used again: {second}"
    );
    assert_eq!(second["left"], "0 0", "emptied: {second}");

    // A script that detaches a process there and kills its supervisor: that process outlives
    // the step, so the directory is removed, not handed on.
    step_outputs_of(
        &app,
        &t,
        "setsid sh -c 'touch ready; sleep 1; touch leftover' < /dev/null > /dev/null 2>&1 &\n\
         while [ ! -e ready ]; do sleep 0.05; done\nkill -9 $PPID\nsleep 3",
    )
    .await;
    let fourth = step_outputs_of(&app, &t, &look).await;
    assert_eq!(
        fourth["left"], "0 0",
        "nothing of the last step arrived: {fourth}"
    );
}

/// Runs `command` as the pipeline's one step and returns its outputs.
async fn step_outputs_of(app: &crate::helpers::TestApp, t: &TestTrigger, command: &str) -> Value {
    app.put_pipeline_yaml(t, &run_pipeline(command)).await;
    fire_and_wait(app, t).await;
    step_outputs(app, t).await
}

#[tokio::test]
async fn a_nul_in_a_payload_value_fails_the_step_instead_of_adding_variables() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    app.put_pipeline_yaml(
        &t,
        "pipeline:\n  name: deploy\n  identifier: deploy\n  stages:\n    - stage:\n        name: Build\n        identifier: build\n        steps:\n          - step:\n              identifier: run\n              type: Run\n              spec:\n                shell: bash\n                env:\n                  REF: <+trigger.payload.ref>\n                command: echo \"injected=${INJECTED:-no}\" >> \"$TRIGGERD_OUTPUT\"\n",
    )
    .await;

    let step = fire_and_wait_with(&app, &t, r#"{"ref": "x\u0000INJECTED=yes"}"#).await;
    assert_eq!(
        step["executionDetails"]["pipelineExecutionSummary"]["status"],
        "Failed"
    );
    assert!(
        step.to_string()
            .contains("the variable REF holds a NUL byte"),
        "the step says why it did not start: {step}"
    );

    // The spawner refused that one request and serves the next.
    assert_eq!(fire_and_wait(&app, &t).await, "Success");
    assert_eq!(step_outputs(&app, &t).await["injected"], "no");
}

#[tokio::test]
async fn a_step_cannot_make_the_server_write_through_a_link_it_planted() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let victim = app.dir.path().join("precious");
    std::fs::write(&victim, "precious").unwrap();
    // Step `plant` links the next step's output file, and the payload file's name, to the
    // victim; the server then clears the one (removing the link, never its target: step `next`
    // fails if the link is still there) and writes the other.
    let yaml = format!(
        "pipeline:\n  name: deploy\n  identifier: deploy\n  stages:\n    - stage:\n        name: Build\n        identifier: build\n        steps:\n          - step:\n              identifier: plant\n              type: Run\n              spec:\n                shell: sh\n                command: ln -s '{v}' \"$PWD/build.next.output\" && rm -f \"$TRIGGERD_PAYLOAD_FILE\" && ln -s '{v}' \"$TRIGGERD_PAYLOAD_FILE\"\n          - step:\n              identifier: next\n              type: Run\n              spec:\n                shell: sh\n                command: test ! -L \"$TRIGGERD_OUTPUT\"\n",
        v = victim.display()
    );
    app.put_pipeline_yaml(&t, &yaml).await;

    assert_eq!(fire_and_wait(&app, &t).await, "Success");

    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious",
        "the server wrote through a link a step planted"
    );
}

#[tokio::test]
async fn a_supervisor_takes_the_next_step_only_when_its_last_one_changed_nothing_it_hands_on() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let report = "echo \"supervisor=$PPID\" >> \"$TRIGGERD_OUTPUT\"\n\
                  echo \"files=$(ulimit -n)\" >> \"$TRIGGERD_OUTPUT\"\n\
                  echo \"nice=$(awk '{print $19}' /proc/$$/stat)\" >> \"$TRIGGERD_OUTPUT\"\n\
                  echo \"policy=$(chrt -p $$ | head -n 1 | sed 's/.*: //')\" >> \"$TRIGGERD_OUTPUT\"\n\
                  echo \"io=$(ionice -p $$)\" >> \"$TRIGGERD_OUTPUT\"\n\
                  echo \"autogroup=$(sed 's/.* nice //' /proc/self/autogroup)\" >> \"$TRIGGERD_OUTPUT\"\n\
                  fds=''; for f in /proc/$$/fd/*; do fds=\"$fds${f##*/} \"; done\n\
                  echo \"fds=$fds\" >> \"$TRIGGERD_OUTPUT\"";
    // The shell lists its own descriptors with a glob: `$(ls /proc/$$/fd)` saw the write end
    // of its own pipe now and then, before the shell closed it after forking `ls`.
    let first = step_outputs_of(&app, &t, report).await;
    let inherited = |outputs: &Value| {
        ["files", "nice", "policy", "io", "autogroup", "fds"].map(|name| outputs[name].clone())
    };

    // One step after another: the supervisor that ran the last one, stopped or not, runs the
    // next.
    let second = step_outputs_of(&app, &t, report).await;
    assert_eq!(second["supervisor"], first["supervisor"], "kept: {second}");
    assert_eq!(inherited(&second), inherited(&first), "{second}");
    app.put_pipeline_yaml(
        &t,
        &run_pipeline("sleep 30").replace("timeout: 5m", "timeout: 1s"),
    )
    .await;
    assert_eq!(fire_and_wait(&app, &t).await, "Failed");
    let third = step_outputs_of(&app, &t, report).await;
    assert_eq!(
        third["supervisor"], first["supervisor"],
        "kept after it stopped a step that timed out: {third}"
    );

    // A step that lowered its supervisor's limits or priority (a process of the same user
    // may), or asked it to exit: the next step has another supervisor, and what the first
    // handed on.
    let mut last = first["supervisor"].clone();
    for change in [
        "prlimit --pid $PPID --nofile=64:",
        "renice -n 19 -p $PPID > /dev/null",
        "chrt -i -p 0 $PPID",
        "ionice -c 3 -p $PPID",
        "echo 19 > /proc/self/autogroup",
        "kill -TERM $PPID; sleep 5",
    ] {
        let changed = step_outputs_of(&app, &t, &format!("{report}\n{change}")).await;
        assert_eq!(changed["supervisor"], last, "{change}: {changed}");
        let next = step_outputs_of(&app, &t, report).await;
        assert_ne!(next["supervisor"], last, "{change}: another supervisor");
        assert_eq!(inherited(&next), inherited(&first), "{change}: {next}");
        last = next["supervisor"].clone();
    }
}

/// Runs `command` as the pipeline's one step in two executions at once; returns their outputs.
async fn two_at_once(app: &crate::helpers::TestApp, t: &TestTrigger, command: &str) -> [Value; 2] {
    app.put_pipeline_yaml(t, &run_pipeline(&format!("sleep 0.5\n{command}")))
        .await;
    let (a, b) = tokio::join!(fire_and_wait(app, t), fire_and_wait(app, t));
    assert_eq!([a.as_str(), b.as_str()], ["Success", "Success"]);
    [
        outputs_of_event(app, t, 0).await,
        outputs_of_event(app, t, 1).await,
    ]
}

/// Runs a step that applies `command PID` to whichever of the supervisors `both` is not its
/// own, then `report`; returns that other supervisor's pid.
async fn to_the_other(
    app: &crate::helpers::TestApp,
    t: &TestTrigger,
    both: &[String; 2],
    command: &str,
    report: &str,
) -> String {
    let step = format!(
        "for p in {} {}; do [ $p = $PPID ] || {command} $p; done\n{report}",
        both[0], both[1]
    );
    let outputs = step_outputs_of(app, t, &step).await;
    both.iter()
        .find(|p| Some(p.as_str()) != outputs["supervisor"].as_str())
        .expect("the other one")
        .clone()
}

#[tokio::test]
async fn a_waiting_supervisor_that_another_step_stopped_or_changed_is_continued_or_replaced() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let report = "echo \"supervisor=$PPID\" >> \"$TRIGGERD_OUTPUT\"\n\
                  echo \"files=$(ulimit -n)\" >> \"$TRIGGERD_OUTPUT\"";
    let supervisors = |outputs: &[Value; 2]| {
        let mut pids = outputs
            .clone()
            .map(|o| o["supervisor"].as_str().unwrap_or("").to_owned());
        pids.sort();
        pids
    };
    // Two supervisors, both waiting once their steps ended.
    let first = two_at_once(&app, &t, report).await;
    let both = supervisors(&first);
    assert_ne!(
        both[0], both[1],
        "two steps at once, two supervisors: {first:?}"
    );

    // A step stops (SIGSTOP) the other, waiting one: it is continued before its next step,
    // which does not wait for its timeout (five minutes).
    to_the_other(&app, &t, &both, "kill -STOP", report).await;
    let continued = two_at_once(&app, &t, report).await;
    assert_eq!(supervisors(&continued), both, "{continued:?}");

    // A step lowers the other's limit on open files: it runs no step again, and later steps
    // start with the limit the first ones had.
    let changed = to_the_other(&app, &t, &both, "prlimit --nofile=64: --pid", report).await;
    let replaced = two_at_once(&app, &t, report).await;
    for outputs in &replaced {
        assert_ne!(
            outputs["supervisor"].as_str(),
            Some(changed.as_str()),
            "{replaced:?}"
        );
        assert_eq!(outputs["files"], first[0]["files"], "{replaced:?}");
    }

    // A step kills the other, waiting one: the next steps run on the one left and a new one.
    let both = supervisors(&replaced);
    let killed = to_the_other(&app, &t, &both, "kill -9", report).await;
    let after = two_at_once(&app, &t, report).await;
    assert!(
        after
            .iter()
            .all(|o| o["supervisor"].as_str() != Some(killed.as_str())),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_step_whose_processes_cannot_be_listed_fails_and_its_directory_is_not_handed_on() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let pid_file = app.dir.path().join("escaped.pid");
    // The supervisor then has no descriptor left to read /proc with: it cannot know that the
    // step left a process behind, so it does not say the step ended.
    put_escaping_pipeline(
        &app,
        &t,
        &pid_file,
        "touch artifact\nprlimit --pid $PPID --nofile=0:0",
    )
    .await;
    let data = fire_and_wait_with(&app, &t, "{}").await;
    let escaped = read_pid(&pid_file);
    assert_eq!(
        data["executionDetails"]["pipelineExecutionSummary"]["status"], "Failed",
        "{data}"
    );
    let next = step_outputs_of(
        &app,
        &t,
        "echo \"left=$(ls | grep -c artifact)\" >> \"$TRIGGERD_OUTPUT\"",
    )
    .await;
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(escaped).expect("pid"),
        rustix::process::Signal::KILL,
    );
    assert_eq!(
        next["left"], "0",
        "the directory went to the next execution: {next}"
    );
}

#[tokio::test]
async fn a_step_running_when_its_spawner_dies_is_stopped_though_its_supervisor_changed_user() {
    // The default `run_user`: as root, `nobody`, so the supervisor changes user (which clears
    // a parent-death signal).
    let app = crate::helpers::spawn_sqlite_app_with(|s| s.run_user = None).await;
    let t = app.create_trigger().await;
    // Where a step of any user can write.
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let spawner_file = shared.path().join("spawner.pid");
    let f = spawner_file.display();
    app.put_pipeline_yaml(
        &t,
        &run_pipeline(&format!(
            "awk '{{print $4}}' /proc/$PPID/stat > {f}.tmp && mv {f}.tmp {f}\nsleep 30"
        )),
    )
    .await;
    let (data, killed) = tokio::join!(fire_and_wait_with(&app, &t, "{}"), async {
        wait_for_file(&spawner_file).await;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(read_pid(&spawner_file)).expect("pid"),
            rustix::process::Signal::KILL,
        )
        .expect("kill");
        Instant::now()
    });
    assert_eq!(
        data["executionDetails"]["pipelineExecutionSummary"]["status"], "Failed",
        "{data}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "the step ran on after its spawner died"
    );
}

#[tokio::test]
async fn a_step_larger_than_a_supervisors_socket_buffer_runs_whole() {
    let app = spawn_app().await;
    let t = app.create_trigger().await;
    let report = "echo \"supervisor=$PPID\" >> \"$TRIGGERD_OUTPUT\"\n\
                  echo \"sizes=${#A} ${#B} ${#C}\" >> \"$TRIGGERD_OUTPUT\"";
    step_outputs_of(&app, &t, report).await;
    // Three variables of 100,000 bytes: more than a Unix socket's default send buffer (208
    // KiB), sent in parts to the waiting supervisor (without waiting: a process of its user
    // may have stopped it), each under the kernel's limit for one variable (128 KiB).
    app.put_pipeline_yaml(
        &t,
        &run_pipeline(report).replace(
            "                shell: sh\n",
            "                shell: sh\n                env:\n                  A: <+trigger.payload.a>\n                  B: <+trigger.payload.b>\n                  C: <+trigger.payload.c>\n",
        ),
    )
    .await;
    let big = "x".repeat(100_000);
    let body = serde_json::json!({"a": big, "b": big, "c": big}).to_string();

    let data = fire_and_wait_with(&app, &t, &body).await;

    assert_eq!(
        data["executionDetails"]["pipelineExecutionSummary"]["status"], "Success",
        "{data}"
    );
    let outputs = step_outputs(&app, &t).await;
    assert_eq!(outputs["sizes"], "100000 100000 100000", "{outputs}");
}
