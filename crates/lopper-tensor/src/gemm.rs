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

/// `c = alpha * op(a) op(b) + beta * c` where `op(x)` is `x` or `x^T`.
///
/// Shapes: op(a) is (M,K), op(b) is (K,N), c is (M,N). `beta == 0` overwrites `c` (NaNs in `c` are
/// not propagated). Runs faer's GEMM with the given parallelism.
pub fn gemm(
    mut c: MatMut<'_>,
    a: MatRef<'_>,
    ta: Transpose,
    b: MatRef<'_>,
    tb: Transpose,
    alpha: f32,
    beta: f32,
    par: Par,
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
    if m == 0 || n == 0 {
        return Ok(());
    }
    let accum = if beta == 0.0 {
        Accum::Replace
    } else {
        if beta != 1.0 {
            for x in c.data().iter_mut() {
                *x *= beta;
            }
        }
        Accum::Add
    };
    if k == 0 {
        if accum == Accum::Replace {
            c.data().fill(0.0);
        }
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
    faer::linalg::matmul::matmul(c.as_faer(), accum, fa, fb, alpha, par.to_faer());
    Ok(())
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
