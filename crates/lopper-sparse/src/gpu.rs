//! GPU dispatch of the sparse ops (feature `cuda`): uploads of [`Csr`], [`CsrTranspose`] and
//! [`Sparse24`] to lopper-cuda's device formats, and the products run by lopper-cuda's kernels.
//!
//! Two levels:
//! - device level ([`GpuCsr`], [`GpuCsrT`], [`GpuSparse24`] and the launchers they wrap): operands stay
//!   on the device between calls (training steps; benchmarks);
//! - host level ([`spmm`], [`spmm_t`], [`sddmm`], [`spmm_24`], [`prune_24`]): the same signatures as
//!   the CPU kernels of [`crate::kernels`] (upload, run, download), for tests and one-off calls.
use crate::{Csr, CsrTranspose, Sparse24, Sparse24Fragments};
use half::bf16;
use lopper_cuda::{CsrDev, CudaSlice, PermDev, Sparse24Dev, SpmmVariant};
use lopper_tensor::{MatMut, MatRef};

pub use lopper_cuda::{Gpu, is_available};

/// Errors of the GPU path: the device's, or the sparse formats'.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// From lopper-cuda (driver, launch checks, cuBLAS).
    #[error(transparent)]
    Cuda(#[from] lopper_cuda::Error),
    /// From lopper-sparse (shapes, format validation).
    #[error(transparent)]
    Sparse(#[from] crate::Error),
}

/// `Result` of the GPU path.
pub type GpuResult<T> = std::result::Result<T, GpuError>;

fn shape(op: &'static str, detail: String) -> GpuError {
    GpuError::Sparse(crate::Error::Shape { op, detail })
}

/// A [`Csr`] on the device (f32 values).
pub struct GpuCsr {
    dev: CsrDev<f32>,
}

impl GpuCsr {
    /// Uploads `w` (pattern and values; rows sorted by length for the kernels' load balance).
    pub fn upload(gpu: &Gpu, w: &Csr) -> GpuResult<GpuCsr> {
        let dev = CsrDev::from_parts(
            gpu,
            w.rows(),
            w.cols(),
            w.row_ptr(),
            w.col_idx(),
            w.values(),
        )?;
        Ok(GpuCsr { dev })
    }
    /// Replaces the values (same pattern).
    pub fn set_values(&mut self, gpu: &Gpu, values: &[f32]) -> GpuResult<()> {
        Ok(self.dev.set_values(gpu, values)?)
    }
    /// The values, copied back.
    pub fn download_values(&self, gpu: &Gpu) -> GpuResult<Vec<f32>> {
        Ok(self.dev.download_values(gpu)?)
    }
    /// The device matrix, for lopper-cuda's launchers.
    pub fn dev(&self) -> &CsrDev<f32> {
        &self.dev
    }
    /// The device matrix, mutable (in-place value updates).
    pub fn dev_mut(&mut self) -> &mut CsrDev<f32> {
        &mut self.dev
    }
    /// `y = w x` with X (K, N) and Y (M, N) on the device.
    pub fn spmm(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        n: usize,
        y: &mut CudaSlice<f32>,
        variant: SpmmVariant,
    ) -> GpuResult<()> {
        Ok(lopper_cuda::csr_spmm(gpu, &self.dev, x, n, y, variant)?)
    }
    /// `out[p] = A[i, :] . B[j, :]` at every stored (i, j): A (M, D), B (K, D), out >= nnz.
    pub fn sddmm(
        &self,
        gpu: &Gpu,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        d: usize,
        out: &mut CudaSlice<f32>,
    ) -> GpuResult<()> {
        Ok(lopper_cuda::csr_sddmm(gpu, &self.dev, a, b, d, out)?)
    }
}

/// The transpose of a device CSR with its value map: after the source's values change on the
/// device, [`GpuCsrT::refresh`] re-gathers them in O(nnz) without leaving the device.
pub struct GpuCsrT {
    t: GpuCsr,
    perm: PermDev,
}

impl GpuCsrT {
    /// Uploads a host transpose (pattern, values and permutation).
    pub fn upload(gpu: &Gpu, t: &CsrTranspose) -> GpuResult<GpuCsrT> {
        let perm = PermDev::new(gpu, t.perm(), t.csr().nnz())?;
        Ok(GpuCsrT {
            t: GpuCsr::upload(gpu, t.csr())?,
            perm,
        })
    }
    /// Re-reads the values from the source matrix on the device (`src` must be the matrix this
    /// transpose was built from).
    pub fn refresh(&mut self, gpu: &Gpu, src: &GpuCsr) -> GpuResult<()> {
        if src.dev.nnz() != self.t.dev.nnz()
            || src.dev.rows() != self.t.dev.cols()
            || src.dev.cols() != self.t.dev.rows()
        {
            return Err(shape(
                "GpuCsrT::refresh",
                format!(
                    "source {}x{} ({} entries) is not this transpose's",
                    src.dev.rows(),
                    src.dev.cols(),
                    src.dev.nnz()
                ),
            ));
        }
        Ok(lopper_cuda::gather_f32(
            gpu,
            &self.perm,
            src.dev.values(),
            self.t.dev.values_mut(),
        )?)
    }
    /// The transpose as a device CSR (`y = w^T x` is `self.csr().spmm(..)`).
    pub fn csr(&self) -> &GpuCsr {
        &self.t
    }
}

/// A [`Sparse24`] on the device in the `mma.sp` fragment layout (bf16 values).
pub struct GpuSparse24 {
    dev: Sparse24Dev,
}

impl GpuSparse24 {
    /// Reorders `w` into the fragment layout ([`Sparse24Fragments`], values rounded to bf16) and
    /// uploads it.
    pub fn upload(gpu: &Gpu, w: &Sparse24) -> GpuResult<GpuSparse24> {
        let f = Sparse24Fragments::from_sparse24(w);
        Ok(GpuSparse24 {
            dev: Sparse24Dev::from_fragments(gpu, f.rows(), f.cols(), f.values(), f.meta())?,
        })
    }
    /// Prunes a dense bf16 (M, K) device matrix to 2:4 on the device (2 largest magnitudes per group).
    pub fn prune(
        gpu: &Gpu,
        w: &CudaSlice<bf16>,
        rows: usize,
        cols: usize,
    ) -> GpuResult<GpuSparse24> {
        Ok(GpuSparse24 {
            dev: lopper_cuda::sparse24_compress(gpu, w, rows, cols)?,
        })
    }
    /// The layout copied back.
    pub fn download(&self, gpu: &Gpu) -> GpuResult<Sparse24Fragments> {
        let (v, m) = self.dev.download(gpu)?;
        Ok(Sparse24Fragments::from_parts(
            self.dev.rows(),
            self.dev.cols(),
            v,
            m,
        )?)
    }
    /// `y = w x`, X (K, N) and Y (M, N) bf16 on the device, N % 8 == 0.
    pub fn spmm(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<bf16>,
        n: usize,
        y: &mut CudaSlice<bf16>,
    ) -> GpuResult<()> {
        Ok(lopper_cuda::sparse24_spmm(gpu, &self.dev, x, n, y)?)
    }
    /// The device matrix.
    pub fn dev(&self) -> &Sparse24Dev {
        &self.dev
    }
}

fn check_spmm(
    op: &'static str,
    wr: usize,
    wc: usize,
    x: &MatRef<'_>,
    y: &MatMut<'_>,
) -> GpuResult<()> {
    if x.rows() != wc || y.rows() != wr || y.cols() != x.cols() {
        return Err(shape(
            op,
            format!(
                "W is {wr}x{wc}, X is {}x{}, Y is {}x{}",
                x.rows(),
                x.cols(),
                y.rows(),
                y.cols()
            ),
        ));
    }
    Ok(())
}

/// `y = w x` on the GPU (upload, `csr_spmm`, download): same contract as [`crate::spmm`].
pub fn spmm(gpu: &Gpu, w: &Csr, x: MatRef<'_>, mut y: MatMut<'_>) -> GpuResult<()> {
    check_spmm("gpu::spmm", w.rows(), w.cols(), &x, &y)?;
    let dw = GpuCsr::upload(gpu, w)?;
    let dx = gpu.upload(x.data())?;
    let mut dy = gpu.zeros::<f32>(y.rows() * y.cols())?;
    dw.spmm(gpu, &dx, x.cols(), &mut dy, SpmmVariant::Auto)?;
    y.data().copy_from_slice(&gpu.download(&dy)?);
    Ok(())
}

/// `y = w^T x` on the GPU: W (M, K), X (M, N), Y (K, N); same contract as [`crate::spmm_t`].
pub fn spmm_t(gpu: &Gpu, w: &Csr, x: MatRef<'_>, mut y: MatMut<'_>) -> GpuResult<()> {
    check_spmm("gpu::spmm_t", w.cols(), w.rows(), &x, &y)?;
    let src = GpuCsr::upload(gpu, w)?;
    let mut t = GpuCsrT::upload(gpu, &w.transpose())?;
    t.refresh(gpu, &src)?;
    let dx = gpu.upload(x.data())?;
    let mut dy = gpu.zeros::<f32>(y.rows() * y.cols())?;
    t.csr()
        .spmm(gpu, &dx, x.cols(), &mut dy, SpmmVariant::Auto)?;
    y.data().copy_from_slice(&gpu.download(&dy)?);
    Ok(())
}

/// `out[p] = A[i, :] . B[j, :]` on the GPU at every stored (i, j) of `pattern`: A (M, D), B (K, D);
/// same contract as [`crate::sddmm`], returns the nnz values.
pub fn sddmm(gpu: &Gpu, pattern: &Csr, a: MatRef<'_>, b: MatRef<'_>) -> GpuResult<Vec<f32>> {
    if a.rows() != pattern.rows() || b.rows() != pattern.cols() || a.cols() != b.cols() {
        return Err(shape(
            "gpu::sddmm",
            format!(
                "pattern {}x{}, A {}x{}, B {}x{}",
                pattern.rows(),
                pattern.cols(),
                a.rows(),
                a.cols(),
                b.rows(),
                b.cols()
            ),
        ));
    }
    let p = GpuCsr::upload(gpu, pattern)?;
    let (da, db) = (gpu.upload(a.data())?, gpu.upload(b.data())?);
    let mut out = gpu.zeros::<f32>(pattern.nnz().max(1))?;
    p.sddmm(gpu, &da, &db, a.cols(), &mut out)?;
    let mut v = gpu.download(&out)?;
    v.truncate(pattern.nnz());
    Ok(v)
}

/// `y = w x` with W 2:4 on the tensor cores: W and X are rounded to bf16, accumulation is f32 and
/// Y is rounded to bf16 once (then widened into `y`). Needs N % 8 == 0.
pub fn spmm_24(gpu: &Gpu, w: &Sparse24, x: MatRef<'_>, mut y: MatMut<'_>) -> GpuResult<()> {
    check_spmm("gpu::spmm_24", w.rows(), w.cols(), &x, &y)?;
    let dw = GpuSparse24::upload(gpu, w)?;
    let xb: Vec<bf16> = x.data().iter().map(|&v| bf16::from_f32(v)).collect();
    let dx = gpu.upload(&xb)?;
    let mut dy = gpu.zeros::<bf16>(y.rows() * y.cols())?;
    dw.spmm(gpu, &dx, x.cols(), &mut dy)?;
    for (o, v) in y.data().iter_mut().zip(gpu.download(&dy)?) {
        *o = v.to_f32();
    }
    Ok(())
}

/// 2:4 magnitude pruning on the GPU (`sparse24_compress`) of a dense matrix rounded to bf16; the
/// result equals [`Sparse24::from_dense_prune`] of the rounded matrix.
pub fn prune_24(gpu: &Gpu, w: MatRef<'_>) -> GpuResult<Sparse24> {
    let wb: Vec<bf16> = w.data().iter().map(|&v| bf16::from_f32(v)).collect();
    let dw = gpu.upload(&wb)?;
    let s = GpuSparse24::prune(gpu, &dw, w.rows(), w.cols())?;
    Ok(s.download(gpu)?.to_sparse24()?)
}
