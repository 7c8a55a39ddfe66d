//! The spmm_24 kernel: rows grouped by their pattern, group by group, with Y's tile in L1.
//!
//! Shapes: W (M, K) 2:4, X (K, N), Y (M, N). For each block of [`CB`] rows of W and each group g of
//! 4 along K, the block's rows are sorted by their 4-bit code in g (6 codes: idx0 < idx1). Rows of one code read the same two rows of X, so a class loads
//! `X[4g + i0, c..c+T]` and `X[4g + i1, c..c+T]` into registers once and then, for each of its
//! rows r, `acc[r] += v0 * X[4g + i0] + v1 * X[4g + i1]` with `acc` a (CB, T) tile in L1:
//! - per row and group: 2 value broadcasts, T/16 loads and T/16 stores of `acc`, T/8 multiply-adds
//!   (AVX-512, T = 128: 0.6 loads per multiply-add, against 1.25 for a register tile of rows that
//!   each load their own two X rows);
//! - the class's X rows: 2 T/16 loads, shared by the ~CB/6 rows of the class.
//!
//! The order (`Plan`) depends on the pattern only and is built once per [`Sparse24`]; the values in
//! that order are a copy built at the first product after the values change (values_mut drops it).
//! Every element of Y sums its groups in increasing g, v0's term before v1's, whatever the tile
//! width: overlapping tiles write equal values.
use super::grid::{SyncPtr, in_pool};
use super::simd::{Isa, fmadd, isa, multiversion};
use super::ytile::{BlockSum, CB, Dest, Tile, run_blocks};
use crate::Sparse24;
use crate::sparse24::meta_words;
use lopper_tensor::Par;

/// The row order of every (block, group) of a [`Sparse24`] and its classes; pattern only.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// `perm[r0 * G + g * rb + i]`: the row (within the block of rb rows starting at r0) at place
    /// i of group g.
    perm: Vec<u8>,
    /// `(code, end)` of each class of block b and group g, in place order:
    /// `cls[cls_off[b * G + g]..cls_off[b * G + g + 1]]`.
    cls: Vec<(u8, u8)>,
    cls_off: Vec<usize>,
}

impl Plan {
    pub(crate) fn build(w: &Sparse24) -> Plan {
        let (m, k) = (w.rows(), w.cols());
        let (groups, mw, meta) = (k / 4, meta_words(k), w.meta());
        let mut perm = vec![0u8; m * groups];
        let mut cls = Vec::new();
        let mut cls_off = Vec::with_capacity(m.div_ceil(CB) * groups + 1);
        cls_off.push(0);
        for r0 in (0..m).step_by(CB) {
            let rb = (m - r0).min(CB);
            for g in 0..groups {
                let code = |r: usize| (meta[(r0 + r) * mw + g / 4] >> (4 * (g % 4))) as usize & 15;
                let mut count = [0usize; 16];
                for r in 0..rb {
                    count[code(r)] += 1;
                }
                // counting sort: start of each code's places, classes in code order
                let mut start = [0usize; 16];
                let mut s = 0;
                for c in 0..16 {
                    start[c] = s;
                    s += count[c];
                    if count[c] > 0 {
                        cls.push((c as u8, s as u8));
                    }
                }
                cls_off.push(cls.len());
                let base = r0 * groups + g * rb;
                for r in 0..rb {
                    let c = code(r);
                    perm[base + start[c]] = r as u8;
                    start[c] += 1;
                }
            }
        }
        Plan { perm, cls, cls_off }
    }

    /// W's values in place order, in `buf` (resized; a buffer of the right length is overwritten
    /// without being cleared first): `out[2 * (r0 * G + g * rb + i) + s]` is value s of group g
    /// of the row at place i. Parallel over blocks with `par`.
    pub(crate) fn gather(&self, w: &Sparse24, mut buf: Vec<f32>, par: Par) -> Vec<f32> {
        let (m, groups) = (w.rows(), w.cols() / 4);
        // (value 0, value 1) of row r, group g at [r * groups + g]
        let src = w.values().as_chunks::<2>().0;
        buf.resize(m * groups * 2, 0.0);
        let block = |(b, dst): (usize, &mut [f32])| {
            let r0 = b * CB;
            let rb = (m - r0).min(CB);
            let dst = dst.as_chunks_mut::<2>().0;
            for g in 0..groups {
                let p = &self.perm[r0 * groups + g * rb..r0 * groups + (g + 1) * rb];
                for (d, &r) in dst[g * rb..(g + 1) * rb].iter_mut().zip(p) {
                    *d = src[(r0 + r as usize) * groups + g];
                }
            }
        };
        let chunk = (CB * groups * 2).max(1);
        if par.threads() > 1 && m > CB {
            use rayon::prelude::*;
            in_pool(par, || {
                buf.par_chunks_mut(chunk).enumerate().for_each(block)
            });
        } else {
            buf.chunks_mut(chunk).enumerate().for_each(block);
        }
        buf
    }
}

