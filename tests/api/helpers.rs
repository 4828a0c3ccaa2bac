//! Test harness: the real application on a free loopback port with a fresh database, and
//! typed helpers for the calls tests make.
//!
//! The database is a SQLite file in a temporary directory, or with
//! `TRIGGERD_TEST_BACKEND=postgres` a fresh PostgreSQL database on the local server
//! ([`PostgresDatabase`]), so the same suite runs against each backend.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use triggerd::bootstrap;
use triggerd::config::{OutboundSettings, Settings};
use triggerd::startup::Application;

/// A running application.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The root key.
    pub root_key: String,
    /// A shared HTTP client.
    pub client: reqwest::Client,
    /// The settings it was started with.
    pub settings: Settings,
    /// Holds the temporary directory with the database (or the working directories).
    pub dir: std::sync::Arc<TempDir>,
    /// The PostgreSQL database, when the suite runs on PostgreSQL; dropped with the last app
    /// that uses it.
    pub database: Option<std::sync::Arc<PostgresDatabase>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A trigger created through the API.
#[derive(Clone)]
pub struct TestTrigger {
    pub account: String,
    pub org: String,
    pub project: String,
    pub pipeline: String,
    pub trigger: String,
    pub token: String,
    /// An admin key of the account.
    pub admin_key: String,
}

impl TestTrigger {
    /// The v3 intake path with every identifier.
    pub fn v3_path(&self) -> String {
        format!(
            "/webhook/custom/{}/v3?accountIdentifier={}&orgIdentifier={}&projectIdentifier={}&pipelineIdentifier={}&triggerIdentifier={}",
            self.token, self.account, self.org, self.project, self.pipeline, self.trigger
        )
    }

    /// The v2 intake path with every identifier.
    pub fn v2_path(&self) -> String {
        format!(
            "/webhook/custom/v2?accountIdentifier={}&orgIdentifier={}&projectIdentifier={}&pipelineIdentifier={}&triggerIdentifier={}",
            self.account, self.org, self.project, self.pipeline, self.trigger
        )
    }

    /// `P` of the management API.
    pub fn project_path(&self) -> String {
        format!(
            "/api/v1/accounts/{}/orgs/{}/projects/{}",
            self.account, self.org, self.project
        )
    }

    /// The trigger's management URL path.
    pub fn trigger_path(&self) -> String {
        format!(
            "{}/pipelines/{}/triggers/{}",
            self.project_path(),
            self.pipeline,
            self.trigger
        )
    }
}

/// A fresh database for one test, on the backend the suite runs on; removed when dropped.
pub struct TestDatabase {
    dir: TempDir,
    postgres: Option<PostgresDatabase>,
}

impl TestDatabase {
    /// Creates it.
    pub async fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            postgres: on_postgres().then(PostgresDatabase::create),
        }
    }

    /// Test settings that use it.
    pub fn settings(&self) -> Settings {
        test_settings(&self.dir, self.postgres.as_ref())
    }
}

