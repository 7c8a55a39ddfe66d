//! `lopper bench spmm` and `lopper bench spmm24`: the production CPU kernels against lopper's dense GEMM
//! of the same shape (`lopper_tensor::gemm`: faer, one slab of C per thread), timed in the same run
//! (interleaved rounds, medians).
//!
//! Matrices: `--matrix FILE` (one `.smtx`, or Matrix Market by its `.mtx` extension or its
//! `%%MatrixMarket` header), `--matrices DIR` (every .smtx and .mtx below it, symlinked folders not
//! followed), by default `../shared/dlmc` (or `$LOPPER_DLMC`) when present, else generated
//! uniform-random and power-law-row patterns. Values are random in [-1, 1) (DLMC files carry patterns
//! only; a Matrix Market file's values are replaced too).
//!
//! Arguments are checked before anything runs, and the bytes each benchmark needs before anything is
//! allocated: a shape that cannot fit is an error naming it, not an allocation abort.
use crate::CliError;
use clap::{Args, Subcommand};
use lopper_energy::steal::{STEAL_WARN, StealWindow, steal_warning};
use lopper_sparse::io::{mtx, smtx};
use lopper_sparse::{Csr, Sparse24, sddmm, spmm, spmm_24, spmm_t_sddmm, spmm_t_with};
use lopper_tensor::{MatMut, MatRef, Par, Tensor, Transpose, gemm};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// CSR products (spmm, spmm_t, sddmm) against dense GEMM of the same shape, over a set of matrices.
    Spmm(SpmmArgs),
    /// 2:4 spmm against dense GEMM at one shape.
    Spmm24(Spmm24Args),
}

/// Most timed rounds `--rounds` accepts.
const MAX_ROUNDS: usize = 1000;
/// Most seconds `--min-time` accepts.
const MAX_MIN_TIME: f64 = 60.0;

#[derive(Args, Clone)]
pub struct Common {
    /// Threads (0 = all cores; at most max(64, 8 x the cores)).
    #[arg(long, default_value_t = 0, value_parser = parse_threads, allow_negative_numbers = true)]
    pub threads: usize,
    /// Timed rounds (1 to 1000); each round times sparse then dense (interleaved), medians are reported.
    #[arg(long, default_value_t = 7, value_parser = parse_rounds, allow_negative_numbers = true)]
    pub rounds: usize,
    /// Minimum seconds per timed sample, 0 to 60 (calls are repeated to reach it).
    #[arg(long, default_value_t = 0.02, value_parser = parse_min_time, allow_negative_numbers = true)]
    pub min_time: f64,
    /// Print JSON instead of the table (one object for one matrix/shape, else an array).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SpmmArgs {
    /// One matrix: a DLMC .smtx pattern, or a Matrix Market coordinate file (by its .mtx extension or
    /// its `%%MatrixMarket` header; its values are replaced by random ones like the patterns').
    #[arg(long, conflicts_with = "matrices")]
    pub matrix: Option<PathBuf>,
    /// A folder searched recursively for .smtx and .mtx files (symlinked folders are not followed).
    #[arg(long)]
    pub matrices: Option<PathBuf>,
    /// Only matrices whose path (or shortened name) contains this text; applied before files are read.
    #[arg(long)]
    pub filter: Option<String>,
    /// Columns of X (comma separated, positive).
    #[arg(long, value_delimiter = ',', default_value = "128,512", value_parser = parse_positive, allow_negative_numbers = true)]
    pub n: Vec<usize>,
    /// Which product: `spmm` (Y = W X), `spmm_t` (Y = W^T X, cached transpose), `sddmm` (A B^T at
    /// W's pattern, A (M, N), B (K, N)), `spmm_t_sddmm` (a sparse layer's backward in one pass:
    /// dX = W^T dY and dW = dY X^T at the pattern). The dense baseline is the GEMM of the same shape
    /// (for `spmm_t_sddmm`, the two GEMMs of a dense layer's backward).
    #[arg(long, default_value = "spmm", value_parser = ["spmm", "spmm_t", "sddmm", "spmm_t_sddmm"])]
    pub kernel: String,
    /// A peer's figures to set beside lopper's: the JSON that `../shared/peers/peer_bench.py --json`
    /// writes (rows with `section` "spmm", `lib`, `matrix` relative to the DLMC folder, `n`,
    /// `gflops`). Each row of ours gets the peer's GFLOP/s on the same matrix and N and the ratio,
    /// and the table their geometric mean. Measure both in the same hour.
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// Which of the peer file's libraries to compare with.
    #[arg(long, default_value = "torch_csr", requires = "peer")]
    pub peer_lib: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct Spmm24Args {
    /// Rows of W (positive).
    #[arg(long, default_value_t = 3072, value_parser = parse_positive, allow_negative_numbers = true)]
    pub m: usize,
    /// Columns of W and rows of X (a positive multiple of 4).
    #[arg(long, default_value_t = 768, value_parser = parse_positive, allow_negative_numbers = true)]
    pub k: usize,
    /// Columns of X (positive).
    #[arg(long, default_value_t = 512, value_parser = parse_positive, allow_negative_numbers = true)]
    pub n: usize,
    #[command(flatten)]
    pub common: Common,
}

/// One measured row of the harness.
#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub kernel: &'static str,
    pub matrix: String,
    pub rows: usize,
    pub cols: usize,
    pub nnz: usize,
    pub sparsity: f64,
    pub n: usize,
    pub threads: usize,
    pub sparse_ms: f64,
    pub dense_ms: f64,
    /// dense_ms / sparse_ms
    pub speedup: f64,
    /// 2 * nnz * N / sparse time (4 * nnz * N for `spmm_t_sddmm`: two products)
    pub effective_gflops: f64,
    /// 2 * M * K * N / dense time (4 * M * K * N for `spmm_t_sddmm`)
    pub dense_gflops: f64,
    /// Share of the machine's CPU time the hypervisor gave to other guests while this row was
    /// timed (`/proc/stat` steal); `null` where unknown (no `/proc/stat`, or a window shorter than
    /// one clock tick). Above 2% the table says its times are distorted.
    pub cpu_steal: Option<f64>,
    /// With `--peer`: the peer library's GFLOP/s on the same matrix and N (absent without one, or
    /// when the peer file has no such row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_gflops: Option<f64>,
    /// With `--peer`: effective_gflops / peer_gflops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_peer: Option<f64>,
}

