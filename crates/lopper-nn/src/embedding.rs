//! Embedding: `out[n] = table[ids[n]]`, table (V, C).
use crate::error::{check_len, invalid};
use crate::util::randn;
use crate::{ParamMut, Result};

/// A lookup table (V, C) with its gradient.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// Dotted name, e.g. `wte`.
    pub name: String,
    vocab: usize,
    dim: usize,
    /// The table (V, C), row-major.
    pub(crate) w: Vec<f32>,
    pub(crate) dw: Vec<f32>,
}

impl Embedding {
    /// N(0, std^2) table, deterministic in `seed`.
    pub fn new(name: &str, vocab: usize, dim: usize, std: f32, seed: u64) -> Embedding {
        Embedding {
            name: name.into(),
            vocab,
            dim,
            w: randn(vocab * dim, std, seed),
            dw: vec![0.0; vocab * dim],
        }
    }
    /// Rows V.
    pub fn vocab(&self) -> usize {
        self.vocab
    }
    /// Width C.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The table (V, C).
    pub fn table(&self) -> &[f32] {
        &self.w
    }
    /// Zeroes the gradient.
    pub fn zero_grad(&mut self) {
        self.dw.fill(0.0);
    }
    /// `{name}.weight`.
    pub fn params<'a>(&'a mut self, out: &mut Vec<ParamMut<'a>>) {
        out.push(ParamMut {
            name: format!("{}.weight", self.name),
            values: &mut self.w,
            grad: &self.dw,
            mask: None,
        });
    }

    fn check(&self, ids: &[u32], out_len: usize) -> Result<()> {
        check_len(&self.name, "output", out_len, ids.len() * self.dim)?;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.vocab) {
            return Err(invalid(
                &self.name,
                format!("id {bad} out of range (vocabulary {})", self.vocab),
            ));
        }
        Ok(())
    }

    /// out (N, C) `=` rows `ids` (N).
    pub fn forward(&self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        self.check(ids, out.len())?;
        let c = self.dim;
        if c == 0 {
            return Ok(()); // rows of width 0: nothing to move
        }
        for (o, &i) in out.chunks_exact_mut(c).zip(ids) {
            o.copy_from_slice(&self.w[i as usize * c..(i as usize + 1) * c]);
        }
        Ok(())
    }

    /// out (N, C) `+=` rows `ids` (N) (to add position embeddings to token embeddings).
    pub fn forward_add(&self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        self.check(ids, out.len())?;
        let c = self.dim;
        if c == 0 {
            return Ok(()); // rows of width 0: nothing to move
        }
        for (o, &i) in out.chunks_exact_mut(c).zip(ids) {
            crate::util::add_into(o, &self.w[i as usize * c..(i as usize + 1) * c]);
        }
        Ok(())
    }

    /// `dtable[ids[n]] += dout[n]`.
    pub fn backward(&mut self, ids: &[u32], dout: &[f32]) -> Result<()> {
        self.check(ids, dout.len())?;
        let c = self.dim;
        if c == 0 {
            return Ok(()); // rows of width 0: nothing to move
        }
        for (d, &i) in dout.chunks_exact(c).zip(ids) {
            crate::util::add_into(&mut self.dw[i as usize * c..(i as usize + 1) * c], d);
        }
        Ok(())
    }
}