/// Whether the suite runs on PostgreSQL (`TRIGGERD_TEST_BACKEND=postgres`) rather than SQLite.
pub fn on_postgres() -> bool {
    std::env::var("TRIGGERD_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The server the PostgreSQL tests use: local, trust authentication, user `postgres`.
const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A fresh PostgreSQL database, created empty and dropped (with any connection still open to
/// it) when this value is dropped.
pub struct PostgresDatabase {
    /// Its name, `triggerd_t_<16 hex>`.
    pub name: String,
    /// Its `postgres://` URL.
    pub url: String,
}

impl PostgresDatabase {
    /// Creates a database with a random name.
    pub fn create() -> PostgresDatabase {
        let name = format!(
            "triggerd_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        admin_sql(format!("CREATE DATABASE {name}"));
        PostgresDatabase {
            url: format!("{POSTGRES_SERVER}/{name}"),
            name,
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        admin_sql(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// Runs one statement on the server's `postgres` database, on a thread of its own (so that it
/// works from `Drop` and from inside a test's runtime alike).
fn admin_sql(sql: String) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(
                &format!("{POSTGRES_SERVER}/postgres"),
                tokio_postgres::NoTls,
            )
            .await
            .expect("the test PostgreSQL server answers on 127.0.0.1:5432");
            let driver = tokio::spawn(connection);
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            drop(client);
            let _ = driver.await;
        });
    })
    .join()
    .expect("the admin statement ran");
}

/// Default test settings: loopback port 0, a database in `dir` (or `database` when given),
/// quiet.
pub fn test_settings(dir: &TempDir, database: Option<&PostgresDatabase>) -> Settings {
    let db: PathBuf = dir.path().join("triggerd.db");
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: database
            .map_or_else(|| format!("sqlite://{}", db.display()), |d| d.url.clone()),
        // Where SQLite's default puts them: next to the database file.
        work_dir: database.map(|_| dir.path().join("triggerd-work").display().to_string()),
        http_workers: 2,
        shutdown_grace_secs: 5,
        // Run steps as the test's own user (as root, the default would be `nobody`; the
        // isolation tests cover that).
        run_user: Some(rustix::process::geteuid().as_raw().to_string()),
        // Run steps under the real supervisor, as `triggerd serve` does.
        step_supervisor: Some(PathBuf::from(env!("CARGO_BIN_EXE_triggerd"))),
        outbound: OutboundSettings {
            // Tests deliver to receivers on loopback, with a short retry schedule.
            allowed_cidrs: vec!["127.0.0.0/8".into(), "::1/128".into()],
            retry_schedule: ["0s", "100ms", "200ms", "300ms"].map(String::from).to_vec(),
            timeout: "5s".into(),
            ..OutboundSettings::default()
        },
        ..Settings::default()
    }
}

/// Starts the app with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app after `tweak` adjusts the settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let database = on_postgres().then(|| std::sync::Arc::new(PostgresDatabase::create()));
    let mut settings = test_settings(&dir, database.as_deref());
    tweak(&mut settings);
    start(settings, dir, database, None).await
}

/// Starts the app on SQLite whatever the suite's backend, after `tweak` adjusts the settings:
/// for what only the embedded store has (its WAL, its writer queue).
pub async fn spawn_sqlite_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let mut settings = test_settings(&dir, None);
    tweak(&mut settings);
    start(settings, dir, None, None).await
}

