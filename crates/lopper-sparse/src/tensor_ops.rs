//! Tensor-level entry points: accept f32, f16 or bf16 dense operands (converted to f32, the compute
//! type) and return new f32 tensors. The slice/view kernels in [`crate::kernels`] are the allocation-
//! free path for hot loops.
use crate::error::shape_err;
use crate::{Csr, Result, Sparse24, sddmm, spmm, spmm_24, spmm_t};
use lopper_tensor::{MatMut, Par, Tensor};

fn f32_view(x: &Tensor, op: &'static str) -> Result<Tensor> {
    if x.rank() != 2 {
        return Err(shape_err(
            op,
            format!("expected a 2-D dense operand, got shape {:?}", x.shape()),
        ));
    }
    Ok(x.to_f32())
}

/// The zeroed (rows, n) f32 output of `op`, once X's row count `x_rows` matched `need` (W's
/// dimension): a shape error first, then a memory error for an output that cannot fit (X may hold
/// no elements at all, (0, N), while the output is (M, N)), never an abort.
fn output(
    op: &'static str,
    w: (usize, usize),
    x_rows: usize,
    need: usize,
    rows: usize,
    n: usize,
) -> Result<Vec<f32>> {
    if x_rows != need {
        return Err(shape_err(
            op,
            format!("W is {}x{}, X has {x_rows} rows (need {need})", w.0, w.1),
        ));
    }
    let len = lopper_tensor::mem::elements(op, &[rows, n])?;
    Ok(lopper_tensor::mem::zeros_f32(
        &format!("{op} output ({rows}x{n})"),
        len,
    )?)
}

impl Csr {
    /// `W X` for a dense X (K, N) of any dtype; returns (M, N) f32.
    pub fn matmul(&self, x: &Tensor, par: Par) -> Result<Tensor> {
        let x = f32_view(x, "Csr::matmul")?;
        let n = x.shape()[1];
        let mut y = output(
            "Csr::matmul",
            (self.rows(), self.cols()),
            x.shape()[0],
            self.cols(),
            self.rows(),
            n,
        )?;
        spmm(
            self,
            x.mat("Csr::matmul")?,
            MatMut::new(&mut y, self.rows(), n)?,
            par,
        )?;
        Ok(Tensor::from_f32(&[self.rows(), n], y)?)
    }

    /// `W^T X` for a dense X (M, N) of any dtype; returns (K, N) f32.
    pub fn matmul_t(&self, x: &Tensor, par: Par) -> Result<Tensor> {
        let x = f32_view(x, "Csr::matmul_t")?;
        let n = x.shape()[1];
        let mut y = output(
            "Csr::matmul_t",
            (self.rows(), self.cols()),
            x.shape()[0],
            self.rows(),
            self.cols(),
            n,
        )?;
        spmm_t(
            self,
            x.mat("Csr::matmul_t")?,
            MatMut::new(&mut y, self.cols(), n)?,
            par,
        )?;
        Ok(Tensor::from_f32(&[self.cols(), n], y)?)
    }

    /// `A B^T` sampled at this pattern: A (M, D), B (K, D) of any dtype; returns the nnz values in
    /// storage order as a new `Csr` with this pattern.
    pub fn sampled_matmul(&self, a: &Tensor, b: &Tensor, par: Par) -> Result<Csr> {
        let (a, b) = (
            f32_view(a, "Csr::sampled_matmul")?,
            f32_view(b, "Csr::sampled_matmul")?,
        );
        let mut out = vec![0.0f32; self.nnz()];
        sddmm(
            self,
            a.mat("Csr::sampled_matmul")?,
            b.mat("Csr::sampled_matmul")?,
            &mut out,
            par,
        )?;
        self.with_values(out)
    }
}

