//! 2:4 on the device and the launchers of `kernels/sparse24_compress.cu` and
//! `kernels/sparse24_spmm.cu`. The device layout is the mma.sp m16n8k32 fragment layout of
//! `kernels/sparse24.cuh`, which lopper-sparse's `Sparse24Fragments` builds and documents on the CPU.
use crate::csr::check_aligned;
use crate::device::{Gpu, KernelInfo};
use crate::error::{Error, Result, i32_arg, shape};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use half::bf16;

/// A 2:4 matrix (M, K) on the device in the fragment layout: `vals` holds `ceil(M/16) * ceil(K/32)`
/// tiles of 32 lanes x 4 words (two bf16 per word), `meta` 16 words per tile.
pub struct Sparse24Dev {
    rows: usize,
    cols: usize,
    vals: CudaSlice<u32>,
    meta: CudaSlice<u32>,
}

/// `(value words, metadata words)` of the fragment layout of a (rows, cols) matrix.
pub fn fragment_words(rows: usize, cols: usize) -> (usize, usize) {
    let tiles = rows.div_ceil(16) * cols.div_ceil(32);
    (tiles * 128, tiles * 16)
}

impl Sparse24Dev {
    /// Uploads a matrix already in the fragment layout (from lopper-sparse's `Sparse24Fragments`),
    /// checking the lengths, `cols % 4 == 0`, and that every metadata code names two increasing
    /// positions (what `mma.sp::ordered_metadata` requires).
    pub fn from_fragments(
        gpu: &Gpu,
        rows: usize,
        cols: usize,
        vals: &[u32],
        meta: &[u32],
    ) -> Result<Self> {
        const OP: &str = "Sparse24Dev::from_fragments";
        if !cols.is_multiple_of(4) {
            return Err(shape(OP, format!("K = {cols} is not a multiple of 4")));
        }
        let (nv, nm) = fragment_words(rows, cols);
        if vals.len() != nv || meta.len() != nm {
            return Err(shape(
                OP,
                format!(
                    "{rows}x{cols} needs {nv} value and {nm} metadata words, got {} and {}",
                    vals.len(),
                    meta.len()
                ),
            ));
        }
        for (w, word) in meta.iter().enumerate() {
            for c in 0..8 {
                let code = (word >> (4 * c)) & 0xf;
                if code & 3 >= code >> 2 {
                    return Err(shape(
                        OP,
                        format!(
                            "metadata word {w}, code {c}: {code:#06b} is not two increasing positions"
                        ),
                    ));
                }
            }
        }
        i32_arg(OP, "rows", rows)?;
        i32_arg(OP, "cols", cols)?;
        Ok(Sparse24Dev {
            rows,
            cols,
            vals: gpu.upload(vals)?,
            meta: gpu.upload(meta)?,
        })
    }
    /// Copies the layout back: `(value words, metadata words)`.
    pub fn download(&self, gpu: &Gpu) -> Result<(Vec<u32>, Vec<u32>)> {
        Ok((gpu.download(&self.vals)?, gpu.download(&self.meta)?))
    }
    /// Rows (M).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Logical columns (K).
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// 2:4 magnitude pruning and compression of a dense bf16 (M, K) row-major matrix, K % 4 == 0,
/// straight into the fragment layout (`kernels/sparse24_compress.cu`).
pub fn sparse24_compress(
    gpu: &Gpu,
    w: &CudaSlice<bf16>,
    rows: usize,
    cols: usize,
) -> Result<Sparse24Dev> {
    const OP: &str = "sparse24_compress";
    gpu.require_sm80(OP)?;
    if !cols.is_multiple_of(4) {
        return Err(shape(OP, format!("K = {cols} is not a multiple of 4")));
    }
    if w.len() != rows * cols {
        return Err(shape(OP, format!("{} elements for {rows}x{cols}", w.len())));
    }
    let (m, k) = (i32_arg(OP, "M", rows)?, i32_arg(OP, "K", cols)?);
    let (nv, nm) = fragment_words(rows, cols);
    let mut vals = gpu.zeros::<u32>(nv)?;
    let mut meta = gpu.zeros::<u32>(nm)?;
    let tiles = nm / 16;
    if tiles > 0 {
        check_aligned(gpu, OP, "W", w)?;
        let f = gpu.function(KernelInfo {
            module: "sparse24_compress",
            name: "sparse24_compress_bf16",
        })?;
        let cfg = LaunchConfig {
            grid_dim: (i32_arg(OP, "tile blocks", tiles.div_ceil(4))? as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = gpu.stream().launch_builder(&f);
        l.arg(&m).arg(&k).arg(w).arg(&mut vals).arg(&mut meta);
        // SAFETY: sparse24_compress_bf16(int m, int k, const __nv_bfloat16* w, uint4* vals,
        // uint32_t* meta): W holds M*K bf16 with K % 4 == 0 (checked: the 8-byte group loads stay
        // in rows), vals and meta were allocated with fragment_words(M, K) (tiles*32 uint4 and
        // tiles*16 words), and the grid covers ceil(tiles/4) blocks of 4 tile-warps.
        unsafe { l.launch(cfg) }?;
    }
    Ok(Sparse24Dev {
        rows,
        cols,
        vals,
        meta,
    })
}

/// One tile configuration of `kernels/sparse24_spmm.cu`: the instruction (`mma.sp`, sm_80 and up,
/// or Hopper's `wgmma.mma_async.sp`, sm_90a only), block columns, K per pipeline stage, stages.
/// The list [`Spmm24Tile::ALL`] and the stage size must match the `.cu` file: the kernel traps when
/// it gets less dynamic shared memory than it needs (a GPU test runs every entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spmm24Tile {
    /// `wgmma.mma_async.sp` (sm_90a) instead of `mma.sp`.
    pub wgmma: bool,
    /// Block tile columns (N): 128 or 256 (`mma.sp`), 128 (`wgmma`).
    pub bn: u32,
    /// K per pipeline stage (logical columns of W): a multiple of 32.
    pub bk: u32,
    /// cp.async pipeline depth.
    pub stages: u32,
}

impl Spmm24Tile {
    /// Every compiled configuration, in the order of the `.cu` file.
    pub const ALL: [Spmm24Tile; 8] = [
        Spmm24Tile::mma(128, 32, 3),
        Spmm24Tile::mma(128, 64, 3),
        Spmm24Tile::mma(128, 64, 4),
        Spmm24Tile::mma(128, 128, 3),
        Spmm24Tile::mma(256, 32, 4),
        Spmm24Tile::mma(256, 64, 3),
        Spmm24Tile::wgmma(128, 64, 3),
        Spmm24Tile::wgmma(128, 64, 4),
    ];
    /// The configuration [`sparse24_spmm`] uses on every device: the fastest measured on the H200
    /// (2026-11-30; the `wgmma` tiles were slower there, docs/benchmarks.md).
    pub const DEFAULT: Spmm24Tile = Spmm24Tile::mma(128, 64, 3);
    /// Rows of W per block (fixed by the kernels: 8 warps of 16 rows each).
    pub const BM: usize = 128;

    const fn mma(bn: u32, bk: u32, stages: u32) -> Spmm24Tile {
        Spmm24Tile {
            wgmma: false,
            bn,
            bk,
            stages,
        }
    }
    const fn wgmma(bn: u32, bk: u32, stages: u32) -> Spmm24Tile {
        Spmm24Tile {
            wgmma: true,
            bn,
            bk,
            stages,
        }
    }
    /// The `extern "C"` name suffix and the name [`Spmm24Tile::parse`] reads: `n128_k64_s3` for
    /// `mma.sp`, `w128_k64_s3` for `wgmma`.
    pub fn name(&self) -> String {
        let kind = if self.wgmma { "w" } else { "n" };
        format!("{kind}{}_k{}_s{}", self.bn, self.bk, self.stages)
    }
    /// Parses a name of [`Spmm24Tile::name`]; only compiled configurations.
    pub fn parse(s: &str) -> Option<Spmm24Tile> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
    /// Whether the device can run it: `mma.sp` tiles from sm_80, `wgmma` tiles on sm_90 only (their
    /// machine code is sm_90a, which later architectures do not run).
    pub fn runs_on(&self, gpu: &Gpu) -> bool {
        let cc = gpu.compute_capability();
        if self.wgmma { cc == (9, 0) } else { cc.0 >= 8 }
    }
    /// Dynamic shared memory of one block, as the kernel's `Tile<BN, BK, STAGES, WG>` computes it:
    /// per stage 8 A tiles x BK/32 x 512 bytes, their metadata (64 bytes each), and BK rows of X
    /// of BN + 8 bf16 (`mma.sp`: padded rows) or BN bf16 (`wgmma`: core matrices).
    pub fn smem_bytes(&self) -> usize {
        let (bn, bk) = (self.bn as usize, self.bk as usize);
        let kt = bk / 32;
        let a = 8 * kt * 32 * 16;
        let meta = 8 * kt * 16 * 4;
        let b = bk * (if self.wgmma { bn } else { bn + 8 }) * 2;
        self.stages as usize * (a + meta + b)
    }
}

/// `y = w x` with W (M, K) 2:4 in the fragment layout, X (K, N) and Y (M, N) bf16 row-major,
/// f32 accumulation, tensor cores (`mma.sp`, `kernels/sparse24_spmm.cu`), tile configuration
/// [`Spmm24Tile::DEFAULT`]. Needs N % 8 == 0.
pub fn sparse24_spmm(
    gpu: &Gpu,
    w: &Sparse24Dev,
    x: &CudaSlice<bf16>,
    n: usize,
    y: &mut CudaSlice<bf16>,
) -> Result<()> {
    sparse24_spmm_with(gpu, w, x, n, y, Spmm24Tile::DEFAULT)
}

/// [`sparse24_spmm`] with an explicit tile configuration (benchmarks and tests).
pub fn sparse24_spmm_with(
    gpu: &Gpu,
    w: &Sparse24Dev,
    x: &CudaSlice<bf16>,
    n: usize,
    y: &mut CudaSlice<bf16>,
    tile: Spmm24Tile,
) -> Result<()> {
    const OP: &str = "sparse24_spmm";
    gpu.require_sm80(OP)?;
    if !Spmm24Tile::ALL.contains(&tile) {
        return Err(shape(OP, format!("no kernel for tile {}", tile.name())));
    }
    if !tile.runs_on(gpu) {
        let (a, b) = gpu.compute_capability();
        return Err(Error::Arch {
            op: OP,
            need: format!("9.0 exactly for the wgmma tile {}", tile.name()),
            have: format!("{a}.{b}"),
        });
    }
    if x.len() != w.cols * n || y.len() != w.rows * n {
        return Err(shape(
            OP,
            format!(
                "W is {}x{}, N = {n}: X has {} elements (need {}), Y {} (need {})",
                w.rows,
                w.cols,
                x.len(),
                w.cols * n,
                y.len(),
                w.rows * n
            ),
        ));
    }
    if !n.is_multiple_of(8) {
        return Err(Error::Alignment {
            op: OP,
            detail: format!("N = {n} is not a multiple of 8 (16-byte rows of X and Y)"),
        });
    }
    if w.rows == 0 || n == 0 {
        return Ok(());
    }
    check_aligned(gpu, OP, "X", x)?;
    check_aligned(gpu, OP, "Y", y)?;
    let grid_y = w.rows.div_ceil(Spmm24Tile::BM);
    if grid_y > 65_535 {
        return Err(Error::TooLarge {
            op: OP,
            detail: format!("M = {}", w.rows),
        });
    }
    let (m, k, n32) = (
        i32_arg(OP, "M", w.rows)?,
        i32_arg(OP, "K", w.cols)?,
        i32_arg(OP, "N", n)?,
    );
    let name = crate::csr::kernel_name(&format!("sparse24_spmm_bf16_{}", tile.name()))?;
    let f = gpu.function(KernelInfo {
        module: "sparse24_spmm",
        name,
    })?;
    let smem = tile.smem_bytes();
    if smem > 48 * 1024 {
        use cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        f.set_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
            .map_err(|e| Error::TooLarge {
                op: OP,
                detail: format!(
                    "tile {} needs {smem} bytes of shared memory per block: {e}",
                    tile.name()
                ),
            })?;
    }
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(tile.bn as usize) as u32, grid_y as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let mut l = gpu.stream().launch_builder(&f);
    l.arg(&m)
        .arg(&k)
        .arg(&n32)
        .arg(&w.vals)
        .arg(&w.meta)
        .arg(x)
        .arg(y);
    // SAFETY: sparse24_spmm_bf16_n<BN>_k<BK>_s<S>(int m, int k, int n, const uint4* vals,
    // const uint32_t* meta, const __nv_bfloat16* x, __nv_bfloat16* y): vals/meta hold the fragment
    // layout of an MxK matrix (lengths checked by Sparse24Dev's constructors; the kernel reads tiles
    // < ceil(M/16) x ceil(K/32) only), X is K*N and Y M*N elements with N % 8 == 0 (checked),
    // 16-byte aligned (checked); the dynamic shared memory is the tile's size (the kernel traps on
    // less).
    unsafe { l.launch(cfg) }?;
    Ok(())
}
