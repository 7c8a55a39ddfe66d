use crate::error::shape_err;
use crate::kernels::{KernelCache, Outer};
use crate::{Error, Result};
use lopper_tensor::{MatRef, Par, Tensor};

/// Entries from which [`CsrTranspose::refresh_par`] splits its gather over threads.
const REFRESH_PAR_MIN: usize = 1 << 14;

/// A sparse matrix in compressed sparse row form, f32 values, `u32` column indices.
///
/// Invariants (checked by every constructor, named on violation):
/// - `row_ptr.len() == rows + 1`, `row_ptr[0] == 0`, non-decreasing, `row_ptr[rows] == nnz`;
/// - `col_idx.len() == values.len() == nnz`;
/// - within a row, column indices are strictly increasing (sorted, unique) and `< cols`;
/// - `cols <= u32::MAX`.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    rows: usize,
    cols: usize,
    row_ptr: Vec<usize>,
    col_idx: Vec<u32>,
    values: Vec<f32>,
    /// [`Csr::rows_read`], found on first use (the pattern never changes after construction).
    reads: RowsRead,
    /// What spmm's outer-product kernel keeps ([`Csr::prepare`]).
    outer: KernelCache<Option<Outer>>,
}

/// Which of `cols` rows a product `W X` reads from X (W's distinct column indices); `None` when it
/// reads them all. Kept with the pattern; not part of equality or of `Debug`'s detail.
#[derive(Clone, Default)]
struct RowsRead(std::sync::OnceLock<Option<(Box<[bool]>, usize)>>);

impl PartialEq for RowsRead {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for RowsRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowsRead")
    }
}

/// The transpose of a [`Csr`] together with the value permutation:
/// `t.values()[p] == src.values()[perm[p]]`. When only the source's values change (a training step),
/// [`CsrTranspose::refresh`] re-transposes in O(nnz) without sorting.
#[derive(Clone, Debug, PartialEq)]
pub struct CsrTranspose {
    t: Csr,
    perm: Vec<u32>,
    /// The inverse of `perm`: source entry p is entry `inv[p]` of the transpose.
    inv: Vec<u32>,
}

