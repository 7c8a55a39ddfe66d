//! `cargo xtask <cmd>`: the project's automation, in Rust (alias in .cargo/config.toml; built into
//! target/xtask so that it never waits on the workspace's build lock for its own binary).
//!
//! - `test`       fmt check, clippy -D warnings, tidy, rustdoc -D warnings, cargo test --workspace
//!   (what CI runs)
//! - `tidy`       repository invariants (crate DAG of docs/ARCHITECTURE.md, file size, no stray files)
//! - `bench`      the sparse-vs-dense harness (`lopper bench spmm`, release build); `--gpu`: the GPU
//!   harness (examples/gpu_bench of lopper-sparse, feature cuda) against cuSPARSE/cuBLAS
//! - `nvcc`       install the pinned nvcc wheels under target/ and print the path
//! - `kernels`    compile every kernel for sm_80 and sm_90a, print registers/smem/spills, fail on spills
//! - `gpu-bundle` build the GPU test and bench binaries plus run.sh into gpu-bundle/
use std::process::{Command, ExitCode};

mod gpu_bundle;
mod kernels;
mod nvcc;
mod tidy;

type Res = Result<(), String>;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one folder below the root")
        .to_path_buf()
}

/// Runs a command in the repository root, echoing it; an error when it fails.
pub fn run(cmd: &mut Command) -> Res {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(_args: &[String]) -> Res {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    tidy::run()?;
    // rustdoc: broken intra-doc links and stray brackets fail the check
    run(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    run(cargo().args(["test", "--workspace"]))?;
    eprintln!("xtask test: all checks passed");
    Ok(())
}

fn bench(args: &[String]) -> Res {
    if args.first().is_some_and(|a| a == "--gpu") {
        // the GPU harness: production launchers vs cuSPARSE / cuBLAS (needs nvcc here, a GPU there;
        // on a machine without Rust, run gpu-bundle/bin/gpu_bench from `cargo xtask gpu-bundle`)
        let mut c = cargo();
        c.args([
            "run",
            "--release",
            "-p",
            "lopper-sparse",
            "--features",
            "cuda",
            "--example",
            "gpu_bench",
            "--",
        ]);
        c.args(&args[1..]);
        return run(&mut c);
    }
    let mut c = cargo();
    c.args(["run", "--release", "-p", "lopper-cli", "--", "bench"]);
    if args.is_empty() {
        c.arg("spmm");
    }
    c.args(args);
    run(&mut c)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match cmd {
        "test" => test(rest),
        "tidy" => tidy::run(),
        "bench" => bench(rest),
        "nvcc" => nvcc::run(rest),
        "kernels" => kernels::run(rest),
        "gpu-bundle" => gpu_bundle::run(rest),
        "help" | "--help" | "-h" => {
            println!(
                "{}",
                include_str!("main.rs")
                    .lines()
                    .take_while(|l| l.starts_with("//!"))
                    .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            Ok(())
        }
        other => Err(format!(
            "unknown xtask command {other:?}; try `cargo xtask help`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
