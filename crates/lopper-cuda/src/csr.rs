//! CSR on the device and the launchers of `kernels/csr_spmm.cu`, `kernels/csr_sddmm.cu` and the
//! `gather_f32` of `kernels/elementwise.cu` (the values refresh of a transpose).
use crate::device::{Gpu, KernelInfo, addr};
use crate::error::{Error, Result, i32_arg, shape};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};
use half::bf16;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
}

/// Element types the CSR kernels take: f32 and bf16 (f32 accumulation either way).
pub trait Dtype: DeviceRepr + ValidAsZeroBits + Copy + Default + sealed::Sealed + 'static {
    /// The `<dtype>` part of the kernel names.
    const NAME: &'static str;
    /// Elements per 16-byte vector load of the `v` variants.
    const VEC: usize;
}
impl Dtype for f32 {
    const NAME: &'static str = "f32";
    const VEC: usize = 4;
}
impl Dtype for bf16 {
    const NAME: &'static str = "bf16";
    const VEC: usize = 8;
}

/// A CSR matrix on the device, as the kernels read it: `row_ptr` and `col_idx` as i32, `row_order`
/// (rows by decreasing length: the row swizzle), and `col_idx` / `values` padded to a multiple of 4
/// entries for the 16-byte index loads.
pub struct CsrDev<T> {
    rows: usize,
    cols: usize,
    nnz: usize,
    row_order: CudaSlice<i32>,
    row_ptr: CudaSlice<i32>,
    col_idx: CudaSlice<i32>,
    values: CudaSlice<T>,
}

fn padded(nnz: usize) -> usize {
    nnz.div_ceil(4).max(1) * 4
}

impl<T: Dtype> CsrDev<T> {
    /// Uploads a CSR matrix from its parts, validated: `row_ptr` has `rows + 1` non-decreasing
    /// offsets from 0 to nnz, `col_idx` and `values` have nnz entries, every column is `< cols`,
    /// and every size fits the kernels' i32 indices.
    pub fn from_parts(
        gpu: &Gpu,
        rows: usize,
        cols: usize,
        row_ptr: &[usize],
        col_idx: &[u32],
        values: &[T],
    ) -> Result<Self> {
        const OP: &str = "CsrDev::from_parts";
        if row_ptr.len() != rows + 1 || row_ptr[0] != 0 {
            return Err(shape(
                OP,
                format!(
                    "row_ptr has {} offsets for {rows} rows (need rows + 1, from 0)",
                    row_ptr.len()
                ),
            ));
        }
        let nnz = row_ptr[rows];
        if col_idx.len() != nnz || values.len() != nnz {
            return Err(shape(
                OP,
                format!(
                    "row_ptr ends at {nnz}, {} indices, {} values",
                    col_idx.len(),
                    values.len()
                ),
            ));
        }
        if let Some(i) = (0..rows).find(|&i| row_ptr[i] > row_ptr[i + 1]) {
            return Err(shape(OP, format!("row_ptr decreases at row {i}")));
        }
        if let Some(p) = col_idx.iter().position(|&c| c as usize >= cols) {
            return Err(shape(
                OP,
                format!("entry {p}: column {} >= {cols}", col_idx[p]),
            ));
        }
        i32_arg(OP, "rows", rows)?;
        i32_arg(OP, "cols", cols)?;
        i32_arg(OP, "padded nnz", padded(nnz))?;
        let mut order: Vec<i32> = (0..rows as i32).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(row_ptr[i as usize + 1] - row_ptr[i as usize]));
        let rp: Vec<i32> = row_ptr.iter().map(|&p| p as i32).collect();
        let mut ci: Vec<i32> = col_idx.iter().map(|&c| c as i32).collect();
        ci.resize(padded(nnz), 0);
        let mut v = values.to_vec();
        v.resize(padded(nnz), T::default());
        Ok(CsrDev {
            rows,
            cols,
            nnz,
            row_order: gpu.upload(&order)?,
            row_ptr: gpu.upload(&rp)?,
            col_idx: gpu.upload(&ci)?,
            values: gpu.upload(&v)?,
        })
    }

    /// Replaces the values (same pattern): `values.len() == nnz`.
    pub fn set_values(&mut self, gpu: &Gpu, values: &[T]) -> Result<()> {
        if values.len() != self.nnz {
            return Err(shape(
                "CsrDev::set_values",
                format!("{} values for {} entries", values.len(), self.nnz),
            ));
        }
        let mut v = values.to_vec();
        v.resize(padded(self.nnz), T::default());
        gpu.write(&v, &mut self.values)
    }

    /// The stored values (nnz of them), copied back.
    pub fn download_values(&self, gpu: &Gpu) -> Result<Vec<T>> {
        let mut v = gpu.download(&self.values)?;
        v.truncate(self.nnz);
        Ok(v)
    }
    /// The device buffer of values (padded to a multiple of 4 entries; the first nnz are the matrix).
    pub fn values(&self) -> &CudaSlice<T> {
        &self.values
    }
    /// Mutable device values (for in-place optimizer updates and transpose refreshes).
    pub fn values_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.values
    }
    /// Rows (M).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns (K).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Stored entries.
    pub fn nnz(&self) -> usize {
        self.nnz
    }
    /// Row offsets on the device (i32, rows + 1), e.g. for cuSPARSE.
    pub fn row_ptr(&self) -> &CudaSlice<i32> {
        &self.row_ptr
    }
    /// Column indices on the device (i32, padded).
    pub fn col_idx(&self) -> &CudaSlice<i32> {
        &self.col_idx
    }
}

