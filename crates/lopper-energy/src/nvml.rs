//! NVML: the GPU's total-energy counter (millijoules since driver load), summed over devices.
use crate::{EnergyMeter, Error, Measurement, Method, Result};
use nvml_wrapper::Nvml;
use std::ffi::OsStr;
use std::time::{Duration, Instant};

/// Meters the GPUs' total-energy counters through NVML (`nvmlDeviceGetTotalEnergyConsumption`,
/// Volta and newer).
///
/// The counter is refreshed by the driver every 20-100 ms, so a window is only as precise as that:
/// [`EnergyMeter::stop`] refuses windows shorter than [`NvmlMeter::min_window`] (default 1 s, at
/// most 10% error from granularity) with [`Error::WindowTooShort`].
pub struct NvmlMeter {
    nvml: Nvml,
    devices: Vec<(u32, String)>,
    min_window: Duration,
    started: Option<(Instant, Vec<u64>)>,
}

impl NvmlMeter {
    /// Loads `libnvidia-ml` from the system and meters every device.
    pub fn open() -> Result<NvmlMeter> {
        Self::open_with(None)
    }

    /// Loads NVML from `lib` (`None`: the default `libnvidia-ml.so.1`). Errors (no library, no
    /// device, counter not supported) are [`Error::NvmlUnavailable`], never panics.
    pub fn open_with(lib: Option<&OsStr>) -> Result<NvmlMeter> {
        let nv = |e: nvml_wrapper::error::NvmlError| Error::NvmlUnavailable(e.to_string());
        let nvml = match lib {
            Some(p) => Nvml::builder().lib_path(p).init(),
            None => Nvml::init(),
        }
        .map_err(|e| {
            Error::NvmlUnavailable(format!(
                "cannot load the NVIDIA management library ({e}); no NVIDIA driver on this machine?"
            ))
        })?;
        let count = nvml.device_count().map_err(nv)?;
        if count == 0 {
            return Err(Error::NvmlUnavailable(
                "NVML loaded but reports no GPU".into(),
            ));
        }
        let mut devices = Vec::new();
        for i in 0..count {
            let d = nvml.device_by_index(i).map_err(nv)?;
            let name = d.name().unwrap_or_else(|_| format!("gpu{i}"));
            d.total_energy_consumption().map_err(|e| {
                Error::NvmlUnavailable(format!(
                    "device {i} ({name}) has no total-energy counter: {e} (needs Volta or newer)"
                ))
            })?;
            devices.push((i, name));
        }
        Ok(NvmlMeter {
            nvml,
            devices,
            min_window: Duration::from_secs(1),
            started: None,
        })
    }

    /// The shortest window `stop` accepts.
    pub fn min_window(&self) -> Duration {
        self.min_window
    }

    /// Sets the shortest accepted window; below 100 ms (the counter's slowest update period) is
    /// refused.
    pub fn set_min_window(&mut self, d: Duration) -> Result<()> {
        if d < Duration::from_millis(100) {
            return Err(Error::Usage {
                meter: "nvml",
                detail: format!("minimum window {d:?} is below the counter's 100 ms update period"),
            });
        }
        self.min_window = d;
        Ok(())
    }

    fn read_mj(&self) -> Result<Vec<u64>> {
        self.devices
            .iter()
            .map(|(i, _)| {
                let d = self
                    .nvml
                    .device_by_index(*i)
                    .map_err(|e| Error::NvmlUnavailable(e.to_string()))?;
                d.total_energy_consumption()
                    .map_err(|e| Error::NvmlUnavailable(format!("device {i}: {e}")))
            })
            .collect()
    }
}

impl EnergyMeter for NvmlMeter {
    fn method(&self) -> Method {
        Method::Nvml
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self
            .devices
            .iter()
            .map(|(i, n)| format!("gpu{i} {n}"))
            .collect();
        format!(
            "NVML total-energy counter of {} (updates every 20-100 ms; windows under {:?} refused)",
            names.join(", "),
            self.min_window
        )
    }

    fn start(&mut self) -> Result<()> {
        let r = self.read_mj()?;
        self.started = Some((Instant::now(), r));
        Ok(())
    }

    fn stop(&mut self) -> Result<Measurement> {
        let Some((t0, r0)) = self.started.take() else {
            return Err(Error::Usage {
                meter: "nvml",
                detail: "stop without start".into(),
            });
        };
        let elapsed = t0.elapsed();
        if elapsed < self.min_window {
            return Err(Error::WindowTooShort {
                meter: "nvml",
                elapsed_ms: elapsed.as_secs_f64() * 1e3,
                min_ms: self.min_window.as_secs_f64() * 1e3,
            });
        }
        let r1 = self.read_mj()?;
        let parts: Vec<(String, f64)> = self
            .devices
            .iter()
            .zip(r0.iter().zip(&r1))
            .map(|((i, _), (a, b))| (format!("gpu{i}"), b.saturating_sub(*a) as f64 / 1e3))
            .collect();
        Ok(Measurement {
            joules: parts.iter().map(|p| p.1).sum(),
            seconds: elapsed.as_secs_f64(),
            method: Method::Nvml,
            parts,
            detail: format!(
                "NVML counter deltas; granularity 20-100 ms, i.e. up to {:.0}% of this window",
                10.0 / elapsed.as_secs_f64().max(1e-9)
            ),
        })
    }
}
