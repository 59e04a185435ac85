//! Keys are bytes: names that are not UTF-8 (binary session ids) are
//! counted like any other, and groups match them as Redis's own `SCAN
//! MATCH` does, Redis being the oracle.

use std::collections::HashSet;
use std::time::Duration;

use crate::census::CONFIG;
use crate::helpers::{metric_value, series, spawn_app_with_config, ChromaServer, RedisServer};

/// Every key `pattern` matches, as Redis answers `SCAN MATCH`.
fn redis_matches(conn: &mut redis::Connection, pattern: &str) -> HashSet<Vec<u8>> {
    let mut found = HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .unwrap();
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_key_names_are_counted_and_grouped_as_redis_matches_them() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: &[&[u8]] = &[
        b"message_store:\xff\xfe",
        b"message_store:ok",
        b"message_store:\xc3\x28",
        b"session:\x00\x01",
        b"session:\n",
        b"session:ab",
        b"blob:{x}",
        b"blob:[1]",
        b"blob:x}",
        b"m?x",
        b"mzx",
        b"\xc3\x28",
        b"\xff",
        b"plain",
        b"back\\slash",
    ];
    for key in keys {
        let _: () = redis::cmd("SET")
            .arg(*key)
            .arg("v")
            .query(&mut conn)
            .unwrap();
    }
    // Patterns that Redis and a path glob read differently: braces, a
    // negated class, escapes, `?` on a byte that is not a character.
    let patterns = [
        ("braces", "blob:{x}"),
        ("escaped", "blob:\\\\[1\\\\]"),
        ("brace_end", "blob:*}"),
        ("question", "m\\\\?x"),
        ("one_byte", "session:?"),
        ("negated", "message_store:[^o]*"),
        ("chat", "message_store:*"),
        ("short", "?"),
        ("back", "back\\\\\\\\slash"),
        ("sessions", "session:*"),
    ];
    let mut groups = String::new();
    for (name, pattern) in patterns {
        groups.push_str(&format!(
            "[[census.redis.groups]]\nname = \"{name}\"\npattern = \"{pattern}\"\n"
        ));
    }
    let config = CONFIG
        .split("[[census.redis.groups]]")
        .next()
        .unwrap()
        .to_owned()
        + &groups;
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config).await;
    // The oracle: each key in the first group whose pattern Redis matches it
    // with (the pattern as TOML decodes it).
    let mut expected = vec![0u64; patterns.len()];
    let mut claimed: HashSet<Vec<u8>> = HashSet::new();
    for (i, (_, pattern)) in patterns.iter().enumerate() {
        let pattern = pattern.replace("\\\\", "\\");
        for key in redis_matches(&mut conn, &pattern) {
            if claimed.insert(key) {
                expected[i] += 1;
            }
        }
    }
    assert!(
        expected.iter().all(|n| *n > 0),
        "every pattern matches: {expected:?}"
    );
    let chat_keys = r#"llmcache_census_redis_keys{group="chat"}"#;
    app.wait_for_at_least(chat_keys, 0.0, Duration::from_secs(30))
        .await;
    let text = app.metrics().await;
    assert!(
        metric_value(
            &text,
            r#"llmcache_census_last_success_timestamp_seconds{store="redis"}"#
        )
        .is_some(),
        "no pass succeeded:\n{text}"
    );
    for ((name, pattern), want) in patterns.iter().zip(&expected) {
        let got = series(
            &text,
            &format!("llmcache_census_redis_keys{{group=\"{name}\"}}"),
        );
        assert_eq!(got, *want as f64, "group {name} ({pattern})");
    }
    let all: f64 = text
        .lines()
        .filter(|l| l.starts_with("llmcache_census_redis_keys{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(all, keys.len() as f64, "every key counted once");
    assert_eq!(
        series(&text, "llmcache_census_redis_db_keys"),
        keys.len() as f64
    );
    app.stop().await;
}
