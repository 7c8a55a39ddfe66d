//! The parallel task grid shared by the kernels: row chunks balanced by cost x column blocks.
use crate::Result;
use crate::error::shape_err;
use lopper_tensor::{MatMut, MatRef, Par};
use std::ops::Range;

/// Checks the shapes of `Y (M, N) = W (M, K) X (K, N)` for `op`; `w` is `(M, K)`.
pub(crate) fn check_mm(
    op: &'static str,
    w: (usize, usize),
    x: &MatRef<'_>,
    y: &MatMut<'_>,
) -> Result<()> {
    if x.rows() != w.1 || y.rows() != w.0 || y.cols() != x.cols() {
        return Err(shape_err(
            op,
            format!(
                "W is {}x{}, X is {}x{}, Y is {}x{}",
                w.0,
                w.1,
                x.rows(),
                x.cols(),
                y.rows(),
                y.cols()
            ),
        ));
    }
    Ok(())
}

/// A raw pointer that tasks writing disjoint regions may share.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
impl SyncPtr {
    /// The pointer `n` elements further on.
    /// SAFETY: as `pointer::add`: the result stays inside the allocation this points into.
    pub(crate) unsafe fn add(self, n: usize) -> SyncPtr {
        // SAFETY: the caller's contract.
        SyncPtr(unsafe { self.0.add(n) })
    }
}

// SAFETY: every user writes through it only to regions no other task touches (documented at use).
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

/// Splits `0..rows` into at most `parts` contiguous chunks of about equal cost, where row `i` costs
/// `row_cost(i)`. Empty chunks are dropped.
pub(crate) fn balanced_rows(
    rows: usize,
    parts: usize,
    row_cost: impl Fn(usize) -> usize,
) -> Vec<Range<usize>> {
    // u128: no product below overflows, whatever `parts` (a thread count from the caller's Par)
    let total: u128 = (0..rows).map(|i| row_cost(i) as u128).sum();
    let parts = parts.clamp(1, rows.max(1));
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    let mut acc = 0u128;
    let mut k = 1;
    for i in 0..rows {
        acc += row_cost(i) as u128;
        // close the chunk when it reaches its share of the total
        if k < parts && acc * parts as u128 >= total * k as u128 {
            out.push(start..i + 1);
            start = i + 1;
            k += 1;
        }
    }
    if start < rows {
        out.push(start..rows);
    }
    out.retain(|r| !r.is_empty());
    out
}

/// Bytes of X's slab (K rows x block columns) that a task should keep in its core's L2:
/// [`slab_bytes_for_l2`] of this machine's L2 (read once from sysfs), 256 KiB where unknown.
fn l2_slab_bytes() -> usize {
    l2_bytes().map_or(256 << 10, slab_bytes_for_l2)
}

/// This machine's L2 per core in bytes, read once from sysfs; `None` where unknown.
pub(crate) fn l2_bytes() -> Option<usize> {
    static BYTES: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size")
            .ok()
            .and_then(|s| parse_cache_size(&s))
    })
}

/// A sysfs cache size ("2048K", "1M", "524288") in bytes.
fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .ok()?
        .checked_mul(mult)
        .filter(|&b| b > 0)
}

/// The slab budget for an L2 of `l2` bytes, from the two development machines measured:
/// - 1 MiB (Cascade Lake): a quarter, 256 KiB (1 MiB slabs were slower);
/// - 2 MiB (the Xeon with AMX, 2026-11-30): half, 1 MiB: `bench spmm` over the transformer
///   matrices at N = 512, 2.47-2.59x dense on geometric mean, against 2.29-2.38x with 256 KiB,
///   2.30-2.34x with 512 KiB and 2.21-2.22x with 2 MiB (docs/benchmarks.md).
///
/// Smaller caches get a quarter too (at least 64 KiB), larger ones half.
fn slab_bytes_for_l2(l2: usize) -> usize {
    if l2 >= 2 << 20 {
        l2 / 2
    } else {
        (l2 / 4).max(64 << 10)
    }
}

/// Columns of Y per task for a dense operand of `k` rows and `n` columns: the widest multiple of 64
/// (at most 512) whose slab fits [`l2_slab_bytes`], and at least 64. An operand at most 128 wide
/// whose whole slab fits twice that (a panel, e.g. (1024, 128): 512 KiB) is one block: read in place,
/// its full 128-wide tiles run at about 1.3x the 64-wide ones that a split would leave.
pub(crate) fn col_block(k: usize, n: usize) -> usize {
    col_block_for(k, n, l2_slab_bytes())
}