/// Which `csr_spmm` kernel runs: chosen from N ([`SpmmVariant::Auto`]) or fixed (benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpmmVariant {
    /// Vector loads when N allows them; the smallest subwarp (8, 16, 32 lanes) that covers N.
    Auto,
    /// A fixed kernel: 16-byte vector loads or scalar, and the subwarp width.
    Fixed {
        /// 16-byte loads of X and Y (needs N % 4 == 0 for f32, N % 8 == 0 for bf16).
        vector: bool,
        /// Lanes per row: 8, 16 or 32 (scalar kernels: 8 or 32).
        subwarp: u32,
    },
}

impl SpmmVariant {
    /// Every fixed variant, for benchmarks.
    pub fn all() -> Vec<SpmmVariant> {
        let mut v: Vec<_> = [8, 16, 32]
            .map(|subwarp| SpmmVariant::Fixed {
                vector: true,
                subwarp,
            })
            .into();
        v.extend([8, 32].map(|subwarp| SpmmVariant::Fixed {
            vector: false,
            subwarp,
        }));
        v
    }
    /// Parses "auto", "vec_sw8" / "vec_sw16" / "vec_sw32", "scalar_sw8" / "scalar_sw32".
    pub fn parse(s: &str) -> Option<SpmmVariant> {
        if s == "auto" {
            return Some(SpmmVariant::Auto);
        }
        let (kind, sw) = s.split_once("_sw")?;
        let subwarp: u32 = sw.parse().ok()?;
        let v = SpmmVariant::Fixed {
            vector: kind == "vec",
            subwarp,
        };
        (kind == "vec" || kind == "scalar")
            .then_some(v)
            .filter(|v| SpmmVariant::all().contains(v))
    }
    /// The name [`SpmmVariant::parse`] reads.
    pub fn name(&self) -> String {
        match self {
            SpmmVariant::Auto => "auto".into(),
            SpmmVariant::Fixed { vector, subwarp } => {
                format!("{}_sw{subwarp}", if *vector { "vec" } else { "scalar" })
            }
        }
    }
}

impl SpmmVariant {
    /// The kernel this variant runs for N columns and `vec` elements per vector load:
    /// `(vector loads, subwarp lanes)`. Auto: vector loads when N % vec == 0, and the smallest
    /// subwarp that covers N (scalar kernels exist for 8 and 32 lanes only). Fixed: checked.
    pub fn resolve(self, n: usize, vec: usize) -> Result<(bool, usize)> {
        const OP: &str = "csr_spmm";
        match self {
            SpmmVariant::Auto => {
                let vector = n.is_multiple_of(vec);
                let lanes = n.div_ceil(if vector { vec } else { 1 });
                let sw = match lanes {
                    0..=8 => 8,
                    9..=16 if vector => 16,
                    _ => 32,
                };
                Ok((vector, sw))
            }
            SpmmVariant::Fixed { vector, subwarp } => {
                if !SpmmVariant::all().contains(&self) {
                    return Err(shape(OP, format!("no kernel for variant {}", self.name())));
                }
                if vector && !n.is_multiple_of(vec) {
                    return Err(Error::Alignment {
                        op: OP,
                        detail: format!("vector variant needs N % {vec} == 0, N = {n}"),
                    });
                }
                Ok((vector, subwarp as usize))
            }
        }
    }
}

pub(crate) fn check_aligned<T>(
    gpu: &Gpu,
    op: &'static str,
    what: &str,
    s: &CudaSlice<T>,
) -> Result<()> {
    if !s.is_empty() && !addr(gpu, s).is_multiple_of(16) {
        return Err(Error::Alignment {
            op,
            detail: format!("{what} is not 16-byte aligned"),
        });
    }
    Ok(())
}

