//! A scrape storm: N concurrent clients fetch the given URLs round-robin, each
//! as fast as it is answered, for a fixed time. Prints one line:
//! `requests=… failures=… rps=… p50_ms=… p99_ms=… max_ms=…`.
//!
//! Driven by `scripts/bench-scrape.sh`, which runs it against the daemon and
//! against Debian's prometheus-redis-exporter in the same run:
//!
//! ```text
//! cargo bench --bench scrape_storm -- [--seconds 10] [--concurrency 32]
//!     [--user U --password P] [--ca-file CA] URL...
//! ```

use std::time::{Duration, Instant};

struct Options {
    seconds: u64,
    concurrency: usize,
    user: Option<String>,
    password: Option<String>,
    ca_file: Option<String>,
    urls: Vec<String>,
}

fn options() -> Options {
    let mut options = Options {
        seconds: 10,
        concurrency: 32,
        user: None,
        password: None,
        ca_file: None,
        urls: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--seconds" => options.seconds = value().parse().expect("--seconds N"),
            "--concurrency" => options.concurrency = value().parse().expect("--concurrency N"),
            "--user" => options.user = Some(value()),
            "--password" => options.password = Some(value()),
            "--ca-file" => options.ca_file = Some(value()),
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            url => options.urls.push(url.to_owned()),
        }
    }
    assert!(!options.urls.is_empty(), "give at least one URL");
    options
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = options();
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(options.concurrency);
    if let Some(ca) = &options.ca_file {
        let pem = std::fs::read(ca).expect("--ca-file");
        builder = builder.tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("a PEM CA")]);
    }
    let client = builder.build().expect("HTTP client");
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..options.concurrency {
        let client = client.clone();
        let urls = options.urls.clone();
        let auth = options.user.clone().map(|u| (u, options.password.clone()));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut i = worker;
            while Instant::now() < deadline {
                let mut request = client.get(&urls[i % urls.len()]);
                if let Some((user, password)) = &auth {
                    request = request.basic_auth(user, password.as_ref());
                }
                i += 1;
                let start = Instant::now();
                let ok = match request.send().await {
                    Ok(response) => {
                        let success = response.status().is_success();
                        success && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                latencies.push(start.elapsed());
                if !ok {
                    failures += 1;
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (mut l, f) = task.await.expect("worker");
        latencies.append(&mut l);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "requests={} failures={} rps={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        latencies.len(),
        failures,
        latencies.len() as f64 / elapsed,
        quantile(0.5),
        quantile(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
}
