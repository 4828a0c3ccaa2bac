//! The executions' working directories (DESIGN §6.1): one per execution with a Run step, empty
//! but for the payload file and mode 0700 when its first Run step starts, owned by the step's
//! user.
//!
//! Each directory and its payload file cost an inode. This VM's ext4 has no journal, and without
//! one ext4 skips, for every inode it allocates, each inode freed in the last half minute or so
//! whose table block is still dirty: the more directories a second the engine makes and removes,
//! the longer each allocation searches. With one-step pipelines of Run `true`, making and
//! removing the two inodes took 15 % of all CPU time (issue 13). So when an execution ends, its
//! directory is kept as a spare if it can be made as new, and the next execution's directory is
//! a spare renamed into place; any other directory is removed. To be kept, a directory
//! - was made (or taken) by this process for the execution, and every step run there reported
//!   its end from its supervisor, which reports only once it has killed every process the step
//!   started: no process of a step is left to reach it. Once any step did not report
//!   ([`WorkDirs::keep_none_of`]), none is kept any more, and the spares are removed: a process
//!   left behind may hold another directory open, which would reach a later execution;
//! - is first moved out of the step user's reach, into this process's spare directory (mode
//!   0700, the server's), and given back to the server (owner, mode 0700), so that nothing of
//!   that user can change it any more, even through a descriptor opened before;
//! - then has no extended attributes (an ACL) and the inode flags of a new directory;
//! - and is emptied: every entry removed but the payload file, kept only when it is a regular
//!   file of the server's own with no other link, mode 0644 and no extended attributes, and
//!   truncated.
//!
//! The next execution's payload is written over the kept file. At most one spare per worker is
//! kept, none when steps run unsupervised. At start, [`WorkDirs::prepare`] removes every spare
//! (this process's are in a directory of its own: nodes may share the root) with every
//! directory whose execution has ended.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::fs::{OFlags, RenameFlags, CWD};

use super::run_user::RunUser;
use crate::domain::ids::PlanExecutionId;
use crate::store::executions::status;
use crate::store::Store;

/// The payload file's name in a working directory.
const PAYLOAD: &str = "payload";

/// The working directories under one root, and the spares.
#[derive(Debug)]
pub struct WorkDirs {
    root: PathBuf,
    /// This process's spares, under the root: `.spare-` and a random name.
    spare_dir: PathBuf,
    spares: Mutex<Vec<Spare>>,
    /// How many spares are kept: none when steps run unsupervised.
    keep: usize,
    /// The directories this process made or took for their executions, while every step run
    /// there has reported its end: the only ones kept.
    clean: Mutex<HashSet<PathBuf>>,
    /// The name of the next spare.
    next: AtomicU64,
    /// Set once a step did not report its end: nothing is kept from then on.
    left_behind: AtomicBool,
}

/// An emptied directory in the spare directory.
#[derive(Debug)]
struct Spare {
    path: PathBuf,
    /// Whether it holds an empty payload file of the server's own.
    payload: bool,
}

impl WorkDirs {
    /// The directories under `root`, keeping up to `keep` spares.
    pub fn new(root: PathBuf, keep: usize) -> Self {
        let spare_dir = root.join(format!(".spare-{:016x}", rand::random::<u64>()));
        Self {
            root,
            spare_dir,
            spares: Mutex::new(Vec::new()),
            keep,
            clean: Mutex::new(HashSet::new()),
            next: AtomicU64::new(0),
            left_behind: AtomicBool::new(false),
        }
    }

