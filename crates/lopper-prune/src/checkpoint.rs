//! One-shot pruning of whole checkpoints (what `lopper prune` runs) and their description (what
//! `lopper inspect` prints). Float tensors keep their dtype (f32, f16, bf16: pruned entries become
//! zero, kept entries keep their exact bits); non-float entries pass through untouched.
use crate::criterion::{self};
use crate::granularity::{self, is_nm};
use crate::param::{Mask, ParamRef, matrix_dims};
use crate::permute::{self, Permutation};
use crate::scope::{Scope, compute_masks};
use crate::stats::{SparsityReport, TensorStats, magnitude};
use crate::store::{self, Layout, Want};
use crate::{Error, Result, check_sparsity};
use lopper_tensor::io::safetensors::{Entry, SafetensorsFile};
use lopper_tensor::{Storage, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;

/// What to prune and how.
#[derive(Clone, Debug)]
pub struct PruneSpec {
    /// Target sparsity in `[0, 1)`; `None` only for N:M patterns (implied `1 - N/M`).
    pub sparsity: Option<f64>,
    /// Criterion name: `magnitude` or `random` (the ones that need no gradient).
    pub method: String,
    /// Granularity spelling (see [`granularity::parse`]).
    pub pattern: String,
    /// Tensor selection and budget placement.
    pub scope: Scope,
    /// Seed of the random criterion.
    pub seed: u64,
    /// Write the compressed store instead of dense tensors with zeros.
    pub compressed: bool,
    /// N:M patterns: also search a channel permutation per tensor and report the magnitude kept
    /// with and without it (the output is not permuted).
    pub permute_report: bool,
}

/// The result of [`prune_checkpoint`].
#[derive(Clone, Debug)]
pub struct Pruned {
    /// The file to write.
    pub file: SafetensorsFile,
    /// Accounting of the pruned tensors (kept magnitude relative to the input).
    pub report: SparsityReport,
    /// The sparsity actually targeted.
    pub sparsity: f64,
    /// Pattern name.
    pub pattern: String,
    /// Per pruned tensor, when asked for with an N:M pattern: the permutation search's outcome.
    pub permutations: Vec<(String, Permutation)>,
}

/// Candidate-swap evaluations times rows allowed per tensor in the permutation report.
const PERMUTE_BUDGET: u64 = 50_000_000;

fn zero_masked(t: &Tensor, mask: &Mask) -> Result<Tensor> {
    fn z<T: Copy>(v: &mut [T], mask: &Mask, zero: T) {
        for (x, &k) in v.iter_mut().zip(mask) {
            if !k {
                *x = zero;
            }
        }
    }
    let mut s = t.storage().clone();
    match &mut s {
        Storage::F32(v) => z(v, mask, 0.0),
        Storage::F16(v) => z(v, mask, lopper_tensor::f16::ZERO),
        Storage::BF16(v) => z(v, mask, lopper_tensor::bf16::ZERO),
    }
    Ok(Tensor::new(t.shape(), s)?)
}

/// Prunes a whole checkpoint in one shot.
pub fn prune_checkpoint(input: &SafetensorsFile, spec: &PruneSpec) -> Result<Pruned> {
    let gran = granularity::parse(&spec.pattern)?;
    let sparsity = match (gran.fixed_density(), spec.sparsity) {
        (Some(d), Some(s)) if (s - (1.0 - d)).abs() > 1e-9 => {
            return Err(Error::invalid(
                "sparsity",
                format!(
                    "{s} does not match pattern {} (which implies {})",
                    gran.name(),
                    1.0 - d
                ),
            ));
        }
        (Some(d), _) => 1.0 - d,
        (None, Some(s)) => s,
        (None, None) => {
            return Err(Error::invalid(
                "sparsity",
                format!("pattern {} needs --sparsity", gran.name()),
            ));
        }
    };
    check_sparsity(sparsity)?;
    let mut crit = match spec.method.to_ascii_lowercase().as_str() {
        m @ ("magnitude" | "random") => criterion::by_name(m, spec.seed)?,
        other => {
            return Err(Error::invalid(
                "method",
                format!(
                    "{other:?}: one-shot checkpoint pruning supports magnitude and random (the others need gradients or activations)"
                ),
            ));
        }
    };
    let floats: Vec<(usize, &str, &Tensor)> = input
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, (n, e))| match e {
            Entry::Tensor(t) => Some((i, n.as_str(), t)),
            Entry::Raw { .. } => None,
        })
        .collect();
    if floats.is_empty() {
        let others: Vec<String> = input
            .entries
            .iter()
            .take(5)
            .filter_map(|(n, e)| match e {
                Entry::Raw { dtype, .. } => Some(format!("{n} ({dtype:?})")),
                Entry::Tensor(_) => None,
            })
            .collect();
        let more = if input.entries.len() > 5 { ", ..." } else { "" };
        return Err(Error::NothingSelected(format!(
            "no f32, f16 or bf16 tensor among the file's {} tensors (other dtypes pass through unpruned: {}{more})",
            input.entries.len(),
            others.join(", ")
        )));
    }
    let names: Vec<(&str, &[usize])> = floats.iter().map(|(_, n, t)| (*n, t.shape())).collect();
    let selected = spec.scope.select(&names)?;
    let vals: Vec<Vec<f32>> = floats
        .iter()
        .zip(&selected)
        .map(|((_, _, t), &s)| if s { t.to_f32_vec() } else { Vec::new() })
        .collect();
    // a NaN or infinite weight has no magnitude to rank: refuse rather than keep it as "largest"
    for ((_, name, t), v) in floats.iter().zip(&vals) {
        let bad = v.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            let first = v.iter().position(|x| !x.is_finite()).unwrap_or(0);
            return Err(Error::Pattern {
                tensor: name.to_string(),
                shape: t.shape().to_vec(),
                detail: format!(
                    "{bad} NaN or infinite values (the first at flat index {first}); pruning needs finite weights (a corrupted checkpoint?)"
                ),
            });
        }
    }
    let shapes: Vec<Vec<usize>> = floats
        .iter()
        .zip(&selected)
        .map(|((_, _, t), &s)| if s { t.shape().to_vec() } else { vec![0] })
        .collect();
    let params: Vec<ParamRef<'_>> = floats
        .iter()
        .zip(vals.iter().zip(&shapes))
        .map(|((_, n, _), (v, s))| ParamRef::new(n, s, v))
        .collect();
    let mut scores = Vec::with_capacity(params.len());
    for (p, &s) in params.iter().zip(&selected) {
        scores.push(if s { crit.score(*p)? } else { Vec::new() });
    }
    let masks = compute_masks(
        &params,
        &scores,
        &selected,
        gran.as_ref(),
        spec.scope.kind,
        sparsity,
    )?;
    let mut out = input.clone();
    let mut stats = Vec::new();
    let mut mags = Vec::new();
    let mut want = BTreeMap::new();
    let mut permutations = Vec::new();
    let nm = gran.fixed_density().and_then(|_| {
        let (n, m) = spec.pattern.trim().split_once(':')?;
        Some((n.parse().ok()?, m.parse().ok()?))
    });
    for ((i, name, t), (p, m)) in floats.iter().zip(params.iter().zip(&masks)) {
        let Some(m) = m else { continue };
        stats.push(TensorStats::from_mask(name, t.shape(), p.values, m)?);
        mags.push(magnitude(p.values));
        if let (true, Some((n, m))) = (spec.permute_report, nm) {
            let (rows, _) = matrix_dims(t.shape());
            let budget = PERMUTE_BUDGET / rows.max(1) as u64;
            permutations.push((
                name.to_string(),
                permute::search_bounded(p.values, t.shape(), n, m, 4, budget)?,
            ));
        }
        out.entries[*i].1 = Entry::Tensor(zero_masked(t, m)?);
        want.insert(
            name.to_string(),
            nm.map_or(Want::Csr, |(n, m)| Want::Nm(n, m)),
        );
    }
    if spec.compressed {
        out = store::compress(&out, &want)?;
    }
    Ok(Pruned {
        file: out,
        report: SparsityReport::new(stats, Some(&mags)),
        sparsity,
        pattern: gran.name(),
        permutations,
    })
}

