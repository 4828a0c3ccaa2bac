//! Several real `triggerd` processes on one PostgreSQL database (DESIGN §11): nothing
//! acknowledged is lost and nothing runs twice when a node is killed, a change made through one
//! node reaches the others within a second, and a node that loses its database answers 503
//! and recovers by itself. Each test gets a fresh database, dropped afterwards. These run on
//! PostgreSQL whatever backend the rest of the suite uses.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::durability::{made_up_root_key, set_up_trigger, Daemon, RemoteTrigger};
use crate::helpers::{assert_error, success_data, PostgresDatabase, TestReceiver};

/// Terminal execution statuses, as stored.
const ENDED: &str = "('Success', 'Failed', 'Aborted', 'Expired', 'ApprovalRejected', 'Errored')";

/// Starts `count` nodes on `url` at the same time (so their migrations race), with a short
/// lease so that a dead node's work is taken over quickly, and small pools, so that the tests
/// of this module running at once stay well under the server's 100 connections.
async fn start_nodes(dir: &Path, url: &str, root: &str, count: usize) -> Vec<Daemon> {
    let envs = [
        ("TRIGGERD_ROOT_KEY", root),
        // Short enough for a quick takeover, long enough that a live node busy with the rest
        // of the suite renews in time (its renewal comes every third of it). At 5 s a CI run
        // once ended an execution as interrupted that the killed node did not hold.
        ("TRIGGERD_NODE__LEASE", "8s"),
        ("TRIGGERD_POSTGRES__POOL_SIZE", "6"),
        ("TRIGGERD_OUTBOUND__ALLOWED_CIDRS", "127.0.0.0/8"),
        (
            "TRIGGERD_OUTBOUND__RETRY_SCHEDULE",
            "0s,100ms,200ms,500ms,1s,2s,2s,2s,2s,2s",
        ),
    ];
    let starts = (0..count).map(|i| {
        let name = format!("node{i}");
        async move { Daemon::start_on(dir, &name, url, &[], &envs).await }
    });
    futures_util::future::join_all(starts).await
}

/// A pipeline whose one Run step appends its execution id to `lines`.
fn appending_pipeline(lines: &Path) -> String {
    format!(
        "pipeline:\n  name: deploy\n  identifier: deploy\n  stages:\n    - stage:\n        name: Build\n        identifier: build\n        steps:\n          - step:\n              identifier: record\n              type: Run\n              spec:\n                shell: sh\n                command: sleep 0.02; echo \"$TRIGGERD_EXECUTION_ID\" >> {}\n",
        lines.display()
    )
}

