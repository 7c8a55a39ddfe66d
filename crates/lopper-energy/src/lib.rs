//! lopper-energy: how many joules a run took, and how that figure was obtained.
//!
//! - [`EnergyMeter`]: start/stop metering of a window, returning a [`Measurement`] (joules, seconds,
//!   and the [`Method`] that produced them). Implementations:
//!   - [`NvmlMeter`]: the GPU's total-energy counter (millijoules) through `nvml-wrapper`, which loads
//!     `libnvidia-ml` at run time; absence is an error, never a panic. The counter updates every
//!     20-100 ms, so windows shorter than [`NvmlMeter::min_window`] are refused.
//!   - [`RaplMeter`]: Linux powercap counters (`intel-rapl:*/energy_uj`), package and dram domains,
//!     wrap-around through `max_energy_range_uj` handled.
//!   - [`EstimateMeter`]: CPU-seconds x watts per core, or FLOPs x joules per FLOP; always labelled an
//!     estimate.
//! - [`best_available`] (GPU work): Nvml > Rapl > Estimate; [`best_available_cpu`] (CPU work): Rapl >
//!   Estimate, NVML never; both say which one they picked and why the better ones
//!   were unavailable.
//! - [`EnergyReport`]: per phase (train, eval) and total: joules, kWh, average watts, CO2 and cost from
//!   configurable [`Factors`]; every figure carries its method. JSON (serde) and CSV.
//!
//! - [`steal`]: the share of CPU time the hypervisor gave to other guests during a window
//!   (`/proc/stat`), so that timed figures on a shared VM carry a warning when they are distorted.
//!
//! Depends on no other lopper crate.

mod error;
mod estimate;
mod meter;
mod nvml;
mod rapl;
mod report;
pub mod steal;

pub use error::{Error, Result};
pub use estimate::{EstimateMeter, EstimateSource, cpu_seconds_of_process};
pub use meter::{
    EnergyMeter, Measurement, Method, Selection, best_available, best_available_cpu,
    best_available_cpu_with, best_available_with,
};
pub use nvml::NvmlMeter;
pub use rapl::{RaplDomain, RaplMeter, wrapping_delta};
pub use report::{EnergyReport, Factors, Figure, PhaseReport};
