//! `lopper prune`: one-shot pruning of a safetensors checkpoint.
use crate::CliError;
use clap::ValueEnum;
use lopper_prune::checkpoint::{PruneSpec, prune_checkpoint};
use lopper_prune::{Scope, store};
use std::path::PathBuf;

/// Where the budget is spent.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScopeArg {
    /// Every tensor reaches the sparsity on its own.
    Layer,
    /// All selected tensors ranked together (unstructured only).
    Global,
}

/// How the output is stored.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StoreArg {
    /// The same tensors, same dtypes, with zeros: loadable by any tool.
    Dense,
    /// CSR or N:M parts plus a manifest under the `lopper` metadata key (see docs/pruning.md).
    Compressed,
}

/// Prune a safetensors checkpoint in one shot (f32, f16, bf16 kept as they are; other dtypes
/// passed through).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  lopper prune model.safetensors -o pruned.safetensors --sparsity 0.5\n  \
lopper prune model.safetensors -o p24.safetensors --pattern 2:4 --store compressed\n  \
lopper prune model.safetensors -o g.safetensors --sparsity 0.8 --scope global --exclude 'lm_head'"
)]
pub struct Args {
    /// Input .safetensors file (a lopper compressed store is expanded first).
    pub input: PathBuf,
    /// Output file (written atomically: never half-written).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Fraction of weights to remove, in [0, 1). Implied by N:M patterns.
    #[arg(long, allow_negative_numbers = true)]
    pub sparsity: Option<f64>,
    /// Scoring: magnitude (|w|) or random.
    #[arg(long, default_value = "magnitude")]
    pub method: String,
    /// unstructured, N:M (e.g. 2:4), rows, cols, row-balanced, blocks:HxW, heads:H, channels,
    /// in-channels.
    #[arg(long, default_value = "unstructured")]
    pub pattern: String,
    /// Per layer or global ranking.
    #[arg(long, value_enum, default_value = "layer")]
    pub scope: ScopeArg,
    /// Global scope: minimum density every tensor keeps.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_density: f64,
    /// Only tensors whose name matches this regex.
    #[arg(long)]
    pub include: Option<String>,
    /// No tensor whose name matches this regex.
    #[arg(long)]
    pub exclude: Option<String>,
    /// Also prune 1-D tensors (biases, norms).
    #[arg(long)]
    pub include_1d: bool,
    /// Also prune embeddings.
    #[arg(long)]
    pub include_embeddings: bool,
    /// Output layout.
    #[arg(long, value_enum, default_value = "dense")]
    pub store: StoreArg,
    /// Seed of --method random (only) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// With an N:M pattern: also search an ASP-style channel permutation per tensor and report
    /// the fraction of |w| kept with and without it (the output itself is not permuted).
    #[arg(long)]
    pub permute_report: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `lopper prune`.
pub fn run(args: Args) -> Result<(), CliError> {
    // options that would be ignored are refused, so that a run never means something else than
    // what was asked for
    if matches!(args.scope, ScopeArg::Layer) && args.min_density != 0.0 {
        return Err(CliError::Usage(format!(
            "--min-density {} applies to --scope global only (per layer, every tensor already reaches the sparsity)",
            args.min_density
        )));
    }
    if args.seed.is_some() && !args.method.eq_ignore_ascii_case("random") {
        return Err(CliError::Usage(format!(
            "--seed applies to --method random only ({} is deterministic)",
            args.method
        )));
    }
    let gran = lopper_prune::granularity::parse(&args.pattern)?;
    if matches!(args.scope, ScopeArg::Global) && gran.fixed_density().is_some() {
        return Err(CliError::Usage(format!(
            "--scope global with --pattern {}: the pattern fixes every tensor's density, so there is nothing to rank across tensors (drop --scope global)",
            gran.name()
        )));
    }
    if args.permute_report && gran.fixed_density().is_none() {
        return Err(CliError::Usage(format!(
            "--permute-report applies to N:M patterns only (--pattern {} has no N:M groups to permute)",
            gran.name()
        )));
    }
    let mut scope = match args.scope {
        ScopeArg::Layer => Scope::layer(),
        ScopeArg::Global => Scope::global(args.min_density)?,
    }
    .with_1d(args.include_1d)
    .with_embeddings(args.include_embeddings);
    if let Some(re) = &args.include {
        scope = scope.include(re)?;
    }
    if let Some(re) = &args.exclude {
        scope = scope.exclude(re)?;
    }
    let spec = PruneSpec {
        sparsity: args.sparsity,
        method: args.method.clone(),
        pattern: args.pattern.clone(),
        scope,
        seed: args.seed.unwrap_or(0),
        compressed: matches!(args.store, StoreArg::Compressed),
        permute_report: args.permute_report,
    };
    // validate the cheap arguments before reading a possibly large file
    if let Some(s) = args.sparsity {
        lopper_prune::check_sparsity(s)?;
    }
    lopper_tensor::io::check_output(&args.output)?;
    super::check_input("INPUT", &args.input)?;
    let input = store::load(&args.input)?;
    let mut pruned = prune_checkpoint(&input, &spec)?;
    // a factor store's manifest describes the factors before pruning (rank, error): drop it
    let stale = pruned
        .file
        .metadata
        .remove(super::compress::LOWRANK_KEY)
        .is_some();
    lopper_tensor::io::safetensors::write(&args.output, &pruned.file)?;
    if args.json {
        let v = serde_json::json!({
            "input": args.input, "output": args.output, "sparsity": pruned.sparsity,
            "pattern": pruned.pattern, "method": args.method, "report": pruned.report,
            "permutations": pruned.permutations.iter().map(|(n, p)| serde_json::json!({
                "tensor": n, "kept_identity": p.kept_identity,
                "kept_permuted": p.kept_permuted, "swaps": p.swaps,
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| CliError::Usage(e.to_string()))?
        );
        return Ok(());
    }
    println!(
        "{} -> {}: {} {} at sparsity {}",
        args.input.display(),
        args.output.display(),
        args.method,
        pruned.pattern,
        frac(pruned.sparsity)
    );
    let w = pruned
        .report
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(6);
    println!(
        "{:<w$}  {:>16}  {:>10}  {:>10}  {:>8}  {:>9}",
        "tensor", "shape", "numel", "kept", "density", "kept |w|"
    );
    for t in &pruned.report.tensors {
        println!(
            "{:<w$}  {:>16}  {:>10}  {:>10}  {:>8.4}  {:>9.4}",
            t.name,
            format!("{:?}", t.shape),
            t.numel,
            t.kept,
            t.density,
            t.kept_magnitude
        );
    }
    let tt = &pruned.report.totals;
    println!(
        "{:<w$}  {:>16}  {:>10}  {:>10}  {:>8.4}  {:>9.4}",
        format!("total ({} tensors)", tt.tensors),
        "",
        tt.numel,
        tt.kept,
        tt.density,
        tt.kept_magnitude
    );
    println!(
        "FLOPs per token over pruned tensors: {} dense -> {} sparse ({:.1}% saved); untouched tensors: {}",
        tt.flops_dense,
        tt.flops_sparse,
        100.0 * tt.flops_saved,
        input.entries.len() - tt.tensors
    );
    if stale {
        println!(
            "note: the {} manifest of the input's low-rank factors is dropped (pruning changes them); the factors are now plain tensors",
            super::compress::LOWRANK_KEY
        );
    }
    let achieved = 1.0 - tt.density;
    if (achieved - pruned.sparsity).abs() > 0.01 && tt.numel > 0 {
        println!(
            "note: the pruned tensors reach sparsity {}, not {}{}",
            frac(achieved),
            frac(pruned.sparsity),
            if args.min_density > 0.0 {
                format!(" (--min-density {} keeps more)", args.min_density)
            } else {
                String::new()
            }
        );
    }
    for t in pruned
        .report
        .tensors
        .iter()
        .filter(|t| t.kept == 0 && t.numel > 0)
    {
        println!(
            "note: {} keeps none of its {} weights (sparsity {} rounds its share to 0)",
            t.name, t.numel, pruned.sparsity
        );
    }
    for (name, p) in &pruned.permutations {
        println!(
            "{name}: {} keeps {:.4} of |w| as is, {:.4} with a channel permutation ({} swaps)",
            pruned.pattern, p.kept_identity, p.kept_permuted, p.swaps
        );
    }
    Ok(())
}

/// A fraction with 4 decimals, or in full where 4 would round it to 0 or 1 (0.99999 is not 1.0000).
fn frac(x: f64) -> String {
    let x = x + 0.0; // -0 prints as 0
    let s = format!("{x:.4}");
    if (s == "0.0000" || s == "1.0000") && x != 0.0 && x != 1.0 {
        format!("{x}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn frac_never_rounds_to_the_ends() {
        assert_eq!(super::frac(0.8), "0.8000");
        assert_eq!(super::frac(2.0 / 3.0), "0.6667");
        assert_eq!(super::frac(0.99999), "0.99999");
        assert_eq!(super::frac(1e-6), "0.000001");
        assert_eq!(super::frac(-0.0), "0.0000");
        assert_eq!(super::frac(1.0), "1.0000");
    }
}
