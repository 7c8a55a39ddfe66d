//! `cargo xtask kernels [--sass]`: compiles every kernels/*.cu for sm_80 and sm_90a with
//! `-Xptxas -v` into `target/kernels/<file>.<arch>.cubin` and prints, per kernel and arch,
//! registers, shared memory, stack frame and spill stores/loads. Fails on any spill or stack use
//! (local memory) unless the kernel is listed in [`ALLOW_LOCAL`], and on any ptxas warning.
//! `--sass` also writes `target/kernels/<file>.<arch>.sass` (cuobjdump, from `cargo xtask nvcc
//! --tools`) and prints, per kernel, the count of the instructions that matter (16-byte loads,
//! async copies, ldmatrix, sparse tensor-core MMAs, local-memory traffic).
use crate::{Res, nvcc, root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The architectures every kernel is built for (cubin) and checked on.
pub const ARCHS: &[&str] = &["sm_80", "sm_90a"];
/// Kernels allowed to use local memory (stack or spills); none so far. Add a name here only with a
/// comment saying why the spill is cheaper than the alternative.
pub const ALLOW_LOCAL: &[&str] = &[];

/// ptxas's report for one kernel on one architecture.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub file: String,
    pub kernel: String,
    pub arch: String,
    pub registers: u32,
    pub smem: u32,
    pub stack: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

fn num_before(line: &str, unit: &str) -> Option<u32> {
    let i = line.find(unit)?;
    line[..i]
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Parses `nvcc -Xptxas -v` output into one report per kernel, plus the warning lines.
pub fn parse(file: &str, arch: &str, text: &str) -> (Vec<Report>, Vec<String>) {
    let mut out: Vec<Report> = Vec::new();
    let mut warnings = Vec::new();
    for line in text.lines() {
        if line.contains("warning") {
            warnings.push(line.trim().to_string());
        }
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let kernel = rest.split('\'').next().unwrap_or("").to_string();
            out.push(Report {
                file: file.into(),
                kernel,
                arch: arch.into(),
                ..Default::default()
            });
        } else if let Some(r) = out.last_mut() {
            if line.contains("bytes stack frame") {
                r.stack = num_before(line, "bytes stack frame").unwrap_or(0);
                r.spill_stores = num_before(line, "bytes spill stores").unwrap_or(0);
                r.spill_loads = num_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("registers") {
                r.registers = num_before(line, "registers").unwrap_or(0);
                r.smem = num_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    (out, warnings)
}

/// Compiles one file for one arch into `dir`; returns the cubin path and ptxas's output.
pub fn compile(
    nvcc: &Path,
    src: &Path,
    arch: &str,
    dir: &Path,
) -> Result<(PathBuf, String), String> {
    let stem = src.file_stem().unwrap().to_string_lossy().to_string();
    let cubin = dir.join(format!("{stem}.{arch}.cubin"));
    let num = arch.trim_start_matches("sm_");
    let o = Command::new(nvcc)
        .args([
            "-cubin",
            "-O3",
            "-std=c++17",
            "-lineinfo",
            "-Xptxas",
            "-v",
            "-gencode",
        ])
        .arg(format!("arch=compute_{num},code={arch}"))
        .arg("-o")
        .arg(&cubin)
        .arg(src)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        return Err(format!("{} ({arch}) failed:\n{text}", src.display()));
    }
    Ok((cubin, text))
}

/// The kernel sources, sorted.
pub fn sources() -> Result<Vec<PathBuf>, String> {
    let dir = root().join("kernels");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    v.sort();
    Ok(v)
}

/// What [`build_all`] returns: reports, warnings, cubin paths.
pub type Built = (Vec<Report>, Vec<String>, Vec<PathBuf>);

/// Compiles every kernel for every arch into `dir` (two nvcc at a time); reports, warnings, cubins.
pub fn build_all(dir: &Path) -> Result<Built, String> {
    let nvcc = nvcc::find().ok_or_else(nvcc::missing)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let jobs: Vec<(PathBuf, &str)> = sources()?
        .into_iter()
        .flat_map(|s| ARCHS.iter().map(move |a| (s.clone(), *a)))
        .collect();
    let results: Vec<Result<(PathBuf, String, String, String), String>> =
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..2)
                .map(|w| {
                    let (jobs, nvcc) = (&jobs, &nvcc);
                    sc.spawn(move || {
                        jobs.iter()
                            .skip(w)
                            .step_by(2)
                            .map(|(src, arch)| {
                                let stem = src.file_stem().unwrap().to_string_lossy().to_string();
                                compile(nvcc, src, arch, dir)
                                    .map(|(c, t)| (c, t, stem, arch.to_string()))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("nvcc worker"))
                .collect()
        });
    let (mut reports, mut warnings, mut cubins, mut errors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok((cubin, text, stem, arch)) => {
                let (rep, w) = parse(&stem, &arch, &text);
                reports.extend(rep);
                warnings.extend(w.into_iter().map(|w| format!("{stem} ({arch}): {w}")));
                cubins.push(cubin);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    reports.sort_by(|a, b| (&a.file, &a.kernel, &a.arch).cmp(&(&b.file, &b.kernel, &b.arch)));
    Ok((reports, warnings, cubins))
}

/// The report as a text table.
pub fn table(reports: &[Report]) -> String {
    let mut s = format!(
        "{:<20} {:<26} {:<7} {:>5} {:>7} {:>6} {:>7} {:>7}\n",
        "file", "kernel", "arch", "regs", "smem", "stack", "spill-s", "spill-l"
    );
    for r in reports {
        s.push_str(&format!(
            "{:<20} {:<26} {:<7} {:>5} {:>7} {:>6} {:>7} {:>7}\n",
            r.file, r.kernel, r.arch, r.registers, r.smem, r.stack, r.spill_stores, r.spill_loads
        ));
    }
    s
}

const SASS_OPS: &[&str] = &[
    "HMMA.SP",
    "HMMA",
    "HGMMA",
    "LDGSTS",
    "LDSM",
    "LDG.E.128",
    "LDS.128",
    "STG.E.128",
    "FFMA",
    "LDL",
    "STL",
];

fn sass(cubins: &[PathBuf]) -> Res {
    let cuobjdump =
        nvcc::find_tool("cuobjdump").ok_or("no cuobjdump: run `cargo xtask nvcc --tools`")?;
    let nvdisasm =
        nvcc::find_tool("nvdisasm").ok_or("no nvdisasm: run `cargo xtask nvcc --tools`")?;
    let path = std::env::join_paths(
        std::iter::once(nvdisasm.parent().unwrap().to_path_buf()).chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default(),
        ),
    )
    .map_err(|e| e.to_string())?;
    println!("\nSASS instruction counts (static, per kernel; HMMA counts HMMA.SP too):");
    println!("{:<26} {:<7} {}", "kernel", "arch", SASS_OPS.join(" "));
    for c in cubins {
        let o = Command::new(&cuobjdump)
            .arg("-sass")
            .arg(c)
            .env("PATH", &path)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        std::fs::write(c.with_extension("sass"), &text).map_err(|e| e.to_string())?;
        let arch = c
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit('.').next())
            .unwrap_or("");
        for func in text.split("Function : ").skip(1) {
            let name = func.lines().next().unwrap_or("").trim();
            let counts: Vec<String> = SASS_OPS
                .iter()
                .map(|op| {
                    let n = func
                        .lines()
                        .filter(|l| l.split_whitespace().any(|w| w.starts_with(op)))
                        .count();
                    format!("{n:>w$}", w = op.len())
                })
                .collect();
            println!("{name:<26} {arch:<7} {}", counts.join(" "));
        }
    }
    Ok(())
}

/// `cargo xtask kernels [--sass]`.
pub fn run(args: &[String]) -> Res {
    let t0 = std::time::Instant::now();
    let dir = root().join("target/kernels");
    let (reports, warnings, cubins) = build_all(&dir)?;
    print!("{}", table(&reports));
    let bad: Vec<&Report> = reports
        .iter()
        .filter(|r| {
            (r.stack > 0 || r.spill_stores > 0 || r.spill_loads > 0)
                && !ALLOW_LOCAL.contains(&r.kernel.as_str())
        })
        .collect();
    if args.iter().any(|a| a == "--sass") {
        sass(&cubins)?;
    }
    eprintln!(
        "xtask kernels: {} kernels x {} archs in {:.1} s; cubins in {}",
        reports.len() / ARCHS.len().max(1),
        ARCHS.len(),
        t0.elapsed().as_secs_f64(),
        dir.display()
    );
    let mut errs = Vec::new();
    if !warnings.is_empty() {
        errs.push(format!("ptxas/nvcc warnings:\n  {}", warnings.join("\n  ")));
    }
    if !bad.is_empty() {
        errs.push(format!(
            "local memory (stack or spills) in: {} (fix the register pressure, or list the kernel in ALLOW_LOCAL with a reason)",
            bad.iter().map(|r| format!("{} ({})", r.kernel, r.arch)).collect::<Vec<_>>().join(", ")
        ));
    }
    if reports.is_empty() {
        errs.push("no kernels compiled".into());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_ptxas_report() {
        let text = "ptxas info    : Compiling entry function 'k_f32' for 'sm_80'\n\
                    ptxas info    : Function properties for k_f32\n\
                    \x20   16 bytes stack frame, 12 bytes spill stores, 28 bytes spill loads\n\
                    ptxas info    : Used 48 registers, used 1 barriers, 4096 bytes smem, 408 bytes cmem[0]\n";
        let (r, w) = super::parse("f", "sm_80", text);
        assert!(w.is_empty());
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!(
            (
                r.kernel.as_str(),
                r.registers,
                r.smem,
                r.stack,
                r.spill_stores,
                r.spill_loads
            ),
            ("k_f32", 48, 4096, 16, 12, 28)
        );
    }
}