/// spmm_24's slab budget, whatever the L2: its 4-row x 64-column tiles read the slab at twice
/// spmm's rate per row, and on the 2 MiB-L2 machine the L2-derived 1 MiB slab made it slower
/// (3072 x 768 x 512: 0.94-0.98x dense against 1.11-1.15x with 256 KiB, 2026-11-30).
pub(crate) const SPMM24_SLAB_BYTES: usize = 256 << 10;

/// [`col_block`] for a given slab budget.
pub(crate) fn col_block_for(k: usize, n: usize, slab: usize) -> usize {
    if n <= 128 && 4 * k * n <= 2 * slab {
        return n.max(1);
    }
    (slab / (4 * k.max(1)) / 64 * 64).clamp(64, 512)
}

/// Column blocks of `n` of width `block`; the last may be narrower, and one narrower than 16 joins
/// the block before it (a slab of under 16 columns runs the kernels' single-column tiles: spmm_24
/// at N = 200 in blocks of 64 spent half its time on the last 8 columns).
pub(crate) fn col_blocks(n: usize, block: usize) -> Vec<Range<usize>> {
    let mut blocks: Vec<Range<usize>> = (0..n.div_ceil(block))
        .map(|b| b * block..((b + 1) * block).min(n))
        .collect();
    if blocks.len() > 1 && blocks.last().is_some_and(|b| b.len() < 16) {
        let last = blocks.pop().map_or(n, |b| b.end);
        if let Some(prev) = blocks.last_mut() {
            prev.end = last;
        }
    }
    blocks
}

/// Below this many multiply-adds a product runs on the calling thread alone: waking rayon's workers
/// costs more than the second thread saves. On the 2-core Xeon of 2026-11-30 (`lopper bench spmm
/// --matrix F --n N --threads 1|2`, DLMC layers at 98%), one thread against two: 0.010 against
/// 0.017 ms at 0.12 M multiply-adds, 0.017 against 0.020 at 0.34 M, 0.037 against 0.046 at 0.50 M;
/// two threads won from 0.6-0.7 M on (0.026 against 0.022 ms at 0.67 M).
pub(crate) const SEQ_MACS: usize = 1 << 19;

/// [`Par::Seq`] for a product of fewer than [`SEQ_MACS`] multiply-adds under `Par::Rayon(0)` (the
/// current pool, as many threads as pay); `par` otherwise: an explicit thread count is run as given
/// (the tests rely on it to run the parallel grid on small shapes).
pub(crate) fn par_for_work(par: Par, macs: usize) -> Par {
    match par {
        Par::Rayon(0) if macs < SEQ_MACS => Par::Seq,
        _ => par,
    }
}

/// Runs `task(rows, cols)` over the grid of row chunks x column blocks with the given parallelism.
/// Column blocks are the outer index so that a thread's consecutive tasks share their column block
/// (the dense operand's slab stays in that core's cache).
pub(crate) fn run_grid(
    par: Par,
    row_chunks: &[Range<usize>],
    col_blocks: &[Range<usize>],
    task: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    let tasks: Vec<(Range<usize>, Range<usize>)> = col_blocks
        .iter()
        .flat_map(|c| row_chunks.iter().map(move |r| (r.clone(), c.clone())))
        .collect();
    if par.threads() <= 1 || tasks.len() <= 1 {
        for (r, c) in tasks {
            task(r, c);
        }
        return;
    }
    use rayon::prelude::*;
    in_pool(par, || tasks.into_par_iter().for_each(|(r, c)| task(r, c)));
}

/// Runs `run` (rayon work) in the pool `par` names: an explicit `Par::Rayon(n)` other than the
/// current pool's size runs in a kept pool of n threads, anything else in the current pool.
pub(crate) fn in_pool(par: Par, run: impl FnOnce() + Send) {
    match par {
        Par::Rayon(n) if n > 0 && n != rayon::current_num_threads() => match pool(n) {
            Some(p) => p.install(run),
            None => run(),
        },
        _ => run(),
    }
}

