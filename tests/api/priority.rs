//! CPU priority through the real binary: the engine's threads and the Run steps run below the
//! HTTP workers, and everything else keeps the process's priority. Linux only: thread
//! priorities and `/proc`.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;

use crate::durability::Daemon;

/// The nice value of each thread of `pid`, by thread name.
fn nice_by_thread(pid: u32) -> BTreeMap<String, Vec<i32>> {
    let mut threads: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let path = task.expect("task").path();
        let name = std::fs::read_to_string(path.join("comm")).expect("comm");
        let stat = std::fs::read_to_string(path.join("stat")).expect("stat");
        threads
            .entry(name.trim().to_owned())
            .or_default()
            .push(nice_of(&stat));
    }
    threads
}

/// The nice value (field 19) of a `/proc/.../stat` line; the name before it may hold spaces.
pub(crate) fn nice_of(stat: &str) -> i32 {
    let after_name = &stat[stat.rfind(')').expect("stat line") + 2..];
    after_name
        .split(' ')
        .nth(16)
        .expect("nice")
        .parse()
        .expect("a number")
}

/// The nice value of each child process of `pid`, by name.
fn nice_of_children(pid: u32) -> Vec<(String, i32)> {
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let list = std::fs::read_to_string(task.expect("task").path().join("children"))
            .unwrap_or_default();
        for child in list.split_whitespace() {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).expect("stat");
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).expect("comm");
            children.push((comm.trim().to_owned(), nice_of(&stat)));
        }
    }
    children
}

#[tokio::test]
async fn the_engine_and_its_steps_run_below_the_http_workers_and_nothing_else_does() {
    let own = nice_of(&std::fs::read_to_string("/proc/self/stat").expect("stat"));
    for (setting, engine) in [(None, (own + 10).min(19)), (Some("3"), (own + 3).min(19))] {
        let dir = tempfile::tempdir().expect("tempdir");
        let envs: Vec<(&str, &str)> = setting
            .map(|n| ("TRIGGERD_ENGINE_NICE", n))
            .into_iter()
            .collect();
        let daemon = Daemon::start(dir.path(), "priority", &[], &envs).await;
        let threads = nice_by_thread(daemon.pid());
        let engine_threads = &threads["tokio-rt-worker"];
        assert!(
            engine_threads.iter().all(|&n| n == engine),
            "engine threads at {engine_threads:?}, expected {engine}: {threads:?}"
        );
        let http = threads
            .iter()
            .filter(|(name, _)| name.starts_with("actix-server"))
            .flat_map(|(_, nice)| nice)
            .collect::<Vec<_>>();
        assert!(http.len() >= 2, "no HTTP workers among {threads:?}");
        for (name, nice) in &threads {
            if name != "tokio-rt-worker" {
                assert!(
                    nice.iter().all(|&n| n == own),
                    "{name} at {nice:?}, expected the process's {own}: {threads:?}"
                );
            }
        }
        // The Run steps' spawner, and so every step it starts, runs with the engine.
        let children = nice_of_children(daemon.pid());
        assert!(!children.is_empty(), "no step spawner");
        assert!(
            children.iter().all(|&(_, n)| n == engine),
            "children {children:?}, expected the engine's {engine}"
        );
    }
}
