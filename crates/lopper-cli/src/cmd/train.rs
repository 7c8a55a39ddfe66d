//! `lopper train --recipe FILE.toml`: builds the trainer a recipe describes, trains it with a
//! progress bar, prints the one-row table and writes the report files (see [`super::report`]).
//!
//! Also the machinery `compare` and `demo` share: [`RecipeSource`] (a recipe file or one embedded
//! in the binary), [`RunOpts`] and [`run_all`], which trains recipes one after another and makes
//! the [`Report`].
use super::report::{self, Figures, Machine, Report, Variant};
use crate::CliError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lopper_energy::{EstimateMeter, best_available_cpu};
use lopper_train::recipe::spans::Spans;
use lopper_train::recipe::spec::Checker;
use lopper_train::recipe::{EndSpec, Recipe, RecipeSpec};
use lopper_train::{Progress, RunSummary, Trainer};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Train one recipe and write its report.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  lopper train --recipe recipes/sparse24.toml\n  \
lopper train --recipe my.toml --steps 200 --checkpoint-every 50 --out runs/mine\n  \
lopper train --recipe my.toml --resume runs/mine/checkpoints/step-00000100 --out runs/mine2"
)]
pub struct Args {
    /// The recipe (TOML; docs/recipes.md).
    #[arg(long)]
    pub recipe: PathBuf,
    /// Output folder for report.json, report.csv, report.svg and checkpoints (default
    /// runs/train-<UTC time>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train this many steps in all instead of the recipe's.
    #[arg(long, allow_negative_numbers = true)]
    pub steps: Option<u64>,
    /// Continue from this checkpoint (a step-XXXXXXXX folder or its manifest) of the same recipe.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Save a checkpoint every N steps, and one after the last step, into the recipe's
    /// train.checkpoint_dir when it names one, else into OUT/checkpoints/.
    #[arg(long, allow_negative_numbers = true)]
    pub checkpoint_every: Option<u64>,
    /// rayon threads (0 = all cores).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub threads: usize,
    /// No progress bar and no status lines (the table is still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// Where a recipe comes from: a file, or text embedded in the binary.
#[derive(Clone, Debug)]
pub struct RecipeSource {
    /// How reports name it (`recipes/dense.toml (embedded)` or the path given).
    pub label: String,
    /// The file, when it is one.
    pub path: Option<PathBuf>,
    /// Embedded text, when it is not a file.
    pub text: Option<&'static str>,
    /// The command-line argument that gave the file (`--recipe`, `RECIPES`), for errors.
    pub arg: &'static str,
}

impl RecipeSource {
    /// A recipe file.
    pub fn file(path: &Path) -> RecipeSource {
        RecipeSource {
            label: path.display().to_string(),
            path: Some(path.to_path_buf()),
            text: None,
            arg: "--recipe",
        }
    }

    /// This source given by the argument `arg` (errors about the file name it).
    pub fn given_by(self, arg: &'static str) -> RecipeSource {
        RecipeSource { arg, ..self }
    }

    /// A recipe embedded in the binary under its repository path `name` (`recipes/dense.toml`).
    pub fn embedded(name: &str, text: &'static str) -> RecipeSource {
        RecipeSource {
            label: format!("{name} (embedded)"),
            path: None,
            text: Some(text),
            arg: "embedded",
        }
    }

    /// Parses and checks the recipe (errors name the file, line and key); also returns its text.
    pub fn load(&self) -> Result<(Recipe, String), CliError> {
        let text = match (&self.path, self.text) {
            (Some(p), _) => {
                let problem = match std::fs::metadata(p) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such file"),
                    Err(_) => None, // the read below says why
                    Ok(m) if m.is_dir() => Some("is a folder, not a recipe file"),
                    Ok(m) if !m.is_file() => Some("is not a regular file"),
                    Ok(_) => None,
                };
                if let Some(problem) = problem {
                    return Err(CliError::Usage(format!(
                        "{} {}: {problem}",
                        self.arg,
                        p.display()
                    )));
                }
                std::fs::read_to_string(p).map_err(|source| CliError::Io {
                    path: p.clone(),
                    source,
                })?
            }
            (None, Some(t)) => t.to_string(),
            (None, None) => {
                return Err(CliError::Usage(format!(
                    "recipe {}: neither a file nor embedded text",
                    self.label
                )));
            }
        };
        Ok((Recipe::from_str(&text, &self.label)?, text))
    }
}

