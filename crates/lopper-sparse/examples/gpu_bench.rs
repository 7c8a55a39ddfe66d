//! GPU benchmark of lopper's sparse kernels against the vendor libraries, on the production launchers
//! (no copies of the kernels): `cargo run --release -p lopper-sparse --features cuda --example
//! gpu_bench -- [options]`, or `bin/gpu_bench` inside the GPU bundle (`cargo xtask gpu-bundle`).
//!
//! - dense ceilings: cuBLAS f32 SGEMM at 4096^3 and bf16 GEMM at 8192^3 (the measured "100 %");
//! - csr_spmm (f32) on the DLMC subset (or generated patterns) with N in {256, 512, 2048} against
//!   cuSPARSE SpMM (default and CSR_ALG2, the faster counted) and cuBLAS SGEMM of the same shape:
//!   ms, effective TFLOP/s (2 nnz N), % of the dense ceiling, speed-ups, geometric means at each N,
//!   and the crossover sparsity (lowest sparsity of each layer's sweep at which csr_spmm beats dense);
//! - sparse24_spmm (bf16, mma.sp) against cuBLAS bf16 at (M, N, K) = 4096^3, 8192^3 and
//!   3072 x 10240 x 3072, plus sparse24_compress.
//!
//! - `--energy`: joules per product from the GPU's NVML energy counter (lopper-energy's `NvmlMeter`,
//!   windows of 2 s or more with the device kept busy), csr_spmm against cuBLAS SGEMM on generated
//!   8192 x 8192 uniform patterns times 8192 x 1024 at several sparsities, and sparse24_spmm against
//!   cuBLAS bf16 at 8192^3; plus the idle power over one window.
//!
//! Options: `--dlmc DIR`, `--ns 256,512,2048`, `--variant NAME` (csr_spmm: auto, vec_sw8, vec_sw16,
//! vec_sw32, scalar_sw8, scalar_sw32, or `all`), `--quick` (N = 512 and fewer matrices),
//! `--skip-24`, `--skip-csr`, `--energy`, `--json FILE`, `--table FILE`.
use half::bf16;
use lopper_cuda::{CsrDev, CusparseSpmm, Gpu, SpmmVariant};
use lopper_sparse::{Csr, io::smtx};
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type Res<T> = Result<T, Box<dyn std::error::Error>>;
/// (layer, N) -> [(sparsity, csr_spmm ms, dense ms)]: the crossover sweep.
type Sweep = std::collections::BTreeMap<(String, usize), Vec<(f64, f64, f64)>>;

struct Opts {
    dlmc: Option<PathBuf>,
    ns: Vec<usize>,
    variants: Vec<SpmmVariant>,
    quick: bool,
    skip_24: bool,
    skip_csr: bool,
    energy: bool,
    json: Option<PathBuf>,
    table: Option<PathBuf>,
}

fn opts() -> Res<Opts> {
    let mut o = Opts {
        dlmc: None,
        ns: vec![256, 512, 2048],
        variants: vec![SpmmVariant::Auto],
        quick: false,
        skip_24: false,
        skip_csr: false,
        energy: false,
        json: None,
        table: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--dlmc" => o.dlmc = Some(PathBuf::from(val()?)),
            "--ns" => {
                o.ns = val()?
                    .split(',')
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            }
            "--variant" => {
                let v = val()?;
                o.variants = if v == "all" {
                    std::iter::once(SpmmVariant::Auto)
                        .chain(SpmmVariant::all())
                        .collect()
                } else {
                    vec![SpmmVariant::parse(&v).ok_or_else(|| format!("unknown variant {v}"))?]
                }
            }
            "--quick" => o.quick = true,
            "--skip-24" => o.skip_24 = true,
            "--skip-csr" => o.skip_csr = true,
            "--energy" => o.energy = true,
            "--json" => o.json = Some(PathBuf::from(val()?)),
            "--table" => o.table = Some(PathBuf::from(val()?)),
            other => {
                return Err(format!(
                    "unknown option {other} (see the header of examples/gpu_bench.rs)"
                )
                .into());
            }
        }
    }
    if o.quick {
        o.ns = vec![512];
    }
    Ok(o)
}

