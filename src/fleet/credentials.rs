//! A module's `credentials_file`: per-target usernames and passwords that
//! override the module's. An entry's `match` is a target (any spelling of
//! it: it is parsed as the probe's target is, and compared by `host:port`)
//! or a glob over the canonical `host:port`; exact entries first. The file
//! and the password files it names are read by the secrets watcher
//! ([`super::secrets`]), never on a probe's path.
//!
//! ```toml
//! [[target]]
//! match = "127.0.0.1:6401"       # a target, or a glob such as "*.redis.svc:*"
//! username = "canary"            # optional
//! password_file = "/run/secrets/redis-6401"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::secrets::{fingerprint, Fingerprint};
use super::target::Target;
use crate::config::ProberKind;
use crate::secret::Secret;

/// What a target authenticates with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    /// Which reading of the module's secret files this came from: part of
    /// the pool's key, so a changed password gets a new connection.
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

/// How an entry matches.
#[derive(Debug)]
enum Match {
    /// A target's `host:port`.
    Exact(String),
    Glob(glob::Pattern),
}

/// One entry, its password read.
#[derive(Debug)]
struct Credential {
    matches: Match,
    username: Option<String>,
    password: Option<Secret>,
}

/// The file, read.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    entries: Vec<Credential>,
}

impl Credentials {
    /// Reads `path` and the password files it names, for targets of
    /// `prober`; returns them with every password file read, as it was
    /// before it was read. An error names the file and never a secret.
    pub(crate) fn read(
        path: &Path,
        prober: ProberKind,
    ) -> Result<(Self, Vec<(PathBuf, Fingerprint)>), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let file: File = toml::from_str(&text)
            .map_err(|err| format!("{}: {}", path.display(), err.message()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut files = Vec::new();
        let entries = file
            .target
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                let password = match &entry.password_file {
                    Some(file) => {
                        let file = base.join(file);
                        let print = fingerprint(&file);
                        let text = std::fs::read_to_string(&file).map_err(|err| {
                            format!("{}: cannot read {}: {err}", path.display(), file.display())
                        })?;
                        files.push((file, print));
                        Some(Secret::new(text.trim_end_matches(['\n', '\r'])))
                    }
                    None => None,
                };
                let pattern = &entry.pattern;
                let matches = if pattern.contains(['*', '?', '[']) {
                    glob::Pattern::new(pattern)
                        .map(Match::Glob)
                        .map_err(|err| format!("{}: match {pattern:?}: {err}", path.display()))?
                } else {
                    // The match is not echoed: it may hold a password.
                    let target = Target::parse(pattern, prober).map_err(|err| {
                        format!(
                            "{}: the match of [[target]] {} {err}",
                            path.display(),
                            i + 1
                        )
                    })?;
                    Match::Exact(target.endpoint())
                };
                Ok(Credential {
                    matches,
                    username: entry.username,
                    password,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok((Self { entries }, files))
    }

    /// The login for `target`, if an entry matches it.
    pub(crate) fn lookup(&self, target: &Target, version: u64) -> Option<Login> {
        let endpoint = target.endpoint();
        let exact = self
            .entries
            .iter()
            .find(|c| matches!(&c.matches, Match::Exact(e) if *e == endpoint));
        let found = exact.or_else(|| {
            self.entries
                .iter()
                .find(|c| matches!(&c.matches, Match::Glob(g) if g.matches(&endpoint)))
        });
        found.map(|c| Login {
            username: c.username.clone(),
            password: c.password.clone(),
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Target {
        Target::parse(text, ProberKind::Redis).unwrap()
    }

    #[test]
    fn exact_first_then_glob_by_the_canonical_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "first\n").unwrap();
        std::fs::write(dir.path().join("any"), "shared\n").unwrap();
        let file = dir.path().join("credentials.toml");
        std::fs::write(
            &file,
            "[[target]]\nmatch = \"127.0.0.1:*\"\npassword_file = \"any\"\n\
             [[target]]\nmatch = \"redis://127.0.0.1:6401/0\"\nusername = \"canary\"\npassword_file = \"a\"\n",
        )
        .unwrap();
        let (credentials, files) = Credentials::read(&file, ProberKind::Redis).unwrap();
        assert_eq!(files.len(), 2);
        // Any spelling of the target finds its entry.
        for spelling in [
            "127.0.0.1:6401",
            "redis://127.1:6401/3",
            "[::ffff:127.0.0.1]:6401",
        ] {
            let exact = credentials.lookup(&target(spelling), 7).unwrap();
            assert_eq!(exact.username.as_deref(), Some("canary"), "{spelling}");
            assert_eq!(exact.password.unwrap().expose(), "first");
            assert_eq!(exact.version, 7);
        }
        let glob = credentials.lookup(&target("127.0.0.1:6402"), 7).unwrap();
        assert_eq!(glob.password.unwrap().expose(), "shared");
        assert_eq!(credentials.lookup(&target("10.0.0.1:6379"), 7), None);
    }

    #[test]
    fn a_bad_file_is_an_error_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials.toml");
        std::fs::write(&file, "[[target]]\nmatch = \"x\"\npassword = \"hunter2\"\n").unwrap();
        let err = Credentials::read(&file, ProberKind::Redis).unwrap_err();
        assert!(err.contains("credentials.toml"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        std::fs::write(&file, "[[target]]\nmatch = \"redis://u:hunter2@x\"\n").unwrap();
        let err = Credentials::read(&file, ProberKind::Redis).unwrap_err();
        assert!(
            err.contains("userinfo") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
