//! The report of one or more training runs (`lopper train`, `compare`, `demo`): a terminal table,
//! `report.json`, `report.csv` and `report.svg` (validation loss against wall time and against
//! energy), all written atomically into one output folder.
//!
//! `report.json` is a contract other tools read: `variants[].name`, `val_loss`, `tokens_per_s`,
//! `wall_s`, `flops_executed`, `flops_dense_equivalent`, `energy_j` and `energy_method` keep their
//! names and meaning (tests/train.rs checks them).
use crate::CliError;
use lopper_train::{Event, RunLog};
use plotters::prelude::*;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The end-of-run figures of one variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    /// Optimizer steps taken.
    pub steps: u64,
    /// Final validation loss.
    pub val_loss: f64,
    /// Best validation loss seen during the run.
    pub best_val_loss: f64,
    /// Final validation accuracy (classifiers).
    pub accuracy: Option<f64>,
    /// Trainable values stored at the end (stored values of sparse weights, factors of low-rank).
    pub params: usize,
    /// Training wall time in seconds (evaluation excluded).
    pub wall_s: f64,
    /// Training throughput: tokens (GPT) or examples (MLP) per second of training wall time.
    pub tokens_per_s: f64,
    /// Steady-state throughput: the median step's tokens (examples) per second after
    /// `lopper_train::STEADY_WARMUP_STEPS` warm-up steps, as PyTorch benchmarks report it (None
    /// with no step past the warm-up).
    pub tokens_per_s_steady: Option<f64>,
    /// Training FLOPs executed.
    pub flops_executed: u64,
    /// Training FLOPs a dense model of the same shapes would have executed.
    pub flops_dense_equivalent: u64,
    /// Training energy in joules.
    pub energy_j: f64,
    /// How `energy_j` was obtained (`rapl`, `nvml`, `estimate-cpu-time`, ..., as
    /// `lopper_energy::Method::label`).
    pub energy_method: String,
    /// False for estimates (and mixtures).
    pub energy_measured: bool,
    /// Why the run stopped before its step budget, if it did (early stopping, a non-finite loss).
    pub stopped_early: Option<String>,
    /// Wall time of the whole run in seconds (training, evaluation, checkpoints).
    pub run_wall_s: f64,
    /// Training energy by phase (`train`, `eval`) and total, with kWh, CO2 and cost, each with its
    /// method (None when the run did not report one).
    pub energy_report: Option<lopper_energy::EnergyReport>,
    /// Share of the machine's CPU time the hypervisor gave to other guests during the run
    /// (`/proc/stat` steal); None where unknown.
    pub cpu_steal: Option<f64>,
}

/// One trained variant: its name, where its recipe came from, its figures and its log.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Short name (`dense`, `masked80`, ...): the recipe's name or file stem.
    pub name: String,
    /// Where the recipe came from (`recipes/dense.toml (embedded)` or the path given).
    pub recipe: String,
    /// The recipe's content hash (so two reports can be matched to the same recipe).
    pub recipe_hash: String,
    /// End-of-run figures.
    pub figures: Figures,
    /// The run's log (evaluations make the curves; events the notes).
    pub log: RunLog,
}

/// The machine a report was made on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// rayon threads the runs used (`--threads`, default all cores).
    pub threads: usize,
    /// Cores the OS reports online.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo (or `unknown`, said as such).
    pub cpu_model: String,
    /// The energy meter that was picked and why better ones were not (lopper_energy::Selection).
    pub energy_meter: Vec<String>,
}

impl Machine {
    /// This machine, with `threads` rayon threads and the meter selection's reasons.
    pub fn detect(threads: usize, energy_meter: Vec<String>) -> Machine {
        Machine {
            threads,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(),
            energy_meter,
        }
    }
}

/// The CPU model named by /proc/cpuinfo's first `model name` line, or `unknown (...)` with why.
pub fn cpu_model() -> String {
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(s) => s
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown (no model name in /proc/cpuinfo)".into()),
        Err(e) => format!("unknown (/proc/cpuinfo: {e})"),
    }
}