/// One line of [`describe`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// `f32`, `f16`, `bf16`, or the safetensors name of another dtype.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements.
    pub numel: usize,
    /// Non-zero elements (float tensors only).
    pub nonzeros: Option<usize>,
    /// `nonzeros / numel` (float tensors only).
    pub density: Option<f64>,
    /// Whether every group of 4 along the last axis has at most 2 non-zeros.
    pub is_2_4: bool,
    /// The smallest N for which the tensor is N:4-valid (`None` when the last axis is not a
    /// multiple of 4 or not float).
    pub n_of_4: Option<usize>,
    /// How it is stored: `dense`, `csr` or `nm` (compressed stores), `raw` for non-float.
    pub layout: String,
    /// NaN or infinite elements (float tensors only; a trained weight has none).
    pub non_finite: Option<usize>,
}

/// Description of a file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Description {
    /// Whether it is a lopper compressed store.
    pub compressed: bool,
    /// One entry per logical tensor.
    pub tensors: Vec<TensorInfo>,
    /// Float tensors.
    pub float_tensors: usize,
    /// Elements of the float tensors.
    pub numel: usize,
    /// Non-zeros of the float tensors.
    pub nonzeros: usize,
    /// `nonzeros / numel`.
    pub density: f64,
    /// Float tensors that are 2:4-valid.
    pub valid_2_4: usize,
}

