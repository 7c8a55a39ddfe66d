//! LayerNorm over the last axis: `out = (x - mean) * rstd * w + b`, eps = 1e-5 (as GPT-2).
use crate::error::check_len;
use crate::kernels::{has_avx2, has_avx512, sum};
use crate::util::simd_clones;
use crate::{ParamMut, Result};
use lopper_tensor::Par;
use rayon::prelude::*;

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
    par: Par,
    /// Per-task partial dw, db of a parallel backward.
    partial: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Elements (N * C) from which forward and backward split their rows over rayon.
const PAR_MIN: usize = 1 << 15;

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
            par: Par::rayon(),
            partial: Vec::new(),
        }
    }

    /// Parallelism over rows (default: the rayon pool, for N * C >= 32K).
    pub fn set_par(&mut self, par: Par) {
        self.par = par;
    }

    /// Rows per task, or `None` to stay on the caller's thread.
    fn split(&self, n: usize) -> Option<usize> {
        let t = self.par.threads();
        (t > 1 && n * self.c >= PAR_MIN && n >= 2).then(|| n.div_ceil(t.min(n)))
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
        if c == 0 {
            return Ok(());
        }
        let (w, b) = (&self.w, &self.b);
        let run = |x: &[f32], out: &mut [f32], mean: &mut [f32], rstd: &mut [f32]| {
            #[cfg(target_arch = "x86_64")]
            if has_avx512() {
                // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
                unsafe { ln_forward_avx512(x, c, w, b, out, mean, rstd) };
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                unsafe { ln_forward_avx2(x, c, w, b, out, mean, rstd) };
                return;
            }
            ln_forward_body(x, c, w, b, out, mean, rstd);
        };
        match self.split(n) {
            Some(r) => out
                .par_chunks_mut(r * c)
                .zip(x.par_chunks(r * c))
                .zip(mean.par_chunks_mut(r).zip(rstd.par_chunks_mut(r)))
                .for_each(|((o, x), (m, s))| run(x, o, m, s)),
            None => run(x, out, mean, rstd),
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
        if c == 0 {
            return Ok(());
        }
        let run = |x: &[f32], d: &[f32], m: &[f32], s: &[f32], g: Grads<'_>, dx: &mut [f32]| {
            #[cfg(target_arch = "x86_64")]
            if has_avx512() {
                // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked just above).
                unsafe { ln_backward_avx512(x, d, m, s, c, g, dx) };
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                unsafe { ln_backward_avx2(x, d, m, s, c, g, dx) };
                return;
            }
            ln_backward_body(x, d, m, s, c, g, dx);
        };
        let Some(r) = self.split(n) else {
            let g = Grads {
                w: &self.w,
                dw: &mut self.dw,
                db: &mut self.db,
            };
            run(x, dout, mean, rstd, g, dx);
            return Ok(());
        };
        // each task accumulates into its own zeroed partial dw, db; summed below
        let tasks = n.div_ceil(r);
        self.partial.resize_with(tasks, Default::default);
        for (pw, pb) in &mut self.partial {
            pw.clear();
            pw.resize(c, 0.0);
            pb.clear();
            pb.resize(c, 0.0);
        }
        let w = &self.w;
        dx.par_chunks_mut(r * c)
            .zip(x.par_chunks(r * c).zip(dout.par_chunks(r * c)))
            .zip(mean.par_chunks(r).zip(rstd.par_chunks(r)))
            .zip(self.partial.par_iter_mut())
            .for_each(|(((o, (x, d)), (m, s)), (pw, pb))| {
                let g = Grads { w, dw: pw, db: pb };
                run(x, d, m, s, g, o);
            });
        for (pw, pb) in &self.partial[..tasks] {
            crate::util::add_into(&mut self.dw, pw);
            crate::util::add_into(&mut self.db, pb);
        }
        Ok(())
    }
}

/// Lanes of the row reductions: 4 independent AVX2 vectors (2 of AVX-512), so that the sums are
/// not one long chain of dependent adds.
const LANES: usize = 32;

/// The weight and the gradients a backward accumulates into.
struct Grads<'a> {
    w: &'a [f32],
    dw: &'a mut [f32],
    db: &'a mut [f32],
}

