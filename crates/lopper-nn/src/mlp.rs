//! A multi-layer perceptron classifier: Linear, activation, ..., Linear, softmax cross-entropy.
//! Layer i is `fc.{i}`; x (B, in) -> h_1 (B, d_1) -> ... -> logits (B, classes).
use crate::activation::{gelu_backward_from_output, gelu_forward, relu_backward, relu_forward};
use crate::error::{invalid, shape};
use crate::flops::StepFlops;
use crate::loss::{cross_entropy_backward, cross_entropy_forward};
use crate::util::ensure;
use crate::{Linear, ParamMut, Result};

/// The activation between Linear layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpActivation {
    /// `max(x, 0)`.
    Relu,
    /// GELU, tanh approximation.
    Gelu,
}

/// An MLP with explicit forward and backward.
pub struct Mlp {
    layers: Vec<Linear>,
    act: MlpActivation,
    // pre[i]: output of layer i (B, d_{i+1}); post[i]: activation of pre[i] (input of layer i + 1)
    x: Vec<f32>,
    pre: Vec<Vec<f32>>,
    post: Vec<Vec<f32>>,
    probs: Vec<f32>,
    targets: Vec<u32>,
    d: Vec<f32>,
    d2: Vec<f32>,
    batch: usize,
    ready: bool,
}

impl Mlp {
    /// `sizes = [in, hidden..., classes]` (at least 2 entries); weights N(0, 2/fan_in), zero bias.
    pub fn new(sizes: &[usize], act: MlpActivation, seed: u64) -> Result<Mlp> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(invalid(
                "mlp",
                format!("sizes {sizes:?}: need at least in and out, all > 0"),
            ));
        }
        // weights and their gradients (2 floats each) of sizes given as numbers: refused when
        // they cannot fit, never an abort
        let params = sizes.windows(2).try_fold(0usize, |acc, w| {
            w[0].checked_add(1)?.checked_mul(w[1])?.checked_add(acc)
        });
        let what = format!("mlp {sizes:?}: weights and gradients");
        let params = params.ok_or_else(|| {
            lopper_tensor::Error::Memory(format!("{what}: the parameter count overflows"))
        })?;
        lopper_tensor::mem::check_bytes(&what, params, 8)?;
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                Linear::new(
                    &format!("fc.{i}"),
                    w[0],
                    w[1],
                    true,
                    (2.0 / w[0] as f32).sqrt(),
                    // wrapping, as in release builds: any seed is valid (u64::MAX panicked in debug)
                    seed.wrapping_mul(100).wrapping_add(i as u64),
                )
            })
            .collect();
        Ok(Mlp {
            layers,
            act,
            x: vec![],
            pre: vec![],
            post: vec![],
            probs: vec![],
            targets: vec![],
            d: vec![],
            d2: vec![],
            batch: 0,
            ready: false,
        })
    }

    /// The Linear layers, to change their weight kinds.
    pub fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.layers.iter_mut()
    }

    /// The Linear layers, shared.
    pub fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers.iter()
    }

    /// Every trainable parameter.
    pub fn params(&mut self) -> Vec<ParamMut<'_>> {
        let mut out = Vec::new();
        for l in &mut self.layers {
            l.params(&mut out);
        }
        out
    }

    /// Sets the storage precision of every layer (see [`crate::Precision`]; the MLP's own
    /// activation buffers stay f32).
    pub fn set_precision(&mut self, p: crate::Precision) {
        for l in &mut self.layers {
            l.set_precision(p);
        }
        self.ready = false;
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        self.layers.iter_mut().for_each(Linear::zero_grad);
    }

    /// Logits (B, classes) of the last forward.
    pub fn logits(&self) -> &[f32] {
        self.pre.last().map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// FLOPs of a forward + backward over `b` rows.
    pub fn flops(&self, b: usize) -> StepFlops {
        let mut f = StepFlops::default();
        for l in &self.layers {
            f += l.flops(b);
        }
        f
    }

    /// Mean cross-entropy of x (B, in) against `targets` (B); keeps activations for the backward.
    pub fn forward(&mut self, x: &[f32], targets: &[u32]) -> Result<f32> {
        let b = targets.len();
        let inw = self.layers[0].in_features();
        // an empty batch has no mean loss (it returned 0, and the backward after it panicked)
        if b == 0 {
            return Err(invalid("mlp", "empty batch: need at least one target"));
        }
        if b.checked_mul(inw) != Some(x.len()) {
            return Err(shape(
                "mlp",
                format!("input has {} elements, expected {b} x {inw}", x.len()),
            ));
        }
        self.ready = false;
        let nl = self.layers.len();
        self.pre.resize_with(nl, Vec::new);
        self.post.resize_with(nl, Vec::new);
        self.x.clear();
        self.x.extend_from_slice(x);
        for i in 0..nl {
            let out_w = self.layers[i].out_features();
            ensure(&mut self.pre[i], b * out_w);
            let (input, pre) = if i == 0 {
                (&self.x, &mut self.pre[0])
            } else {
                (&self.post[i - 1], &mut self.pre[i])
            };
            self.layers[i].forward(input, b, pre)?;
            if i + 1 < nl {
                ensure(&mut self.post[i], b * out_w);
                match self.act {
                    MlpActivation::Relu => relu_forward(&self.pre[i], &mut self.post[i])?,
                    MlpActivation::Gelu => gelu_forward(&self.pre[i], &mut self.post[i])?,
                }
            }
        }
        let classes = self.layers[nl - 1].out_features();
        ensure(&mut self.probs, b * classes);
        let loss = cross_entropy_forward(&self.pre[nl - 1], targets, classes, &mut self.probs)?;
        self.targets.clear();
        self.targets.extend_from_slice(targets);
        self.batch = b;
        self.ready = true;
        Ok(loss)
    }

    /// Backward of the last forward: parameter gradients `+=`.
    pub fn backward(&mut self) -> Result<()> {
        if !self.ready {
            return Err(invalid("mlp", "backward without a successful forward"));
        }
        let (b, nl) = (self.batch, self.layers.len());
        let classes = self.layers[nl - 1].out_features();
        ensure(&mut self.d, b * classes);
        cross_entropy_backward(&self.probs, &self.targets, classes, &mut self.d)?; // d = dlogits
        for i in (0..nl).rev() {
            let inw = self.layers[i].in_features();
            ensure(&mut self.d2, b * inw);
            let input = if i == 0 { &self.x } else { &self.post[i - 1] };
            self.layers[i].backward(input, &self.d, b, &mut self.d2)?; // d2 = d input
            if i > 0 {
                ensure(&mut self.d, b * inw);
                match self.act {
                    MlpActivation::Relu => relu_backward(&self.pre[i - 1], &self.d2, &mut self.d)?,
                    MlpActivation::Gelu => gelu_backward_from_output(
                        &self.pre[i - 1],
                        &self.post[i - 1],
                        &self.d2,
                        &mut self.d,
                        lopper_tensor::Par::Seq,
                    )?,
                }
            }
        }
        Ok(())
    }
}
