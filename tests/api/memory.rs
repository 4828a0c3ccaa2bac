//! Memory through the real binary: what key verification allocates is given back.

use reqwest::{Method, StatusCode};

use crate::durability::{made_up_root_key, Daemon};

/// The resident set of `pid`, in KiB.
#[cfg(target_os = "linux")]
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn key_verifications_do_not_keep_their_argon2_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Four argon2 threads whatever the machine: without the fix each kept its own 19 MiB.
    let daemon = Daemon::start(
        dir.path(),
        "memory",
        &[],
        &[("TRIGGERD_AUTH__ARGON2_THREADS", "4")],
    )
    .await;
    let before = rss_kib(daemon.pid());

    // Each unknown key id costs one argon2 verification (19 MiB) against a dummy hash.
    for _ in 0..12 {
        let res = daemon
            .request(Method::GET, "/api/v1/whoami")
            .header("X-Api-Key", made_up_root_key())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    let after = rss_kib(daemon.pid());
    // glibc's default kept each verification's 19 MiB in an arena: 100+ MiB more here.
    assert!(
        after < before + 30 * 1024,
        "resident memory grew from {before} KiB to {after} KiB over 12 key checks"
    );
}
