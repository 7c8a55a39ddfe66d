//! `cargo xtask nvcc`: installs the pinned nvcc wheel set of ../shared/DESIGN.md into target/nvcc
//! (`pip install --target`), checks that it compiles, and prints the nvcc path. `--tools` also
//! installs cuobjdump and nvdisasm (for `cargo xtask kernels --sass`) into target/nvcc-tools: their
//! wheels start at 13.2 (no 13.0 build exists), which reads 13.0 cubins.
//!
//! [`find`] is the lookup every other command (and lopper-cuda's build.rs) uses: `$NVCC`, `nvcc` on
//! PATH, `$CUDA_HOME/bin/nvcc`, then target/nvcc. nvcc needs gcc/g++ as host compiler (on PATH); its
//! headers (cuda_runtime, crt, cccl) come with the wheels, and nvcc finds them from its own folder.
use crate::{Res, root};
use std::path::PathBuf;
use std::process::Command;

/// The pinned wheels: one toolchain, CUDA 13.0, matching the GPU machines' driver. Leaving one out
/// lets pip pull a newer nvvm/crt whose PTX the 13.0 ptxas rejects.
pub const WHEELS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
];
/// Disassembly tools (optional, `--tools`).
pub const TOOL_WHEELS: &[&str] = &[
    "nvidia-cuda-cuobjdump==13.2.51",
    "nvidia-cuda-nvdisasm==13.2.51",
];

fn install_dir() -> PathBuf {
    root().join("target/nvcc")
}
fn tools_dir() -> PathBuf {
    root().join("target/nvcc-tools")
}

fn pip_install(dir: &PathBuf, wheels: &[&str]) -> Res {
    let stamp = dir.join(".lopper-wheels");
    let want = wheels.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        eprintln!(
            "xtask nvcc: {} already holds the pinned wheels",
            dir.display()
        );
        return Ok(());
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or("no python3 on PATH: pip installs the nvcc wheels")?;
    let _ = std::fs::remove_dir_all(dir);
    crate::run(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-warn-script-location",
            ])
            .args(["--no-cache-dir", "--upgrade", "--target"])
            .arg(dir)
            .args(wheels),
    )?;
    std::fs::write(&stamp, want).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// `cargo xtask nvcc [--tools]`.
pub fn run(args: &[String]) -> Res {
    pip_install(&install_dir(), WHEELS)?;
    let nvcc = install_dir().join("nvidia/cu13/bin/nvcc");
    if !nvcc.is_file() {
        return Err(format!("pip finished but {} is missing", nvcc.display()));
    }
    if args.iter().any(|a| a == "--tools") {
        pip_install(&tools_dir(), TOOL_WHEELS)?;
    }
    // A smoke test: the host compiler and the headers must be found.
    let dir = root().join("target/nvcc-check");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let src = dir.join("check.cu");
    std::fs::write(&src, "#include <cuda_bf16.h>\n__global__ void k(__nv_bfloat16* p) { p[0] = __float2bfloat16(1.0f); }\n")
        .map_err(|e| e.to_string())?;
    crate::run(
        Command::new(&nvcc)
            .args(["-cubin", "-gencode", "arch=compute_90a,code=sm_90a", "-o"])
            .arg(dir.join("check.cubin"))
            .arg(&src),
    )
    .map_err(|e| {
        format!(
            "{e}\nnvcc is installed but cannot compile: it needs gcc/g++ on PATH as host compiler"
        )
    })?;
    println!("{}", nvcc.display());
    Ok(())
}

/// nvcc as build.rs finds it: `$NVCC`, PATH, `$CUDA_HOME/bin`, target/nvcc.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    find_tool("nvcc")
}

/// A CUDA tool (nvcc, cuobjdump, nvdisasm): PATH, `$CUDA_HOME/bin`, target/nvcc, target/nvcc-tools.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("CUDA_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    dirs.push(install_dir().join("nvidia/cu13/bin"));
    dirs.push(tools_dir().join("nvidia/cu13/bin"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The error every command gives when nvcc is missing.
pub fn missing() -> String {
    format!(
        "no nvcc found ($NVCC, PATH, $CUDA_HOME/bin, target/nvcc): run `cargo xtask nvcc` (pip-installs {})",
        WHEELS.join(" ")
    )
}
