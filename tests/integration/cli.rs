//! The binary as a user runs it: `--check-config`, precedence, bad input,
//! log files and signals.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{binary, free_port};

/// Runs the binary with a clean `LLMCACHE_*` environment plus `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("LLMCACHE_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command.output().expect("cannot run the binary")
}

/// The `redis.url` that `--check-config` reports.
fn effective_redis_url(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["--check-config"];
    all.extend_from_slice(args);
    let out = run(&all, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("check-config output is not TOML: {e}\n{text}"));
    parsed["redis"]["url"].as_str().unwrap().to_owned()
}

#[test]
fn config_precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[redis]\nurl = \"redis://file:6379\"\n").unwrap();
    let file = file.to_str().unwrap();
    let env = [("LLMCACHE_REDIS_URL", "redis://env:6379")];

    assert_eq!(
        effective_redis_url(
            &["--config.file", file, "--redis.url", "redis://flag:6379"],
            &env
        ),
        "redis://flag:6379"
    );
    assert_eq!(
        effective_redis_url(&["--config.file", file], &env),
        "redis://env:6379"
    );
    assert_eq!(
        effective_redis_url(&["--config.file", file], &[]),
        "redis://file:6379"
    );
    assert_eq!(effective_redis_url(&[], &[]), "redis://127.0.0.1:6379");
    // The config file itself can come from the environment.
    assert_eq!(
        effective_redis_url(&[], &[("LLMCACHE_CONFIG_FILE", file)]),
        "redis://file:6379"
    );
}

#[test]
fn check_config_prints_every_section_with_defaults() {
    let out = run(&["--check-config"], &[]);
    assert!(out.status.success());
    let parsed: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(
        parsed["web"]["listen_address"].as_str(),
        Some("0.0.0.0:9860")
    );
    assert_eq!(
        parsed["redis"]["key_prefix"].as_str(),
        Some("llmcache:probe:")
    );
    assert_eq!(parsed["redis"]["timeout"].as_str(), Some("1s"));
    assert_eq!(parsed["redis"]["mode"].as_str(), Some("standalone"));
    assert_eq!(
        parsed["chroma"]["collection"].as_str(),
        Some("llmcache_probe_memories")
    );
    assert_eq!(parsed["chroma"]["timeout"].as_str(), Some("2s"));
    assert_eq!(parsed["embeddings"]["provider"].as_str(), Some("hash"));
    assert_eq!(parsed["embeddings"]["dimensions"].as_integer(), Some(256));
    assert_eq!(parsed["cache"]["memory_budget"].as_str(), Some("64MiB"));
    assert_eq!(parsed["workload"]["rate"].as_float(), Some(20.0));
    assert_eq!(parsed["workload"]["concurrency"].as_integer(), Some(16));
    assert_eq!(parsed["workload"]["zipf_exponent"].as_float(), Some(1.1));
    assert_eq!(parsed["workload"]["cleanup_on_exit"].as_bool(), Some(true));
    assert!(parsed["workload"]["mix"].is_table());
    assert_eq!(parsed["memory"]["sample_interval"].as_str(), Some("5s"));
    assert_eq!(parsed["log"]["format"].as_str(), Some("logfmt"));
}

/// A bad value: exit 2, one line on stderr naming `key`, no panic.
fn assert_refused(args: &[&str], env: &[(&str, &str)], key: &str) {
    let out = run(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} {env:?} was not refused: {stderr}"
    );
    assert!(
        stderr.contains(key),
        "{args:?} {env:?}: stderr does not name {key:?}: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for a refused config"
    );
}

