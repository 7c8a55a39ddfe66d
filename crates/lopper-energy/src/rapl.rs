//! RAPL through Linux powercap: `<root>/intel-rapl:N/energy_uj` (package N) and its `dram` subdomain.
use crate::{EnergyMeter, Error, Measurement, Method, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where Linux exposes powercap.
pub const DEFAULT_ROOT: &str = "/sys/class/powercap";

/// One RAPL counter: a package or its dram domain.
#[derive(Clone, Debug, PartialEq)]
pub struct RaplDomain {
    /// The domain's name as the kernel gives it (`package-0`, `dram`), prefixed for subdomains
    /// (`package-0/dram`).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// The counter's range: it wraps from `max_energy_range_uj` to 0.
    pub max_range_uj: u64,
}

/// The energy between two readings of a counter that wraps at `max_range_uj`: `now - prev`, or
/// `max_range_uj - prev + now` when it wrapped once. (More than one wrap per window cannot be seen:
/// call [`EnergyMeter::poll`] at least once per wrap period, minutes at typical package power.)
pub fn wrapping_delta(prev: u64, now: u64, max_range_uj: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        max_range_uj.saturating_sub(prev) + now
    }
}

/// Meters the RAPL package and dram domains through powercap.
pub struct RaplMeter {
    root: PathBuf,
    domains: Vec<RaplDomain>,
    // per domain: last reading, accumulated microjoules since start
    state: Option<(Instant, Vec<u64>, Vec<u64>)>,
}

fn read_u64(path: &Path) -> Result<u64> {
    let s = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Error::RaplPermission {
                path: path.to_path_buf(),
                source: e,
            }
        } else {
            Error::RaplUnavailable(format!("cannot read {}: {e}", path.display()))
        }
    })?;
    s.trim().parse().map_err(|_| Error::Malformed {
        path: path.to_path_buf(),
        value: s.trim().to_string(),
    })
}

fn read_name(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("name"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            dir.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}

fn sorted_entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(prefix))
        })
        .collect();
    v.sort();
    v
}

impl RaplMeter {
    /// Finds the package domains `<root>/intel-rapl:N` and their `dram` subdomains
    /// (`intel-rapl:N:M` whose `name` is `dram`), and checks that each counter is readable.
    /// Core/uncore subdomains are skipped: they are already inside the package figure.
    pub fn open(root: &Path) -> Result<RaplMeter> {
        let mut domains = Vec::new();
        for pkg in sorted_entries(root, "intel-rapl:") {
            let fname = pkg
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or_default()
                .to_string();
            if fname.matches(':').count() != 1 {
                continue; // a subdomain listed at the top level (symlinks on some kernels)
            }
            let pname = read_name(&pkg);
            domains.push(RaplDomain {
                name: pname.clone(),
                max_range_uj: read_u64(&pkg.join("max_energy_range_uj"))?,
                dir: pkg.clone(),
            });
            for sub in sorted_entries(&pkg, &format!("{fname}:")) {
                if read_name(&sub) == "dram" {
                    domains.push(RaplDomain {
                        name: format!("{pname}/dram"),
                        max_range_uj: read_u64(&sub.join("max_energy_range_uj"))?,
                        dir: sub,
                    });
                }
            }
        }
        if domains.is_empty() {
            return Err(Error::RaplUnavailable(format!(
                "no intel-rapl:* domains under {} (no RAPL on this CPU, powercap driver not loaded, or a virtual machine)",
                root.display()
            )));
        }
        let m = RaplMeter {
            root: root.to_path_buf(),
            domains,
            state: None,
        };
        m.read_all()?; // fail now, with the permission message, rather than at start()
        Ok(m)
    }

    /// The domains this meter sums.
    pub fn domains(&self) -> &[RaplDomain] {
        &self.domains
    }

    fn read_all(&self) -> Result<Vec<u64>> {
        self.domains
            .iter()
            .map(|d| read_u64(&d.dir.join("energy_uj")))
            .collect()
    }
}

impl EnergyMeter for RaplMeter {
    fn method(&self) -> Method {
        Method::Rapl
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.domains.iter().map(|d| d.name.as_str()).collect();
        format!(
            "RAPL powercap counters under {}: {}",
            self.root.display(),
            names.join(", ")
        )
    }

    fn start(&mut self) -> Result<()> {
        let r = self.read_all()?;
        let n = r.len();
        self.state = Some((Instant::now(), r, vec![0; n]));
        Ok(())
    }

    fn poll(&mut self) -> Result<()> {
        let now = self.read_all()?;
        let Some((_, last, acc)) = self.state.as_mut() else {
            return Ok(());
        };
        for (k, d) in self.domains.iter().enumerate() {
            acc[k] += wrapping_delta(last[k], now[k], d.max_range_uj);
            last[k] = now[k];
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<Measurement> {
        if self.state.is_none() {
            return Err(Error::Usage {
                meter: "rapl",
                detail: "stop without start".into(),
            });
        }
        self.poll()?;
        let (t0, _, acc) = self.state.take().expect("checked above");
        let parts: Vec<(String, f64)> = self
            .domains
            .iter()
            .zip(&acc)
            .map(|(d, uj)| (d.name.clone(), *uj as f64 / 1e6))
            .collect();
        Ok(Measurement {
            joules: parts.iter().map(|p| p.1).sum(),
            seconds: t0.elapsed().as_secs_f64(),
            method: Method::Rapl,
            parts,
            detail: "RAPL package + dram counters (whole machine, not only this process)".into(),
        })
    }
}
