//! Vendor baselines: dense GEMM through cuBLAS (f32 and bf16) and CSR SpMM through cuSPARSE.
use crate::csr::{CsrDev, Dtype};
use crate::device::Gpu;
use crate::error::{Error, Result, i32_arg, shape};
use cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::cusparse::sys as sp;
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use half::bf16;

/// Element types of [`gemm`]: f32 (SGEMM) and bf16 (GemmEx, f32 compute).
pub trait GemmDtype: Dtype {
    /// 1 in this type.
    fn one() -> Self;
    /// 0 in this type.
    fn zero() -> Self;
}
impl GemmDtype for f32 {
    fn one() -> Self {
        1.0
    }
    fn zero() -> Self {
        0.0
    }
}
impl GemmDtype for bf16 {
    fn one() -> Self {
        bf16::ONE
    }
    fn zero() -> Self {
        bf16::ZERO
    }
}

fn blas(gpu: &Gpu) -> Result<&CudaBlas> {
    if let Some(b) = gpu.blas.get() {
        return Ok(b);
    }
    // SAFETY: only tries to open the cuBLAS library by name.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(Error::NoDevice(
            "libcublas not found (LD_LIBRARY_PATH)".into(),
        ));
    }
    let b = CudaBlas::new(gpu.stream().clone())?;
    let _ = gpu.blas.set(b);
    Ok(gpu.blas.get().expect("set above"))
}

