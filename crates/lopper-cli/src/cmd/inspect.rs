//! `lopper inspect`: what a safetensors file holds, and how sparse it is.
use crate::CliError;
use lopper_prune::checkpoint::describe;
use std::path::PathBuf;

/// Per tensor: name, dtype, shape, density, N:M validity (also for lopper compressed stores).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .safetensors file (plain or a lopper compressed store).
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `lopper inspect`.
pub fn run(args: Args) -> Result<(), CliError> {
    super::check_input("FILE", &args.file)?;
    let raw = lopper_tensor::io::safetensors::read(&args.file)?;
    let d = describe(&raw, &args.file.display().to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&d).map_err(|e| CliError::Usage(e.to_string()))?
        );
        return Ok(());
    }
    println!(
        "{}: {} tensors{}",
        args.file.display(),
        d.tensors.len(),
        if d.compressed {
            " (lopper compressed store)"
        } else {
            ""
        }
    );
    let w = d
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(6);
    println!(
        "{:<w$}  {:>5}  {:>16}  {:>10}  {:>8}  {:>4}  {:>4}  {:>6}",
        "tensor", "dtype", "shape", "numel", "density", "2:4", "N:4", "layout"
    );
    for t in &d.tensors {
        println!(
            "{:<w$}  {:>5}  {:>16}  {:>10}  {:>8}  {:>4}  {:>4}  {:>6}",
            t.name,
            t.dtype,
            format!("{:?}", t.shape),
            t.numel,
            t.density.map_or("-".into(), |x| format!("{x:.4}")),
            if t.is_2_4 { "yes" } else { "no" },
            t.n_of_4.map_or("-".into(), |n| format!("{n}:4")),
            t.layout
        );
    }
    for t in &d.tensors {
        if let Some(k) = t.non_finite.filter(|&k| k > 0) {
            println!(
                "note: {} holds {k} NaN or infinite values (of {}); its density counts them as non-zero",
                t.name, t.numel
            );
        }
    }
    println!(
        "total: {} float tensors, {} elements, {} non-zero, density {:.4}, {} of them 2:4-valid",
        d.float_tensors, d.numel, d.nonzeros, d.density, d.valid_2_4
    );
    Ok(())
}