impl Sparse24 {
    /// `W X` for a dense X (K, N) of any dtype; returns (M, N) f32.
    pub fn matmul(&self, x: &Tensor, par: Par) -> Result<Tensor> {
        let x = f32_view(x, "Sparse24::matmul")?;
        let n = x.shape()[1];
        let mut y = output(
            "Sparse24::matmul",
            (self.rows(), self.cols()),
            x.shape()[0],
            self.cols(),
            self.rows(),
            n,
        )?;
        spmm_24(
            self,
            x.mat("Sparse24::matmul")?,
            MatMut::new(&mut y, self.rows(), n)?,
            par,
        )?;
        Ok(Tensor::from_f32(&[self.rows(), n], y)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopper_tensor::{DType, Transpose, matmul};

    #[test]
    fn half_precision_inputs_match_f32_of_the_rounded_values() {
        let w = Tensor::randn(&[6, 8], 1.0, 1);
        let csr = Csr::from_topk(w.mat("w").unwrap(), 20).unwrap();
        let s24 = Sparse24::from_tensor_prune(&w).unwrap();
        for dt in [DType::F16, DType::BF16] {
            let x = Tensor::randn(&[8, 5], 1.0, 2).to_dtype(dt);
            let x32 = x.to_f32();
            for (got, wd) in [
                (csr.matmul(&x, Par::Seq).unwrap(), csr.to_tensor()),
                (s24.matmul(&x, Par::Seq).unwrap(), s24.to_tensor()),
            ] {
                let want = matmul(&wd, Transpose::No, &x32, Transpose::No, Par::Seq).unwrap();
                let d =
                    lopper_tensor::ops::max_abs_diff(got.as_f32().unwrap(), want.as_f32().unwrap())
                        .unwrap();
                assert!(d < 1e-4, "{dt}: {d}");
            }
            let xt = Tensor::randn(&[6, 5], 1.0, 3).to_dtype(dt);
            let got = csr.matmul_t(&xt, Par::Seq).unwrap();
            let want = matmul(
                &csr.to_tensor(),
                Transpose::Yes,
                &xt.to_f32(),
                Transpose::No,
                Par::Seq,
            )
            .unwrap();
            assert!(
                lopper_tensor::ops::max_abs_diff(got.as_f32().unwrap(), want.as_f32().unwrap())
                    .unwrap()
                    < 1e-4
            );
        }
        let a = Tensor::randn(&[6, 3], 1.0, 4);
        let b = Tensor::randn(&[8, 3], 1.0, 5).to_dtype(DType::BF16);
        let g = csr.sampled_matmul(&a, &b, Par::Seq).unwrap();
        let full = matmul(&a, Transpose::No, &b.to_f32(), Transpose::Yes, Par::Seq).unwrap();
        let fd = full.as_f32().unwrap();
        for i in 0..6 {
            let (c, v) = g.row(i);
            for (&j, &x) in c.iter().zip(v) {
                assert!((x - fd[i * 8 + j as usize]).abs() < 1e-4);
            }
        }
        assert!(
            csr.matmul(&Tensor::zeros(&[8], DType::F32), Par::Seq)
                .is_err()
        );
    }

    #[test]
    fn mismatched_or_oversized_outputs_are_errors_before_allocating() {
        let x = Tensor::zeros(&[3, 4], DType::F32);
        let e = Csr::zeros(2, 5).unwrap().matmul(&x, Par::Seq).unwrap_err();
        assert!(
            e.to_string()
                .contains("Csr::matmul: shape mismatch: W is 2x5, X has 3 rows (need 5)"),
            "{e}"
        );
        let e = Csr::zeros(2, 5)
            .unwrap()
            .matmul_t(&x, Par::Seq)
            .unwrap_err();
        assert!(e.to_string().contains("X has 3 rows (need 2)"), "{e}");
        // X (0, 2^40) holds no element, but W X would be (2^20, 2^40): refused, not an abort
        let x = Tensor::zeros(&[0, 1 << 40], DType::F32);
        let e = Csr::zeros(1 << 20, 0)
            .unwrap()
            .matmul(&x, Par::Seq)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("Csr::matmul output (1048576x1099511627776)"),
            "{e}"
        );
        let e = Csr::zeros(0, 1 << 20)
            .unwrap()
            .matmul_t(&x, Par::Seq)
            .unwrap_err();
        assert!(e.to_string().contains("Csr::matmul_t output"), "{e}");
        let s = Sparse24::from_parts(1 << 20, 0, vec![], vec![]).unwrap();
        let e = s.matmul(&x, Par::Seq).unwrap_err();
        assert!(e.to_string().contains("Sparse24::matmul output"), "{e}");
        // a (2^40, 2^40) output overflows usize: an error too
        let s = Sparse24::from_parts(1 << 40, 0, vec![], vec![]).unwrap();
        let e = s.matmul(&x, Par::Seq).unwrap_err();
        assert!(e.to_string().contains("Sparse24::matmul: shape"), "{e}");
    }
}
