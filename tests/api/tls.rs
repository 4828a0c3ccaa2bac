//! Built-in TLS through the real binary: HTTPS with HTTP/2 by ALPN, a certificate read again
//! on SIGHUP, and a bad certificate refused at start and kept out at reload.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Version};

use crate::durability::{assert_refused, made_up_root_key, run_to_end, triggerd, Daemon};

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a certificate");
    (made.cert.pem(), made.key_pair.serialize_pem())
}

/// A client that trusts only `cert_pem` (no built-in roots, no connection reuse).
fn client_trusting(cert_pem: &str, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("client")
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

fn hang_up(daemon: &Daemon) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -HUP succeeded");
}

async fn healthz(client: &reqwest::Client, daemon: &Daemon) -> reqwest::Result<reqwest::Response> {
    client
        .get(format!("{}/healthz", daemon.address))
        .send()
        .await
}

#[tokio::test]
async fn https_offers_http2_and_a_renewed_certificate_is_served_after_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = self_signed();
    write_pair(dir.path(), &first);
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let root = made_up_root_key();
    let daemon = Daemon::start_tls(
        dir.path(),
        "tls",
        &[],
        &[
            ("TRIGGERD_TLS__CERT", cert),
            ("TRIGGERD_TLS__KEY", key),
            ("TRIGGERD_ROOT_KEY", &root),
            // The CLI's variable, set in the same shell, is not taken for a setting.
            ("TRIGGERD_CA_CERT", cert),
        ],
        client_trusting(&first.0, false),
    )
    .await;
    let logs = format!("{}{}", daemon.stdout_text(), daemon.stderr_text());
    assert!(
        logs.contains("public_url=https://127.0.0.1:"),
        "links default to https: {logs}"
    );
    assert!(
        logs.contains("tls.key can be read by other users") && logs.contains("mode=0644"),
        "a key file others can read is warned about: {logs}"
    );

    // HTTP/2 by ALPN for a client that offers it; HTTP/1.1 for one that does not.
    let res = healthz(&client_trusting(&first.0, false), &daemon)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), Version::HTTP_2);
    let res = healthz(&client_trusting(&first.0, true), &daemon)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), Version::HTTP_11);
    // The API's own answers go over it, with the usual envelope.
    let res = client_trusting(&first.0, false)
        .get(format!("{}/api/v1/whoami", daemon.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["code"],
        "INVALID_TOKEN"
    );
    // The CLI trusts the certificate named by TRIGGERD_CA_CERT, and only then.
    let whoami = |ca: Option<&str>| {
        let mut cmd = triggerd(dir.path());
        cmd.arg("whoami")
            .env("XDG_CONFIG_HOME", dir.path())
            .env("TRIGGERD_URL", &daemon.address)
            .env("TRIGGERD_API_KEY", &root);
        if let Some(ca) = ca {
            cmd.env("TRIGGERD_CA_CERT", ca);
        }
        run_to_end(cmd)
    };
    let out = whoami(Some(cert)).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("root"),
        "{out:?}"
    );
    // A CA file that is missing, or holds no certificate, is named in a usage error (exit 3).
    for bad in ["/nonexistent/ca.pem", key] {
        let out = whoami(Some(bad)).await;
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("TRIGGERD_CA_CERT") && stderr.contains(bad),
            "{stderr}"
        );
    }
    let out = whoami(None).await;
    assert!(
        !out.status.success(),
        "an unknown certificate is refused: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TRIGGERD_CA_CERT"),
        "the refusal says how to trust it: {out:?}"
    );

    // Nothing is served in clear text on the TLS port.
    let plain = daemon.address.replace("https://", "http://");
    let clear = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(
        clear.is_err() || clear.as_ref().unwrap().status() != StatusCode::OK,
        "plain HTTP must not be answered: {clear:?}"
    );

    // A renewed certificate, then SIGHUP: new connections get it.
    let second = self_signed();
    write_pair(dir.path(), &second);
    hang_up(&daemon);
    let deadline = Instant::now() + Duration::from_secs(15);
    while healthz(&client_trusting(&second.0, false), &daemon)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is served within 15 s of SIGHUP; stderr:\n{}",
            daemon.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        healthz(&client_trusting(&first.0, false), &daemon)
            .await
            .is_err(),
        "the old certificate is no longer served"
    );

    // A renewal caught half-way (the new certificate, the old key), then a broken file: the
    // server keeps serving the certificate it has, and says why.
    let third = self_signed();
    std::fs::write(dir.path().join("cert.pem"), &third.0).unwrap();
    let failure = reload_failure(&daemon, 1).await;
    assert!(failure.contains("does not go with"), "{failure}");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").unwrap();
    let failure = reload_failure(&daemon, 2).await;
    assert!(
        failure.contains("cert.pem") && failure.contains("no CERTIFICATE block"),
        "{failure}"
    );
    let res = healthz(&client_trusting(&second.0, false), &daemon)
        .await
        .expect("still served with the certificate it had");
    assert_eq!(res.status(), StatusCode::OK);
}