/// `--steps N`: the run takes `n` steps and keeps its shape: every key counted in steps
/// (schedule warmup, train eval_every and log_every, stage start, end, at, every, delta_t) is
/// scaled by `n / steps` (rounded; periods at least 1, steps inside the run; `eval_every = 0`,
/// evaluation at the end only, stays 0). Returns what changed, as `key old -> new` (said on
/// stderr: never silent).
pub fn scale_steps(spec: &mut RecipeSpec, n: u64) -> Vec<String> {
    let old = spec.train.steps.unwrap_or(n).max(1);
    let mut changes = vec![format!("train.steps {old} -> {n}")];
    spec.train.steps = Some(n);
    if old == n {
        return changes;
    }
    let f = n as f64 / old as f64;
    let last = n.saturating_sub(1);
    let mut sc = |key: String, v: &mut Option<u64>, lo: u64, hi: u64| {
        if let Some(x) = *v {
            let y = ((x as f64 * f).round() as u64).clamp(lo, hi.max(lo));
            if y != x {
                changes.push(format!("{key} {x} -> {y}"));
            }
            *v = Some(y);
        }
    };
    sc("schedule.warmup".into(), &mut spec.schedule.warmup, 0, last);
    if spec.train.eval_every != Some(0) {
        sc("train.eval_every".into(), &mut spec.train.eval_every, 1, n);
    }
    sc("train.log_every".into(), &mut spec.train.log_every, 1, n);
    for (i, st) in spec.stage.iter_mut().enumerate() {
        let k = |key: &str| format!("stage[{i}].{key}");
        sc(k("start"), &mut st.start, 0, last);
        sc(k("at"), &mut st.at, 0, last);
        sc(k("every"), &mut st.every, 1, n);
        sc(k("delta_t"), &mut st.delta_t, 1, n);
        if let Some(EndSpec::Step(e)) = st.end {
            let mut v = Some(e);
            sc(k("end"), &mut v, st.start.unwrap_or(0), last);
            st.end = v.map(EndSpec::Step);
        }
    }
    changes
}

/// What every training command shares.
#[derive(Clone, Debug, Default)]
pub struct RunOpts {
    /// Steps override (`--steps`).
    pub steps: Option<u64>,
    /// Checkpoint to resume from (`train` only).
    pub resume: Option<PathBuf>,
    /// Checkpoint period; checkpoints go to OUT/checkpoints (OUT/checkpoints/NAME for several).
    pub checkpoint_every: Option<u64>,
    /// No progress bar, no status lines.
    pub quiet: bool,
}

/// Sets the size of rayon's global pool (`0` = all cores) and returns the threads it has.
/// The calling (main) thread becomes the pool's first worker: the training loop then starts each
/// parallel region from inside the pool instead of handing it over and sleeping until it is done.
/// On the 2-core machine that cut a 30-step run's context switches about fourfold (dense: 19,663
/// to 4,728; Csr 80%: 7,987 to 1,714). The pool can be set once per process; a second call with a
/// size is an error (with 0, the existing pool is kept). Call it from the main thread: the caller
/// stays one of the pool's workers for the rest of the process, so it must outlive every use of
/// rayon (a pool of one thread whose caller has exited would run nothing).
pub fn set_threads(n: usize) -> Result<usize, CliError> {
    check_threads(n)?;
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .use_current_thread()
        .build_global();
    if let Err(e) = built
        && n > 0
    {
        return Err(CliError::Usage(format!("--threads {n}: {e}")));
    }
    Ok(rayon::current_num_threads())
}

/// The most threads a `--threads` option accepts: 8 per core, at least 64. Far more only spends
/// the run creating and switching threads (100,000 ran for minutes on an 8x8 problem).
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (8 * cores).max(64)
}

/// Refuses `--threads n` above [`max_threads`].
pub fn check_threads(n: usize) -> Result<(), CliError> {
    let max = max_threads();
    if n > max {
        return Err(CliError::Usage(format!(
            "--threads {n}: at most {max} on this machine (8 per core, at least 64)"
        )));
    }
    Ok(())
}

/// Refuses an output path that is not a folder and cannot become one (a file, a file among its
/// parents, a dangling link), before any training is spent; creates nothing.
pub fn check_out_dir(out: &Path) -> Result<(), CliError> {
    lopper_train::checkpoint::check_folder(out)
        .map_err(|e| CliError::Usage(format!("--out {}: {e}", out.display())))
}

