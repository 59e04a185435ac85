//! The one owner of the server's TLS and basic-auth settings after start.
//!
//! It applies what a reload hands it ([`WebWatch::apply`]) and, as
//! exporter-toolkit does, changes to `--web.config.file` and to the
//! certificates, keys and CA files it names, without a reload: a certificate
//! renewed by cert-manager or Vault is served from the next connection. The
//! files are checked (size and modification time) every [`WATCH_INTERVAL`].
//! A change that does not load is logged and reported to the app (which owns
//! `llmcache_config_last_reload_successful`); the running settings stay.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::auth::BasicAuth;
use super::listener::TlsSetting;
use crate::web_config::{self, WebSettings};

/// How often the files are checked.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// What the watcher reports of a change it found on disk.
pub(crate) type WebOutcome = Result<(), String>;

/// A handle to hand the watcher new settings on reload.
#[derive(Clone)]
pub(crate) struct WebWatch(mpsc::Sender<(WebSettings, oneshot::Sender<()>)>);

impl WebWatch {
    /// Starts the watcher from `settings`, which `tls` and `auth` already
    /// hold. It runs until `cancel` and sends each on-disk change's outcome
    /// to `outcomes`.
    pub(crate) fn start(
        settings: WebSettings,
        tls: TlsSetting,
        auth: BasicAuth,
        outcomes: mpsc::UnboundedSender<WebOutcome>,
        cancel: CancellationToken,
    ) -> Self {
        let (sender, commands) = mpsc::channel(1);
        tokio::spawn(
            Watcher {
                seen: fingerprint(settings.path.as_deref(), &settings.security.files),
                settings,
                tls,
                auth,
            }
            .run(commands, outcomes, cancel),
        );
        Self(sender)
    }

    /// Serves `settings` from now on; returns once they apply.
    pub(crate) async fn apply(&self, settings: WebSettings) {
        let (done, applied) = oneshot::channel();
        if self.0.send((settings, done)).await.is_ok() {
            let _ = applied.await;
        }
    }
}

struct Watcher {
    settings: WebSettings,
    seen: Fingerprint,
    tls: TlsSetting,
    auth: BasicAuth,
}

impl Watcher {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<(WebSettings, oneshot::Sender<()>)>,
        outcomes: mpsc::UnboundedSender<WebOutcome>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                Some((settings, done)) = commands.recv() => {
                    self.apply(settings);
                    let _ = done.send(());
                }
                () = tokio::time::sleep(WATCH_INTERVAL) => {
                    if let Some(outcome) = self.check() {
                        let _ = outcomes.send(outcome);
                    }
                }
            }
        }
    }

    fn apply(&mut self, settings: WebSettings) {
        self.tls.store(settings.security.tls.clone());
        self.auth.set_users(settings.security.users.clone());
        self.seen = fingerprint(settings.path.as_deref(), &settings.security.files);
        self.settings = settings;
    }

    /// Reloads the file if it or a file it names changed.
    fn check(&mut self) -> Option<WebOutcome> {
        let path = self.settings.path.clone()?;
        let now = fingerprint(Some(&path), &self.settings.security.files);
        if now == self.seen {
            return None;
        }
        // Certificate and key are often written one after the other; a
        // half-written pair fails to load and is retried at the next change.
        self.seen = now;
        Some(match web_config::load(&path) {
            Ok(security) => {
                self.apply(WebSettings {
                    path: Some(path.clone()),
                    security,
                });
                tracing::info!(file = %path.display(), "web config reloaded");
                Ok(())
            }
            Err(err) => {
                let reason = format!(
                    "invalid {}: {}",
                    err.blame(&path, "--web.config.file"),
                    err.message()
                );
                tracing::error!(
                    error = %reason,
                    "web config changed but does not load; the running settings stay"
                );
                Err(reason)
            }
        })
    }
}

/// What the running settings were loaded from.
type Fingerprint = Vec<Option<(SystemTime, u64)>>;

/// The web config file's and the named files' sizes and times.
fn fingerprint(path: Option<&Path>, files: &[PathBuf]) -> Fingerprint {
    path.into_iter()
        .chain(files.iter().map(PathBuf::as_path))
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}