/// One measured row.
struct Row {
    section: &'static str,
    name: String,
    shape: String,
    sparsity: f64,
    n: usize,
    kernel: String,
    ms: f64,
    tflops: f64,
    pct_ceiling: f64,
    speedup: f64,
    versus: &'static str,
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

/// (label, layer, sparsity, matrix) of the DLMC subset, or generated uniform patterns.
fn matrices(o: &Opts) -> Res<Vec<(String, String, f64, Csr)>> {
    let mut out = Vec::new();
    if let Some(dir) = &o.dlmc {
        let mut files = Vec::new();
        collect(dir, &mut files);
        files.sort();
        for f in files {
            let rel = f
                .strip_prefix(dir)
                .unwrap_or(&f)
                .to_string_lossy()
                .to_string();
            let sp: f64 = f
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            if o.quick && !(rel.contains("magnitude_pruning") && rel.contains("transformer")) {
                continue;
            }
            let layer = format!(
                "{}/{}",
                rel.split('/').next().unwrap_or(""),
                f.file_stem().unwrap().to_string_lossy()
            );
            let method = rel.split('/').nth(1).unwrap_or("").to_string();
            let w = smtx::read(&f)?.with_random_values(1)?;
            out.push((
                rel.trim_end_matches(".smtx").to_string(),
                format!("{layer} {method}"),
                sp,
                w,
            ));
        }
    }
    if out.is_empty() {
        for &(m, k) in &[(512usize, 512usize), (2048, 512), (512, 2048)] {
            for &sp in &[0.5, 0.7, 0.8, 0.9, 0.95, 0.98] {
                let mut r = rand::rngs::StdRng::seed_from_u64((m * k) as u64);
                let d: Vec<f32> = (0..m * k)
                    .map(|_| {
                        if r.random_bool(1.0 - sp) {
                            r.random_range(-1.0f32..1.0)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let w = Csr::from_dense(lopper_tensor::MatRef::new(&d, m, k)?, 0.0)?;
                out.push((
                    format!("generated/{m}x{k}/{sp}"),
                    format!("generated {m}x{k}"),
                    sp,
                    w,
                ));
            }
        }
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                collect(&p, out);
            } else if p.extension().is_some_and(|x| x == "smtx") {
                out.push(p);
            }
        }
    }
}

fn tflops(flop: f64, ms: f64) -> f64 {
    flop / (ms * 1e-3) / 1e12
}

fn geomean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
    }
}

