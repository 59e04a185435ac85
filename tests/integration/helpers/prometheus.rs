//! `prometheus`, scraping the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use super::*;

/// A `prometheus` server scraping one target every second.
pub struct PrometheusServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `target` every second as job
    /// `llm-cache-exporter` (the name the alert rules expect), loading `rule_files`.
    pub fn start(target: SocketAddr, rule_files: &[PathBuf]) -> Self {
        Self::start_with_job(target, rule_files, "")
    }

    /// As [`Self::start`], with `job` (lines indented four spaces, such as
    /// `scheme:`, `basic_auth:` or `tls_config:`) added to the scrape job.
    pub fn start_with_job(target: SocketAddr, rule_files: &[PathBuf], job: &str) -> Self {
        Self::start_config(&[target], rule_files, job, "")
    }

    /// As [`Self::start`] with several daemons in the job, sending its alerts
    /// to the Alertmanager on `alertmanager`.
    pub fn start_alerting(
        targets: &[SocketAddr],
        rule_files: &[PathBuf],
        alertmanager: u16,
    ) -> Self {
        let alerting = format!(
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{alertmanager}']\n"
        );
        Self::start_config(targets, rule_files, "", &alerting)
    }

    fn start_config(
        targets: &[SocketAddr],
        rule_files: &[PathBuf],
        job: &str,
        alerting: &str,
    ) -> Self {
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let scrape_configs = format!(
            "{alerting}scrape_configs:\n  - job_name: llm-cache-exporter\n{job}    static_configs:\n      - targets: [{targets}]\n"
        );
        Self::start_scraping(&scrape_configs, rule_files)
    }

    /// A Prometheus evaluating `rule_files` every second, with `config`
    /// (its `scrape_configs:` and anything else but `global` and
    /// `rule_files`) as given.
    pub fn start_scraping(config: &str, rule_files: &[PathBuf]) -> Self {
        let binary = require("prometheus", "apt-get install -y prometheus");
        let dir = TempDir::new().expect("temp dir");
        let port = free_port();
        let rules = rule_files
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect::<String>();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}{config}",
            rules = if rules.is_empty() { "  []\n".to_owned() } else { rules }
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus config");
        let (child, log) = spawn_logged(
            Command::new(binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            "prometheus",
            port,
            dir.path(),
        );
        wait_for_ready(port, &log);
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// `GET /api/v1/<path>`: the whole answer.
    pub async fn api(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("http://127.0.0.1:{}/api/v1/{path}", self.port))
            .await
            .expect("prometheus API")
            .json()
            .await
            .expect("prometheus answer")
    }

    /// Runs an instant query; returns the whole answer, errors included.
    pub async fn try_query(&self, expr: &str) -> serde_json::Value {
        let url = url::Url::parse_with_params(
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            &[("query", expr)],
        )
        .expect("query URL");
        reqwest::get(url)
            .await
            .expect("prometheus query")
            .json()
            .await
            .expect("prometheus answer")
    }

    /// Runs an instant query; returns the `data.result` array.
    pub async fn query(&self, expr: &str) -> serde_json::Value {
        let body = self.try_query(expr).await;
        assert_eq!(body["status"], "success", "query {expr} failed: {body}");
        body["data"]["result"].clone()
    }

    /// Waits until `expr`'s first sample has the value `wanted` (as Prometheus
    /// prints it, e.g. `"1"`).
    pub async fn wait_for_value(&self, expr: &str, wanted: &str) {
        poll(
            &format!("{expr} = {wanted}"),
            Duration::from_secs(30),
            || async { (self.query(expr).await[0]["value"][1] == wanted).then_some(()) },
        )
        .await;
    }

    /// Waits until `expr` returns any series.
    pub async fn wait_for_any(&self, expr: &str) {
        poll(
            &format!("any result for {expr}"),
            Duration::from_secs(30),
            || async {
                let result = self.query(expr).await;
                result
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
                    .then_some(())
            },
        )
        .await;
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