/// A rayon pool of `n` threads, built once per size and kept (building one per call would spawn
/// threads on every kernel launch).
fn pool(n: usize) -> Option<std::sync::Arc<rayon::ThreadPool>> {
    use std::sync::{Arc, Mutex, OnceLock};
    type Pools = Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>>;
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let mut pools = POOLS.get_or_init(|| Mutex::new(Vec::new())).lock().ok()?;
    if let Some((_, p)) = pools.iter().find(|(k, _)| *k == n) {
        return Some(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .ok()?,
    );
    pools.push((n, p.clone()));
    Some(p)
}

/// Row chunks for a grid: about `4 * threads` chunks when there is one column block, fewer when the
/// column blocks already give each thread several tasks.
pub(crate) fn chunks_for(
    rows: usize,
    threads: usize,
    n_col_blocks: usize,
    row_cost: impl Fn(usize) -> usize,
) -> Vec<Range<usize>> {
    if threads <= 1 {
        return if rows == 0 { vec![] } else { vec![0..rows] };
    }
    let want = threads
        .saturating_mul(4)
        .div_ceil(n_col_blocks.max(1))
        .max(threads)
        .min(rows.max(1));
    balanced_rows(rows, want, row_cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_rows_cover_and_balance() {
        // one heavy row of 10x the mean must not leave the others idle
        let cost = |i: usize| if i == 3 { 1000 } else { 100 };
        let ch = balanced_rows(40, 4, cost);
        assert_eq!(ch.first().unwrap().start, 0);
        assert_eq!(ch.last().unwrap().end, 40);
        for w in ch.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        let loads: Vec<usize> = ch.iter().map(|r| r.clone().map(cost).sum()).collect();
        let max = *loads.iter().max().unwrap();
        assert!(max <= 1400, "{loads:?}");
        assert!(balanced_rows(0, 4, cost).is_empty());
        // a thread count far above the rows (Par::Rayon(usize::MAX)): one row per chunk, no
        // overflow and no huge allocation
        assert_eq!(balanced_rows(3, usize::MAX, cost), vec![0..1, 1..2, 2..3]);
        assert_eq!(chunks_for(3, usize::MAX, 1, cost), vec![0..1, 1..2, 2..3]);
        assert_eq!(col_blocks(130, 64), vec![0..64, 64..130]);
        assert_eq!(col_blocks(144, 64), vec![0..64, 64..128, 128..144]);
        assert_eq!(col_blocks(8, 64), vec![0..8]);
        // with a 256 KiB slab: a panel up to 128 wide within 512 KiB is one block; wider or larger
        // operands are split
        let kib = 1 << 10;
        assert_eq!(col_block_for(1024, 128, 256 * kib), 128);
        assert_eq!(col_block_for(1024, 100, 256 * kib), 100);
        assert_eq!(col_block_for(2048, 128, 256 * kib), 64);
        assert_eq!(col_block_for(1024, 512, 256 * kib), 64);
        assert_eq!(col_block_for(256, 512, 256 * kib), 256);
        // with 1 MiB: wider blocks, at most 512
        assert_eq!(col_block_for(2048, 128, 1024 * kib), 128);
        assert_eq!(col_block_for(512, 512, 1024 * kib), 512);
        assert_eq!(col_block_for(2048, 512, 1024 * kib), 128);
        assert_eq!(col_block_for(8192, 512, 1024 * kib), 64);
        // whatever this machine's L2, a block is a positive multiple of 64 up to 512 or all of N
        for (k, n) in [(1, 1), (512, 512), (2048, 300), (100_000, 4096)] {
            let b = col_block(k, n);
            assert!(
                b == n || (b.is_multiple_of(64) && (64..=512).contains(&b)),
                "{k} {n}: {b}"
            );
        }
    }

    #[test]
    fn small_products_run_on_the_calling_thread_only_when_the_pool_is_implicit() {
        assert_eq!(par_for_work(Par::Rayon(0), SEQ_MACS - 1), Par::Seq);
        assert_eq!(par_for_work(Par::Rayon(0), SEQ_MACS), Par::Rayon(0));
        // an explicit count is run as given, however small the product
        assert_eq!(par_for_work(Par::Rayon(2), 1), Par::Rayon(2));
        assert_eq!(par_for_work(Par::Seq, usize::MAX), Par::Seq);
    }

    #[test]
    fn cache_sizes_and_slab_budgets() {
        assert_eq!(parse_cache_size("2048K\n"), Some(2 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("524288"), Some(512 << 10));
        for bad in ["", "K", "12Q", "-1K", "0K", "99999999999999999999K"] {
            assert_eq!(parse_cache_size(bad), None, "{bad:?}");
        }
        assert_eq!(slab_bytes_for_l2(1 << 20), 256 << 10); // Cascade Lake
        assert_eq!(slab_bytes_for_l2(2 << 20), 1 << 20); // the 2 MiB L2 of 2026-11-30
        assert_eq!(slab_bytes_for_l2(128 << 10), 64 << 10);
        assert!(l2_slab_bytes() >= 64 << 10);
    }
}

/// A slab kept by one thread: its buffer, the offset of its 64-byte aligned start, and which call
/// and columns it holds.
#[derive(Default)]
struct Slab {
    buf: Vec<f32>,
    pad: usize,
    tag: Option<(u64, usize, usize)>,
}

thread_local! {
    static PACK: std::cell::RefCell<Slab> = std::cell::RefCell::new(Slab::default());
}

/// A key unique to one kernel call, for [`with_packed`]: a thread whose previous task of the same
/// call packed the same columns reuses that slab instead of copying it again.
pub(crate) fn call_key() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Columns from the start of a slab with row stride `sw` to the first column whose elements start
/// a cache line in every row (0 to 15); 0 when rows are not a whole number of lines long.
pub(crate) fn line_shift(slab: &[f32], sw: usize) -> usize {
    if sw.is_multiple_of(16) {
        (slab.as_ptr() as usize / 4).wrapping_neg() % 16
    } else {
        0
    }
}

/// Runs `f` on a contiguous copy of `X[:, c0..c1]` (K rows, row stride `c1 - c0`), kept in a reused
/// per-thread buffer that starts on a 64-byte boundary (no 16-lane load straddles two cache lines).
/// Reading the task's slab from one contiguous block avoids the cache-set conflicts of X's own row
/// stride (a power of two such as 4 KiB maps K rows onto a few sets of L1 and L2).
/// - When the block is all of X's columns and X starts on a 64-byte boundary, X already is that slab
///   and `f` reads it in place (no copy). With `any_line_offset`, for a kernel that starts its
///   column tiles on the slab's cache lines itself ([`line_shift`]), X is read in place at any
///   alignment when its rows are whole cache lines (`n` a multiple of 16): every row then starts at
///   the same offset within a line.
/// - With `used` (K flags), only the rows flagged are read from X; the others are zeros in the slab
///   (a sparse W whose columns skip rows of X: X is not read where W does not read it).
/// - `key` is the call's [`call_key`]: consecutive tasks of one call on one thread that read the same
///   columns copy them once (X cannot change during a call).
#[allow(clippy::too_many_arguments)]
pub(crate) fn with_packed<R>(
    x: &[f32],
    k: usize,
    n: usize,
    c0: usize,
    c1: usize,
    key: u64,
    any_line_offset: bool,
    used: Option<&[bool]>,
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    let w = c1 - c0;
    let in_place =
        (x.as_ptr() as usize).is_multiple_of(64) || (any_line_offset && n.is_multiple_of(16));
    if c0 == 0 && c1 == n && in_place {
        return f(&x[..k * n]);
    }
    PACK.with(|cell| {
        let mut slab = cell.borrow_mut();
        if slab.tag != Some((key, c0, c1)) {
            let buf = &mut slab.buf;
            buf.clear();
            buf.reserve(k * w + 16);
            let pad = (16 - (buf.as_ptr() as usize / 4) % 16) % 16;
            buf.resize(pad, 0.0);
            match used {
                None => {
                    for j in 0..k {
                        buf.extend_from_slice(&x[j * n + c0..j * n + c1]);
                    }
                }
                // rows W does not read stay zero (never read)
                Some(u) => {
                    for j in 0..k {
                        if u[j] {
                            buf.extend_from_slice(&x[j * n + c0..j * n + c1]);
                        } else {
                            buf.resize(buf.len() + w, 0.0);
                        }
                    }
                }
            }
            slab.pad = pad;
            slab.tag = Some((key, c0, c1));
        }
        f(&slab.buf[slab.pad..slab.pad + k * w])
    })
}
