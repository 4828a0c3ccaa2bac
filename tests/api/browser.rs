//! The console in a real browser: Debian's `chromium`, driven through `chromedriver` with
//! fantoccini. One test walks the whole story of DESIGN §12 and saves a screenshot of each main
//! page under `target/ui-screenshots/`.
//!
//! Without chromium and chromedriver the test says so and passes, so that `cargo test` works
//! on a machine without a browser; with `TRIGGERD_BROWSER_TESTS=required` (as `.ci/run` sets
//! it) a missing or broken browser fails the test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{spawn_app, TestApp, TestReceiver};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless chromium session; its chromedriver is killed when dropped.
struct Browser {
    client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn required() -> bool {
    std::env::var("TRIGGERD_BROWSER_TESTS").is_ok_and(|v| v == "required")
}

impl Browser {
    /// Starts chromedriver and a headless chromium, or `None` (with a note) when they are not
    /// installed and the browser tests are not required.
    async fn start() -> Option<Browser> {
        let installed =
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
        if !installed {
            assert!(
                !required(),
                "TRIGGERD_BROWSER_TESTS=required but {CHROMIUM} or {CHROMEDRIVER} is missing \
                 (apt-get install chromium chromium-driver)"
            );
            eprintln!("browser test skipped: install chromium and chromium-driver to run it");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromium starts under chromedriver");
        Some(Browser { client, driver })
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the page's path (with its query) satisfies `wanted`: a click's navigation
    /// may not have begun when the click returns.
    async fn wait_path(&self, wanted: impl Fn(&str) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let path = self.path().await;
            if wanted(&path) {
                return;
            }
            if Instant::now() > deadline {
                let page = self.client.source().await.unwrap_or_default();
                eprintln!("the page's source:\n{page}");
                panic!("never reached {what}: still on {path}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        self.element(Locator::Css(selector)).await
    }

    /// The element, waiting up to 20 s for it (a click's navigation may still be loading). On
    /// failure the page's source goes to stderr first and the reason last, so that the end of
    /// a long test log names it.
    async fn element(&self, locator: Locator<'_>) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(locator)
            .await
        {
            Ok(el) => el,
            Err(e) => {
                let page = self.client.source().await.unwrap_or_default();
                eprintln!("the page's source:\n{page}");
                panic!("{locator:?} on {}: {e}", self.path().await)
            }
        }
    }

    async fn click(&self, selector: &str) {
        self.css(selector).await.click().await.expect("click");
    }

    async fn click_link(&self, text: &str) {
        self.element(Locator::LinkText(text))
            .await
            .click()
            .await
            .expect("click");
    }

    async fn type_into(&self, selector: &str, text: &str) {
        let el = self.css(selector).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    /// Sets a textarea's value as a paste would (typing YAML key by key is slow).
    async fn paste(&self, id: &str, text: &str) {
        self.client
            .execute(
                "document.getElementById(arguments[0]).value = arguments[1];",
                vec![json!(id), json!(text)],
            )
            .await
            .expect("paste");
    }

    async fn text(&self, selector: &str) -> String {
        self.css(selector).await.text().await.expect("text")
    }

    async fn value(&self, selector: &str) -> String {
        self.css(selector)
            .await
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    /// Waits until `selector`'s text contains `wanted`, reloading the page first when `reload`.
    async fn wait_for_text(&self, selector: &str, wanted: &str, reload: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(el) = self.client.find(Locator::Css(selector)).await {
                if el.text().await.is_ok_and(|t| t.contains(wanted)) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{selector} never showed {wanted:?} on {}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            if reload {
                self.client.refresh().await.expect("reload");
            }
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }
}

fn pipeline(release: &std::path::Path) -> String {
    format!(
        "pipeline:
  name: Story
  identifier: story
  stages:
    - stage:
        name: Build
        identifier: build
        steps:
          - step:
              identifier: compile
              name: Compile
              type: Run
              timeout: 2m
              spec:
                shell: sh
                command: |
                  for i in 1 2 3; do echo \"line $i\"; sleep 0.2; done
                  echo 'warning: on stderr' >&2
                  while [ ! -e '{}' ]; do sleep 0.1; done
                  echo released
    - stage:
        name: Ship
        identifier: ship
        steps:
          - step: {{identifier: approve, name: Approve, type: Approval, timeout: 1h, spec: {{message: Ship it?}}}}
          - step: {{identifier: done, name: Done, type: Run, spec: {{shell: sh, command: echo shipped}}}}
",
        release.display()
    )
}

const TRIGGER: &str = "trigger:
  name: On push
  identifier: on_push
  enabled: true
  pipelineIdentifier: story
  source:
    type: Webhook
    spec:
      type: Custom
      spec:
        payloadConditions:
          - key: <+trigger.payload.ref>
            operator: Equals
            value: refs/heads/main
";

async fn revoke(app: &TestApp, key: &str) {
    let key_id = key.split('.').nth(2).unwrap();
    let res = app
        .with_key(
            reqwest::Method::DELETE,
            &format!("/api/v1/accounts/acc/apikeys/{key_id}"),
            &app.root_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_console_walks_the_whole_story_in_a_real_browser() {
    let _heavy = crate::helpers::heavy_test().await;
    let Some(b) = Browser::start().await else {
        return;
    };
    let receiver = TestReceiver::start(200, "thanks", &[]).await;
    let app = spawn_app().await;
    app.create_project("acc", "default", "proj").await;
    let admin = app.create_key("acc", "admin", None).await;
    let project = format!("{}/ui/accounts/acc/orgs/default/projects/proj", app.address);
    let release = app.dir.path().join("release");

    // 1. A bad key: the error, in the page.
    b.goto(&format!("{}/ui/", app.address)).await;
    assert!(
        b.path().await.starts_with("/ui/signin"),
        "{}",
        b.path().await
    );
    b.type_into("#key", "pat.acc.000000000000000000000000.wrong")
        .await;
    b.click("form[action='/ui/signin'] button").await;
    assert!(b.text("#signin-error").await.contains("not valid"));
    b.screenshot("signin").await;

    // 2. Signing in lands on the account's projects; pick one.
    b.type_into("#key", &admin).await;
    b.click("form[action='/ui/signin'] button").await;
    b.wait_path(|p| p == "/ui/accounts/acc", "the account's page")
        .await;
    b.click_link("proj").await;
    b.wait_path(|p| p.ends_with("/projects/proj/executions"), "executions")
        .await;
    assert!(b.text("main").await.contains("No executions yet"));

    // 3. A pipeline and a trigger, created in their forms.
    b.goto(&format!("{project}/pipelines")).await;
    b.paste("yaml", &pipeline(&release)).await;
    b.click("form[action$='/pipelines'] button").await;
    b.wait_path(|p| p.ends_with("/pipelines/story"), "the new pipeline")
        .await;
    b.screenshot("pipeline").await;
    b.goto(&format!("{project}/triggers")).await;
    b.paste("yaml", TRIGGER).await;
    b.click("form[action$='/triggers'] button").await;
    b.wait_path(
        |p| p.ends_with("/pipelines/story/triggers/on_push"),
        "the new trigger",
    )
    .await;

    // 4. Its cURL, copied (the script shows the button) and fired over HTTP.
    let copy = b.css("button[data-copy='curl']").await;
    assert_eq!(copy.attr("hidden").await.unwrap(), None, "the script ran");
    copy.click().await.unwrap();
    let curl = b.value("#curl").await;
    let url = curl
        .split("--url '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("the webhook URL in the cURL")
        .to_owned();
    let res = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"ref": "refs/heads/main"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    // 5. The event appears on the trigger's page by itself, and leads to its execution.
    b.wait_for_text("#events", "TARGET_EXECUTION_REQUESTED", false)
        .await;
    b.screenshot("trigger").await;
    b.click("#events td a").await;
    b.wait_path(|p| p.contains("/events/"), "the event").await;
    assert!(b.text("table.conditions").await.contains("refs/heads/main"));
    b.screenshot("event").await;
    let exec = b
        .css("main a[href*='/executions/']")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    b.goto(&format!("{}{exec}", app.address)).await;

    // 6. The running step's log, live: lines arrive while it runs, then it completes.
    b.wait_for_text("pre.log", "line 3", false).await;
    assert!(b.text("pre.log").await.contains("warning: on stderr"));
    b.screenshot("execution-live-log").await;
    std::fs::write(&release, "go").unwrap();
    b.wait_for_text("pre.log", "released", false).await;

    // 7. The Approval step: its buttons appear as the page refreshes itself; approve.
    b.wait_for_text("#summary", "ApprovalWaiting", false).await;
    b.type_into("#comment", "ship it").await;
    b.click("form[action$='/approve'] button[type=submit]:not([formaction])")
        .await;
    b.wait_for_text("#summary dd", "Success", true).await;
    b.screenshot("execution").await;

    // 8. An event rule: its first delivery (the ping), then a redelivery.
    b.goto(&format!("{project}/eventrules")).await;
    let rule = format!(
        "identifier: ops\nname: Ops\nenabled: true\npipelines: [\"*\"]\nevents: [pipeline_end]\nurl: {}/events\n",
        receiver.url
    );
    b.paste("yaml", &rule).await;
    b.click("form[action$='/eventrules'] button").await;
    assert!(b.text(".secret").await.contains("shown only this once"));
    b.goto(&format!("{project}/eventrules/ops")).await;
    assert!(
        !b.text("main").await.contains("shown only this once"),
        "only once"
    );
    b.wait_for_text("#deliveries", "Success", true).await;
    b.click("#deliveries td a").await;
    assert!(
        b.text("main").await.contains("thanks"),
        "the receiver's answer"
    );
    let before = receiver.requests().len();
    b.click("form[action$='/redeliver'] button").await;
    b.wait_for_text("main dl", "Success", true).await;
    // The page may show the first attempt's "Success" before the redelivery is attempted: the
    // receiver is what says it came again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.requests().len() <= before {
        assert!(Instant::now() < deadline, "delivered again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.screenshot("delivery").await;

    // 9. Revoking the key ends the session: the next page is the sign-in page.
    b.goto(&format!("{}/ui/accounts/acc/keys", app.address))
        .await;
    b.screenshot("keys").await;
    revoke(&app, &admin).await;
    b.goto(&format!("{project}/executions")).await;
    b.wait_path(|p| p.starts_with("/ui/signin"), "the sign-in page")
        .await;
    assert!(b.text(".notice").await.contains("revoked"));

    b.client.clone().close().await.ok();
}
