//! The monitoring mixin and what ships from it: the committed rule files are
//! exactly what it renders, its configuration is checked, a renamed job is
//! one line, and the Kubernetes manifests validate and carry the same rules.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::helpers::{render_mixin, repo, require};

/// The venv's Python, which has PyYAML (through kubernetes-validate).
fn venv_tool(name: &str) -> PathBuf {
    let bin = std::env::var_os("LLMCACHE_TEST_CHROMA_PYTHON")
        .map(PathBuf::from)
        .and_then(|python| python.parent().map(PathBuf::from))
        .unwrap_or_else(|| repo(".venv/bin"));
    let tool = bin.join(name);
    assert!(
        tool.is_file(),
        "{} is missing; install it with `{}/pip install kubernetes-validate` (or run scripts/test.sh)",
        tool.display(),
        bin.display()
    );
    tool
}

/// The YAML documents of `file`, as JSON.
fn yaml(file: &str) -> Vec<serde_json::Value> {
    let output = Command::new(venv_tool("python"))
        .args([
            "-c",
            "import json, sys, yaml\nfor d in yaml.safe_load_all(open(sys.argv[1])): print(json.dumps(d))",
        ])
        .arg(repo(file))
        .output()
        .expect("cannot run python");
    assert!(
        output.status.success(),
        "{file}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `promtool check rules` on `text`.
fn promtool_check(text: &str) -> Result<(), String> {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("rules.yml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(require("promtool", "apt-get install -y prometheus"))
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("cannot run promtool");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn the_committed_rule_files_and_dashboard_are_what_the_mixin_renders() {
    for (format, file) in [
        ("rules", "alerts/llm-cache-exporter.rules.yml"),
        ("prometheusrule", "deploy/kubernetes/prometheusrule.yaml"),
        ("dashboard", "dashboards/llm-cache-exporter.json"),
        (
            "fleet-dashboard",
            "dashboards/llm-cache-exporter-fleet.json",
        ),
    ] {
        let committed = std::fs::read_to_string(repo(file)).unwrap();
        let rendered = render_mixin("{}", format).unwrap();
        assert!(
            committed == rendered,
            "{file} differs from what mixin/ renders: run scripts/mixin.sh"
        );
    }
}

#[test]
fn the_prometheusrule_holds_the_rule_files_groups_and_promtool_accepts_them() {
    let rule = yaml("deploy/kubernetes/prometheusrule.yaml");
    assert_eq!(rule.len(), 1);
    assert_eq!(rule[0]["kind"], "PrometheusRule");
    assert_eq!(rule[0]["apiVersion"], "monitoring.coreos.com/v1");
    let groups = &rule[0]["spec"]["groups"];
    let file = yaml("alerts/llm-cache-exporter.rules.yml");
    assert_eq!(groups, &file[0]["groups"]);
    // JSON is YAML: promtool reads the groups as a rule file.
    promtool_check(&serde_json::json!({ "groups": groups }).to_string()).unwrap();
}

#[test]
fn every_alert_has_a_severity_and_annotations_and_a_runbook_section() {
    let runbook = std::fs::read_to_string(repo("docs/runbook.md")).unwrap();
    let file = yaml("alerts/llm-cache-exporter.rules.yml");
    let mut alerts = 0;
    for group in file[0]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            let severity = rule["labels"]["severity"].as_str().unwrap();
            assert!(["critical", "warning"].contains(&severity), "{name}");
            for annotation in ["summary", "description", "runbook_url"] {
                assert!(
                    rule["annotations"][annotation].is_string(),
                    "{name}: {annotation}"
                );
            }
            let anchor = name.to_ascii_lowercase();
            assert!(
                rule["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("docs/runbook.md#{anchor}")),
                "{name}"
            );
            assert!(
                runbook.contains(&format!("\n## {name}\n")),
                "docs/runbook.md has no section for {name}"
            );
        }
    }
    assert!(alerts >= 16, "{alerts} alerts");
}

#[test]
fn a_renamed_scrape_job_is_one_line_of_config() {
    let default = render_mixin("{}", "rules").unwrap();
    let renamed = render_mixin(r#"{ selector: 'job="canary"' }"#, "rules").unwrap();
    promtool_check(&renamed).unwrap();
    assert!(
        !renamed.contains(r#"job="llm-cache-exporter""#),
        "{renamed}"
    );
    let selectors = default.matches(r#"job="llm-cache-exporter""#).count();
    assert!(selectors > 40, "{selectors}");
    assert_eq!(renamed.matches(r#"job="canary""#).count(), selectors);
}

#[test]
fn an_objective_outside_zero_to_one_fails_the_build_with_a_clear_message() {
    for (slo, bad) in [
        ("errors", "0"),
        ("errors", "1"),
        ("errors", "99.5"),
        ("errors", "'0.995'"),
        ("latency", "-0.01"),
        ("latency", "1.5"),
    ] {
        {
            let config = format!("{{ slo+: {{ {slo}+: {{ objective: {bad} }} }} }}");
            let err = render_mixin(&config, "rules").expect_err(&config);
            assert!(
                err.contains(&format!(
                    "mixin: slo.{slo}.objective must be a ratio strictly between 0 and 1"
                )),
                "{config}: {err}"
            );
        }
    }
    let config = "{ slo+: { errors+: { objective: 0.999 }, latency+: { objective: 0.9 } } }";
    let rules = render_mixin(config, "rules").unwrap();
    promtool_check(&rules).unwrap();
    assert!(rules.contains("vector(0.001)"), "{rules}");
}

#[test]
fn a_latency_threshold_between_buckets_fails_the_build_with_a_clear_message() {
    let err = render_mixin("{ slo+: { latency+: { threshold: 0.3 } } }", "rules").unwrap_err();
    assert!(
        err.contains("mixin: slo.latency.threshold 0.3 is not a bucket bound"),
        "{err}"
    );
    let rules = render_mixin("{ slo+: { latency+: { threshold: 0.1 } } }", "rules").unwrap();
    assert!(rules.contains(r#"le="0.1""#), "{rules}");
    assert!(render_mixin("{}", "nonsense").is_err());
}

#[test]
fn the_kubernetes_manifests_validate_and_run_the_daemon_locked_down() {
    let dir = repo("deploy/kubernetes");
    let core = [
        "configmap.yaml",
        "secret.yaml",
        "deployment.yaml",
        "service.yaml",
    ];
    let output = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .args(core.iter().map(|f| dir.join(f)))
        .stdin(Stdio::null())
        .output()
        .expect("cannot run kubernetes-validate");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // kustomization.yaml lists every manifest in the directory.
    let kustomization = &yaml("deploy/kubernetes/kustomization.yaml")[0];
    let mut listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    present.sort_unstable();
    assert_eq!(listed, present);

    let deployment = &yaml("deploy/kubernetes/deployment.yaml")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/-/healthy");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/-/ready");
    for kind in ["requests", "limits"] {
        assert!(container["resources"][kind]["memory"].is_string(), "{kind}");
    }
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(volumes
        .iter()
        .any(|v| v["secret"]["secretName"].is_string()));
    assert!(volumes.iter().any(|v| v["configMap"]["name"].is_string()));

    // The config the ConfigMap holds is one the daemon accepts, and reads
    // its secrets from where the Secret is mounted.
    let config = &yaml("deploy/kubernetes/configmap.yaml")[0];
    let toml = config["data"]["config.toml"].as_str().unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    let secrets = mounts.iter().find(|m| m["name"] == "secrets").unwrap()["mountPath"]
        .as_str()
        .unwrap();
    let secret = &yaml("deploy/kubernetes/secret.yaml")[0];
    for (key, _) in secret["stringData"].as_object().unwrap() {
        assert!(toml.contains(&format!("\"{secrets}/{key}\"")), "{key}");
    }
    let config_dir = tempfile::TempDir::new().unwrap();
    let check = config_dir.path().join("config.toml");
    let mut local = toml.to_owned();
    for (key, value) in secret["stringData"].as_object().unwrap() {
        let file = config_dir.path().join(key);
        std::fs::write(&file, value.as_str().unwrap()).unwrap();
        local = local.replace(&format!("{secrets}/{key}"), &file.display().to_string());
    }
    std::fs::write(&check, local).unwrap();
    let output = Command::new(crate::helpers::binary())
        .args(["--check-config", "--config.file"])
        .arg(&check)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_probe_resources_and_scrape_configs_name_the_configured_modules() {
    let config = &yaml("deploy/kubernetes/configmap.yaml")[0];
    let toml: toml::Table = config["data"]["config.toml"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let modules = toml["probe"]["modules"].as_table().unwrap();
    let probes = yaml("deploy/kubernetes/probe.yaml");
    assert_eq!(probes.len(), 3);
    let scrape = &yaml("deploy/prometheus/probe.yml")[0];
    let jobs: Vec<&str> = scrape["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["job_name"].as_str().unwrap())
        .collect();
    for probe in &probes {
        assert_eq!(probe["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(probe["kind"], "Probe");
        let spec = &probe["spec"];
        let module = spec["module"].as_str().unwrap();
        assert!(modules.contains_key(module), "{module} is not configured");
        assert_eq!(spec["prober"]["path"], "/probe");
        let job = spec["jobName"].as_str().unwrap();
        assert_eq!(job, format!("llmcache-probe-{module}"));
        assert!(jobs.contains(&job), "{job} is not in probe.yml");
    }
}
