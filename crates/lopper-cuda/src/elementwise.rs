//! Launchers of `kernels/elementwise.cu`: mask application and the masked AdamW step.
use crate::csr::{Dtype, grid_stride};
use crate::device::{Gpu, KernelInfo};
use crate::error::{Result, shape};
use cudarc::driver::{CudaSlice, PushKernelArg};

/// AdamW hyper-parameters (decoupled weight decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

/// `x[i] = 0` where `mask[i] == 0` (f32 or bf16; mask of u8 0/1, same length).
pub fn mask_apply<T: Dtype>(gpu: &Gpu, mask: &CudaSlice<u8>, x: &mut CudaSlice<T>) -> Result<()> {
    const OP: &str = "mask_apply";
    gpu.require_sm80(OP)?;
    if mask.len() != x.len() {
        return Err(shape(
            OP,
            format!("mask has {} entries, x {}", mask.len(), x.len()),
        ));
    }
    let n = x.len();
    if n == 0 {
        return Ok(());
    }
    let name = crate::csr::kernel_name(&format!("mask_apply_{}", T::NAME))?;
    let f = gpu.function(KernelInfo {
        module: "elementwise",
        name,
    })?;
    let n64 = n as i64;
    let cfg = grid_stride(gpu, n)?;
    let mut l = gpu.stream().launch_builder(&f);
    l.arg(&n64).arg(mask).arg(x);
    // SAFETY: mask_apply_<dtype>(long long n, const uint8_t* mask, T* x): both buffers hold n
    // elements (checked); the kernel touches indices < n only (grid-stride loop).
    unsafe { l.launch(cfg) }?;
    Ok(())
}

/// One AdamW step (step number `step` >= 1, for the bias corrections) on `n` stored values `w` with
/// gradient `g` and moments `m`, `v`, all f32 of the same length. With `mask`, entries whose mask is
/// 0 are pruned (w, m, v set to 0); without, every value is updated (CSR / 2:4 stored values).
pub fn masked_adamw(
    gpu: &Gpu,
    w: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    mask: Option<&CudaSlice<u8>>,
    hp: &AdamW,
    step: u32,
) -> Result<()> {
    const OP: &str = "masked_adamw";
    gpu.require_sm80(OP)?;
    let n = w.len();
    if g.len() != n || m.len() != n || v.len() != n || mask.is_some_and(|k| k.len() != n) {
        return Err(shape(
            OP,
            format!(
                "w {n}, g {}, m {}, v {}, mask {:?}",
                g.len(),
                m.len(),
                v.len(),
                mask.map(|k| k.len())
            ),
        ));
    }
    if step == 0 {
        return Err(shape(OP, "step numbers start at 1"));
    }
    if n == 0 {
        return Ok(());
    }
    let bc1 = 1.0 - hp.beta1.powi(step.min(i32::MAX as u32) as i32);
    let bc2 = 1.0 - hp.beta2.powi(step.min(i32::MAX as u32) as i32);
    let f = gpu.function(KernelInfo {
        module: "elementwise",
        name: "masked_adamw_f32",
    })?;
    let n64 = n as i64;
    let null: u64 = 0;
    let cfg = grid_stride(gpu, n)?;
    let mut l = gpu.stream().launch_builder(&f);
    l.arg(&n64).arg(w).arg(g).arg(m).arg(v);
    match mask {
        Some(k) => l.arg(k),
        None => l.arg(&null),
    };
    l.arg(&hp.lr)
        .arg(&hp.beta1)
        .arg(&hp.beta2)
        .arg(&hp.eps)
        .arg(&hp.weight_decay)
        .arg(&bc1)
        .arg(&bc2);
    // SAFETY: masked_adamw_f32(long long n, float* w, const float* g, float* m, float* v,
    // const uint8_t* mask, float lr, float beta1, float beta2, float eps, float wd, float bc1,
    // float bc2): arguments in order, every buffer holds n elements (checked), mask is a valid
    // buffer of n bytes or the null pointer (a 64-bit 0), which the kernel tests before reading.
    unsafe { l.launch(cfg) }?;
    Ok(())
}
