//! `--web.config.file`: the Prometheus exporter-toolkit format, so a web config
//! written for node_exporter works here unchanged, as long as it uses what
//! rustls can honour. Keys this daemon cannot honour are refused by name rather
//! than ignored: serving without a protection the file asked for would be worse
//! than not starting.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12                              # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                          # bcrypt
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde::Deserialize;

use crate::pem;

/// The web config file (if any) and what it said.
#[derive(Clone, Debug, Default)]
pub(crate) struct WebSettings {
    pub(crate) path: Option<PathBuf>,
    pub(crate) security: WebSecurity,
}

/// What the web config file asks of the HTTP server.
#[derive(Clone, Default)]
pub(crate) struct WebSecurity {
    /// Serve HTTPS with this configuration; plain HTTP when `None`.
    pub(crate) tls: Option<Arc<ServerConfig>>,
    /// User name to bcrypt hash; no authentication when empty.
    pub(crate) users: BTreeMap<String, String>,
    /// The certificate, key and CA files it names, for the watcher.
    pub(crate) files: Vec<PathBuf>,
}

impl fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hashes are credentials too: only the user names are shown.
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebFile {
    tls_server_config: Option<TlsFile>,
    #[allow(dead_code)]
    http_server_config: Option<HttpServerFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerFile {
    /// Accepted for compatibility; this server speaks HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
}

/// A refusal: the dotted key at fault (empty for the file as a whole) and why.
#[derive(Debug)]
pub(crate) struct WebConfigError {
    key: String,
    message: String,
}

impl WebConfigError {
    /// Names the key, the file and the flag: `tls_server_config.cert_file
    /// (in web.yml, from --web.config.file)`, or the flag alone.
    pub(crate) fn blame(&self, path: &Path, flag: &str) -> String {
        if self.key.is_empty() {
            flag.to_owned()
        } else {
            format!("{} (in {}, from {flag})", self.key, path.display())
        }
    }

    /// Why it was refused.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

fn refuse(key: &str, message: impl Into<String>) -> WebConfigError {
    WebConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Reads and checks the file, loading every certificate and key it names.
pub(crate) fn load(path: &Path) -> Result<WebSecurity, WebConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| refuse("", format!("cannot read {}: {err}", path.display())))?;
    let file: WebFile = if text.trim().is_empty() {
        WebFile {
            tls_server_config: None,
            http_server_config: None,
            basic_auth_users: BTreeMap::new(),
        }
    } else {
        serde_norway::from_str(&text).map_err(|err| refuse("", err.to_string()))?
    };
    for (user, hash) in &file.basic_auth_users {
        // Parse now so a typo'd hash fails at start, not as 401s later.
        hash.parse::<bcrypt::HashParts>().map_err(|err| {
            refuse(
                &format!("basic_auth_users.{user}"),
                format!("not a bcrypt hash: {err}"),
            )
        })?;
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let files = file
        .tls_server_config
        .iter()
        .flat_map(|tls| [&tls.cert_file, &tls.key_file, &tls.client_ca_file])
        .flatten()
        .map(|named| resolve(base, named))
        .collect();
    let tls = file
        .tls_server_config
        .map(|tls| server_config(&tls, base).map(Arc::new))
        .transpose()?;
    Ok(WebSecurity {
        tls,
        users: file.basic_auth_users,
        files,
    })
}

/// Relative paths are relative to the web config file, as in exporter-toolkit.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// How client certificates are treated.
enum ClientAuth {
    None,
    Verify { required: bool },
}

fn client_auth(tls: &TlsFile) -> Result<(ClientAuth, &str), WebConfigError> {
    let auth_type = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let key = "tls_server_config.client_auth_type";
    let auth = match auth_type {
        "NoClientCert" => ClientAuth::None,
        "VerifyClientCertIfGiven" => ClientAuth::Verify { required: false },
        "RequireAndVerifyClientCert" => ClientAuth::Verify { required: true },
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(refuse(
                key,
                format!(
                    "{auth_type} accepts client certificates without verifying them, which this \
                     daemon does not offer; use VerifyClientCertIfGiven or \
                     RequireAndVerifyClientCert with client_ca_file"
                ),
            ))
        }
        other => {
            return Err(refuse(
                key,
                format!(
                    "{other:?} is not one of NoClientCert, VerifyClientCertIfGiven, \
                     RequireAndVerifyClientCert"
                ),
            ))
        }
    };
    if matches!(auth, ClientAuth::None) && tls.client_ca_file.is_some() {
        return Err(refuse(
            "tls_server_config.client_ca_file",
            "is set but client_auth_type is NoClientCert, so no client would be checked; \
             set client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven",
        ));
    }
    Ok((auth, auth_type))
}

fn server_config(tls: &TlsFile, base: &Path) -> Result<ServerConfig, WebConfigError> {
    let versions = versions(tls)?;
    let (client_auth, auth_type) = client_auth(tls)?;
    let cert_file = tls
        .cert_file
        .as_deref()
        .ok_or_else(|| refuse("tls_server_config.cert_file", "is required"))?;
    let key_file = tls
        .key_file
        .as_deref()
        .ok_or_else(|| refuse("tls_server_config.key_file", "is required"))?;
    let cert_file = resolve(base, cert_file);
    let key_file = resolve(base, key_file);
    let chain =
        pem::certificates(&cert_file).map_err(|m| refuse("tls_server_config.cert_file", m))?;
    let key = pem::private_key(&key_file).map_err(|m| refuse("tls_server_config.key_file", m))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|err| refuse("tls_server_config.min_version", err.to_string()))?;

    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Verify { required } => {
            let ca_file = tls.client_ca_file.as_deref().ok_or_else(|| {
                refuse(
                    "tls_server_config.client_ca_file",
                    format!("is required with client_auth_type {auth_type}"),
                )
            })?;
            let roots = pem::roots(&resolve(base, ca_file))
                .map_err(|m| refuse("tls_server_config.client_ca_file", m))?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|err| refuse("tls_server_config.client_ca_file", err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|err| {
        refuse(
            "tls_server_config.key_file",
            format!("does not match the certificate: {err}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn versions(
    tls: &TlsFile,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, WebConfigError> {
    fn rank(key: &str, text: Option<&str>, default: u8) -> Result<u8, WebConfigError> {
        match text {
            None => Ok(default),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some("TLS10" | "TLS11") => Err(refuse(
                key,
                "TLS 1.0 and 1.1 are not supported; use TLS12 or TLS13",
            )),
            Some(other) => Err(refuse(key, format!("{other:?} is not TLS12 or TLS13"))),
        }
    }
    let min = rank(
        "tls_server_config.min_version",
        tls.min_version.as_deref(),
        12,
    )?;
    let max = rank(
        "tls_server_config.max_version",
        tls.max_version.as_deref(),
        13,
    )?;
    if min > max {
        return Err(refuse(
            "tls_server_config.max_version",
            "is below min_version",
        ));
    }
    Ok(
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(rank, _)| (min..=max).contains(rank))
            .map(|(_, version)| version)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn error(text: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "web.yml", text);
        let err = load(&path).unwrap_err();
        (err.key, err.message)
    }

    #[test]
    fn empty_file_means_no_tls_and_no_auth() {
        let dir = tempfile::tempdir().unwrap();
        let security = load(&write(dir.path(), "web.yml", "")).unwrap();
        assert!(security.tls.is_none() && security.users.is_empty());
    }

    #[test]
    fn users_need_bcrypt_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("secret", 4).unwrap();
        let text = format!("basic_auth_users:\n  alice: '{hash}'\n");
        let security = load(&write(dir.path(), "web.yml", &text)).unwrap();
        assert_eq!(security.users["alice"], hash);
        assert!(!format!("{security:?}").contains(&hash));
        let (key, _) = error("basic_auth_users:\n  bob: plaintext\n");
        assert_eq!(key, "basic_auth_users.bob");
    }

    #[test]
    fn refusals_name_the_key() {
        assert_eq!(
            error("tls_server_config:\n  key_file: k\n").0,
            "tls_server_config.cert_file"
        );
        assert!(error("tls_server_config:\n  cipher_suites: [x]\n")
            .1
            .contains("cipher_suites"));
        assert!(error("basic_auth: {}\n").1.contains("basic_auth"));
        let (key, message) =
            error("tls_server_config:\n  cert_file: /nonexistent/c\n  key_file: k\n");
        assert_eq!(key, "tls_server_config.cert_file");
        assert!(message.contains("/nonexistent/c"));
    }

    #[test]
    fn versions_are_a_range() {
        let tls = |min: Option<&str>, max: Option<&str>| TlsFile {
            cert_file: None,
            key_file: None,
            client_auth_type: None,
            client_ca_file: None,
            min_version: min.map(str::to_owned),
            max_version: max.map(str::to_owned),
        };
        assert_eq!(versions(&tls(None, None)).unwrap().len(), 2);
        assert_eq!(versions(&tls(Some("TLS13"), None)).unwrap().len(), 1);
        assert!(versions(&tls(Some("TLS13"), Some("TLS12"))).is_err());
        assert!(versions(&tls(Some("TLS10"), None)).is_err());
    }
}
