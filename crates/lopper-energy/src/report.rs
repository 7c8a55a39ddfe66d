//! [`EnergyReport`]: energy per phase and in total, with kWh, average watts, CO2 and cost, each figure
//! carrying the method that produced it. JSON (serde) and CSV.
use crate::{Error, Measurement, Method, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Conversion factors for CO2 and cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Factors {
    /// Grid carbon intensity in grams of CO2-equivalent per kWh (world average about 475).
    pub grid_g_co2_per_kwh: f64,
    /// Electricity price per kWh, in `currency`.
    pub price_per_kwh: f64,
    /// Currency of `price_per_kwh` (e.g. "EUR").
    pub currency: String,
}

impl Default for Factors {
    /// 475 gCO2e/kWh (IEA world average) and 0.25 EUR/kWh.
    fn default() -> Self {
        Factors {
            grid_g_co2_per_kwh: 475.0,
            price_per_kwh: 0.25,
            currency: "EUR".into(),
        }
    }
}

/// One number with its unit and the method that produced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    pub unit: String,
    pub method: Method,
}

/// The figures of one phase (or of the total).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `train`, `eval`, ... or `total`.
    pub phase: String,
    /// Wall-clock seconds metered.
    pub seconds: f64,
    pub joules: Figure,
    pub kwh: Figure,
    pub avg_watts: Figure,
    pub co2_g: Figure,
    pub cost: Figure,
}

impl PhaseReport {
    fn compute(phase: &str, joules: f64, seconds: f64, method: Method, f: &Factors) -> PhaseReport {
        let fig = |value: f64, unit: &str| Figure {
            value,
            unit: unit.into(),
            method,
        };
        let kwh = joules / 3.6e6;
        PhaseReport {
            phase: phase.into(),
            seconds,
            joules: fig(joules, "J"),
            kwh: fig(kwh, "kWh"),
            avg_watts: fig(if seconds > 0.0 { joules / seconds } else { 0.0 }, "W"),
            co2_g: fig(kwh * f.grid_g_co2_per_kwh, "gCO2e"),
            cost: fig(kwh * f.price_per_kwh, &f.currency),
        }
    }
}

/// Energy of a run by phase, with totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyReport {
    pub factors: Factors,
    /// Phases in the order first seen; repeated phases are summed.
    pub phases: Vec<PhaseReport>,
    /// Sum over phases (method [`Method::Mixed`] when phases differ).
    pub total: PhaseReport,
}

const CSV_HEADER: &str = "phase,seconds,joules,kwh,avg_watts,co2_g,cost,currency,method";

impl EnergyReport {
    /// An empty report.
    pub fn new(factors: Factors) -> EnergyReport {
        let total = PhaseReport::compute("total", 0.0, 0.0, Method::Mixed, &factors);
        EnergyReport {
            factors,
            phases: Vec::new(),
            total,
        }
    }

    /// Adds a metered window to `phase` (summed with earlier windows of the same phase).
    pub fn add(&mut self, phase: &str, m: &Measurement) {
        self.add_raw(phase, m.joules, m.seconds, m.method);
    }

    /// Adds `joules` over `seconds`, obtained by `method`, to `phase`.
    pub fn add_raw(&mut self, phase: &str, joules: f64, seconds: f64, method: Method) {
        let f = &self.factors;
        match self.phases.iter_mut().find(|p| p.phase == phase) {
            Some(p) => {
                let m = Method::combine(p.joules.method, method);
                *p =
                    PhaseReport::compute(phase, p.joules.value + joules, p.seconds + seconds, m, f);
            }
            None => self
                .phases
                .push(PhaseReport::compute(phase, joules, seconds, method, f)),
        }
        let (j, s) = self
            .phases
            .iter()
            .fold((0.0, 0.0), |(j, s), p| (j + p.joules.value, s + p.seconds));
        let m = self
            .phases
            .iter()
            .map(|p| p.joules.method)
            .reduce(Method::combine)
            .unwrap_or(Method::Mixed);
        self.total = PhaseReport::compute("total", j, s, m, f);
    }

    /// A phase's figures.
    pub fn phase(&self, name: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.phase == name)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report fields are plain numbers and strings")
    }

    /// Parses [`EnergyReport::to_json`]'s output.
    pub fn from_json(s: &str) -> Result<EnergyReport> {
        serde_json::from_str(s).map_err(|e| Error::Report(format!("invalid report JSON: {e}")))
    }

    /// CSV: a header, one line per phase, then `total`. Numbers in Rust's shortest round-trip form.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(CSV_HEADER);
        out.push('\n');
        for p in self.phases.iter().chain(std::iter::once(&self.total)) {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                csv_field(&p.phase),
                p.seconds,
                p.joules.value,
                p.kwh.value,
                p.avg_watts.value,
                p.co2_g.value,
                p.cost.value,
                csv_field(&self.factors.currency),
                p.joules.method.label()
            ));
        }
        out
    }

    /// Re-reads [`EnergyReport::to_csv`]'s output (the factors are recovered from the figures where
    /// the energy is non-zero).
    pub fn from_csv(s: &str) -> Result<EnergyReport> {
        let mut lines = s.lines();
        if lines.next() != Some(CSV_HEADER) {
            return Err(Error::Report(format!("CSV header must be {CSV_HEADER:?}")));
        }
        let mut factors = Factors {
            grid_g_co2_per_kwh: 0.0,
            price_per_kwh: 0.0,
            currency: String::new(),
        };
        let mut rows = Vec::new();
        for (n, line) in lines.enumerate() {
            let f: Vec<&str> = line.split(',').collect();
            let err = |what: &str| Error::Report(format!("CSV line {}: {what}", n + 2));
            if f.len() != 9 {
                return Err(err("expected 9 fields"));
            }
            let num = |i: usize| {
                f[i].parse::<f64>()
                    .map_err(|_| err(&format!("field {} not a number", i + 1)))
            };
            let method = Method::from_label(f[8]).ok_or_else(|| err("unknown method"))?;
            let (kwh, co2, cost) = (num(3)?, num(5)?, num(6)?);
            if kwh > 0.0 {
                factors.grid_g_co2_per_kwh = co2 / kwh;
                factors.price_per_kwh = cost / kwh;
            }
            factors.currency = f[7].to_string();
            rows.push((f[0].to_string(), num(1)?, num(2)?, method));
        }
        let Some(last) = rows.pop().filter(|r| r.0 == "total") else {
            return Err(Error::Report("CSV has no final `total` line".into()));
        };
        let mut r = EnergyReport::new(factors);
        for (phase, s, j, m) in rows {
            r.add_raw(&phase, j, s, m);
        }
        if r.phases.is_empty() {
            r.total = PhaseReport::compute("total", last.2, last.1, last.3, &r.factors);
        }
        Ok(r)
    }

    /// Writes JSON to `path` atomically (temp file + rename).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_json().as_bytes())
    }

    /// Writes CSV to `path` atomically (temp file + rename).
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_csv().as_bytes())
    }
}

fn csv_field(s: &str) -> String {
    s.replace([',', '\n'], "_")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let io = |e: std::io::Error| Error::Report(format!("{}: {e}", path.display()));
    // written and synced before the rename; on any failure the temp file is removed
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    written
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
}
