//! `cargo xtask gpu-bundle`: everything a GPU machine with no Rust toolchain and no network needs to
//! run lopper's GPU tests and benchmarks, in gpu-bundle/ (git-ignored):
//! - bin/: the release GPU test binary of lopper-sparse (tests/gpu.rs) and the bench binary
//!   (examples/gpu_bench.rs), both built with feature `cuda` (kernels embedded), debug info stripped;
//! - cubins/: every kernel for sm_80 and sm_90a with ptxas reports (for cuobjdump / ncu there);
//! - dlmc/: a DLMC subset (transformer magnitude pruning at every sparsity, variational dropout at
//!   0.9 and 0.98, rn50 at 0.8 and 0.9) when ../shared/dlmc exists;
//! - run.sh: finds cuBLAS/cuSPARSE, runs the tests and the benchmarks, and writes results.md and
//!   results.json (plus logs) under $OUT (default: gpu-bundle/out);
//! - profile.sh: Nsight Compute on one kernel of the bench (sections, stall reasons, tensor-pipe
//!   activity, shared-memory bank conflicts).
use crate::{Res, cargo, kernels, nvcc, root};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs cargo with `--message-format=json-render-diagnostics` and returns the executables built.
fn cargo_executables(args: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut c = cargo();
    c.args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root())
        .stdout(Stdio::piped());
    eprintln!("xtask: running {c:?}");
    let o = c
        .spawn()
        .and_then(|ch| ch.wait_with_output())
        .map_err(|e| format!("cargo: {e}"))?;
    if !o.status.success() {
        return Err(format!("cargo {} failed", args.join(" ")));
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && let Some(e) = v["executable"].as_str()
        {
            exes.push(PathBuf::from(e));
        }
    }
    Ok(exes)
}

fn copy(src: &Path, dst: &Path) -> Res {
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    std::fs::copy(src, dst)
        .map(|_| ())
        .map_err(|e| format!("{} -> {}: {e}", src.display(), dst.display()))
}

/// Folders of ../shared/dlmc copied into the bundle (relative to dlmc/).
const DLMC: &[&str] = &[
    "transformer/magnitude_pruning",
    "transformer/variational_dropout/0.9",
    "transformer/variational_dropout/0.98",
    "rn50/magnitude_pruning/0.8",
    "rn50/magnitude_pruning/0.9",
];

fn copy_tree(src: &Path, dst: &Path) -> Res {
    for e in std::fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        let d = dst.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &d)?;
        } else if p.extension().is_some_and(|x| x == "smtx") {
            copy(&p, &d)?;
        }
    }
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `cargo xtask gpu-bundle`.
pub fn run(_args: &[String]) -> Res {
    if nvcc::find().is_none() {
        return Err(nvcc::missing());
    }
    let out = root().join("gpu-bundle");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("bin")).map_err(|e| e.to_string())?;
    let tests = cargo_executables(&[
        "test",
        "--release",
        "-p",
        "lopper-sparse",
        "--features",
        "cuda",
        "--test",
        "gpu",
        "--no-run",
    ])?;
    let bench = cargo_executables(&[
        "build",
        "--release",
        "-p",
        "lopper-sparse",
        "--features",
        "cuda",
        "--example",
        "gpu_bench",
    ])?;
    let mut names = Vec::new();
    for (exe, name) in tests
        .iter()
        .map(|e| (e, "gpu-tests"))
        .chain(bench.iter().map(|e| (e, "gpu_bench")))
    {
        let dst = out.join("bin").join(name);
        copy(exe, &dst)?;
        // Best effort: line tables are not needed there and halve the size.
        let _ = Command::new("strip")
            .arg("--strip-debug")
            .arg(&dst)
            .status();
        names.push(name);
    }
    if !names.contains(&"gpu-tests") || !names.contains(&"gpu_bench") {
        return Err(format!(
            "expected the gpu test and bench executables, cargo reported {names:?}"
        ));
    }
    let (reports, _, _) = kernels::build_all(&out.join("cubins"))?;
    std::fs::write(out.join("cubins/ptxas.txt"), kernels::table(&reports))
        .map_err(|e| e.to_string())?;
    let dlmc = root()
        .parent()
        .map(|p| p.join("shared/dlmc"))
        .filter(|p| p.is_dir());
    match &dlmc {
        Some(d) => {
            for sub in DLMC {
                let src = d.join(sub);
                if src.is_dir() {
                    copy_tree(&src, &out.join("dlmc").join(sub))?;
                }
            }
        }
        None => {
            eprintln!("xtask gpu-bundle: no ../shared/dlmc: the bench will use generated patterns")
        }
    }
    for (name, text) in [("run.sh", RUN_SH), ("profile.sh", PROFILE_SH)] {
        std::fs::write(out.join(name), text).map_err(|e| e.to_string())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(out.join(name), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
    }
    println!(
        "{} ({:.1} MiB): run `gpu-bundle/run.sh` on the GPU machine (results under $OUT)",
        out.display(),
        dir_size(&out) as f64 / 1048576.0
    );
    Ok(())
}

/// The bundle's run script (xtask/src/gpu_run.sh).
const RUN_SH: &str = include_str!("gpu_run.sh");
/// The bundle's Nsight Compute script (xtask/src/gpu_profile.sh).
const PROFILE_SH: &str = include_str!("gpu_profile.sh");
