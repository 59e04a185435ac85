//! Property tests: whatever Redis, the kernel, a config file or a web config
//! file hands the parsers, they return a value or an error and never panic.
//! Inputs are both arbitrary text and text shaped like the real thing with
//! hostile values in it, which reaches deeper than random bytes do.

use std::path::PathBuf;

use proptest::prelude::*;

use crate::backends::redis::info::parse_info;
use crate::backends::redis::topology::parse_cluster_nodes;
use crate::config::Config;
use crate::memory::sources::{parse_cgroup_value, parse_meminfo, parse_psi, parse_self_cgroup};

/// A fixed word, as a `String` strategy that mixes with regex strategies.
fn w(word: &str) -> Just<String> {
    Just(word.to_owned())
}

/// Numbers as the kernel and Redis print them, and ways they go wrong.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        w("max"),
        w(""),
        w("18446744073709551616"),
        w("-0"),
        w("NaN"),
        "[0-9a-z.:=-]{0,12}",
    ]
}

fn lines(line: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

/// TOML values of every type, including ones no key accepts.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| {
            if f.is_nan() {
                "nan".to_owned()
            } else if f.is_infinite() {
                if f > 0.0 { "inf" } else { "-inf" }.to_owned()
            } else {
                format!("{f:?}")
            }
        }),
        any::<bool>().prop_map(|b| b.to_string()),
        ".{0,24}".prop_map(|s| format!("{s:?}")),
        "[0-9]{1,20}(ns|us|ms|s|m|h|d|B|KiB|MiB|GiB|TiB|KB|MB)".prop_map(|s| format!("{s:?}")),
        w("[]"),
        w("{}"),
    ]
}

/// Every `(table, key)` the example config has.
fn example_keys() -> Vec<(String, String)> {
    let example = include_str!("../examples/config.toml");
    let mut table = String::new();
    let mut keys = Vec::new();
    for line in example.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.to_owned();
        } else if let Some((key, _)) = line.split_once('=') {
            keys.push((table.clone(), key.trim().to_owned()));
        }
    }
    keys
}

fn write_temp(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cluster_nodes_parser_takes_anything(text in lines(
        (".{0,12}", prop_oneof![w("127.0.0.1:7000@17000"), w(":0@0"), ".{0,10}"],
         prop_oneof![w("master"), w("myself,master"), w("slave,fail"), ".{0,8}"],
         prop_oneof![w("0-5460"), w("16000"), w("[1->-x]"), w("9-"), ".{0,6}"])
            .prop_map(|(id, addr, flags, slots)| format!("{id} {addr} {flags} - 0 0 1 connected {slots}"))
    ), raw in ".{0,300}") {
        let _ = parse_cluster_nodes(&text);
        let _ = parse_cluster_nodes(&raw);
    }

    #[test]
    fn info_parser_takes_anything(text in ".{0,400}") {
        let _ = parse_info(&text);
    }

    #[test]
    fn info_parser_takes_hostile_values(text in lines(
        (prop_oneof![
            w("used_memory"), w("maxmemory"), w("redis_version"),
            w("connected_clients"), w("mem_fragmentation_ratio"), w("# Memory"),
        ], number()).prop_map(|(k, v)| format!("{k}:{v}\r"))
    )) {
        let _ = parse_info(&text);
    }

    #[test]
    fn meminfo_parser_takes_anything(text in lines(
        (prop_oneof![w("MemTotal:"), w("MemAvailable:"), w("MemFree:"), "[A-Za-z:]{0,8}"],
         number(), prop_oneof![w(" kB"), w(""), w(" MB")])
            .prop_map(|(k, v, unit)| format!("{k} {v}{unit}"))
    ), raw in ".{0,200}") {
        let _ = parse_meminfo(&text);
        let _ = parse_meminfo(&raw);
    }

    #[test]
    fn cgroup_parsers_take_anything(text in lines(
        (number(), prop_oneof![w(""), w("memory"), w("cpu,memory"), "[a-z,=]{0,10}"], ".{0,20}")
            .prop_map(|(id, controllers, path)| format!("{id}:{controllers}:{path}"))
    ), value in prop_oneof![number(), ".{0,30}"]) {
        let _ = parse_self_cgroup(&text);
        let _ = parse_cgroup_value(&value);
    }

    #[test]
    fn psi_parser_takes_anything(text in lines(
        (prop_oneof![w("some"), w("full"), "[a-z]{0,5}"], prop::collection::vec(
            (prop_oneof![w("avg10"), w("avg60"), w("avg300"), w("total"), "[a-z0-9]{0,5}"], number())
                .prop_map(|(k, v)| format!("{k}={v}")), 0..6))
            .prop_map(|(kind, fields)| format!("{kind} {}", fields.join(" ")))
    ), raw in ".{0,200}") {
        let _ = parse_psi(&text);
        let _ = parse_psi(&raw);
    }

    #[test]
    fn value_parsers_take_anything(text in ".{0,40}") {
        let _ = crate::config::values::parse_byte_size(&text);
        let _ = crate::config::values::parse_duration(&text);
    }

    #[test]
    fn config_loader_takes_any_file(text in ".{0,300}") {
        let (_dir, path) = write_temp(&text);
        let _ = Config::from_args(["x", "--config.file", path.to_str().unwrap()]);
    }

    #[test]
    fn config_loader_takes_any_value_for_any_key(
        assignments in prop::collection::vec((any::<prop::sample::Index>(), toml_value()), 1..8)
    ) {
        let keys = example_keys();
        let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (index, value) in assignments {
            let (table, key) = index.get(&keys);
            tables.entry(table.clone()).or_default().push(format!("{key} = {value}"));
        }
        let text: String = tables
            .iter()
            .map(|(table, lines)| format!("[{table}]\n{}\n", lines.join("\n")))
            .collect();
        let (_dir, path) = write_temp(&text);
        let _ = Config::from_args(["x", "--config.file", path.to_str().unwrap()]);
    }

    #[test]
    fn config_loader_takes_any_flag_value(
        flag in prop::sample::select(vec![
            "--web.listen-address", "--redis.url", "--chroma.url", "--log.level", "--log.format",
            "--redis.password-file", "--chroma.token-file", "--redis.tls-ca-file",
            "--path.procfs", "--web.config.file",
        ]),
        value in ".{0,60}",
    ) {
        let _ = Config::from_args(["x", flag, &value]);
    }

    #[test]
    fn web_config_loader_takes_any_file(text in prop_oneof![
        ".{0,200}",
        (prop_oneof![w("tls_server_config"), w("basic_auth_users"), w("http_server_config")],
         prop_oneof![w("cert_file"), w("key_file"), w("client_auth_type"), w("min_version"), w("alice")],
         ".{0,20}")
            .prop_map(|(table, key, value)| format!("{table}:\n  {key}: {value:?}\n")),
    ]) {
        let (_dir, path) = write_temp(&text);
        let _ = Config::from_args(["x", "--web.config.file", path.to_str().unwrap()]);
    }
}