fn main() -> Res<()> {
    let o = opts()?;
    let g = Gpu::get(0).map_err(|e| format!("{}: {e}", lopper_cuda::SKIP_MESSAGE))?;
    let card = g.name()?;
    eprintln!(
        "device: {card}, cc {:?}, {} SMs",
        g.compute_capability(),
        g.sm_count()?
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // dense ceilings
    let (ceil32, ceil16) = {
        let n = 4096;
        let (a, b) = (
            g.upload(&rand_vec(n * n, 1))?,
            g.upload(&rand_vec(n * n, 2))?,
        );
        let mut c = g.zeros::<f32>(n * n)?;
        let ms = g.time_ms(2, 5, || lopper_cuda::gemm(&g, n, n, n, &a, &b, &mut c))?;
        let t32 = tflops(2.0 * (n * n * n) as f64, ms);
        let n = 8192;
        let to = |v: Vec<f32>| v.into_iter().map(bf16::from_f32).collect::<Vec<_>>();
        let (a, b) = (
            g.upload(&to(rand_vec(n * n, 3)))?,
            g.upload(&to(rand_vec(n * n, 4)))?,
        );
        let mut c = g.zeros::<bf16>(n * n)?;
        let ms16 = g.time_ms(2, 5, || lopper_cuda::gemm(&g, n, n, n, &a, &b, &mut c))?;
        let t16 = tflops(2.0 * (n * n * n) as f64, ms16);
        for (name, ms, t) in [
            ("cublas_sgemm 4096^3", ms, t32),
            ("cublas_bf16 8192^3", ms16, t16),
        ] {
            rows.push(Row {
                section: "ceiling",
                name: name.into(),
                shape: String::new(),
                sparsity: 0.0,
                n: 0,
                kernel: name.into(),
                ms,
                tflops: t,
                pct_ceiling: 100.0,
                speedup: 1.0,
                versus: "-",
            });
        }
        (t32, t16)
    };
    eprintln!("ceilings: f32 {ceil32:.1} TFLOP/s, bf16 {ceil16:.1} TFLOP/s");

    if !o.skip_csr {
        let mats = matrices(&o)?;
        // (layer, n) -> [(sparsity, ours_ms, dense_ms)] for the crossover
        let mut sweep: Sweep = Default::default();
        let mut vs_cusparse: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
        for (label, layer, sp, w) in &mats {
            let dw =
                CsrDev::from_parts(&g, w.rows(), w.cols(), w.row_ptr(), w.col_idx(), w.values())?;
            let (m, k) = (w.rows(), w.cols());
            for &n in &o.ns {
                let x = g.upload(&rand_vec(k * n, 5))?;
                let mut y = g.zeros::<f32>(m * n)?;
                let flop = 2.0 * (w.nnz() * n) as f64;
                let dense_ms = {
                    let a = g.upload(&w.to_dense())?;
                    g.time_ms(2, 5, || lopper_cuda::gemm(&g, m, n, k, &a, &x, &mut y))?
                };
                let mut cus_ms = f64::INFINITY;
                for alg2 in [false, true] {
                    let mut y2 = g.zeros::<f32>(m * n)?;
                    let mut sp_mm = CusparseSpmm::new(&g, &dw, &x, n, &mut y2, alg2)?;
                    cus_ms = cus_ms.min(g.time_ms(2, 5, || sp_mm.run())?);
                }
                let mut best = f64::INFINITY;
                for v in &o.variants {
                    let r = g.time_ms(2, 5, || lopper_cuda::csr_spmm(&g, &dw, &x, n, &mut y, *v));
                    let ms = match r {
                        Ok(ms) => ms,
                        Err(e) => {
                            notes.push(format!("{label} n={n} {}: {e}", v.name()));
                            continue;
                        }
                    };
                    best = best.min(ms);
                    rows.push(Row {
                        section: "csr_spmm",
                        name: label.clone(),
                        shape: format!("{m}x{k}"),
                        sparsity: *sp,
                        n,
                        kernel: format!("csr_spmm {}", v.name()),
                        ms,
                        tflops: tflops(flop, ms),
                        pct_ceiling: 100.0 * tflops(2.0 * (m * k * n) as f64, dense_ms) / ceil32
                            * dense_ms
                            / ms,
                        speedup: cus_ms / ms,
                        versus: "cuSPARSE",
                    });
                }
                rows.push(Row {
                    section: "csr_spmm",
                    name: label.clone(),
                    shape: format!("{m}x{k}"),
                    sparsity: *sp,
                    n,
                    kernel: "cusparse_spmm".into(),
                    ms: cus_ms,
                    tflops: tflops(flop, cus_ms),
                    pct_ceiling: f64::NAN,
                    speedup: 1.0,
                    versus: "cuSPARSE",
                });
                rows.push(Row {
                    section: "csr_spmm",
                    name: label.clone(),
                    shape: format!("{m}x{k}"),
                    sparsity: *sp,
                    n,
                    kernel: "cublas_sgemm (dense)".into(),
                    ms: dense_ms,
                    tflops: tflops(2.0 * (m * k * n) as f64, dense_ms),
                    pct_ceiling: 100.0 * tflops(2.0 * (m * k * n) as f64, dense_ms) / ceil32,
                    speedup: cus_ms / dense_ms,
                    versus: "cuSPARSE",
                });
                if best.is_finite() {
                    vs_cusparse.entry(n).or_default().push(cus_ms / best);
                    sweep
                        .entry((layer.clone(), n))
                        .or_default()
                        .push((*sp, best, dense_ms));
                }
                eprintln!(
                    "{label} n={n}: ours {best:.4} ms, cuSPARSE {cus_ms:.4} ms, dense {dense_ms:.4} ms"
                );
            }
        }
        for (n, v) in &vs_cusparse {
            notes.push(format!(
                "csr_spmm vs cuSPARSE, N={n}: geometric mean speed-up {:.2}x over {} matrices",
                geomean(v),
                v.len()
            ));
        }
        for ((layer, n), mut pts) in sweep {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let cross = pts
                .iter()
                .find(|(_, ours, dense)| ours < dense)
                .map(|p| p.0);
            notes.push(match cross {
                Some(s) => format!("crossover {layer} N={n}: csr_spmm beats dense SGEMM from sparsity {s} (sweep {:?})", pts.iter().map(|p| p.0).collect::<Vec<_>>()),
                None => format!("crossover {layer} N={n}: dense SGEMM faster at every sparsity of {:?}", pts.iter().map(|p| p.0).collect::<Vec<_>>()),
            });
        }
    }

    if !o.skip_24 {
        let shapes: &[(usize, usize, usize)] = if o.quick {
            &[(8192, 8192, 8192)]
        } else {
            &[(4096, 4096, 4096), (8192, 8192, 8192), (3072, 10240, 3072)]
        };
        let mut cuda_err: Option<String> = None;
        for &(m, n, k) in shapes {
            let to = |v: Vec<f32>| v.into_iter().map(bf16::from_f32).collect::<Vec<_>>();
            let wd = g.upload(&to(rand_vec(m * k, 6)))?;
            let x = g.upload(&to(rand_vec(k * n, 7)))?;
            let mut y = g.zeros::<bf16>(m * n)?;
            let dense_ms = g.time_ms(2, 5, || lopper_cuda::gemm(&g, m, n, k, &wd, &x, &mut y))?;
            let comp_ms = g.time_ms(1, 3, || {
                lopper_cuda::sparse24_compress(&g, &wd, m, k).map(|_| ())
            })?;
            let w24 = lopper_cuda::sparse24_compress(&g, &wd, m, k)?;
            let dflop = 2.0 * (m * n * k) as f64;
            let shape = format!("{m}x{n}x{k}");
            let mut best = (f64::INFINITY, String::new());
            for tile in lopper_cuda::Spmm24Tile::ALL {
                if !tile.runs_on(&g) {
                    continue;
                }
                let ms = match g.time_ms(2, 5, || {
                    lopper_cuda::sparse24_spmm_with(&g, &w24, &x, n, &mut y, tile)
                }) {
                    Ok(ms) => ms,
                    Err(e) => {
                        cuda_err = Some(format!("{} {shape}: {e}", tile.name()));
                        continue;
                    }
                };
                if ms < best.0 {
                    best = (ms, tile.name());
                }
                let default = if tile == lopper_cuda::Spmm24Tile::DEFAULT {
                    " (default)"
                } else {
                    ""
                };
                rows.push(Row {
                    section: "sparse24",
                    name: shape.clone(),
                    shape: shape.clone(),
                    sparsity: 0.5,
                    n,
                    kernel: format!("sparse24_spmm {}{default}", tile.name()),
                    ms,
                    tflops: tflops(dflop / 2.0, ms),
                    pct_ceiling: 100.0 * tflops(dflop, ms) / ceil16,
                    speedup: dense_ms / ms,
                    versus: "cuBLAS bf16",
                });
            }
            let ms = best.0;
            notes.push(format!(
                "sparse24_spmm {shape}: best tile {} at {ms:.4} ms, {:.2}x cuBLAS bf16",
                best.1,
                dense_ms / ms
            ));
            rows.push(Row {
                section: "sparse24",
                name: shape.clone(),
                shape: shape.clone(),
                sparsity: 0.0,
                n,
                kernel: "cublas_bf16 (dense)".into(),
                ms: dense_ms,
                tflops: tflops(dflop, dense_ms),
                pct_ceiling: 100.0 * tflops(dflop, dense_ms) / ceil16,
                speedup: 1.0,
                versus: "cuBLAS bf16",
            });
            rows.push(Row {
                section: "sparse24",
                name: shape.clone(),
                shape,
                sparsity: 0.5,
                n,
                kernel: "sparse24_compress".into(),
                ms: comp_ms,
                tflops: f64::NAN,
                pct_ceiling: f64::NAN,
                speedup: f64::NAN,
                versus: "-",
            });
            eprintln!(
                "2:4 {m}x{n}x{k}: ours (best tile {}) {ms:.3} ms, cuBLAS {dense_ms:.3} ms ({:.2}x)",
                best.1,
                dense_ms / ms
            );
        }
        if let Some(e) = cuda_err {
            notes.push(format!("sparse24_spmm failed: {e}"));
        }
    }

    let mut energy_rows: Vec<ERow> = Vec::new();
    if o.energy {
        match lopper_energy::NvmlMeter::open() {
            Err(e) => notes.push(format!("energy skipped: {e}")),
            Ok(mut meter) => {
                if let Err(e) = energy(&g, &mut meter, &mut energy_rows, &mut notes) {
                    notes.push(format!("energy section stopped: {e}"));
                }
            }
        }
    }

    let mut table = format!(
        "## GPU bench on {card}\n\nceilings: f32 SGEMM {ceil32:.1} TFLOP/s, bf16 GEMM {ceil16:.1} TFLOP/s (measured in this run)\n\n"
    );
    table.push_str("| section | matrix | shape | sparsity | N | kernel | ms | TFLOP/s (useful) | % dense ceiling (equiv.) | speed-up | vs |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {:.2} | {} | {} | {:.4} | {:.2} | {:.1} | {:.2} | {} |",
            r.section,
            r.name,
            r.shape,
            r.sparsity,
            r.n,
            r.kernel,
            r.ms,
            r.tflops,
            r.pct_ceiling,
            r.speedup,
            r.versus
        );
    }
    table.push('\n');
    for n in &notes {
        let _ = writeln!(table, "- {n}");
    }
    if !energy_rows.is_empty() {
        table.push_str("\n### Energy per product (NVML counter, device busy for the whole window)\n\n| case | kernel | ms | products | window s | J per product | avg W | J vs dense |\n|---|---|---|---|---|---|---|---|\n");
        for r in &energy_rows {
            let _ = writeln!(
                table,
                "| {} | {} | {:.4} | {} | {:.2} | {:.5} | {:.0} | {:.2} |",
                r.case, r.kernel, r.ms, r.reps, r.seconds, r.joules, r.watts, r.vs_dense
            );
        }
    }
    println!("{table}");
    if let Some(p) = &o.table {
        std::fs::write(p, &table)?;
    }
    if let Some(p) = &o.json {
        let num = |x: f64| {
            if x.is_finite() {
                format!("{x}")
            } else {
                "null".into()
            }
        };
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut j = format!(
            "{{\"card\": \"{}\", \"ceiling_f32_tflops\": {}, \"ceiling_bf16_tflops\": {}, \"rows\": [\n",
            esc(&card),
            num(ceil32),
            num(ceil16)
        );
        for (i, r) in rows.iter().enumerate() {
            let _ = write!(
                j,
                "{}  {{\"section\": \"{}\", \"matrix\": \"{}\", \"shape\": \"{}\", \"sparsity\": {}, \"n\": {}, \"kernel\": \"{}\", \"ms\": {}, \"tflops\": {}, \"pct_ceiling\": {}, \"speedup\": {}, \"versus\": \"{}\"}}",
                if i > 0 { ",\n" } else { "" },
                r.section,
                esc(&r.name),
                r.shape,
                num(r.sparsity),
                r.n,
                esc(&r.kernel),
                num(r.ms),
                num(r.tflops),
                num(r.pct_ceiling),
                num(r.speedup),
                r.versus
            );
        }
        j.push_str("\n], \"energy\": [\n");
        for (i, r) in energy_rows.iter().enumerate() {
            let _ = write!(
                j,
                "{}  {{\"case\": \"{}\", \"kernel\": \"{}\", \"ms\": {}, \"products\": {}, \"seconds\": {}, \"joules_per_product\": {}, \"watts\": {}, \"joules_vs_dense\": {}, \"method\": \"nvml\"}}",
                if i > 0 { ",\n" } else { "" },
                esc(&r.case),
                esc(&r.kernel),
                num(r.ms),
                r.reps,
                num(r.seconds),
                num(r.joules),
                num(r.watts),
                num(r.vs_dense)
            );
        }
        j.push_str("\n], \"notes\": [");
        j.push_str(
            &notes
                .iter()
                .map(|n| format!("\"{}\"", esc(n)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        j.push_str("]}\n");
        std::fs::write(p, j)?;
    }
    Ok(())
}

/// One energy measurement: `reps` products in one NVML window.
struct ERow {
    case: String,
    kernel: String,
    ms: f64,
    reps: usize,
    seconds: f64,
    joules: f64,
    watts: f64,
    vs_dense: f64,
}

/// Joules per call of `f` over one NVML window of at least `secs` seconds: `f` is enqueued often
/// enough (from its measured `ms`) to keep the device busy for the whole window.
fn joules_per_call(
    g: &Gpu,
    meter: &mut lopper_energy::NvmlMeter,
    ms: f64,
    secs: f64,
    mut f: impl FnMut() -> lopper_cuda::Result<()>,
) -> Res<(usize, f64, f64, f64)> {
    use lopper_energy::EnergyMeter;
    let reps = ((secs * 1e3 / ms.max(1e-4)).ceil() as usize).max(1);
    g.synchronize()?;
    meter.start()?;
    for _ in 0..reps {
        f()?;
    }
    g.synchronize()?;
    let m = meter.stop()?;
    Ok((reps, m.seconds, m.joules / reps as f64, m.watts()))
}

/// A uniform random `m x k` CSR of the given sparsity (values in [-1, 1)).
fn uniform_csr(m: usize, k: usize, sparsity: f64, seed: u64) -> Res<Csr> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut ptr, mut idx, mut val) = (vec![0usize], Vec::new(), Vec::new());
    for _ in 0..m {
        for j in 0..k {
            if r.random_bool(1.0 - sparsity) {
                idx.push(j as u32);
                val.push(r.random_range(-1.0f32..1.0));
            }
        }
        ptr.push(idx.len());
    }
    Ok(Csr::from_parts(m, k, ptr, idx, val)?)
}

/// Seconds of one NVML window in the `--energy` section.
const ENERGY_SECS: f64 = 2.0;

/// One energy row: `f` timed (ms per call), then metered over one NVML window. `dense_j`: the dense
/// baseline's joules per call (`None`: this row is the baseline).
fn energy_row(
    g: &Gpu,
    meter: &mut lopper_energy::NvmlMeter,
    case: String,
    kernel: String,
    dense_j: Option<f64>,
    mut f: impl FnMut() -> lopper_cuda::Result<()>,
) -> Res<ERow> {
    let ms = g.time_ms(2, 5, &mut f)?;
    let (reps, seconds, joules, watts) = joules_per_call(g, meter, ms, ENERGY_SECS, &mut f)?;
    eprintln!("energy {kernel} ({case}): {ms:.3} ms, {joules:.4} J, {watts:.0} W");
    Ok(ERow {
        case,
        kernel,
        ms,
        reps,
        seconds,
        joules,
        watts,
        vs_dense: dense_j.map_or(1.0, |d| joules / d),
    })
}

/// The `--energy` section: idle power, csr_spmm against cuBLAS SGEMM at several sparsities, and
/// 2:4 against cuBLAS bf16, each as joules per product.
fn energy(
    g: &Gpu,
    meter: &mut lopper_energy::NvmlMeter,
    rows: &mut Vec<ERow>,
    notes: &mut Vec<String>,
) -> Res<()> {
    use lopper_energy::EnergyMeter;
    notes.push(format!("energy meter: {}", meter.describe()));
    // Idle: nothing enqueued for one window.
    g.synchronize()?;
    meter.start()?;
    std::thread::sleep(std::time::Duration::from_secs_f64(ENERGY_SECS));
    let idle = meter.stop()?;
    notes.push(format!(
        "idle GPU power over {:.2} s: {:.0} W",
        idle.seconds,
        idle.watts()
    ));
    let (m, k, n) = (8192usize, 8192usize, 1024usize);
    let x = g.upload(&rand_vec(k * n, 11))?;
    let mut y = g.zeros::<f32>(m * n)?;
    let case = format!("{m}x{k} times {k}x{n}, f32");
    let a = g.upload(&rand_vec(m * k, 12))?;
    let dense = energy_row(
        g,
        meter,
        case.clone(),
        "cublas_sgemm (dense)".into(),
        None,
        || lopper_cuda::gemm(g, m, n, k, &a, &x, &mut y),
    )?;
    drop(a);
    let dj = dense.joules;
    rows.push(dense);
    for &sp in &[0.5, 0.8, 0.9, 0.95, 0.98] {
        let w = uniform_csr(m, k, sp, 12)?;
        let dw = CsrDev::from_parts(g, w.rows(), w.cols(), w.row_ptr(), w.col_idx(), w.values())?;
        rows.push(energy_row(
            g,
            meter,
            format!("{case}, sparsity {sp}"),
            "csr_spmm auto".into(),
            Some(dj),
            || lopper_cuda::csr_spmm(g, &dw, &x, n, &mut y, SpmmVariant::Auto),
        )?);
    }
    drop((x, y));
    // 2:4 at 8192^3, bf16.
    let (m, n, k) = (8192usize, 8192usize, 8192usize);
    let to = |v: Vec<f32>| v.into_iter().map(bf16::from_f32).collect::<Vec<_>>();
    let wd = g.upload(&to(rand_vec(m * k, 6)))?;
    let x = g.upload(&to(rand_vec(k * n, 7)))?;
    let mut y = g.zeros::<bf16>(m * n)?;
    let case = format!("{m}x{k} times {k}x{n}, bf16");
    let dense = energy_row(
        g,
        meter,
        case.clone(),
        "cublas_bf16 (dense)".into(),
        None,
        || lopper_cuda::gemm(g, m, n, k, &wd, &x, &mut y),
    )?;
    let dj = dense.joules;
    rows.push(dense);
    let w24 = lopper_cuda::sparse24_compress(g, &wd, m, k)?;
    // the fastest tile configuration at this shape
    let mut best = (f64::INFINITY, lopper_cuda::Spmm24Tile::DEFAULT);
    for tile in lopper_cuda::Spmm24Tile::ALL {
        if !tile.runs_on(g) {
            continue;
        }
        let ms = g.time_ms(1, 3, || {
            lopper_cuda::sparse24_spmm_with(g, &w24, &x, n, &mut y, tile)
        })?;
        if ms < best.0 {
            best = (ms, tile);
        }
    }
    let tile = best.1;
    rows.push(energy_row(
        g,
        meter,
        case,
        format!("sparse24_spmm {}", tile.name()),
        Some(dj),
        || lopper_cuda::sparse24_spmm_with(g, &w24, &x, n, &mut y, tile),
    )?);
    Ok(())
}
