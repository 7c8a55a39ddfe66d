use crate::{DType, Error, MatMut, MatRef, Result};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// The elements of a [`Tensor`], in one of the three dtypes.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl Storage {
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F16(v) => v.len(),
            Storage::BF16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F16(_) => DType::F16,
            Storage::BF16(_) => DType::BF16,
        }
    }
    /// The raw little-endian bytes (what safetensors and .npy store).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Storage::F32(v) => bytemuck::cast_slice(v),
            Storage::F16(v) => bytemuck::cast_slice(v),
            Storage::BF16(v) => bytemuck::cast_slice(v),
        }
    }
}

/// A dense tensor: row-major, contiguous, on the CPU.
///
/// Invariant: `storage.len() == shape.iter().product()`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

fn numel_of(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::shape(op, format!("shape {shape:?} overflows usize")))
}

/// Element count of a shape whose product must fit `usize` (the infallible constructors' contract).
fn checked_numel(shape: &[usize]) -> usize {
    numel_of("Tensor", shape).unwrap_or_else(|e| panic!("{e}"))
}

impl Tensor {
    /// A tensor from a shape and storage; errors when their sizes disagree.
    pub fn new(shape: &[usize], storage: Storage) -> Result<Tensor> {
        let n = numel_of("Tensor::new", shape)?;
        if n != storage.len() {
            return Err(Error::shape(
                "Tensor::new",
                format!(
                    "shape {shape:?} holds {n} elements, storage has {}",
                    storage.len()
                ),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage,
        })
    }

    /// An f32 tensor from a shape and data.
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        Tensor::new(shape, Storage::F32(data))
    }

