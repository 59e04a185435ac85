//! A module's secret files (`password_file`, `token_file`,
//! `credentials_file` and the password files that names), read again when
//! they change, without a reload. A probe loads the last reading
//! ([`Watched::current`]); the files are looked at by [`watch`], on the
//! blocking pool: on a file-system event in their directories (inotify),
//! and every [`FALLBACK`] where events do not come. A probe that comes
//! after an event the watcher has not yet handled reads the files first
//! itself, on the blocking pool too ([`Watched::catch_up`]), so a rotated
//! secret is used from the next probe on.
//!
//! A change is a new (device, inode, modification time, length) of the
//! file as its path resolves, which is how a Kubernetes Secret update
//! shows: the kubelet swaps the `..data` symlink in the directory and
//! leaves the old files as they were.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::Watcher as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::credentials::{Credentials, Login};
use super::target::Target;
use crate::config::{ModuleConfig, ProberKind};
use crate::secret::Secret;

/// How often the files are looked at when no event comes.
const FALLBACK: Duration = Duration::from_secs(10);

/// One reading of a module's secret files.
#[derive(Debug, Default)]
pub(crate) struct Secrets {
    /// redis: the module's password.
    pub(crate) password: Option<Secret>,
    /// chroma and app: the module's token.
    pub(crate) token: Option<Secret>,
    /// The credentials file, or why it did not read.
    credentials: Option<Result<Credentials, String>>,
    /// Which reading this is: a login's version.
    pub(crate) version: u64,
}

impl Secrets {
    /// The login for `target`: the credentials file's entry, if one
    /// matches; an error when the file did not read.
    pub(crate) fn login(&self, target: &Target) -> Result<Login, String> {
        match &self.credentials {
            None => Ok(Login {
                version: self.version,
                ..Login::default()
            }),
            Some(Err(err)) => Err(err.clone()),
            Some(Ok(credentials)) => {
                Ok(credentials.lookup(target, self.version).unwrap_or(Login {
                    version: self.version,
                    ..Login::default()
                }))
            }
        }
    }
}

/// Where a module's secrets come from.
#[derive(Debug)]
struct Sources {
    password_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    credentials_file: Option<PathBuf>,
    prober: ProberKind,
}

/// What a file looked like when it was read.
pub(super) type Fingerprint = Option<(u64, u64, i64, i64, u64)>;

/// The file as its path resolves: device, inode, modification time and
/// length; `None` when it cannot be read.
pub(super) fn fingerprint(path: &Path) -> Fingerprint {
    let meta = std::fs::metadata(path).ok()?;
    Some((
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.len(),
    ))
}

/// A module's secrets: the last reading, and the files it came from.
#[derive(Debug)]
pub(crate) struct Watched {
    sources: Sources,
    current: ArcSwap<Secrets>,
    /// The files of the last reading, as they were (`None` before the
    /// first); only [`Self::refresh`] touches it.
    seen: Mutex<Option<Vec<(PathBuf, Fingerprint)>>>,
    /// File-system events in any watched directory, counted as they come
    /// (shared by a fleet's modules), and how many of them this module's
    /// last look had seen.
    events: Arc<AtomicU64>,
    looked: AtomicU64,
}

impl Watched {
    /// Reads the module's files (at build, on the blocking pool a reload
    /// runs on).
    pub(crate) fn new(module: &ModuleConfig, prober: ProberKind, events: Arc<AtomicU64>) -> Self {
        let watched = Self {
            sources: Sources {
                password_file: module.password_file.as_ref().map(|f| f.path.clone()),
                token_file: module.token_file.as_ref().map(|f| f.path.clone()),
                credentials_file: module.credentials_file.clone(),
                prober,
            },
            current: ArcSwap::from_pointee(Secrets::default()),
            seen: Mutex::new(None),
            looked: AtomicU64::new(events.load(Ordering::Acquire)),
            events,
        };
        watched.refresh();
        watched
    }

    /// The last reading.
    pub(crate) fn current(&self) -> Arc<Secrets> {
        self.current.load_full()
    }

    /// Looks at the files (on the blocking pool) if an event came since
    /// this module's last look: the watcher may not have got to it yet.
    pub(crate) async fn catch_up(self: &Arc<Self>) {
        if self.events.load(Ordering::Acquire) == self.looked.load(Ordering::Acquire) {
            return;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.refresh()).await;
    }

