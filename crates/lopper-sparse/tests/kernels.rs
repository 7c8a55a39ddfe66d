//! Every CPU kernel against its f64 dense reference, on random inputs (proptest) and awkward shapes
//! (one row, empty rows, N not a multiple of the tiles, all zeros, one heavy row), for every
//! instruction-set clone this CPU has.
use lopper_sparse::kernels::simd::{self, Isa};
use lopper_sparse::{
    Csr, Sparse24, reference, sddmm, sddmm_add, spmm, spmm_24, spmm_24_bias, spmm_bias, spmm_t,
    spmm_t_sddmm, spmm_t_with,
};
use lopper_tensor::{MatMut, MatRef, Par, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn random_csr(rows: usize, cols: usize, density: f64, seed: u64, heavy_row: bool) -> Csr {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut d: Vec<f32> = (0..rows * cols)
        .map(|_| {
            if r.random_bool(density) {
                r.random_range(-1.0f32..1.0)
            } else {
                0.0
            }
        })
        .collect();
    if heavy_row && rows > 0 {
        for j in 0..cols {
            d[j] = r.random_range(-1.0f32..1.0);
        }
    }
    // some empty rows
    if rows > 2 {
        d[cols..2 * cols].fill(0.0);
    }
    Csr::from_dense(MatRef::new(&d, rows, cols).unwrap(), 0.0).unwrap()
}

fn dense(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    Tensor::randn(&[rows, cols], 1.0, seed)
        .as_f32()
        .unwrap()
        .to_vec()
}

fn check(got: &[f32], want: &[f64], len: usize, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = reference::tolerance(len, w, 1.0);
        prop_assert!(
            (g as f64 - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w}, tol {tol}"
        );
    }
    Ok(())
}

/// A copy of a slice that starts `shift` floats past a 64-byte boundary (a Vec's heap buffer does not
/// move when the Vec does, so the offset holds).
struct Offset {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl Offset {
    fn new(v: &[f32], shift: usize) -> Offset {
        let mut buf = vec![0.0f32; v.len() + 16 + shift];
        let off = (16 - (buf.as_ptr() as usize / 4) % 16) % 16 + shift;
        buf[off..off + v.len()].copy_from_slice(v);
        Offset {
            buf,
            off,
            len: v.len(),
        }
    }

    fn get(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
}

fn isas() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&i| simd::supported(i))
        .collect()
}

