//! The `llm-cache-exporter` binary: parse the configuration, install logging,
//! build the [`App`] and run it until SIGINT or SIGTERM, reloading on SIGHUP.

use std::ffi::OsString;
use std::process::ExitCode;

use llm_cache_exporter::{telemetry, App, Config, ConfigError, Mode};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invocation = match Config::from_args(args.clone()) {
        Ok(invocation) => invocation,
        Err(ConfigError::Usage(err)) => {
            // --help and --version exit 0; a malformed command line exits 2.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
        Err(err) => {
            eprintln!("llm-cache-exporter: {err}");
            return ExitCode::from(2);
        }
    };
    let config = invocation.config;
    // The one TLS provider for every client and the server.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if invocation.mode == Mode::CheckConfig {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let _guard = match telemetry::init(&config) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("llm-cache-exporter: cannot set up logging: {err}");
            return ExitCode::from(2);
        }
    };
    // One worker: the canary's work is a few operations a second, and on a
    // busy host a second worker cost more in cross-thread wakeups than it
    // bought (scripts/bench-workload.sh: 24.6 µs of CPU per operation with
    // two, 19.3 µs with one). TOKIO_WORKER_THREADS overrides it.
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    if invocation.mode == Mode::Once {
        return match runtime.block_on(App::once(config)) {
            Ok(outcome) => {
                println!("{}", outcome.report);
                if outcome.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "--once failed");
                ExitCode::FAILURE
            }
        };
    }
    runtime.spawn(release_freed_memory());
    let result = runtime.block_on(async {
        // A reload reads the same flags and env, and the file again.
        let source = Box::new(move || Config::from_args(args.clone()).map(|i| i.config));
        // Handlers first: a signal that arrives as soon as the daemon says
        // it listens must stop it cleanly, not kill it.
        let shutdown = shutdown_signal();
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let app = App::build(config, source).await?;
        tokio::spawn(reload_on_hangup(hangup, app.reload_handle()));
        app.run(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

/// How often freed memory is handed back to the system.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Hands memory freed after a burst (a flood of connections, an outage's
/// backlog) back to the system. glibc's allocator keeps freed pages in its
/// arenas unless they sit at the top of the heap, so without this RSS stays
/// at the burst's high-water mark; measured with valgrind's massif, the heap
/// itself is back at its baseline. On a small heap the walk takes
/// microseconds.
async fn release_freed_memory() {
    let mut every = tokio::time::interval(TRIM_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim takes no pointer and glibc serialises it with
        // every other allocator call; it only returns free pages.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Reloads on every SIGHUP. The outcome is logged by the app.
async fn reload_on_hangup(
    hangup: std::io::Result<tokio::signal::unix::Signal>,
    handle: llm_cache_exporter::ReloadHandle,
) {
    let Ok(mut hangup) = hangup else {
        tracing::error!("cannot install the SIGHUP handler; reload with POST /-/reload");
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!(signal = "SIGHUP", "reloading");
        let _ = handle.reload().await;
    }
}

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on the
/// first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "stopping"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
        }
    }
}