/// `--m`, `--k`, `--n`: a positive integer.
fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be positive".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    }
}

/// `--rounds`: 1 to [`MAX_ROUNDS`].
fn parse_rounds(s: &str) -> Result<usize, String> {
    let v = s.parse::<usize>().map_err(|e| e.to_string())?;
    if !(1..=MAX_ROUNDS).contains(&v) {
        return Err(format!("must be 1 to {MAX_ROUNDS}"));
    }
    Ok(v)
}

/// `--min-time`: finite seconds from 0 to [`MAX_MIN_TIME`].
fn parse_min_time(s: &str) -> Result<f64, String> {
    let v = s.parse::<f64>().map_err(|e| e.to_string())?;
    if !(0.0..=MAX_MIN_TIME).contains(&v) {
        return Err(format!("must be 0 to {MAX_MIN_TIME} seconds"));
    }
    Ok(v)
}

/// `--threads`: 0 (all cores) up to max(64, 8 x the available cores).
fn parse_threads(s: &str) -> Result<usize, String> {
    let v = s.parse::<usize>().map_err(|e| e.to_string())?;
    let max = super::train::max_threads();
    if v > max {
        return Err(format!(
            "at most {max} on this machine (8 per core, at least 64), or 0 for all cores"
        ));
    }
    Ok(v)
}

/// Bytes of buffers given as (bytes per element, dimensions); `None` when the total overflows.
fn bytes_of(bufs: &[(usize, &[usize])]) -> Option<usize> {
    bufs.iter().try_fold(0usize, |acc, &(size, dims)| {
        dims.iter()
            .try_fold(size, |a, &d| a.checked_mul(d))?
            .checked_add(acc)
    })
}

/// Refuses a benchmark (`what` names its shape) whose buffers take `bytes` (`None`: overflowed).
/// Every bench path calls this before it allocates anything.
fn check_fits(what: &str, bytes: Option<usize>) -> Result<(), CliError> {
    check_fits_in(what, bytes, lopper_tensor::mem::physical_memory())
}

/// [`check_fits`] against `mem` bytes of memory; when unknown, the buffers must be reservable at once.
fn check_fits_in(what: &str, bytes: Option<usize>, mem: Option<u64>) -> Result<(), CliError> {
    const GIB: f64 = (1u64 << 30) as f64;
    let Some(bytes) = bytes else {
        return Err(CliError::Usage(format!(
            "{what}: the buffers it needs overflow the address space ({} bits); use a smaller shape",
            usize::BITS
        )));
    };
    match mem {
        Some(mem) if bytes as u64 > mem => Err(CliError::Usage(format!(
            "{what}: needs {bytes} bytes ({:.1} GiB) of buffers, more than this machine's memory \
             ({mem} bytes, {:.1} GiB); use a smaller shape",
            bytes as f64 / GIB,
            mem as f64 / GIB
        ))),
        Some(_) => Ok(()),
        None => Vec::<u8>::new().try_reserve_exact(bytes).map_err(|e| {
            CliError::Usage(format!(
                "{what}: cannot allocate the {bytes} bytes ({:.1} GiB) of buffers it needs: {e}",
                bytes as f64 / GIB
            ))
        }),
    }
}