/// Describes a (possibly compressed) file: per tensor dtype, shape, density, N:M validity.
pub fn describe(file: &SafetensorsFile, path: &str) -> Result<Description> {
    let man = store::manifest(file, path)?;
    let layouts: BTreeMap<String, Layout> = man
        .as_ref()
        .map(|m| {
            m.tensors
                .iter()
                .map(|r| (r.name.clone(), r.layout))
                .collect()
        })
        .unwrap_or_default();
    let dense = store::decompress(file, path)?;
    let mut tensors = Vec::new();
    for (name, e) in &dense.entries {
        tensors.push(match e {
            Entry::Tensor(t) => {
                let v = t.to_f32_vec();
                let nz = v.iter().filter(|x| **x != 0.0).count();
                let (_, c) = matrix_dims(t.shape());
                let n_of_4 = (!t.shape().is_empty() && c.is_multiple_of(4))
                    .then(|| (0..=4).find(|&n| is_nm(&v, t.shape(), n, 4)))
                    .flatten();
                TensorInfo {
                    name: name.clone(),
                    dtype: t.dtype().to_string(),
                    shape: t.shape().to_vec(),
                    numel: v.len(),
                    nonzeros: Some(nz),
                    density: Some(if v.is_empty() {
                        0.0
                    } else {
                        nz as f64 / v.len() as f64
                    }),
                    is_2_4: n_of_4.is_some_and(|n| n <= 2),
                    n_of_4,
                    layout: match layouts.get(name) {
                        Some(Layout::Csr) => "csr",
                        Some(Layout::Nm) => "nm",
                        _ => "dense",
                    }
                    .into(),
                    non_finite: Some(v.iter().filter(|x| !x.is_finite()).count()),
                }
            }
            Entry::Raw { dtype, shape, .. } => TensorInfo {
                name: name.clone(),
                dtype: format!("{dtype:?}"),
                shape: shape.clone(),
                numel: shape.iter().product(),
                nonzeros: None,
                density: None,
                is_2_4: false,
                n_of_4: None,
                layout: "raw".into(),
                non_finite: None,
            },
        });
    }
    let floats = tensors.iter().filter(|t| t.nonzeros.is_some());
    let (mut n, mut nz, mut cnt, mut v24) = (0, 0, 0, 0);
    for t in floats {
        cnt += 1;
        n += t.numel;
        nz += t.nonzeros.unwrap_or(0);
        v24 += usize::from(t.is_2_4);
    }
    Ok(Description {
        compressed: man.is_some(),
        tensors,
        float_tensors: cnt,
        numel: n,
        nonzeros: nz,
        density: if n == 0 { 0.0 } else { nz as f64 / n as f64 },
        valid_2_4: v24,
    })
}
