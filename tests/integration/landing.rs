//! The landing page in a real browser: Debian's headless Chromium against
//! the daemon under real traffic. It takes screenshots at 1,280 × 900 and
//! 375 × 800 (kept under `target/screenshots/`) and reads the DOM: every
//! chart has points, and the page refers to nothing outside itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::helpers::{poll, require, ChromaServer, Daemon, RedisServer};

/// Chromium as the project's probe found it works here: headless, no
/// sandbox (root), and none of its own network traffic.
fn chromium(dir: &Path, args: &[&str]) -> Vec<u8> {
    let binary = require("chromium", "apt-get install -y chromium");
    let profile = dir.join("chromium-profile");
    let out = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("cannot run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_shows_live_charts_in_a_real_browser() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &[
            "--redis.url".into(),
            redis.url(),
            "--chroma.url".into(),
            chroma.url(),
        ],
        dir.path(),
    );
    // Two samples make the first rates: about 20 s.
    poll(
        "two samples in the ring",
        Duration::from_secs(45),
        || async {
            let json = daemon.try_get("/api/v1/series").await?;
            let series: serde_json::Value = serde_json::from_str(&json).ok()?;
            (series["samples"].as_array()?.len() >= 2).then_some(())
        },
    )
    .await;

    let bad = reqwest::get(format!(
        "http://127.0.0.1:{}/api/v1/series?window=abc",
        daemon.port
    ))
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("window"));
    let page = reqwest::get(format!("http://127.0.0.1:{}/", daemon.port))
        .await
        .unwrap();
    assert_eq!(
        page.headers()["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    );
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("http-equiv=\"refresh\" content=\"10\""));

    let rss = || async {
        let text = daemon.get("/metrics").await;
        crate::helpers::series(&text, "process_resident_memory_bytes")
    };
    let without_page = rss().await;
    let url = format!("http://127.0.0.1:{}/", daemon.port);
    for (width, height) in [(1280, 900), (375, 800)] {
        let shot = screenshots().join(format!("landing-{width}x{height}.png"));
        let _ = std::fs::remove_file(&shot);
        chromium(
            dir.path(),
            &[
                &format!("--window-size={width},{height}"),
                &format!("--screenshot={}", shot.display()),
                &url,
            ],
        );
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes", shot.display());
        eprintln!("screenshot: {}", shot.display());
    }

    let dom = String::from_utf8(chromium(dir.path(), &["--dump-dom", &url])).unwrap();
    let charts: Vec<&str> = dom.split("data-points=\"").skip(1).collect();
    assert!(charts.len() >= 8, "{} charts in\n{dom}", charts.len());
    for chart in &charts {
        let points: usize = chart.split('"').next().unwrap().parse().unwrap();
        assert!(points > 0, "a chart without data points:\n{dom}");
    }
    for outside in [
        "src=\"http",
        "href=\"http",
        "url(",
        "@import",
        "<script",
        "<link",
    ] {
        assert!(
            !dom.contains(outside),
            "the page refers outside itself ({outside})"
        );
    }
    assert!(dom.contains("Cache hit ratio") && dom.contains("Backends up"));
    for _ in 0..20 {
        reqwest::get(&url).await.unwrap().text().await.unwrap();
    }
    let with_page = rss().await;
    eprintln!("RSS: {without_page} bytes before the page was used, {with_page} after");
    assert!(
        with_page - without_page < 2.0 * 1024.0 * 1024.0,
        "the page costs {} bytes of RSS",
        with_page - without_page
    );
    daemon.stop();
}