    /// Zeros of the given shape and dtype. Panics if the element count overflows `usize`.
    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        let n = checked_numel(shape);
        let storage = match dtype {
            DType::F32 => Storage::F32(vec![0.0; n]),
            DType::F16 => Storage::F16(vec![f16::ZERO; n]),
            DType::BF16 => Storage::BF16(vec![bf16::ZERO; n]),
        };
        Tensor {
            shape: shape.to_vec(),
            storage,
        }
    }

    /// f32 samples of N(0, std^2), reproducible from `seed`. Panics if the element count overflows.
    pub fn randn(shape: &[usize], std: f32, seed: u64) -> Tensor {
        let n = checked_numel(shape);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data = (0..n)
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut rng);
                z * std
            })
            .collect();
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::F32(data),
        }
    }

    /// f32 samples of U[lo, hi), reproducible from `seed`. Panics if the element count overflows.
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
        let n = checked_numel(shape);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::F32(data),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.storage.len()
    }
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn into_storage(self) -> Storage {
        self.storage
    }

    /// `(rows, cols)` of a 2-D tensor; an error naming `op` otherwise.
    pub fn dims2(&self, op: &'static str) -> Result<(usize, usize)> {
        match self.shape[..] {
            [r, c] => Ok((r, c)),
            _ => Err(Error::shape(
                op,
                format!("expected a 2-D tensor, got shape {:?}", self.shape),
            )),
        }
    }

    /// The f32 elements; an error if the tensor is f16 or bf16.
    pub fn as_f32(&self) -> Result<&[f32]> {
        match &self.storage {
            Storage::F32(v) => Ok(v),
            s => Err(Error::DType {
                op: "Tensor::as_f32",
                expected: DType::F32,
                got: s.dtype(),
            }),
        }
    }

    /// The f32 elements, mutably; an error if the tensor is f16 or bf16.
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        match &mut self.storage {
            Storage::F32(v) => Ok(v),
            s => Err(Error::DType {
                op: "Tensor::as_f32_mut",
                expected: DType::F32,
                got: s.dtype(),
            }),
        }
    }

    /// The elements converted to f32 (a copy for every dtype).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.storage {
            Storage::F32(v) => v.clone(),
            Storage::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Storage::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// The elements converted to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.to_f32_vec().into_iter().map(f64::from).collect()
    }

    /// The same values in another dtype (round to nearest even when narrowing).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let f = self.to_f32_vec();
        let storage = match dtype {
            DType::F32 => Storage::F32(f),
            DType::F16 => Storage::F16(f.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => Storage::BF16(f.iter().map(|&x| bf16::from_f32(x)).collect()),
        };
        Tensor {
            shape: self.shape.clone(),
            storage,
        }
    }

    /// An f32 tensor sharing this one's shape (a copy, converted when needed).
    pub fn to_f32(&self) -> Tensor {
        self.to_dtype(DType::F32)
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor> {
        let n = numel_of("Tensor::reshape", shape)?;
        if n != self.numel() {
            return Err(Error::shape(
                "Tensor::reshape",
                format!("cannot reshape {:?} into {shape:?}", self.shape),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage,
        })
    }

    /// The transpose of a 2-D tensor (a copy, same dtype).
    pub fn transpose2(&self) -> Result<Tensor> {
        let (r, c) = self.dims2("Tensor::transpose2")?;
        fn t<T: Copy>(v: &[T], r: usize, c: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(v.len());
            for j in 0..c {
                out.extend((0..r).map(|i| v[i * c + j]));
            }
            out
        }
        let storage = match &self.storage {
            Storage::F32(v) => Storage::F32(t(v, r, c)),
            Storage::F16(v) => Storage::F16(t(v, r, c)),
            Storage::BF16(v) => Storage::BF16(t(v, r, c)),
        };
        Ok(Tensor {
            shape: vec![c, r],
            storage,
        })
    }

    /// A 2-D f32 tensor as a matrix view.
    pub fn mat(&self, op: &'static str) -> Result<MatRef<'_>> {
        let (r, c) = self.dims2(op)?;
        MatRef::new(self.as_f32()?, r, c)
    }

    /// A 2-D f32 tensor as a mutable matrix view.
    pub fn mat_mut(&mut self, op: &'static str) -> Result<MatMut<'_>> {
        let (r, c) = self.dims2(op)?;
        MatMut::new(self.as_f32_mut()?, r, c)
    }

    /// Fraction of elements that are not exactly zero.
    pub fn density(&self) -> f64 {
        if self.numel() == 0 {
            return 0.0;
        }
        let nz = match &self.storage {
            Storage::F32(v) => v.iter().filter(|x| **x != 0.0).count(),
            Storage::F16(v) => v.iter().filter(|x| x.to_f32() != 0.0).count(),
            Storage::BF16(v) => v.iter().filter(|x| x.to_f32() != 0.0).count(),
        };
        nz as f64 / self.numel() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_len() {
        assert!(Tensor::from_f32(&[2, 3], vec![0.0; 5]).is_err());
        let t = Tensor::from_f32(&[2, 3], vec![0.0; 6]).unwrap();
        assert_eq!(t.dims2("t").unwrap(), (2, 3));
        assert!(t.clone().reshape(&[4]).is_err());
        assert_eq!(t.reshape(&[3, 2]).unwrap().shape(), &[3, 2]);
    }

    #[test]
    fn dtype_round_trip_and_errors() {
        let t = Tensor::from_f32(&[4], vec![1.0, -2.5, 0.0, 65504.0]).unwrap();
        for d in [DType::F16, DType::BF16] {
            let h = t.to_dtype(d);
            assert_eq!(h.dtype(), d);
            assert!(h.as_f32().is_err());
            // these values are exactly representable in f16; bf16 rounds 65504 to 65536
            let back = h.to_f32_vec();
            assert_eq!(back[..3], [1.0, -2.5, 0.0]);
        }
        assert_eq!(t.to_dtype(DType::F16).to_f32_vec(), t.to_f32_vec());
    }

    #[test]
    fn transpose2_matches_index_map() {
        let t = Tensor::randn(&[3, 5], 1.0, 7);
        let tt = t.transpose2().unwrap();
        let (a, b) = (t.as_f32().unwrap(), tt.as_f32().unwrap());
        for i in 0..3 {
            for j in 0..5 {
                assert_eq!(a[i * 5 + j], b[j * 3 + i]);
            }
        }
        assert!(Tensor::zeros(&[2, 2, 2], DType::F32).transpose2().is_err());
    }
}
