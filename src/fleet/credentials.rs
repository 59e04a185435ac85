//! A module's `credentials_file`: per-target usernames and passwords that
//! override the module's, matched by the exact target first, then by glob.
//! The file is read again when it changes (its size or modification time),
//! which a probe checks before it looks a target up; so a rotated password
//! applies from the next probe, reload or not.
//!
//! ```toml
//! [[target]]
//! match = "127.0.0.1:6401"       # the target as given, or a glob
//! username = "canary"            # optional
//! password_file = "/run/secrets/redis-6401"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;

use crate::secret::Secret;

/// What a target authenticates with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    /// Which reading of the file this came from: part of the pool's key, so
    /// a changed password gets a new connection.
    pub(crate) version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    target: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(rename = "match")]
    pattern: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

/// One entry, its password read.
#[derive(Debug)]
struct Credential {
    exact: String,
    glob: Option<glob::Pattern>,
    username: Option<String>,
    password: Option<Secret>,
}

#[derive(Debug, Default)]
struct Loaded {
    seen: Option<(SystemTime, u64)>,
    version: u64,
    entries: Vec<Credential>,
}

/// The file, read on first use and again when it changes.
#[derive(Debug)]
pub(crate) struct Credentials {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl Credentials {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            loaded: Mutex::new(Loaded::default()),
        }
    }

    /// The login for `target`, if an entry matches it; an error (naming the
    /// file, never a secret) when the file does not read.
    pub(crate) fn lookup(&self, target: &str) -> Result<Option<Login>, String> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let meta = std::fs::metadata(&self.path)
            .map_err(|err| format!("cannot read {}: {err}", self.path.display()))?;
        let fingerprint = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if loaded.seen != Some(fingerprint) {
            let entries = read(&self.path)?;
            *loaded = Loaded {
                seen: Some(fingerprint),
                version: loaded.version + 1,
                entries,
            };
        }
        let found = loaded
            .entries
            .iter()
            .find(|c| c.exact == target)
            .or_else(|| {
                loaded
                    .entries
                    .iter()
                    .find(|c| c.glob.as_ref().is_some_and(|g| g.matches(target)))
            });
        Ok(found.map(|c| Login {
            username: c.username.clone(),
            password: c.password.clone(),
            version: loaded.version,
        }))
    }
}

fn read(path: &Path) -> Result<Vec<Credential>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let file: File =
        toml::from_str(&text).map_err(|err| format!("{}: {}", path.display(), err.message()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    file.target
        .into_iter()
        .map(|entry| {
            let password = match &entry.password_file {
                Some(file) => {
                    let file = base.join(file);
                    let text = std::fs::read_to_string(&file).map_err(|err| {
                        format!("{}: cannot read {}: {err}", path.display(), file.display())
                    })?;
                    let text = text.trim_end_matches(['\n', '\r']);
                    Some(Secret::new(text))
                }
                None => None,
            };
            let glob = entry
                .pattern
                .contains(['*', '?', '['])
                .then(|| glob::Pattern::new(&entry.pattern))
                .transpose()
                .map_err(|err| format!("{}: match {:?}: {err}", path.display(), entry.pattern))?;
            Ok(Credential {
                exact: entry.pattern,
                glob,
                username: entry.username,
                password,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_first_then_glob_and_a_change_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "first\n").unwrap();
        std::fs::write(dir.path().join("any"), "shared\n").unwrap();
        let file = dir.path().join("credentials.toml");
        let write = |a: &str| {
            std::fs::write(
                &file,
                format!(
                    "[[target]]\nmatch = \"127.0.0.1:*\"\npassword_file = \"any\"\n\
                     [[target]]\nmatch = \"127.0.0.1:6401\"\nusername = \"canary\"\npassword_file = \"{a}\"\n"
                ),
            )
            .unwrap();
        };
        write("a");
        let credentials = Credentials::new(&file);
        let exact = credentials.lookup("127.0.0.1:6401").unwrap().unwrap();
        assert_eq!(exact.username.as_deref(), Some("canary"));
        assert_eq!(exact.password.unwrap().expose(), "first");
        let glob = credentials.lookup("127.0.0.1:6402").unwrap().unwrap();
        assert_eq!(glob.password.unwrap().expose(), "shared");
        assert_eq!(credentials.lookup("10.0.0.1:6379").unwrap(), None);

        std::fs::write(dir.path().join("b"), "second\n").unwrap();
        // A different length, so the change shows even within the same second.
        write("bb");
        std::fs::write(dir.path().join("bb"), "second\n").unwrap();
        let changed = credentials.lookup("127.0.0.1:6401").unwrap().unwrap();
        assert_eq!(changed.password.unwrap().expose(), "second");
        assert!(changed.version > exact.version);
    }

    #[test]
    fn a_bad_file_is_an_error_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials.toml");
        std::fs::write(&file, "[[target]]\nmatch = \"x\"\npassword = \"hunter2\"\n").unwrap();
        let err = Credentials::new(&file).lookup("x").unwrap_err();
        assert!(err.contains("credentials.toml"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
