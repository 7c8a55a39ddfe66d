//! `lopper demo`: `compare` on the six demo recipes embedded in the binary (so it runs from any
//! folder), in the order dense, masked80, gradual80, sparse24, lowrank, rigl90. `--quick` is a
//! smoke run of a few steps each.
use super::report;
use super::train::{self, RecipeSource, RunOpts};
use crate::CliError;
use std::path::PathBuf;

/// The demo's recipes: (repository path, text), in the order they run.
pub const RECIPES: [(&str, &str); 6] = [
    (
        "recipes/dense.toml",
        include_str!("../../../../recipes/dense.toml"),
    ),
    (
        "recipes/masked80.toml",
        include_str!("../../../../recipes/masked80.toml"),
    ),
    (
        "recipes/gradual80.toml",
        include_str!("../../../../recipes/gradual80.toml"),
    ),
    (
        "recipes/sparse24.toml",
        include_str!("../../../../recipes/sparse24.toml"),
    ),
    (
        "recipes/lowrank.toml",
        include_str!("../../../../recipes/lowrank.toml"),
    ),
    (
        "recipes/rigl90.toml",
        include_str!("../../../../recipes/rigl90.toml"),
    ),
];

/// Steps per variant of `--quick`.
pub const QUICK_STEPS: u64 = 20;

/// Train the six demo variants and compare them.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  lopper demo\n  lopper demo --quick --out runs/smoke")]
pub struct Args {
    /// Output folder for report.json, report.csv and report.svg (default runs/demo-<UTC time>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train this many steps per variant instead of the recipes' own.
    #[arg(long, allow_negative_numbers = true)]
    pub steps: Option<u64>,
    /// A smoke run: 20 steps per variant (unless --steps says otherwise).
    #[arg(long)]
    pub quick: bool,
    /// rayon threads (0 = all cores).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub threads: usize,
    /// No progress bars and no status lines (the table is still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `lopper demo`.
pub fn run(args: Args) -> Result<(), CliError> {
    let out = report::out_dir(args.out.as_deref(), "demo");
    train::check_out_dir(&out)?;
    let threads = train::set_threads(args.threads)?;
    let sources: Vec<RecipeSource> = RECIPES
        .iter()
        .map(|(name, text)| RecipeSource::embedded(name, text))
        .collect();
    let opts = RunOpts {
        steps: args.steps.or(args.quick.then_some(QUICK_STEPS)),
        quiet: args.quiet,
        ..RunOpts::default()
    };
    let report = train::run_all("demo", &sources, &opts, threads, &out)?;
    train::finish(&report, &out)
}