/// Bytes [`measure_csr`] allocates for `w` with `n` columns: the dense copy of W, the transpose,
/// the operands and both results.
fn csr_bytes(w: &Csr, n: usize, kernel: &str) -> Option<usize> {
    let (m, k, nnz) = (w.rows(), w.cols(), w.nnz());
    if kernel == "spmm_t_sddmm" {
        return bytes_of(&[
            (4, &[m, k]),  // dense W
            (12, &[nnz]),  // transpose: indices, values, permutation
            (8, &[k + 1]), // transpose offsets
            (4, &[m, n]),  // dY
            (8, &[k, n]),  // X and dX
            (4, &[k, n]),  // dense dX
            (4, &[nnz]),   // dW at the pattern
            (4, &[m, k]),  // dense dW
            (16, &[nnz]),  // entries' positions for the check
        ]);
    }
    let (xr, yr) = match kernel {
        "spmm" => (k, m),
        "spmm_t" => (m, k),
        _ => (m, m),
    };
    let sddmm = kernel == "sddmm";
    let b = if sddmm { k } else { 0 };
    let (ys, yd) = if sddmm {
        (&[nnz][..], &[m, k][..])
    } else {
        (&[yr, n][..], &[yr, n][..])
    };
    bytes_of(&[
        (4, &[m, k]),  // dense W
        (12, &[nnz]),  // transpose: indices, values, permutation
        (8, &[k + 1]), // transpose offsets
        (4, &[xr, n]), // X (A for sddmm)
        (4, &[b, n]),  // B (sddmm)
        (4, ys),       // sparse result
        (4, yd),       // dense result
        (4, ys),       // dense result at the pattern (or its copy)
    ])
}

/// What [`check_fits`] names for a CSR benchmark.
fn csr_what(name: &str, w: &Csr, n: usize, kernel: &str) -> String {
    format!(
        "bench spmm --kernel {kernel}: {name} ({}x{}, {} non-zeros) with N = {n}",
        w.rows(),
        w.cols(),
        w.nnz()
    )
}

pub fn run(cmd: BenchCmd) -> Result<(), CliError> {
    // the kernels are timed as `lopper train` calls them: from a thread of rayon's pool (the main
    // thread joins it), which starts each parallel region itself instead of handing it to the pool
    // and sleeping until it is done; that handoff cost 12-17 us per call here, a quarter of a 512 x
    // 512 product at 98% sparsity
    let threads = match &cmd {
        BenchCmd::Spmm(a) => a.common.threads,
        BenchCmd::Spmm24(a) => a.common.threads,
    };
    super::train::set_threads(threads)?;
    match cmd {
        BenchCmd::Spmm(a) => bench_spmm(a),
        BenchCmd::Spmm24(a) => bench_spmm24(a),
    }
}

fn par(threads: usize) -> Par {
    if threads == 1 {
        Par::Seq
    } else {
        Par::Rayon(threads)
    }
}

