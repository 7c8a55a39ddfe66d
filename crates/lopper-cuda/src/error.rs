use cudarc::cublas::result::CublasError;
use cudarc::cusparse::result::CusparseError;
use cudarc::driver::DriverError;

/// Errors of lopper-cuda. Launchers name the kernel and the first violated requirement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No CUDA driver library or no device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A CUDA driver call failed (allocation, copy, module load, launch).
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    /// A cuBLAS call failed.
    #[error("cuBLAS: {0:?}")]
    Cublas(#[from] CublasError),
    /// A cuSPARSE call failed.
    #[error("cuSPARSE: {0:?}")]
    Cusparse(CusparseError),
    /// Operand shapes or buffer lengths do not fit.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A kernel variant needs an alignment (of N, D or a pointer) that the operands do not have.
    #[error("{op}: alignment: {detail}")]
    Alignment { op: &'static str, detail: String },
    /// A size does not fit the kernel's 32-bit indices.
    #[error("{op}: {detail} exceeds the kernel's 32-bit indices")]
    TooLarge { op: &'static str, detail: String },
    /// The embedded kernels lack a module or function (a build/registry mismatch).
    #[error("kernel {0} is not in the embedded modules")]
    MissingKernel(String),
    /// The device is older than the kernel's minimum SM.
    #[error("{op} needs compute capability {need} or newer, the device has {have}")]
    Arch {
        op: &'static str,
        need: String,
        have: String,
    },
}

/// `Result` with lopper-cuda's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Shape {
        op,
        detail: detail.into(),
    }
}

/// An `i32` kernel argument, or [`Error::TooLarge`].
pub(crate) fn i32_arg(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::TooLarge {
        op,
        detail: format!("{what} = {v}"),
    })
}

impl From<CusparseError> for Error {
    fn from(e: CusparseError) -> Self {
        Error::Cusparse(e)
    }
}