impl Csr {
    /// A CSR matrix from its parts, validated.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        row_ptr: Vec<usize>,
        col_idx: Vec<u32>,
        values: Vec<f32>,
    ) -> Result<Csr> {
        validate(rows, cols, &row_ptr, &col_idx, values.len())?;
        Ok(Csr {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
            reads: RowsRead::default(),
            outer: KernelCache::default(),
        })
    }

    /// An empty (all zero) `rows x cols` matrix. Errors when `cols` exceeds the u32 column
    /// indices or the `rows + 1` row offsets cannot fit in memory.
    pub fn zeros(rows: usize, cols: usize) -> Result<Csr> {
        if cols > u32::MAX as usize {
            return Err(Error::InvalidCsr(format!(
                "Csr::zeros: {cols} columns exceed u32 indices"
            )));
        }
        let what = format!("Csr::zeros: row offsets of {rows} rows");
        let n = rows
            .checked_add(1)
            .ok_or_else(|| lopper_tensor::Error::Memory(format!("{what}: rows + 1 overflows")))?;
        lopper_tensor::mem::check_bytes(&what, n, std::mem::size_of::<usize>())?;
        Ok(Csr {
            rows,
            cols,
            row_ptr: vec![0; n],
            col_idx: Vec::new(),
            values: Vec::new(),
            reads: RowsRead::default(),
            outer: KernelCache::default(),
        })
    }

    /// Keeps the entries with `|x| > threshold` (`threshold = 0` keeps every non-zero).
    pub fn from_dense(m: MatRef<'_>, threshold: f32) -> Result<Csr> {
        if threshold.is_nan() || threshold < 0.0 {
            return Err(Error::Invalid {
                op: "Csr::from_dense",
                detail: format!("threshold must be >= 0, got {threshold}"),
            });
        }
        Self::build(m, |_, x| x.abs() > threshold)
    }

    /// Keeps the entries where `mask` (row-major, same shape) is true, zeros included.
    pub fn from_mask(m: MatRef<'_>, mask: &[bool]) -> Result<Csr> {
        if mask.len() != m.rows() * m.cols() {
            return Err(shape_err(
                "Csr::from_mask",
                format!(
                    "mask has {} entries, matrix is {}x{}",
                    mask.len(),
                    m.rows(),
                    m.cols()
                ),
            ));
        }
        Self::build(m, |flat, _| mask[flat])
    }

    /// Keeps exactly `k` entries: those of largest `|x|`. Ties are broken by position: among equal
    /// magnitudes the entry with the smaller row-major index is kept (NaN counts as largest).
    pub fn from_topk(m: MatRef<'_>, k: usize) -> Result<Csr> {
        let n = m.rows() * m.cols();
        if k > n {
            return Err(Error::Invalid {
                op: "Csr::from_topk",
                detail: format!("k = {k} exceeds the {n} entries of the matrix"),
            });
        }
        if n > u32::MAX as usize {
            return Err(Error::Invalid {
                op: "Csr::from_topk",
                detail: format!("{n} entries exceed the u32 ranking index"),
            });
        }
        let keep = topk_mask(m.data(), k);
        Self::build(m, |flat, _| keep[flat])
    }

    fn build(m: MatRef<'_>, keep: impl Fn(usize, f32) -> bool) -> Result<Csr> {
        if m.cols() > u32::MAX as usize {
            return Err(Error::InvalidCsr(format!(
                "{} columns exceed u32 indices",
                m.cols()
            )));
        }
        let mut row_ptr = Vec::with_capacity(m.rows() + 1);
        let mut col_idx = Vec::new();
        let mut values = Vec::new();
        row_ptr.push(0);
        for i in 0..m.rows() {
            for (j, &x) in m.row(i).iter().enumerate() {
                if keep(i * m.cols() + j, x) {
                    col_idx.push(j as u32);
                    values.push(x);
                }
            }
            row_ptr.push(col_idx.len());
        }
        Ok(Csr {
            rows: m.rows(),
            cols: m.cols(),
            row_ptr,
            col_idx,
            values,
            reads: RowsRead::default(),
            outer: KernelCache::default(),
        })
    }

    /// From a 2-D tensor of any dtype (values converted to f32), keeping non-zeros.
    pub fn from_tensor(t: &Tensor) -> Result<Csr> {
        let f = t.to_f32();
        Self::from_dense(f.mat("Csr::from_tensor")?, 0.0)
    }

    /// The same pattern with other values (`values.len() == nnz`).
    pub fn with_values(&self, values: Vec<f32>) -> Result<Csr> {
        if values.len() != self.nnz() {
            return Err(Error::InvalidCsr(format!(
                "{} values for a pattern of {} entries",
                values.len(),
                self.nnz()
            )));
        }
        Ok(Csr {
            values,
            ..self.clone_pattern()
        })
    }

    fn clone_pattern(&self) -> Csr {
        Csr {
            rows: self.rows,
            cols: self.cols,
            row_ptr: self.row_ptr.clone(),
            col_idx: self.col_idx.clone(),
            values: Vec::new(),
            reads: self.reads.clone(),
            outer: KernelCache::default(),
        }
    }

    /// Dense row-major copy.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for i in 0..self.rows {
            let (c, v) = self.row(i);
            for (&j, &x) in c.iter().zip(v) {
                out[i * self.cols + j as usize] = x;
            }
        }
        out
    }

    /// Dense copy as a `rows x cols` f32 tensor.
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_f32(&[self.rows, self.cols], self.to_dense())
            .expect("rows * cols elements by construction")
    }

    /// The transpose, with the permutation that maps its values to ours.
    pub fn transpose(&self) -> CsrTranspose {
        // counting sort by column: stable, so rows stay sorted within each column
        let mut counts = vec![0usize; self.cols + 1];
        for &j in &self.col_idx {
            counts[j as usize + 1] += 1;
        }
        for j in 0..self.cols {
            counts[j + 1] += counts[j];
        }
        let row_ptr = counts.clone();
        let mut next = counts;
        let nnz = self.nnz();
        let mut col_idx = vec![0u32; nnz];
        let mut perm = vec![0u32; nnz];
        let mut inv = vec![0u32; nnz];
        for i in 0..self.rows {
            for p in self.row_ptr[i]..self.row_ptr[i + 1] {
                let j = self.col_idx[p] as usize;
                let q = next[j];
                next[j] += 1;
                col_idx[q] = i as u32;
                perm[q] = p as u32;
                inv[p] = q as u32;
            }
        }
        let values = perm.iter().map(|&p| self.values[p as usize]).collect();
        CsrTranspose {
            t: Csr {
                rows: self.cols,
                cols: self.rows,
                row_ptr,
                col_idx,
                values,
                reads: RowsRead::default(),
                outer: KernelCache::default(),
            },
            perm,
            inv,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn nnz(&self) -> usize {
        self.values.len()
    }
    /// Stored entries over `rows * cols` (0 for an empty shape).
    pub fn density(&self) -> f64 {
        let n = self.rows * self.cols;
        if n == 0 {
            0.0
        } else {
            self.nnz() as f64 / n as f64
        }
    }
    pub fn row_ptr(&self) -> &[usize] {
        &self.row_ptr
    }
    pub fn col_idx(&self) -> &[u32] {
        &self.col_idx
    }

    /// Which rows of X the product `self * X` reads: flags over the `cols` rows, true for W's
    /// distinct column indices; `None` when it reads every row. Found by one pass over the indices
    /// on the first call (stopping once every row is seen) and kept with the pattern. The packed
    /// kernels copy only these rows: an L0- or variational-dropout-pruned 512 x 2048 layer at 95%
    /// reads 550 of X's 2048 rows.
    pub fn rows_read(&self) -> Option<&[bool]> {
        self.reads_found().as_ref().map(|(u, _)| &u[..])
    }

    /// How many rows of X `self * X` reads (those [`Csr::rows_read`] flags; `cols` when all).
    pub(crate) fn rows_read_count(&self) -> usize {
        self.reads_found().as_ref().map_or(self.cols, |&(_, n)| n)
    }

    /// [`Csr::rows_read`]'s flags and their count, found on the first call.
    fn reads_found(&self) -> &Option<(Box<[bool]>, usize)> {
        self.reads.0.get_or_init(|| {
            let mut used = vec![false; self.cols];
            let mut left = self.cols;
            for &j in &self.col_idx {
                if left == 0 {
                    break;
                }
                // j < cols: an invariant
                let u = &mut used[j as usize];
                left -= usize::from(!*u);
                *u = true;
            }
            (left > 0).then(|| (used.into_boxed_slice(), self.cols - left))
        })
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }
    /// Builds now what [`crate::spmm`] keeps with a matrix of at least 15% density for its
    /// outer-product kernel, with `par` for the values: once per pattern, W's entries ordered by
    /// column within each block of 56 rows (a byte and a u32 per entry, and a u32 per column and
    /// block), and after every change of the values (`values_mut`) a copy of the values in that
    /// order. Products build what is missing themselves; call this first where several threads
    /// run products of one matrix at once (each would build its own copy), or to keep the build
    /// out of a timed product. The kernel runs on AVX-512 CPUs only, for products with N of at
    /// least 128 and K whose 128-column slab of X fits in three quarters of L2 (K up to 3072 with
    /// 2 MiB); nothing is built for other matrices, or sparser ones.
    pub fn prepare(&self, par: Par) {
        if crate::kernels::outer_used(self) {
            self.outer(par);
        }
    }

    /// The outer-product kernel's order and the values in it, built where missing; `None` for a
    /// matrix of more entries than u32 indexes.
    pub(crate) fn outer(&self, par: Par) -> Option<(&Outer, &[f32])> {
        let (plan, v) = self.outer.get(
            || Outer::build(self),
            |p, buf| match p {
                Some(p) => p.gather(self, buf, par),
                None => buf,
            },
        );
        plan.as_ref().map(|p| (p, v))
    }

    /// The stored values, mutable (the pattern cannot change through this). Drops the copy of the
    /// values that [`Csr::prepare`] made, which the next product builds again.
    pub fn values_mut(&mut self) -> &mut [f32] {
        self.outer.values_changed();
        &mut self.values
    }
    /// Column indices and values of row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.row_ptr[i], self.row_ptr[i + 1]);
        (&self.col_idx[a..b], &self.values[a..b])
    }
    /// Dense-equivalent boolean mask, row-major.
    pub fn mask(&self) -> Vec<bool> {
        let mut m = vec![false; self.rows * self.cols];
        for i in 0..self.rows {
            for &j in self.row(i).0 {
                m[i * self.cols + j as usize] = true;
            }
        }
        m
    }
}

