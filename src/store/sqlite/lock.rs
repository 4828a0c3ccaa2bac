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
/// paths to one database (a symbolic link, a linked directory) share one lock.
fn lock_path(database: &Path) -> PathBuf {
    let resolved = std::fs::canonicalize(database).ok().or_else(|| {
        let parent = database.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = std::fs::canonicalize(parent.unwrap_or(Path::new("."))).ok()?;
        Some(dir.join(database.file_name()?))
    });
    let mut name = resolved
        .as_deref()
        .unwrap_or(database)
        .as_os_str()
        .to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the database's lock without waiting, and writes this process's id into the lock file
/// so the next one can say who holds it.
pub(super) fn lock(database: &Path) -> StoreResult<FileLock> {
    let path = lock_path(database);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::db(format!("opening the lock file {}", path.display()), e))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(StoreError::db(
            "locking the database",
            InUse {
                database: database.to_owned(),
                holder: text.trim().parse().ok(),
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
}
