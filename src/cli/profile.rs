//! Client profiles: the server URL, API key and default project, kept in
//! `<config dir>/triggerd/profiles.toml` with mode 0600. `TRIGGERD_URL`, `TRIGGERD_API_KEY` and
//! `TRIGGERD_PROJECT` override the chosen profile; a key is never taken from argv.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CliError;

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// The profile used when neither `--profile` nor `TRIGGERD_PROFILE` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One server and key.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The server's base URL.
    pub url: String,
    /// The API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The default project, `ACCOUNT/ORG/PROJECT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// Where the profiles live: `$XDG_CONFIG_HOME/triggerd/profiles.toml` on Linux (the platform's
/// config directory elsewhere).
pub fn path() -> Result<PathBuf, CliError> {
    dirs::config_dir()
        .map(|d| d.join("triggerd").join("profiles.toml"))
        .ok_or_else(|| {
            CliError::usage("cannot find a config directory: set HOME or XDG_CONFIG_HOME")
        })
}

impl ProfileFile {
    /// Reads the file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(CliError::usage(format!("reading {}: {e}", path.display()))),
        };
        warn_if_shared(path);
        toml::from_str(&text)
            .map_err(|e| CliError::usage(format!("{}: {}", path.display(), e.message())))
    }

    /// Writes the file atomically with mode 0600 (its directory 0700 when created).
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let fail = |e: std::io::Error| CliError::usage(format!("writing {}: {e}", path.display()));
        let text = toml::to_string(self)
            .map_err(|e| CliError::usage(format!("encoding the profiles: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(fail)?;
        let tmp = dir.join(format!(".profiles.toml.{}", std::process::id()));
        // A leftover from an interrupted save may have another mode: start afresh.
        let _ = std::fs::remove_file(&tmp);
        let mut file = private_file(&tmp).map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }

    /// The name of the profile in use: `explicit` (`--profile`/`TRIGGERD_PROFILE`), else the
    /// file's current one, else `default`.
    pub fn chosen(&self, explicit: Option<&str>) -> String {
        explicit
            .map(str::to_owned)
            .or_else(|| self.current.clone())
            .unwrap_or_else(|| DEFAULT_PROFILE.to_owned())
    }
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} holds API keys and is readable by others; run: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &Path) {}

/// `ACCOUNT/ORG/PROJECT`, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProjectPath {
    /// Account identifier.
    pub account: String,
    /// Org identifier.
    pub org: String,
    /// Project identifier.
    pub project: String,
}

impl ProjectPath {
    /// Parses `ACCOUNT/ORG/PROJECT`.
    pub fn parse(text: &str) -> Result<Self, CliError> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [a, o, p] if !a.is_empty() && !o.is_empty() && !p.is_empty() => Ok(Self {
                account: (*a).to_owned(),
                org: (*o).to_owned(),
                project: (*p).to_owned(),
            }),
            _ => Err(CliError::usage(format!(
                "'{text}' is not a project: write ACCOUNT/ORG/PROJECT, e.g. acme/default/payments"
            ))),
        }
    }
}

impl std::fmt::Display for ProjectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.account, self.org, self.project)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_path_needs_three_non_empty_parts() {
        let p = ProjectPath::parse("acme/default/payments").unwrap();
        assert_eq!(p.to_string(), "acme/default/payments");
        for bad in ["acme", "acme/default", "acme//p", "a/b/c/d", ""] {
            let e = ProjectPath::parse(bad).unwrap_err();
            assert!(e.message.contains("ACCOUNT/ORG/PROJECT"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn profiles_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("profiles.toml");
        let mut file = ProfileFile::default();
        file.profiles.insert(
            "default".into(),
            Profile {
                url: "http://127.0.0.1:8080".into(),
                api_key: Some("pat.acme.x.y".into()),
                project: None,
            },
        );
        file.save(&path).unwrap();
        let back = ProfileFile::load(&path).unwrap();
        assert_eq!(back.profiles["default"].url, "http://127.0.0.1:8080");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(back.chosen(None), "default");
        assert_eq!(back.chosen(Some("ci")), "ci");
    }
}
