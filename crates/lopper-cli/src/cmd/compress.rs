//! `lopper compress`: low-rank compression of the 2-D tensors of a safetensors checkpoint.
//!
//! Each matched 2-D float tensor W (M, N) is factored as U V with rank chosen by --rank, --energy or
//! --ratio (lopper_lowrank::RankRule), computed in f32 (svd: f64) and written back in the input's
//! dtype: `--store dense` writes U V under the same name, `--store factors` writes NAME.lowrank_u
//! (M, r) and NAME.lowrank_v (r, N) plus a JSON manifest under the `lopper.lowrank` metadata key.
//! Everything else (1-D, 3-D+, integer tensors, unmatched names) is copied through unchanged.
use crate::CliError;
use clap::ValueEnum;
use lopper_lowrank::{LowRank, Method, RankRule, RsvdParams, compress_matrix, rel_frobenius_error};
use lopper_tensor::io::safetensors::{self as st, Entry, SafetensorsFile};
use lopper_tensor::{Par, Tensor};
use std::path::PathBuf;

/// Decomposition.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MethodArg {
    /// Exact truncated SVD (faer, f64): the optimal rank-r error.
    Svd,
    /// Randomized SVD (f32; --oversample, --power-iters, --seed).
    Rsvd,
}

/// How the result is stored.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StoreArg {
    /// The rank-r reconstruction in place of each tensor (same names, shapes, dtypes).
    Dense,
    /// NAME.lowrank_u and NAME.lowrank_v plus a manifest in the metadata.
    Factors,
}

/// Replace 2-D weights by low-rank factors (truncated or randomized SVD).
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("rule").required(true).args(["rank", "energy", "ratio"])))]
#[command(
    after_help = "Examples:\n  lopper compress model.safetensors -o r64.safetensors --method svd --rank 64\n  \
lopper compress model.safetensors -o e.safetensors --method rsvd --energy 0.9 --include 'mlp' --store factors"
)]
pub struct Args {
    /// Input .safetensors file (a lopper compressed store is expanded first).
    pub input: PathBuf,
    /// Output file (written atomically: never half-written).
    #[arg(short, long)]
    pub output: PathBuf,
    /// svd (exact) or rsvd (randomized).
    #[arg(long, value_enum, default_value = "svd")]
    pub method: MethodArg,
    /// Fixed rank R (>= 1; clamped to min(M, N)).
    #[arg(long, allow_negative_numbers = true)]
    pub rank: Option<usize>,
    /// Keep singular values until this fraction of sum sigma^2 is reached, in (0, 1].
    #[arg(long, allow_negative_numbers = true)]
    pub energy: Option<f64>,
    /// Parameters (and flops) after / before at most this fraction, > 0.
    #[arg(long, allow_negative_numbers = true)]
    pub ratio: Option<f64>,
    /// Only tensors whose name matches this regex.
    #[arg(long)]
    pub include: Option<String>,
    /// No tensor whose name matches this regex.
    #[arg(long)]
    pub exclude: Option<String>,
    /// Output layout.
    #[arg(long, value_enum, default_value = "dense")]
    pub store: StoreArg,
    /// rsvd only: oversampling columns [default: 10].
    #[arg(long, allow_negative_numbers = true)]
    pub oversample: Option<usize>,
    /// rsvd only: power iterations, at most 64 [default: 2].
    #[arg(long, allow_negative_numbers = true)]
    pub power_iters: Option<usize>,
    /// rsvd only: seed of the Gaussian sketch [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<u64>,
}

fn regex(flag: &str, re: &Option<String>) -> Result<Option<regex::Regex>, CliError> {
    re.as_deref()
        .map(|s| regex::Regex::new(s).map_err(|e| CliError::Usage(format!("{flag} {s:?}: {e}"))))
        .transpose()
}

/// The metadata key of a factor store's manifest (`--store factors`).
pub const LOWRANK_KEY: &str = "lopper.lowrank";

/// The most power iterations `--power-iters` accepts.
const MAX_POWER_ITERS: usize = 64;