#[inline(always)]
fn ln_forward_body(
    x: &[f32],
    c: usize,
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let inv_c = 1.0 / c as f32;
    for (((xr, o), m_out), s_out) in x
        .chunks_exact(c)
        .zip(out.chunks_exact_mut(c))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        let m = sum(xr) * inv_c;
        // variance as a sum of squares of (x - m), LANES lanes
        let mut acc = [0.0f32; LANES];
        let ch = xr.chunks_exact(LANES);
        let rem: f32 = ch.remainder().iter().map(|&a| (a - m) * (a - m)).sum();
        for q in ch {
            for l in 0..LANES {
                acc[l] += (q[l] - m) * (q[l] - m);
            }
        }
        let v = (acc.iter().sum::<f32>() + rem) * inv_c;
        let s = 1.0 / (v + EPS).sqrt();
        for (((o, &a), &wj), &bj) in o.iter_mut().zip(xr).zip(w).zip(b) {
            *o = (a - m) * s * wj + bj;
        }
        *m_out = m;
        *s_out = s;
    }
}

#[inline(always)]
fn ln_backward_body(
    x: &[f32],
    dout: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
    g: Grads<'_>,
    dx: &mut [f32],
) {
    let inv_c = 1.0 / c as f32;
    let Grads { w, dw, db } = g;
    for ((((xr, dr), o), &m), &s) in x
        .chunks_exact(c)
        .zip(dout.chunks_exact(c))
        .zip(dx.chunks_exact_mut(c))
        .zip(mean)
        .zip(rstd)
    {
        // dnorm = dout * w; mean(dnorm) and mean(dnorm * norm) over the row (LANES lanes)
        let (mut a8, mut b8) = ([0.0f32; LANES], [0.0f32; LANES]);
        let (cx, cd, cw) = (
            xr.chunks_exact(LANES),
            dr.chunks_exact(LANES),
            w.chunks_exact(LANES),
        );
        let (rx, rd, rw) = (cx.remainder(), cd.remainder(), cw.remainder());
        for ((qx, qd), qw) in cx.zip(cd).zip(cw) {
            for l in 0..LANES {
                let norm = (qx[l] - m) * s;
                let dn = qd[l] * qw[l];
                a8[l] += dn;
                b8[l] += dn * norm;
            }
        }
        let (mut a, mut b) = (a8.iter().sum::<f32>(), b8.iter().sum::<f32>());
        for ((&xv, &dv), &wv) in rx.iter().zip(rd).zip(rw) {
            let norm = (xv - m) * s;
            a += dv * wv;
            b += dv * wv * norm;
        }
        let (a, b) = (a * inv_c, b * inv_c);
        for (((((o, &xv), &dv), &wv), dwj), dbj) in o
            .iter_mut()
            .zip(xr)
            .zip(dr)
            .zip(w)
            .zip(dw.iter_mut())
            .zip(db.iter_mut())
        {
            let norm = (xv - m) * s;
            *dbj += dv;
            *dwj += norm * dv;
            *o = s * (dv * wv - a - norm * b);
        }
    }
}

simd_clones!(ln_forward_avx2, ln_forward_avx512: fn(
    x: &[f32],
    c: usize,
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) => ln_forward_body(x, c, w, b, out, mean, rstd));

simd_clones!(ln_backward_avx2, ln_backward_avx512: fn(
    x: &[f32],
    dout: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
    g: Grads<'_>,
    dx: &mut [f32],
) => ln_backward_body(x, dout, mean, rstd, c, g, dx));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_rows_match_one_thread() {
        let (n, c) = (301, 130); // above the parallel threshold, rows not divisible by the tasks
        let x: Vec<f32> = (0..n * c)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03)
            .collect();
        let d: Vec<f32> = (0..n * c)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) * 0.1)
            .collect();
        let mut one = LayerNorm::new("ln", c);
        one.set_par(Par::Seq);
        let mut many = LayerNorm::new("ln", c);
        many.set_par(Par::Rayon(3));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let mut outs = Vec::new();
        for l in [&mut one, &mut many] {
            let (mut o, mut m, mut s, mut dx) = (
                vec![0.0; n * c],
                vec![0.0; n],
                vec![0.0; n],
                vec![0.0; n * c],
            );
            pool.install(|| {
                l.forward(&x, n, &mut o, &mut m, &mut s).unwrap();
                l.backward(&x, &d, &m, &s, n, &mut dx).unwrap();
            });
            outs.push((o, dx, l.dw.clone(), l.db.clone()));
        }
        assert_eq!(outs[0].0, outs[1].0);
        assert_eq!(outs[0].1, outs[1].1);
        for (a, b) in outs[0]
            .2
            .iter()
            .zip(&outs[1].2)
            .chain(outs[0].3.iter().zip(&outs[1].3))
        {
            assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}