async fn admin_put(node: &Daemon, key: &str, path: &str, body: String, content_type: &str) {
    let res = node
        .request(Method::PUT, path)
        .header("X-Api-Key", key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    assert!(res.status().is_success(), "{path}: {}", res.status());
}

/// The node id a node shows in `/readyz`.
async fn node_id(node: &Daemon) -> String {
    let res = node
        .request(Method::GET, "/readyz")
        .send()
        .await
        .expect("readyz");
    success_data(res).await["node"]
        .as_str()
        .expect("node id")
        .to_owned()
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

async fn count(db: &tokio_postgres::Client, query: &str) -> i64 {
    db.query_one(query, &[]).await.expect(query).get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_and_run_nothing_twice_when_one_is_killed() {
    let _heavy = crate::helpers::heavy_test().await;
    const WEBHOOKS: usize = 3000;
    let pg = PostgresDatabase::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = dir.path().join("lines");
    let root = made_up_root_key();
    let receiver = TestReceiver::start(204, "", &[]).await;
    let mut nodes = start_nodes(dir.path(), &pg.url, &root, 3).await;
    let t = set_up_trigger(&nodes[0], &root).await;
    let p = "/api/v1/accounts/acc/orgs/default/projects/proj";
    admin_put(
        &nodes[0],
        &t.admin_key,
        &format!("{p}/pipelines/deploy"),
        appending_pipeline(&lines),
        "application/yaml",
    )
    .await;
    admin_put(
        &nodes[0],
        &t.admin_key,
        &format!("{p}/eventrules/ends"),
        json!({"url": format!("{}/hook", receiver.url), "pipelines": ["*"], "events": ["pipeline_end"]})
            .to_string(),
        "application/json",
    )
    .await;
    let victim = node_id(&nodes[1]).await;
    let addresses: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| n.address.clone()).collect());

    // Fire round robin, 24 at a time. Every tenth webhook reuses the key of an earlier one.
    // A webhook a node could not take (connection refused once it is dead, or a 503) goes to
    // the next node with the same key.
    let acked: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let firing = {
        let (acked, done, addresses, path) = (
            acked.clone(),
            done.clone(),
            addresses.clone(),
            t.v3_path.clone(),
        );
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(24));
            let mut set = JoinSet::new();
            for i in 0..WEBHOOKS {
                let permit = permits.clone().acquire_owned().await.expect("permit");
                let key = if i % 10 == 9 {
                    format!("k{}", i - 5)
                } else {
                    format!("k{i}")
                };
                let (client, acked, done, addresses, path) = (
                    client.clone(),
                    acked.clone(),
                    done.clone(),
                    addresses.clone(),
                    path.clone(),
                );
                set.spawn(async move {
                    let _permit = permit;
                    for attempt in 0..6 {
                        let address = &addresses[(i + attempt) % addresses.len()];
                        let sent = client
                            .post(format!("{address}{path}"))
                            .header("content-type", "application/json")
                            .header("Idempotency-Key", &key)
                            .body(json!({"n": i}).to_string())
                            .send()
                            .await;
                        let Ok(res) = sent else { continue };
                        if res.status() != StatusCode::OK {
                            continue;
                        }
                        let body: Value = res.json().await.expect("json");
                        let event = body["data"]["eventCorrelationId"]
                            .as_str()
                            .expect("eventCorrelationId")
                            .to_owned();
                        acked.lock().unwrap().entry(key).or_default().insert(event);
                        done.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    panic!("webhook {i} was refused by every node");
                });
            }
            while let Some(r) = set.join_next().await {
                r.expect("firing task");
            }
        })
    };

    // Kill node 1 mid-run and note what it held.
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::Relaxed) < WEBHOOKS / 3 {
        assert!(
            Instant::now() < deadline,
            "a third of the webhooks within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let db = sql(&pg.url).await;
    nodes[1].kill_hard();
    // A claim the node sent just before it died is still committed by its PostgreSQL backend,
    // possibly after a query sent now: let those finish before reading what it held.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held: Vec<String> = db
        .query(
            &format!("SELECT plan_execution_id FROM executions WHERE lease_owner = $1 AND status NOT IN {ENDED}"),
            &[&victim],
        )
        .await
        .expect("the dead node's executions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    firing
        .await
        .expect("every webhook acknowledged by some node");

    // Every execution runs to an end, on the nodes still alive.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let open = count(
            &db,
            &format!("SELECT count(*) FROM executions WHERE status NOT IN {ENDED}"),
        )
        .await;
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} executions still open after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every acknowledged key has exactly one event, stored once.
    let acked = acked.lock().unwrap().clone();
    let unique_keys = (0..WEBHOOKS).filter(|i| i % 10 != 9).count();
    assert_eq!(acked.len(), unique_keys, "every key acknowledged");
    for (key, events) in &acked {
        assert_eq!(
            events.len(),
            1,
            "key {key} answered with one event id: {events:?}"
        );
    }
    let acked_events: HashSet<String> = acked.values().flatten().cloned().collect();
    let stored: Vec<(String, String)> = db
        .query("SELECT event_id, idempotency_key FROM webhook_events", &[])
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(stored.len(), unique_keys, "one stored event per key");
    let stored_ids: HashSet<String> = stored.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        stored_ids, acked_events,
        "exactly the acknowledged events are stored"
    );

    // Every execution ran its step at most once; every successful one wrote its line.
    let executions: Vec<(String, String)> = db
        .query(
            "SELECT plan_execution_id, status || ' (' || coalesce(failure_message, '') || ')' \
             FROM executions",
            &[],
        )
        .await
        .expect("executions")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(executions.len(), unique_keys, "one execution per event");
    let written = std::fs::read_to_string(&lines).expect("lines");
    let mut seen = HashSet::new();
    for line in written.lines() {
        assert!(
            seen.insert(line.to_owned()),
            "execution {line} ran its step twice"
        );
    }
    for (id, status) in &executions {
        if status == "Success ()" {
            assert!(
                seen.contains(id),
                "successful execution {id} wrote its line"
            );
        } else {
            // Only a step cut short by the kill may fail, as interrupted.
            assert!(
                held.contains(id),
                "{id} is {status} but the dead node did not hold it"
            );
        }
    }
    assert!(
        !held.is_empty(),
        "the dead node held executions when it was killed"
    );
    for id in &held {
        let status = &executions
            .iter()
            .find(|(x, _)| x == id)
            .expect("held execution")
            .1;
        assert!(
            ENDED.contains(&format!(
                "'{}'",
                status.split(' ').next().unwrap_or_default()
            )),
            "{id} taken over and ended: {status}"
        );
    }

    // The receiver got every execution's end; a duplicate carries the same webhook-id.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ids_by_execution: HashMap<String, HashSet<String>> = HashMap::new();
    loop {
        ids_by_execution.clear();
        for r in receiver.requests() {
            let body: Value = serde_json::from_str(&r.body).expect("event body");
            // The rule's `ping` has no execution: counting it would end the wait one
            // delivery early.
            let Some(execution) = body["data"]["executionId"].as_str() else {
                continue;
            };
            let execution = execution.to_owned();
            let webhook_id = r.header("webhook-id").expect("webhook-id").to_owned();
            ids_by_execution
                .entry(execution)
                .or_default()
                .insert(webhook_id);
        }
        if ids_by_execution.len() >= executions.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (id, _) in &executions {
        let ids = ids_by_execution
            .get(id)
            .unwrap_or_else(|| panic!("pipeline_end of {id} delivered"));
        assert_eq!(
            ids.len(),
            1,
            "every delivery of {id}'s end has one webhook-id: {ids:?}"
        );
    }
}