/// `y = w x` on the GPU: W (M, K) CSR, X (K, N) and Y (M, N) row-major, f32 or bf16 with f32
/// accumulation (`kernels/csr_spmm.cu`). Y is overwritten (rows without entries become 0).
pub fn csr_spmm<T: Dtype>(
    gpu: &Gpu,
    w: &CsrDev<T>,
    x: &CudaSlice<T>,
    n: usize,
    y: &mut CudaSlice<T>,
    variant: SpmmVariant,
) -> Result<()> {
    const OP: &str = "csr_spmm";
    gpu.require_sm80(OP)?;
    if x.len() != w.cols * n || y.len() != w.rows * n {
        return Err(shape(
            OP,
            format!(
                "W is {}x{}, N = {n}: X has {} elements (need {}), Y has {} (need {})",
                w.rows,
                w.cols,
                x.len(),
                w.cols * n,
                y.len(),
                w.rows * n
            ),
        ));
    }
    if w.rows == 0 || n == 0 {
        return Ok(());
    }
    let (vector, sw) = variant.resolve(n, T::VEC)?;
    check_aligned(gpu, OP, "X", x)?;
    check_aligned(gpu, OP, "Y", y)?;
    let vec = if vector { T::VEC } else { 1 };
    let rows_per_block = 4 * 32 / sw;
    let grid_y = n.div_ceil(sw * vec);
    if grid_y > 65_535 {
        return Err(Error::TooLarge {
            op: OP,
            detail: format!("N = {n} ({grid_y} column tiles)"),
        });
    }
    let cfg = LaunchConfig {
        grid_dim: (
            i32_arg(OP, "row blocks", w.rows.div_ceil(rows_per_block))? as u32,
            grid_y as u32,
            1,
        ),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let name: &'static str = kernel_name(&format!("csr_spmm_{}_v{vec}_sw{sw}", T::NAME))?;
    let f = gpu.function(KernelInfo {
        module: "csr_spmm",
        name,
    })?;
    let (m, n32) = (i32_arg(OP, "M", w.rows)?, i32_arg(OP, "N", n)?);
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(&m)
        .arg(&n32)
        .arg(&w.row_order)
        .arg(&w.row_ptr)
        .arg(&w.col_idx)
        .arg(&w.values)
        .arg(x)
        .arg(y);
    // SAFETY: csr_spmm_<dtype>_v<VEC>_sw<SW>(int m, int n, const int* row_order, const int* row_ptr,
    // const int* col_idx, const T* values, const T* x, T* y): the arguments match in order and type;
    // row_order/row_ptr have M and M+1 entries, col_idx/values round_up(nnz, 4) (CsrDev::from_parts),
    // X is K*N and Y M*N elements (checked above), every index < K (validated), N % VEC == 0 for the
    // vector kernels (checked), buffers 16-byte aligned (checked).
    unsafe { b.launch(cfg) }?;
    Ok(())
}

/// `out[p] = A[i, :] . B[j, :]` for every stored entry p = (i, j) of `pattern` (its values are not
/// read): A (M, D), B (K, D) row-major f32 or bf16, out f32 with at least nnz entries
/// (`kernels/csr_sddmm.cu`).
pub fn csr_sddmm<T: Dtype, U>(
    gpu: &Gpu,
    pattern: &CsrDev<U>,
    a: &CudaSlice<T>,
    b: &CudaSlice<T>,
    d: usize,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "csr_sddmm";
    gpu.require_sm80(OP)?;
    if a.len() != pattern.rows * d || b.len() != pattern.cols * d || out.len() < pattern.nnz {
        return Err(shape(
            OP,
            format!(
                "pattern {}x{} ({} entries), D = {d}: A has {} elements, B {}, out {}",
                pattern.rows,
                pattern.cols,
                pattern.nnz,
                a.len(),
                b.len(),
                out.len()
            ),
        ));
    }
    if pattern.rows == 0 || pattern.nnz == 0 {
        return Ok(());
    }
    check_aligned(gpu, OP, "A", a)?;
    check_aligned(gpu, OP, "B", b)?;
    let vec = if d.is_multiple_of(T::VEC) { T::VEC } else { 1 };
    let name = kernel_name(&format!("csr_sddmm_{}_v{vec}", T::NAME))?;
    let f = gpu.function(KernelInfo {
        module: "csr_sddmm",
        name,
    })?;
    let cfg = LaunchConfig {
        grid_dim: (
            i32_arg(OP, "row blocks", pattern.rows.div_ceil(4))? as u32,
            1,
            1,
        ),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let (m, d32) = (i32_arg(OP, "M", pattern.rows)?, i32_arg(OP, "D", d)?);
    let mut l = gpu.stream().launch_builder(&f);
    l.arg(&m)
        .arg(&d32)
        .arg(&pattern.row_order)
        .arg(&pattern.row_ptr)
        .arg(&pattern.col_idx)
        .arg(a)
        .arg(b)
        .arg(out);
    // SAFETY: csr_sddmm_<dtype>_v<VEC>(int m, int d, const int* row_order, const int* row_ptr,
    // const int* col_idx, const T* a, const T* b, float* out): arguments in order; A is M*D, B K*D,
    // out >= nnz elements (checked); column indices < K (validated at upload); D % VEC == 0 for v > 1.
    unsafe { l.launch(cfg) }?;
    Ok(())
}

/// A validated gather map on the device: `perm[i] < src_len` for every i.
pub struct PermDev {
    perm: CudaSlice<i32>,
    src_len: usize,
}

impl PermDev {
    /// Uploads `perm` after checking every entry indexes a source of `src_len` elements.
    pub fn new(gpu: &Gpu, perm: &[u32], src_len: usize) -> Result<PermDev> {
        const OP: &str = "PermDev::new";
        if let Some(p) = perm.iter().position(|&i| i as usize >= src_len) {
            return Err(shape(
                OP,
                format!("perm[{p}] = {} >= source length {src_len}", perm[p]),
            ));
        }
        i32_arg(OP, "source length", src_len)?;
        let v: Vec<i32> = perm.iter().map(|&i| i as i32).collect();
        Ok(PermDev {
            perm: gpu.upload(&v)?,
            src_len,
        })
    }
    /// Entries of the map (= destination length).
    pub fn len(&self) -> usize {
        self.perm.len()
    }
    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.perm.len() == 0
    }
}

/// `dst[i] = src[perm[i]]` (`gather_f32` of `kernels/elementwise.cu`): refreshes a CSR transpose's
/// values from the source's in O(nnz) (perm from lopper-sparse's `CsrTranspose`).
pub fn gather_f32(
    gpu: &Gpu,
    perm: &PermDev,
    src: &CudaSlice<f32>,
    dst: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "gather_f32";
    gpu.require_sm80(OP)?;
    let n = perm.len();
    if src.len() < perm.src_len || dst.len() < n {
        return Err(shape(
            OP,
            format!(
                "map of {n} from {}: src {}, dst {}",
                perm.src_len,
                src.len(),
                dst.len()
            ),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(KernelInfo {
        module: "elementwise",
        name: "gather_f32",
    })?;
    let n64 = n as i64;
    let cfg = grid_stride(gpu, n)?;
    let mut l = gpu.stream().launch_builder(&f);
    l.arg(&n64).arg(&perm.perm).arg(src).arg(dst);
    // SAFETY: gather_f32(long long n, const int* perm, const float* src, float* dst): perm and dst
    // hold at least n elements, and every perm[i] < src_len <= src.len() (PermDev::new, checked).
    unsafe { l.launch(cfg) }?;
    Ok(())
}

/// Launch shape of the grid-stride kernels: 256 threads, up to 8 blocks per multiprocessor.
pub(crate) fn grid_stride(gpu: &Gpu, n: usize) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(256).clamp(1, 8 * gpu.sm_count()?.max(1));
    Ok(LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Interns a kernel name (the registry keys on `&'static str`; names come from a fixed set).
pub(crate) fn kernel_name(s: &str) -> Result<&'static str> {
    static NAMES: std::sync::OnceLock<std::sync::Mutex<Vec<&'static str>>> =
        std::sync::OnceLock::new();
    let mut v = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = v.iter().find(|n| **n == s) {
        return Ok(n);
    }
    if v.len() > 256 {
        return Err(Error::MissingKernel(s.to_string()));
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    v.push(leaked);
    Ok(leaked)
}

#[cfg(test)]
mod tests {
    use super::SpmmVariant;

    #[test]
    fn variants_parse_and_resolve() {
        for v in SpmmVariant::all().into_iter().chain([SpmmVariant::Auto]) {
            assert_eq!(SpmmVariant::parse(&v.name()), Some(v));
        }
        assert_eq!(SpmmVariant::parse("scalar_sw16"), None); // no such kernel
        assert_eq!(SpmmVariant::parse("vec_sw7"), None);
        assert_eq!(SpmmVariant::Auto.resolve(512, 4).unwrap(), (true, 32));
        assert_eq!(SpmmVariant::Auto.resolve(32, 4).unwrap(), (true, 8));
        assert_eq!(SpmmVariant::Auto.resolve(64, 4).unwrap(), (true, 16));
        assert_eq!(SpmmVariant::Auto.resolve(12, 8).unwrap(), (false, 32));
        assert_eq!(SpmmVariant::Auto.resolve(5, 4).unwrap(), (false, 8));
        let vec32 = SpmmVariant::Fixed {
            vector: true,
            subwarp: 32,
        };
        assert!(
            vec32
                .resolve(6, 4)
                .unwrap_err()
                .to_string()
                .contains("alignment")
        );
        let bad = SpmmVariant::Fixed {
            vector: false,
            subwarp: 16,
        };
        assert!(bad.resolve(6, 4).is_err());
    }
}
