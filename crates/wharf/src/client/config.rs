//! The stored login: `$XDG_CONFIG_HOME/wharf/config.json`, or
//! `~/.config/wharf/config.json` when `XDG_CONFIG_HOME` is unset.
//!
//! The file holds bearer tokens, so it is only ever created with mode 0600
//! (in a 0700 directory) and replaced by renaming a complete temporary file:
//! a crash mid-write never leaves a truncated or world-readable file behind.

use std::ffi::OsString;
use std::fmt;
use std::fs::DirBuilder;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

/// Credentials for one server, as `wharf login` stores them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// Server URL without a trailing slash, e.g. `http://registry.example:7700`.
    pub server: String,
    /// The user logged in.
    pub user: String,
    /// Bearer token for `/api/v1/`.
    pub access_token: String,
    /// Token that buys a new access token at `POST /api/v1/token`.
    pub refresh_token: String,
    /// When the access token expires, in unix seconds.
    pub expires_at: u64,
    /// Project of deployments and pods when a command has no `-p`, as a
    /// kubeconfig context's namespace (`wharf login --project`,
    /// `wharf project use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_project: Option<String>,
}

impl StoredSession {
    /// Whether the access token expires within `margin_secs` of `now_secs`.
    pub fn expires_within(&self, now_secs: u64, margin_secs: u64) -> bool {
        self.expires_at <= now_secs.saturating_add(margin_secs)
    }
}

/// Debug output never shows the tokens.
impl fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSession")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("default_project", &self.default_project)
            .finish()
    }
}

/// The credentials file on disk.
#[derive(Clone, Debug)]
pub struct CredentialsFile {
    path: PathBuf,
}

impl CredentialsFile {
    /// The file for this user, from `XDG_CONFIG_HOME` or `HOME`.
    pub fn locate() -> Result<CredentialsFile> {
        let path = config_path(
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )
        .ok_or_else(|| {
            anyhow!("cannot tell where to keep the login: set HOME or XDG_CONFIG_HOME")
        })?;
        Ok(CredentialsFile { path })
    }

    /// The file at `path`, for tests in a temporary directory.
    #[cfg(test)]
    pub fn at(path: impl Into<PathBuf>) -> CredentialsFile {
        CredentialsFile { path: path.into() }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored session, or `None` when nobody is logged in.
    pub fn load(&self) -> Result<Option<StoredSession>> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", self.path.display()));
            }
        };
        let session = serde_json::from_slice(&text).with_context(|| {
            format!(
                "{} is not a wharf login file: run wharf logout, then wharf login",
                self.path.display()
            )
        })?;
        Ok(Some(session))
    }

    /// Stores `session`, replacing any earlier one.
    pub fn save(&self, session: &StoredSession) -> Result<()> {
        let dir = self
            .path
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent directory", self.path.display()))?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut text = serde_json::to_vec_pretty(session)?;
        text.push(b'\n');
        wharf_fs::AtomicWrite::new(&self.path)
            .mode(0o600)
            .write(&text)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Deletes the file; `false` when there was none.
    pub fn remove(&self) -> Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err).with_context(|| format!("deleting {}", self.path.display())),
        }
    }
}

/// `$XDG_CONFIG_HOME/wharf/config.json`, else `$HOME/.config/wharf/config.json`.
///
/// The XDG base directory spec says to ignore a relative `XDG_CONFIG_HOME`.
fn config_path(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute =
        |value: Option<OsString>| value.map(PathBuf::from).filter(|path| path.is_absolute());
    let config_dir = absolute(xdg_config_home).or_else(|| Some(absolute(home)?.join(".config")))?;
    Some(config_dir.join("wharf").join("config.json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn session() -> StoredSession {
        StoredSession {
            server: "http://127.0.0.1:7700".into(),
            user: "alice".into(),
            access_token: "access-secret".into(),
            refresh_token: "refresh-secret".into(),
            expires_at: 1_700_000_000,
            default_project: None,
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn round_trip_with_private_modes() {
        let root = tempfile::tempdir().unwrap();
        let file = CredentialsFile::at(root.path().join("cfg/wharf/config.json"));
        assert_eq!(file.load().unwrap(), None);

        file.save(&session()).unwrap();
        assert_eq!(file.load().unwrap(), Some(session()));
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(mode(file.path().parent().unwrap()), 0o700);

        let mut refreshed = session();
        refreshed.access_token = "newer".into();
        file.save(&refreshed).unwrap();
        assert_eq!(file.load().unwrap(), Some(refreshed));
        assert_eq!(mode(file.path()), 0o600);
        let leftovers = std::fs::read_dir(file.path().parent().unwrap()).unwrap();
        assert_eq!(leftovers.count(), 1, "no temporary files are left behind");

        assert!(file.remove().unwrap());
        assert!(!file.remove().unwrap());
        assert_eq!(file.load().unwrap(), None);
    }

    #[test]
    fn a_damaged_file_is_explained() {
        let root = tempfile::tempdir().unwrap();
        let file = CredentialsFile::at(root.path().join("config.json"));
        std::fs::write(file.path(), "{").unwrap();
        let err = format!("{:#}", file.load().unwrap_err());
        assert!(err.contains("wharf logout"), "{err}");
    }

    #[test]
    fn debug_hides_tokens() {
        let text = format!("{:?}", session());
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("alice"));
    }

    #[test]
    fn expiry_margin() {
        let session = session();
        assert!(!session.expires_within(1_700_000_000 - 60, 10));
        assert!(session.expires_within(1_700_000_000 - 5, 10));
        assert!(session.expires_within(1_700_000_001, 0));
    }

    #[test]
    fn path_follows_xdg_then_home() {
        let path = |xdg: Option<&str>, home: Option<&str>| {
            config_path(xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(
            path(Some("/x"), Some("/home/a")),
            Some(PathBuf::from("/x/wharf/config.json"))
        );
        assert_eq!(
            path(None, Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/wharf/config.json"))
        );
        assert_eq!(
            path(Some("relative"), Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/wharf/config.json"))
        );
        assert_eq!(path(Some(""), None), None);
    }
}
