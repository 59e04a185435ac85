//! Every accepted and rejected spelling of the settings' values.
use super::*;

#[test]
fn byte_sizes_accept_binary_and_decimal_units() {
    assert_eq!(parse_byte_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_byte_size("1KB"), Ok(1000));
    assert_eq!(parse_byte_size("1.5GiB"), Ok(3 << 29));
    assert_eq!(parse_byte_size("4096"), Ok(4096));
    assert_eq!(parse_byte_size(" 0 "), Ok(0));
    assert_eq!(parse_byte_size("10 MiB"), Ok(10 << 20));
}

#[test]
fn byte_sizes_reject_nonsense() {
    for bad in ["", "lots", "64XB", "-1MiB", "1..2MiB", "MiB", "1e400GiB"] {
        assert!(parse_byte_size(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn byte_sizes_round_trip_through_format() {
    for bytes in [0, 1, 1023, 1024, 64 << 20, 3 << 30, 1_000_000] {
        assert_eq!(parse_byte_size(&format_byte_size(bytes)), Ok(bytes));
    }
}

#[test]
fn durations_use_humantime_syntax() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("5").is_err());
}

#[test]
fn listen_address_accepts_prometheus_spellings() {
    let parse = parse_listen_address;
    assert_eq!(parse(":9860").unwrap().port(), 9860);
    assert_eq!(parse("127.0.0.1:0").unwrap().port(), 0);
    assert!(parse("[::1]:9860").unwrap().is_ipv6());
    assert!(parse("9860").is_err());
    assert!(parse("nowhere:port").is_err());
}

#[test]
fn redis_urls_split_off_the_password_and_keep_the_rest() {
    let url = RedisUrl::parse("rediss://probe:p%40ss@[::1]:6380/2").unwrap();
    assert_eq!(url.url.as_str(), "rediss://probe@[::1]:6380/2");
    assert_eq!(url.password.as_ref().map(Secret::expose), Some("p@ss"));
    assert_eq!(url.username.as_deref(), Some("probe"));
    assert_eq!(
        (url.host.as_str(), url.port, url.db, url.tls),
        ("::1", 6380, 2, true)
    );
    assert_eq!(url.endpoint(), "[::1]:6380");
    for bad in ["http://x", "redis://", "redis://x/abc", "not a url"] {
        assert!(RedisUrl::parse(bad).is_err(), "{bad:?} was accepted");
    }
    let list = RedisUrls::parse("redis://a:1, redis://b:2,".split(',')).unwrap();
    assert_eq!(list.0.len(), 2);
    assert_eq!(list.0[1].endpoint(), "b:2");
    assert!(RedisUrls::parse(" ,".split(',')).is_err());
    let err = RedisUrl::parse("http://u:hunter2@x").unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn key_prefix_refuses_globs() {
    assert!(check_key_prefix("llmcache:probe:").is_ok());
    for bad in ["", "*", "llm*", "a?b", "x[ab]", "back\\slash"] {
        assert!(check_key_prefix(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn chroma_names_follow_chromas_rule() {
    assert!(check_chroma_name("llmcache_probe_memories").is_ok());
    for bad in ["ab", "-abc", "abc-", "a b c", "ünï"] {
        assert!(check_chroma_name(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn http_urls_gain_a_trailing_slash_and_lose_nothing_else() {
    let url = HttpUrl::parse("http://chroma:8000/prefix").unwrap();
    assert_eq!(url.0.as_str(), "http://chroma:8000/prefix/");
    assert!(HttpUrl::parse("http://u:p@chroma:8000").is_err());
    assert!(HttpUrl::parse("ftp://chroma").is_err());
}
