//! What the trainer trains: [`Model`] (forward with loss, backward, parameters, Linear layers by
//! name, FLOPs), implemented for lopper-nn's [`Gpt`] and [`Mlp`]; and [`Batch`].
use crate::{Result, invalid};
use lopper_nn::flops::StepFlops;
use lopper_nn::{Gpt, Linear, Mlp, ParamMut};

/// One batch of examples with their targets.
#[derive(Clone, Debug, PartialEq)]
pub enum Batch {
    /// Token sequences: `tokens` and `targets` are (b, t) row-major; targets are the next tokens.
    Tokens {
        tokens: Vec<u32>,
        targets: Vec<u32>,
        b: usize,
        t: usize,
    },
    /// Feature rows: `x` is (rows, dim) row-major; one class label per row.
    Features {
        x: Vec<f32>,
        dim: usize,
        targets: Vec<u32>,
    },
}

impl Batch {
    /// Number of predictions the loss averages over (tokens, or rows).
    pub fn examples(&self) -> usize {
        match self {
            Batch::Tokens { targets, .. } | Batch::Features { targets, .. } => targets.len(),
        }
    }
    /// The targets, one per prediction.
    pub fn targets(&self) -> &[u32] {
        match self {
            Batch::Tokens { targets, .. } | Batch::Features { targets, .. } => targets,
        }
    }
}

/// A trainable model: the trainer calls `zero_grad`, `forward`, `backward`, then hands `params`
/// to the optimizer. Compression stages change the kinds of the layers from `linears_mut`.
pub trait Model: Send {
    /// `gpt` or `mlp`.
    fn kind(&self) -> &'static str;
    /// Mean loss of the batch; keeps what `backward` needs.
    fn forward(&mut self, batch: &Batch) -> Result<f32>;
    /// Gradients of the last forward: parameter gradients `+=`.
    fn backward(&mut self) -> Result<()>;
    /// Zeroes every gradient.
    fn zero_grad(&mut self);
    /// Every trainable parameter (stable order and names between steps unless a layer changes
    /// kind).
    fn params(&mut self) -> Vec<ParamMut<'_>>;
    /// Every Linear layer (its `name` is the prefix of its parameters' names).
    fn linears_mut(&mut self) -> Vec<&mut Linear>;
    /// Every Linear layer, shared.
    fn linears(&self) -> Vec<&Linear>;
    /// FLOPs of one training step (forward + backward) on this batch: executed vs dense-equivalent.
    fn flops(&self, batch: &Batch) -> StepFlops;
    /// Logits of the last forward, (examples, classes) row-major.
    fn logits(&self) -> &[f32];
    /// Copies `values` into the parameter `name`.
    fn set_param(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let mut ps = self.params();
        let p = ps
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| invalid(format!("parameter {name}"), "no such parameter"))?;
        if p.values.len() != values.len() {
            return Err(invalid(
                format!("parameter {name}"),
                format!(
                    "{} values for a parameter of {}",
                    values.len(),
                    p.values.len()
                ),
            ));
        }
        p.values.copy_from_slice(values);
        Ok(())
    }
    /// Number of trainable values (stored values of sparse weights, factors of low-rank ones).
    fn num_params(&mut self) -> usize {
        self.params().iter().map(|p| p.values.len()).sum()
    }
}

fn wrong_batch(model: &str, want: &str) -> crate::Error {
    invalid(model, format!("needs a {want} batch"))
}

impl Model for Gpt {
    fn kind(&self) -> &'static str {
        "gpt"
    }
    fn forward(&mut self, batch: &Batch) -> Result<f32> {
        match batch {
            Batch::Tokens {
                tokens,
                targets,
                b,
                t,
            } => Ok(Gpt::forward(self, tokens, targets, *b, *t)?),
            Batch::Features { .. } => Err(wrong_batch("gpt", "token")),
        }
    }
    fn backward(&mut self) -> Result<()> {
        Ok(Gpt::backward(self)?)
    }
    fn zero_grad(&mut self) {
        Gpt::zero_grad(self)
    }
    fn params(&mut self) -> Vec<ParamMut<'_>> {
        Gpt::params(self)
    }
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        Gpt::linears_mut(self).collect()
    }
    fn linears(&self) -> Vec<&Linear> {
        Gpt::linears(self).collect()
    }
    fn flops(&self, batch: &Batch) -> StepFlops {
        match batch {
            Batch::Tokens { b, t, .. } => Gpt::flops(self, *b, *t),
            Batch::Features { .. } => StepFlops::default(),
        }
    }
    fn logits(&self) -> &[f32] {
        Gpt::logits(self)
    }
}

impl Model for Mlp {
    fn kind(&self) -> &'static str {
        "mlp"
    }
    fn forward(&mut self, batch: &Batch) -> Result<f32> {
        match batch {
            Batch::Features { x, targets, .. } => Ok(Mlp::forward(self, x, targets)?),
            Batch::Tokens { .. } => Err(wrong_batch("mlp", "feature")),
        }
    }
    fn backward(&mut self) -> Result<()> {
        Ok(Mlp::backward(self)?)
    }
    fn zero_grad(&mut self) {
        Mlp::zero_grad(self)
    }
    fn params(&mut self) -> Vec<ParamMut<'_>> {
        Mlp::params(self)
    }
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        Mlp::linears_mut(self).collect()
    }
    fn linears(&self) -> Vec<&Linear> {
        Mlp::linears(self).collect()
    }
    fn flops(&self, batch: &Batch) -> StepFlops {
        Mlp::flops(self, batch.examples())
    }
    fn logits(&self) -> &[f32] {
        Mlp::logits(self)
    }
}

/// Fraction of rows whose arg-max logit is the target (`classes` columns per row).
pub fn accuracy(logits: &[f32], targets: &[u32], classes: usize) -> f64 {
    if targets.is_empty() || classes == 0 {
        return 0.0;
    }
    let hits = logits
        .chunks_exact(classes)
        .zip(targets)
        .filter(|(row, t)| {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                );
            best.0 == **t as usize
        })
        .count();
    hits as f64 / targets.len() as f64
}