impl CsrTranspose {
    /// The transposed matrix (`cols x rows` of the source).
    pub fn csr(&self) -> &Csr {
        &self.t
    }
    /// `csr().values()[p] == source.values()[perm()[p]]`.
    pub fn perm(&self) -> &[u32] {
        &self.perm
    }
    /// The inverse permutation: `csr().values()[inv_perm()[p]] == source.values()[p]`. A quantity
    /// computed in the transpose's order (e.g. `spmm_t_sddmm`'s gradient) is read back in the
    /// source's order through it, one contiguous range of source entries per thread.
    pub fn inv_perm(&self) -> &[u32] {
        &self.inv
    }
    /// Copies the source's current values into the transpose (same pattern required).
    pub fn refresh(&mut self, src: &Csr) -> Result<()> {
        self.refresh_par(src, Par::Seq)
    }
    /// [`CsrTranspose::refresh`] split over `par`'s threads (rayon) when there are several and at
    /// least 2^14 entries (below, handing the work over costs more than the copy).
    pub fn refresh_par(&mut self, src: &Csr, par: Par) -> Result<()> {
        if src.nnz() != self.perm.len() || src.rows != self.t.cols || src.cols != self.t.rows {
            return Err(shape_err(
                "CsrTranspose::refresh",
                format!(
                    "source is {}x{} with {} entries, transpose was built for {}x{} with {}",
                    src.rows,
                    src.cols,
                    src.nnz(),
                    self.t.cols,
                    self.t.rows,
                    self.perm.len()
                ),
            ));
        }
        let gather = |out: &mut [f32], perm: &[u32]| {
            for (v, &p) in out.iter_mut().zip(perm) {
                *v = src.values[p as usize];
            }
        };
        let threads = par.threads();
        if threads > 1 && self.perm.len() >= REFRESH_PAR_MIN {
            use rayon::prelude::*;
            let chunk = self.perm.len().div_ceil(threads);
            self.t
                .values_mut()
                .par_chunks_mut(chunk)
                .zip(self.perm.par_chunks(chunk))
                .for_each(|(out, perm)| gather(out, perm));
        } else {
            gather(self.t.values_mut(), &self.perm);
        }
        Ok(())
    }
}