/// Median seconds per call of `a` and `b`, timed in alternating rounds after a warm-up, and the
/// hypervisor's share of CPU time while they were timed (see [`Row::cpu_steal`]).
fn time_pair(c: &Common, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64, Option<f64>) {
    let reps = |f: &mut dyn FnMut()| {
        f();
        f();
        let t = Instant::now();
        f();
        let one = t.elapsed().as_secs_f64().max(1e-7);
        ((c.min_time / one).ceil() as usize).clamp(1, 100_000)
    };
    let (ka, kb) = (reps(&mut a), reps(&mut b));
    let steal = StealWindow::start();
    let mut sa = Vec::with_capacity(c.rounds);
    let mut sb = Vec::with_capacity(c.rounds);
    for _ in 0..c.rounds {
        let t = Instant::now();
        for _ in 0..ka {
            a();
        }
        sa.push(t.elapsed().as_secs_f64() / ka as f64);
        let t = Instant::now();
        for _ in 0..kb {
            b();
        }
        sb.push(t.elapsed().as_secs_f64() / kb as f64);
    }
    (median(&mut sa), median(&mut sb), steal.fraction())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure_csr(name: &str, w: &Csr, n: usize, kernel: &str, c: &Common) -> Result<Row, CliError> {
    check_fits(&csr_what(name, w, n, kernel), csr_bytes(w, n, kernel))?;
    if kernel == "spmm_t_sddmm" {
        return measure_backward(name, w, n, c);
    }
    let (m, k) = (w.rows(), w.cols());
    let p = par(c.threads);
    let wd = w.to_dense();
    // operands: spmm X (K, N); spmm_t X (M, N); sddmm A (M, N), B (K, N)
    let (xr, yr) = match kernel {
        "spmm" => (k, m),
        "spmm_t" => (m, k),
        _ => (m, m),
    };
    let x = Tensor::rand_uniform(&[xr, n], -1.0, 1.0, 7);
    let b = Tensor::rand_uniform(&[if kernel == "sddmm" { k } else { 0 }, n], -1.0, 1.0, 8);
    let (xd, bd) = (x.as_f32()?, b.as_f32()?);
    let wt = w.transpose();
    let mut ys = vec![0.0f32; if kernel == "sddmm" { w.nnz() } else { yr * n }];
    let mut yd = vec![0.0f32; if kernel == "sddmm" { m * k } else { yr * n }];
    let sparse = |ys: &mut [f32]| -> Result<(), CliError> {
        match kernel {
            "spmm" => spmm(w, MatRef::new(xd, k, n)?, MatMut::new(ys, m, n)?, p)?,
            "spmm_t" => spmm_t_with(&wt, MatRef::new(xd, m, n)?, MatMut::new(ys, k, n)?, p)?,
            _ => sddmm(w, MatRef::new(xd, m, n)?, MatRef::new(bd, k, n)?, ys, p)?,
        }
        Ok(())
    };
    let dense = |yd: &mut [f32]| -> Result<(), CliError> {
        match kernel {
            "spmm" => gemm(
                MatMut::new(yd, m, n)?,
                MatRef::new(&wd, m, k)?,
                Transpose::No,
                MatRef::new(xd, k, n)?,
                Transpose::No,
                1.0,
                0.0,
                p,
            )?,
            "spmm_t" => gemm(
                MatMut::new(yd, k, n)?,
                MatRef::new(&wd, m, k)?,
                Transpose::Yes,
                MatRef::new(xd, m, n)?,
                Transpose::No,
                1.0,
                0.0,
                p,
            )?,
            _ => gemm(
                MatMut::new(yd, m, k)?,
                MatRef::new(xd, m, n)?,
                Transpose::No,
                MatRef::new(bd, k, n)?,
                Transpose::Yes,
                1.0,
                0.0,
                p,
            )?,
        }
        Ok(())
    };
    // check once that the two agree before timing them
    sparse(&mut ys)?;
    dense(&mut yd)?;
    let dense_at_pattern: Vec<f32> = if kernel == "sddmm" {
        (0..m)
            .flat_map(|i| w.row(i).0.iter().map(move |&j| (i, j as usize)))
            .map(|(i, j)| yd[i * k + j])
            .collect()
    } else {
        yd.clone()
    };
    let err = lopper_tensor::ops::max_abs_diff(&ys, &dense_at_pattern)?;
    let scale = 1.0 + dense_at_pattern.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    if err > 1e-3 * scale {
        return Err(CliError::Usage(format!(
            "{name}: {kernel} and dense results differ by {err}"
        )));
    }
    let (ts, td, steal) = time_pair(
        c,
        || sparse(&mut ys).expect("checked above"),
        || dense(&mut yd).expect("checked above"),
    );
    let label = match kernel {
        "spmm" => "spmm",
        "spmm_t" => "spmm_t",
        _ => "sddmm",
    };
    Ok(row(label, name, m, k, w.nnz(), n, c, (ts, td), steal))
}

/// `spmm_t_sddmm` against a dense layer's backward: dX = W^T dY and dW += dY X^T by two GEMMs.
/// Both accumulate dW across the timed calls (the same work per call).
fn measure_backward(name: &str, w: &Csr, n: usize, c: &Common) -> Result<Row, CliError> {
    let (m, k) = (w.rows(), w.cols());
    let p = par(c.threads);
    let wd = w.to_dense();
    let wt = w.transpose();
    let dy = Tensor::rand_uniform(&[m, n], -1.0, 1.0, 7);
    let x = Tensor::rand_uniform(&[k, n], -1.0, 1.0, 8);
    let (yd, xd) = (dy.as_f32()?, x.as_f32()?);
    let (mut dxs, mut dxd) = (vec![0.0f32; k * n], vec![0.0f32; k * n]);
    let (mut dws, mut dwd) = (vec![0.0f32; w.nnz()], vec![0.0f32; m * k]);
    let sparse = |dx: &mut [f32], dw: &mut [f32]| -> Result<(), CliError> {
        let (y, x, dx) = (
            MatRef::new(yd, m, n)?,
            MatRef::new(xd, k, n)?,
            MatMut::new(dx, k, n)?,
        );
        spmm_t_sddmm(&wt, y, x, dx, dw, p)?;
        Ok(())
    };
    let dense = |dx: &mut [f32], dw: &mut [f32]| -> Result<(), CliError> {
        let (y, x, wm) = (
            MatRef::new(yd, m, n)?,
            MatRef::new(xd, k, n)?,
            MatRef::new(&wd, m, k)?,
        );
        gemm(
            MatMut::new(dx, k, n)?,
            wm,
            Transpose::Yes,
            y,
            Transpose::No,
            1.0,
            0.0,
            p,
        )?;
        gemm(
            MatMut::new(dw, m, k)?,
            y,
            Transpose::No,
            x,
            Transpose::Yes,
            1.0,
            1.0,
            p,
        )?;
        Ok(())
    };
    // check once that the two agree before timing them: dX, and dW through the transpose's order
    sparse(&mut dxs, &mut dws)?;
    dense(&mut dxd, &mut dwd)?;
    let pos: Vec<usize> = (0..m)
        .flat_map(|i| w.row(i).0.iter().map(move |&j| i * k + j as usize))
        .collect();
    let dw_at: Vec<f32> = wt.perm().iter().map(|&q| dwd[pos[q as usize]]).collect();
    for (what, got, want) in [("dX", &dxs, &dxd), ("dW", &dws, &dw_at)] {
        let err = lopper_tensor::ops::max_abs_diff(got, want)?;
        let scale = 1.0 + want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        if err > 1e-3 * scale {
            return Err(CliError::Usage(format!(
                "{name}: spmm_t_sddmm's {what} and the dense one differ by {err}"
            )));
        }
    }
    let (ts, td, steal) = time_pair(
        c,
        || sparse(&mut dxs, &mut dws).expect("checked above"),
        || dense(&mut dxd, &mut dwd).expect("checked above"),
    );
    let mut r = row("spmm_t_sddmm", name, m, k, w.nnz(), n, c, (ts, td), steal);
    // two products on each side
    r.effective_gflops *= 2.0;
    r.dense_gflops *= 2.0;
    Ok(r)
}

fn row(
    kernel: &'static str,
    name: &str,
    m: usize,
    k: usize,
    nnz: usize,
    n: usize,
    c: &Common,
    (ts, td): (f64, f64),
    cpu_steal: Option<f64>,
) -> Row {
    Row {
        kernel,
        matrix: name.to_string(),
        rows: m,
        cols: k,
        nnz,
        sparsity: 1.0 - nnz as f64 / (m as f64 * k as f64).max(1.0),
        n,
        threads: par(c.threads).threads(),
        sparse_ms: ts * 1e3,
        dense_ms: td * 1e3,
        speedup: td / ts,
        effective_gflops: 2.0 * nnz as f64 * n as f64 / ts / 1e9,
        dense_gflops: 2.0 * m as f64 * k as f64 * n as f64 / td / 1e9,
        cpu_steal,
        peer_gflops: None,
        vs_peer: None,
    }
}

/// A peer's GFLOP/s by (matrix name as [`matrix_name`] reports it, N), from `peer_bench.py`'s JSON:
/// an object whose `rows` (or the document itself) is an array of rows; those with `section`
/// "spmm" and `lib` equal to `lib` count. A row of that library without a string `matrix`, an
/// integer `n` or a positive `gflops` is an error naming its index.
fn load_peer(path: &Path, lib: &str) -> Result<HashMap<(String, usize), f64>, CliError> {
    super::check_input("--peer", path)?;
    let bad = |what: String| CliError::Usage(format!("--peer {}: {what}", path.display()));
    let text = std::fs::read(path).map_err(|source| CliError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let rows = doc.get("rows").unwrap_or(&doc).as_array().ok_or_else(|| {
        bad("no array of rows (peer_bench.py --json writes {\"rows\": [...]})".into())
    })?;
    let mut out = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if r.get("section").and_then(|v| v.as_str()) != Some("spmm")
            || r.get("lib").and_then(|v| v.as_str()) != Some(lib)
        {
            continue;
        }
        let matrix = r.get("matrix").and_then(|v| v.as_str());
        let n = r.get("n").and_then(|v| v.as_u64());
        let g = r.get("gflops").and_then(|v| v.as_f64());
        match (matrix, n, g) {
            (Some(m), Some(n), Some(g)) if g.is_finite() && g > 0.0 => {
                out.insert((matrix_name(Path::new(m)), n as usize), g);
            }
            _ => {
                return Err(bad(format!(
                    "row {i} ({lib}) needs a string matrix, an integer n and a positive gflops: {r}"
                )));
            }
        }
    }
    Ok(out)
}

/// The .smtx and .mtx files below `dir`. Symlinks to folders are not followed (they can loop);
/// symlinks to files are kept.
fn find_matrices(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CliError::Io { path, source }
    };
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let p = e.path();
        // `DirEntry::file_type` does not follow symlinks
        if e.file_type().map_err(io(&p))?.is_dir() {
            find_matrices(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "smtx" || x == "mtx") && !p.is_dir() {
            out.push(p);
        }
    }
    Ok(())
}