/// `create_dir_all(dir)`, adding the folders it made (outermost first) to `made`.
fn create_dir_recorded(dir: &Path, made: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_err())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(dir)?;
    made.extend(missing.into_iter().rev());
    Ok(())
}

/// Removes the folders of `made` that are still empty, innermost first: a failed run leaves
/// behind only what it wrote (a checkpoint folder holding checkpoints stays, for `--resume`).
fn remove_empty(made: &[PathBuf]) {
    for d in made.iter().rev() {
        // fails, as meant, on a folder that is not empty
        let _ = std::fs::remove_dir(d);
    }
}

/// Creates the output folder (with its parents) before any training, adding the folders made to
/// `made`; errors name `--out`.
fn create_out_dir(out: &Path, made: &mut Vec<PathBuf>) -> Result<(), CliError> {
    check_out_dir(out)?;
    create_dir_recorded(out, made).map_err(|e| {
        CliError::Usage(format!(
            "--out {}: cannot create the folder: {e}",
            out.display()
        ))
    })
}

/// A bar on stderr when it is a terminal and `quiet` is off; hidden otherwise.
fn progress_bar(name: &str, total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{prefix:>9} {pos:>5}/{len} [{wide_bar}] {msg} ETA {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(name.to_string());
    bar
}

/// The progress hook: position, loss, throughput (and the last validation loss).
fn progress_hook(bar: ProgressBar) -> lopper_train::trainer::ProgressFn {
    let mut last_val: Option<f64> = None;
    Box::new(move |p: &Progress| {
        if let Some(e) = &p.eval {
            last_val = Some(e.val_loss);
        }
        bar.set_position(p.step);
        let val = last_val.map_or(String::new(), |v| format!(" val {v:.3}"));
        bar.set_message(format!(
            "loss {:.3}{val} {:.0} tok/s",
            p.loss, p.examples_per_s
        ));
    })
}

/// A built trainer with its recipe's name and hash.
struct Prepared {
    name: String,
    hash: String,
    trainer: Trainer,
    /// The checkpoint folder, when the run checkpoints, and who chose it.
    ckpt: Option<(PathBuf, CkptOwner)>,
}

/// Who chose a checkpoint folder, for errors: `--out` (OUT/checkpoints) or the recipe's key.
enum CkptOwner {
    Out,
    Recipe { file: String, line: usize },
}

impl Prepared {
    /// Creates the checkpoint folder (before any training); errors name `--out` or the recipe's
    /// `train.checkpoint_dir` with its line.
    fn create_ckpt_dir(&self, out: &Path, made: &mut Vec<PathBuf>) -> Result<(), CliError> {
        let Some((dir, owner)) = &self.ckpt else {
            return Ok(());
        };
        let problem = match lopper_train::checkpoint::check_folder(dir) {
            Ok(()) => match create_dir_recorded(dir, made) {
                Ok(()) => return Ok(()),
                Err(e) => format!("cannot create the folder: {e}"),
            },
            Err(e) => e,
        };
        Err(match owner {
            CkptOwner::Out => CliError::Usage(format!(
                "--out {}: checkpoint folder {}: {problem}",
                out.display(),
                dir.display()
            )),
            CkptOwner::Recipe { file, line } => lopper_train::Error::Recipe {
                path: file.clone(),
                line: *line,
                key: "train.checkpoint_dir".into(),
                detail: format!("{}: {problem}", dir.display()),
            }
            .into(),
        })
    }
}

/// Parses and builds one recipe with the overrides: `--steps` replaces `[train] steps` (so the
/// schedule and run-relative stage ends follow it), `--checkpoint-every` replaces `[train]
/// checkpoint_every`, and checkpoints go to OUT/checkpoints (OUT/checkpoints/NAME when
/// `several` recipes run) unless the recipe names its own `checkpoint_dir`. A `--resume`
/// checkpoint must come from the same recipe (its hash before the overrides). Nothing is trained
/// or written yet.
fn prepare(
    src: &RecipeSource,
    opts: &RunOpts,
    out: &Path,
    several: bool,
) -> Result<Prepared, CliError> {
    let (mut recipe, text) = src.load()?;
    // the recipe's own hash, before the overrides: checkpoints record it and a resume checks it
    let hash = recipe.hash();
    let name = recipe.name().to_string();
    let checkpointing =
        opts.checkpoint_every.is_some() || recipe.spec.train.checkpoint_every.is_some();
    if let Some(p) = &opts.resume {
        let (mpath, m) = lopper_train::checkpoint::read_manifest(p)?;
        if !checkpointing && m.callbacks.iter().any(|c| c.name == "checkpointing") {
            return Err(CliError::Usage(format!(
                "--resume {}: that run saved checkpoints (--checkpoint-every); pass \
                 --checkpoint-every again so that the resumed run has the same callbacks",
                mpath.display()
            )));
        }
        if let Some(saved) = m.recipe_hash.filter(|h| *h != hash) {
            return Err(CliError::Usage(format!(
                "--resume {}: saved by a recipe with hash {saved}, but {} has hash {hash}: \
                 resume with the recipe that made the checkpoint",
                mpath.display(),
                src.label
            )));
        }
    }
    let ckpt_dir = if several {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        out.join("checkpoints").join(safe)
    } else {
        out.join("checkpoints")
    };
    if let Some(n) = opts.steps {
        if n == 0 {
            return Err(CliError::Usage("--steps must be at least 1".into()));
        }
        let changes = scale_steps(&mut recipe.spec, n);
        if !opts.quiet {
            eprintln!("lopper: {name}: --steps {n}: {}", changes.join(", "));
        }
        // the scaled recipe must still make sense (errors point at the original keys' lines)
        let spans = Spans::new(&text);
        Checker {
            spans: &spans,
            file: &src.label,
        }
        .check(&recipe.spec)?;
    }
    let train = &mut recipe.spec.train;
    if let Some(every) = opts.checkpoint_every {
        train.checkpoint_every = Some(every);
    }
    let ckpt = match (
        train.checkpoint_every.is_some(),
        train.checkpoint_dir.clone(),
    ) {
        (false, _) => None,
        (true, Some(d)) => {
            let line = Spans::new(&text).line(&lopper_train::recipe::spec::keys(&[
                "train",
                "checkpoint_dir",
            ]));
            let file = src.label.clone();
            Some((PathBuf::from(d), CkptOwner::Recipe { file, line }))
        }
        (true, None) => {
            // found now, not blamed on a train.checkpoint_dir the recipe does not have
            if let Err(e) = lopper_train::checkpoint::check_folder(&ckpt_dir) {
                return Err(CliError::Usage(format!(
                    "--out {}: checkpoint folder {}: {e}",
                    out.display(),
                    ckpt_dir.display()
                )));
            }
            train.checkpoint_dir = Some(ckpt_dir.display().to_string());
            Some((ckpt_dir, CkptOwner::Out))
        }
    };
    let mut trainer = recipe.build()?;
    trainer.set_recipe_hash(Some(hash.clone()));
    if let Some(p) = &opts.resume {
        trainer.resume_from(p)?;
    }
    Ok(Prepared {
        name,
        hash,
        trainer,
        ckpt,
    })
}

/// The report's figures from a run's summary: training wall time and training energy (the
/// `train` phase; evaluation is metered apart), the model's stored parameters, and the CPU steal
/// measured around the run.
fn figures(s: &RunSummary, params: usize, cpu_steal: Option<f64>) -> Figures {
    let train = s.energy.phase("train").unwrap_or(&s.energy.total);
    let method = train.joules.method;
    Figures {
        steps: s.steps,
        val_loss: s.final_val_loss.unwrap_or(f64::NAN),
        best_val_loss: s.best_val_loss.unwrap_or(f64::NAN),
        accuracy: s.accuracy,
        params,
        wall_s: s.train_wall_s,
        tokens_per_s: s.tokens_or_examples_per_s,
        tokens_per_s_steady: s.steady_per_s,
        flops_executed: s.flops_executed,
        flops_dense_equivalent: s.flops_dense_equivalent,
        energy_j: train.joules.value,
        energy_method: method.label().to_string(),
        energy_measured: !method.is_estimate(),
        stopped_early: s.stopped_early.clone(),
        run_wall_s: s.wall_s,
        energy_report: Some(s.energy.clone()),
        cpu_steal,
    }
}

/// Trains `sources` one after another (all are parsed and built first, and `out` and every
/// checkpoint folder created, so a bad recipe or folder fails before any training), then makes
/// the report. Checkpoints, when asked, go under `out` unless a recipe names its own folder.
pub fn run_all(
    command: &str,
    sources: &[RecipeSource],
    opts: &RunOpts,
    threads: usize,
    out: &Path,
) -> Result<Report, CliError> {
    let several = sources.len() > 1;
    let mut prepared = Vec::with_capacity(sources.len());
    for src in sources {
        prepared.push(prepare(src, opts, out, several)?);
    }
    let mut names: Vec<&str> = prepared.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(CliError::Usage(format!(
            "two recipes are named {:?}: give each variant its own name",
            w[0]
        )));
    }
    // every folder a run writes exists before the first step; on failure, those made and still
    // empty are removed again
    let mut made = Vec::new();
    let r = create_out_dir(out, &mut made)
        .and_then(|()| {
            prepared
                .iter()
                .try_for_each(|p| p.create_ckpt_dir(out, &mut made))
        })
        .and_then(|()| train_prepared(command, prepared, sources, opts, threads));
    if r.is_err() {
        remove_empty(&made);
    }
    r
}

