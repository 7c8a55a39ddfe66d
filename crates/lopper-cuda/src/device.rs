//! The device: context, stream, buffers, and the registry of embedded kernel modules.
use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

mod table {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Number of CUDA devices; 0 when the driver library is missing or reports none. Never panics.
pub(crate) fn device_count() -> usize {
    // SAFETY: only tries to open the driver library by name (dlopen); no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return 0;
    }
    match std::panic::catch_unwind(CudaContext::device_count) {
        Ok(Ok(n)) if n > 0 => n as usize,
        _ => 0,
    }
}

/// The embedded kernel files (stems of `kernels/*.cu`), as compiled by build.rs.
pub fn kernel_names() -> Vec<&'static str> {
    table::MODULES.iter().map(|(n, _)| *n).collect()
}

/// Identifies one kernel function: the file (module) it lives in and its `extern "C"` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelInfo {
    /// Stem of the `kernels/*.cu` file.
    pub module: &'static str,
    /// The `extern "C"` function name.
    pub name: &'static str,
}

/// One CUDA device: its context, the stream every launcher uses, and the modules loaded so far.
pub struct Gpu {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    cc: (i32, i32),
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<KernelInfo, CudaFunction>>,
    pub(crate) blas: OnceLock<cudarc::cublas::CudaBlas>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ordinal)
            .field("cc", &self.cc)
            .finish()
    }
}

static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();

impl Gpu {
    /// Device `ordinal`, opened on first use and shared afterwards (one context and stream per
    /// device per process). [`Error::NoDevice`] when there is no driver or no such device.
    pub fn get(ordinal: usize) -> Result<Arc<Gpu>> {
        let count = device_count();
        if ordinal >= count {
            return Err(Error::NoDevice(format!(
                "device {ordinal} requested, {count} present"
            )));
        }
        let map = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = map.get(&ordinal) {
            return Ok(g.clone());
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: every launcher, copy and library call of this crate goes through the one stream
        // created below, so the per-buffer events cudarc records for cross-stream ordering are
        // never needed (and cost an event record per kernel argument).
        unsafe { ctx.disable_event_tracking() };
        let cc = ctx.compute_capability()?;
        let stream = ctx.default_stream();
        let g = Arc::new(Gpu {
            ordinal,
            ctx,
            stream,
            cc,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
        });
        map.insert(ordinal, g.clone());
        Ok(g)
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    /// The device's name, e.g. "NVIDIA H200".
    pub fn name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }
    /// Compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }
    /// The stream every launcher of this device enqueues on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// A multiprocessor-count query (grid sizing for grid-stride kernels).
    pub fn sm_count(&self) -> Result<usize> {
        use cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
        Ok(self
            .ctx
            .attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize)
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return Ok(self.stream.null()?);
        }
        Ok(self.stream.clone_htod(host)?)
    }
    /// Copies a device buffer back into a new vector (waits for the stream).
    pub fn download<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        if dev.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.stream.clone_dtoh(dev)?)
    }
    /// Copies `host` into an existing device buffer of the same length.
    pub fn write<T: DeviceRepr>(&self, host: &[T], dev: &mut CudaSlice<T>) -> Result<()> {
        if host.len() != dev.len() {
            return Err(crate::error::shape(
                "Gpu::write",
                format!(
                    "{} host elements into a buffer of {}",
                    host.len(),
                    dev.len()
                ),
            ));
        }
        if !host.is_empty() {
            self.stream.memcpy_htod(host, dev)?;
        }
        Ok(())
    }
    /// A zero-filled device buffer of `n` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        Ok(self.stream.alloc_zeros(n)?)
    }
    /// Waits until everything enqueued on the stream has finished (and reports launch errors).
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    /// Median milliseconds per call of `f` (which enqueues work on this device's stream): `warmup`
    /// untimed calls, then `batches` batches timed with CUDA events, each batch long enough (at
    /// least about 2 ms, from a first estimate) that launch overhead and event resolution are small.
    pub fn time_ms(
        &self,
        warmup: usize,
        batches: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        for _ in 0..warmup {
            f()?;
        }
        let (start, end) = (
            self.ctx.new_event(Some(CU_EVENT_DEFAULT))?,
            self.ctx.new_event(Some(CU_EVENT_DEFAULT))?,
        );
        start.record(&self.stream)?;
        f()?;
        end.record(&self.stream)?;
        let one = (start.elapsed_ms(&end)? as f64).max(1e-4);
        let reps = ((2.0 / one).ceil() as usize).clamp(1, 1000);
        let mut times = Vec::with_capacity(batches.max(1));
        for _ in 0..batches.max(1) {
            start.record(&self.stream)?;
            for _ in 0..reps {
                f()?;
            }
            end.record(&self.stream)?;
            times.push(start.elapsed_ms(&end)? as f64 / reps as f64);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// The kernel `k`, loading its module on first use (once per device).
    pub(crate) fn function(&self, k: KernelInfo) -> Result<CudaFunction> {
        let mut fns = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = fns.get(&k) {
            return Ok(f.clone());
        }
        let module = {
            let mut mods = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            match mods.get(k.module) {
                Some(m) => m.clone(),
                None => {
                    let (_, bytes) = table::MODULES
                        .iter()
                        .find(|(n, _)| *n == k.module)
                        .ok_or_else(|| Error::MissingKernel(format!("module {}", k.module)))?;
                    let m = self.ctx.load_module(Ptx::from_binary(bytes.to_vec()))?;
                    mods.insert(k.module, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(k.name)
            .map_err(|_| Error::MissingKernel(format!("{}::{}", k.module, k.name)))?;
        fns.insert(k, f.clone());
        Ok(f)
    }

    /// Fails with [`Error::Arch`] when the device is older than sm_80 (every kernel's minimum).
    pub(crate) fn require_sm80(&self, op: &'static str) -> Result<()> {
        if self.cc.0 < 8 {
            return Err(Error::Arch {
                op,
                need: "8.0".into(),
                have: format!("{}.{}", self.cc.0, self.cc.1),
            });
        }
        Ok(())
    }
}

/// The device pointer of a buffer as an integer, for alignment checks.
pub(crate) fn addr<T>(gpu: &Gpu, s: &CudaSlice<T>) -> u64 {
    use cudarc::driver::DevicePtr;
    let (p, _sync) = s.device_ptr(&gpu.stream);
    p
}