    /// The directories to watch for events.
    fn directories(&self) -> Vec<PathBuf> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .flatten()
            .filter_map(|(path, _)| path.parent())
            .map(|dir| {
                if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir.to_owned()
                }
            })
            .collect()
    }

    /// Reads the files again if any of them changed; returns whether the
    /// secrets did. Blocking: run it off the runtime's workers.
    pub(crate) fn refresh(&self) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Events from here on call for another look.
        self.looked
            .store(self.events.load(Ordering::Acquire), Ordering::Release);
        let unchanged = |files: &Vec<(PathBuf, Fingerprint)>| {
            files.iter().all(|(path, was)| fingerprint(path) == *was)
        };
        if seen.as_ref().is_some_and(unchanged) {
            return false;
        }
        // Each file as it was before it was read, so a write during the
        // read shows as a change next time.
        let mut files: Vec<(PathBuf, Fingerprint)> = Vec::new();
        let mut read = |path: &Option<PathBuf>| {
            let path = path.as_ref()?;
            files.push((path.clone(), fingerprint(path)));
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    Some(Secret::new(text.strip_suffix('\r').unwrap_or(text)))
                }
                Err(err) => {
                    // The last good secret is kept for a file gone missing
                    // mid-rotation; the next change reads it again.
                    tracing::warn!(file = %path.display(), %err, "cannot read a secret file");
                    None
                }
            }
        };
        let before = self.current();
        let password = read(&self.sources.password_file).or_else(|| before.password.clone());
        let token = read(&self.sources.token_file).or_else(|| before.token.clone());
        let credentials = self.sources.credentials_file.as_ref().map(|path| {
            files.push((path.clone(), fingerprint(path)));
            Credentials::read(path, self.sources.prober).map(|(credentials, named)| {
                files.extend(named);
                credentials
            })
        });
        if let Some(Err(err)) = &credentials {
            tracing::warn!(%err, "cannot read a credentials file");
        }
        let next = Secrets {
            password,
            token,
            credentials,
            version: before.version + 1,
        };
        *seen = Some(files);
        self.current.store(Arc::new(next));
        true
    }
}

/// Keeps every module's secrets current until `cancel`: on an event in the
/// files' directories, and every [`FALLBACK`].
pub(crate) async fn watch(
    modules: Vec<Arc<Watched>>,
    events: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    if modules.is_empty() {
        return;
    }
    let wake = Arc::new(Notify::new());
    let woken = wake.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            events.fetch_add(1, Ordering::AcqRel);
            woken.notify_one();
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            tracing::warn!(%err, every = ?FALLBACK, "cannot watch secret files; looking at them on a timer");
            None
        }
    };
    let mut watching: Vec<PathBuf> = Vec::new();
    loop {
        // The directories change when a credentials file names new files.
        let mut wanted: Vec<PathBuf> = modules.iter().flat_map(|m| m.directories()).collect();
        wanted.sort();
        wanted.dedup();
        if let Some(watcher) = watcher.as_mut() {
            for dir in wanted.iter().filter(|d| !watching.contains(d)) {
                if let Err(err) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), %err, "cannot watch a secrets directory");
                }
            }
            for dir in watching.iter().filter(|d| !wanted.contains(d)) {
                let _ = watcher.unwatch(dir);
            }
        }
        watching = wanted;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(FALLBACK) => {}
        }
        let modules = modules.clone();
        let refreshed =
            tokio::task::spawn_blocking(move || modules.iter().filter(|m| m.refresh()).count())
                .await;
        if let Some(changed) = refreshed.ok().filter(|n| *n > 0) {
            tracing::info!(
                modules = changed,
                "secret files changed; probes use the new ones"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_swap_is_a_change_and_an_untouched_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("..2026_1"), dir.path().join("..2026_2"));
        std::fs::create_dir(&one).unwrap();
        std::fs::create_dir(&two).unwrap();
        std::fs::write(one.join("password"), "first\n").unwrap();
        std::fs::write(two.join("password"), "other\n").unwrap();
        std::os::unix::fs::symlink(&one, dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/password", dir.path().join("password")).unwrap();
        let module = ModuleConfig {
            password_file: Some(crate::config::values::SecretFile {
                path: dir.path().join("password"),
                secret: Secret::new("first"),
            }),
            ..ModuleConfig::default()
        };
        let watched = Watched::new(&module, ProberKind::Redis, Arc::default());
        let first = watched.current();
        assert_eq!(first.password.as_ref().unwrap().expose(), "first");
        assert!(!watched.refresh(), "nothing changed");
        // What the kubelet does: a new ..data link, renamed over the old.
        std::os::unix::fs::symlink(&two, dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(watched.refresh());
        let second = watched.current();
        assert_eq!(second.password.as_ref().unwrap().expose(), "other");
        assert!(second.version > first.version);
    }
}
