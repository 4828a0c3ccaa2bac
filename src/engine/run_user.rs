//! Which user Run steps run as (issue 12 item 10). A server started as root runs them as an
//! unprivileged user (`run_user`, by default `nobody`), so a script can read neither the
//! database (mode 0600, see the SQLite store) nor the server's memory or environment.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The user a server running as root starts Run steps as, unless `run_user` says otherwise.
pub const DEFAULT_RUN_USER: &str = "nobody";

/// A user to run steps as, other than the server's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUser {
    /// Its name (or its uid, when it has none).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl RunUser {
    /// Resolves the `run_user` setting for a server running as `euid`, with the user database
    /// `passwd` (the text of `/etc/passwd`). `None`: steps run as the server's own user (it is
    /// not root, or `run_user` names that same user).
    pub fn resolve(
        setting: Option<&str>,
        euid: u32,
        passwd: &str,
    ) -> Result<Option<RunUser>, String> {
        let user = match setting.map(str::trim).filter(|s| !s.is_empty()) {
            Some(spec) => lookup(spec, passwd)?,
            None if euid == 0 => lookup(DEFAULT_RUN_USER, passwd).map_err(|_| {
                format!(
                    "triggerd runs as root and would run Run steps as root; there is no user \
                     {DEFAULT_RUN_USER} here to run them as: set run_user (TRIGGERD_RUN_USER) \
                     to an unprivileged user"
                )
            })?,
            None => return Ok(None),
        };
        if user.uid == euid {
            return Ok(None);
        }
        if euid != 0 {
            return Err(format!(
                "run_user = {} needs triggerd to start as root (it runs as uid {euid}); unset it \
                 to run steps as triggerd's own user",
                user.name
            ));
        }
        Ok(Some(user))
    }

    /// Resolves the setting for this process, reading `/etc/passwd`.
    pub fn for_this_process(setting: Option<&str>) -> Result<Option<RunUser>, String> {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        Self::resolve(setting, rustix::process::geteuid().as_raw(), &passwd)
    }

    /// True when this user can reach `dir` by its absolute path: every directory above it lets
    /// the user pass (`x` for its owner, group or others).
    pub fn can_reach(&self, dir: &Path) -> bool {
        dir.ancestors().skip(1).all(|d| match std::fs::metadata(d) {
            Ok(m) => {
                let mode = m.mode();
                (m.uid() == self.uid && mode & 0o100 != 0)
                    || (m.gid() == self.gid && mode & 0o010 != 0)
                    || mode & 0o001 != 0
            }
            Err(_) => true,
        })
    }

    /// Where working directories go when the configured place is out of this user's reach: a
    /// directory of the system's temporary directory named after `place`, so that a restart
    /// finds the same one.
    pub fn reachable_work_root(&self, place: &Path) -> PathBuf {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(place.as_os_str().as_encoded_bytes());
        std::env::temp_dir().join(format!("triggerd-work-{}", hex::encode(&digest[..6])))
    }
}

/// Creates the working directories' root (mode 0711 when steps run as another user, who pass
/// through it to their own directories, else 0700) and checks that it is a real directory of
/// this server's user that nobody else can write: a root someone else made, say in `/tmp`, could
/// be swapped for a link to anywhere between two steps.
pub fn own_work_root(root: &Path, shared: bool) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mode = if shared { 0o711 } else { 0o700 };
    let fail = |what: String| format!("the working directories' root {}: {what}", root.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(root)
        .map_err(|e| fail(format!("cannot be created: {e}")))?;
    let meta = std::fs::symlink_metadata(root).map_err(|e| fail(e.to_string()))?;
    let euid = rustix::process::geteuid().as_raw();
    if !meta.file_type().is_dir() {
        return Err(fail(
            "is not a directory (a link?); remove it or set work_dir".into(),
        ));
    }
    if meta.uid() != euid {
        return Err(fail(format!(
            "belongs to uid {}, not to this server (uid {euid}); remove it or set work_dir",
            meta.uid()
        )));
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(format!("cannot be given mode {mode:o}: {e}")))
}