/// The name a matrix file is reported under: model/method/sparsity/layer, DLMC's long layer-name
/// prefixes shortened.
fn matrix_name(f: &Path) -> String {
    // the path's names only: an absolute path's root is not a name (`/tmp/a.smtx` is `tmp/a`)
    let parts: Vec<String> = f
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().to_string()),
            _ => None,
        })
        .rev()
        .take(4)
        .collect();
    let name = parts
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("/")
        .replace("body_encoder_layer_", "enc")
        .replace("_fully_connected", "")
        .replace("self_attention_multihead_attention_", "attn_")
        .replace("magnitude_pruning", "magnitude");
    // .smtx (DLMC's own files) loses its extension; a Matrix Market file keeps `.mtx`, so that
    // `a.smtx` and `a.mtx` in one folder stay two rows
    name.strip_suffix(".smtx").unwrap_or(&name).to_string()
}

/// Reads a matrix file: Matrix Market when it ends in `.mtx` or starts with `%%MatrixMarket`, else
/// `.smtx`. Values are random in [-1, 1) either way (the benchmark times patterns).
fn read_matrix(f: &Path) -> Result<Csr, CliError> {
    super::check_input("matrix file", f)?;
    let text = std::fs::read_to_string(f).map_err(|source| CliError::Io {
        path: f.to_path_buf(),
        source,
    })?;
    let is_mtx = f.extension().is_some_and(|x| x.eq_ignore_ascii_case("mtx"))
        || text
            .get(..14)
            .is_some_and(|h| h.eq_ignore_ascii_case("%%MatrixMarket"));
    let pat = if is_mtx {
        let (c, _) = mtx::parse(&text, f)?;
        smtx::Pattern {
            rows: c.rows(),
            cols: c.cols(),
            row_ptr: c.row_ptr().to_vec(),
            col_idx: c.col_idx().to_vec(),
        }
    } else {
        smtx::parse(&text, f)?
    };
    Ok(pat.with_random_values(1)?)
}

fn default_dlmc() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LOPPER_DLMC") {
        return Some(PathBuf::from(p));
    }
    ["../shared/dlmc", "../../shared/dlmc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
}

