//! The `mma.sp` m16n8k32 bf16 fragment layout of a 2:4 matrix: what the GPU kernel
//! `kernels/sparse24_spmm.cu` reads and `kernels/sparse24_compress.cu` writes (documented there too,
//! in `kernels/sparse24.cuh`). The CPU builds and reads it here so that a layout error shows up in
//! `cargo test` before any GPU run ([`Sparse24Fragments::spmm_emulated`] multiplies through the layout
//! exactly as the kernel indexes it).
//!
//! W (M, K) is cut into tiles of 16 rows x 32 columns (8 groups of 4); M is padded to `MT =
//! ceil(M/16)` tiles and K to `KT = ceil(K/32)`, padding groups holding zeros with code `0b0100`
//! (positions 0 and 1: a valid ordered code). Tile `(mt, kt)` has number `tile = mt * KT + kt`.
//! Within a tile, lane `l = 4g + t` of the warp (g = l/4, t = l%4) holds the A operand of
//! `mma.sp.m16n8k32` (the 16x16 compressed tile in the m16n8k16 A-fragment order):
//! - `values[(tile*32 + l)*4 + r]`, r = 0..4, a word of two bf16 (the lower kept column in bits 0-15):
//!   r = 0: row g, group t; r = 1: row g+8, group t; r = 2: row g, group t+4; r = 3: row g+8, group t+4.
//! - `meta[tile*16 + 2g + s]`, s = 0, 1: bits 0-15 are row g's codes for groups 4s..4s+3, bits 16-31
//!   row g+8's, code j at bits 4j (lower kept index in its low 2 bits). This is the metadata word lane
//!   `4g + s` passes to `mma.sp` with sparsity selector 0 (PTX ISA, "sparse matrix A metadata" for
//!   m16n8k32 with 16-bit types: threads 0 and 1 of each group of four supply it).
use crate::sparse24::meta_words;
use crate::{Error, Result, Sparse24};
use half::bf16;

/// Code of an all-padding group: kept positions 0 and 1.
const PAD_CODE: u32 = 0b0100;

/// A 2:4 matrix in the `mma.sp` m16n8k32 bf16 fragment layout (see the module docs). Values are
/// rounded to bf16 on the way in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sparse24Fragments {
    rows: usize,
    cols: usize,
    values: Vec<u32>,
    meta: Vec<u32>,
}

/// Row and group (both within the tile) of register `r` of lane `4g + t`.
#[inline]
fn reg_position(g: usize, t: usize, r: usize) -> (usize, usize) {
    (g + 8 * (r & 1), t + 4 * (r >> 1))
}

impl Sparse24Fragments {
    /// Tiles along M and K: `(ceil(M/16), ceil(K/32))`.
    pub fn tiles(rows: usize, cols: usize) -> (usize, usize) {
        (rows.div_ceil(16), cols.div_ceil(32))
    }

    /// Reorders a logical [`Sparse24`] into the fragment layout (values rounded to bf16).
    pub fn from_sparse24(s: &Sparse24) -> Sparse24Fragments {
        let (rows, cols) = (s.rows(), s.cols());
        let (mt_n, kt_n) = Self::tiles(rows, cols);
        let groups = cols / 4;
        let half = cols / 2;
        let mut values = vec![0u32; mt_n * kt_n * 128];
        let mut meta = vec![0u32; mt_n * kt_n * 16];
        // (value word, code) of row `row`, global group `grp`
        let cell = |row: usize, grp: usize| -> (u32, u32) {
            if row >= rows || grp >= groups {
                return (0, PAD_CODE);
            }
            let (a, b) = s.indices(row, grp);
            let lo = bf16::from_f32(s.values()[row * half + 2 * grp]).to_bits() as u32;
            let hi = bf16::from_f32(s.values()[row * half + 2 * grp + 1]).to_bits() as u32;
            (lo | (hi << 16), (a | (b << 2)) as u32)
        };
        for mt in 0..mt_n {
            for kt in 0..kt_n {
                let tile = mt * kt_n + kt;
                for lane in 0..32 {
                    let (g, t) = (lane / 4, lane % 4);
                    for r in 0..4 {
                        let (row, grp) = reg_position(g, t, r);
                        values[(tile * 32 + lane) * 4 + r] = cell(mt * 16 + row, kt * 8 + grp).0;
                    }
                }
                for g in 0..8 {
                    for sel in 0..2 {
                        let mut w = 0u32;
                        for j in 0..4 {
                            let grp = kt * 8 + 4 * sel + j;
                            w |= cell(mt * 16 + g, grp).1 << (4 * j);
                            w |= cell(mt * 16 + g + 8, grp).1 << (16 + 4 * j);
                        }
                        meta[tile * 16 + 2 * g + sel] = w;
                    }
                }
            }
        }
        Sparse24Fragments {
            rows,
            cols,
            values,
            meta,
        }
    }

