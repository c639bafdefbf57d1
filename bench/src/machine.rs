//! What machine the numbers were taken on: cores, CPU model, kernel, memory, load.
//!
//! Everything is read from `/proc`; a missing file gives "unknown", never an error, since
//! the description is informative only.

use std::fs;

/// A description of the machine for the report header.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs this process may use (what `nproc` prints).
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// `MemTotal` from `/proc/meminfo`, e.g. `24.0 GiB RAM`.
    pub memory: String,
}

impl Machine {
    /// Reads the machine description.
    pub fn detect() -> Machine {
        let nproc = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .map_or_else(
                || "unknown RAM".to_string(),
                |kb| format!("{:.1} GiB RAM", kb / 1024.0 / 1024.0),
            );
        Machine {
            nproc,
            cpu_model,
            kernel,
            memory,
        }
    }
}

/// The 1-minute load average, if readable.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