#[test]
fn bad_flags_and_env_vars_exit_2_naming_them() {
    assert_refused(
        &["--web.listen-address", "nope"],
        &[],
        "--web.listen-address",
    );
    assert_refused(
        &[],
        &[("LLMCACHE_WEB_LISTEN_ADDRESS", "nope")],
        "LLMCACHE_WEB_LISTEN_ADDRESS",
    );
    assert_refused(&["--redis.url", "http://redis:6379"], &[], "--redis.url");
    assert_refused(&["--redis.mode", "ring"], &[], "--redis.mode");
    assert_refused(
        &["--redis.url", "redis://a:1,redis://b:2"],
        &[],
        "--redis.url",
    );
    assert_refused(
        &["--redis.mode", "sentinel", "--redis.url", "redis://a:26379"],
        &[],
        "redis.sentinel_master",
    );
    assert_refused(
        &[
            "--redis.mode",
            "cluster",
            "--redis.url",
            "redis://a:1,rediss://b:2",
        ],
        &[],
        "--redis.url",
    );
    assert_refused(
        &["--redis.sentinel-master", "mymaster"],
        &[],
        "--redis.sentinel-master",
    );
    assert_refused(
        &[],
        &[("LLMCACHE_REDIS_MODE", "ring")],
        "LLMCACHE_REDIS_MODE",
    );
    assert_refused(&["--redis.url", "not a url"], &[], "--redis.url");
    assert_refused(&["--chroma.url", "redis://chroma"], &[], "--chroma.url");
    assert_refused(
        &[],
        &[("LLMCACHE_CHROMA_URL", "http://u:p@chroma")],
        "LLMCACHE_CHROMA_URL",
    );
    assert_refused(&["--log.level", "loud"], &[], "--log.level");
    assert_refused(&[], &[("LLMCACHE_LOG_LEVEL", "loud")], "LLMCACHE_LOG_LEVEL");
    assert_refused(&["--log.format", "xml"], &[], "--log.format");
    assert_refused(
        &["--redis.password-file", "/nonexistent/pw"],
        &[],
        "--redis.password-file",
    );
    assert_refused(
        &["--chroma.token-file", "/nonexistent/tok"],
        &[],
        "--chroma.token-file",
    );
    assert_refused(
        &["--redis.tls-ca-file", "/etc/hostname"],
        &[],
        "--redis.tls-ca-file",
    );
    assert_refused(&["--path.procfs", "/nonexistent"], &[], "--path.procfs");
    assert_refused(&["--path.sysfs", "/etc/hostname"], &[], "--path.sysfs");
    assert_refused(
        &["--config.file", "/nonexistent.toml"],
        &[],
        "--config.file",
    );
    assert_refused(
        &["--web.config.file", "/etc/hostname"],
        &[],
        "--web.config.file",
    );
    assert_refused(&["--no-such-flag"], &[], "--no-such-flag");
}

