//! Parsers for the files the memory monitor reads. Each is a pure function on
//! the file's text, tested on literal contents; the monitor does the reading.

use std::path::{Path, PathBuf};

/// A file that does not say what it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ParseError(String);

/// `MemTotal` and `MemAvailable` from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostMemory {
    pub(crate) total: u64,
    pub(crate) available: u64,
}

/// Parses `/proc/meminfo` (`Name:   123 kB` lines).
pub(crate) fn parse_meminfo(text: &str) -> Result<HostMemory, ParseError> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            match parts.next() {
                Some("kB") => value.checked_mul(1024),
                None => Some(value),
                Some(_) => None,
            }
        })
    };
    let total = field("MemTotal").ok_or_else(|| ParseError("meminfo has no MemTotal".into()))?;
    let available =
        field("MemAvailable").ok_or_else(|| ParseError("meminfo has no MemAvailable".into()))?;
    if total == 0 {
        return Err(ParseError("meminfo says MemTotal is 0".into()));
    }
    Ok(HostMemory { total, available })
}

/// Where the daemon's memory cgroup lives, from `/proc/self/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupPath {
    /// cgroup v2: `0::/path`.
    V2(String),
    /// cgroup v1: the `memory` controller's line, `N:memory:/path`.
    V1(String),
}

/// Parses `/proc/self/cgroup`. A v1 memory controller line wins over the v2
/// line (hybrid hosts mount memory on v1).
pub(crate) fn parse_self_cgroup(text: &str) -> Result<CgroupPath, ParseError> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Ok(CgroupPath::V1(path.to_owned()));
        }
        if controllers.is_empty() {
            v2 = Some(CgroupPath::V2(path.to_owned()));
        }
    }
    v2.ok_or_else(|| ParseError("no memory cgroup in /proc/self/cgroup".into()))
}

impl CgroupPath {
    /// The directory holding the cgroup's memory files under `sysfs`.
    pub(crate) fn dir(&self, sysfs: &Path) -> PathBuf {
        let (base, path) = match self {
            Self::V2(path) => (sysfs.join("fs/cgroup"), path),
            Self::V1(path) => (sysfs.join("fs/cgroup/memory"), path),
        };
        let relative = path.trim_start_matches('/');
        if relative.is_empty() {
            base
        } else {
            base.join(relative)
        }
    }

    /// The usage and limit file names.
    pub(crate) fn files(&self) -> (&'static str, &'static str) {
        match self {
            Self::V2(_) => ("memory.current", "memory.max"),
            Self::V1(_) => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
        }
    }
}

/// v1 reports "no limit" as a huge number near `i64::MAX` rounded down to a
/// page; anything from 2^62 up is treated as no limit.
const V1_NO_LIMIT: u64 = 1 << 62;

/// Parses a cgroup memory value: bytes, or `max` (v2) / the v1 sentinel for
/// no limit (`None`).
pub(crate) fn parse_cgroup_value(text: &str) -> Result<Option<u64>, ParseError> {
    let text = text.trim();
    if text == "max" {
        return Ok(None);
    }
    let value: u64 = text
        .parse()
        .map_err(|_| ParseError(format!("{text:?} is not a byte count")))?;
    Ok((value < V1_NO_LIMIT).then_some(value))
}

/// One PSI line's averages as 0–1 ratios: 10 s, 60 s, 300 s.
pub(crate) type PsiAverages = [f64; 3];

/// `/proc/pressure/memory` or a cgroup's `memory.pressure`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Psi {
    pub(crate) some: PsiAverages,
    pub(crate) full: Option<PsiAverages>,
}