/// A whole report.
#[derive(Clone, Debug)]
pub struct Report {
    /// The command that made it (`train`, `compare`, `demo`).
    pub command: String,
    /// The variants in the order they ran.
    pub variants: Vec<Variant>,
    /// Where it ran.
    pub machine: Machine,
    /// When it was made, ISO 8601 UTC (`2026-11-28T23:49:39Z`).
    pub created: String,
}

/// The files [`Report::write`] produces in its folder.
pub const FILES: [&str; 3] = ["report.json", "report.csv", "report.svg"];

/// Table and CSV columns, in order.
const COLUMNS: [&str; 10] = [
    "variant",
    "val_loss",
    "val_loss_change_pct",
    "params",
    "flops_executed",
    "flops_dense_equivalent",
    "wall_s",
    "tokens_per_s",
    "energy_j",
    "energy_method",
];

/// Events listed per variant under the terminal table (report.json has them all).
const EVENTS_SHOWN: usize = 8;

impl Report {
    /// A report made now.
    pub fn new(command: &str, variants: Vec<Variant>, machine: Machine) -> Report {
        Report {
            command: command.into(),
            variants,
            machine,
            created: utc_stamp(SystemTime::now()).1,
        }
    }

    /// The variant others are compared with: the one named `dense`, else the first.
    pub fn baseline(&self) -> Option<&Variant> {
        self.variants
            .iter()
            .find(|v| v.name == "dense")
            .or(self.variants.first())
    }

    /// Change of `v`'s validation loss against the baseline's, in % of the baseline's
    /// (`None` when there is no finite, non-zero baseline).
    pub fn change_pct(&self, v: &Variant) -> Option<f64> {
        let base = self.baseline()?.figures.val_loss;
        let x = v.figures.val_loss;
        (base.is_finite() && base != 0.0 && x.is_finite()).then(|| 100.0 * (x - base) / base)
    }

    /// The baseline's name, for headers (`dense` or the first variant's).
    fn baseline_name(&self) -> &str {
        self.baseline().map_or("-", |v| v.name.as_str())
    }

    /// The cells of one variant's row, in [`COLUMNS`] order, formatted for people.
    fn row_cells(&self, v: &Variant) -> Vec<String> {
        let f = &v.figures;
        let method = if f.energy_measured {
            f.energy_method.clone()
        } else {
            format!("ESTIMATE {}", f.energy_method)
        };
        vec![
            v.name.clone(),
            format!("{:.4}", f.val_loss),
            self.change_pct(v)
                .map_or("-".into(), |p| format!("{p:+.2}%")),
            f.params.to_string(),
            si(f.flops_executed as f64),
            si(f.flops_dense_equivalent as f64),
            format!("{:.2}", f.wall_s),
            format!("{:.0}", f.tokens_per_s),
            if f.energy_j < 10.0 {
                format!("{:.2}", f.energy_j)
            } else {
                format!("{:.1}", f.energy_j)
            },
            method,
        ]
    }