#[test]
fn bad_file_values_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[redis]\ntimeout = \"soon\"\n", "redis.timeout"),
        ("[probe]\ndenied_networks = [\"10.0.0.0/33\"]\n", "probe.denied_networks"),
        (
            "[[census.redis.groups]]\nname = \"chat\"\npattern = \"a:*\"\n\
             [[census.redis.groups]]\nname = \"chat\"\npattern = \"b:*\"\n",
            "census.redis.groups",
        ),
        ("[probe]\ndenied_networks = \"127.0.0.0/8\"\n", "probe.denied_networks"),
        ("[probe.modules.m]\nprober = \"app\"\nbody_size_limit = \"huge\"\n", "probe.modules.m.body_size_limit"),
        ("[probe.modules.m]\nprober = \"redis\"\nbody_size_limit = \"2MiB\"\n", "probe.modules.m.body_size_limit"),
        ("[probe.modules.m]\nprober = \"chroma\"\nbody_size_limit = 0\n", "probe.modules.m.body_size_limit"),
        ("[redis]\nmode = \"ring\"\n", "redis.mode"),
        ("[redis]\nurl = [\"redis://a:1\", \"redis://b:2\"]\n", "redis.url"),
        ("[redis]\nurl = [\"redis://a:1\", 7]\n", "redis.url"),
        ("[redis]\nmode = \"cluster\"\nurl = []\n", "redis.url"),
        ("[redis]\ntimeout = \"0s\"\n", "redis.timeout"),
        ("[redis]\nkey_prefix = \"llm*\"\n", "redis.key_prefix"),
        ("[redis]\nurll = \"redis://x\"\n", "urll"),
        ("[nosuchtable]\nx = 1\n", "nosuchtable"),
        ("[chroma]\ncollection = \"x\"\n", "chroma.collection"),
        ("[chroma]\ntoken_header = \"cookie\"\n", "chroma.token_header"),
        ("[cache]\nmemory_budget = \"lots\"\n", "cache.memory_budget"),
        ("[cache.similarity]\nttl = \"never\"\n", "cache.similarity.ttl"),
        ("[cache.embeddings]\nshare = 1.5\n", "cache.embeddings.share"),
        ("[cache.similarity]\nshare = 0.9\n", "share"),
        ("[cache.similarity]\nmode = \"fuzzy\"\n", "cache.similarity.mode"),
        ("[cache.similarity]\ndistance_threshold = 2.5\n", "cache.similarity.distance_threshold"),
        ("[cache.similarity]\ndistance_threshold = -0.1\n", "cache.similarity.distance_threshold"),
        ("[cache.similarity]\nverify_fraction = 1.5\n", "cache.similarity.verify_fraction"),
        ("[workload]\nrecall_check_fraction = -0.5\n", "workload.recall_check_fraction"),
        ("[workload]\nwrite_visibility_timeout = \"eventually\"\n", "workload.write_visibility_timeout"),
        ("[workload]\nrate = -1.0\n", "workload.rate"),
        ("[workload]\nrate = \"fast\"\n", "workload.rate"),
        ("[workload]\nconcurrency = 0\n", "workload.concurrency"),
        ("[workload]\nsessions = -5\n", "workload.sessions"),
        ("[workload]\nzipf_exponent = 0.0\n", "workload.zipf_exponent"),
        ("[workload]\nkey_ttl = \"1 fortnight\"\n", "workload.key_ttl"),
        ("[workload.mix]\nget_chat_history = 0.0\nstore_chat_entry = 0.0\nquery_similar_memories = 0.0\nstore_memory = 0.0\n", "workload.mix"),
        ("[workload.mix]\nstore_memory = -1.0\n", "workload.mix.store_memory"),
        ("[embeddings]\nprovider = \"magic\"\n", "embeddings.provider"),
        ("[embeddings]\ndimensions = 0\n", "embeddings.dimensions"),
        ("[embeddings]\nprovider = \"openai\"\n", "embeddings.url"),
        ("[memory]\nhost_available_min_ratio = 1.5\n", "memory.host_available_min_ratio"),
        ("[memory]\npsi_some_avg10_max_ratio = -0.1\n", "memory.psi_some_avg10_max_ratio"),
        ("[memory]\nshrink_factor = 0.0\n", "memory.shrink_factor"),
        ("[memory]\nsample_interval = \"0s\"\n", "memory.sample_interval"),
        ("[memory]\nprocfs_path = \"/nonexistent\"\n", "memory.procfs_path"),
        ("[log]\nlevel = \"chatty\"\n", "log.level"),
        ("[web]\nlisten_address = \"localhost\"\n", "web.listen_address"),
        ("[census.redis]\nmemory_sample = 1.5\n", "census.redis.memory_sample"),
        ("[[census.redis.groups]]\nname = \"chat\"\npattern = \"message_store:[\"\n", "census.redis.groups"),
        ("[[census.redis.groups]]\nname = \"other\"\npattern = \"x:*\"\n", "census.redis.groups"),
        ("[census.redis]\nread_from = \"replica\"\n", "census.redis.read_from"),
        ("[probe.modules.a]\nprober = \"app\"\n[probe.modules.a.census]\n", "probe.modules.a.census"),
        ("[probe.modules.r]\nprober = \"redis\"\n[probe.modules.r.census.chroma]\ntop_collections = 3\n", "probe.modules.r.census.chroma"),
        ("[probe.modules.c]\nprober = \"chroma\"\n[probe.modules.c.census.redis]\nmax_keys_per_second = 3\n", "probe.modules.c.census.redis"),
        ("[probe.modules.r]\nprober = \"redis\"\n[probe.modules.r.census.redis]\nread_from = \"replica\"\n", "probe.modules.r.census.redis.read_from"),
        ("[census]\ninterval = \"0s\"\n[probe.modules.r]\nprober = \"redis\"\ncensus = true\n", "probe.modules.r.census"),
        ("[probe.modules.a]\nprober = \"app\"\ncensus = true\n", "probe.modules.a.census"),
        ("[census.redis]\nread_from = \"replica\"\n[canary]\nenabled = false\n[probe.modules.r]\nprober = \"redis\"\ncensus = true\n", "probe.modules.r.census"),
        ("[probe.modules.r]\nprober = \"redis\"\ncensus = \"yes\"\n", "probe.modules.r.census"),
        ("[redis\n", "--config.file"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        assert_refused(
            &["--config.file", path.to_str().unwrap(), "--check-config"],
            &[],
            key,
        );
    }
}

