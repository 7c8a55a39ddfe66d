//! The [`EnergyMeter`] trait, [`Measurement`], [`Method`] and the [`best_available`] selection.
use crate::{EstimateMeter, NvmlMeter, RaplMeter, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// How an energy figure was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The GPU's total-energy counter read through NVML (measured).
    Nvml,
    /// Linux powercap RAPL counters, package + dram (measured).
    Rapl,
    /// Estimate: CPU-seconds x configured watts per core.
    EstimateCpuTime,
    /// Estimate: FLOPs x configured joules per FLOP.
    EstimateFlops,
    /// A sum of figures obtained by different methods.
    Mixed,
}

impl Method {
    /// True for the estimates (and for mixtures, which contain at least one unmeasured part unless
    /// all parts were measured; treat them as estimates to stay on the safe side).
    pub fn is_estimate(self) -> bool {
        !matches!(self, Method::Nvml | Method::Rapl)
    }

    /// The method of a sum of figures: the common one, or [`Method::Mixed`].
    pub fn combine(a: Method, b: Method) -> Method {
        if a == b { a } else { Method::Mixed }
    }

    /// Short machine-readable label (`nvml`, `rapl`, `estimate-cpu-time`, ...), as in JSON and CSV.
    pub fn label(self) -> &'static str {
        match self {
            Method::Nvml => "nvml",
            Method::Rapl => "rapl",
            Method::EstimateCpuTime => "estimate-cpu-time",
            Method::EstimateFlops => "estimate-flops",
            Method::Mixed => "mixed",
        }
    }

    /// Parses a [`Method::label`].
    pub fn from_label(s: &str) -> Option<Method> {
        [
            Method::Nvml,
            Method::Rapl,
            Method::EstimateCpuTime,
            Method::EstimateFlops,
            Method::Mixed,
        ]
        .into_iter()
        .find(|m| m.label() == s)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Method::Nvml => "measured (NVML GPU energy counter)",
            Method::Rapl => "measured (RAPL powercap counters)",
            Method::EstimateCpuTime => "estimate (CPU-seconds x watts per core)",
            Method::EstimateFlops => "estimate (FLOPs x joules per FLOP)",
            Method::Mixed => "mixed (sum of measured and/or estimated parts)",
        };
        f.write_str(s)
    }
}

/// The energy of one metered window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Energy in joules.
    pub joules: f64,
    /// Wall-clock length of the window in seconds.
    pub seconds: f64,
    /// How `joules` was obtained.
    pub method: Method,
    /// Per-domain or per-device parts (`("package-0", 12.5)`, `("gpu0", 80.0)`), summing to `joules`.
    pub parts: Vec<(String, f64)>,
    /// Human-readable details: counters read, configured factors, caveats.
    pub detail: String,
}

impl Measurement {
    /// Average power over the window (0 for an empty window).
    pub fn watts(&self) -> f64 {
        if self.seconds > 0.0 {
            self.joules / self.seconds
        } else {
            0.0
        }
    }
}

/// A source of energy figures for windows of a run: `start`, do the work, `stop`.
///
/// Meters are not reentrant: one window at a time. For long windows on wrapping counters (RAPL),
/// call [`EnergyMeter::poll`] now and then (at least once per counter period, minutes) so that no
/// wrap goes unseen.
pub trait EnergyMeter: Send {
    /// The method this meter's figures carry.
    fn method(&self) -> Method;
    /// What this meter reads, in words (device names, domains, configured factors).
    fn describe(&self) -> String;
    /// Opens a window.
    fn start(&mut self) -> Result<()>;
    /// Closes the window and returns its energy.
    fn stop(&mut self) -> Result<Measurement>;
    /// Samples wrapping counters mid-window; the default does nothing.
    fn poll(&mut self) -> Result<()> {
        Ok(())
    }
    /// Adds FLOPs executed in the current window (used by FLOP-based estimates; others ignore it).
    fn add_flops(&mut self, _flops: u64) {}
}

/// The meter [`best_available`] picked, and why the better ones were not.
pub struct Selection {
    /// The chosen meter.
    pub meter: Box<dyn EnergyMeter>,
    /// One line per meter tried, in order: picked, or the reason it was unavailable.
    pub reasons: Vec<String>,
}

impl Selection {
    /// The method of the chosen meter.
    pub fn method(&self) -> Method {
        self.meter.method()
    }
    /// A multi-line explanation: what was picked and why the better meters were skipped.
    pub fn explain(&self) -> String {
        self.reasons.join("\n")
    }
}

impl fmt::Debug for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selection")
            .field("meter", &self.meter.describe())
            .field("reasons", &self.reasons)
            .finish()
    }
}

/// For work that runs on the GPU: picks NVML if it loads and has a device with an energy counter,
/// else RAPL from `/sys/class/powercap` if readable, else `fallback` (an estimate). Never silent: the
/// returned [`Selection::reasons`] say what was picked and why each better meter was unavailable.
/// Work on the CPU takes [`best_available_cpu`]: NVML would meter an idle GPU beside it.
pub fn best_available(fallback: EstimateMeter) -> Selection {
    best_available_with(None, Path::new(crate::rapl::DEFAULT_ROOT), fallback)
}

/// For work that runs on the CPU: RAPL from `/sys/class/powercap` if readable, else `fallback` (an
/// estimate); NVML is never picked, even where a GPU is present, since it meters only the GPUs (the
/// reasons say so).
pub fn best_available_cpu(fallback: EstimateMeter) -> Selection {
    best_available_cpu_with(Path::new(crate::rapl::DEFAULT_ROOT), fallback)
}

/// [`best_available_cpu`] with an explicit powercap root (tests).
pub fn best_available_cpu_with(powercap_root: &Path, fallback: EstimateMeter) -> Selection {
    let reasons = vec![
        "NVML not used: the work runs on the CPU, and NVML meters only the GPUs' energy"
            .to_string(),
    ];
    rapl_or_estimate(reasons, powercap_root, fallback)
}

/// [`best_available`] with an explicit NVML library path (`None`: the system default) and powercap
/// root (tests point both at places that do not exist).
pub fn best_available_with(
    nvml_lib: Option<&std::ffi::OsStr>,
    powercap_root: &Path,
    fallback: EstimateMeter,
) -> Selection {
    let mut reasons = Vec::new();
    match NvmlMeter::open_with(nvml_lib) {
        Ok(m) => {
            reasons.push(format!("picked NVML: {}", m.describe()));
            return Selection {
                meter: Box::new(m),
                reasons,
            };
        }
        Err(e) => reasons.push(format!("NVML not used: {e}")),
    }
    rapl_or_estimate(reasons, powercap_root, fallback)
}

/// The second half of both selections: RAPL if readable, else the estimate.
fn rapl_or_estimate(
    mut reasons: Vec<String>,
    powercap_root: &Path,
    fallback: EstimateMeter,
) -> Selection {
    match RaplMeter::open(powercap_root) {
        Ok(m) => {
            reasons.push(format!("picked RAPL: {}", m.describe()));
            return Selection {
                meter: Box::new(m),
                reasons,
            };
        }
        Err(e) => reasons.push(format!("RAPL not used: {e}")),
    }
    reasons.push(format!(
        "picked an ESTIMATE (no energy counter available): {}",
        fallback.describe()
    ));
    Selection {
        meter: Box::new(fallback),
        reasons,
    }
}