    /// The terminal table, then each variant's notable events and how its energy was obtained.
    pub fn table(&self) -> String {
        let header: Vec<String> = [
            "variant".to_string(),
            "val loss".into(),
            format!("vs {}", self.baseline_name()),
            "params".into(),
            "FLOPs exec".into(),
            "FLOPs dense-eq".into(),
            "wall s".into(),
            "tok/s".into(),
            "energy J".into(),
            "energy method".into(),
        ]
        .into();
        let rows: Vec<Vec<String>> = self.variants.iter().map(|v| self.row_cells(v)).collect();
        let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
                if i > 0 {
                    s.push_str(" | ");
                }
                // names and methods left-aligned, numbers right-aligned
                if i == 0 || i + 1 == cells.len() {
                    let _ = write!(s, "{c:<w$}");
                } else {
                    let _ = write!(s, "{c:>w$}");
                }
            }
            s.trim_end().to_string()
        };
        let mut out = line(&header);
        out.push('\n');
        let total: usize = width.iter().sum::<usize>() + 3 * (width.len() - 1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for r in &rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        for v in &self.variants {
            out.push_str(&self.notes(v));
        }
        out
    }

    /// The lines under the table for one variant: events and the energy method, loudly when it is
    /// an estimate.
    fn notes(&self, v: &Variant) -> String {
        let mut s = format!("\n{} ({}, {} steps", v.name, v.recipe, v.figures.steps);
        if let Some(a) = v.figures.accuracy {
            let _ = write!(s, ", accuracy {:.2}%", 100.0 * a);
        }
        if let Some(why) = &v.figures.stopped_early {
            let _ = write!(s, ", stopped early: {why}");
        }
        s.push_str("):\n");
        // layer switches (`-> csr`, `-> sparse24`, ...) first, then the others in order
        let evs = &v.log.events;
        let mut pick: Vec<usize> = (0..evs.len())
            .filter(|&i| evs[i].message.contains(" -> "))
            .chain((0..evs.len()).filter(|&i| !evs[i].message.contains(" -> ")))
            .take(EVENTS_SHOWN)
            .collect();
        pick.sort_unstable();
        for e in pick.iter().map(|&i| &evs[i]) {
            // messages often begin with their own "step N: "
            let prefix = format!("step {}: ", e.step);
            let msg = e.message.strip_prefix(&prefix).unwrap_or(&e.message);
            let _ = writeln!(s, "  step {}: {msg} [{}]", e.step, e.source);
        }
        if v.log.events.len() > EVENTS_SHOWN {
            let _ = writeln!(
                s,
                "  ... {} more events in report.json",
                v.log.events.len() - EVENTS_SHOWN
            );
        }
        if v.figures.energy_measured {
            let _ = writeln!(
                s,
                "  energy: measured by the {} counter",
                v.figures.energy_method
            );
        } else {
            let _ = writeln!(
                s,
                "  energy: ESTIMATE ({}), NOT a measurement: no energy counter was readable",
                v.figures.energy_method
            );
        }
        if let Some(w) = lopper_energy::steal::steal_warning(v.figures.cpu_steal) {
            let _ = writeln!(s, "  {w}");
        }
        s
    }

    /// `report.json` (see the module doc for the keys other tools rely on).
    pub fn to_json(&self) -> Value {
        let variants: Vec<Value> = self
            .variants
            .iter()
            .map(|v| {
                let f = &v.figures;
                json!({
                    "name": v.name,
                    "recipe": v.recipe,
                    "recipe_hash": v.recipe_hash,
                    "steps": f.steps,
                    "val_loss": finite(f.val_loss),
                    "best_val_loss": finite(f.best_val_loss),
                    "val_loss_change_pct": self.change_pct(v),
                    "accuracy": f.accuracy,
                    "params": f.params,
                    "tokens_per_s": finite(f.tokens_per_s),
                    "tokens_per_s_steady": f.tokens_per_s_steady.map(finite),
                    "wall_s": finite(f.wall_s),
                    "flops_executed": f.flops_executed,
                    "flops_dense_equivalent": f.flops_dense_equivalent,
                    "energy_j": finite(f.energy_j),
                    "energy_method": f.energy_method,
                    "energy_measured": f.energy_measured,
                    "stopped_early": f.stopped_early,
                    "run_wall_s": finite(f.run_wall_s),
                    "energy_report": f.energy_report,
                    "cpu_steal": f.cpu_steal,
                    "events": v.log.events.iter().map(event_json).collect::<Vec<_>>(),
                    "curve": v.log.evals.iter().map(|e| json!({
                        "step": e.step,
                        "wall_s": finite(e.wall_s),
                        "energy_j": finite(e.energy_j),
                        "val_loss": finite(e.val_loss),
                        "accuracy": e.accuracy,
                    })).collect::<Vec<_>>(),
                    "train_curve": v.log.train.iter().map(|t| json!({
                        "step": t.step, "loss": finite(t.loss), "lr": t.lr,
                        "wall_s": finite(t.wall_s),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "command": self.command,
            "created": self.created,
            "baseline": self.baseline().map(|v| v.name.clone()),
            "variants": variants,
            "machine": {
                "threads": self.machine.threads,
                "cores": self.machine.cores,
                "cpu_model": self.machine.cpu_model,
                "energy_meter": self.machine.energy_meter,
            },
        })
    }

    /// `report.csv`: a header and one row per variant, the table's columns with plain numbers.
    pub fn to_csv(&self) -> String {
        let mut s = COLUMNS.join(",");
        s.push('\n');
        for v in &self.variants {
            let f = &v.figures;
            let cells = [
                csv_field(&v.name),
                f.val_loss.to_string(),
                self.change_pct(v).map_or(String::new(), |p| p.to_string()),
                f.params.to_string(),
                f.flops_executed.to_string(),
                f.flops_dense_equivalent.to_string(),
                f.wall_s.to_string(),
                f.tokens_per_s.to_string(),
                f.energy_j.to_string(),
                csv_field(&f.energy_method),
            ];
            s.push_str(&cells.join(","));
            s.push('\n');
        }
        s
    }

    /// `report.svg`: validation loss against training wall time (left) and against energy (right),
    /// one line per variant, with a legend.
    pub fn to_svg(&self) -> Result<String, CliError> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1200, 500)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let panels = root.split_evenly((1, 2));
            let estimate = self.variants.iter().any(|v| !v.figures.energy_measured);
            let energy_axis = if estimate {
                "training energy (J, ESTIMATE)"
            } else {
                "training energy (J, measured)"
            };
            self.panel(
                &panels[0],
                "validation loss vs wall time",
                "training wall time (s)",
                |e| e.wall_s,
            )?;
            self.panel(&panels[1], "validation loss vs energy", energy_axis, |e| {
                e.energy_j
            })?;
            root.present().map_err(plot_err)?;
        }
        Ok(svg)
    }

    /// One panel: val loss (y) against `x_of` (x), a line per variant.
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
        title: &str,
        x_desc: &str,
        x_of: impl Fn(&lopper_train::EvalPoint) -> f64,
    ) -> Result<(), CliError> {
        let curves: Vec<Vec<(f64, f64)>> = self
            .variants
            .iter()
            .map(|v| {
                v.log
                    .evals
                    .iter()
                    .map(|e| (x_of(e), e.val_loss))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect()
            })
            .collect();
        let pts = curves.iter().flatten();
        let x_max = pts.clone().map(|p| p.0).fold(0.0f64, f64::max);
        let (y_min, y_max) = pts
            .map(|p| p.1)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
                (a.min(y), b.max(y))
            });
        let (y_min, y_max) = if y_min.is_finite() {
            let pad = ((y_max - y_min) * 0.05).max(1e-3);
            (y_min - pad, y_max + pad)
        } else {
            (0.0, 1.0)
        };
        let x_max = if x_max > 0.0 { x_max * 1.02 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, y_min..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("validation loss")
            .draw()
            .map_err(plot_err)?;
        for (i, (v, c)) in self.variants.iter().zip(curves).enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(c, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(v.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }

    /// Writes [`FILES`] into `dir` (created if needed), each atomically. Everything is rendered
    /// before the first write; if a write fails, the files written so far (and `dir`, if this call
    /// created it and it is left empty) are removed. Returns the paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, CliError> {
        let json = serde_json::to_string_pretty(&self.to_json())
            .map_err(|e| CliError::Report(format!("report.json: {e}")))?;
        let contents = [json, self.to_csv(), self.to_svg()?];
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|source| CliError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut written = Vec::new();
        for (name, text) in FILES.iter().zip(&contents) {
            let path = dir.join(name);
            if let Err(e) = lopper_tensor::io::write_atomic(&path, |w| w.write_all(text.as_bytes()))
            {
                for p in &written {
                    let _ = std::fs::remove_file(p);
                }
                if created {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e.into());
            }
            written.push(path);
        }
        Ok(written)
    }
}