fn wait_for_file_containing(dir: &Path, prefix: &str, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let found = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(entry.path()).ok()?;
                (name.starts_with(prefix) && text.contains(needle)).then_some(name)
            });
        if let Some(name) = found {
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "no {prefix}* file in {} containing {needle:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn log_file_is_daily_rotated_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("logs/nested");
    let log = log_dir.join("exporter.log");
    let mut child = Command::new(binary())
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--redis.url", &format!("redis://127.0.0.1:{}", free_port())])
        .args(["--chroma.url", &format!("http://127.0.0.1:{}", free_port())])
        .args(["--log.file", log.to_str().unwrap(), "--log.format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let name = wait_for_file_containing(
        &log_dir,
        "exporter.log.",
        "\"listening\"",
        Duration::from_secs(15),
    );
    let today = name.trim_start_matches("exporter.log.");
    assert_eq!(today.len(), 10, "daily suffix YYYY-MM-DD, got {name}");
    let text = std::fs::read_to_string(log_dir.join(&name)).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap()).expect("JSON lines");
    assert!(first["level"].is_string(), "{first}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "SIGTERM exit status {status}");
    let text = std::fs::read_to_string(log_dir.join(&name)).unwrap();
    assert!(
        text.contains("SIGTERM"),
        "the stop is logged and flushed: {text}"
    );
}

#[test]
fn logfmt_is_the_default_format() {
    let child = Command::new(binary())
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--redis.url", &format!("redis://127.0.0.1:{}", free_port())])
        .args(["--chroma.url", &format!("http://127.0.0.1:{}", free_port())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr as it comes, up to the "listening" line.
    let mut child = child;
    let (lines, seen) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.contains("listening") => break line,
            Ok(_) => {}
            Err(err) => panic!("no \"listening\" line within 15 s: {err}"),
        }
    };
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    assert!(
        line.starts_with("ts=")
            && line.contains("level=info")
            && line.contains("message=listening"),
        "{line}"
    );
}

#[test]
fn census_true_in_a_module_takes_the_census_table_for_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[canary]\nenabled = false\n[census]\ninterval = \"7m\"\n\
         [census.redis]\nmax_keys_per_second = 900\nread_from = \"replica\"\n\
         [[census.redis.groups]]\nname = \"chat\"\npattern = \"message_store:*\"\n\
         [census.chroma]\ntop_collections = 3\n\
         [probe.modules.r]\nprober = \"redis\"\nmode = \"cluster\"\ncensus = true\n\
         [probe.modules.c]\nprober = \"chroma\"\ncensus = true\n\
         [probe.modules.off]\nprober = \"redis\"\ncensus = false\n",
    )
    .unwrap();
    let out = run(
        &["--check-config", "--config.file", path.to_str().unwrap()],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: toml::Table = stdout.parse().unwrap();
    let modules = &parsed["probe"]["modules"];
    let redis = &modules["r"]["census"];
    assert_eq!(redis["interval"].as_str(), Some("7m"));
    assert_eq!(
        redis["redis"]["max_keys_per_second"].as_integer(),
        Some(900)
    );
    assert_eq!(redis["redis"]["read_from"].as_str(), Some("replica"));
    assert_eq!(
        redis["redis"]["groups"][0]["pattern"].as_str(),
        Some("message_store:*")
    );
    assert_eq!(
        redis["chroma"]["top_collections"].as_integer(),
        Some(20),
        "only its store's"
    );
    let chroma = &modules["c"]["census"];
    assert_eq!(chroma["chroma"]["top_collections"].as_integer(), Some(3));
    assert_eq!(
        chroma["redis"]["max_keys_per_second"].as_integer(),
        Some(5000)
    );
    assert!(modules["off"].get("census").is_none(), "{stdout}");
}

#[test]
fn the_example_config_is_valid_and_matches_the_defaults() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.toml");
    let with_file = run(&["--check-config", "--config.file", example], &[]);
    assert!(
        with_file.status.success(),
        "{}",
        String::from_utf8_lossy(&with_file.stderr)
    );
    let defaults = run(&["--check-config"], &[]);
    let strip = |out: &Output| -> String {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&with_file),
        strip(&defaults),
        "examples/config.toml drifted from the defaults"
    );
}
