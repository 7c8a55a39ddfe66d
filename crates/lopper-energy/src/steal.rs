//! CPU steal: the share of this machine's CPU time that the hypervisor gave to other guests.
//!
//! On a shared virtual machine a timed run can lose a large, varying share of its CPU to other
//! guests (26% was seen on the development VM during one benchmark). Linux counts it in the `steal`
//! column of the aggregate `cpu` line of `/proc/stat`. [`StealWindow`] reads that line at the start
//! and end of a window and reports the stolen share of all CPU ticks in between, so that benchmark
//! tables and training reports can say when their times are unreliable instead of hiding it.
use crate::{Error, Result};

/// Above this stolen share, reports print a warning next to their times.
pub const STEAL_WARN: f64 = 0.02;

/// Aggregate CPU ticks of all CPUs since boot, from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    /// All ticks: user, nice, system, idle, iowait, irq, softirq and steal (guest time is already
    /// inside user and nice, so it is not added again).
    pub total: u64,
    /// Ticks stolen by the hypervisor.
    pub steal: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat` (the first line starting with `cpu `). Kernels
/// before 2.6.11 have no steal column: such a line is an error (no figure rather than a wrong 0).
pub fn parse_proc_stat(text: &str) -> Result<CpuTicks> {
    let bad = |why: &str| Error::Malformed {
        path: "/proc/stat".into(),
        value: format!(
            "{why}: {:?}",
            text.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(120)
                .collect::<String>()
        ),
    };
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| bad("no aggregate `cpu` line"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad("a `cpu` field is not a tick count"))?;
    if fields.len() < 8 {
        return Err(bad("fewer than 8 `cpu` fields (no steal column)"));
    }
    let total = fields[..8]
        .iter()
        .try_fold(0u64, |a, &f| a.checked_add(f))
        .ok_or_else(|| bad("tick counts overflow"))?;
    Ok(CpuTicks {
        total,
        steal: fields[7],
    })
}

/// The machine's ticks now; `Ok(None)` where `/proc/stat` does not exist (not Linux).
pub fn read_cpu_ticks() -> Result<Option<CpuTicks>> {
    match std::fs::read_to_string("/proc/stat") {
        Ok(s) => parse_proc_stat(&s).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Usage {
            meter: "steal",
            detail: format!("cannot read /proc/stat: {e}"),
        }),
    }
}

/// Stolen share of the ticks between two readings, in `[0, 1]`; `None` when no tick passed or the
/// counters went backwards (a reading from another boot).
pub fn steal_fraction(start: CpuTicks, end: CpuTicks) -> Option<f64> {
    let total = end.total.checked_sub(start.total)?;
    let steal = end.steal.checked_sub(start.steal)?;
    if total == 0 || steal > total {
        return None;
    }
    Some(steal as f64 / total as f64)
}

/// A window over which to measure steal: [`StealWindow::start`], then [`StealWindow::fraction`].
/// Where `/proc/stat` is missing or unreadable the window measures nothing and says so through
/// `None` (callers print "unknown", never 0).
#[derive(Clone, Copy, Debug)]
pub struct StealWindow {
    start: Option<CpuTicks>,
}

impl StealWindow {
    /// Reads the counters now.
    pub fn start() -> StealWindow {
        StealWindow {
            start: read_cpu_ticks().ok().flatten(),
        }
    }
    /// Stolen share of all CPU ticks since [`StealWindow::start`]; `None` when unknown.
    pub fn fraction(&self) -> Option<f64> {
        let end = read_cpu_ticks().ok().flatten()?;
        steal_fraction(self.start?, end)
    }
}

/// The warning line for a stolen share above [`STEAL_WARN`], else `None`.
pub fn steal_warning(fraction: Option<f64>) -> Option<String> {
    let f = fraction?;
    (f > STEAL_WARN).then(|| {
        format!(
            "WARNING: the hypervisor gave {:.1}% of this machine's CPU time to other guests during \
             the run (steal in /proc/stat): times are slower and noisier than the hardware's; \
             compare only ratios measured in the same run",
            100.0 * f
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  3730269 49278 222996 656326 12772 0 2584 200409 0 0\n\
                        cpu0 1865134 24639 111498 328163 6386 0 1292 100204 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn parses_the_aggregate_line() {
        let t = parse_proc_stat(STAT).unwrap();
        assert_eq!(t.steal, 200_409);
        assert_eq!(
            t.total,
            3_730_269 + 49_278 + 222_996 + 656_326 + 12_772 + 2_584 + 200_409
        );
    }

    #[test]
    fn fraction_of_a_window() {
        let a = CpuTicks {
            total: 1000,
            steal: 10,
        };
        let b = CpuTicks {
            total: 1200,
            steal: 60,
        };
        assert_eq!(steal_fraction(a, b), Some(0.25));
        assert_eq!(steal_fraction(a, a), None); // no tick passed
        assert_eq!(steal_fraction(b, a), None); // backwards
        assert!(steal_warning(Some(0.25)).unwrap().contains("25.0%"));
        assert_eq!(steal_warning(Some(0.01)), None);
        assert_eq!(steal_warning(None), None);
    }

    #[test]
    fn malformed_stat_is_a_typed_error() {
        for bad in [
            "",
            "intr 1 2\n",
            "cpu  1 2 3\n",
            "cpu  1 2 3 4 5 6 7 x\n",
            "cpu  18446744073709551615 1 0 0 0 0 0 0\n",
        ] {
            let e = parse_proc_stat(bad).unwrap_err();
            assert!(matches!(e, Error::Malformed { .. }), "{bad:?} gave {e:?}");
            assert!(e.to_string().contains("/proc/stat"), "{e}");
        }
    }

    proptest::proptest! {
        /// Any text gives a figure or a typed error, never a panic; a well-formed line round-trips.
        #[test]
        fn never_panics(text in "(cpu  )?[0-9 a-z\n]{0,80}", f in proptest::collection::vec(0u64..1 << 40, 8..11)) {
            let _ = parse_proc_stat(&text);
            let line = format!("cpu  {}\n", f.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" "));
            let t = parse_proc_stat(&line).unwrap();
            proptest::prop_assert_eq!(t.steal, f[7]);
            proptest::prop_assert_eq!(t.total, f[..8].iter().sum::<u64>());
        }
    }

    #[test]
    fn reads_this_machine_when_linux() {
        if std::path::Path::new("/proc/stat").exists() {
            let t = read_cpu_ticks().unwrap().unwrap();
            assert!(t.total >= t.steal && t.total > 0);
        }
    }
}