    /// From raw layout words (e.g. downloaded from the GPU), lengths checked.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        values: Vec<u32>,
        meta: Vec<u32>,
    ) -> Result<Sparse24Fragments> {
        if !cols.is_multiple_of(4) {
            return Err(Error::Invalid24(format!(
                "K = {cols} is not a multiple of 4"
            )));
        }
        let (mt_n, kt_n) = Self::tiles(rows, cols);
        // in u128: claimed dimensions whose word counts overflow usize are a mismatch, not a panic
        let tiles = mt_n as u128 * kt_n as u128;
        if values.len() as u128 != tiles * 128 || meta.len() as u128 != tiles * 16 {
            return Err(Error::Invalid24(format!(
                "{rows}x{cols} fragments need {} value and {} metadata words, got {} and {}",
                tiles * 128,
                tiles * 16,
                values.len(),
                meta.len()
            )));
        }
        Ok(Sparse24Fragments {
            rows,
            cols,
            values,
            meta,
        })
    }

    /// The code of group `grp` (within the tile) of tile-row `row` of `tile`, as lane `4g + s` holds it.
    #[inline]
    fn code(&self, tile: usize, row: usize, grp: usize) -> u32 {
        let (g, upper) = (row % 8, row / 8);
        let word = self.meta[tile * 16 + 2 * g + grp / 4];
        (word >> (16 * upper + 4 * (grp % 4))) & 0xf
    }

    /// Back to the logical layout (bf16 values widened to f32). Errors if a code inside the matrix
    /// does not name two increasing positions.
    pub fn to_sparse24(&self) -> Result<Sparse24> {
        let (rows, cols) = (self.rows, self.cols);
        let (_, kt_n) = Self::tiles(rows, cols);
        let (half, mw) = (cols / 2, meta_words(cols));
        let mut values = vec![0.0f32; rows * half];
        let mut meta = vec![0u16; rows * mw];
        for row in 0..rows {
            for grp in 0..cols / 4 {
                let tile = (row / 16) * kt_n + grp / 8;
                let (tr, tg) = (row % 16, grp % 8);
                let code = self.code(tile, tr, tg);
                if code & 3 >= code >> 2 {
                    return Err(Error::Invalid24(format!(
                        "row {row}, group {grp}: fragment code {code:#06b} is not two increasing positions"
                    )));
                }
                let (g, t) = (tr % 8, tg % 4);
                let r = (tr / 8) | ((tg / 4) << 1);
                let w = self.values[(tile * 32 + 4 * g + t) * 4 + r];
                values[row * half + 2 * grp] = bf16::from_bits(w as u16).to_f32();
                values[row * half + 2 * grp + 1] = bf16::from_bits((w >> 16) as u16).to_f32();
                meta[row * mw + grp / 4] |= (code as u16) << (4 * (grp % 4));
            }
        }
        Sparse24::from_parts(rows, cols, values, meta)
    }

    /// `Y = W X` (X (K, N) row-major f32, Y (M, N)) computed from the layout alone, walking it as
    /// `sparse24_spmm` does: per tile and lane, the four value registers, each decoded with the code
    /// that the metadata lane `4g + s` supplies; X rows past K read as zero, rows past M are dropped.
    pub fn spmm_emulated(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        if self.cols.checked_mul(n) != Some(x.len()) {
            return Err(Error::Shape {
                op: "Sparse24Fragments::spmm_emulated",
                detail: format!("X has {} elements, need {}x{n}", x.len(), self.cols),
            });
        }
        let (mt_n, kt_n) = Self::tiles(self.rows, self.cols);
        let mut y = vec![0.0f32; self.rows * n];
        for mt in 0..mt_n {
            for kt in 0..kt_n {
                let tile = mt * kt_n + kt;
                for lane in 0..32 {
                    let (g, t) = (lane / 4, lane % 4);
                    for r in 0..4 {
                        let w = self.values[(tile * 32 + lane) * 4 + r];
                        let (tr, tg) = reg_position(g, t, r);
                        // metadata comes from lane 4g + s (s = tg / 4), half `tr / 8`, slot tg % 4
                        let code = self.code(tile, tr, tg);
                        let row = mt * 16 + tr;
                        if row >= self.rows {
                            continue;
                        }
                        let vals = [bf16::from_bits(w as u16), bf16::from_bits((w >> 16) as u16)];
                        for (i, v) in vals.iter().enumerate() {
                            let k = kt * 32 + 4 * tg + ((code >> (2 * i)) & 3) as usize;
                            if k >= self.cols {
                                continue;
                            }
                            let v = v.to_f32();
                            for c in 0..n {
                                y[row * n + c] += v * x[k * n + c];
                            }
                        }
                    }
                }
            }
        }
        Ok(y)
    }

    /// Rows (M).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Logical columns (K).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Value words: `ceil(M/16) * ceil(K/32) * 128`, two bf16 each.
    pub fn values(&self) -> &[u32] {
        &self.values
    }
    /// Metadata words: `ceil(M/16) * ceil(K/32) * 16`.
    pub fn meta(&self) -> &[u32] {
        &self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use lopper_tensor::{MatRef, Tensor};
    use proptest::prelude::*;

    /// A random 2:4 matrix whose values are exactly representable in bf16.
    fn random24(rows: usize, cols: usize, seed: u64) -> Sparse24 {
        let mut t = Tensor::randn(&[rows, cols], 1.0, seed)
            .as_f32()
            .unwrap()
            .to_vec();
        for x in t.iter_mut() {
            *x = bf16::from_f32(*x).to_f32();
        }
        Sparse24::from_dense_prune(MatRef::new(&t, rows, cols).unwrap()).unwrap()
    }

    proptest! {
        #[test]
        fn round_trip(rows in 0usize..40, groups in 0usize..20, seed: u64) {
            let s = random24(rows, 4 * groups, seed);
            let f = Sparse24Fragments::from_sparse24(&s);
            let (mt, kt) = Sparse24Fragments::tiles(rows, 4 * groups);
            prop_assert_eq!(f.values().len(), mt * kt * 128);
            prop_assert_eq!(f.to_sparse24().unwrap(), s);
            let g = Sparse24Fragments::from_parts(rows, 4 * groups, f.values().to_vec(), f.meta().to_vec()).unwrap();
            prop_assert_eq!(g, f);
        }

        #[test]
        fn emulated_kernel_matches_dense_reference(rows in 1usize..40, groups in 1usize..20, n in 1usize..9, seed: u64) {
            let cols = 4 * groups;
            let s = random24(rows, cols, seed);
            let x = Tensor::randn(&[cols, n], 1.0, seed ^ 7).as_f32().unwrap().to_vec();
            let y = Sparse24Fragments::from_sparse24(&s).spmm_emulated(&x, n).unwrap();
            let r = reference::spmm_24(&s, &x, n);
            for (a, b) in y.iter().zip(&r) {
                prop_assert!((*a as f64 - b).abs() <= reference::tolerance(cols, *b, 4.0), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn hand_checked_layout() {
        // 16 x 32: row i keeps positions (1, 3) of every group with values i*8 + group + 1 (exact in bf16)
        let (rows, cols) = (16, 32);
        let mut d = vec![0.0f32; rows * cols];
        for i in 0..rows {
            for g in 0..8 {
                d[i * cols + 4 * g + 1] = (i * 8 + g + 1) as f32;
                d[i * cols + 4 * g + 3] = -((i * 8 + g + 1) as f32);
            }
        }
        let s = Sparse24::from_dense_exact(MatRef::new(&d, rows, cols).unwrap()).unwrap();
        let f = Sparse24Fragments::from_sparse24(&s);
        let v = |w: u32| {
            (
                bf16::from_bits(w as u16).to_f32(),
                bf16::from_bits((w >> 16) as u16).to_f32(),
            )
        };
        // lane 5 = (g 1, t 1): r0 row 1 group 1, r1 row 9 group 1, r2 row 1 group 5, r3 row 9 group 5
        assert_eq!(v(f.values()[5 * 4]), (10.0, -10.0));
        assert_eq!(v(f.values()[5 * 4 + 1]), (74.0, -74.0));
        assert_eq!(v(f.values()[5 * 4 + 2]), (14.0, -14.0));
        assert_eq!(v(f.values()[5 * 4 + 3]), (78.0, -78.0));
        // every code is (1, 3) = 0b1101
        assert!(f.meta().iter().all(|&w| w == 0xdddd_dddd));
        // padding: 1 x 4 gives one real group, 7 padding groups and 15 padding rows
        let s =
            Sparse24::from_dense_exact(MatRef::new(&[0.0, 2.0, 0.0, 3.0], 1, 4).unwrap()).unwrap();
        let f = Sparse24Fragments::from_sparse24(&s);
        assert_eq!(f.meta()[0], 0x4444_444d);
        assert_eq!(f.meta()[1], 0x4444_4444);
    }

    #[test]
    fn bad_parts() {
        assert!(Sparse24Fragments::from_parts(1, 6, vec![], vec![]).is_err());
        assert!(Sparse24Fragments::from_parts(1, 4, vec![0; 128], vec![0; 15]).is_err());
        // word counts that overflow usize: an error, not an arithmetic panic
        assert!(Sparse24Fragments::from_parts(usize::MAX, 4, vec![], vec![]).is_err());
        assert!(Sparse24Fragments::from_parts(16, usize::MAX - 3, vec![], vec![]).is_err());
        let f = Sparse24Fragments::from_parts(1, 4, vec![0; 128], vec![0; 16]).unwrap();
        let e = f.spmm_emulated(&[], usize::MAX).unwrap_err();
        assert!(e.to_string().contains("spmm_emulated"), "{e}");
        assert!(
            f.to_sparse24()
                .unwrap_err()
                .to_string()
                .contains("increasing")
        );
    }
}