async fn start(
    settings: Settings,
    dir: std::sync::Arc<TempDir>,
    database: Option<std::sync::Arc<PostgresDatabase>>,
    root_key: Option<String>,
) -> TestApp {
    let app = Application::build(&settings).await.expect("app builds");
    let port = app.port();
    let gateway = app.gateway();
    let root_keys = bootstrap::RootKeys {
        store: gateway.store.as_ref(),
        verifier: &gateway.keys,
    };
    let root_key = match root_key {
        Some(k) => {
            root_keys.ensure(Some(&k)).await.expect("root key accepted");
            k
        }
        None => root_keys
            .ensure(None)
            .await
            .expect("root key")
            .expect("fresh database gets a root key")
            .expose_secret()
            .to_owned(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        root_key,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        settings,
        dir,
        database,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// `/metrics`, as Prometheus text.
    pub async fn metrics(&self) -> String {
        self.request(Method::GET, "/metrics")
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    }

    /// Stops the app gracefully and waits until it has.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("app task").expect("app stopped cleanly");
        }
    }

    /// Stops the app and starts a new one on the same database file.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let settings = Settings {
            listen: "127.0.0.1:0".into(),
            ..self.settings.clone()
        };
        start(
            settings,
            self.dir.clone(),
            self.database.clone(),
            Some(self.root_key.clone()),
        )
        .await
    }

    /// Runs `sql` directly on the app's database and returns how many rows it changed (on
    /// SQLite, while the app runs, after waiting for its writer). Values are written into the
    /// SQL by the test, so the same text serves both backends where their SQL agrees.
    pub async fn execute_sql(&self, sql: &str) -> u64 {
        match &self.database {
            Some(database) => {
                let (client, connection) =
                    tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
                        .await
                        .expect("connect to the test database");
                let driver = tokio::spawn(connection);
                let changed = client.execute(sql, &[]).await.expect(sql);
                drop(client);
                let _ = driver.await;
                changed
            }
            None => {
                let path = self.settings.database_url.trim_start_matches("sqlite://");
                let db = rusqlite::Connection::open(path).expect("open the database");
                db.busy_timeout(Duration::from_secs(10))
                    .expect("set a busy timeout");
                db.execute(sql, []).expect(sql) as u64
            }
        }
    }

    /// A request to `path` on the app.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.address, path))
    }

    /// A request with `X-Api-Key: key`.
    pub fn with_key(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.request(method, path).header("X-Api-Key", key)
    }

    /// Creates (or renames) an account with the root key.
    pub async fn create_account(&self, account: &str) {
        let res = self
            .with_key(
                Method::PUT,
                &format!("/api/v1/accounts/{account}"),
                &self.root_key,
            )
            .json(&json!({"name": account}))
            .send()
            .await
            .expect("request");
        assert!(
            res.status().is_success(),
            "create account: {}",
            res.text().await.unwrap()
        );
    }

    /// Creates a key in `account` with `role` (and an optional project list); returns the key.
    pub async fn create_key(
        &self,
        account: &str,
        role: &str,
        projects: Option<Vec<&str>>,
    ) -> String {
        let mut body = json!({"name": format!("{role} key"), "role": role});
        if let Some(p) = projects {
            body["projects"] = json!(p);
        }
        let res = self
            .with_key(
                Method::POST,
                &format!("/api/v1/accounts/{account}/apikeys"),
                &self.root_key,
            )
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 201, "create key");
        let body: Value = res.json().await.expect("json");
        body["data"]["key"].as_str().expect("key").to_owned()
    }

    /// Creates an account (if needed), an org and a project.
    pub async fn create_project(&self, account: &str, org: &str, project: &str) {
        self.create_account(account).await;
        for path in [
            format!("/api/v1/accounts/{account}/orgs/{org}"),
            format!("/api/v1/accounts/{account}/orgs/{org}/projects/{project}"),
        ] {
            let res = self
                .with_key(Method::PUT, &path, &self.root_key)
                .json(&json!({"name": "test"}))
                .send()
                .await
                .expect("request");
            assert!(
                res.status().is_success(),
                "{path}: {}",
                res.text().await.unwrap()
            );
        }
    }

    /// Stores a one-stage pipeline `pipeline` in the project.
    pub async fn create_pipeline(&self, account: &str, org: &str, project: &str, pipeline: &str) {
        let yaml = pipeline_yaml(pipeline);
        let res = self
            .with_key(
                Method::PUT,
                &format!(
                    "/api/v1/accounts/{account}/orgs/{org}/projects/{project}/pipelines/{pipeline}"
                ),
                &self.root_key,
            )
            .header("content-type", "application/yaml")
            .body(yaml)
            .send()
            .await
            .expect("request");
        assert!(
            res.status().is_success(),
            "pipeline: {}",
            res.text().await.unwrap()
        );
    }

    /// Stores `yaml` as the trigger's pipeline (`t.pipeline`) and asserts it was accepted.
    pub async fn put_pipeline_yaml(&self, t: &TestTrigger, yaml: &str) {
        let res = self
            .with_key(
                Method::PUT,
                &format!("{}/pipelines/{}", t.project_path(), t.pipeline),
                &self.root_key,
            )
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .expect("request");
        assert!(
            res.status().is_success(),
            "pipeline: {}",
            res.text().await.unwrap()
        );
    }

    /// Stores a trigger from YAML; returns the response body.
    pub async fn put_trigger_yaml(&self, t: &TestTrigger, yaml: &str) -> Response {
        self.with_key(Method::PUT, &t.trigger_path(), &self.root_key)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// Creates account/org/project/pipeline/trigger with the given ids; returns the trigger.
    pub async fn create_trigger_in(&self, account: &str, org: &str, project: &str) -> TestTrigger {
        self.create_project(account, org, project).await;
        self.create_pipeline(account, org, project, "deploy").await;
        let admin_key = self.create_key(account, "admin", None).await;
        let mut t = TestTrigger {
            account: account.into(),
            org: org.into(),
            project: project.into(),
            pipeline: "deploy".into(),
            trigger: "on_push".into(),
            token: String::new(),
            admin_key,
        };
        let res = self.put_trigger_yaml(&t, &trigger_yaml("on_push")).await;
        assert_eq!(res.status(), 201, "trigger created");
        let body: Value = res.json().await.expect("json");
        t.token = body["data"]["customWebhookToken"]
            .as_str()
            .expect("token")
            .to_owned();
        t
    }

    /// A ready trigger in account `acc`, org `default`, project `proj`.
    pub async fn create_trigger(&self) -> TestTrigger {
        self.create_trigger_in("acc", "default", "proj").await
    }

    /// Sets `mandate_custom_webhook_authorization` at a scope (org/project may be empty).
    pub async fn set_mandate(
        &self,
        account: &str,
        org: &str,
        project: &str,
        value: bool,
        allow_overrides: bool,
    ) {
        let mut path = format!(
            "/api/v1/settings/mandate_custom_webhook_authorization?accountIdentifier={account}"
        );
        if !org.is_empty() {
            path.push_str(&format!("&orgIdentifier={org}"));
        }
        if !project.is_empty() {
            path.push_str(&format!("&projectIdentifier={project}"));
        }
        let res = self
            .with_key(Method::PUT, &path, &self.root_key)
            .json(&json!({"value": value, "allowOverrides": allow_overrides}))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "setting: {}", res.text().await.unwrap());
    }

    /// POSTs `body` to `path` with optional `X-Api-Key`.
    pub async fn post_webhook(&self, path: &str, key: Option<&str>, body: &str) -> Response {
        let mut req = self
            .request(Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            req = req.header("X-Api-Key", key);
        }
        req.send().await.expect("request")
    }

    /// The project's stored webhook events (first page), newest first.
    pub async fn events(&self, t: &TestTrigger) -> Vec<Value> {
        let res = self
            .with_key(
                Method::GET,
                &format!("{}/webhookevents", t.project_path()),
                &t.admin_key,
            )
            .send()
            .await
            .expect("request");
        let data = success_data(res).await;
        data["content"].as_array().expect("content").clone()
    }

    /// GETs the status of an event.
    pub async fn get_status(&self, event_id: &str, account: &str, key: Option<&str>) -> Response {
        let mut req = self.request(
            Method::GET,
            &format!("/webhook/triggerExecutionDetails/{event_id}?accountIdentifier={account}"),
        );
        if let Some(key) = key {
            req = req.header("X-Api-Key", key);
        }
        req.send().await.expect("request")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The resource in an `apply` document of `examples/` (`kind`, scope keys and `key: {...}`),
/// as YAML the REST API takes: `key: {...}`.
pub fn example_body(doc: &str, key: &str) -> String {
    let value: Value = serde_yaml_ng::from_str(doc).expect("example is YAML");
    serde_yaml_ng::to_string(&json!({ key: value[key] })).expect("yaml")
}

/// A one-stage pipeline YAML.
pub fn pipeline_yaml(id: &str) -> String {
    format!(
        "pipeline:\n  name: {id}\n  identifier: {id}\n  stages:\n    - stage:\n        name: Build\n        identifier: build\n        steps:\n          - step:\n              identifier: wait\n              type: Wait\n              spec:\n                duration: 0s\n"
    )
}

/// A custom-trigger YAML with no conditions.
pub fn trigger_yaml(id: &str) -> String {
    format!(
        "trigger:\n  name: {id}\n  identifier: {id}\n  enabled: true\n  source:\n    type: Webhook\n    spec:\n      type: Custom\n      spec:\n        payloadConditions: []\n        headerConditions: []\n"
    )
}

/// Asserts an error envelope of DESIGN §2.4 with `status`, `code`, and a message containing
/// `message`. Returns the body.
pub async fn assert_error(res: Response, status: u16, code: &str, message: &str) -> Value {
    let got = res.status().as_u16();
    let correlation = res
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = res.text().await.expect("a body");
    assert_eq!(got, status, "HTTP status; body: {text}");
    let body: Value = serde_json::from_str(&text).expect("an envelope body");
    assert_eq!(body["status"], "ERROR", "{body}");
    assert_eq!(body["code"], code, "{body}");
    let text = body["message"].as_str().expect("message");
    assert!(
        text.contains(message),
        "message {text:?} should contain {message:?}"
    );
    assert_eq!(body["responseMessages"][0]["code"], code, "{body}");
    assert_eq!(body["responseMessages"][0]["message"], body["message"]);
    assert_eq!(body["responseMessages"][0]["level"], "ERROR");
    assert!(body["detailedMessage"].is_null());
    assert!(body["metadata"].is_null());
    assert_eq!(
        body["correlationId"].as_str(),
        correlation.as_deref(),
        "header and body ids agree"
    );
    body
}

/// Reads a success envelope and returns `data`.
pub async fn success_data(res: Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.expect("json body");
    assert!(
        status.is_success(),
        "expected success, got {status}: {body}"
    );
    assert_eq!(body["status"], "SUCCESS", "{body}");
    assert!(body["metaData"].is_null());
    body["data"].clone()
}

/// One request a [`TestReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTP server on loopback that records every request and answers each with a fixed
/// status, body and extra headers. Stopped when dropped.
pub struct TestReceiver {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    handle: actix_web::dev::ServerHandle,
}

/// What a receiver answers: status, body and extra headers.
pub type Answer = (u16, String, Vec<(String, String)>);

impl TestReceiver {
    /// Starts a receiver answering `status` with `body` and `headers`.
    pub async fn start(status: u16, body: &str, headers: &[(&str, &str)]) -> TestReceiver {
        let answer: Answer = (
            status,
            body.to_owned(),
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        );
        Self::scripted(0, vec![], answer).await
    }

    /// Starts a receiver on `port` (0 picks one) that gives the n-th request `script[n]` and
    /// every later one `then`.
    pub async fn scripted(port: u16, script: Vec<Answer>, then: Answer) -> TestReceiver {
        Self::build(port, script, then, std::time::Duration::ZERO).await
    }

    /// Starts a receiver that records each request at once but answers `status` only after
    /// `delay`.
    pub async fn slow(delay: std::time::Duration, status: u16) -> TestReceiver {
        Self::build(0, vec![], (status, String::new(), vec![]), delay).await
    }

    async fn build(
        port: u16,
        script: Vec<Answer>,
        then: Answer,
        delay: std::time::Duration,
    ) -> TestReceiver {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Received>::new()));
        let recorded = requests.clone();
        let script = std::sync::Arc::new((script, then));
        let server = HttpServer::new(move || {
            let (recorded, script) = (recorded.clone(), script.clone());
            App::new().default_service(web::to(move |req: HttpRequest, bytes: web::Bytes| {
                let (recorded, script) = (recorded.clone(), script.clone());
                async move {
                    let (status, body, headers) = {
                        let mut all = recorded.lock().unwrap();
                        all.push(Received {
                            method: req.method().to_string(),
                            path: req.uri().to_string(),
                            headers: req
                                .headers()
                                .iter()
                                .map(|(n, v)| {
                                    (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect(),
                            body: String::from_utf8_lossy(&bytes).into_owned(),
                        });
                        script.0.get(all.len() - 1).unwrap_or(&script.1).clone()
                    };
                    tokio::time::sleep(delay).await;
                    let mut response = HttpResponse::build(
                        actix_web::http::StatusCode::from_u16(status).expect("a status"),
                    );
                    for (name, value) in headers {
                        response.insert_header((name, value));
                    }
                    response.body(body)
                }
            }))
        })
        .workers(1)
        .max_connection_rate(1024)
        .disable_signals()
        .bind(("127.0.0.1", port))
        .expect("bind a receiver");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        TestReceiver {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            handle,
        }
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

/// Held by the tests that load the whole machine (a browser, a flood of webhooks) or that
/// measure how the server copes with load, so that they do not run at the same time on a
/// two-core machine and skew one another.
pub async fn heavy_test() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}