/// Generated patterns: uniform random rows and power-law row lengths, at several sparsities.
fn generated() -> Vec<(String, Csr)> {
    let mut out = Vec::new();
    for &(m, k) in &[(2048usize, 512usize), (512, 2048)] {
        for &s in &[0.5, 0.7, 0.8, 0.9, 0.95, 0.98] {
            for kind in ["uniform", "powerlaw"] {
                let mut r =
                    rand::rngs::StdRng::seed_from_u64(((m * 31 + k) as u64) ^ (s * 1000.0) as u64);
                let mean = (1.0 - s) * k as f64;
                let mut rp = vec![0usize];
                let mut ci = Vec::new();
                for i in 0..m {
                    let len = if kind == "uniform" {
                        mean
                    } else {
                        // Zipf-like row lengths with the same mean
                        let z = 1.0 / ((i % 64) as f64 + 1.0).powf(0.8);
                        mean * z * 64.0 / (1..=64).map(|t| 1.0 / (t as f64).powf(0.8)).sum::<f64>()
                    };
                    let len = (len.round() as usize).min(k);
                    let mut cols = rand::seq::index::sample(&mut r, k, len).into_vec();
                    cols.sort_unstable();
                    ci.extend(cols.into_iter().map(|c| c as u32));
                    rp.push(ci.len());
                }
                let vals = (0..ci.len())
                    .map(|_| r.random_range(-1.0f32..1.0))
                    .collect();
                if let Ok(c) = Csr::from_parts(m, k, rp, ci, vals) {
                    out.push((format!("{kind}-{m}x{k}-{s}"), c));
                }
            }
        }
    }
    out
}

fn bench_spmm(a: SpmmArgs) -> Result<(), CliError> {
    if a.n.is_empty() || a.n.contains(&0) {
        return Err(CliError::Usage("--n needs positive column counts".into()));
    }
    // read before anything is measured: a bad file fails at once
    let peer = a
        .peer
        .as_deref()
        .map(|p| load_peer(p, &a.peer_lib))
        .transpose()?;
    let keep = |name: &str, path: &str| {
        a.filter
            .as_deref()
            .is_none_or(|s| name.contains(s) || path.contains(s))
    };
    let mut cases: Vec<(String, Csr)> = Vec::new();
    let files = if let Some(f) = &a.matrix {
        super::check_input("--matrix", f)?;
        vec![f.clone()]
    } else if let Some(d) = a.matrices.clone().or_else(default_dlmc) {
        let mut v = Vec::new();
        find_matrices(&d, &mut v)?;
        v.sort();
        if v.is_empty() {
            return Err(CliError::Usage(format!(
                "no .smtx or .mtx files under {}",
                d.display()
            )));
        }
        v
    } else {
        eprintln!(
            "lopper bench: no DLMC folder found (../shared/dlmc, $LOPPER_DLMC); using generated patterns"
        );
        cases = generated();
        cases.retain(|(n, _)| keep(n, n));
        vec![]
    };
    // the filter goes before parsing: a file it excludes is never read
    for f in files {
        let name = matrix_name(&f);
        if keep(&name, &f.to_string_lossy()) {
            cases.push((name, read_matrix(&f)?));
        }
    }
    // a matrix with no stored entry (or no rows or columns) has no work to time: a speedup of it
    // would mean nothing
    let empty: Vec<String> = cases
        .iter()
        .filter(|(_, w)| w.nnz() == 0)
        .map(|(n, w)| format!("{n} ({}x{}, {} non-zeros)", w.rows(), w.cols(), w.nnz()))
        .collect();
    if !empty.is_empty() {
        if a.matrix.is_some() {
            return Err(CliError::Usage(format!(
                "{}: no stored entry, nothing to benchmark",
                empty[0]
            )));
        }
        eprintln!(
            "lopper bench: skipped, no stored entry: {}",
            empty.join(", ")
        );
        cases.retain(|(_, w)| w.nnz() > 0);
    }
    if cases.is_empty() {
        return Err(CliError::Usage(
            "no matrix left to benchmark (check --filter)".into(),
        ));
    }
    // every shape is checked before the first is measured
    for (name, w) in &cases {
        for &n in &a.n {
            check_fits(&csr_what(name, w, n, &a.kernel), csr_bytes(w, n, &a.kernel))?;
        }
    }
    let mut rows = Vec::new();
    for (name, w) in &cases {
        for &n in &a.n {
            let mut r = measure_csr(name, w, n, &a.kernel, &a.common)?;
            if let Some(g) = peer.as_ref().and_then(|p| p.get(&(name.clone(), n))) {
                r.peer_gflops = Some(*g);
                r.vs_peer = Some(r.effective_gflops / g);
            }
            if !a.common.json {
                eprintln!("{}", fmt_row(&r));
            }
            rows.push(r);
        }
    }
    emit(&rows, &a.common, a.matrix.is_some() && a.n.len() == 1)?;
    if let (Some(p), false) = (&a.peer, a.common.json) {
        println!("{}", peer_line(&rows, &a.peer_lib, p));
    }
    Ok(())
}