/// Fires `t` on `node` with `key`; returns the HTTP status.
async fn fire(node: &Daemon, t: &RemoteTrigger, key: Option<&str>) -> StatusCode {
    let mut req = node
        .request(Method::POST, &t.v3_path)
        .header("content-type", "application/json")
        .body("{}");
    if let Some(key) = key {
        req = req.header("X-Api-Key", key);
    }
    req.send().await.expect("request").status()
}

/// Polls `node` until a webhook gets `expected`; returns how long that took.
async fn until_status(
    node: &Daemon,
    t: &RemoteTrigger,
    key: Option<&str>,
    expected: StatusCode,
) -> Duration {
    let start = Instant::now();
    loop {
        if fire(node, t, key).await == expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{expected} within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_and_a_disabled_trigger_are_refused_on_every_node_within_a_second() {
    let pg = PostgresDatabase::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = made_up_root_key();
    let nodes = start_nodes(dir.path(), &pg.url, &root, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let t = set_up_trigger(a, &root).await;
    let res = a
        .request(Method::POST, "/api/v1/accounts/acc/apikeys")
        .header("X-Api-Key", &t.admin_key)
        .json(&json!({"name": "ci", "role": "executor"}))
        .send()
        .await
        .expect("request");
    let data = success_data(res).await;
    let (ci, ci_id) = (
        data["key"].as_str().expect("key").to_owned(),
        data["identifier"].as_str().expect("key id").to_owned(),
    );
    // Node b has verified the key and cached it.
    assert_eq!(fire(b, &t, Some(&ci)).await, StatusCode::OK);

    let res = a
        .request(
            Method::DELETE,
            &format!("/api/v1/accounts/acc/apikeys/{ci_id}"),
        )
        .header("X-Api-Key", &t.admin_key)
        .send()
        .await
        .expect("revoke");
    assert!(res.status().is_success(), "revoked: {}", res.status());
    assert_eq!(
        fire(a, &t, Some(&ci)).await,
        StatusCode::UNAUTHORIZED,
        "at once where revoked"
    );
    let revoked_on_b = until_status(b, &t, Some(&ci), StatusCode::UNAUTHORIZED).await;

    assert_eq!(
        fire(b, &t, None).await,
        StatusCode::OK,
        "b has the trigger cached"
    );
    let res = a
        .request(
            Method::PATCH,
            &format!(
                "{}/pipelines/deploy/triggers/on_push",
                "/api/v1/accounts/acc/orgs/default/projects/proj"
            ),
        )
        .header("X-Api-Key", &t.admin_key)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .expect("disable");
    assert!(res.status().is_success(), "disabled: {}", res.status());
    assert_eq!(
        fire(a, &t, None).await,
        StatusCode::BAD_REQUEST,
        "at once where disabled"
    );
    let disabled_on_b = until_status(b, &t, None, StatusCode::BAD_REQUEST).await;

    assert!(
        revoked_on_b <= Duration::from_secs(1),
        "revocation took {revoked_on_b:?}"
    );
    assert!(
        disabled_on_b <= Duration::from_secs(1),
        "disabling took {disabled_on_b:?}"
    );
}

/// A TCP forwarder to PostgreSQL that the test can cut (every connection dropped, nothing
/// accepted) and restore on the same port: the database becomes unreachable and comes back.
struct Cable {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Cable {
    async fn connect(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the cable");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut links = JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await {
                        let mut inbound = inbound;
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            port,
            task: Some(task),
        }
    }

    /// Drops every connection and stops listening (aborting the task drops its JoinSet,
    /// which aborts every link).
    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_its_database_answers_503_and_recovers_by_itself() {
    let pg = PostgresDatabase::create();
    let mut cable = Cable::connect(0).await;
    let url = pg
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", cable.port));
    assert_ne!(url, pg.url, "the node goes through the cable");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = made_up_root_key();
    let nodes = start_nodes(dir.path(), &url, &root, 1).await;
    let node = &nodes[0];
    let t = set_up_trigger(node, &root).await;
    assert_eq!(fire(node, &t, None).await, StatusCode::OK);

    cable.cut().await;
    let started = Instant::now();
    let res = node
        .request(Method::POST, &t.v3_path)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("an answer, not a hang");
    let answered_in = started.elapsed();
    assert!(res.headers().contains_key("retry-after"), "Retry-After");
    assert_error(res, 503, "SERVICE_UNAVAILABLE", "").await;
    let ready = node
        .request(Method::GET, "/readyz")
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answered_in < Duration::from_secs(10),
        "503 within 10 s, took {answered_in:?}"
    );
    let stored_before = count(&sql(&pg.url).await, "SELECT count(*) FROM webhook_events").await;
    assert_eq!(stored_before, 1, "nothing stored for the refused webhook");

    let _restored = Cable::connect(cable.port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = node
            .request(Method::GET, "/readyz")
            .send()
            .await
            .expect("readyz");
        if ready.status() == StatusCode::OK && fire(node, &t, None).await == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "recovered within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
