//! `--web.config.file`: TLS, client certificates and basic auth on every
//! endpoint, checked with real HTTPS clients and a real Prometheus.

use std::path::Path;
use std::time::Duration;

use crate::helpers::{
    install_crypto, poll, spawn_app, write_file, ChromaServer, PrometheusServer, RedisServer,
    TestApp,
};
use crate::pki::{Leaf, Pki};

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-me:please";

/// A client that trusts `ca`, optionally presenting `identity`.
fn https_client(ca: &Path, identity: Option<&Leaf>) -> reqwest::Client {
    install_crypto();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(5));
    if let Some(leaf) = identity {
        let mut pem = std::fs::read(&leaf.cert).unwrap();
        pem.extend(std::fs::read(&leaf.key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

fn write_web_config(dir: &Path, text: &str) -> String {
    write_file(dir, "web.yml", text)
}

async fn spawn_with_web_config(web_config: &str) -> (TestApp, RedisServer, ChromaServer) {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let app = spawn_app(&[
        "--redis.url".into(),
        redis.url(),
        "--chroma.url".into(),
        chroma.url(),
        "--web.config.file".into(),
        web_config.into(),
    ])
    .await;
    (app, redis, chroma)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth_guard_every_endpoint() {
    let pki = Pki::new();
    let hash = bcrypt::hash(PASSWORD, 6).unwrap();
    let web_config = write_web_config(
        pki.dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  min_version: TLS12\n\
             basic_auth_users:\n  {USER}: '{hash}'\n",
            pki.trusted.server.cert.display(),
            pki.trusted.server.key.display(),
        ),
    );
    let (app, _redis, _chroma) = spawn_with_web_config(&web_config).await;
    let client = https_client(&pki.trusted.ca, None);
    let base = format!("https://localhost:{}", app.addr.port());

    for path in ["/metrics", "/health", "/-/healthy", "/-/ready", "/"] {
        let url = format!("{base}{path}");
        let anonymous = client.get(&url).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path} without credentials");
        let challenge = anonymous.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Basic "), "{challenge}");
        let wrong = client
            .get(&url)
            .basic_auth(USER, Some("not-it"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong password");
        let stranger = client
            .get(&url)
            .basic_auth("someone-else", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(stranger.status(), 401, "{path} with an unknown user");
        let right = client
            .get(&url)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert!(
            right.status() == 200 || (path == "/health" && right.status() == 503),
            "{path} with the right credentials: {}",
            right.status()
        );
    }
    let reload = client
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 401, "reload needs credentials too");

    // Plain HTTP on the HTTPS port is refused, with a reason.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/metrics", app.addr.port()))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await;
    match plain {
        Ok(response) => {
            assert_eq!(response.status(), 400);
            let body = response.text().await.unwrap_or_default();
            assert!(body.contains("HTTPS"), "{body}");
        }
        Err(err) => assert!(!err.is_status(), "{err}"),
    }
    // A client that does not trust the server's CA never gets an answer.
    let distrustful = https_client(&pki.untrusted.ca, None);
    let refused = distrustful
        .get(format!("{base}/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // A real Prometheus scrapes it over HTTPS with basic auth.
    let prometheus = PrometheusServer::start_with_job(
        app.addr,
        &[],
        &format!(
            "    scheme: https\n    basic_auth:\n      username: {USER}\n      password: '{PASSWORD}'\n\
             \x20   tls_config:\n      ca_file: {}\n      server_name: localhost\n",
            pki.trusted.ca.display()
        ),
    );
    // Prometheus scrapes over HTTPS.
    prometheus.wait_for_value("up", "1").await;
    let build_info = prometheus.query("llmcache_build_info").await;
    assert_eq!(build_info.as_array().map(Vec::len), Some(1), "{build_info}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_against_the_client_ca() {
    let pki = Pki::new();
    let web_config = write_web_config(
        pki.dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  \
             client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n",
            pki.trusted.server.cert.display(),
            pki.trusted.server.key.display(),
            pki.trusted.ca.display(),
        ),
    );
    let (app, _redis, _chroma) = spawn_with_web_config(&web_config).await;
    let url = format!("https://localhost:{}/-/healthy", app.addr.port());

    let trusted = https_client(&pki.trusted.ca, Some(&pki.trusted.client));
    assert_eq!(trusted.get(&url).send().await.unwrap().status(), 200);
    let anonymous = https_client(&pki.trusted.ca, None);
    assert!(anonymous.get(&url).send().await.is_err());
    let forged = https_client(&pki.trusted.ca, Some(&pki.untrusted.client));
    assert!(forged.get(&url).send().await.is_err());
    app.stop().await;
}

#[test]
fn a_bad_web_config_fails_at_start_naming_the_key() {
    let pki = Pki::new();
    let cases = [
        (
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
            "tls_server_config.cert_file",
        ),
        (
            "basic_auth_users:\n  alice: hunter2\n",
            "basic_auth_users.alice",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
            "tls_server_config.client_auth_type",
        ),
        ("tls_server_config:\n  ciphers: [x]\n", "ciphers"),
    ];
    for (text, key) in cases {
        let web_config = write_web_config(pki.dir.path(), text);
        let out = std::process::Command::new(crate::helpers::binary())
            .args(["--check-config", "--web.config.file", &web_config])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(key) && stderr.contains("--web.config.file"),
            "{text}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

/// As with exporter-toolkit, a renewed certificate or a changed user list is
/// served without a reload; a change that does not load keeps the running
/// settings and shows in `llmcache_config_last_reload_successful`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_user_changes_on_disk_apply_without_a_reload() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let install = |leaf: &Leaf| {
        std::fs::copy(&leaf.cert, &cert).unwrap();
        std::fs::copy(&leaf.key, &key).unwrap();
    };
    let users = |password: &str| {
        let hash = bcrypt::hash(password, 4).unwrap();
        // Relative paths: resolved against the web config's directory.
        format!("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  alice: '{hash}'\n")
    };
    install(&pki.trusted.server);
    let web_config = write_web_config(dir.path(), &users("one"));
    let (app, _redis, _chroma) = spawn_with_web_config(&web_config).await;
    let url = format!("https://localhost:{}/metrics", app.addr.port());
    let old_ca = https_client(&pki.trusted.ca, None);
    let new_ca = https_client(&pki.untrusted.ca, None);
    let status = |client: &reqwest::Client, password: &str| {
        let request = client.get(&url).basic_auth("alice", Some(password));
        async move { request.send().await.map(|r| r.status().as_u16()).ok() }
    };
    assert_eq!(status(&old_ca, "one").await, Some(200));

    // Renewal: a certificate from another CA, and a new password.
    install(&pki.untrusted.server);
    write_web_config(dir.path(), &users("two"));
    poll(
        "the renewed certificate served",
        Duration::from_secs(15),
        || async { (status(&new_ca, "two").await == Some(200)).then_some(()) },
    )
    .await;
    // A new connection: one opened before the renewal lives on, as in any server.
    let old_ca = https_client(&pki.trusted.ca, None);
    assert_eq!(
        status(&old_ca, "two").await,
        None,
        "the old certificate is gone"
    );
    assert_eq!(
        status(&new_ca, "one").await,
        Some(401),
        "the old password is gone"
    );

    // A broken change keeps the running settings.
    write_web_config(dir.path(), "basic_auth_users:\n  alice: not-a-hash\n");
    let reload_ok = || async {
        let text = new_ca
            .get(&url)
            .basic_auth("alice", Some("two"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        crate::helpers::metric_value(&text, "llmcache_config_last_reload_successful")
    };
    poll(
        "the refused change counted",
        Duration::from_secs(15),
        || async { (reload_ok().await == Some(0.0)).then_some(()) },
    )
    .await;
    assert_eq!(status(&new_ca, "two").await, Some(200));
    app.stop().await;
}
