//! The standard `process_*` metrics, read through `sysinfo` at scrape time:
//! a refresh of one process reads a few `/proc/self` files, cheap and
//! synchronous, so there is nothing to cache. They always come from the
//! real `/proc`, not `--path.procfs`, which only redirects the memory
//! monitor.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// This process, as `sysinfo` last read it.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    pid: Option<Pid>,
    /// `None` where sysinfo cannot read this platform.
    system: Option<Mutex<System>>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self {
            pid: sysinfo::get_current_pid().ok(),
            system: System::new().ok().map(Mutex::new),
        }
    }
}

/// What one refresh read.
struct Reading {
    resident: u64,
    virtual_memory: u64,
    cpu_seconds: f64,
    start_time: u64,
    open_fds: Option<usize>,
    max_fds: Option<usize>,
}

impl ProcessCollector {
    fn read(&self) -> Option<Reading> {
        let pid = self.pid?;
        let mut system = self
            .system
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let refresh = ProcessRefreshKind::nothing().with_memory().with_cpu();
        system.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), false, refresh);
        let process = system.process(pid)?;
        Some(Reading {
            resident: process.memory(),
            virtual_memory: process.virtual_memory(),
            cpu_seconds: process.accumulated_cpu_time() as f64 / 1000.0,
            start_time: process.start_time(),
            open_fds: process.open_files(),
            max_fds: process.open_files_limit(),
        })
    }

    /// The daemon's resident memory in bytes, for the memory monitor's logs.
    pub(crate) fn resident_bytes(&self) -> Option<u64> {
        self.read().map(|reading| reading.resident)
    }
}

/// Emits `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds` and
/// `process_start_time_seconds`. What cannot be read drops its series.
impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(reading) = self.read() else {
            return Ok(());
        };
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Some(reading.resident as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Some(reading.virtual_memory as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Some(reading.start_time as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                reading.open_fds.map(|n| n as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                reading.max_fds.map(|n| n as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(value).encode(metric)?;
            }
        }
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(reading.cpu_seconds).encode(metric)
    }
}