/// Runs `lopper compress`.
pub fn run(args: Args) -> Result<(), CliError> {
    let (rule, flag) = match (args.rank, args.energy, args.ratio) {
        (Some(r), None, None) => (RankRule::Fixed(r), format!("--rank {r}")),
        (None, Some(f), None) => (RankRule::Energy(f), format!("--energy {f}")),
        (None, None, Some(p)) => (RankRule::Ratio(p), format!("--ratio {p}")),
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --rank, --energy, --ratio".into(),
            ));
        }
    };
    let rule = rule.validate().map_err(|e| {
        // the rule's own complaint, without the library's "RankRule: invalid argument" prefix
        let detail = match &e {
            lopper_lowrank::Error::Invalid { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        CliError::Usage(format!("{flag}: {detail}"))
    })?;
    let method = match args.method {
        MethodArg::Svd => {
            // the sketch's options mean nothing to the exact SVD: refuse rather than ignore them
            let given = [
                ("--oversample", args.oversample.is_some()),
                ("--power-iters", args.power_iters.is_some()),
                ("--seed", args.seed.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
                return Err(CliError::Usage(format!(
                    "{flag} applies to --method rsvd only (svd is exact and has no sketch)"
                )));
            }
            Method::Svd
        }
        MethodArg::Rsvd => {
            let power_iters = args.power_iters.unwrap_or(2);
            if power_iters > MAX_POWER_ITERS {
                return Err(CliError::Usage(format!(
                    "--power-iters {power_iters}: at most {MAX_POWER_ITERS} (2 to 7 are usual; each one is two more passes over the matrix)"
                )));
            }
            Method::Rsvd(RsvdParams {
                oversample: args.oversample.unwrap_or(10),
                power_iters,
                seed: args.seed.unwrap_or(0),
            })
        }
    };
    let include = regex("--include", &args.include)?;
    let exclude = regex("--exclude", &args.exclude)?;
    lopper_tensor::io::check_output(&args.output)?; // before the SVDs, not after
    super::check_input("INPUT", &args.input)?;
    let input = lopper_prune::store::load(&args.input)?;
    if input.metadata.contains_key(LOWRANK_KEY) {
        return Err(CliError::Usage(format!(
            "{}: already a low-rank factor store (metadata {LOWRANK_KEY}); compress the original dense file instead",
            args.input.display()
        )));
    }
    let par = Par::rayon();

    let mut out = SafetensorsFile {
        entries: Vec::with_capacity(input.entries.len()),
        metadata: input.metadata.clone(),
    };
    let mut manifest = serde_json::Map::new();
    let (mut before, mut after, mut done) = (0usize, 0usize, 0usize);
    for (name, entry) in &input.entries {
        let t = match entry {
            Entry::Tensor(t)
                if t.rank() == 2
                    && include.as_ref().is_none_or(|re| re.is_match(name))
                    && !exclude.as_ref().is_some_and(|re| re.is_match(name)) =>
            {
                t
            }
            _ => {
                out.entries.push((name.clone(), entry.clone()));
                continue;
            }
        };
        let (m, n) = t.dims2("compress")?;
        let w = t.to_f32();
        let bad = w.as_f32()?.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            return Err(CliError::Usage(format!(
                "{name} ({m}x{n}): {bad} NaN or infinite values; an SVD needs finite weights (a corrupted checkpoint?)"
            )));
        }
        let c = compress_matrix(name, w.mat("compress")?, method, rule, par)
            .map_err(|e| CliError::Usage(format!("{name} ({m}x{n}): {e}")))?;
        let dtype = t.dtype();
        let mut report = c.report;
        // the error is measured on what is written, after rounding to the input dtype
        match args.store {
            StoreArg::Dense => {
                let rec = Tensor::from_f32(&[m, n], c.dense)?.to_dtype(dtype);
                report.rel_error = rel_frobenius_error(w.as_f32()?, &rec.to_f32_vec())?;
                out.push(name.clone(), rec);
            }
            StoreArg::Factors => {
                let (u, v) = c.factors.to_tensors()?;
                let (u, v) = (u.to_dtype(dtype), v.to_dtype(dtype));
                let rec = LowRank::from_tensors(&u, &v)?.to_dense(par)?;
                report.rel_error = rel_frobenius_error(w.as_f32()?, &rec)?;
                let (un, vn) = (format!("{name}.lowrank_u"), format!("{name}.lowrank_v"));
                manifest.insert(
                    name.clone(),
                    serde_json::json!({
                        "shape": [m, n], "rank": report.rank, "dtype": dtype.name(),
                        "u": un, "v": vn, "rel_error": report.rel_error,
                    }),
                );
                out.push(un, u);
                out.push(vn, v);
            }
        }
        println!("{report}");
        if let RankRule::Ratio(p) = rule
            && report.params_after as f64 > p * report.params_before as f64
        {
            println!(
                "  note: {name} cannot reach {flag}: rank {} is the smallest, {:.1}% of its parameters",
                report.rank,
                100.0 * report.params_after as f64 / report.params_before.max(1) as f64
            );
        }
        if report.params_after >= report.params_before {
            println!(
                "  note: {name} at rank {} stores {} parameters, not fewer than its {} dense ones",
                report.rank, report.params_after, report.params_before
            );
        }
        before += report.params_before;
        after += report.params_after;
        done += 1;
    }
    if done == 0 {
        return Err(CliError::Usage(format!(
            "{}: no 2-D f32, f16 or bf16 tensor matches (--include {:?}, --exclude {:?}); nothing written",
            args.input.display(),
            args.include.as_deref().unwrap_or(""),
            args.exclude.as_deref().unwrap_or("")
        )));
    }
    if matches!(args.store, StoreArg::Factors) {
        out.metadata.insert(
            LOWRANK_KEY.into(),
            serde_json::Value::Object(manifest).to_string(),
        );
    }
    st::write(&args.output, &out)?;
    println!(
        "{done} tensors compressed: params {before} -> {after} ({:.1}%), written to {}",
        100.0 * after as f64 / before.max(1) as f64,
        args.output.display()
    );
    Ok(())
}
