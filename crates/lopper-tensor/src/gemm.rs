//! Dense GEMM through faer. `C = alpha * op(A) op(B) + beta * C`, row-major f32.
use crate::{Error, MatMut, MatRef, Par, Result, Tensor};
use faer::Accum;

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    No,
    Yes,
}

fn op_dims(m: &MatRef<'_>, t: Transpose) -> (usize, usize) {
    match t {
        Transpose::No => (m.rows(), m.cols()),
        Transpose::Yes => (m.cols(), m.rows()),
    }
}

/// Each thread's slab of C is at least this many columns wide before a product is split by
/// columns. faer works on a row-major C as its column-major transpose, with 96-wide register tiles
/// along C's rows, so a narrower slab pays its edge tiles (docs/nn.md, "One pool").
pub const SPLIT_MIN_COLS: usize = 256;
/// Each thread's slab of C has at least this many rows before a product is split by rows.
pub const SPLIT_MIN_ROWS: usize = 64;
/// Multiply-adds below which a product too narrow and too short to split runs on one thread; above
/// it, faer's own parallel GEMM (its private thread pool) takes it. On two threads faer's pool was
/// no faster than one thread at 32 x 1024 x 256 (8.4M: 107-135 against 132-154 GFLOP/s), and
/// column slabs narrower than 256 lost to both.
const SMALL_MACS: usize = 1 << 26;

/// How a GEMM on several threads shares its work (a tunable of [`gemm_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmSplit {
    /// C cut into one slab of columns (each at least [`SPLIT_MIN_COLS`] wide) or else of rows (at
    /// least [`SPLIT_MIN_ROWS`]) per rayon thread, each a single-threaded faer GEMM: one pool, the
    /// rayon threads that also run everything else. The default.
    #[default]
    Slabs,
    /// faer's own parallel GEMM (its private thread pool), for comparison.
    Faer,
}

/// `c = alpha * op(a) op(b) + beta * c` where `op(x)` is `x` or `x^T`.
///
/// Shapes: op(a) is (M,K), op(b) is (K,N), c is (M,N). `beta == 0` overwrites `c` (NaNs in `c` are
/// not propagated). faer's GEMM; with `par` of t > 1 threads, C is split into t slabs, each one
/// single-threaded faer GEMM on rayon: slabs of columns when each is at least [`SPLIT_MIN_COLS`]
/// wide, else of rows when each has at least [`SPLIT_MIN_ROWS`] (on two threads of the development
/// machine this ran 5-15% faster than faer's own parallel GEMM at every shape measured, and keeps
/// every thread in the rayon pool). A product too small for either runs on the caller's thread, or
/// on faer's own parallel GEMM when it holds more than 2^26 multiply-adds.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    c: MatMut<'_>,
    a: MatRef<'_>,
    ta: Transpose,
    b: MatRef<'_>,
    tb: Transpose,
    alpha: f32,
    beta: f32,
    par: Par,
) -> Result<()> {
    gemm_with(c, a, ta, b, tb, alpha, beta, None, par, GemmSplit::Slabs)
}

/// `c = alpha * op(a) op(b) + 1 bias^T`: every row of `c` (M,N) is first set to `bias` (N), each
/// slab by the thread that multiplies into it, then [`gemm`] with `beta = 1` (a Linear layer's
/// `y = x W^T + b`).
pub fn gemm_bias(
    c: MatMut<'_>,
    a: MatRef<'_>,
    ta: Transpose,
    b: MatRef<'_>,
    tb: Transpose,
    alpha: f32,
    bias: &[f32],
    par: Par,
) -> Result<()> {
    gemm_with(
        c,
        a,
        ta,
        b,
        tb,
        alpha,
        1.0,
        Some(bias),
        par,
        GemmSplit::Slabs,
    )
}