/// Parses PSI text: `some avg10=0.12 avg60=0.05 avg300=0.01 total=123`, and
/// optionally a `full` line. Percentages become ratios.
pub(crate) fn parse_psi(text: &str) -> Result<Psi, ParseError> {
    let line = |kind: &str| -> Option<Result<PsiAverages, ParseError>> {
        let rest = text
            .lines()
            .find_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))?;
        let mut averages = [None; 3];
        for pair in rest.split_whitespace() {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let slot = match key {
                "avg10" => 0,
                "avg60" => 1,
                "avg300" => 2,
                _ => continue,
            };
            averages[slot] = value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| v / 100.0);
        }
        Some(match averages {
            [Some(a), Some(b), Some(c)] => Ok([a, b, c]),
            _ => Err(ParseError(format!("malformed PSI {kind} line"))),
        })
    };
    let some = line("some").ok_or_else(|| ParseError("no PSI some line".into()))??;
    let full = line("full").transpose()?;
    Ok(Psi { some, full })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_in_kilobytes() {
        let text = "MemTotal:       16318504 kB\nMemFree:         1234567 kB\nMemAvailable:    8159252 kB\nBuffers:          123456 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Ok(HostMemory {
                total: 16_318_504 * 1024,
                available: 8_159_252 * 1024
            })
        );
    }

    #[test]
    fn meminfo_variants_and_malformed_files() {
        // An old kernel without MemAvailable is an error, not a guess.
        assert!(parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\n").is_err());
        assert!(parse_meminfo("").is_err());
        assert!(parse_meminfo("MemTotal: lots kB\nMemAvailable: 1 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB\n").is_err());
        // Without a unit the value is taken as bytes.
        assert_eq!(
            parse_meminfo("MemTotal: 2048\nMemAvailable: 1024\n")
                .unwrap()
                .available,
            1024
        );
        // MemTotalX is not MemTotal.
        assert!(parse_meminfo("MemTotalX: 1 kB\nMemAvailable: 1 kB\n").is_err());
    }

    #[test]
    fn cgroup_v2_paths_including_nested_and_root() {
        let path = parse_self_cgroup("0::/system.slice/docker-abc.scope\n").unwrap();
        assert_eq!(
            path,
            CgroupPath::V2("/system.slice/docker-abc.scope".into())
        );
        assert_eq!(
            path.dir(Path::new("/sys")),
            Path::new("/sys/fs/cgroup/system.slice/docker-abc.scope")
        );
        assert_eq!(
            parse_self_cgroup("0::/\n").unwrap().dir(Path::new("/sys")),
            Path::new("/sys/fs/cgroup")
        );
        assert_eq!(path.files(), ("memory.current", "memory.max"));
    }

    #[test]
    fn cgroup_v1_memory_controller_wins() {
        let text = "12:pids:/user.slice\n7:cpu,cpuacct:/user.slice\n5:memory:/kubepods/burstable/pod1/abc\n0::/user.slice\n";
        let path = parse_self_cgroup(text).unwrap();
        assert_eq!(path, CgroupPath::V1("/kubepods/burstable/pod1/abc".into()));
        assert_eq!(
            path.dir(Path::new("/x")),
            Path::new("/x/fs/cgroup/memory/kubepods/burstable/pod1/abc")
        );
        assert_eq!(
            path.files(),
            ("memory.usage_in_bytes", "memory.limit_in_bytes")
        );
        assert!(parse_self_cgroup("garbage\n1:cpu:/\n").is_err());
    }

    #[test]
    fn cgroup_limits_max_and_the_v1_sentinel_mean_none() {
        assert_eq!(parse_cgroup_value("max\n"), Ok(None));
        assert_eq!(parse_cgroup_value("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_cgroup_value("536870912\n"), Ok(Some(536_870_912)));
        assert!(parse_cgroup_value("-1").is_err());
        assert!(parse_cgroup_value("").is_err());
    }

    #[test]
    fn psi_lines_become_ratios() {
        let text = "some avg10=12.50 avg60=5.00 avg300=1.00 total=123456\nfull avg10=2.00 avg60=1.00 avg300=0.00 total=456\n";
        let psi = parse_psi(text).unwrap();
        assert_eq!(psi.some, [0.125, 0.05, 0.01]);
        assert_eq!(psi.full, Some([0.02, 0.01, 0.0]));
        // Older kernels have no full line for some resources.
        assert_eq!(
            parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
                .unwrap()
                .full,
            None
        );
        assert!(parse_psi("some avg10=x avg60=0 avg300=0\n").is_err());
        assert!(parse_psi("").is_err());
        assert!(parse_psi("full avg10=1 avg60=1 avg300=1 total=1\n").is_err());
    }
}