fn validate(rows: usize, cols: usize, rp: &[usize], ci: &[u32], nvals: usize) -> Result<()> {
    let e = |s: String| Err(Error::InvalidCsr(s));
    if cols > u32::MAX as usize {
        return e(format!("{cols} columns exceed u32 indices"));
    }
    // rows + 1 in u128: `rows = usize::MAX` is a length mismatch, not an overflow
    if rp.len() as u128 != rows as u128 + 1 {
        return e(format!(
            "row_ptr has {} entries, expected rows + 1 = {}",
            rp.len(),
            rows as u128 + 1
        ));
    }
    if rp[0] != 0 {
        return e(format!("row_ptr[0] = {}, expected 0", rp[0]));
    }
    if ci.len() != nvals {
        return e(format!("{} column indices but {nvals} values", ci.len()));
    }
    for i in 0..rows {
        if rp[i + 1] < rp[i] {
            return e(format!(
                "row_ptr decreases at row {i}: {} then {}",
                rp[i],
                rp[i + 1]
            ));
        }
    }
    if rp[rows] != ci.len() {
        return e(format!(
            "row_ptr[{rows}] = {} but there are {} entries",
            rp[rows],
            ci.len()
        ));
    }
    for i in 0..rows {
        let row = &ci[rp[i]..rp[i + 1]];
        for (p, &j) in row.iter().enumerate() {
            if j as usize >= cols {
                return e(format!(
                    "row {i}: column index {j} out of range (cols = {cols})"
                ));
            }
            if p > 0 && row[p - 1] >= j {
                let what = if row[p - 1] == j {
                    "duplicate"
                } else {
                    "unsorted"
                };
                return e(format!(
                    "row {i}: {what} column indices {} then {j}",
                    row[p - 1]
                ));
            }
        }
    }
    Ok(())
}

