//! `lopper`: the command line. One module per subcommand under `cmd/`, each with an `Args` (clap)
//! and a `run(Args) -> Result<(), CliError>`.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cmd;
mod error;

pub use error::CliError;

#[derive(Parser)]
#[command(
    name = "lopper",
    version,
    about = "Sparse and low-rank training that computes less, measured"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train and compare the six demo variants (dense, masked80, gradual80, sparse24, lowrank,
    /// rigl90) from recipes embedded in the binary, and write the report.
    Demo(cmd::demo::Args),
    /// Train one recipe (TOML) with a progress bar; table and report files at the end.
    Train(cmd::train::Args),
    /// Train several recipes in turn and compare them in one table and report.
    Compare(cmd::compare::Args),
    /// Prune a safetensors checkpoint in one shot (magnitude or random; unstructured, N:M, rows, ...).
    Prune(cmd::prune::Args),
    /// Describe a safetensors file: dtype, shape, density and N:M validity per tensor.
    Inspect(cmd::inspect::Args),
    /// Replace 2-D weights by low-rank factors (truncated or randomized SVD).
    Compress(cmd::compress::Args),
    /// Benchmarks of the sparse kernels against dense GEMM of the same shape.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
}

/// Restores the default action of SIGPIPE, which Rust's runtime ignores: `lopper inspect F | head`
/// then ends quietly when `head` stops reading, as other command-line tools do, instead of
/// panicking in `println!` on the broken pipe.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first in main, before any other thread exists; SIG_DFL is a valid action for
    // SIGPIPE and no Rust code relies on SIGPIPE being ignored (writes to a closed pipe then end
    // the process, which is the intended behaviour for this command-line tool).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::Prune(a) => cmd::prune::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Compress(a) => cmd::compress::run(a),
        Command::Bench(c) => cmd::bench::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lopper: error: {e}");
            ExitCode::FAILURE
        }
    }
}