/// The geometric mean of lopper over the peer on the rows that have a peer figure, or why none do.
fn peer_line(rows: &[Row], lib: &str, path: &Path) -> String {
    let r: Vec<f64> = rows.iter().filter_map(|r| r.vs_peer).collect();
    if r.is_empty() {
        return format!(
            "no row of {} ({lib}) matches these matrices and N",
            path.display()
        );
    }
    let g = (r.iter().map(|x| x.ln()).sum::<f64>() / r.len() as f64).exp();
    let min = r.iter().copied().fold(f64::INFINITY, f64::min);
    format!(
        "geometric mean GFLOP/s over {lib} ({}): {g:.2}x over {} of {} rows, lowest {min:.2}x",
        path.display(),
        r.len(),
        rows.len()
    )
}

fn bench_spmm24(a: Spmm24Args) -> Result<(), CliError> {
    let (m, k, n) = (a.m, a.k, a.n);
    if k % 4 != 0 || m == 0 || n == 0 {
        return Err(CliError::Usage(format!(
            "--k must be a multiple of 4 and --m, --n positive (got {m}x{k}x{n})"
        )));
    }
    // dense W, its 2:4 values and metadata, W again from the 2:4, X, both results
    let bytes = bytes_of(&[
        (4, &[m, k]),
        (4, &[m, k / 2]),
        (2, &[m, k.div_ceil(16)]),
        (4, &[m, k]),
        (4, &[k, n]),
        (4, &[m, n]),
        (4, &[m, n]),
    ]);
    check_fits(
        &format!("bench spmm24: W {m}x{k} (2:4) with N = {n}"),
        bytes,
    )?;
    let c = &a.common;
    let wd = Tensor::rand_uniform(&[m, k], -1.0, 1.0, 3);
    let w = Sparse24::from_tensor_prune(&wd)?;
    let wdd = w.to_dense();
    let x = Tensor::rand_uniform(&[k, n], -1.0, 1.0, 4);
    let xd = x.as_f32()?;
    let (mut ys, mut yd) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
    let p = par(c.threads);
    spmm_24(&w, MatRef::new(xd, k, n)?, MatMut::new(&mut ys, m, n)?, p)?;
    gemm(
        MatMut::new(&mut yd, m, n)?,
        MatRef::new(&wdd, m, k)?,
        Transpose::No,
        MatRef::new(xd, k, n)?,
        Transpose::No,
        1.0,
        0.0,
        p,
    )?;
    let err = lopper_tensor::ops::max_abs_diff(&ys, &yd)?;
    if err > 1e-3 * (k as f32).sqrt() {
        return Err(CliError::Usage(format!(
            "spmm_24 and dense differ by {err}"
        )));
    }
    let (ts, td, steal) = time_pair(
        c,
        || {
            spmm_24(
                &w,
                MatRef::new(xd, k, n).expect("shape"),
                MatMut::new(&mut ys, m, n).expect("shape"),
                p,
            )
            .expect("spmm_24")
        },
        || {
            gemm(
                MatMut::new(&mut yd, m, n).expect("shape"),
                MatRef::new(&wdd, m, k).expect("shape"),
                Transpose::No,
                MatRef::new(xd, k, n).expect("shape"),
                Transpose::No,
                1.0,
                0.0,
                p,
            )
            .expect("gemm")
        },
    );
    let r = row(
        "spmm_24",
        &format!("random-2:4-{m}x{k}"),
        m,
        k,
        m * k / 2,
        n,
        c,
        (ts, td),
        steal,
    );
    emit(&[r], c, true)
}

fn fmt_row(r: &Row) -> String {
    let peer = match (r.peer_gflops, r.vs_peer) {
        (Some(g), Some(v)) => format!(" {g:>9.1} {v:>7.2}x"),
        _ => String::new(),
    };
    format!(
        "{:<44} {:>5}x{:<5} {:>6.3} {:>5} {:>9.3} {:>9.3} {:>8.1} {:>7.2}x{peer}",
        r.matrix,
        r.rows,
        r.cols,
        r.sparsity,
        r.n,
        r.sparse_ms,
        r.dense_ms,
        r.effective_gflops,
        r.speedup
    )
}

/// Crossover per (shape, N): the sparsity above which sparse beats dense, interpolated between the
/// densest winning and the sparsest losing matrix.
fn crossovers(rows: &[Row]) -> Vec<String> {
    let mut keys: Vec<(usize, usize, usize)> = rows.iter().map(|r| (r.rows, r.cols, r.n)).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|(m, k, n)| {
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| (r.rows, r.cols, r.n) == (m, k, n))
                .map(|r| (r.sparsity, r.speedup))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let lose = pts.iter().rev().find(|p| p.1 < 1.0);
            let txt = match lose {
                None => format!("<= {:.2} (wins at every measured sparsity)", pts[0].0),
                Some(&(s0, v0)) => match pts.iter().find(|p| p.0 > s0 && p.1 >= 1.0) {
                    None => format!("> {s0:.2} (never wins)"),
                    Some(&(s1, v1)) => format!("{:.3}", s0 + (s1 - s0) * (1.0 - v0) / (v1 - v0)),
                },
            };
            format!("{m}x{k}, N={n}: crossover sparsity {txt}")
        })
        .collect()
}