/// The class kernel's tile width for the instruction set in use: AVX-512 keeps a class's two X rows
/// in 16 of its 32 registers at 128 columns, AVX2 in 8 of 16 at 32, the portable clone (SSE) in 8
/// of 16 at 16.
pub(crate) fn class_width() -> usize {
    match isa() {
        Isa::Avx512 => 128,
        Isa::Avx2 => 32,
        Isa::Portable => 16,
    }
}

multiversion!(pub(crate) fn class_task(v: &[f32], plan: &Plan, bias: &[f32], slab: &[f32],
    k: usize, sw: usize, tc: usize, cs: usize, y: SyncPtr, n: usize, rows: (usize, usize, usize),
    c0: usize) => class_body);

/// Rows `rows.0..rows.1` (starting on a block) of the `rows.2` rows of W, columns c0..c0+cs of Y
/// (row stride n) in tiles of tc ([`class_width`]; cs a multiple of it), from `slab` =
/// X[:, c0..c0+sw] with row stride sw; `v` the values in place order ([`Plan::gather`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn class_body<const FMA: bool>(
    v: &[f32],
    plan: &Plan,
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
    let kern = Class {
        v,
        plan,
        slab,
        k,
        sw,
    };
    run_blocks::<_, FMA>(&kern, bias, y, n, tc, cs, rows, c0);
}

/// What the class kernel's blocks read: the values in place order, the plan, X's slab (K rows of
/// sw elements).
struct Class<'a> {
    v: &'a [f32],
    plan: &'a Plan,
    slab: &'a [f32],
    k: usize,
    sw: usize,
}

impl BlockSum for Class<'_> {
    #[inline(always)]
    fn sum<const FMA: bool, const T: usize>(&self, dest: Dest, c: usize, acc: &mut Tile<T>) {
        let Class {
            v,
            plan,
            slab,
            k,
            sw,
        } = *self;
        let (r0, rb) = (dest.r0, dest.rb);
        let groups = k / 4;
        let b = r0 / CB;
        let xrow = |row: usize| -> [f32; T] {
            // SAFETY: row < K (4g + p with p < 4, g < K/4), c + T <= sw, and the slab holds K
            // rows of sw elements.
            unsafe { *(slab.as_ptr().add(row * sw + c) as *const [f32; T]) }
        };
        for g in 0..groups {
            Tile::<T>::prefetch(dest, g, groups);
            let base = r0 * groups + g * rb;
            let p = &plan.perm[base..base + rb];
            let vg = &v[2 * base..2 * (base + rb)];
            let ci = b * groups + g;
            let mut i = 0;
            for &(code, end) in &plan.cls[plan.cls_off[ci]..plan.cls_off[ci + 1]] {
                let xa = xrow(4 * g + (code & 3) as usize);
                let xb = xrow(4 * g + (code >> 2) as usize);
                while i < end as usize {
                    // SAFETY: i < end <= rb (places of the block), p[i] < rb <= CB, and vg holds
                    // 2 rb.
                    let (r, w0, w1) = unsafe {
                        (
                            *p.get_unchecked(i) as usize,
                            *vg.get_unchecked(2 * i),
                            *vg.get_unchecked(2 * i + 1),
                        )
                    };
                    // SAFETY: as above
                    let a = unsafe { acc.0.get_unchecked_mut(r) };
                    for l in 0..T {
                        a[l] = fmadd::<FMA>(w1, xb[l], fmadd::<FMA>(w0, xa[l], a[l]));
                    }
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sorts_each_block_by_code() {
        // 70 rows: one full block and a short one
        let (m, k) = (70, 12);
        let d: Vec<f32> = (0..m * k).map(|e| ((e * 7919) % 13) as f32 - 6.0).collect();
        let w = Sparse24::from_dense_prune(lopper_tensor::MatRef::new(&d, m, k).unwrap()).unwrap();
        let plan = Plan::build(&w);
        let v = plan.gather(&w, Vec::new(), Par::Seq);
        // a reused buffer is overwritten whole
        assert_eq!(v, plan.gather(&w, vec![f32::NAN; v.len()], Par::Rayon(2)));
        let groups = k / 4;
        for r0 in (0..m).step_by(CB) {
            let rb = (m - r0).min(CB);
            for g in 0..groups {
                let base = r0 * groups + g * rb;
                let p = &plan.perm[base..base + rb];
                let mut seen = p.to_vec();
                seen.sort();
                assert_eq!(seen, (0..rb as u8).collect::<Vec<_>>());
                let ci = r0 / CB * groups + g;
                let mut i = 0;
                for &(code, end) in &plan.cls[plan.cls_off[ci]..plan.cls_off[ci + 1]] {
                    for place in i..end as usize {
                        let r = r0 + p[place] as usize;
                        let (a, b) = w.indices(r, g);
                        assert_eq!(code as usize, a | (b << 2));
                        assert_eq!(v[2 * (base + place)], w.values()[r * k / 2 + 2 * g]);
                        assert_eq!(v[2 * (base + place) + 1], w.values()[r * k / 2 + 2 * g + 1]);
                    }
                    i = end as usize;
                }
                assert_eq!(i, rb);
            }
        }
    }
}