/// [`gemm`] with every option: `c = alpha * op(a) op(b) + beta * c`, or with `bias`,
/// `c = alpha * op(a) op(b) + 1 bias^T` (`beta` unused), threads shared as `split` says.
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    mut c: MatMut<'_>,
    a: MatRef<'_>,
    ta: Transpose,
    b: MatRef<'_>,
    tb: Transpose,
    alpha: f32,
    beta: f32,
    bias: Option<&[f32]>,
    par: Par,
    split: GemmSplit,
) -> Result<()> {
    let (m, k) = op_dims(&a, ta);
    let (k2, n) = op_dims(&b, tb);
    if k != k2 || c.rows() != m || c.cols() != n {
        return Err(Error::shape(
            "gemm",
            format!(
                "op(a) is {m}x{k}, op(b) is {k2}x{n}, c is {}x{}",
                c.rows(),
                c.cols()
            ),
        ));
    }
    if let Some(bias) = bias
        && bias.len() != n
    {
        return Err(Error::shape(
            "gemm",
            format!("a bias of {} for {n} columns of c", bias.len()),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let fa = match ta {
        Transpose::No => a.as_faer(),
        Transpose::Yes => a.as_faer().transpose(),
    };
    let fb = match tb {
        Transpose::No => b.as_faer(),
        Transpose::Yes => b.as_faer().transpose(),
    };
    let t = par.threads();
    let job = Job {
        a: fa,
        b: fb,
        alpha,
        beta,
        bias,
    };
    // columns from the start of C to its first column that starts a cache line in every row (when
    // rows are whole lines), so that no line of C is written by two threads
    let lead = if n.is_multiple_of(16) {
        (c.data().as_ptr() as usize / 4).wrapping_neg() % 16
    } else {
        0
    };
    let fc = c.as_faer();
    if split == GemmSplit::Faer {
        job.leaf(fc, 0..m, 0..n, par.to_faer());
    } else if t > 1 && k > 0 && n >= 2 * SPLIT_MIN_COLS {
        let (first, width) = col_plan(n, t.min(n / SPLIT_MIN_COLS), lead);
        job.cols(fc, 0, first, width);
    } else if t > 1 && k > 0 && m >= 2 * SPLIT_MIN_ROWS {
        let slabs = t.min(m / SPLIT_MIN_ROWS);
        job.rows(fc, 0, m.div_ceil(slabs));
    } else {
        let big = m.saturating_mul(n).saturating_mul(k) > SMALL_MACS;
        let p = if big { par.to_faer() } else { faer::Par::Seq };
        job.leaf(fc, 0..m, 0..n, p);
    }
    Ok(())
}

/// Column slabs for `slabs` (2 or more) threads over `n` columns whose column `lead` starts a cache
/// line: the first slab ends at the returned `first`, on a line boundary at or before an even
/// share, and the other `slabs - 1` share the rest in `width`s of whole lines.
fn col_plan(n: usize, slabs: usize, lead: usize) -> (usize, usize) {
    let even = n.div_ceil(slabs).next_multiple_of(16);
    let first = if even > lead {
        lead + (even - lead) / 16 * 16
    } else {
        even
    };
    (first, (n - first).div_ceil(slabs - 1).next_multiple_of(16))
}

/// One GEMM's operands (op applied: `a` is (M,K), `b` is (K,N)) while C is cut into slabs.
#[derive(Clone, Copy)]
struct Job<'a> {
    a: faer::MatRef<'a, f32>,
    b: faer::MatRef<'a, f32>,
    alpha: f32,
    beta: f32,
    bias: Option<&'a [f32]>,
}

impl Job<'_> {
    /// C's columns `c0..c0 + c.ncols()` in slabs: the first one ends at column `first`, the next
    /// ones are `width` wide (the last one narrower); halved recursively on rayon at a slab
    /// boundary.
    fn cols(self, c: faer::MatMut<'_, f32>, c0: usize, first: usize, width: usize) {
        let end = c0 + c.ncols();
        if first >= end {
            let m = c.nrows();
            self.leaf(c, 0..m, c0..end, faer::Par::Seq);
        } else {
            let slabs = 1 + (end - first).div_ceil(width);
            let split = first + (slabs.div_ceil(2) - 1) * width;
            let (l, r) = c.split_at_col_mut(split - c0);
            rayon::join(
                || self.cols(l, c0, first, width),
                || self.cols(r, split, split + width, width),
            );
        }
    }

    /// C's rows `r0..r0 + c.nrows()` in slabs of `height`, likewise.
    fn rows(self, c: faer::MatMut<'_, f32>, r0: usize, height: usize) {
        let rows = c.nrows();
        if rows > height {
            let top = rows.div_ceil(height).div_ceil(2) * height;
            let (t, b) = c.split_at_row_mut(top);
            rayon::join(
                || self.rows(t, r0, height),
                || self.rows(b, r0 + top, height),
            );
        } else {
            let n = c.ncols();
            self.leaf(c, r0..r0 + rows, 0..n, faer::Par::Seq);
        }
    }

    /// `c` = rows `rs` and columns `cs` of C: beta or the bias first, then faer's GEMM.
    fn leaf(
        self,
        mut c: faer::MatMut<'_, f32>,
        rs: std::ops::Range<usize>,
        cs: std::ops::Range<usize>,
        par: faer::Par,
    ) {
        use faer::reborrow::ReborrowMut;
        let accum = match self.bias {
            Some(bias) => {
                let bias = &bias[cs.clone()];
                match c.rb_mut().try_as_row_major_mut() {
                    // C is row-major, so each row of a slab is contiguous
                    Some(mut rm) => {
                        for i in 0..rm.nrows() {
                            rm.rb_mut().row_mut(i).as_slice_mut().copy_from_slice(bias);
                        }
                    }
                    None => {
                        let bias = faer::RowRef::from_slice(bias);
                        for i in 0..c.nrows() {
                            c.rb_mut().row_mut(i).copy_from(bias);
                        }
                    }
                }
                Accum::Add
            }
            None if self.beta == 0.0 => Accum::Replace,
            None => {
                if self.beta != 1.0 {
                    let beta = self.beta;
                    faer::zip!(c.rb_mut()).for_each(|faer::unzip!(x)| *x *= beta);
                }
                Accum::Add
            }
        };
        if self.a.ncols() == 0 {
            if accum == Accum::Replace {
                c.fill(0.0);
            }
            return;
        }
        faer::linalg::matmul::matmul(
            c,
            accum,
            self.a.subrows(rs.start, rs.len()),
            self.b.subcols(cs.start, cs.len()),
            self.alpha,
            par,
        );
    }
}

/// `op(a) op(b)` of two 2-D tensors as a new f32 tensor. f16/bf16 operands are converted to f32.
pub fn matmul(a: &Tensor, ta: Transpose, b: &Tensor, tb: Transpose, par: Par) -> Result<Tensor> {
    let a32 = a.to_f32();
    let b32 = b.to_f32();
    let am = a32.mat("matmul")?;
    let bm = b32.mat("matmul")?;
    let (m, k) = op_dims(&am, ta);
    let (k2, n) = op_dims(&bm, tb);
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!("op(a) is {m}x{k}, op(b) is {k2}x{n}"),
        ));
    }
    // a (m, 0) times b (0, n) holds no element, yet the output is (m, n): checked, never an abort
    let len = crate::mem::elements("matmul", &[m, n])?;
    let mut out = crate::mem::zeros_f32(&format!("matmul output ({m}x{n})"), len)?;
    gemm(MatMut::new(&mut out, m, n)?, am, ta, bm, tb, 1.0, 0.0, par)?;
    Tensor::from_f32(&[m, n], out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(
        a: &[f32],
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
        ta: bool,
        tb: bool,
    ) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += x as f64 * y as f64;
                }
                out[i * n + j] = s;
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn gemm_matches_f64_reference(m in 1usize..40, k in 0usize..70, n in 1usize..40,
                                      ta: bool, tb: bool, beta in prop::sample::select(vec![0.0f32, 1.0, 0.5]),
                                      seed in 0u64..1000) {
            let a = Tensor::randn(&[m * k], 1.0, seed).into_storage();
            let b = Tensor::randn(&[k * n], 1.0, seed + 1).into_storage();
            let c0 = Tensor::randn(&[m * n], 1.0, seed + 2).into_storage();
            let (crate::Storage::F32(a), crate::Storage::F32(b), crate::Storage::F32(c0)) = (a, b, c0) else { unreachable!() };
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            let mut c = c0.clone();
            gemm(MatMut::new(&mut c, m, n).unwrap(), MatRef::new(&a, ar, ac).unwrap(),
                 if ta { Transpose::Yes } else { Transpose::No },
                 MatRef::new(&b, br, bc).unwrap(), if tb { Transpose::Yes } else { Transpose::No },
                 1.5, beta, Par::rayon()).unwrap();
            let r = reference(&a, &b, m, k, n, ta, tb);
            for i in 0..m * n {
                let want = 1.5 * r[i] + beta as f64 * c0[i] as f64;
                let tol = 1e-5 * (k as f64 + 1.0) * (1.0 + want.abs());
                prop_assert!((c[i] as f64 - want).abs() <= tol, "i={i} got {} want {want}", c[i]);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Shapes that split into slabs of columns (N >= 512) or of rows (M >= 128) on three
        /// threads, with the last slab narrower, a bias or beta 0, 1, 0.5, K of 0 or 1 included.
        #[test]
        fn gemm_slabs_match_f64_reference(m in prop::sample::select(vec![1usize, 3, 127, 128, 200, 333]),
                                          n in prop::sample::select(vec![1usize, 17, 511, 512, 700, 1031]),
                                          k in prop::sample::select(vec![0usize, 1, 5, 33]),
                                          ta: bool, tb: bool, with_bias: bool,
                                          beta in prop::sample::select(vec![0.0f32, 1.0, 0.5]),
                                          seed in 0u64..1000) {
            let a = Tensor::randn(&[m * k], 1.0, seed).into_storage();
            let b = Tensor::randn(&[k * n], 1.0, seed + 1).into_storage();
            let c0 = Tensor::randn(&[m * n], 1.0, seed + 2).into_storage();
            let bias = Tensor::randn(&[n], 1.0, seed + 3).into_storage();
            let (crate::Storage::F32(a), crate::Storage::F32(b), crate::Storage::F32(c0), crate::Storage::F32(bias)) = (a, b, c0, bias) else { unreachable!() };
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            let mut c = c0.clone();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
            pool.install(|| {
                let (cm, am, bm) = (MatMut::new(&mut c, m, n).unwrap(), MatRef::new(&a, ar, ac).unwrap(), MatRef::new(&b, br, bc).unwrap());
                let (ta, tb) = (if ta { Transpose::Yes } else { Transpose::No }, if tb { Transpose::Yes } else { Transpose::No });
                let split = if seed % 4 == 0 { GemmSplit::Faer } else { GemmSplit::Slabs };
                gemm_with(cm, am, ta, bm, tb, 1.5, beta, with_bias.then_some(&bias[..]), Par::rayon(), split)
            }).unwrap();
            let r = reference(&a, &b, m, k, n, ta, tb);
            for i in 0..m * n {
                let base = if with_bias { bias[i % n] as f64 } else { beta as f64 * c0[i] as f64 };
                let want = 1.5 * r[i] + base;
                let tol = 1e-5 * (k as f64 + 1.0) * (1.0 + want.abs());
                prop_assert!((c[i] as f64 - want).abs() <= tol, "({}, {}) got {} want {want}", i / n, i % n, c[i]);
            }
        }
    }

    /// Column slabs start on C's cache lines wherever C starts: every offset within a line, with
    /// and without a bias, equal to one thread's result.
    #[test]
    fn column_slabs_at_every_offset_of_c_match_one_thread() {
        let (m, k, n) = (3, 7, 1040);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.5).collect();
        let bias: Vec<f32> = (0..n).map(|j| (j % 3) as f32).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for off in 0..16 {
            for with_bias in [false, true] {
                let run = |par: Par| {
                    let mut buf = vec![0.25f32; off + m * n];
                    let c = MatMut::new(&mut buf[off..], m, n).unwrap();
                    let (am, bm) = (
                        MatRef::new(&a, m, k).unwrap(),
                        MatRef::new(&b, k, n).unwrap(),
                    );
                    let bias = with_bias.then_some(&bias[..]);
                    pool.install(|| {
                        gemm_with(
                            c,
                            am,
                            Transpose::No,
                            bm,
                            Transpose::No,
                            1.0,
                            1.0,
                            bias,
                            par,
                            GemmSplit::Slabs,
                        )
                    })
                    .unwrap();
                    buf[off..].to_vec()
                };
                assert_eq!(
                    run(Par::rayon()),
                    run(Par::Seq),
                    "offset {off}, bias {with_bias}"
                );
            }
        }
    }

    #[test]
    fn column_plans_make_one_slab_per_thread_on_line_boundaries() {
        for n in [512usize, 528, 1024, 1040, 2048, 3000] {
            for slabs in 2..=(n / SPLIT_MIN_COLS).min(8) {
                for lead in 0..16 {
                    let (first, width) = col_plan(n, slabs, lead);
                    let mut ends = vec![first];
                    while *ends.last().unwrap() < n {
                        ends.push(ends.last().unwrap() + width);
                    }
                    let what = format!("n {n}, {slabs} slabs, lead {lead}: ends {ends:?}");
                    assert_eq!(ends.len(), slabs, "{what}");
                    assert!(
                        ends[..slabs - 1].iter().all(|e| (e + 16 - lead) % 16 == 0),
                        "{what}"
                    );
                    assert!(first >= SPLIT_MIN_COLS - 16 && width >= 16, "{what}");
                }
            }
        }
    }

    #[test]
    fn gemm_rejects_bad_shapes() {
        let a = vec![0.0; 6];
        let b = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        let err = gemm(
            MatMut::new(&mut c, 2, 2).unwrap(),
            MatRef::new(&a, 2, 3).unwrap(),
            Transpose::No,
            MatRef::new(&b, 2, 3).unwrap(),
            Transpose::No,
            1.0,
            0.0,
            Par::Seq,
        )
        .unwrap_err();
        assert!(err.to_string().contains("gemm"), "{err}");
        // a bias of the wrong length: an error naming both lengths, and C untouched
        let b = vec![1.0; 6];
        let e = gemm_bias(
            MatMut::new(&mut c, 2, 2).unwrap(),
            MatRef::new(&a, 2, 3).unwrap(),
            Transpose::No,
            MatRef::new(&b, 3, 2).unwrap(),
            Transpose::No,
            1.0,
            &[0.0; 3],
            Par::Seq,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a bias of 3 for 2 columns"), "{e}");
        assert_eq!(c, vec![0.0; 4], "nothing written");
    }

    #[test]
    fn matmul_checks_shapes_then_the_output_size_before_allocating() {
        let z = |s: &[usize]| Tensor::zeros(s, crate::DType::F32);
        let e = matmul(
            &z(&[2, 3]),
            Transpose::No,
            &z(&[2, 3]),
            Transpose::No,
            Par::Seq,
        );
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("matmul: shape mismatch: op(a) is 2x3, op(b) is 2x3"),
            "{e}"
        );
        // (2^20, 0) x (0, 2^40): no input element, a 4 EiB output: an error, not an abort
        let e = matmul(
            &z(&[1 << 20, 0]),
            Transpose::No,
            &z(&[0, 1 << 40]),
            Transpose::No,
            Par::Seq,
        );
        let e = e.unwrap_err().to_string();
        assert!(e.contains("matmul output (1048576x1099511627776)"), "{e}");
        // (2^33, 0) x (0, 2^33): the element count overflows usize
        let e = matmul(
            &z(&[1 << 33, 0]),
            Transpose::No,
            &z(&[0, 1 << 33]),
            Transpose::No,
            Par::Seq,
        );
        assert!(e.unwrap_err().to_string().contains("matmul: shape"));
        let ok = matmul(
            &z(&[3, 0]),
            Transpose::No,
            &z(&[0, 2]),
            Transpose::No,
            Par::Seq,
        )
        .unwrap();
        assert_eq!(ok, z(&[3, 2]));
    }
}
