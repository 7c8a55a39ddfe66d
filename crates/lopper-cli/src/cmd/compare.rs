//! `lopper compare RECIPE...`: trains each recipe in turn (one progress bar per run), then prints
//! the full table (change of validation loss against the variant named `dense`, else the first)
//! and writes the report files (see [`super::report`]).
use super::report;
use super::train::{self, RecipeSource, RunOpts};
use crate::CliError;
use std::path::PathBuf;

/// Train several recipes and compare them.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  lopper compare recipes/dense.toml recipes/sparse24.toml --steps 300"
)]
pub struct Args {
    /// Recipe files (TOML), trained in this order.
    #[arg(required = true)]
    pub recipes: Vec<PathBuf>,
    /// Output folder for report.json, report.csv and report.svg (default runs/compare-<UTC time>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train this many steps per recipe instead of each recipe's own.
    #[arg(long, allow_negative_numbers = true)]
    pub steps: Option<u64>,
    /// rayon threads (0 = all cores).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub threads: usize,
    /// No progress bars and no status lines (the table is still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `lopper compare`.
pub fn run(args: Args) -> Result<(), CliError> {
    let out = report::out_dir(args.out.as_deref(), "compare");
    train::check_out_dir(&out)?;
    let threads = train::set_threads(args.threads)?;
    let sources: Vec<RecipeSource> = args
        .recipes
        .iter()
        .map(|p| RecipeSource::file(p).given_by("RECIPES"))
        .collect();
    let opts = RunOpts {
        steps: args.steps,
        quiet: args.quiet,
        ..RunOpts::default()
    };
    let report = train::run_all("compare", &sources, &opts, threads, &out)?;
    train::finish(&report, &out)
}
