use crate::error::shape_err;
use crate::kernels::{KernelCache, Plan};
use crate::{Error, Result};
use lopper_tensor::{MatRef, Par, Tensor};

/// A 2:4 structured-sparse matrix (NVIDIA's "2:4"): in every group of 4 consecutive entries of a row
/// (along K), at most 2 are non-zero.
///
/// Logical layout (the semantics PyTorch's `SparseSemiStructuredTensor` and cuSPARSELt use):
/// - `values`: `[M, K/2]` row-major; group `g` of row `i` stores its two kept values at
///   `values[i * K/2 + 2g]` and `[.. + 2g + 1]`, in increasing column order.
/// - `meta`: per group a 4-bit code of two 2-bit indices (positions 0..=3 inside the group), the lower
///   index in bits 0-1 and the higher in bits 2-3 (`idx0 < idx1`); four groups are packed per `u16`,
///   group `g` in bits `4*(g%4)..4*(g%4)+4`. Each row has `ceil(K/16)` `u16`s; unused high bits of a
///   row's last `u16` are zero. A group with fewer than 2 non-zeros stores explicit zeros at the
///   lowest free positions (so every code is a valid hardware code).
///
/// `K` must be a multiple of 4 (an error otherwise, never a silent pad). Values are f32; bf16/f16
/// inputs are accepted by [`Sparse24::from_tensor_prune`] and converted.
#[derive(Clone, Debug, PartialEq)]
pub struct Sparse24 {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
    meta: Vec<u16>,
    /// What spmm_24's class kernel keeps ([`Sparse24::prepare`]).
    cache: KernelCache<Plan>,
}

/// `ceil(K/16)`: metadata words per row.
#[inline]
pub(crate) fn meta_words(cols: usize) -> usize {
    cols.div_ceil(16)
}

fn check_k(op: &'static str, cols: usize) -> Result<()> {
    if !cols.is_multiple_of(4) {
        return Err(Error::Invalid24(format!(
            "{op}: K = {cols} is not a multiple of 4"
        )));
    }
    Ok(())
}

impl Sparse24 {
    /// 2:4 magnitude pruning: keeps the 2 largest `|x|` of every group of 4 along K (ties to the lower
    /// position; NaN counts as largest).
    pub fn from_dense_prune(m: MatRef<'_>) -> Result<Sparse24> {
        check_k("Sparse24::from_dense_prune", m.cols())?;
        Ok(Self::build(m, |g| {
            let key = |p: usize| {
                let a = g[p].abs();
                if a.is_nan() { f32::INFINITY } else { a }
            };
            // best two positions: larger magnitude first, lower index on ties
            let mut order = [0usize, 1, 2, 3];
            order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
            let (a, b) = (order[0].min(order[1]), order[0].max(order[1]));
            (a, b)
        }))
    }

    /// A matrix that already is 2:4 (at most 2 non-zeros per group of 4); an error naming the first
    /// offending row and group otherwise.
    pub fn from_dense_exact(m: MatRef<'_>) -> Result<Sparse24> {
        check_k("Sparse24::from_dense_exact", m.cols())?;
        for i in 0..m.rows() {
            for (g, grp) in m.row(i).chunks_exact(4).enumerate() {
                let nz = grp.iter().filter(|x| **x != 0.0).count();
                if nz > 2 {
                    return Err(Error::Invalid24(format!(
                        "row {i}, group {g} (columns {}..{}) has {nz} non-zeros",
                        4 * g,
                        4 * g + 4
                    )));
                }
            }
        }
        Ok(Self::build(m, |g| {
            let mut pos = [0usize; 2];
            let mut n = 0;
            for p in 0..4 {
                if g[p] != 0.0 && n < 2 {
                    pos[n] = p;
                    n += 1;
                }
            }
            // pad with the lowest free positions
            for p in 0..4 {
                if n == 2 {
                    break;
                }
                if !pos[..n].contains(&p) {
                    pos[n] = p;
                    n += 1;
                }
            }
            (pos[0].min(pos[1]), pos[0].max(pos[1]))
        }))
    }

    /// 2:4 magnitude pruning of a 2-D tensor of any dtype.
    pub fn from_tensor_prune(t: &Tensor) -> Result<Sparse24> {
        let f = t.to_f32();
        Self::from_dense_prune(f.mat("Sparse24::from_tensor_prune")?)
    }