fn plot_err<E: std::error::Error>(e: E) -> CliError {
    CliError::Report(format!("report.svg: {e}"))
}

/// JSON `null` for NaN and infinities (JSON has no such numbers).
fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn event_json(e: &Event) -> Value {
    json!({"step": e.step, "source": e.source, "message": e.message})
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `x` with an SI prefix and 3 significant digits (`1.23G`, `456M`, `12`).
pub fn si(x: f64) -> String {
    const UNITS: [(f64, &str); 5] = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    match UNITS.iter().find(|(s, _)| x.abs() >= *s) {
        Some((s, u)) => {
            let v = x / s;
            let digits = if v.abs() >= 100.0 {
                0
            } else if v.abs() >= 10.0 {
                1
            } else {
                2
            };
            format!("{v:.digits$}{u}")
        }
        None => format!("{x:.0}"),
    }
}

/// UTC time `t` as a compact stamp for folder names (`20261128T234939Z`) and as ISO 8601
/// (`2026-11-28T23:49:39Z`).
pub fn utc_stamp(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // civil-from-days (H. Hinnant), days since 1970-01-01 -> (y, m, d)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
    )
}

/// `--out` or, by default, `runs/<command>-<UTC stamp>/`.
pub fn out_dir(out: Option<&Path>, command: &str) -> PathBuf {
    match out {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("runs").join(format!("{command}-{}", utc_stamp(SystemTime::now()).0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopper_train::EvalPoint;

    fn variant(name: &str, loss: f64, measured: bool, evals: usize) -> Variant {
        let mut log = RunLog::default();
        for i in 0..evals {
            log.evals.push(EvalPoint {
                step: 10 * i as u64,
                val_loss: loss + 1.0 / (i as f64 + 1.0),
                accuracy: None,
                wall_s: 0.5 * i as f64,
                energy_j: 7.0 * i as f64,
                energy_method: "estimate-cpu-time".into(),
                flops_executed: 100 * i as u64,
                flops_dense_equivalent: 200 * i as u64,
            });
        }
        log.event(30, "stage", format!("step 30: {name}.fc -> csr"));
        Variant {
            name: name.into(),
            recipe: format!("recipes/{name}.toml (embedded)"),
            recipe_hash: "abc123".into(),
            figures: Figures {
                steps: 40,
                val_loss: loss,
                best_val_loss: loss,
                accuracy: Some(0.5),
                params: 1234,
                wall_s: 2.0,
                tokens_per_s: 1000.0,
                tokens_per_s_steady: measured.then_some(1100.0),
                flops_executed: 4_000_000,
                flops_dense_equivalent: 8_000_000_000,
                energy_j: 30.0,
                energy_method: if measured {
                    "rapl"
                } else {
                    "estimate-cpu-time"
                }
                .into(),
                energy_measured: measured,
                stopped_early: None,
                run_wall_s: 2.5,
                energy_report: None,
                // the unmeasured fixture also ran on a crowded VM
                cpu_steal: if measured { Some(0.001) } else { Some(0.25) },
            },
            log,
        }
    }

    fn report(vs: Vec<Variant>) -> Report {
        let m = Machine::detect(2, vec!["picked an ESTIMATE".into()]);
        Report::new("compare", vs, m)
    }

    #[test]
    fn change_is_against_dense_else_the_first() {
        let r = report(vec![
            variant("a", 2.0, false, 3),
            variant("dense", 4.0, false, 3),
        ]);
        assert_eq!(r.change_pct(&r.variants[0]), Some(-50.0));
        assert_eq!(r.change_pct(&r.variants[1]), Some(0.0));
        let r = report(vec![
            variant("a", 2.0, false, 3),
            variant("b", 3.0, false, 3),
        ]);
        assert_eq!(r.change_pct(&r.variants[1]), Some(50.0));
        let r = report(vec![
            variant("a", 0.0, false, 3),
            variant("b", 3.0, false, 3),
        ]);
        assert_eq!(r.change_pct(&r.variants[1]), None);
    }

    #[test]
    fn table_names_variants_events_and_estimates_loudly() {
        let r = report(vec![
            variant("dense", 2.0, true, 3),
            variant("sparse, \"x\"", 2.2, false, 0),
        ]);
        let t = r.table();
        assert!(t.contains("vs dense"), "{t}");
        assert!(t.contains("+10.00%"), "{t}");
        assert!(t.contains("ESTIMATE estimate-cpu-time"), "{t}");
        assert!(t.contains("measured by the rapl counter"), "{t}");
        assert!(t.contains("NOT a measurement"), "{t}");
        assert!(t.contains("  step 30: dense.fc -> csr [stage]\n"), "{t}");
        // 25% steal is flagged once (the other variant's 0.1% is not)
        assert_eq!(
            t.matches("WARNING: the hypervisor gave 25.0%").count(),
            1,
            "{t}"
        );
        assert!(!t.contains("gave 0.1%"), "{t}");
        // header, rule and two rows line up: every row has 9 separators
        for l in t.lines().take(4).filter(|l| !l.starts_with('-')) {
            assert_eq!(l.matches(" | ").count(), 9, "{l}");
        }
    }

    #[test]
    fn json_has_the_contract_keys_and_null_for_nan() {
        let mut v = variant("dense", f64::NAN, false, 2);
        v.figures.tokens_per_s = 12.5;
        let j = report(vec![v]).to_json();
        let v0 = &j["variants"][0];
        for k in [
            "name",
            "val_loss",
            "tokens_per_s",
            "wall_s",
            "flops_executed",
            "flops_dense_equivalent",
            "energy_j",
            "energy_method",
        ] {
            assert!(v0.get(k).is_some(), "missing {k}: {v0}");
        }
        assert!(v0["val_loss"].is_null());
        assert_eq!(v0["tokens_per_s"], 12.5);
        // no step past the warm-up in this fixture: null, not a number
        assert!(v0["tokens_per_s_steady"].is_null(), "{v0}");
        assert_eq!(
            report(vec![variant("x", 1.0, true, 2)]).to_json()["variants"][0]["tokens_per_s_steady"],
            1100.0
        );
        assert_eq!(v0["cpu_steal"], 0.25);
        assert_eq!(v0["curve"].as_array().unwrap().len(), 2);
        assert_eq!(v0["curve"][1]["energy_j"], 7.0);
        assert_eq!(j["machine"]["threads"], 2);
        assert!(j["created"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn csv_quotes_and_counts() {
        let r = report(vec![
            variant("dense", 2.0, false, 1),
            variant("a,b", 2.0, false, 1),
        ]);
        let c = r.to_csv();
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], COLUMNS.join(","));
        assert!(lines[2].starts_with("\"a,b\",2,0,1234,4000000,8000000000,"));
    }

    #[test]
    fn svg_mentions_every_variant_even_without_points() {
        let r = report(vec![
            variant("dense", 2.0, false, 4),
            variant("rigl90", 2.5, false, 0),
            variant("lowrank", f64::NAN, false, 1),
        ]);
        let svg = r.to_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for n in ["dense", "rigl90", "lowrank", "ESTIMATE", "wall time"] {
            assert!(svg.contains(n), "no {n} in the SVG");
        }
    }

    #[test]
    fn write_puts_three_files_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b");
        let r = report(vec![variant("dense", 2.0, false, 3)]);
        let paths = r.write(&out).unwrap();
        assert_eq!(paths.len(), 3);
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["report.csv", "report.json", "report.svg"]);
        let j: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(j["variants"][0]["name"], "dense");
    }

    #[test]
    fn utc_stamps() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_909_779);
        let (a, b) = utc_stamp(t);
        assert_eq!(b, "2026-11-28T23:49:39Z");
        assert_eq!(a, "20261128T234939Z");
        assert_eq!(utc_stamp(UNIX_EPOCH).1, "1970-01-01T00:00:00Z");
        // 2000-02-29 (leap day of a century leap year)
        let t = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(utc_stamp(t).1, "2000-02-29T00:00:00Z");
    }

    #[test]
    fn si_prefixes() {
        assert_eq!(si(12.0), "12");
        assert_eq!(si(1234.0), "1.23k");
        assert_eq!(si(45_600_000.0), "45.6M");
        assert_eq!(si(123_000_000_000.0), "123G");
        assert_eq!(si(2.5e15), "2.50P");
    }
}
