//! Parsing `INFO` output. Pure, so it is tested on literal text.

/// The fields of `INFO` the exporter uses. A field Redis did not report (an
/// older server, a restricted build) is `None`, never a made-up zero.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RedisInfo {
    pub(crate) redis_version: Option<String>,
    pub(crate) used_memory: Option<u64>,
    /// 0 means no limit, as Redis reports it.
    pub(crate) maxmemory: Option<u64>,
    pub(crate) keyspace_hits: Option<u64>,
    pub(crate) keyspace_misses: Option<u64>,
    pub(crate) evicted_keys: Option<u64>,
    /// Replicas attached to this node.
    pub(crate) connected_slaves: Option<u64>,
    pub(crate) connected_clients: Option<u64>,
    /// `master` or `slave`, as INFO spells it.
    pub(crate) role: Option<String>,
    pub(crate) maxmemory_policy: Option<String>,
    /// `errorstat_CODE:count=N`: the error replies this node sent to every
    /// client since it started (or `CONFIG RESETSTAT`), by code.
    pub(crate) errorstats: Vec<(String, u64)>,
}

fn word(value: &str) -> Option<String> {
    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Parses `INFO` text: `# Section` headers, `field:value` lines, `\r\n` or
/// `\n` line ends. Unknown fields and malformed lines are skipped.
pub(crate) fn parse_info(text: &str) -> RedisInfo {
    let mut info = RedisInfo::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') {
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let number = || value.trim().parse::<u64>().ok();
        match field.trim() {
            "redis_version" => info.redis_version = word(value),
            "used_memory" => info.used_memory = number(),
            "maxmemory" => info.maxmemory = number(),
            "keyspace_hits" => info.keyspace_hits = number(),
            "keyspace_misses" => info.keyspace_misses = number(),
            "evicted_keys" => info.evicted_keys = number(),
            "connected_slaves" => info.connected_slaves = number(),
            "connected_clients" => info.connected_clients = number(),
            "role" => info.role = word(value),
            "maxmemory_policy" => info.maxmemory_policy = word(value),
            field => {
                if let Some(code) = field.strip_prefix("errorstat_") {
                    let count = value
                        .split(',')
                        .find_map(|part| part.trim().strip_prefix("count="))
                        .and_then(|n| n.parse().ok());
                    if let Some(count) = count {
                        info.errorstats.push((code.to_owned(), count));
                    }
                }
            }
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\n\r\n# Stats\r\nkeyspace_hits:42\r\nkeyspace_misses:7\r\nevicted_keys:3\r\n\r\n# Clients\r\nconnected_clients:3\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\r\n# Errorstats\r\nerrorstat_ERR:count=4\r\nerrorstat_OOM:count=12\r\nerrorstat_WRONGTYPE:count=1\r\n";

    #[test]
    fn parses_the_fields_we_export_from_crlf_text() {
        let info = parse_info(INFO);
        assert_eq!(
            info,
            RedisInfo {
                redis_version: Some("7.0.15".into()),
                used_memory: Some(1_048_576),
                maxmemory: Some(0),
                keyspace_hits: Some(42),
                keyspace_misses: Some(7),
                evicted_keys: Some(3),
                connected_slaves: Some(2),
                connected_clients: Some(3),
                role: Some("master".into()),
                maxmemory_policy: Some("noeviction".into()),
                errorstats: vec![
                    ("ERR".into(), 4),
                    ("OOM".into(), 12),
                    ("WRONGTYPE".into(), 1)
                ],
            }
        );
    }

    #[test]
    fn plain_newlines_work_too() {
        let info = parse_info(&INFO.replace("\r\n", "\n"));
        assert_eq!(info.used_memory, Some(1_048_576));
        assert_eq!(info.evicted_keys, Some(3));
    }

    #[test]
    fn missing_fields_stay_none() {
        let info = parse_info("# Memory\r\nused_memory:100\r\n");
        assert_eq!(info.used_memory, Some(100));
        assert_eq!(info.maxmemory, None);
        assert_eq!(info.keyspace_hits, None);
        assert_eq!(info.redis_version, None);
    }

    #[test]
    fn malformed_lines_are_skipped_not_fatal() {
        let info = parse_info(
            "garbage\nused_memory:lots\nmaxmemory:-1\n:\nkeyspace_hits:5\nused_memory_peak:9\n",
        );
        assert_eq!(info.used_memory, None);
        assert_eq!(info.maxmemory, None);
        assert_eq!(info.keyspace_hits, Some(5));
    }

    #[test]
    fn empty_text_is_empty_info() {
        assert_eq!(parse_info(""), RedisInfo::default());
    }
}
