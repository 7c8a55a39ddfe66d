//! spmm by outer products per block of rows: Y's tile in L1, each row of X in registers once per
//! block.
//!
//! Shapes: W (M, K) CSR, X (K, N), Y (M, N). For each block of [`CB`] rows of W, the block's
//! entries are ordered by column (`Outer`, built once per pattern). For each column j with entries
//! in the block, `X[j, c..c+T]` is loaded into registers once and every entry (r, j, w) of the
//! block adds `w * X[j]` into row r of a (CB, T) tile in L1: per entry one broadcast, T/16 loads
//! and T/16 stores of the tile, T/16 multiply-adds, all in L1, against T/16 loads of X from L2 for
//! the row-wise kernel. Pays where columns hold several entries per block (density above about
//! 0.15); the row-wise kernel keeps sparser matrices and the columns left over.
//! Every element of Y sums its entries in increasing column order, from zero, the bias last.
use super::grid::{SyncPtr, in_pool, l2_bytes};
use super::simd::{Isa, fmadd, isa, multiversion};
use super::ytile::{BlockSum, CB, Dest, Tile, run_blocks};
use crate::Csr;
use lopper_tensor::Par;

/// Whether `w` is dense enough for the outer-product kernel: at least 15% of its entries stored.
/// DLMC transformer layers, N = 512, 2 threads (docs/benchmarks.md): mostly +10-25% over the
/// row-wise kernel at 50-60% sparsity, +1-13% at 70%, about even at 80%; at 90-95% a one-core
/// probe was up to 26% slower.
pub(crate) fn outer_pays(w: &Csr) -> bool {
    w.nnz() as u128 * 100 >= 15 * w.rows() as u128 * w.cols() as u128
}

/// Whether spmm runs `w`'s 128-wide column tiles through this kernel (given N >= 128): AVX-512
/// (with AVX2's tiles of 32 it was 12% faster at 50% sparsity but 3-20% slower at 70-80%, the
/// portable clone's 16 slower at 80%), [`outer_pays`], and X's K x 128 slab within three quarters
/// of L2 (1 MiB assumed where unknown).
pub(crate) fn outer_used(w: &Csr) -> bool {
    isa() == Isa::Avx512
        && outer_pays(w)
        && w.cols().saturating_mul(4 * 128) <= l2_bytes().unwrap_or(1 << 20) / 4 * 3
}

/// The entries of every block of [`CB`] rows, by column; pattern only.
#[derive(Clone, Debug)]
pub(crate) struct Outer {
    /// `col_ptr[b * (K + 1) + j]..col_ptr[b * (K + 1) + j + 1]`: the places of block b's entries in
    /// column j.
    col_ptr: Vec<u32>,
    /// The row (within its block) of the entry at each place.
    rows: Vec<u8>,
    /// The CSR entry at each place (for the values in place order).
    src: Vec<u32>,
}

impl Outer {
    /// `None` when W has more entries than u32 indexes.
    pub(crate) fn build(w: &Csr) -> Option<Outer> {
        let (m, k, nnz) = (w.rows(), w.cols(), w.nnz());
        if nnz > u32::MAX as usize {
            return None;
        }
        let (rp, ci) = (w.row_ptr(), w.col_idx());
        let blocks = m.div_ceil(CB);
        let mut col_ptr = vec![0u32; blocks * (k + 1)];
        let (mut rows, mut src) = (vec![0u8; nnz], vec![0u32; nnz]);
        let mut fill = vec![0usize; k];
        for b in 0..blocks {
            let (r0, r1) = (b * CB, ((b + 1) * CB).min(m));
            let cp = &mut col_ptr[b * (k + 1)..(b + 1) * (k + 1)];
            // counting sort of the block's entries by column, starting at the block's first entry
            // (every place < nnz <= u32::MAX)
            for &j in &ci[rp[r0]..rp[r1]] {
                cp[j as usize + 1] += 1;
            }
            cp[0] = rp[r0] as u32;
            for j in 0..k {
                cp[j + 1] += cp[j];
            }
            for (f, &c) in fill.iter_mut().zip(&cp[..k]) {
                *f = c as usize;
            }
            for r in r0..r1 {
                for e in rp[r]..rp[r + 1] {
                    let p = &mut fill[ci[e] as usize];
                    rows[*p] = (r - r0) as u8;
                    src[*p] = e as u32;
                    *p += 1;
                }
            }
        }
        Some(Outer { col_ptr, rows, src })
    }

    /// W's values in place order, in `buf` (resized; one of the right length is overwritten whole).
    pub(crate) fn gather(&self, w: &Csr, mut buf: Vec<f32>, par: Par) -> Vec<f32> {
        let v = w.values();
        buf.resize(self.src.len(), 0.0);
        let gather = |(out, src): (&mut [f32], &[u32])| {
            for (o, &s) in out.iter_mut().zip(src) {
                *o = v[s as usize];
            }
        };
        let threads = par.threads();
        if threads > 1 && self.src.len() >= 1 << 14 {
            use rayon::prelude::*;
            let chunk = self.src.len().div_ceil(threads);
            in_pool(par, || {
                buf.par_chunks_mut(chunk)
                    .zip(self.src.par_chunks(chunk))
                    .for_each(gather)
            });
        } else {
            gather((&mut buf, &self.src));
        }
        buf
    }
}