/// The training loop of [`run_all`], once its folders exist.
fn train_prepared(
    command: &str,
    prepared: Vec<Prepared>,
    sources: &[RecipeSource],
    opts: &RunOpts,
    threads: usize,
) -> Result<Report, CliError> {
    let mut variants = Vec::with_capacity(prepared.len());
    let mut meter_reasons = Vec::new();
    for (i, (mut p, src)) in prepared.into_iter().zip(sources).enumerate() {
        let watts = p.trainer.config().estimate_watts_per_core;
        // training runs on the CPU: NVML would meter an idle GPU beside it
        let sel = best_available_cpu(EstimateMeter::cpu_time(watts)?);
        if i == 0 {
            meter_reasons = sel.reasons.clone();
            if !opts.quiet {
                for r in &sel.reasons {
                    eprintln!("lopper: energy: {r}");
                }
            }
        }
        p.trainer.set_energy_meter(sel.meter);
        let total = p.trainer.config().steps;
        if !opts.quiet {
            eprintln!(
                "lopper: [{}/{}] training {} ({}): steps {}..{total}, {}",
                i + 1,
                sources.len(),
                p.name,
                src.label,
                p.trainer.step(),
                p.trainer.data().describe()
            );
        }
        let bar = progress_bar(&p.name, total, opts.quiet);
        bar.set_position(p.trainer.step());
        p.trainer.set_progress(progress_hook(bar.clone()));
        let steal = lopper_energy::steal::StealWindow::start();
        let summary = p.trainer.run();
        let cpu_steal = steal.fraction();
        bar.finish();
        let summary = summary?;
        let params = p.trainer.model_mut().num_params();
        if !opts.quiet {
            eprintln!(
                "lopper: {} done: {} steps in {:.1} s of training",
                p.name, summary.steps, summary.train_wall_s
            );
        }
        variants.push(Variant {
            name: p.name,
            recipe: src.label.clone(),
            recipe_hash: p.hash,
            figures: figures(&summary, params, cpu_steal),
            log: p.trainer.log().clone(),
        });
    }
    Ok(Report::new(
        command,
        variants,
        Machine::detect(threads, meter_reasons),
    ))
}