/// `keep[i]` for the `k` entries of largest `|x|`, ties to the lower index, NaN largest.
pub(crate) fn topk_mask(data: &[f32], k: usize) -> Vec<bool> {
    let mags: Vec<f32> = data.iter().map(|x| x.abs()).collect();
    lopper_tensor::ops::topk_mask(&mags, k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dense(rows: usize, cols: usize, density: f64, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..rows * cols)
            .map(|_| {
                if r.random_bool(density) {
                    r.random_range(-2.0f32..2.0)
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn rows_read_flags_the_distinct_columns() {
        let d = [0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0];
        let c = Csr::from_dense(MatRef::new(&d, 2, 5).unwrap(), 0.0).unwrap();
        assert_eq!(c.rows_read(), Some(&[false, true, true, true, false][..]));
        assert_eq!(c.rows_read_count(), 3);
        // kept with the pattern (values changed or not), and not part of equality
        let v = c.with_values(vec![1.0; 3]).unwrap();
        assert_eq!(v.rows_read(), c.rows_read());
        assert_eq!(
            Csr::from_dense(MatRef::new(&d, 2, 5).unwrap(), 0.0).unwrap(),
            c
        );
        // every row read, none, or no rows at all
        let full = Csr::from_dense(MatRef::new(&[1.0; 6], 2, 3).unwrap(), 0.0).unwrap();
        assert_eq!(full.rows_read(), None);
        assert_eq!(full.rows_read_count(), 3);
        assert_eq!(
            Csr::zeros(3, 2).unwrap().rows_read(),
            Some(&[false, false][..])
        );
        assert_eq!(Csr::zeros(3, 0).unwrap().rows_read(), None);
        // the transpose reads W's rows that hold entries
        assert_eq!(c.transpose().csr().rows_read(), None);
        let t = Csr::zeros(2, 3).unwrap().transpose();
        assert_eq!(t.csr().rows_read(), Some(&[false, false][..]));
    }

    proptest! {
        #[test]
        fn dense_round_trip_and_transpose(rows in 0usize..20, cols in 0usize..20, d in 0.0f64..1.0, seed: u64) {
            let a = dense(rows, cols, d, seed);
            let m = MatRef::new(&a, rows, cols).unwrap();
            let c = Csr::from_dense(m, 0.0).unwrap();
            prop_assert_eq!(c.to_dense(), a.clone());
            prop_assert_eq!(c.nnz(), a.iter().filter(|x| **x != 0.0).count());
            let again = Csr::from_parts(rows, cols, c.row_ptr().to_vec(), c.col_idx().to_vec(), c.values().to_vec());
            prop_assert!(again.is_ok());
            let mut t = c.transpose();
            // perm and inv_perm are inverse permutations of 0..nnz
            prop_assert_eq!(t.inv_perm().len(), c.nnz());
            for (q, &p) in t.perm().iter().enumerate() { prop_assert_eq!(t.inv_perm()[p as usize] as usize, q); }
            let td = t.csr().to_dense();
            for i in 0..rows { for j in 0..cols { prop_assert_eq!(td[j * rows + i], a[i * cols + j]); } }
            // values-only update, re-transposed through the permutation
            let mut c2 = c.clone();
            for v in c2.values_mut() { *v *= -3.0; }
            t.refresh(&c2).unwrap();
            let fresh = c2.transpose();
            prop_assert_eq!(t.csr(), fresh.csr());
            prop_assert!(Csr::from_parts(t.csr().rows(), t.csr().cols(), t.csr().row_ptr().to_vec(),
                t.csr().col_idx().to_vec(), t.csr().values().to_vec()).is_ok());
        }

        /// The threaded refresh gives the same transpose as the sequential one (and as a fresh
        /// transpose), below and above the size where it splits, on 2 and 3 threads.
        #[test]
        fn refresh_par_equals_refresh(rows in 1usize..300, cols in 1usize..300, seed: u64, threads in 2usize..4) {
            let a = dense(rows, cols, 0.4, seed);
            let c = Csr::from_dense(MatRef::new(&a, rows, cols).unwrap(), 0.0).unwrap();
            let mut c2 = c.clone();
            for (i, v) in c2.values_mut().iter_mut().enumerate() { *v = *v * 0.5 - i as f32; }
            let (mut seq, mut par) = (c.transpose(), c.transpose());
            seq.refresh(&c2).unwrap();
            par.refresh_par(&c2, Par::Rayon(threads)).unwrap();
            prop_assert_eq!(par.csr(), seq.csr());
            let fresh = c2.transpose();
            prop_assert_eq!(par.csr(), fresh.csr());
            // a source of another shape: an error, for the threaded path too
            let other = Csr::from_dense(MatRef::new(&a, cols, rows).unwrap(), 0.0).unwrap();
            if rows != cols { prop_assert!(par.refresh_par(&other, Par::Rayon(threads)).is_err()); }
        }

        #[test]
        fn topk_keeps_exactly_k_largest(rows in 1usize..12, cols in 1usize..12, seed: u64, frac in 0.0f64..=1.0) {
            let mut a = dense(rows, cols, 0.8, seed);
            // force ties
            for x in a.iter_mut().step_by(3) { *x = x.signum() * 1.0; }
            let n = rows * cols;
            let k = ((n as f64) * frac).round() as usize;
            let c = Csr::from_topk(MatRef::new(&a, rows, cols).unwrap(), k).unwrap();
            prop_assert_eq!(c.nnz(), k);
            let kept = c.mask();
            let min_kept = (0..n).filter(|&i| kept[i]).map(|i| a[i].abs()).fold(f32::INFINITY, f32::min);
            let max_drop = (0..n).filter(|&i| !kept[i]).map(|i| a[i].abs()).fold(0.0f32, f32::max);
            if k > 0 && k < n { prop_assert!(min_kept >= max_drop); }
            // tie rule: a dropped entry equal to a kept one comes later in row-major order
            for i in 0..n { for j in 0..n {
                if kept[i] && !kept[j] && a[i].abs() == a[j].abs() { prop_assert!(i < j); }
            }}
        }
    }

    #[test]
    fn validation_names_first_violation() {
        let bad = |rp: Vec<usize>, ci: Vec<u32>| {
            let n = ci.len();
            Csr::from_parts(2, 3, rp, ci, vec![1.0; n])
                .unwrap_err()
                .to_string()
        };
        assert!(bad(vec![0, 1], vec![0]).contains("rows + 1"));
        // rows + 1 overflows usize: a length mismatch, not an arithmetic panic
        let e = Csr::from_parts(usize::MAX, 1, vec![], vec![], vec![]).unwrap_err();
        assert!(
            e.to_string()
                .contains("row_ptr has 0 entries, expected rows + 1 = 18446744073709551616"),
            "{e}"
        );
        assert!(bad(vec![1, 1, 1], vec![0]).contains("row_ptr[0]"));
        assert!(bad(vec![0, 2, 1], vec![0, 1]).contains("decreases at row 1"));
        assert!(bad(vec![0, 3, 1], vec![0]).contains("decreases at row 1"));
        assert!(bad(vec![0, 1, 2], vec![0, 3]).contains("row 1: column index 3 out of range"));
        assert!(bad(vec![0, 2, 2], vec![1, 1]).contains("row 0: duplicate"));
        assert!(bad(vec![0, 2, 2], vec![2, 1]).contains("row 0: unsorted"));
        assert!(bad(vec![0, 1, 3], vec![0, 1]).contains("row_ptr[2] = 3"));
        assert!(Csr::from_parts(1, 2, vec![0, 1], vec![0], vec![]).is_err());
        assert!(Csr::from_dense(MatRef::new(&[1.0], 1, 1).unwrap(), -1.0).is_err());
        assert!(Csr::from_topk(MatRef::new(&[1.0], 1, 1).unwrap(), 2).is_err());
        assert!(Csr::from_mask(MatRef::new(&[1.0], 1, 1).unwrap(), &[]).is_err());
    }

    #[test]
    fn zeros_checks_its_sizes() {
        let z = Csr::zeros(3, 4).unwrap();
        assert_eq!(
            (z.rows(), z.cols(), z.nnz(), z.row_ptr()),
            (3, 4, 0, &[0; 4][..])
        );
        // the documented invariant cols <= u32::MAX holds for this constructor too
        let e = Csr::zeros(2, 1 << 33).unwrap_err();
        assert!(
            e.to_string().contains("8589934592 columns exceed u32"),
            "{e}"
        );
        // rows + 1 overflows, or the offsets cannot fit: errors, not a panic or an abort
        let e = Csr::zeros(usize::MAX, 1).unwrap_err();
        assert!(e.to_string().contains("rows + 1 overflows"), "{e}");
        if lopper_tensor::mem::physical_memory().is_some_and(|m| m < 1 << 60) {
            let e = Csr::zeros(1 << 60, 1).unwrap_err();
            assert!(
                e.to_string()
                    .contains("row offsets of 1152921504606846976 rows"),
                "{e}"
            );
        }
    }

    #[test]
    fn mask_keeps_explicit_zeros() {
        let a = [0.0, 5.0, 0.0, 1.0];
        let c =
            Csr::from_mask(MatRef::new(&a, 2, 2).unwrap(), &[true, false, false, true]).unwrap();
        assert_eq!(c.nnz(), 2);
        assert_eq!(c.col_idx(), &[0, 1]);
        assert_eq!(c.values(), &[0.0, 1.0]);
    }
}