/// The steal warning for a set of rows (the largest share among them), if any row was distorted.
fn steal_line(rows: &[Row]) -> Option<String> {
    let worst = rows
        .iter()
        .filter_map(|r| r.cpu_steal)
        .fold(None, |m: Option<f64>, f| Some(m.map_or(f, |m| m.max(f))));
    let hit = rows
        .iter()
        .filter(|r| r.cpu_steal.is_some_and(|f| f > STEAL_WARN))
        .count();
    steal_warning(worst).map(|w| format!("{w} (largest share; {hit} of {} rows)", rows.len()))
}

fn emit(rows: &[Row], c: &Common, single: bool) -> Result<(), CliError> {
    if let Some(w) = steal_line(rows).filter(|_| c.json) {
        eprintln!("{w}"); // stdout stays one JSON document
    }
    if c.json {
        let s = if single && rows.len() == 1 {
            serde_json::to_string_pretty(&rows[0])
        } else {
            serde_json::to_string_pretty(rows)
        }
        .map_err(|e| CliError::Usage(e.to_string()))?;
        println!("{s}");
        return Ok(());
    }
    let peer = if rows.iter().any(|r| r.vs_peer.is_some()) {
        format!(" {:>9} {:>8}", "peer GF/s", "vs peer")
    } else {
        String::new()
    };
    println!(
        "{:<44} {:>11} {:>6} {:>5} {:>9} {:>9} {:>8} {:>8}{peer}",
        "matrix", "shape", "sparse", "N", "sparse ms", "dense ms", "GFLOP/s", "speedup"
    );
    for r in rows {
        println!("{}", fmt_row(r));
    }
    if rows.len() > 1 {
        let g = (rows.iter().map(|r| r.speedup.ln()).sum::<f64>() / rows.len() as f64).exp();
        println!(
            "geometric mean speedup vs dense: {g:.2}x over {} rows ({} threads)",
            rows.len(),
            rows[0].threads
        );
        for l in crossovers(rows) {
            println!("{l}");
        }
    }
    if let Some(w) = steal_line(rows) {
        println!("{w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_parsers_refuse_nonsense() {
        assert_eq!(parse_positive("3"), Ok(3));
        assert!(parse_positive("0").unwrap_err().contains("positive"));
        assert!(parse_positive("-1").is_err());
        assert_eq!(parse_rounds("1"), Ok(1));
        assert!(parse_rounds("0").unwrap_err().contains("1 to 1000"));
        assert!(parse_rounds("18446744073709551615").is_err());
        assert_eq!(parse_min_time("0"), Ok(0.0));
        assert_eq!(parse_min_time("60"), Ok(60.0));
        for bad in ["NaN", "inf", "-inf", "1e300", "60.5", "-0.1"] {
            assert!(parse_min_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_threads("0"), Ok(0));
        assert_eq!(parse_threads("64"), Ok(64));
        assert!(parse_threads("100000").unwrap_err().contains("at most"));
    }

    #[test]
    fn sizes_that_overflow_or_exceed_memory_are_refused() {
        assert_eq!(bytes_of(&[(4, &[2, 3]), (2, &[5])]), Some(34));
        assert_eq!(bytes_of(&[(4, &[usize::MAX, 4])]), None);
        assert_eq!(bytes_of(&[(4, &[1 << 61]), (4, &[1 << 61])]), None);
        let e = check_fits_in("W 4x4", None, Some(1 << 30)).unwrap_err();
        assert!(e.to_string().contains("W 4x4: ") && e.to_string().contains("overflow"));
        let e = check_fits_in("W 4x4", Some(2000), Some(1000)).unwrap_err();
        assert!(e.to_string().contains("W 4x4: needs 2000 bytes"), "{e}");
        assert!(e.to_string().contains("(1000 bytes"), "{e}");
        assert!(check_fits_in("W", Some(1000), Some(1000)).is_ok());
        assert!(check_fits_in("W", Some(1000), None).is_ok());
        let e = check_fits_in("W", Some(usize::MAX), None).unwrap_err();
        assert!(e.to_string().contains("cannot allocate"), "{e}");
        // the CSR benchmark counts dense W, X and both results
        let w = Csr::from_parts(4, 4_000_000_000, vec![0, 1, 1, 1, 1], vec![7], vec![1.0]).unwrap();
        let b = csr_bytes(&w, 4, "spmm").unwrap();
        assert!(b >= 4 * 4 * 4_000_000_000 + 4 * 4_000_000_000 * 4, "{b}");
        assert_eq!(csr_bytes(&w, 1 << 62, "spmm"), None);
        assert!(csr_bytes(&w, 4, "sddmm").unwrap() > 2 * 4 * 4 * 4_000_000_000);
    }

    #[test]
    fn matrix_names_drop_the_smtx_extension() {
        assert_eq!(matrix_name(Path::new("a/b/c/d/e.smtx")), "b/c/d/e");
        assert_eq!(matrix_name(Path::new("x.mtx")), "x.mtx");
        // no root or `.` in the name
        assert_eq!(matrix_name(Path::new("/tmp/c.smtx")), "tmp/c");
        assert_eq!(matrix_name(Path::new("./c.smtx")), "c");
        assert_eq!(matrix_name(Path::new("/c.mtx")), "c.mtx");
        assert_ne!(
            matrix_name(Path::new("m/good.smtx")),
            matrix_name(Path::new("m/good.mtx"))
        );
    }
}
