//! Compression stages as [`Callback`](crate::Callback)s: they change the kinds of the model's
//! Linear layers during training and say so in the run's events.
//!
//! - [`GradualMagnitude`]: Zhu-Gupta polynomial magnitude pruning; a layer runs Masked (dense
//!   compute) while its sparsity is below `switch_to_csr_at`, then as Csr (compute scales with nnz).
//! - [`MaskedMagnitude`]: one-shot magnitude masks on dense compute (the usual way, a baseline).
//! - [`ToSparse24`], [`ToLowRank`], [`ToLora`]: one conversion of the selected layers at a step.
//! - [`Rigl`]: dynamic sparse training from the first step (RigL or SET growth, uniform or ERK
//!   layouts) on Csr layers.
//!
//! Timing: every stage changes layouts in `before_step` of the step it names (so that step's
//! forward, backward and optimizer update already see the new layout), except RigL's mask updates,
//! which need that step's dense gradient and run in `after_backward` (see [`Rigl`]).
//!
//! Whenever a parameter's layout changes, the stage calls [`Optimizer::remap`](crate::Optimizer)
//! with the gather from new stored entries to old ones ([`gather`]), so optimizer state follows
//! the surviving weights; a layer that becomes low-rank or LoRA drops its weight's state (fresh
//! state for the new factors).
//!
//! Resume: each stage's [`CallbackState`](crate::CallbackState) holds its masks (as 0/1 tensors)
//! or the step it already ran. After `load_state`, `on_begin` puts every layer it had changed
//! back into the saved kind and pattern, calling no remap, and leaves alone a layer that already
//! is (lopper-train's checkpoint loader restores the layers' kinds, patterns and values itself,
//! and the optimizer state in those layouts). So both orders resume exactly: the checkpoint's
//! model first, or `load_state` + `on_begin` first and then the parameter values (except LoRA,
//! whose frozen base is not a parameter: it needs the loader that restores layer weights).
#![warn(missing_docs)]
mod convert;
mod magnitude;
mod rigl;

pub use convert::{LowRankRule, ToLora, ToLowRank, ToSparse24};
pub use magnitude::{GradualMagnitude, GradualMagnitudeConfig, MaskedMagnitude};
pub use rigl::{Rigl, RiglConfig, RiglEnd};

pub use lopper_prune::dst::{Grow, Layout};

use crate::{Model, Optimizer, Result, invalid};
use lopper_nn::{Linear, Weight};
use lopper_prune::Scope;

/// Which Linear layers a stage touches: regexes on layer names (`h.0.mlp.fc`, `fc.1`, ...,
/// unanchored search). Embeddings are never Linear layers here, so the default (both `None`)
/// selects every Linear layer, the LM head included when it is untied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerScope {
    /// Only layers whose name matches.
    pub include: Option<String>,
    /// No layer whose name matches.
    pub exclude: Option<String>,
}

impl LayerScope {
    /// Every layer.
    pub fn all() -> Self {
        LayerScope::default()
    }
    /// The names of the selected layers of `model`, in the model's order. Errors (naming `stage`)
    /// on a malformed regex, a regex that matches no layer, or an empty selection.
    pub fn select(&self, model: &dyn Model, stage: &str) -> Result<Vec<String>> {
        let sel = self
            .selection(model)
            .map_err(|e| invalid(stage, e.to_string()))?;
        Ok(model
            .linears()
            .iter()
            .zip(sel)
            .filter(|(_, s)| *s)
            .map(|(l, _)| l.name.clone())
            .collect())
    }

    /// Which of `model`'s Linear layers (in order) are selected, with lopper-prune's typed
    /// errors (a malformed regex, one that matches no layer, an empty selection) for callers that
    /// point at the key at fault.
    pub fn selection(&self, model: &dyn Model) -> lopper_prune::Result<Vec<bool>> {
        let mut scope = Scope::layer();
        if let Some(re) = &self.include {
            scope = scope.include(re)?;
        }
        if let Some(re) = &self.exclude {
            scope = scope.exclude(re)?;
        }
        let layers = model.linears();
        let shapes: Vec<[usize; 2]> = layers
            .iter()
            .map(|l| [l.out_features(), l.in_features()])
            .collect();
        let tensors: Vec<(&str, &[usize])> = layers
            .iter()
            .zip(&shapes)
            .map(|(l, s)| (l.name.as_str(), &s[..]))
            .collect();
        scope.select(&tensors)
    }
}

/// The Linear layer `name` of `model`, or an error naming `stage`.
pub(crate) fn layer_mut<'a>(
    model: &'a mut dyn Model,
    name: &str,
    stage: &str,
) -> Result<&'a mut Linear> {
    model
        .linears_mut()
        .into_iter()
        .find(|l| l.name == name)
        .ok_or_else(|| invalid(stage, format!("the model has no Linear layer {name}")))
}

/// The flat (row-major, `r * K + c`) index of every stored weight entry, in stored order, for the
/// kinds whose trainable `.weight` parameter holds weight entries: Dense and Masked (all M*K),
/// Csr and Sparse24 (the pattern, row by row). `None` for LowRank and LoRA (no `.weight`).
pub fn stored_positions(w: &Weight, m: usize, k: usize) -> Option<Vec<usize>> {
    let from_csr = |row_ptr: &[usize], col_idx: &[u32]| {
        let mut out = Vec::with_capacity(col_idx.len());
        for r in 0..row_ptr.len() - 1 {
            for p in row_ptr[r]..row_ptr[r + 1] {
                out.push(r * k + col_idx[p] as usize);
            }
        }
        out
    };
    match w {
        Weight::Dense { .. } | Weight::Masked { .. } => Some((0..m * k).collect()),
        Weight::Csr { w, .. } => Some(from_csr(w.row_ptr(), w.col_idx())),
        Weight::Sparse24 { mirror, .. } => Some(from_csr(mirror.row_ptr(), mirror.col_idx())),
        Weight::LowRank { .. } | Weight::Lora { .. } => None,
    }
}