/// `uid`, `uid:gid`, or a name from `passwd`.
fn lookup(spec: &str, passwd: &str) -> Result<RunUser, String> {
    let numeric = |s: &str| s.parse::<u32>().ok();
    if let Some((uid, gid)) = spec.split_once(':') {
        if let (Some(uid), Some(gid)) = (numeric(uid), numeric(gid)) {
            let name = name_of(uid, passwd).unwrap_or_else(|| uid.to_string());
            return Ok(RunUser { name, uid, gid });
        }
    }
    if let Some(uid) = numeric(spec) {
        let (name, gid) = passwd
            .lines()
            .filter_map(entry)
            .find(|e| e.1 == uid)
            .map_or_else(|| (uid.to_string(), uid), |e| (e.0.to_owned(), e.2));
        return Ok(RunUser { name, uid, gid });
    }
    passwd
        .lines()
        .filter_map(entry)
        .find(|e| e.0 == spec)
        .map(|(name, uid, gid)| RunUser {
            name: name.to_owned(),
            uid,
            gid,
        })
        .ok_or_else(|| {
            format!(
                "run_user = {spec}: no such user in /etc/passwd (give a name, a uid or uid:gid)"
            )
        })
}

fn name_of(uid: u32, passwd: &str) -> Option<String> {
    passwd
        .lines()
        .filter_map(entry)
        .find(|e| e.1 == uid)
        .map(|e| e.0.to_owned())
}

/// `name:password:uid:gid:...` as (name, uid, gid).
fn entry(line: &str) -> Option<(&str, u32, u32)> {
    let mut fields = line.split(':');
    let name = fields.next()?;
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((name, uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          builder:x:1000:1000::/home/builder:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

    fn user(name: &str, uid: u32, gid: u32) -> Option<RunUser> {
        Some(RunUser {
            name: name.into(),
            uid,
            gid,
        })
    }

    #[test]
    fn root_runs_steps_as_nobody_unless_told_otherwise() {
        assert_eq!(
            RunUser::resolve(None, 0, PASSWD),
            Ok(user("nobody", 65534, 65534))
        );
        assert_eq!(
            RunUser::resolve(Some("builder"), 0, PASSWD),
            Ok(user("builder", 1000, 1000))
        );
        assert_eq!(
            RunUser::resolve(Some("1000:5"), 0, PASSWD),
            Ok(user("builder", 1000, 5))
        );
        assert_eq!(RunUser::resolve(Some("root"), 0, PASSWD), Ok(None));
    }

    #[test]
    fn another_user_runs_steps_as_itself() {
        assert_eq!(RunUser::resolve(None, 1000, PASSWD), Ok(None));
        assert_eq!(RunUser::resolve(Some("builder"), 1000, PASSWD), Ok(None));
        assert_eq!(RunUser::resolve(Some("1000"), 1000, PASSWD), Ok(None));
        let err = RunUser::resolve(Some("nobody"), 1000, PASSWD).unwrap_err();
        assert!(err.contains("needs triggerd to start as root"), "{err}");
    }

    #[test]
    fn unknown_users_and_a_missing_nobody_are_refused_with_the_fix() {
        let err = RunUser::resolve(Some("ghost"), 0, PASSWD).unwrap_err();
        assert!(err.contains("no such user"), "{err}");
        let err = RunUser::resolve(None, 0, "root:x:0:0::/root:/bin/sh\n").unwrap_err();
        assert!(err.contains("set run_user"), "{err}");
    }

    #[test]
    fn reach_needs_every_directory_above_to_let_the_user_pass() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a");
        std::fs::create_dir(&inner).unwrap();
        let stranger = RunUser {
            name: "stranger".into(),
            uid: 54321,
            gid: 54321,
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!stranger.can_reach(&inner.join("work")));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o711)).unwrap();
        assert!(stranger.can_reach(&inner.join("work")));
    }

    #[test]
    fn a_work_root_that_is_a_link_or_someone_elses_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = own_work_root(&link, true).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");

        let mine = dir.path().join("mine");
        own_work_root(&mine, true).unwrap();
        let mode = std::fs::metadata(&mine).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o711);
        if rustix::process::geteuid().is_root() {
            rustix::fs::chown(mine.as_path(), Some(rustix::fs::Uid::from_raw(54321)), None)
                .unwrap();
            let err = own_work_root(&mine, true).unwrap_err();
            assert!(err.contains("belongs to uid 54321"), "{err}");
        }
    }
}