fn par_of(p: u8) -> Par {
    match p % 3 {
        0 => Par::Seq,
        1 => Par::Rayon(2),
        _ => Par::Rayon(0),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn spmm_matches_reference(m in 1usize..130, k in 1usize..50, n in 1usize..300, d in 0.0f64..1.0,
                              seed: u64, heavy: bool, p: u8) {
        let w = random_csr(m, k, d, seed, heavy);
        let x = dense(k, n, seed ^ 1);
        let want = reference::spmm(&w.to_dense(), m, k, &x, n);
        for isa in isas() {
            simd::set_isa(isa);
            let mut y = vec![f32::NAN; m * n];
            spmm(&w, MatRef::new(&x, k, n).unwrap(), MatMut::new(&mut y, m, n).unwrap(), par_of(p)).unwrap();
            check(&y, &want, k, &format!("spmm {isa:?}"))?;
            // with a bias per row, added as the rows are stored
            let bias = dense(1, m, seed ^ 9);
            let want_b: Vec<f64> = want.iter().enumerate().map(|(e, v)| v + bias[e / n] as f64).collect();
            spmm_bias(&w, MatRef::new(&x, k, n).unwrap(), &bias, MatMut::new(&mut y, m, n).unwrap(), par_of(p)).unwrap();
            check(&y, &want_b, k + 1, &format!("spmm_bias {isa:?}"))?;
        }
    }

    #[test]
    fn spmm_t_matches_reference(m in 1usize..40, k in 1usize..130, n in 1usize..150, d in 0.0f64..1.0,
                                seed: u64, heavy: bool, p: u8) {
        let w = random_csr(m, k, d, seed, heavy);
        let x = dense(m, n, seed ^ 2);
        let want = reference::spmm_t(&w.to_dense(), m, k, &x, n);
        for isa in isas() {
            simd::set_isa(isa);
            let mut y = vec![f32::NAN; k * n];
            spmm_t(&w, MatRef::new(&x, m, n).unwrap(), MatMut::new(&mut y, k, n).unwrap(), par_of(p)).unwrap();
            check(&y, &want, m, &format!("spmm_t {isa:?}"))?;
        }
    }

    #[test]
    fn sddmm_matches_reference(m in 1usize..30, k in 1usize..30, dd in 0usize..700, d in 0.0f64..1.0,
                               seed: u64, heavy: bool, p: u8) {
        let pat = random_csr(m, k, d, seed, heavy);
        let a = dense(m, dd, seed ^ 3);
        let b = dense(k, dd, seed ^ 4);
        let want = reference::sddmm(&pat, &a, &b, dd);
        for isa in isas() {
            simd::set_isa(isa);
            let mut out = vec![f32::NAN; pat.nnz()];
            sddmm(&pat, MatRef::new(&a, m, dd).unwrap(), MatRef::new(&b, k, dd).unwrap(), &mut out, par_of(p)).unwrap();
            check(&out, &want, dd, &format!("sddmm {isa:?}"))?;
        }
    }

    /// sddmm_add accumulates: out = start + A B^T at the pattern, on both parallel paths (rows
    /// split, or D split into per-task partial sums).
    #[test]
    fn sddmm_add_accumulates_onto_out(m in 1usize..30, k in 1usize..30, dd in 0usize..700,
                                      d in 0.0f64..1.0, seed: u64, p: u8) {
        let pat = random_csr(m, k, d, seed, false);
        let a = dense(m, dd, seed ^ 5);
        let b = dense(k, dd, seed ^ 6);
        let start = dense(1, pat.nnz(), seed ^ 7);
        let prod = reference::sddmm(&pat, &a, &b, dd);
        let want: Vec<f64> = prod.iter().zip(&start).map(|(p, s)| p + *s as f64).collect();
        for isa in isas() {
            simd::set_isa(isa);
            let mut out = start.clone();
            sddmm_add(&pat, MatRef::new(&a, m, dd).unwrap(), MatRef::new(&b, k, dd).unwrap(), &mut out, par_of(p)).unwrap();
            check(&out, &want, dd + 1, &format!("sddmm_add {isa:?}"))?;
        }
    }

    /// Long rows (the eight-entries-at-once AVX-512 path), D around the 128-wide block and at every
    /// AVX-512 row width (16 to 112 columns, and after a full block), with a tail of portable
    /// columns after the whole registers (24, 100, 127, 300), and the dense operands both
    /// 64-byte aligned (read in place) and one float off (copied to an aligned slab).
    #[test]
    fn sddmm_long_rows_and_operand_alignment(m in 1usize..6, k in 100usize..400,
                                             dd in prop::sample::select(vec![1usize, 16, 24, 32, 48, 64, 80, 96, 100, 112, 127, 128, 129, 144, 192, 256, 300]),
                                             d in 0.05f64..1.0, seed: u64, shift in 0usize..2, p: u8) {
        let pat = random_csr(m, k, d, seed, false);
        let a = dense(m, dd, seed ^ 3);
        let b = dense(k, dd, seed ^ 4);
        let want = reference::sddmm(&pat, &a, &b, dd);
        let (ab, bb) = (Offset::new(&a, shift), Offset::new(&b, shift));
        for isa in isas() {
            simd::set_isa(isa);
            let mut out = vec![f32::NAN; pat.nnz()];
            sddmm(&pat, MatRef::new(ab.get(), m, dd).unwrap(), MatRef::new(bb.get(), k, dd).unwrap(), &mut out, par_of(p)).unwrap();
            check(&out, &want, dd, &format!("sddmm {isa:?} shift {shift}"))?;
        }
    }

    /// The fused backward: dX = W^T dY overwritten and dW (in the transpose's order) accumulated,
    /// against the f64 spmm_t and sddmm references, with D around the 128-wide block (1, 127,
    /// 128, 129, 256, 300) and at every AVX-512 row width (16 to 112 columns; 144 and 192 end on
    /// a 16- and a 64-column block after a full one; 24 and 100 leave a tail of portable columns
    /// after the whole registers), rows long enough for the
    /// eight-entries-at-once reduction, empty rows, one heavy row, and dY both aligned (read in
    /// place) and one float off (copied).
    #[test]
    fn spmm_t_sddmm_matches_reference(m in 1usize..40, k in 1usize..60,
                                      dd in prop::sample::select(vec![1usize, 16, 24, 32, 48, 64, 80, 96, 100, 112, 127, 128, 129, 144, 192, 256, 300]),
                                      d in 0.0f64..1.0, seed: u64, heavy: bool, shift in 0usize..2, p: u8) {
        let w = random_csr(m, k, d, seed, heavy);
        let wt = w.transpose();
        let dy = dense(m, dd, seed ^ 6);
        let x = dense(k, dd, seed ^ 7);
        let want_dx = reference::spmm_t(&w.to_dense(), m, k, &dy, dd);
        let dw = reference::sddmm(&w, &dy, &x, dd); // W's order
        let start = dense(1, w.nnz(), seed ^ 8);
        let want_dw: Vec<f64> = wt.perm().iter().zip(&start).map(|(&q, &s)| s as f64 + dw[q as usize]).collect();
        let yb = Offset::new(&dy, shift);
        for isa in isas() {
            simd::set_isa(isa);
            let mut dx = vec![f32::NAN; k * dd];
            let mut dwt = start.clone();
            spmm_t_sddmm(&wt, MatRef::new(yb.get(), m, dd).unwrap(), MatRef::new(&x, k, dd).unwrap(),
                         MatMut::new(&mut dx, k, dd).unwrap(), &mut dwt, par_of(p)).unwrap();
            check(&dx, &want_dx, m, &format!("spmm_t_sddmm dX {isa:?} shift {shift}"))?;
            check(&dwt, &want_dw, dd + 1, &format!("spmm_t_sddmm dW {isa:?} shift {shift}"))?;
        }
    }

    /// spmm with X at every offset within a cache line: read in place when it is all of X with rows
    /// of whole lines (n a multiple of 16; the tiles then start on the rows' lines, with 16-wide
    /// tiles overlapping at both ends), else copied to an aligned slab; and N with a tail of 1 to
    /// 15 columns after the last whole 16.
    #[test]
    fn spmm_operand_alignment(m in 1usize..40, k in 1usize..200,
                              n in prop_oneof![1usize..140, prop::sample::select(vec![16usize, 32, 48, 64, 128, 144, 192, 256])],
                              d in 0.0f64..1.0, seed: u64, shift in 0usize..16, p: u8) {
        let w = random_csr(m, k, d, seed, false);
        let x = dense(k, n, seed ^ 5);
        let want = reference::spmm(&w.to_dense(), m, k, &x, n);
        let xb = Offset::new(&x, shift);
        for isa in isas() {
            simd::set_isa(isa);
            let mut y = vec![f32::NAN; m * n];
            spmm(&w, MatRef::new(xb.get(), k, n).unwrap(), MatMut::new(&mut y, m, n).unwrap(), par_of(p)).unwrap();
            check(&y, &want, k, &format!("spmm {isa:?} shift {shift}"))?;
        }
    }

    #[test]
    fn spmm_24_matches_reference(m in 1usize..150, groups in 0usize..20, n in 1usize..300, seed: u64, p: u8) {
        let k = 4 * groups;
        let wd = dense(m, k, seed);
        let w = Sparse24::from_dense_prune(MatRef::new(&wd, m, k).unwrap()).unwrap();
        let x = dense(k, n, seed ^ 5);
        let want = reference::spmm_24(&w, &x, n);
        for isa in isas() {
            simd::set_isa(isa);
            let mut y = vec![f32::NAN; m * n];
            spmm_24(&w, MatRef::new(&x, k, n).unwrap(), MatMut::new(&mut y, m, n).unwrap(), par_of(p)).unwrap();
            check(&y, &want, k.max(1), &format!("spmm_24 {isa:?}"))?;
            let bias = dense(1, m, seed ^ 9);
            let want_b: Vec<f64> = want.iter().enumerate().map(|(e, v)| v + bias[e / n] as f64).collect();
            y.fill(f32::NAN);
            spmm_24_bias(&w, MatRef::new(&x, k, n).unwrap(), &bias, MatMut::new(&mut y, m, n).unwrap(), par_of(p)).unwrap();
            check(&y, &want_b, k + 1, &format!("spmm_24_bias {isa:?}"))?;
        }
    }
}

#[test]
fn all_zero_and_empty_shapes() {
    let w = Csr::zeros(5, 7).unwrap();
    let x = dense(7, 33, 1);
    let mut y = vec![f32::NAN; 5 * 33];
    spmm(
        &w,
        MatRef::new(&x, 7, 33).unwrap(),
        MatMut::new(&mut y, 5, 33).unwrap(),
        Par::rayon(),
    )
    .unwrap();
    assert!(y.iter().all(|&v| v == 0.0));
    let mut out: Vec<f32> = vec![];
    sddmm(
        &w,
        MatRef::new(&dense(5, 3, 2), 5, 3).unwrap(),
        MatRef::new(&dense(7, 3, 3), 7, 3).unwrap(),
        &mut out,
        Par::Seq,
    )
    .unwrap();
    // zero columns of X: nothing to do, nothing to fail
    spmm(
        &w,
        MatRef::new(&[], 7, 0).unwrap(),
        MatMut::new(&mut [], 5, 0).unwrap(),
        Par::Seq,
    )
    .unwrap();
    // all-zero 2:4 weight
    let z = Sparse24::from_dense_exact(MatRef::new(&[0.0; 8], 1, 8).unwrap()).unwrap();
    let mut y = vec![f32::NAN; 3];
    spmm_24(
        &z,
        MatRef::new(&dense(8, 3, 4), 8, 3).unwrap(),
        MatMut::new(&mut y, 1, 3).unwrap(),
        Par::Seq,
    )
    .unwrap();
    assert_eq!(y, vec![0.0; 3]);
    // the fused backward of an all-zero weight: dX is zeroed, dW (no entries) untouched
    let mut dx = vec![f32::NAN; 7 * 33];
    spmm_t_sddmm(
        &w.transpose(),
        MatRef::new(&dense(5, 33, 5), 5, 33).unwrap(),
        MatRef::new(&dense(7, 33, 6), 7, 33).unwrap(),
        MatMut::new(&mut dx, 7, 33).unwrap(),
        &mut [],
        Par::rayon(),
    )
    .unwrap();
    assert!(dx.iter().all(|&v| v == 0.0));
}

#[test]
fn spmm_copies_and_reads_only_the_rows_of_x_that_w_reads() {
    // W reads rows 1, 4 and 6 of X (of 9); the other rows are NaN, so a kernel that read one
    // would put NaN in Y. N = 1100 runs three column blocks (each packed), and X at a misaligned
    // start is packed too; the first call leaves full slabs of another X behind on its threads.
    let (m, k, n) = (7, 9, 1100);
    let mut wd = vec![0.0f32; m * k];
    for i in 0..m {
        for (t, j) in [1, 4, 6].into_iter().enumerate() {
            if (i + t) % 3 != 0 {
                wd[i * k + j] = (i + 1) as f32 * 0.25 - t as f32;
            }
        }
    }
    let w = Csr::from_dense(MatRef::new(&wd, m, k).unwrap(), 0.0).unwrap();
    let mut xd = dense(k, n, 7);
    let want = reference::spmm(&wd, m, k, &xd, n);
    // and a W that reads each of its rows of X twice: X is one block, read in place when aligned,
    // else copied whole (its read rows only)
    let mut few = vec![0.0f32; m * k];
    few[4] = 1.5;
    few[6] = -0.5;
    few[3 * k + 4] = 2.0;
    few[5 * k + 6] = 0.75;
    let few = Csr::from_dense(MatRef::new(&few, m, k).unwrap(), 0.0).unwrap();
    let want_few = reference::spmm(&few.to_dense(), m, k, &xd, n);
    for j in [0, 2, 3, 5, 7, 8] {
        xd[j * n..(j + 1) * n].fill(f32::NAN);
    }
    let full = random_csr(m, k, 1.0, 3, false);
    for shift in [0, 3] {
        for par in [Par::Seq, Par::Rayon(2), Par::Rayon(0)] {
            for (w, want) in [(&w, &want), (&few, &want_few)] {
                let other = Offset::new(&dense(k, n, 8), shift);
                let mut y = vec![0.0f32; m * n];
                spmm(
                    &full,
                    MatRef::new(other.get(), k, n).unwrap(),
                    MatMut::new(&mut y, m, n).unwrap(),
                    par,
                )
                .unwrap();
                let x = Offset::new(&xd, shift);
                spmm(
                    w,
                    MatRef::new(x.get(), k, n).unwrap(),
                    MatMut::new(&mut y, m, n).unwrap(),
                    par,
                )
                .unwrap();
                check(&y, want, k, "spmm skipping rows").unwrap();
            }
        }
    }
}

#[test]
fn shape_errors_are_typed() {
    let w = random_csr(4, 6, 0.5, 1, false);
    let x = dense(5, 3, 1);
    let mut y = vec![0.0; 12];
    let e = spmm(
        &w,
        MatRef::new(&x, 5, 3).unwrap(),
        MatMut::new(&mut y, 4, 3).unwrap(),
        Par::Seq,
    )
    .unwrap_err();
    assert!(e.to_string().contains("spmm: shape mismatch"), "{e}");
    let mut out = vec![0.0; w.nnz() + 1];
    let e = sddmm(
        &w,
        MatRef::new(&dense(4, 2, 1), 4, 2).unwrap(),
        MatRef::new(&dense(6, 2, 1), 6, 2).unwrap(),
        &mut out,
        Par::Seq,
    )
    .unwrap_err();
    assert!(e.to_string().contains("sddmm"), "{e}");
    let s = Sparse24::from_dense_prune(MatRef::new(&dense(2, 8, 1), 2, 8).unwrap()).unwrap();
    let mut y = vec![0.0; 6];
    assert!(
        spmm_24(
            &s,
            MatRef::new(&dense(4, 3, 1), 4, 3).unwrap(),
            MatMut::new(&mut y, 2, 3).unwrap(),
            Par::Seq
        )
        .is_err()
    );
    // a bias of the wrong length: an error naming both lengths, Y untouched
    let mut y = vec![7.0; 12];
    let e = spmm_bias(
        &w,
        MatRef::new(&dense(6, 3, 1), 6, 3).unwrap(),
        &[0.0; 3],
        MatMut::new(&mut y, 4, 3).unwrap(),
        Par::Seq,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("bias has 3 values for 4 rows"),
        "{e}"
    );
    assert_eq!(y, vec![7.0; 12]);
    // the fused backward: dY with the wrong rows, and dW with the wrong length; nothing written
    let wt = w.transpose();
    let (mut dx, mut dwt) = (vec![7.0; 6 * 3], vec![7.0; w.nnz()]);
    let e = spmm_t_sddmm(
        &wt,
        MatRef::new(&dense(5, 3, 1), 5, 3).unwrap(),
        MatRef::new(&dense(6, 3, 1), 6, 3).unwrap(),
        MatMut::new(&mut dx, 6, 3).unwrap(),
        &mut dwt,
        Par::Seq,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("spmm_t_sddmm") && e.to_string().contains("dY is 5x3"),
        "{e}"
    );
    let mut short = vec![7.0; w.nnz() - 1];
    let e = spmm_t_sddmm(
        &wt,
        MatRef::new(&dense(4, 3, 1), 4, 3).unwrap(),
        MatRef::new(&dense(6, 3, 1), 6, 3).unwrap(),
        MatMut::new(&mut dx, 6, 3).unwrap(),
        &mut short,
        Par::Seq,
    )
    .unwrap_err();
    assert!(e.to_string().contains("entries"), "{e}");
    assert!(dx.iter().chain(&dwt).chain(&short).all(|&v| v == 7.0));
    let mut y = vec![7.0; 6];
    let e = spmm_24_bias(
        &s,
        MatRef::new(&dense(8, 3, 1), 8, 3).unwrap(),
        &[0.0; 5],
        MatMut::new(&mut y, 2, 3).unwrap(),
        Par::Seq,
    )
    .unwrap_err();
    assert!(e.to_string().contains("spmm_24_bias"), "{e}");
}

/// spmm_24 keeps a copy of W's values in its own order: a product after `values_mut` must see the
/// new values, a clone must give the same products, and products of one matrix started from many
/// threads at once (each building the copy on the pool) must all finish with the right result.
#[test]
fn spmm_24_after_values_change_clones_and_concurrent_products() {
    use rayon::prelude::*;
    // two blocks of the class kernel (the second short) and a column tail at every tile width
    let (m, k, n) = (100, 24, 290);
    let wd = dense(m, k, 11);
    let mut w = Sparse24::from_dense_prune(MatRef::new(&wd, m, k).unwrap()).unwrap();
    let x = dense(k, n, 12);
    let run = |w: &Sparse24, par: Par| {
        let mut y = vec![f32::NAN; m * n];
        spmm_24(
            w,
            MatRef::new(&x, k, n).unwrap(),
            MatMut::new(&mut y, m, n).unwrap(),
            par,
        )
        .unwrap();
        y
    };
    let ok = |y: &[f32], w: &Sparse24, what: &str| {
        check(y, &reference::spmm_24(w, &x, n), k, what).unwrap();
    };
    for isa in isas() {
        simd::set_isa(isa);
        for par in [Par::Seq, Par::Rayon(2)] {
            let y = run(&w, par);
            ok(&y, &w, &format!("{isa:?} {par:?} first"));
            for (i, v) in w.values_mut().iter_mut().enumerate() {
                *v = *v * -0.5 + (i % 7) as f32;
            }
            ok(
                &run(&w, par),
                &w,
                &format!("{isa:?} {par:?} after values_mut"),
            );
            // (not compared bit for bit: the other tests switch the clone in use meanwhile)
            ok(&run(&w.clone(), par), &w, &format!("{isa:?} {par:?} clone"));
            // the clone's values are its own
            let mut c2 = w.clone();
            c2.values_mut().fill(0.0);
            assert!(run(&c2, par).iter().all(|&v| v == 0.0));
            ok(
                &run(&w, par),
                &w,
                &format!("{isa:?} {par:?} after the clone's change"),
            );
            w.prepare(par);
            ok(&run(&w, par), &w, &format!("{isa:?} {par:?} prepared"));
        }
        // a fresh matrix (nothing built yet) under 8 concurrent products that use the pool
        let f = Sparse24::from_dense_prune(MatRef::new(&wd, m, k).unwrap()).unwrap();
        let ys: Vec<Vec<f32>> = (0..8)
            .into_par_iter()
            .map(|_| run(&f, Par::Rayon(0)))
            .collect();
        for y in &ys {
            ok(y, &f, &format!("{isa:?} concurrent"));
        }
    }
}

/// spmm's outer-product kernel keeps a copy of W's values in its own order: products after
/// `values_mut` and after a transpose's refresh must see the new values, clones must give the same
/// products, and concurrent products of one fresh matrix must all be right.
#[test]
fn spmm_after_values_change_refresh_clones_and_concurrent_products() {
    use rayon::prelude::*;
    // two blocks of 56 rows (the second short), 40% dense, a column tail after the 128-wide tiles
    let (m, k, n) = (100, 40, 290);
    let mut w = random_csr(m, k, 0.4, 21, true);
    let x = dense(k, n, 22);
    let run = |w: &Csr, par: Par| {
        let mut y = vec![f32::NAN; w.rows() * n];
        let (rows, cols) = (w.rows(), w.cols());
        spmm(
            w,
            MatRef::new(&x[..cols * n], cols, n).unwrap(),
            MatMut::new(&mut y, rows, n).unwrap(),
            par,
        )
        .unwrap();
        y
    };
    let ok = |y: &[f32], w: &Csr, what: &str| {
        let want = reference::spmm(&w.to_dense(), w.rows(), w.cols(), &x, n);
        check(y, &want, w.cols(), what).unwrap();
    };
    for isa in isas() {
        simd::set_isa(isa);
        for par in [Par::Seq, Par::Rayon(2)] {
            ok(&run(&w, par), &w, &format!("{isa:?} {par:?} first"));
            for (i, v) in w.values_mut().iter_mut().enumerate() {
                *v = *v * -0.5 + (i % 7) as f32;
            }
            ok(
                &run(&w, par),
                &w,
                &format!("{isa:?} {par:?} after values_mut"),
            );
            ok(&run(&w.clone(), par), &w, &format!("{isa:?} {par:?} clone"));
            let mut c2 = w.clone();
            c2.values_mut().fill(0.0);
            assert!(run(&c2, par).iter().all(|&v| v == 0.0));
            w.prepare(par);
            ok(&run(&w, par), &w, &format!("{isa:?} {par:?} prepared"));
        }
        // a transpose used as a matrix (40 x 100, 40% dense), then refreshed after a change
        let mut wt = w.transpose();
        let xt = dense(m, n, 23);
        let run_t = |wt: &lopper_sparse::CsrTranspose| {
            let mut y = vec![f32::NAN; k * n];
            spmm_t_with(
                wt,
                MatRef::new(&xt, m, n).unwrap(),
                MatMut::new(&mut y, k, n).unwrap(),
                Par::Rayon(2),
            )
            .unwrap();
            y
        };
        let want_t = |w: &Csr| reference::spmm_t(&w.to_dense(), m, k, &xt, n);
        check(&run_t(&wt), &want_t(&w), m, &format!("{isa:?} spmm_t")).unwrap();
        w.values_mut().iter_mut().for_each(|v| *v += 1.0);
        wt.refresh(&w).unwrap();
        check(
            &run_t(&wt),
            &want_t(&w),
            m,
            &format!("{isa:?} spmm_t refreshed"),
        )
        .unwrap();
        // a fresh matrix (nothing built yet) under 8 concurrent products that use the pool
        let f = random_csr(m, k, 0.4, 24, false);
        let ys: Vec<Vec<f32>> = (0..8)
            .into_par_iter()
            .map(|_| run(&f, Par::Rayon(0)))
            .collect();
        for y in &ys {
            ok(y, &f, &format!("{isa:?} concurrent"));
        }
    }
}
