//! Estimates, always labelled as such: CPU-seconds x watts per core, or FLOPs x joules per FLOP.
use crate::{EnergyMeter, Error, Measurement, Method, Result};
use std::time::Instant;

/// What an [`EstimateMeter`] multiplies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EstimateSource {
    /// This process's CPU time (user + system, all threads, from `/proc/self/stat`) x watts per core.
    CpuTime { watts_per_core: f64 },
    /// FLOPs reported through [`EnergyMeter::add_flops`] x joules per FLOP.
    Flops { joules_per_flop: f64 },
}

/// An energy estimate: never a measurement, and its [`Method`] says so.
pub struct EstimateMeter {
    source: EstimateSource,
    started: Option<(Instant, f64)>,
    flops: u64,
}

/// CPU time (user + system, all threads) of this process in seconds, from `/proc/self/stat`
/// (fields 14 and 15, in clock ticks of 1/100 s: Linux's fixed `USER_HZ`).
pub fn cpu_seconds_of_process() -> Result<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").map_err(|e| Error::Usage {
        meter: "estimate",
        detail: format!("cannot read /proc/self/stat for CPU time: {e}"),
    })?;
    parse_proc_stat_cpu_seconds(&s)
}

/// Parses utime + stime from a `/proc/<pid>/stat` line (the command name may hold spaces and
/// parentheses: fields are counted after the last `)`).
pub(crate) fn parse_proc_stat_cpu_seconds(s: &str) -> Result<f64> {
    let bad = || Error::Usage {
        meter: "estimate",
        detail: format!("unexpected /proc/self/stat format: {s:?}"),
    };
    let rest = &s[s.rfind(')').ok_or_else(bad)? + 1..];
    // after ')': field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let st: u64 = f.get(12).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    Ok((ut + st) as f64 / 100.0)
}

impl EstimateMeter {
    /// CPU-seconds x `watts_per_core` (e.g. TDP / cores; 10 W per core is a common server figure).
    pub fn cpu_time(watts_per_core: f64) -> Result<EstimateMeter> {
        Self::new(EstimateSource::CpuTime { watts_per_core })
    }

    /// FLOPs x `joules_per_flop` (e.g. 1e-10 J/FLOP for a CPU at 10 GFLOP/W).
    pub fn flops(joules_per_flop: f64) -> Result<EstimateMeter> {
        Self::new(EstimateSource::Flops { joules_per_flop })
    }

    /// An estimate from `source`; the factor must be finite and non-negative.
    pub fn new(source: EstimateSource) -> Result<EstimateMeter> {
        let f = match source {
            EstimateSource::CpuTime { watts_per_core } => watts_per_core,
            EstimateSource::Flops { joules_per_flop } => joules_per_flop,
        };
        if !f.is_finite() || f < 0.0 {
            return Err(Error::Usage {
                meter: "estimate",
                detail: format!("factor must be finite and >= 0, got {f}"),
            });
        }
        Ok(EstimateMeter {
            source,
            started: None,
            flops: 0,
        })
    }

    /// The configured source and factor.
    pub fn source(&self) -> EstimateSource {
        self.source
    }

    /// The estimate for `cpu_seconds` of CPU time or `flops` FLOPs (whichever this meter uses).
    pub fn joules_for(&self, cpu_seconds: f64, flops: u64) -> f64 {
        match self.source {
            EstimateSource::CpuTime { watts_per_core } => cpu_seconds * watts_per_core,
            EstimateSource::Flops { joules_per_flop } => flops as f64 * joules_per_flop,
        }
    }

    fn measure(&self, seconds: f64, cpu_seconds: f64) -> Measurement {
        let joules = self.joules_for(cpu_seconds, self.flops);
        let (method, detail) = match self.source {
            EstimateSource::CpuTime { watts_per_core } => (
                Method::EstimateCpuTime,
                format!("ESTIMATE: {cpu_seconds:.2} CPU-s x {watts_per_core} W/core"),
            ),
            EstimateSource::Flops { joules_per_flop } => (
                Method::EstimateFlops,
                format!(
                    "ESTIMATE: {} FLOPs x {joules_per_flop:e} J/FLOP",
                    self.flops
                ),
            ),
        };
        Measurement {
            joules,
            seconds,
            method,
            parts: vec![("estimate".into(), joules)],
            detail,
        }
    }
}

impl EnergyMeter for EstimateMeter {
    fn method(&self) -> Method {
        match self.source {
            EstimateSource::CpuTime { .. } => Method::EstimateCpuTime,
            EstimateSource::Flops { .. } => Method::EstimateFlops,
        }
    }

    fn describe(&self) -> String {
        match self.source {
            EstimateSource::CpuTime { watts_per_core } => {
                format!("estimate: this process's CPU-seconds x {watts_per_core} W per core")
            }
            EstimateSource::Flops { joules_per_flop } => {
                format!("estimate: executed FLOPs x {joules_per_flop:e} J per FLOP")
            }
        }
    }

    fn start(&mut self) -> Result<()> {
        let cpu = match self.source {
            EstimateSource::CpuTime { .. } => cpu_seconds_of_process()?,
            EstimateSource::Flops { .. } => 0.0,
        };
        self.flops = 0;
        self.started = Some((Instant::now(), cpu));
        Ok(())
    }

    fn stop(&mut self) -> Result<Measurement> {
        let Some((t0, cpu0)) = self.started.take() else {
            return Err(Error::Usage {
                meter: "estimate",
                detail: "stop without start".into(),
            });
        };
        let cpu = match self.source {
            EstimateSource::CpuTime { .. } => (cpu_seconds_of_process()? - cpu0).max(0.0),
            EstimateSource::Flops { .. } => 0.0,
        };
        let m = self.measure(t0.elapsed().as_secs_f64(), cpu);
        self.flops = 0;
        Ok(m)
    }

    fn add_flops(&mut self, flops: u64) {
        self.flops = self.flops.saturating_add(flops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_arithmetic() {
        let m = EstimateMeter::cpu_time(12.5).unwrap();
        assert_eq!(m.joules_for(4.0, 0), 50.0);
        let meas = m.measure(2.0, 4.0);
        assert_eq!(meas.joules, 50.0);
        assert_eq!(meas.watts(), 25.0);
        assert_eq!(meas.method, Method::EstimateCpuTime);
        assert!(meas.method.is_estimate());
        assert!(meas.detail.starts_with("ESTIMATE"));

        let mut f = EstimateMeter::flops(2e-10).unwrap();
        f.start().unwrap();
        f.add_flops(1_000_000_000);
        f.add_flops(500_000_000);
        let meas = f.stop().unwrap();
        assert!((meas.joules - 0.3).abs() < 1e-12, "{}", meas.joules);
        assert_eq!(meas.method, Method::EstimateFlops);
        assert!(EstimateMeter::cpu_time(-1.0).is_err());
        assert!(EstimateMeter::flops(f64::NAN).is_err());
        assert!(f.stop().is_err(), "stop without start");
    }

    #[test]
    fn proc_stat_parsing() {
        let line = "1234 (my (odd) prog) R 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0";
        assert_eq!(parse_proc_stat_cpu_seconds(line).unwrap(), 4.0);
        assert!(parse_proc_stat_cpu_seconds("garbage").is_err());
        // the live process: a CPU-time estimate over a busy loop is positive or zero, never NaN
        let mut m = EstimateMeter::cpu_time(10.0).unwrap();
        m.start().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let meas = m.stop().unwrap();
        assert!(meas.joules >= 0.0 && meas.joules.is_finite());
    }
}
