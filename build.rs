//! Stamps `llmcache_build_info` with the git revision and the rustc version.
//! `LLMCACHE_BUILD_REVISION` overrides the revision (for builds without .git).

use std::process::Command;

fn main() {
    let revision = std::env::var("LLMCACHE_BUILD_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LLMCACHE_BUILD_REVISION={revision}");
    println!("cargo:rustc-env=LLMCACHE_RUSTC_VERSION={rustc_version}");
    println!("cargo:rerun-if-env-changed=LLMCACHE_BUILD_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}