/// The gather for [`Optimizer::remap`] of a `.weight` parameter going from layout `old` to `new`
/// (both (m, k)): new stored entry `i` takes the state of the old stored entry at the same (r, c),
/// or fresh state (`None`) where the old layout did not store it or where a Masked new layout
/// masks it out. `None` overall when either side has no `.weight` parameter (state dropped).
pub fn gather(old: &Weight, new: &Weight, m: usize, k: usize) -> Option<Vec<Option<usize>>> {
    // Dense and Masked store every (r, c) at its flat index: no position list is built for them.
    // Other layouts list their positions in ascending flat order (row-major, CSR columns sorted),
    // so old entries are found by one forward merge instead of an (m * k) index table.
    let all = |w: &Weight| matches!(w, Weight::Dense { .. } | Weight::Masked { .. });
    let old_pos = if all(old) {
        None
    } else {
        Some(stored_positions(old, m, k)?)
    };
    let new_pos = if all(new) {
        None
    } else {
        Some(stored_positions(new, m, k)?)
    };
    fn mask_of(w: &Weight) -> Option<&[bool]> {
        match w {
            Weight::Masked { mask, .. } => Some(mask),
            _ => None,
        }
    }
    let (old_mask, new_mask) = (mask_of(old), mask_of(new));
    let mut cursor = 0; // into old_pos; the flat indices f below only increase
    let mut source = |f: usize| -> Option<usize> {
        let j = match &old_pos {
            None => f,
            Some(p) => {
                while cursor < p.len() && p[cursor] < f {
                    cursor += 1;
                }
                if cursor == p.len() || p[cursor] != f {
                    return None;
                }
                cursor
            }
        };
        let kept = new_mask.is_none_or(|mk| mk[f]) && old_mask.is_none_or(|mk| mk[f]);
        kept.then_some(j)
    };
    Some(match &new_pos {
        None => (0..m * k).map(&mut source).collect(),
        Some(p) => p.iter().map(|&f| source(f)).collect(),
    })
}

/// Converts layer `name` to `new` (built by `make` from the layer) and remaps the optimizer state
/// of its `.weight` (gather) or drops it (low-rank / LoRA on either side; their factors start
/// fresh). Returns the old kind's name.
pub(crate) fn replace_weight(
    model: &mut dyn Model,
    optimizer: &mut dyn Optimizer,
    name: &str,
    stage: &str,
    make: impl FnOnce(&Linear) -> Result<Weight>,
) -> Result<&'static str> {
    let layer = layer_mut(model, name, stage)?;
    let (m, k) = (layer.out_features(), layer.in_features());
    let new = make(layer)?;
    let g = gather(layer.weight(), &new, m, k);
    let old_kind = layer.weight().kind_name();
    let low_rank_old = matches!(layer.weight(), Weight::LowRank { .. } | Weight::Lora { .. });
    layer.set_weight(new)?;
    let pname = format!("{name}.weight");
    match g {
        Some(g) => optimizer.remap(&pname, Some(&g)),
        None => {
            if !low_rank_old {
                optimizer.remap(&pname, None);
            }
            for suffix in ["u", "v", "lora_a", "lora_b"] {
                optimizer.remap(&format!("{name}.{suffix}"), None);
            }
        }
    }
    Ok(old_kind)
}

/// Sparsity of a mask (fraction of `false`).
pub(crate) fn mask_sparsity(mask: &[bool]) -> f64 {
    if mask.is_empty() {
        return 0.0;
    }
    mask.iter().filter(|&&b| !b).count() as f64 / mask.len() as f64
}

/// A mask as a 0/1 tensor (checkpoint state).
pub(crate) fn mask_to_f32(mask: &[bool]) -> Vec<f32> {
    mask.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect()
}

/// A 0/1 tensor back to a mask; errors (naming `what`) on any other value.
pub(crate) fn mask_from_f32(v: &[f32], what: &str) -> Result<Vec<bool>> {
    v.iter()
        .map(|&x| match x {
            1.0 => Ok(true),
            0.0 => Ok(false),
            _ => Err(invalid(
                what,
                format!("mask entry {x} in a checkpoint (must be 0 or 1)"),
            )),
        })
        .collect()
}

/// The keep-mask of the layer's current weight for Dense (all true), Masked (its mask), Csr and
/// Sparse24 (their patterns). `None` for low-rank kinds.
pub(crate) fn current_mask(w: &Weight, m: usize, k: usize) -> Option<Vec<bool>> {
    match w {
        Weight::Masked { mask, .. } => return Some(mask.clone()),
        Weight::Dense { .. } => return Some(vec![true; m * k]),
        _ => {}
    }
    let pos = stored_positions(w, m, k)?;
    let mut mask = vec![false; m * k];
    for f in pos {
        mask[f] = true;
    }
    Some(mask)
}

/// Percent with one decimal, for event messages.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}