    fn build(m: MatRef<'_>, pick: impl Fn(&[f32]) -> (usize, usize)) -> Sparse24 {
        let (rows, cols) = (m.rows(), m.cols());
        let mw = meta_words(cols);
        let mut values = Vec::with_capacity(rows * cols / 2);
        let mut meta = vec![0u16; rows * mw];
        for i in 0..rows {
            for (g, grp) in m.row(i).chunks_exact(4).enumerate() {
                let (a, b) = pick(grp);
                values.push(grp[a]);
                values.push(grp[b]);
                meta[i * mw + g / 4] |= ((a | (b << 2)) as u16) << (4 * (g % 4));
            }
        }
        Sparse24 {
            rows,
            cols,
            values,
            meta,
            cache: KernelCache::default(),
        }
    }

    /// From raw parts, validated: lengths, every code `idx0 < idx1`, unused bits zero.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        values: Vec<f32>,
        meta: Vec<u16>,
    ) -> Result<Sparse24> {
        check_k("Sparse24::from_parts", cols)?;
        let mw = meta_words(cols);
        // needs in u128: a claimed size whose product overflows usize is a mismatch, not a panic
        let (need_v, need_m) = (rows as u128 * (cols / 2) as u128, rows as u128 * mw as u128);
        if values.len() as u128 != need_v {
            return Err(shape_err(
                "Sparse24::from_parts",
                format!("{} values for {rows}x{cols} (need {need_v})", values.len()),
            ));
        }
        if meta.len() as u128 != need_m {
            return Err(shape_err(
                "Sparse24::from_parts",
                format!(
                    "{} metadata words for {rows}x{cols} (need {need_m})",
                    meta.len()
                ),
            ));
        }
        let s = Sparse24 {
            rows,
            cols,
            values,
            meta,
            cache: KernelCache::default(),
        };
        // K = 0: no group to check (and no per-row loop over a claimed `rows`)
        for i in 0..if cols == 0 { 0 } else { rows } {
            for g in 0..cols / 4 {
                let (a, b) = s.indices(i, g);
                if a >= b {
                    return Err(Error::Invalid24(format!(
                        "row {i}, group {g}: metadata indices {a}, {b} are not increasing"
                    )));
                }
            }
            let used = (cols / 4) % 4;
            if used != 0 && s.meta[i * mw + mw - 1] >> (4 * used) != 0 {
                return Err(Error::Invalid24(format!(
                    "row {i}: unused metadata bits are set"
                )));
            }
        }
        Ok(s)
    }

    /// The two positions (0..=3, increasing) kept in group `g` of row `i`.
    #[inline]
    pub fn indices(&self, i: usize, g: usize) -> (usize, usize) {
        let w = self.meta[i * meta_words(self.cols) + g / 4] >> (4 * (g % 4));
        ((w & 3) as usize, ((w >> 2) & 3) as usize)
    }

    /// Dense row-major copy.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        let half = self.cols / 2;
        for i in 0..self.rows {
            for g in 0..self.cols / 4 {
                let (a, b) = self.indices(i, g);
                out[i * self.cols + 4 * g + a] = self.values[i * half + 2 * g];
                out[i * self.cols + 4 * g + b] = self.values[i * half + 2 * g + 1];
            }
        }
        out
    }

    /// Dense copy as a `rows x cols` f32 tensor.
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_f32(&[self.rows, self.cols], self.to_dense())
            .expect("rows * cols elements by construction")
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Kept values, `[M, K/2]` row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
    /// Kept values, mutable (the pattern cannot change through this). Drops the CPU kernel's copy
    /// of the values ([`Sparse24::prepare`]), which the next product builds again.
    pub fn values_mut(&mut self) -> &mut [f32] {
        self.cache.values_changed();
        &mut self.values
    }
    /// Metadata words, `[M, ceil(K/16)]` row-major.
    pub fn meta(&self) -> &[u16] {
        &self.meta
    }

    /// Builds now what [`crate::spmm_24`] keeps with the matrix, with `par` for the values:
    /// - once per pattern, the order in which its class kernel visits the rows (a byte per row and
    ///   group of 4, and each block's classes);
    /// - after every change of the values (`values_mut`), a copy of the values in that order
    ///   (as large as the values).
    ///
    /// Products build what is missing themselves, on their own thread when given `Par::Seq`. Call
    /// this first where several threads run products of one matrix at once (each would build its
    /// own copy) or to keep the build out of a timed product. Nothing is built for a product
    /// whose N is below the class kernel's tile (128 columns with AVX-512, 32 with AVX2, 16
    /// otherwise).
    pub fn prepare(&self, par: Par) {
        self.plan(par);
    }

    /// The class kernel's row order and the values in it, built where missing.
    pub(crate) fn plan(&self, par: Par) -> (&Plan, &[f32]) {
        self.cache
            .get(|| Plan::build(self), |p, buf| p.gather(self, buf, par))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prune_keeps_two_largest_per_group(rows in 0usize..9, groups in 0usize..11, seed: u64) {
            let cols = 4 * groups;
            let mut t = Tensor::randn(&[rows, cols], 1.0, seed).as_f32().unwrap().to_vec();
            for x in t.iter_mut().step_by(5) { *x = x.signum(); } // ties
            let s = Sparse24::from_dense_prune(MatRef::new(&t, rows, cols).unwrap()).unwrap();
            let d = s.to_dense();
            for i in 0..rows { for g in 0..groups {
                let grp = &t[i * cols + 4 * g..i * cols + 4 * g + 4];
                let (a, b) = s.indices(i, g);
                prop_assert!(a < b);
                for p in 0..4 {
                    let kept_p = p == a || p == b;
                    prop_assert_eq!(d[i * cols + 4 * g + p], if kept_p { grp[p] } else { 0.0 });
                    // every dropped entry is no larger than every kept one; on ties the kept is earlier
                    for q in [a, b] { if !kept_p {
                        prop_assert!(grp[q].abs() > grp[p].abs() || (grp[q].abs() == grp[p].abs() && q < p));
                    }}
                }
            }}
            // already 2:4 now: exact constructor agrees, parts validate
            let e = Sparse24::from_dense_exact(MatRef::new(&d, rows, cols).unwrap()).unwrap();
            prop_assert_eq!(e.to_dense(), d);
            prop_assert!(Sparse24::from_parts(rows, cols, s.values().to_vec(), s.meta().to_vec()).is_ok());
        }
    }

    #[test]
    fn layout_is_documented_one() {
        // row: group0 keeps positions 1,3; group1 keeps 0,2
        let d = [0.0, 5.0, 0.0, 7.0, 1.0, 0.0, 2.0, 0.0];
        let s = Sparse24::from_dense_exact(MatRef::new(&d, 1, 8).unwrap()).unwrap();
        assert_eq!(s.values(), &[5.0, 7.0, 1.0, 2.0]);
        assert_eq!(s.meta(), &[(1 | (3 << 2)) | ((2 << 2) << 4)]);
        // a group with one non-zero pads with the lowest free position
        let d = [0.0, 0.0, 3.0, 0.0];
        let s = Sparse24::from_dense_exact(MatRef::new(&d, 1, 4).unwrap()).unwrap();
        assert_eq!(s.indices(0, 0), (0, 2));
        assert_eq!(s.values(), &[0.0, 3.0]);
    }

    #[test]
    fn errors() {
        let d = [1.0; 6];
        assert!(
            Sparse24::from_dense_prune(MatRef::new(&d, 1, 6).unwrap())
                .unwrap_err()
                .to_string()
                .contains("multiple of 4")
        );
        let d = [1.0, 1.0, 1.0, 0.0];
        let e = Sparse24::from_dense_exact(MatRef::new(&d, 1, 4).unwrap()).unwrap_err();
        assert!(e.to_string().contains("row 0, group 0"), "{e}");
        assert!(Sparse24::from_parts(1, 4, vec![0.0; 2], vec![0b0101]).is_err()); // 1,1
        assert!(Sparse24::from_parts(1, 4, vec![0.0; 2], vec![0b1000 | 0x10]).is_err()); // stray bits
        assert!(Sparse24::from_parts(1, 4, vec![0.0; 3], vec![0b1000]).is_err());
    }

    #[test]
    fn claimed_sizes_that_overflow_are_errors() {
        // rows * cols wraps to 0 in usize: empty parts must not pass for a 2^62 x 64 matrix
        let e = Sparse24::from_parts(1 << 62, 64, vec![], vec![]).unwrap_err();
        assert!(
            e.to_string()
                .contains("0 values for 4611686018427387904x64"),
            "{e}"
        );
        let e = Sparse24::from_parts(usize::MAX, 4, vec![], vec![]).unwrap_err();
        assert!(e.to_string().contains("Sparse24::from_parts"), "{e}");
        // K = 0 holds nothing to check, whatever the rows: no walk over 2^60 rows
        let s = Sparse24::from_parts(1 << 60, 0, vec![], vec![]).unwrap();
        assert_eq!((s.rows(), s.cols()), (1 << 60, 0));
    }
}