multiversion!(pub(crate) fn outer_task(plan: &Outer, v: &[f32], bias: &[f32], slab: &[f32],
    k: usize, sw: usize, tc: usize, cs: usize, y: SyncPtr, n: usize, rows: (usize, usize, usize),
    c0: usize) => outer_body);

/// Rows `rows.0..rows.1` (starting on a block) of the `rows.2` rows of W, columns c0..c0+cs of Y
/// (row stride n) in tiles of tc (cs a multiple of it), from `slab` = X[:, c0..c0+sw] with row
/// stride sw; `v` the values in place order ([`Outer::gather`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn outer_body<const FMA: bool>(
    plan: &Outer,
    v: &[f32],
    bias: &[f32],
    slab: &[f32],
    k: usize,
    sw: usize,
    tc: usize,
    cs: usize,
    y: SyncPtr,
    n: usize,
    rows: (usize, usize, usize),
    c0: usize,
) {
    debug_assert!(cs <= sw);
    let kern = Blocks {
        plan,
        v,
        slab,
        k,
        sw,
    };
    run_blocks::<_, FMA>(&kern, bias, y, n, tc, cs, rows, c0);
}

/// What the outer-product kernel's blocks read: the plan, the values in place order, X's slab (K
/// rows of sw elements).
struct Blocks<'a> {
    plan: &'a Outer,
    v: &'a [f32],
    slab: &'a [f32],
    k: usize,
    sw: usize,
}

impl BlockSum for Blocks<'_> {
    #[inline(always)]
    fn sum<const FMA: bool, const T: usize>(&self, dest: Dest, c: usize, acc: &mut Tile<T>) {
        let Blocks {
            plan,
            v,
            slab,
            k,
            sw,
        } = *self;
        let b = dest.r0 / CB;
        let cp = &plan.col_ptr[b * (k + 1)..(b + 1) * (k + 1)];
        for j in 0..k {
            Tile::<T>::prefetch(dest, j, k);
            let (e0, e1) = (cp[j] as usize, cp[j + 1] as usize);
            if e0 == e1 {
                continue;
            }
            // SAFETY: j < K, c + T <= sw, and the slab holds K rows of sw elements.
            let xj: [f32; T] = unsafe { *(slab.as_ptr().add(j * sw + c) as *const [f32; T]) };
            for e in e0..e1 {
                // SAFETY: e < nnz (col_ptr's places), and rows[e] < rb <= CB.
                let (r, w) = unsafe { (*plan.rows.get_unchecked(e) as usize, *v.get_unchecked(e)) };
                // SAFETY: as above
                let a = unsafe { acc.0.get_unchecked_mut(r) };
                for l in 0..T {
                    a[l] = fmadd::<FMA>(w, xj[l], a[l]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use lopper_tensor::MatRef;

    /// The kernel itself at every tile width, whatever this CPU's instruction set (spmm runs it
    /// with AVX-512 only): 130 rows (a short third block), 40 columns, empty columns and rows.
    #[test]
    fn outer_kernel_matches_reference_at_every_tile_width() {
        let (m, k) = (130, 40);
        let d: Vec<f32> = (0..m * k)
            .map(|e| {
                let h = (e * 2654435761usize) % 1000;
                if h < 350 && (e % k) % 7 != 3 && (e / k) % 11 != 5 {
                    (h as f32) / 350.0 - 0.5
                } else {
                    0.0
                }
            })
            .collect();
        let w = Csr::from_dense(MatRef::new(&d, m, k).unwrap(), 0.0).unwrap();
        let plan = Outer::build(&w).unwrap();
        let v = plan.gather(&w, Vec::new(), Par::Seq);
        assert_eq!(v, plan.gather(&w, vec![f32::NAN; v.len()], Par::Rayon(2)));
        for tc in [16, 32, 128] {
            let n = 2 * tc + 5; // two tiles and 5 columns the kernel leaves alone
            let x: Vec<f32> = (0..k * n)
                .map(|e| ((e * 7919) % 29) as f32 / 29.0 - 0.5)
                .collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.01).collect();
            let mut y = vec![f32::NAN; m * n];
            let yp = SyncPtr(y.as_mut_ptr());
            // two tasks: the first block, then the rest
            for rows in [(0, CB, m), (CB, m, m)] {
                outer_task(&plan, &v, &bias, &x, k, n, tc, 2 * tc, yp, n, rows, 0);
            }
            let want = reference::spmm(&d, m, k, &x, n);
            for i in 0..m {
                for c in 0..n {
                    let got = y[i * n + c];
                    if c >= 2 * tc {
                        assert!(got.is_nan(), "tc {tc}: column {c} was written");
                        continue;
                    }
                    let want = want[i * n + c] + bias[i] as f64;
                    let tol = reference::tolerance(k, want, 1.0);
                    assert!(
                        (got as f64 - want).abs() <= tol,
                        "tc {tc} [{i},{c}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