/// `c = a b` row-major: A (M, K), B (K, N), C (M, N), through cuBLAS on the device's stream.
pub fn gemm<T: GemmDtype>(
    gpu: &Gpu,
    m: usize,
    n: usize,
    k: usize,
    a: &CudaSlice<T>,
    b: &CudaSlice<T>,
    c: &mut CudaSlice<T>,
) -> Result<()>
where
    CudaBlas: Gemm<T>,
{
    const OP: &str = "gemm";
    if a.len() != m * k || b.len() != k * n || c.len() != m * n {
        return Err(shape(
            OP,
            format!(
                "M={m} N={n} K={k}: A {}, B {}, C {}",
                a.len(),
                b.len(),
                c.len()
            ),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (m32, n32, k32) = (
        i32_arg(OP, "M", m)?,
        i32_arg(OP, "N", n)?,
        i32_arg(OP, "K", k)?,
    );
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS multiplies B (n x k, ld n) by A.
    let cfg = GemmConfig {
        transa: CUBLAS_OP_N,
        transb: CUBLAS_OP_N,
        m: n32,
        n: m32,
        k: k32,
        alpha: T::one(),
        lda: n32,
        ldb: k32.max(1),
        beta: T::zero(),
        ldc: n32,
    };
    // SAFETY: the buffers hold exactly M*K, K*N and M*N elements (checked) and the leading
    // dimensions above describe those row-major matrices in cuBLAS's column-major terms.
    unsafe { blas(gpu)?.gemm(cfg, b, a, c) }?;
    Ok(())
}

/// cuSPARSE SpMM (`cusparseSpMM`, f32, CSR x row-major dense) set up once for fixed operands and run
/// many times: the baseline of `csr_spmm` in benchmarks.
pub struct CusparseSpmm<'a> {
    gpu: &'a Gpu,
    handle: sp::cusparseHandle_t,
    mat: sp::cusparseSpMatDescr_t,
    xd: sp::cusparseDnMatDescr_t,
    yd: sp::cusparseDnMatDescr_t,
    buffer: CudaSlice<u8>,
    alg: sp::cusparseSpMMAlg_t,
    _borrow:
        std::marker::PhantomData<(&'a CsrDev<f32>, &'a CudaSlice<f32>, &'a mut CudaSlice<f32>)>,
}

impl<'a> CusparseSpmm<'a> {
    /// Describes `y = w x` (W (M, K) CSR, X (K, N), Y (M, N), f32) to cuSPARSE and allocates its
    /// work buffer. `alg2` picks CUSPARSE_SPMM_CSR_ALG2 (row-major friendly) over the default.
    pub fn new(
        gpu: &'a Gpu,
        w: &'a CsrDev<f32>,
        x: &'a CudaSlice<f32>,
        n: usize,
        y: &'a mut CudaSlice<f32>,
        alg2: bool,
    ) -> Result<Self> {
        const OP: &str = "CusparseSpmm::new";
        if x.len() != w.cols() * n || y.len() != w.rows() * n {
            return Err(shape(
                OP,
                format!(
                    "W {}x{}, N = {n}: X {}, Y {}",
                    w.rows(),
                    w.cols(),
                    x.len(),
                    y.len()
                ),
            ));
        }
        // SAFETY: only tries to open the cuSPARSE library by name.
        if !unsafe { sp::is_culib_present() } {
            return Err(Error::NoDevice(
                "libcusparse not found (LD_LIBRARY_PATH)".into(),
            ));
        }
        let s = gpu.stream();
        let handle = cudarc::cusparse::result::create()?;
        let (rp, _a) = w.row_ptr().device_ptr(s);
        let (ci, _b) = w.col_idx().device_ptr(s);
        let (vals, _c) = w.values().device_ptr(s);
        let (xp, _d) = x.device_ptr(s);
        let (yp, _e) = y.device_ptr_mut(s);
        let (mut mat, mut xd, mut yd) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        let alg = if alg2 {
            sp::cusparseSpMMAlg_t::CUSPARSE_SPMM_CSR_ALG2
        } else {
            sp::cusparseSpMMAlg_t::CUSPARSE_SPMM_ALG_DEFAULT
        };
        let (one, zero) = (1.0f32, 0.0f32);
        let mut size = 0usize;
        // SAFETY: the pointers are live device allocations of the sizes described (row_ptr M+1,
        // col_idx/values >= nnz, X K*N, Y M*N, checked above) and outlive the descriptors ('a); the
        // out-parameters are valid locals.
        unsafe {
            sp::cusparseSetStream(handle, s.cu_stream() as _).result()?;
            sp::cusparseCreateCsr(
                &mut mat,
                w.rows() as i64,
                w.cols() as i64,
                w.nnz() as i64,
                rp as _,
                ci as _,
                vals as _,
                sp::cusparseIndexType_t::CUSPARSE_INDEX_32I,
                sp::cusparseIndexType_t::CUSPARSE_INDEX_32I,
                sp::cusparseIndexBase_t::CUSPARSE_INDEX_BASE_ZERO,
                sp::cudaDataType::CUDA_R_32F,
            )
            .result()?;
            sp::cusparseCreateDnMat(
                &mut xd,
                w.cols() as i64,
                n as i64,
                n as i64,
                xp as _,
                sp::cudaDataType::CUDA_R_32F,
                sp::cusparseOrder_t::CUSPARSE_ORDER_ROW,
            )
            .result()?;
            sp::cusparseCreateDnMat(
                &mut yd,
                w.rows() as i64,
                n as i64,
                n as i64,
                yp as _,
                sp::cudaDataType::CUDA_R_32F,
                sp::cusparseOrder_t::CUSPARSE_ORDER_ROW,
            )
            .result()?;
            sp::cusparseSpMM_bufferSize(
                handle,
                sp::cusparseOperation_t::CUSPARSE_OPERATION_NON_TRANSPOSE,
                sp::cusparseOperation_t::CUSPARSE_OPERATION_NON_TRANSPOSE,
                &one as *const f32 as _,
                mat as _,
                xd as _,
                &zero as *const f32 as _,
                yd,
                sp::cudaDataType::CUDA_R_32F,
                alg,
                &mut size,
            )
            .result()?;
        }
        let buffer = gpu.zeros::<u8>(size.max(1))?;
        Ok(CusparseSpmm {
            gpu,
            handle,
            mat,
            xd,
            yd,
            buffer,
            alg,
            _borrow: std::marker::PhantomData,
        })
    }

    /// Runs the SpMM once (enqueued on the device's stream).
    pub fn run(&mut self) -> Result<()> {
        let (one, zero) = (1.0f32, 0.0f32);
        let (buf, _g) = self.buffer.device_ptr_mut(self.gpu.stream());
        // SAFETY: handle and descriptors were created in `new` over buffers borrowed for 'a; the
        // work buffer has the size cuSPARSE asked for.
        unsafe {
            sp::cusparseSpMM(
                self.handle,
                sp::cusparseOperation_t::CUSPARSE_OPERATION_NON_TRANSPOSE,
                sp::cusparseOperation_t::CUSPARSE_OPERATION_NON_TRANSPOSE,
                &one as *const f32 as _,
                self.mat as _,
                self.xd as _,
                &zero as *const f32 as _,
                self.yd,
                sp::cudaDataType::CUDA_R_32F,
                self.alg,
                buf as _,
            )
            .result()?;
        }
        Ok(())
    }
}

impl Drop for CusparseSpmm<'_> {
    fn drop(&mut self) {
        // SAFETY: each handle/descriptor was created once in `new` and is destroyed once here.
        unsafe {
            let _ = sp::cusparseDestroySpMat(self.mat as _);
            let _ = sp::cusparseDestroyDnMat(self.xd as _);
            let _ = sp::cusparseDestroyDnMat(self.yd as _);
            let _ = cudarc::cusparse::result::destroy(self.handle);
        }
    }
}
