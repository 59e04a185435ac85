//! Applies changes to `--web.config.file`, and to the certificates, keys and
//! CA files it names, without a reload, as exporter-toolkit does: a
//! certificate renewed by cert-manager or Vault is served from the next
//! connection. The files are checked (size and modification time) every
//! [`WATCH_INTERVAL`]; a change that does not load is logged, counted in
//! `llmcache_config_last_reload_successful`, and the running settings stay.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use super::auth::BasicAuth;
use super::listener::TlsSetting;
use crate::config::WebSecurity;

/// How often the files are checked.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// What the running settings were loaded from.
type Fingerprint = Vec<Option<(SystemTime, u64)>>;

/// The web config file's and the named files' sizes and times.
fn fingerprint(path: &Path, files: &[PathBuf]) -> Fingerprint {
    std::iter::once(path)
        .chain(files.iter().map(PathBuf::as_path))
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// Watches until `cancel`, starting from the settings loaded from `path`,
/// which named `files`.
pub(crate) async fn watch_web_config(
    path: PathBuf,
    mut files: Vec<PathBuf>,
    tls: TlsSetting,
    auth: BasicAuth,
    reload_ok: Gauge,
    cancel: CancellationToken,
) {
    let mut seen = fingerprint(&path, &files);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        let now = fingerprint(&path, &files);
        if now == seen {
            continue;
        }
        // Certificate and key are often written one after the other; a
        // half-written pair fails to load and is retried at the next change.
        seen = now;
        match WebSecurity::reload(&path) {
            Ok(security) => {
                tls.store(security.tls.clone());
                auth.set_users(security.users.clone());
                files = security.files;
                seen = fingerprint(&path, &files);
                reload_ok.set(1);
                tracing::info!(file = %path.display(), "web config reloaded");
            }
            Err(err) => {
                reload_ok.set(0);
                tracing::error!(
                    error = %err,
                    "web config changed but does not load; the running settings stay"
                );
            }
        }
    }
}