    /// The root, made and checked at start ([`super::run_user::own_work_root`]).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the execution `id` gets its working directory.
    pub fn of(&self, id: &PlanExecutionId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// Removes the directories of executions that have ended or no longer exist (they ended
    /// while this node was down), and every spare, then makes this process's spare directory.
    pub async fn prepare(&self, store: &dyn Store) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ended = match PlanExecutionId::parse(&name) {
                Some(id) => match store.load_run(&id).await {
                    Ok(Some(run)) => status::is_terminal(&run.execution.status),
                    Ok(None) => true,
                    Err(_) => false,
                },
                None => true,
            };
            if ended {
                // A file is what an older version left: its copy of the supervisor binary.
                let _ = match entry.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir_all(entry.path()),
                    _ => std::fs::remove_file(entry.path()),
                };
            }
        }
        if self.keep > 0 {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&self.spare_dir)?;
        }
        Ok(())
    }

    /// Makes `dir` for a Run step, unless an earlier step of its execution has, and writes the
    /// payload file there once (`body`). Returns the payload file's path.
    pub fn make(&self, dir: &Path, user: Option<&RunUser>, body: &str) -> io::Result<PathBuf> {
        let payload = dir.join(PAYLOAD);
        let mut made = true;
        let written = match self.take_spare(dir) {
            // The directory is still the server's, mode 0700: nothing else can be in it.
            Some(true) => overwrite_own_file(&payload, body),
            Some(false) => write_payload_file(&payload, body, false),
            None => {
                let created = match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(dir),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        made = false;
                        Ok(())
                    }
                    created => created,
                };
                created.map_err(context("could not create the working directory"))?;
                write_payload_file(&payload, body, true)
            }
        };
        written.map_err(context("could not write the payload file"))?;
        if made && self.keep > 0 {
            if let Ok(mut clean) = self.clean.lock() {
                clean.insert(dir.to_path_buf());
            }
        }
        // Whatever the umask, and whatever an earlier step of the execution did to it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(context("could not create the working directory"))?;
        if let Some(user) = user {
            // The step's own: its user owns it, nobody else may enter it.
            rustix::fs::chown(
                dir,
                Some(rustix::fs::Uid::from_raw(user.uid)),
                Some(rustix::fs::Gid::from_raw(user.gid)),
            )
            .map_err(|e| {
                io::Error::other(format!(
                    "could not give the working directory to user {}: {e}",
                    user.name
                ))
            })?;
        }
        Ok(payload)
    }

    /// Renames a spare to `dir`: `Some(payload)` when it did, `None` when there is no spare or
    /// `dir` exists already.
    fn take_spare(&self, dir: &Path) -> Option<bool> {
        let spare = self.spares.lock().ok()?.pop()?;
        match rustix::fs::renameat_with(CWD, &spare.path, CWD, dir, RenameFlags::NOREPLACE) {
            Ok(()) => Some(spare.payload),
            Err(rustix::io::Errno::EXIST) => {
                self.keep_spare(spare);
                None
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&spare.path);
                None
            }
        }
    }

    fn keep_spare(&self, spare: Spare) {
        match self.spares.lock() {
            Ok(mut spares)
                if spares.len() < self.keep && !self.left_behind.load(Ordering::Relaxed) =>
            {
                spares.push(spare)
            }
            _ => {
                let _ = std::fs::remove_dir_all(&spare.path);
            }
        }
    }

    /// Keeps no directory any more, `dir` included, and removes the spares: a step ran in
    /// `dir` whose supervisor did not report its end (the script killed it, or not every
    /// process it started could be killed), so a process of the step may still be about.
    pub fn keep_none_of(&self, dir: &Path) {
        self.left_behind.store(true, Ordering::Relaxed);
        if let Ok(mut clean) = self.clean.lock() {
            clean.remove(dir);
        }
        let spares = self
            .spares
            .lock()
            .map(|mut spares| std::mem::take(&mut *spares));
        for spare in spares.unwrap_or_default() {
            let _ = std::fs::remove_dir_all(&spare.path);
        }
    }

    /// Ends an execution's working directory, if its pipeline may have made one: kept as a
    /// spare when the module's conditions hold and there is room, else removed.
    pub fn end(&self, dir: Option<&PathBuf>) {
        let Some(dir) = dir else { return };
        let clean = self.clean.lock().is_ok_and(|mut clean| clean.remove(dir))
            && !self.left_behind.load(Ordering::Relaxed);
        let room = self
            .spares
            .lock()
            .is_ok_and(|spares| spares.len() < self.keep);
        if clean && room {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let path = self.spare_dir.join(n.to_string());
            if rustix::fs::renameat_with(CWD, dir, CWD, &path, RenameFlags::NOREPLACE).is_ok() {
                match as_new(&path, &self.spare_dir) {
                    Ok(payload) => self.keep_spare(Spare { path, payload }),
                    Err(_) => {
                        let _ = std::fs::remove_dir_all(&path);
                    }
                }
                return;
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Removes an execution's working directory (one that ended without a worker).
    pub fn remove(&self, id: &PlanExecutionId) {
        let _ = std::fs::remove_dir_all(self.of(id));
    }
}

/// `e`, saying what failed.
fn context(what: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Makes `dir`, a spare now out of the step user's reach, as a new directory would be (see the
/// module): true when it keeps an empty payload file. `like` is a directory this process made,
/// whose inode flags a new one has. An error leaves it to be removed.
fn as_new(dir: &Path, like: &Path) -> io::Result<bool> {
    rustix::fs::chown(
        dir,
        Some(rustix::process::geteuid()),
        Some(rustix::process::getegid()),
    )?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    // From here on nobody but the server can change it.
    if rustix::fs::llistxattr_query(dir)? > 0 {
        return Err(io::Error::other("it has extended attributes"));
    }
    // None for both where the file system has no such flags.
    let flags = |path: &Path| {
        File::open(path)
            .ok()
            .and_then(|d| rustix::fs::ioctl_getflags(&d).ok())
    };
    if flags(dir) != flags(like) {
        return Err(io::Error::other(
            "its inode flags are not a new directory's",
        ));
    }
    let mut payload = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if entry.file_name() == PAYLOAD && kind.is_file() && truncate_own_file(&path).is_ok() {
            payload = true;
        } else if kind.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    let left = std::fs::read_dir(dir)?.count();
    if left != usize::from(payload) {
        return Err(io::Error::other("it is not empty"));
    }
    Ok(payload)
}

/// Opens `path` for writing if it is a regular file of the server's own with no other link,
/// mode 0644 and no extended attributes: never through a link, never blocking on a FIFO,
/// never truncating what it refuses. Returns it with its length.
fn open_own_file(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file()
        || meta.nlink() != 1
        || meta.uid() != rustix::process::geteuid().as_raw()
        || meta.mode() & 0o7777 != 0o644
        || rustix::fs::flistxattr(&file, &mut [0u8; 0][..])? > 0
    {
        return Err(io::Error::other("not the server's own payload file"));
    }
    Ok((file, meta.len()))
}

fn truncate_own_file(path: &Path) -> io::Result<()> {
    open_own_file(path)?.0.set_len(0)
}

/// Writes `body` over the file at `path` (one [`truncate_own_file`] emptied). Not truncated to
/// nothing first: after that, ext4 writes the file's new data out when it is closed, as it does
/// for a file replaced by truncation, a write to the disk per Run step.
fn overwrite_own_file(path: &Path, body: &str) -> io::Result<()> {
    let (mut file, len) = open_own_file(path)?;
    file.write_all(body.as_bytes())?;
    if len > body.len() as u64 {
        file.set_len(body.len() as u64)?;
    }
    Ok(())
}

/// Writes the execution's payload file once, for its first Run step: created exclusively and
/// without following links, mode 0644 (readable by the step's user, who owns the directory).
/// A later step finds whatever is there (`existing_ok`): a step can replace it, but cannot
/// make the server write through a link it planted.
fn write_payload_file(path: &Path, body: &str, existing_ok: bool) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)
    {
        Ok(mut file) => {
            // Whatever the umask: the step's user must be able to read it.
            rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(0o644))?;
            file.write_all(body.as_bytes())
        }
        Err(e) if existing_ok && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// A root on the build's own file system (ext4 here, with extended attributes and inode
    /// flags; /tmp may be a tmpfs), with the spare directory made as at start.
    fn dirs(keep: usize) -> (tempfile::TempDir, WorkDirs) {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).unwrap();
        let root = tempfile::TempDir::new_in(target).unwrap();
        let dirs = WorkDirs::new(root.path().to_path_buf(), keep);
        std::fs::create_dir(&dirs.spare_dir).unwrap();
        (root, dirs)
    }

    fn id() -> PlanExecutionId {
        PlanExecutionId::generate()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn inode(path: &Path) -> u64 {
        std::fs::symlink_metadata(path).unwrap().ino()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn an_ended_directory_becomes_the_next_one_empty_but_for_its_new_payload() {
        let (_root, dirs) = dirs(4);
        let first = dirs.of(&id());
        let payload = dirs.make(&first, None, "{\"n\":1}").unwrap();
        assert_eq!(payload, first.join(PAYLOAD));
        assert_eq!(mode(&first), 0o700);
        // What a script leaves behind.
        std::fs::write(first.join("build.log"), "log").unwrap();
        std::fs::create_dir_all(first.join("src/deep")).unwrap();
        std::fs::write(first.join("src/deep/file"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", first.join("link")).unwrap();
        std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (dir_inode, payload_inode) = (inode(&first), inode(&payload));

        dirs.end(Some(&first));
        assert!(!first.exists());
        let spares = entries(&dirs.spare_dir);
        assert_eq!(spares.len(), 1);
        let spare = dirs.spare_dir.join(&spares[0]);
        assert_eq!(entries(&spare), [PAYLOAD]);
        assert_eq!(
            std::fs::read(spare.join(PAYLOAD)).unwrap(),
            b"",
            "nothing kept"
        );
        assert_eq!(mode(&spare), 0o700);

        let second = dirs.of(&id());
        let payload = dirs.make(&second, None, "{\"n\":2}").unwrap();
        assert_eq!(inode(&second), dir_inode, "the spare, not a new directory");
        assert_eq!(
            inode(&payload),
            payload_inode,
            "its payload file, rewritten"
        );
        assert_eq!(entries(&second), [PAYLOAD]);
        assert_eq!(std::fs::read_to_string(&payload).unwrap(), "{\"n\":2}");
        assert_eq!(mode(&second), 0o700);
        assert_eq!(mode(&payload), 0o644);
        assert!(entries(&dirs.spare_dir).is_empty());

        // No spare left: a new directory.
        let third = dirs.of(&id());
        dirs.make(&third, None, "3").unwrap();
        assert_ne!(inode(&third), dir_inode);
        assert_eq!(std::fs::read_to_string(third.join(PAYLOAD)).unwrap(), "3");
    }

    #[test]
    fn a_payload_file_that_is_not_the_servers_own_is_never_written_through() {
        let (root, dirs) = dirs(4);
        let outside = root.path().join("outside");
        for plant in ["symlink", "hard link", "fifo", "mode"] {
            std::fs::write(&outside, "precious").unwrap();
            let dir = dirs.of(&id());
            let payload = dirs.make(&dir, None, "old").unwrap();
            if plant != "mode" {
                std::fs::remove_file(&payload).unwrap();
            }
            match plant {
                // The script's user, when it is the server's, could make it unreadable.
                "mode" => {
                    std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o200))
                        .unwrap()
                }
                "symlink" => std::os::unix::fs::symlink(&outside, &payload).unwrap(),
                "hard link" => std::fs::hard_link(&outside, &payload).unwrap(),
                _ => rustix::fs::mknodat(
                    CWD,
                    &payload,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o644),
                    0,
                )
                .unwrap(),
            }
            dirs.end(Some(&dir));
            let next = dirs.of(&id());
            let payload = dirs.make(&next, None, "new").unwrap();
            assert_eq!(
                std::fs::read_to_string(&outside).unwrap(),
                "precious",
                "{plant}"
            );
            let meta = std::fs::symlink_metadata(&payload).unwrap();
            assert!(meta.file_type().is_file() && meta.nlink() == 1, "{plant}");
            assert_eq!(meta.mode() & 0o7777, 0o644, "{plant}");
            assert!(!meta.file_type().is_fifo());
            assert_eq!(std::fs::read_to_string(&payload).unwrap(), "new", "{plant}");
            assert_eq!(entries(&next), [PAYLOAD]);
            dirs.end(Some(&next));
        }
    }

    /// Makes a directory, lets `spoil` change it as a script could, ends it, and checks that
    /// it was removed, not kept.
    fn removed_not_kept(spoil: impl FnOnce(&Path)) {
        let (_root, dirs) = dirs(4);
        let dir = dirs.of(&id());
        dirs.make(&dir, None, "x").unwrap();
        spoil(&dir);
        dirs.end(Some(&dir));
        assert!(!dir.exists());
        assert!(entries(&dirs.spare_dir).is_empty());
    }

    #[test]
    fn a_directory_with_extended_attributes_is_removed_not_kept() {
        removed_not_kept(|dir| {
            rustix::fs::setxattr(dir, "user.note", b"left", rustix::fs::XattrFlags::empty())
                .expect("the build's file system takes user attributes")
        });
    }

    #[test]
    fn a_directory_with_inode_flags_a_new_one_lacks_is_removed_not_kept() {
        removed_not_kept(|dir| {
            let d = File::open(dir).unwrap();
            let flags = rustix::fs::ioctl_getflags(&d).unwrap();
            // `chattr +S`: every later execution given it would write synchronously.
            rustix::fs::ioctl_setflags(&d, flags | rustix::fs::IFlags::SYNC)
                .expect("the build's file system takes inode flags")
        });
    }

    #[test]
    fn a_kept_directory_is_the_servers_again_until_the_next_step_is_given_it() {
        // Giving a directory to another user needs root, as `run_user` does.
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let (_root, dirs) = dirs(4);
        let user = RunUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        let dir = dirs.of(&id());
        dirs.make(&dir, Some(&user), "x").unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().uid(), 65534);
        dirs.end(Some(&dir));
        let spare = dirs.spare_dir.join(&entries(&dirs.spare_dir)[0]);
        let meta = std::fs::metadata(&spare).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "out of the user's hands");
        let next = dirs.of(&id());
        dirs.make(&next, Some(&user), "y").unwrap();
        let meta = std::fs::metadata(&next).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (65534, 65534, 0o700)
        );
    }

    #[test]
    fn a_directory_this_process_did_not_make_is_removed_not_kept() {
        let (_root, dirs) = dirs(4);
        // Made before a restart, or by another node.
        let dir = dirs.of(&id());
        std::fs::create_dir(&dir).unwrap();
        dirs.make(&dir, None, "x").unwrap();
        dirs.end(Some(&dir));
        assert!(!dir.exists());
        assert!(entries(&dirs.spare_dir).is_empty());
    }

    #[test]
    fn a_spare_removed_under_this_process_gives_way_to_a_new_directory() {
        let (_root, dirs) = dirs(4);
        let first = dirs.of(&id());
        dirs.make(&first, None, "x").unwrap();
        dirs.end(Some(&first));
        // Another node sharing the root started, and removed every spare directory.
        std::fs::remove_dir_all(&dirs.spare_dir).unwrap();

        let next = dirs.of(&id());
        let payload = dirs.make(&next, None, "y").unwrap();
        assert_eq!(std::fs::read_to_string(payload).unwrap(), "y");
        assert!(
            dirs.spares.lock().unwrap().is_empty(),
            "the stale spare is gone"
        );
        // Ending it cannot move it into the missing spare directory: it is removed.
        dirs.end(Some(&next));
        assert!(!next.exists());
    }

    #[test]
    fn a_payload_file_found_in_a_spare_that_kept_none_is_refused_not_used() {
        let (_root, dirs) = dirs(4);
        let dir = dirs.of(&id());
        let payload = dirs.make(&dir, None, "x").unwrap();
        // Not the server's own: not kept, so the spare holds no payload file.
        std::fs::remove_file(&payload).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &payload).unwrap();
        dirs.end(Some(&dir));
        let spare = dirs.spare_dir.join(&entries(&dirs.spare_dir)[0]);
        assert!(entries(&spare).is_empty());
        // Something puts one there while it is a spare (only root could).
        std::fs::write(spare.join(PAYLOAD), "forged").unwrap();

        let next = dirs.of(&id());
        let e = dirs.make(&next, None, "body").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("could not write the payload file"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(next.join(PAYLOAD)).unwrap(),
            "forged"
        );
        // The step fails instead; its directory is not kept.
        dirs.end(Some(&next));
        assert!(!next.exists());
    }

    #[test]
    fn a_later_step_finds_its_executions_directory_as_the_earlier_one_left_it() {
        let (_root, dirs) = dirs(4);
        let spare = dirs.of(&id());
        dirs.make(&spare, None, "s").unwrap();
        dirs.end(Some(&spare));
        assert_eq!(entries(&dirs.spare_dir).len(), 1);

        let dir = dirs.of(&id());
        // The first step: a new directory (the spare is taken).
        let payload = dirs.make(&dir, None, "body").unwrap();
        std::fs::write(&payload, "changed by the step").unwrap();
        std::fs::write(dir.join("artifact"), "a").unwrap();
        dirs.end(Some(&dirs.of(&id())));
        let spares_before = entries(&dirs.spare_dir);
        // The second step of the same execution, with a spare at hand.
        dirs.make(&dir, None, "body").unwrap();
        assert_eq!(
            std::fs::read_to_string(&payload).unwrap(),
            "changed by the step"
        );
        assert_eq!(entries(&dir), ["artifact", PAYLOAD]);
        assert_eq!(entries(&dirs.spare_dir), spares_before);
    }

    #[test]
    fn once_a_step_may_have_left_a_process_no_directory_is_kept() {
        let (_root, dirs) = dirs(4);
        let (left, clean) = (dirs.of(&id()), dirs.of(&id()));
        for dir in [&left, &clean] {
            dirs.make(dir, None, "x").unwrap();
        }
        let spare = dirs.of(&id());
        dirs.make(&spare, None, "x").unwrap();
        dirs.end(Some(&spare));
        assert_eq!(entries(&dirs.spare_dir).len(), 1);

        dirs.keep_none_of(&left);
        assert!(
            entries(&dirs.spare_dir).is_empty(),
            "the spares are removed"
        );
        dirs.end(Some(&left));
        assert!(!left.exists());
        // Nor any other from then on.
        dirs.end(Some(&clean));
        assert!(!clean.exists());
        assert!(entries(&dirs.spare_dir).is_empty());
        assert!(dirs.clean.lock().unwrap().is_empty());
    }

    #[test]
    fn spares_are_bounded_and_unsupervised_steps_keep_none() {
        let (_root, dirs) = dirs(1);
        let made: Vec<PathBuf> = (0..3)
            .map(|_| {
                let dir = dirs.of(&id());
                dirs.make(&dir, None, "x").unwrap();
                dir
            })
            .collect();
        for dir in &made {
            dirs.end(Some(dir));
            assert!(!dir.exists());
        }
        assert_eq!(entries(&dirs.spare_dir).len(), 1);

        let (_root, unsupervised) = self::dirs(0);
        let dir = unsupervised.of(&id());
        unsupervised.make(&dir, None, "x").unwrap();
        unsupervised.end(Some(&dir));
        assert!(!dir.exists());
        assert!(entries(&unsupervised.spare_dir).is_empty());
    }
}
