//! The endpoint under idle and slow clients: 1,100 connections that send
//! nothing or half a request cannot lock out a scrape, plain or over TLS;
//! clients that trickle their headers are closed at the header timeout;
//! oversized headers get 431 and unknown paths 404.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{free_port, install_crypto, poll, series, write_file, Daemon};
use crate::pki::Pki;

const RSS: &str = "process_resident_memory_bytes";
/// Timeouts long enough that the flood reaches the cap before they close it,
/// even when the three flood tests share two cores: at 6 s and 8 s, a run
/// that admitted the flood slowly saw its first connections time out before
/// the last ones came, and the cap closed 69, or none.
const FLOOD: &str =
    "[web]\nread_header_timeout = \"12s\"\nidle_timeout = \"15s\"\n[workload]\nrate = 1.0\n";
/// A header timeout short enough to wait for.
const SLOW: &str = "[web]\nread_header_timeout = \"2s\"\n[workload]\nrate = 1.0\n";

fn closed(text: &str, reason: &str) -> f64 {
    series(
        text,
        &format!(r#"llmcache_http_connections_closed_total{{reason="{reason}"}}"#),
    )
}

/// The daemon, with unreachable backends (the endpoint needs none), `config`
/// and `extra` flags.
fn start(dir: &Path, config: &str, extra: &[String]) -> Daemon {
    let config = write_file(dir, "config.toml", config);
    let mut args = vec![
        "--redis.url".to_owned(),
        format!("redis://127.0.0.1:{}", free_port()),
        "--chroma.url".into(),
        format!("http://127.0.0.1:{}", free_port()),
        "--config.file".into(),
        config,
    ];
    args.extend(extra.iter().cloned());
    Daemon::start(&args, dir)
}

/// 550 connections that send nothing and 550 that send half a request.
fn flood(port: u16, partial: &[u8]) -> Vec<TcpStream> {
    (0..1100)
        .map(|i| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            if i % 2 == 1 {
                stream.write_all(partial).expect("partial request");
            }
            stream
        })
        .collect()
}

/// Scrapes `/metrics` three times on fresh connections, each within 1 s.
async fn scrapes_within_a_second(client: &reqwest::Client, url: &str) -> String {
    let mut text = String::new();
    for _ in 0..3 {
        let start = Instant::now();
        let response = tokio::time::timeout(Duration::from_secs(1), client.get(url).send())
            .await
            .expect("/metrics answered within 1 s during the flood")
            .expect("/metrics answered");
        assert_eq!(response.status(), 200);
        text = response.text().await.unwrap();
        eprintln!("scrape during the flood: {:?}", start.elapsed());
    }
    text
}

/// Floods: while the flood is open, scrapes answer within 1 s; the cap and
/// the timeouts close every flooding connection; and RSS comes back near
/// where it started.
async fn survives_a_flood(daemon: &Daemon, client: &reqwest::Client, url: &str, partial: &[u8]) {
    let metrics = |c: &reqwest::Client| {
        let (c, u) = (c.clone(), url.to_owned());
        async move { c.get(u).send().await.ok()?.text().await.ok() }
    };
    let text = poll("a first scrape", Duration::from_secs(15), || {
        metrics(client)
    })
    .await;
    let before = series(&text, RSS);
    let streams = flood(daemon.port, partial);
    let during = scrapes_within_a_second(client, url).await;
    let peak = series(&during, RSS);
    // 1,100 connections and the scrapes at a cap of 1,024: the quietest
    // never-answered ones made room. The header and idle timeouts (12 s and
    // 15 s here; 10 s for a handshake) close the rest.
    let text = poll("the flood closed", Duration::from_secs(45), || async {
        let text = metrics(client).await?;
        let gone = [
            "limit",
            "header_timeout",
            "idle_timeout",
            "handshake_timeout",
        ]
        .iter()
        .map(|r| closed(&text, r))
        .sum::<f64>();
        (gone >= 1100.0).then_some(text)
    })
    .await;
    assert!(closed(&text, "limit") >= 70.0, "{text}");
    drop(streams);
    // The daemon hands freed memory back every 10 s.
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    let after = poll(
        "RSS back near where it started",
        Duration::from_secs(25),
        || async {
            let rss = series(&metrics(client).await?, RSS);
            (rss - before < 5.0 * 1024.0 * 1024.0).then_some(rss)
        },
    )
    .await;
    eprintln!(
        "RSS: {:.1} MiB before the flood, {:.1} MiB during it, {:.1} MiB after it",
        mib(before),
        mib(peak),
        mib(after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_and_half_sent_connections_cannot_lock_out_a_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), FLOOD, &[]);
    let url = format!("http://127.0.0.1:{}/metrics", daemon.port);
    survives_a_flood(
        &daemon,
        &reqwest::Client::new(),
        &url,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    let logs = daemon.stop();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_flood_over_tls() {
    install_crypto();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let web = write_file(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            pki.trusted.server.cert.display(),
            pki.trusted.server.key.display()
        ),
    );
    let daemon = start(dir.path(), FLOOD, &["--web.config.file".into(), web]);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.trusted.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/metrics", daemon.port);
    // Half a TLS record: the start of a ClientHello.
    survives_a_flood(
        &daemon,
        &client,
        &url,
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01],
    )
    .await;
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_a_second_are_closed_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), SLOW, &[]);
    let port = daemon.port;
    let url = format!("http://127.0.0.1:{port}/metrics");
    poll("the daemon", Duration::from_secs(15), || {
        daemon.try_get("/-/healthy")
    })
    .await;
    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\n\r\n";
    let slow: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let start = Instant::now();
                for byte in request {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return start.elapsed();
                    }
                    let mut buf = [0u8; 64];
                    match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                        Ok(Ok(_)) => panic!("a slow client got an answer"),
                        Err(_) => {}
                    }
                }
                panic!("a slow client sent every byte");
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "a normal scrape meanwhile");
    for client in slow {
        let lasted = client.await.unwrap();
        assert!(
            lasted < Duration::from_secs(5),
            "closed {lasted:?} after it began; the header timeout is 2 s"
        );
    }
    let text = daemon.get("/metrics").await;
    assert!(closed(&text, "header_timeout") >= 200.0, "{text}");

    // Oversized headers: 431. An unknown path: 404, with a link home.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = stream.write_all(huge.as_bytes());
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let missing = reqwest::get(format!("http://127.0.0.1:{port}/nope"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("href=\"/\""));
    daemon.stop();
}
