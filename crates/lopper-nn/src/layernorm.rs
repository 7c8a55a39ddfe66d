//! LayerNorm over the last axis: `out = (x - mean) * rstd * w + b`, eps = 1e-5 (as GPT-2).
use crate::error::check_len;
use crate::{ParamMut, Result};

const EPS: f32 = 1e-5;

/// LayerNorm with weight (C) and bias (C), initialized to 1 and 0.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// Dotted name, e.g. `h.0.ln_1`.
    pub name: String,
    c: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

impl LayerNorm {
    /// A LayerNorm over `c` features.
    pub fn new(name: &str, c: usize) -> LayerNorm {
        LayerNorm {
            name: name.into(),
            c,
            w: vec![1.0; c],
            b: vec![0.0; c],
            dw: vec![0.0; c],
            db: vec![0.0; c],
        }
    }

    /// Zeroes the gradients.
    pub fn zero_grad(&mut self) {
        self.dw.fill(0.0);
        self.db.fill(0.0);
    }

    /// `{name}.weight`, `{name}.bias`.
    pub fn params<'a>(&'a mut self, out: &mut Vec<ParamMut<'a>>) {
        out.push(ParamMut {
            name: format!("{}.weight", self.name),
            values: &mut self.w,
            grad: &self.dw,
            mask: None,
        });
        out.push(ParamMut {
            name: format!("{}.bias", self.name),
            values: &mut self.b,
            grad: &self.db,
            mask: None,
        });
    }

    /// x (N, C) -> out (N, C); mean (N) and rstd (N) are saved for the backward.
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) -> Result<()> {
        let c = self.c;
        check_len(&self.name, "input", x.len(), n * c)?;
        check_len(&self.name, "output", out.len(), n * c)?;
        check_len(&self.name, "mean", mean.len(), n)?;
        check_len(&self.name, "rstd", rstd.len(), n)?;
        for i in 0..n {
            let xr = &x[i * c..(i + 1) * c];
            let m = xr.iter().sum::<f32>() / c as f32;
            let v = xr.iter().map(|&a| (a - m) * (a - m)).sum::<f32>() / c as f32;
            let s = 1.0 / (v + EPS).sqrt();
            let o = &mut out[i * c..(i + 1) * c];
            for j in 0..c {
                o[j] = (xr[j] - m) * s * self.w[j] + self.b[j];
            }
            mean[i] = m;
            rstd[i] = s;
        }
        Ok(())
    }

    /// dw, db `+=`; dx (N, C) `=`.
    pub fn backward(
        &mut self,
        x: &[f32],
        dout: &[f32],
        mean: &[f32],
        rstd: &[f32],
        n: usize,
        dx: &mut [f32],
    ) -> Result<()> {
        let c = self.c;
        check_len(&self.name, "input", x.len(), n * c)?;
        check_len(&self.name, "output gradient", dout.len(), n * c)?;
        check_len(&self.name, "input gradient", dx.len(), n * c)?;
        check_len(&self.name, "mean", mean.len(), n)?;
        check_len(&self.name, "rstd", rstd.len(), n)?;
        for i in 0..n {
            let (xr, dr) = (&x[i * c..(i + 1) * c], &dout[i * c..(i + 1) * c]);
            let (m, s) = (mean[i], rstd[i]);
            // dnorm = dout * w; mean(dnorm) and mean(dnorm * norm) over the row
            let (mut a, mut b) = (0.0f32, 0.0f32);
            for j in 0..c {
                let norm = (xr[j] - m) * s;
                let dn = dr[j] * self.w[j];
                a += dn;
                b += dn * norm;
                self.db[j] += dr[j];
                self.dw[j] += norm * dr[j];
            }
            let (a, b) = (a / c as f32, b / c as f32);
            let o = &mut dx[i * c..(i + 1) * c];
            for j in 0..c {
                let norm = (xr[j] - m) * s;
                o[j] = s * (dr[j] * self.w[j] - a - norm * b);
            }
        }
        Ok(())
    }
}
