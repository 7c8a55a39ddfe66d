//! Build script of lopper-cuda. Without the `cuda` feature it does nothing. With it, it compiles every
//! `kernels/*.cu` of the workspace with nvcc into one fatbin per file (sm_80 and sm_90a machine code
//! plus compute_80 PTX for later GPUs) in OUT_DIR, and writes `kernels.rs`, the table of
//! `include_bytes!` that the crate embeds. nvcc is looked up as `cargo xtask nvcc` documents: `$NVCC`,
//! then `nvcc` on PATH, then `$CUDA_HOME/bin/nvcc`, then the pinned wheels under `target/nvcc`.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wheels `cargo xtask nvcc` installs (pinned in ../shared/DESIGN.md); named in the error.
const WHEELS: &str = "nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 \
                      nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88";

fn main() {
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=LOPPER_NVCC_FLAGS");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let kernels = root.join("kernels");
    println!("cargo:rerun-if-changed={}", kernels.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let nvcc = find_nvcc(&root).unwrap_or_else(|| {
        panic!(
            "\n\nlopper-cuda: the `cuda` feature compiles kernels/*.cu with nvcc, and no nvcc was \
             found ($NVCC, PATH, $CUDA_HOME/bin, target/nvcc).\nInstall the pinned toolchain with \
             `cargo xtask nvcc` (pip-installs {WHEELS} into target/nvcc), or set NVCC to an nvcc \
             13.0.\n\n"
        )
    });
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .unwrap_or_else(|e| panic!("lopper-cuda: cannot read {}: {e}", kernels.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu" || x == "cuh"))
        .collect();
    sources.sort();
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
    }
    let cu: Vec<PathBuf> = sources
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    // Two files at a time: nvcc is single-threaded per file and CI machines have 2 cores.
    let results: Vec<Result<(), String>> = std::thread::scope(|sc| {
        let chunks: Vec<Vec<&PathBuf>> = (0..2)
            .map(|i| cu.iter().skip(i).step_by(2).collect())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|files| {
                let (nvcc, out) = (&nvcc, &out);
                sc.spawn(move || {
                    files
                        .into_iter()
                        .map(|f| compile(nvcc, f, out))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("nvcc thread"))
            .collect()
    });
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !errors.is_empty() {
        panic!("\n\nlopper-cuda: nvcc failed:\n{}\n", errors.join("\n"));
    }
    let mut table = String::from(
        "/// Every kernel file as (stem, fatbin): sm_80 + sm_90a cubins and compute_80 PTX.\n\
         pub const MODULES: &[(&str, &[u8])] = &[\n",
    );
    for f in &cu {
        let stem = f.file_stem().unwrap().to_string_lossy();
        table.push_str(&format!(
            "    (\"{stem}\", include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{stem}.fatbin\"))),\n"
        ));
    }
    table.push_str("];\n");
    std::fs::write(out.join("kernels.rs"), table).expect("write kernels.rs");
}

fn compile(nvcc: &Path, src: &Path, out: &Path) -> Result<(), String> {
    let stem = src.file_stem().unwrap().to_string_lossy().to_string();
    let dst = out.join(format!("{stem}.fatbin"));
    let mut cmd = Command::new(nvcc);
    cmd.args(["-fatbin", "-O3", "-std=c++17", "-lineinfo"])
        .args(["-gencode", "arch=compute_80,code=[sm_80,compute_80]"])
        .args(["-gencode", "arch=compute_90a,code=sm_90a"])
        .arg("-o")
        .arg(&dst)
        .arg(src);
    if let Ok(extra) = std::env::var("LOPPER_NVCC_FLAGS") {
        cmd.args(extra.split_whitespace());
    }
    let o = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}\n{}{}",
            src.display(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("nvcc");
            if c.is_file() {
                return Some(c);
            }
        }
    }
    if let Some(h) = std::env::var_os("CUDA_HOME") {
        let c = PathBuf::from(h).join("bin/nvcc");
        if c.is_file() {
            return Some(c);
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    [target.join("nvcc"), root.join("target/nvcc")]
        .into_iter()
        .map(|t| t.join("nvidia/cu13/bin/nvcc"))
        .find(|c| c.is_file())
}
