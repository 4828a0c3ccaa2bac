//! One SQLite file belongs to one process (DESIGN §9): an exclusive `flock` on `<db>.lock`,
//! held for as long as the store is open. The kernel drops it when the process dies, kill -9
//! included, so a crash never leaves a stale lock behind.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::store::{StoreError, StoreResult};

/// The held lock; dropping it releases the file.
#[derive(Debug)]
pub(super) struct FileLock {
    _file: File,
}

/// Why the database could not be locked: another process holds it.
#[derive(Debug, thiserror::Error)]
#[error("{} is in use by another triggerd process{}; one SQLite file belongs to one process (use PostgreSQL to run several nodes)", .database.display(), .holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
pub(super) struct InUse {
    database: PathBuf,
    holder: Option<u32>,
}

/// The lock file of the database at `database`, next to the file it resolves to, so that two
/// paths to one database (a symbolic link, a linked directory) share one lock. A link whose
/// target does not exist yet resolves to that target too, since SQLite creates it there.
fn lock_path(database: &Path) -> PathBuf {
    let mut name = resolve(database).into_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// `path` with every symbolic link followed, even when the last target does not exist.
pub(super) fn resolve(path: &Path) -> PathBuf {
    let mut path = path.to_owned();
    // A bound, so that a loop of links ends (SQLite then fails to open it anyway).
    for _ in 0..40 {
        if let Ok(real) = std::fs::canonicalize(&path) {
            return real;
        }
        match std::fs::read_link(&path) {
            Ok(target) => {
                let base = path.parent().map(Path::to_owned).unwrap_or_default();
                path = base.join(target);
            }
            Err(_) => break,
        }
    }
    // The file does not exist: resolve its directory.
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match (
        std::fs::canonicalize(parent.unwrap_or(Path::new("."))),
        path.file_name(),
    ) {
        (Ok(dir), Some(file)) => dir.join(file),
        _ => path,
    }
}

/// How long a lock that this very process appears to hold is waited for. A store of this
/// process that was just closed has released it, but a child process forked at that moment
/// (a Run step between its fork and its exec) briefly shares the lock's file description; on a
/// loaded machine the child may not run its exec for milliseconds.
const OWN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes the database's lock without waiting for another process, and writes this process's
/// id into the lock file so the next one can say who holds it.
pub(super) fn lock(database: &Path) -> StoreResult<FileLock> {
    let path = lock_path(database);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::db(format!("opening the lock file {}", path.display()), e))?;
    let started = std::time::Instant::now();
    while flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut text = String::new();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut text);
        let holder: Option<u32> = text.trim().parse().ok();
        if holder == Some(std::process::id()) && started.elapsed() < OWN_LOCK_WAIT {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        return Err(StoreError::db(
            "locking the database",
            InUse {
                database: database.to_owned(),
                holder,
            },
        ));
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    if let Err(e) = written {
        tracing::warn!(error = %e, file = %path.display(), "could not write the pid into the lock file");
    }
    Ok(FileLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("triggerd.db");
        let held = lock(&db).expect("first lock");
        let refused = lock(&db).expect_err("second lock refused");
        let text = format!("{:#}", anyhow::Error::new(refused));
        assert!(
            text.contains("in use by another triggerd process"),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(held);
        lock(&db).expect("free again once dropped");
    }

    #[test]
    fn a_symbolic_link_to_a_locked_database_is_refused_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("triggerd.db");
        std::fs::write(&db, b"").expect("database file");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).expect("symlink");
        let _held = lock(&db).expect("first lock");
        lock(&link).expect_err("the same database through a link");
    }

    #[test]
    fn a_link_to_a_database_not_created_yet_locks_its_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("data").join("triggerd.db");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        let link = dir.path().join("link.db");
        // A relative target, resolved against the link's directory.
        std::os::unix::fs::symlink("data/triggerd.db", &link).expect("symlink");
        let _held = lock(&link).expect("first lock, through the link");
        lock(&db).expect_err("the same database by its own path");
    }
}
