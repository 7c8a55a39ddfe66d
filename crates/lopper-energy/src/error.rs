use std::path::PathBuf;

/// Errors of lopper-energy. Each says which meter failed and why, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NVML could not be loaded or queried (no NVIDIA driver, no device, unsupported counter).
    #[error("NVML unavailable: {0}")]
    NvmlUnavailable(String),
    /// No RAPL powercap domains under the given root (not an Intel/AMD host with powercap, or a VM).
    #[error("RAPL unavailable: {0}")]
    RaplUnavailable(String),
    /// A RAPL counter exists but cannot be read (since Linux 5.10 `energy_uj` is root-only).
    #[error("RAPL counter {} unreadable: {source} (energy_uj is readable by root only since Linux 5.10; try `sudo chmod o+r` on it)", path.display())]
    RaplPermission {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A counter file holds something that is not a number.
    #[error("{}: malformed counter value {value:?}", path.display())]
    Malformed { path: PathBuf, value: String },
    /// The measured window is shorter than the counter's update period allows.
    #[error(
        "{meter}: window of {elapsed_ms:.1} ms is shorter than the counter's minimum {min_ms:.0} ms (it updates every 20-100 ms); measure a longer window"
    )]
    WindowTooShort {
        meter: &'static str,
        elapsed_ms: f64,
        min_ms: f64,
    },
    /// `stop` without `start`, or a bad configuration value.
    #[error("{meter}: {detail}")]
    Usage { meter: &'static str, detail: String },
    /// Writing or reading a report failed.
    #[error("report: {0}")]
    Report(String),
}

/// `Result` with lopper-energy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
