//! Tensors on a CUDA device (feature `cuda`): upload, download and dense GEMM through cuBLAS.
//! The device layer is lopper-cuda, which knows no `Tensor`: this module is the conversion boundary.
use crate::{DType, Storage, Tensor};
use half::bf16;
use lopper_cuda::CudaSlice;

pub use lopper_cuda::Gpu;

/// Errors of the device path: the device's, or the tensor's.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// From lopper-cuda (driver, cuBLAS, launch checks).
    #[error(transparent)]
    Cuda(#[from] lopper_cuda::Error),
    /// From lopper-tensor (shapes, dtypes).
    #[error(transparent)]
    Tensor(#[from] crate::Error),
}

/// Elements of a [`DeviceTensor`]: f32 or bf16 (f16 tensors are widened to f32 on upload).
pub enum DeviceStorage {
    /// f32 elements.
    F32(CudaSlice<f32>),
    /// bf16 elements.
    BF16(CudaSlice<bf16>),
}

/// A dense row-major tensor in device memory.
pub struct DeviceTensor {
    shape: Vec<usize>,
    storage: DeviceStorage,
}

impl DeviceTensor {
    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Element type on the device (F32 or BF16).
    pub fn dtype(&self) -> DType {
        match self.storage {
            DeviceStorage::F32(_) => DType::F32,
            DeviceStorage::BF16(_) => DType::BF16,
        }
    }
    /// The device buffer.
    pub fn storage(&self) -> &DeviceStorage {
        &self.storage
    }
    /// The device buffer, mutable.
    pub fn storage_mut(&mut self) -> &mut DeviceStorage {
        &mut self.storage
    }
    /// Copies the tensor back to the host.
    pub fn to_host(&self, gpu: &Gpu) -> Result<Tensor, CudaError> {
        let storage = match &self.storage {
            DeviceStorage::F32(s) => Storage::F32(gpu.download(s)?),
            DeviceStorage::BF16(s) => Storage::BF16(gpu.download(s)?),
        };
        Ok(Tensor::new(&self.shape, storage)?)
    }
    /// Zeros of the given shape and dtype (F16 is stored as F32).
    pub fn zeros(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<DeviceTensor, CudaError> {
        let n = shape.iter().product();
        let storage = match dtype {
            DType::BF16 => DeviceStorage::BF16(gpu.zeros(n)?),
            DType::F32 | DType::F16 => DeviceStorage::F32(gpu.zeros(n)?),
        };
        Ok(DeviceTensor {
            shape: shape.to_vec(),
            storage,
        })
    }
}

impl Tensor {
    /// Copies the tensor to the device (f32 and bf16 as they are, f16 widened to f32).
    pub fn to_device(&self, gpu: &Gpu) -> Result<DeviceTensor, CudaError> {
        let storage = match self.storage() {
            Storage::F32(v) => DeviceStorage::F32(gpu.upload(v)?),
            Storage::BF16(v) => DeviceStorage::BF16(gpu.upload(v)?),
            Storage::F16(_) => DeviceStorage::F32(gpu.upload(&self.to_f32_vec())?),
        };
        Ok(DeviceTensor {
            shape: self.shape().to_vec(),
            storage,
        })
    }
}

fn dims2(op: &'static str, t: &DeviceTensor) -> Result<(usize, usize), CudaError> {
    match *t.shape() {
        [r, c] => Ok((r, c)),
        _ => Err(crate::Error::shape(
            op,
            format!("expected a 2-D tensor, got shape {:?}", t.shape()),
        )
        .into()),
    }
}

/// `a b` on the device through cuBLAS: A (M, K), B (K, N), both f32 or both bf16 (f32
/// accumulation); returns C (M, N) of the same dtype.
pub fn matmul(gpu: &Gpu, a: &DeviceTensor, b: &DeviceTensor) -> Result<DeviceTensor, CudaError> {
    const OP: &str = "cuda::matmul";
    let ((m, k), (k2, n)) = (dims2(OP, a)?, dims2(OP, b)?);
    if k != k2 {
        return Err(crate::Error::shape(OP, format!("A is {m}x{k}, B is {k2}x{n}")).into());
    }
    let mut c = DeviceTensor::zeros(gpu, &[m, n], a.dtype())?;
    match (&a.storage, &b.storage, &mut c.storage) {
        (DeviceStorage::F32(x), DeviceStorage::F32(y), DeviceStorage::F32(z)) => {
            lopper_cuda::gemm(gpu, m, n, k, x, y, z)?
        }
        (DeviceStorage::BF16(x), DeviceStorage::BF16(y), DeviceStorage::BF16(z)) => {
            lopper_cuda::gemm(gpu, m, n, k, x, y, z)?
        }
        _ => {
            return Err(crate::Error::shape(
                OP,
                format!("dtypes differ: {:?} x {:?}", a.dtype(), b.dtype()),
            )
            .into());
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_cpu_or_skips() {
        if !lopper_cuda::is_available() {
            println!("{}", lopper_cuda::SKIP_MESSAGE);
            return;
        }
        let g = Gpu::get(0).unwrap();
        let (a, b) = (
            Tensor::randn(&[33, 17], 1.0, 1),
            Tensor::randn(&[17, 9], 1.0, 2),
        );
        let c = matmul(&g, &a.to_device(&g).unwrap(), &b.to_device(&g).unwrap())
            .unwrap()
            .to_host(&g)
            .unwrap();
        let want = crate::matmul(
            &a,
            crate::Transpose::No,
            &b,
            crate::Transpose::No,
            crate::Par::Seq,
        )
        .unwrap();
        for (x, y) in c.to_f32_vec().iter().zip(want.to_f32_vec()) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
        let bad = matmul(&g, &a.to_device(&g).unwrap(), &a.to_device(&g).unwrap());
        assert!(bad.is_err());
    }
}