/// Prints the table and writes the report files into `out`.
pub fn finish(report: &Report, out: &Path) -> Result<(), CliError> {
    let paths = report.write(out)?;
    print!("{}", report.table());
    println!(
        "\nreport: {}",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Runs `lopper train`.
pub fn run(args: Args) -> Result<(), CliError> {
    let out = report::out_dir(args.out.as_deref(), "train");
    check_out_dir(&out)?;
    if args.checkpoint_every == Some(0) {
        return Err(CliError::Usage(
            "--checkpoint-every must be at least 1".into(),
        ));
    }
    let threads = set_threads(args.threads)?;
    let opts = RunOpts {
        steps: args.steps,
        resume: args.resume,
        checkpoint_every: args.checkpoint_every,
        quiet: args.quiet,
    };
    let report = run_all(
        "train",
        &[RecipeSource::file(&args.recipe)],
        &opts,
        threads,
        &out,
    )?;
    finish(&report, &out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::demo::RECIPES;

    fn recipe(i: usize) -> (Recipe, String) {
        let (name, text) = RECIPES[i];
        RecipeSource::embedded(name, text).load().unwrap()
    }

    #[test]
    fn a_failed_run_removes_only_the_empty_folders_it_made() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("a/b/out");
        let ck = out.join("checkpoints");
        let mut made = Vec::new();
        create_dir_recorded(&out, &mut made).unwrap();
        create_dir_recorded(&ck, &mut made).unwrap();
        let want: Vec<PathBuf> = ["a", "a/b", "a/b/out", "a/b/out/checkpoints"]
            .iter()
            .map(|p| t.path().join(p))
            .collect();
        assert_eq!(made, want);
        // all still empty: all go, the folder that was there stays
        remove_empty(&made);
        assert!(!t.path().join("a").exists());
        assert!(t.path().is_dir());
        // a checkpoint written before the failure keeps its folder and the folders above it
        made.clear();
        create_dir_recorded(&ck, &mut made).unwrap();
        std::fs::write(ck.join("step-2.safetensors"), b"x").unwrap();
        std::fs::create_dir(t.path().join("a/other")).unwrap(); // not made by the run: kept
        remove_empty(&made);
        assert!(ck.join("step-2.safetensors").is_file());
        assert!(t.path().join("a/other").is_dir());
        // a folder that existed before is not recorded
        let mut again = Vec::new();
        create_dir_recorded(&ck, &mut again).unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn scaling_keeps_every_demo_recipe_valid() {
        for i in 0..RECIPES.len() {
            let (r, text) = recipe(i);
            let spans = Spans::new(&text);
            let own = r.spec.train.steps.expect("demo recipes set their steps");
            for n in [1, 2, 3, 7, 20, 239, 240, 241, 299, 300, 301, 1000, 12_345] {
                let mut spec = r.spec.clone();
                let changes = scale_steps(&mut spec, n);
                assert_eq!(changes[0], format!("train.steps {own} -> {n}"));
                assert_eq!(spec.train.steps, Some(n));
                Checker {
                    spans: &spans,
                    file: RECIPES[i].0,
                }
                .check(&spec)
                .unwrap_or_else(|e| panic!("{} at {n} steps: {e}", RECIPES[i].0));
                for st in &spec.stage {
                    for v in [st.at, st.start].into_iter().flatten() {
                        assert!(v < n, "{v} >= {n}");
                    }
                    for v in [st.every, st.delta_t].into_iter().flatten() {
                        assert!(v >= 1);
                    }
                }
            }
        }
    }

    #[test]
    fn scaling_is_proportional_and_said() {
        // gradual80's MLP stage: start 32, end 192, every 8 over 240 steps; warmup 16, eval
        // every 40
        let (r, _) = recipe(2);
        assert_eq!(r.spec.train.steps, Some(240));
        let mut spec = r.spec.clone();
        let changes = scale_steps(&mut spec, 600);
        let st = &spec.stage[0];
        assert_eq!((st.start, st.every), (Some(80), Some(20)));
        assert_eq!(st.end, Some(EndSpec::Step(480)));
        assert_eq!(spec.schedule.warmup, Some(40));
        assert_eq!(spec.train.eval_every, Some(100));
        assert!(
            changes.contains(&"stage[0].end 192 -> 480".to_string()),
            "{changes:?}"
        );
        // the same number of steps changes nothing
        let mut same = r.spec.clone();
        assert_eq!(scale_steps(&mut same, 240).len(), 1);
        assert_eq!(same, r.spec);
    }

    #[test]
    fn eval_every_zero_stays_zero() {
        // 0: evaluate only at the end, not a period to scale
        let (r, _) = recipe(0);
        for n in [1, 3, 240, 1000] {
            let mut spec = r.spec.clone();
            spec.train.eval_every = Some(0);
            let changes = scale_steps(&mut spec, n);
            assert_eq!(spec.train.eval_every, Some(0), "{n} steps");
            assert!(
                !changes.iter().any(|c| c.starts_with("train.eval_every")),
                "{changes:?}"
            );
        }
    }

    #[test]
    fn demo_recipes_are_the_six_in_order() {
        let names: Vec<String> = (0..RECIPES.len())
            .map(|i| recipe(i).0.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "dense",
                "masked80",
                "gradual80",
                "sparse24",
                "lowrank",
                "rigl90"
            ]
        );
    }
}