/// Sends SIGHUP and waits for the `nth` failed reload to be logged; returns that log line.
async fn reload_failure(daemon: &Daemon, nth: usize) -> String {
    hang_up(daemon);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let logs = format!("{}{}", daemon.stdout_text(), daemon.stderr_text());
        let failures: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("could not be read again"))
            .collect();
        if failures.len() >= nth {
            return failures[nth - 1].to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "failed reload {nth} is logged within 15 s: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sighup_without_tls_does_not_stop_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "plain", &[], &[]).await;
    hang_up(&daemon);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !format!("{}{}", daemon.stdout_text(), daemon.stderr_text()).contains("nothing to reload")
    {
        assert!(
            Instant::now() < deadline,
            "SIGHUP is logged: {}",
            daemon.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = daemon
        .request(reqwest::Method::GET, "/healthz")
        .send()
        .await
        .expect("still serving");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_missing_broken_or_mismatched_certificate_stops_serve_with_a_one_line_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_pem, key_pem) = self_signed();
    let (_, other_key) = self_signed();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let other = dir.path().join("other.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    std::fs::write(&other, &other_key).unwrap();
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let listen = ["--listen", "127.0.0.1:0"];

    for (cert, key, named) in [
        (path(&missing), path(&key), "tls.cert"),
        (path(&garbage), path(&key), "tls.cert"),
        (path(&cert), path(&missing), "tls.key"),
        (path(&cert), path(&cert), "tls.key"),
        (path(&cert), path(&other), "does not go with"),
    ] {
        assert_refused(
            &dir,
            &listen,
            &[("TRIGGERD_TLS__CERT", &cert), ("TRIGGERD_TLS__KEY", &key)],
            named,
        )
        .await;
    }
    // One without the other.
    assert_refused(
        &dir,
        &listen,
        &[("TRIGGERD_TLS__CERT", &path(&cert))],
        "tls.key",
    )
    .await;
    assert!(
        !dir.path().join("t.db").exists(),
        "nothing was created before the certificate was checked"
    );
}

#[tokio::test]
async fn console_sign_in_over_http2_checks_the_origin_against_the_requests_authority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = self_signed();
    write_pair(dir.path(), &pair);
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let root = made_up_root_key();
    // A public_url other than the address the browser uses (a proxy's name, say): the origin
    // check then falls back to the request's own host, which HTTP/2 carries as :authority.
    let daemon = Daemon::start_tls(
        dir.path(),
        "console",
        &[],
        &[
            ("TRIGGERD_TLS__CERT", cert.to_str().unwrap()),
            ("TRIGGERD_TLS__KEY", key.to_str().unwrap()),
            ("TRIGGERD_ROOT_KEY", &root),
            ("TRIGGERD_PUBLIC_URL", "https://hooks.example.com"),
        ],
        client_trusting(&pair.0, false),
    )
    .await;
    let browser = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pair.0.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |origin: String| {
        browser
            .post(format!("{}/ui/signin", daemon.address))
            .header("Origin", origin)
            .form(&[("key", root.as_str()), ("next", "/ui/")])
            .send()
    };

    let res = sign_in(daemon.address.clone()).await.unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "signed in over HTTP/2");
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        cookie.starts_with("triggerd_session=") && cookie.contains("Secure"),
        "{cookie}"
    );

    let res = sign_in("https://evil.example".into()).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "another site is refused"
    );
    let logs = format!("{}{}", daemon.stdout_text(), daemon.stderr_text());
    assert!(
        !logs.contains("can be read by other users"),
        "a 0600 key is not warned about: {logs}"
    );
}
