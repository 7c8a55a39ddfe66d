//! Checkpoints with exact resume: a directory holding one safetensors file of tensors and a JSON
//! manifest.
//!
//! Tensors (`tensors-{step:08}-{n}.safetensors`, name in the manifest):
//! - every Linear weight in its *current* kind, under the layer name `{l}`:
//!   Dense `{l}.weight` (M, K); Masked `{l}.weight` (M, K) + `{l}.weight.mask` U8 (M, K);
//!   Csr `{l}.weight.csr.offsets` I64 (M+1), `.indices` U32 (nnz), `.values` F32 (nnz);
//!   Sparse24 `{l}.weight.s24.values` (M, K/2) + `{l}.weight.s24.meta` U16 (M, ceil(K/16));
//!   LowRank `{l}.u` (M, r), `{l}.v` (r, K); Lora base `{l}.lora_base.weight` (M, K) or
//!   `{l}.lora_base.csr.{offsets,indices,values}`, plus `{l}.lora_a` (r, K), `{l}.lora_b` (M, r);
//! - every other parameter (biases, embeddings, LayerNorms) by name, 1-D;
//! - optimizer state tensors as `optim.{key}`; callback tensors as `cb.{name}.{key}`.
//!
//! Manifest (`manifest.json`): format and version, step, model kind, per-layer kind and
//! rank/alpha, the other parameters' names, optimizer name and scalars, callback JSON states,
//! the [`RunLog`], counters (FLOPs, examples, train/eval time), the energy report, recipe hash,
//! and the tensors file's length and FNV-1a 64 checksum. Floats that must resume bit-exactly
//! (log values, optimizer scalars, LoRA alpha, energy phases) are also stored as their bit
//! patterns (integers are exact in JSON, decimal floats not always through serde_json's default
//! parser).
//!
//! Atomicity: each file is written through `write_atomic` (temp file + rename), the tensors
//! first under a fresh name, the manifest last; the previous tensors file is removed only after
//! the new manifest is in place. An interrupted save leaves the previous checkpoint (or none)
//! loadable, never a mix.
//!
//! Loading validates everything before it changes the trainer's model (format, version,
//! checksum, every tensor's presence, dtype and shape, layer names and sizes, parameter names,
//! optimizer and callback names) and names the file and the tensor or key on any mismatch
//! ([`Error::Checkpoint`]). Optimizer and callback states are restored by their `load_state`
//! before the model; if one of those fails the trainer should be discarded.
use crate::log::RunLog;
use crate::optim::OptimState;
use crate::trainer::{Counters, Trainer};
use crate::{CallbackState, Error, Result};
use lopper_energy::{EnergyReport, Method};
use lopper_nn::LoraBase;
use lopper_nn::Weight;
use lopper_sparse::{Csr, Sparse24};
use lopper_tensor::Tensor;
use lopper_tensor::io::safetensors::{Entry, RawDType, SafetensorsFile};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The manifest's `format` value.
pub const FORMAT: &str = "lopper-checkpoint";
/// The manifest version this code writes and reads.
pub const VERSION: u32 = 1;
/// The manifest's file name inside a checkpoint directory.
pub const MANIFEST: &str = "manifest.json";

/// One Linear layer in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerEntry {
    /// Layer name (`h.0.attn.qkv`).
    pub name: String,
    /// `dense`, `masked`, `csr`, `sparse24`, `lowrank` or `lora`.
    pub kind: String,
    /// K.
    pub in_features: usize,
    /// M.
    pub out_features: usize,
    /// Rank of LowRank and Lora layers.
    pub rank: Option<usize>,
    /// LoRA alpha (readable copy).
    pub alpha: Option<f32>,
    /// LoRA alpha's bit pattern (what loading uses).
    pub alpha_bits: Option<u32>,
    /// LoRA base: `dense` or `csr`.
    pub lora_base: Option<String>,
}

/// The optimizer in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimEntry {
    /// `sgd` or `adamw`.
    pub name: String,
    /// Scalars, readable.
    pub scalars: BTreeMap<String, f64>,
    /// Scalars' bit patterns (what loading uses).
    pub scalar_bits: BTreeMap<String, u64>,
    /// State tensor keys (stored as `optim.{key}`).
    pub tensors: Vec<String>,
}

/// One callback in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackEntry {
    /// The callback's name.
    pub name: String,
    /// Its JSON state.
    pub json: serde_json::Value,
    /// State tensor keys (stored as `cb.{name}.{key}`).
    pub tensors: Vec<String>,
}

/// One energy phase, bit-exact: joules and seconds as f64 bit patterns, the method's label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyPhase {
    /// `train` or `eval`.
    pub phase: String,
    /// Joules, f64 bits.
    pub joules_bits: u64,
    /// Seconds, f64 bits.
    pub seconds_bits: u64,
    /// [`Method::label`].
    pub method: String,
}

/// The manifest (`manifest.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Steps done when saved.
    pub step: u64,
    /// [`crate::Model::kind`].
    pub model_kind: String,
    /// The recipe's hash, when the run came from one.
    pub recipe_hash: Option<String>,
    /// The tensors file, beside the manifest.
    pub tensors_file: String,
    /// Its length in bytes.
    pub tensors_bytes: u64,
    /// FNV-1a 64 of the tensors file, hex.
    pub tensors_fnv1a64: String,
    /// Every Linear layer, in the model's order.
    pub layers: Vec<LayerEntry>,
    /// Parameters other than Linear weights, saved by name.
    pub params: Vec<String>,
    /// The optimizer's name and scalars.
    pub optimizer: OptimEntry,
    /// Every callback, in the trainer's order.
    pub callbacks: Vec<CallbackEntry>,
    /// The run's record, readable.
    pub log: RunLog,
    /// The log's float fields as bit patterns: per train point loss, lr, wall_s; per eval
    /// val_loss, accuracy (when present), wall_s, energy_j.
    pub log_f64_bits: Vec<u64>,
    /// FLOPs, examples and time so far.
    pub counters: Counters,
    /// The energy report, readable.
    pub energy: EnergyReport,
    /// Its phases exactly (what loading rebuilds the report from, with `energy.factors`).
    pub energy_phases: Vec<EnergyPhase>,
    /// Informational: the schedule at save time.
    pub schedule: String,
    /// Informational: the data at save time.
    pub data: String,
}

fn ck(path: &Path, detail: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The float fields of a log in a fixed order (train: loss, lr, wall_s; evals: val_loss,
/// accuracy when present, wall_s, energy_j).
fn log_floats(log: &RunLog) -> Vec<f64> {
    let mut v = Vec::new();
    for p in &log.train {
        v.extend([p.loss, p.lr, p.wall_s]);
    }
    for e in &log.evals {
        v.push(e.val_loss);
        v.extend(e.accuracy);
        v.extend([e.wall_s, e.energy_j]);
    }
    v
}

fn set_log_floats(log: &mut RunLog, bits: &[u64], path: &Path) -> Result<()> {
    let want = log_floats(log).len();
    if bits.len() != want {
        return Err(ck(
            path,
            format!(
                "log_f64_bits has {} values, the log needs {want}",
                bits.len()
            ),
        ));
    }
    let mut it = bits.iter().map(|b| f64::from_bits(*b));
    let mut next = || it.next().expect("length checked");
    for p in &mut log.train {
        p.loss = next();
        p.lr = next();
        p.wall_s = next();
    }
    for e in &mut log.evals {
        e.val_loss = next();
        if e.accuracy.is_some() {
            e.accuracy = Some(next());
        }
        e.wall_s = next();
        e.energy_j = next();
    }
    Ok(())
}

fn raw(dtype: RawDType, shape: Vec<usize>, bytes: Vec<u8>) -> Entry {
    Entry::Raw {
        dtype,
        shape,
        bytes,
    }
}

fn f32_entry(shape: &[usize], v: &[f32]) -> Result<Entry> {
    Ok(Entry::Tensor(Tensor::from_f32(shape, v.to_vec())?))
}

fn push_csr(out: &mut Vec<(String, Entry)>, prefix: &str, c: &Csr) -> Result<()> {
    let offs: Vec<u8> = c
        .row_ptr()
        .iter()
        .flat_map(|&x| (x as i64).to_le_bytes())
        .collect();
    let idx: Vec<u8> = c.col_idx().iter().flat_map(|x| x.to_le_bytes()).collect();
    out.push((
        format!("{prefix}.csr.offsets"),
        raw(RawDType::I64, vec![c.rows() + 1], offs),
    ));
    out.push((
        format!("{prefix}.csr.indices"),
        raw(RawDType::U32, vec![c.nnz()], idx),
    ));
    out.push((
        format!("{prefix}.csr.values"),
        f32_entry(&[c.nnz()], c.values())?,
    ));
    Ok(())
}

/// The tensors and manifest entry of one Linear weight.
fn save_weight(
    out: &mut Vec<(String, Entry)>,
    l: &str,
    w: &Weight,
    m: usize,
    k: usize,
) -> Result<LayerEntry> {
    let mut e = LayerEntry {
        name: l.to_string(),
        kind: w.kind_name().to_string(),
        in_features: k,
        out_features: m,
        rank: None,
        alpha: None,
        alpha_bits: None,
        lora_base: None,
    };
    match w {
        Weight::Dense { w, .. } => out.push((format!("{l}.weight"), f32_entry(&[m, k], w)?)),
        Weight::Masked { w, mask, .. } => {
            out.push((format!("{l}.weight"), f32_entry(&[m, k], w)?));
            let bytes = mask.iter().map(|&b| b as u8).collect();
            out.push((
                format!("{l}.weight.mask"),
                raw(RawDType::U8, vec![m, k], bytes),
            ));
        }
        Weight::Csr { w, .. } => push_csr(out, &format!("{l}.weight"), w)?,
        Weight::Sparse24 { w, .. } => {
            out.push((
                format!("{l}.weight.s24.values"),
                f32_entry(&[m, k / 2], w.values())?,
            ));
            let meta = w.meta().iter().flat_map(|x| x.to_le_bytes()).collect();
            out.push((
                format!("{l}.weight.s24.meta"),
                raw(RawDType::U16, vec![m, k.div_ceil(16)], meta),
            ));
        }
        Weight::LowRank { rank, u, v, .. } => {
            e.rank = Some(*rank);
            out.push((format!("{l}.u"), f32_entry(&[m, *rank], u)?));
            out.push((format!("{l}.v"), f32_entry(&[*rank, k], v)?));
        }
        Weight::Lora {
            base,
            rank,
            alpha,
            a,
            b,
            ..
        } => {
            e.rank = Some(*rank);
            e.alpha = Some(*alpha);
            e.alpha_bits = Some(alpha.to_bits());
            match base {
                LoraBase::Dense(w) => {
                    e.lora_base = Some("dense".into());
                    out.push((format!("{l}.lora_base.weight"), f32_entry(&[m, k], w)?));
                }
                LoraBase::Csr(c, _) => {
                    e.lora_base = Some("csr".into());
                    push_csr(out, &format!("{l}.lora_base"), c)?;
                }
            }
            out.push((format!("{l}.lora_a"), f32_entry(&[*rank, k], a)?));
            out.push((format!("{l}.lora_b"), f32_entry(&[m, *rank], b)?));
        }
    }
    Ok(e)
}

/// Names of the parameters a Linear weight contributes (any kind).
fn weight_param_names(linears: &[String]) -> BTreeSet<String> {
    linears
        .iter()
        .flat_map(|l| {
            ["weight", "u", "v", "lora_a", "lora_b"]
                .into_iter()
                .map(move |s| format!("{l}.{s}"))
        })
        .collect()
}

/// Saves `trainer` into the checkpoint directory `dir` (created if needed); returns the manifest's
/// path. `&mut` because parameters are read through `Model::params`; nothing is changed.
pub fn save(dir: &Path, trainer: &mut Trainer, recipe_hash: Option<&str>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| crate::io(dir, e))?;
    let mut entries: Vec<(String, Entry)> = Vec::new();
    let mut layers = Vec::new();
    let mut linear_names = Vec::new();
    for l in trainer.model.linears() {
        let (m, k) = (l.out_features(), l.in_features());
        layers.push(save_weight(&mut entries, &l.name, l.weight(), m, k)?);
        linear_names.push(l.name.clone());
    }
    let weight_names = weight_param_names(&linear_names);
    let mut params = Vec::new();
    for p in trainer.model.params() {
        if !weight_names.contains(&p.name) {
            entries.push((p.name.clone(), f32_entry(&[p.values.len()], p.values)?));
            params.push(p.name);
        }
    }
    let os = trainer.optimizer.state();
    for (k, v) in &os.tensors {
        entries.push((format!("optim.{k}"), f32_entry(&[v.len()], v)?));
    }
    let optimizer = OptimEntry {
        name: trainer.optimizer.name().to_string(),
        scalar_bits: os
            .scalars
            .iter()
            .map(|(k, v)| (k.clone(), v.to_bits()))
            .collect(),
        scalars: os.scalars,
        tensors: os.tensors.keys().cloned().collect(),
    };
    let mut callbacks = Vec::new();
    for cb in &trainer.callbacks {
        let name = cb.name();
        if callbacks.iter().any(|c: &CallbackEntry| c.name == name) {
            return Err(ck(dir, format!("two callbacks are named {name}")));
        }
        let st = cb.state();
        for (k, v) in &st.tensors {
            entries.push((format!("cb.{name}.{k}"), f32_entry(&[v.len()], v)?));
        }
        callbacks.push(CallbackEntry {
            name,
            json: st.json,
            tensors: st.tensors.keys().cloned().collect(),
        });
    }
    let file = SafetensorsFile {
        entries,
        metadata: BTreeMap::from([("format".to_string(), FORMAT.to_string())]),
    };
    let bytes = lopper_tensor::io::safetensors::to_bytes(&file)?;
    // a fresh tensors name, so the previous manifest keeps pointing at its own file
    let step = trainer.step;
    let tensors_file = (0..)
        .map(|n| format!("tensors-{step:08}-{n}.safetensors"))
        .find(|f| !dir.join(f).exists())
        .expect("some name is free");
    let tpath = dir.join(&tensors_file);
    lopper_tensor::io::write_atomic(&tpath, |w| w.write_all(&bytes))?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        step,
        model_kind: trainer.model.kind().into(),
        recipe_hash: recipe_hash.map(str::to_string),
        tensors_file: tensors_file.clone(),
        tensors_bytes: bytes.len() as u64,
        tensors_fnv1a64: format!("{:016x}", fnv1a64(&bytes)),
        layers,
        params,
        optimizer,
        callbacks,
        log_f64_bits: log_floats(&trainer.log)
            .iter()
            .map(|x| x.to_bits())
            .collect(),
        log: trainer.log.clone(),
        counters: trainer.counters.clone(),
        energy: trainer.energy.clone(),
        energy_phases: trainer
            .energy
            .phases
            .iter()
            .map(|p| EnergyPhase {
                phase: p.phase.clone(),
                joules_bits: p.joules.value.to_bits(),
                seconds_bits: p.seconds.to_bits(),
                method: p.joules.method.label().into(),
            })
            .collect(),
        schedule: trainer.schedule.describe(),
        data: trainer.data.describe(),
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ck(dir, format!("manifest does not serialize: {e}")))?;
    let mpath = dir.join(MANIFEST);
    lopper_tensor::io::write_atomic(&mpath, |w| w.write_all(&json))?;
    // the new manifest is in place: older tensors files are garbage now
    if let Ok(rd) = std::fs::read_dir(dir) {
        for f in rd.flatten() {
            let n = f.file_name().to_string_lossy().to_string();
            if n.starts_with("tensors-") && n.ends_with(".safetensors") && n != tensors_file {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Ok(mpath)
}

/// Whether `dir` is, or can be created as, a folder, without creating anything: the path and
/// its nearest existing ancestor must be folders (or links to folders). The error says what is in
/// the way (a file, a dangling link), for the caller to prefix with the option or key.
pub fn check_folder(dir: &Path) -> std::result::Result<(), String> {
    if dir.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    for p in dir.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        let Ok(link) = std::fs::symlink_metadata(p) else {
            continue; // not there yet: created with its parents
        };
        let what = if p == dir {
            String::new()
        } else {
            format!("{} ", p.display())
        };
        return match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!("{what}is a file, not a folder")),
            Err(_) if link.file_type().is_symlink() => {
                Err(format!("{what}is a symbolic link to nothing"))
            }
            Err(e) => Err(format!("{what}{e}")),
        };
    }
    Ok(())
}

/// The bytes of a checkpoint file; a FIFO or a device is refused before reading (a FIFO would
/// wait for a writer, a device might never end).
fn read_file(path: &Path) -> Result<Vec<u8>> {
    if let Ok(m) = std::fs::metadata(path)
        && !m.is_file()
        && !m.is_dir()
    {
        return Err(ck(
            path,
            "cannot read: not a regular file (a FIFO or a device)",
        ));
    }
    std::fs::read(path).map_err(|e| ck(path, format!("cannot read: {e}")))
}

/// Reads and validates a manifest (a checkpoint directory or its `manifest.json`).
pub fn read_manifest(path: &Path) -> Result<(PathBuf, Manifest)> {
    let mpath = if path.is_dir() {
        path.join(MANIFEST)
    } else {
        path.to_path_buf()
    };
    let text = read_file(&mpath)?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| ck(&mpath, format!("not JSON: {e}")))?;
    match v.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        other => {
            return Err(ck(
                &mpath,
                format!("key format is {other:?}, expected {FORMAT:?}"),
            ));
        }
    }
    match v.get("version").and_then(|f| f.as_u64()) {
        Some(x) if x == VERSION as u64 => {}
        other => {
            return Err(ck(
                &mpath,
                match other {
                    Some(v) => format!("key version is {v}; this build reads version {VERSION}"),
                    None => format!(
                        "key version is missing or not a number; this build reads version {VERSION}"
                    ),
                },
            ));
        }
    }
    let m: Manifest =
        serde_json::from_value(v).map_err(|e| ck(&mpath, format!("manifest: {e}")))?;
    Ok((mpath, m))
}

/// Looks tensors up by name, checking dtype and shape, naming the file on any mismatch.
struct Tensors<'a> {
    path: &'a Path,
    map: BTreeMap<&'a str, &'a Entry>,
    used: BTreeSet<&'a str>,
}

impl<'a> Tensors<'a> {
    fn entry(&mut self, name: &str) -> Result<&'a Entry> {
        let (k, e) = self
            .map
            .get_key_value(name)
            .ok_or_else(|| ck(self.path, format!("tensor {name} is missing")))?;
        self.used.insert(k);
        Ok(e)
    }
    fn f32(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.entry(name)? {
            Entry::Tensor(t) if t.dtype() == lopper_tensor::DType::F32 => {
                if t.shape() != shape {
                    return Err(ck(
                        self.path,
                        format!(
                            "tensor {name} has shape {:?}, expected {shape:?}",
                            t.shape()
                        ),
                    ));
                }
                Ok(t.to_f32_vec())
            }
            _ => Err(ck(self.path, format!("tensor {name} is not F32"))),
        }
    }
    /// A raw tensor's bytes, `width` bytes per element.
    fn raw(&mut self, name: &str, dtype: RawDType, shape: &[usize]) -> Result<&'a [u8]> {
        match self.entry(name)? {
            Entry::Raw {
                dtype: d,
                shape: s,
                bytes,
            } if *d == dtype => {
                if s != shape {
                    return Err(ck(
                        self.path,
                        format!("tensor {name} has shape {s:?}, expected {shape:?}"),
                    ));
                }
                Ok(bytes)
            }
            _ => Err(ck(self.path, format!("tensor {name} is not {dtype:?}"))),
        }
    }
    /// A 1-D F32 tensor of any length.
    fn f32_any(&mut self, name: &str) -> Result<Vec<f32>> {
        let n = match self.entry(name)? {
            Entry::Tensor(t) => t.shape().iter().product(),
            _ => 0,
        };
        self.f32(name, &[n])
    }
    /// The length of a 1-D tensor (to size the next lookups).
    fn len1(&mut self, name: &str) -> Result<usize> {
        let s = match self.entry(name)? {
            Entry::Tensor(t) => t.shape().to_vec(),
            Entry::Raw { shape, .. } => shape.clone(),
        };
        match s.as_slice() {
            [n] => Ok(*n),
            _ => Err(ck(
                self.path,
                format!("tensor {name} has shape {s:?}, expected one axis"),
            )),
        }
    }

    fn csr(&mut self, prefix: &str, m: usize, k: usize) -> Result<Csr> {
        let offs = self.raw(&format!("{prefix}.csr.offsets"), RawDType::I64, &[m + 1])?;
        let row_ptr = offs
            .chunks_exact(8)
            .map(|c| {
                let x = i64::from_le_bytes(c.try_into().expect("8 bytes"));
                usize::try_from(x)
                    .map_err(|_| ck(self.path, format!("tensor {prefix}.csr.offsets holds {x}")))
            })
            .collect::<Result<Vec<usize>>>()?;
        let nnz = self.len1(&format!("{prefix}.csr.indices"))?;
        let idx = self.raw(&format!("{prefix}.csr.indices"), RawDType::U32, &[nnz])?;
        let col_idx = idx
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let values = self.f32(&format!("{prefix}.csr.values"), &[nnz])?;
        Csr::from_parts(m, k, row_ptr, col_idx, values)
            .map_err(|e| ck(self.path, format!("tensors {prefix}.csr.*: {e}")))
    }

    fn weight(&mut self, e: &LayerEntry) -> Result<Weight> {
        let (l, m, k) = (&e.name, e.out_features, e.in_features);
        let rank = |what: &str| {
            e.rank.filter(|&r| r > 0 && r <= m.min(k)).ok_or_else(|| {
                ck(
                    self.path,
                    format!("layer {l}: {what} needs a rank in 1..={}", m.min(k)),
                )
            })
        };
        Ok(match e.kind.as_str() {
            "dense" => Weight::dense(self.f32(&format!("{l}.weight"), &[m, k])?),
            "masked" => {
                let w = self.f32(&format!("{l}.weight"), &[m, k])?;
                let mb = self.raw(&format!("{l}.weight.mask"), RawDType::U8, &[m, k])?;
                let mask = mb
                    .iter()
                    .map(|&b| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        x => Err(ck(self.path, format!("tensor {l}.weight.mask holds {x}"))),
                    })
                    .collect::<Result<Vec<bool>>>()?;
                Weight::Masked {
                    w,
                    dw: vec![0.0; m * k],
                    mask,
                }
            }
            "csr" => {
                let w = self.csr(&format!("{l}.weight"), m, k)?;
                let wt = w.transpose();
                let dw = vec![0.0; w.nnz()];
                Weight::Csr { w, wt, dw }
            }
            "sparse24" => {
                if !k.is_multiple_of(4) {
                    return Err(ck(
                        self.path,
                        format!("layer {l}: 2:4 needs K % 4 == 0, K = {k}"),
                    ));
                }
                let v = self.f32(&format!("{l}.weight.s24.values"), &[m, k / 2])?;
                let mw = k.div_ceil(16);
                let mb = self.raw(&format!("{l}.weight.s24.meta"), RawDType::U16, &[m, mw])?;
                let meta = mb
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let w = Sparse24::from_parts(m, k, v, meta)
                    .map_err(|e| ck(self.path, format!("tensors {l}.weight.s24.*: {e}")))?;
                // the backward's CSR mirror: same pattern and value order as the 2:4 values
                let half = k / 2;
                let row_ptr = (0..=m).map(|i| i * half).collect();
                let mut col_idx = Vec::with_capacity(m * half);
                for i in 0..m {
                    for g in 0..k / 4 {
                        let (a, b) = w.indices(i, g);
                        col_idx.extend([(4 * g + a) as u32, (4 * g + b) as u32]);
                    }
                }
                let mirror = Csr::from_parts(m, k, row_ptr, col_idx, w.values().to_vec())?;
                let wt = mirror.transpose();
                let dw = vec![0.0; w.values().len()];
                Weight::Sparse24 { w, mirror, wt, dw }
            }
            "lowrank" => {
                let r = rank("lowrank")?;
                let u = self.f32(&format!("{l}.u"), &[m, r])?;
                let v = self.f32(&format!("{l}.v"), &[r, k])?;
                Weight::LowRank {
                    rank: r,
                    du: vec![0.0; u.len()],
                    dv: vec![0.0; v.len()],
                    u,
                    v,
                }
            }
            "lora" => {
                let r = rank("lora")?;
                let alpha = e.alpha_bits.map(f32::from_bits).ok_or_else(|| {
                    ck(self.path, format!("layer {l}: key alpha_bits is missing"))
                })?;
                let base = match e.lora_base.as_deref() {
                    Some("dense") => {
                        LoraBase::Dense(self.f32(&format!("{l}.lora_base.weight"), &[m, k])?)
                    }
                    Some("csr") => {
                        let c = self.csr(&format!("{l}.lora_base"), m, k)?;
                        let t = c.transpose();
                        LoraBase::Csr(c, t)
                    }
                    other => {
                        return Err(ck(
                            self.path,
                            format!("layer {l}: key lora_base is {other:?}, expected dense or csr"),
                        ));
                    }
                };
                let a = self.f32(&format!("{l}.lora_a"), &[r, k])?;
                let b = self.f32(&format!("{l}.lora_b"), &[m, r])?;
                Weight::Lora {
                    base,
                    rank: r,
                    alpha,
                    da: vec![0.0; a.len()],
                    db: vec![0.0; b.len()],
                    a,
                    b,
                }
            }
            other => {
                return Err(ck(self.path, format!("layer {l}: unknown kind {other:?}")));
            }
        })
    }
}

/// Restores `trainer` from a checkpoint directory (or its manifest). The trainer must be built as
/// the saved one was: same model architecture (layer names and sizes, parameter names), an
/// optimizer of the same name, callbacks with the same names. Layer kinds are rebuilt from the
/// checkpoint, whatever they are in the trainer now.
pub fn load(path: &Path, trainer: &mut Trainer) -> Result<()> {
    let (mpath, man) = read_manifest(path)?;
    if man.step > trainer.cfg.steps {
        return Err(ck(
            &mpath,
            format!(
                "the checkpoint is at step {}, past this run's {} steps (train.steps or --steps)",
                man.step, trainer.cfg.steps
            ),
        ));
    }
    // the tensors file sits beside the manifest: a bare file name, never a path elsewhere
    let plain = Path::new(&man.tensors_file)
        .file_name()
        .is_some_and(|n| n == man.tensors_file.as_str() && n != "..");
    if !plain {
        return Err(ck(
            &mpath,
            format!(
                "key tensors_file {:?} is not a file name in the checkpoint's folder",
                man.tensors_file
            ),
        ));
    }
    let dir = mpath.parent().unwrap_or(Path::new("."));
    let tpath = dir.join(&man.tensors_file);
    let bytes = read_file(&tpath)?;
    if bytes.len() as u64 != man.tensors_bytes {
        return Err(ck(
            &tpath,
            format!(
                "{} bytes, the manifest says {} (truncated or replaced)",
                bytes.len(),
                man.tensors_bytes
            ),
        ));
    }
    let sum = format!("{:016x}", fnv1a64(&bytes));
    if sum != man.tensors_fnv1a64 {
        return Err(ck(
            &tpath,
            format!(
                "checksum {sum} differs from the manifest's {} (corrupted or replaced)",
                man.tensors_fnv1a64
            ),
        ));
    }
    let file = lopper_tensor::io::safetensors::from_bytes(&bytes, &tpath)
        .map_err(|e| ck(&tpath, e.to_string()))?;
    let mut ts = Tensors {
        path: &tpath,
        map: file.entries.iter().map(|(n, e)| (n.as_str(), e)).collect(),
        used: BTreeSet::new(),
    };

    // the model: kind, layers, parameters
    if man.model_kind != trainer.model.kind() {
        return Err(ck(
            &mpath,
            format!(
                "key model_kind is {}, the trainer's model is {}",
                man.model_kind,
                trainer.model.kind()
            ),
        ));
    }
    let have: Vec<(String, usize, usize)> = trainer
        .model
        .linears()
        .iter()
        .map(|l| (l.name.clone(), l.out_features(), l.in_features()))
        .collect();
    let saved: Vec<(String, usize, usize)> = man
        .layers
        .iter()
        .map(|e| (e.name.clone(), e.out_features, e.in_features))
        .collect();
    if have != saved {
        let first = have
            .iter()
            .zip(&saved)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("model has {a:?}, checkpoint {b:?}"))
            .unwrap_or_else(|| {
                format!(
                    "model has {} layers, checkpoint {}",
                    have.len(),
                    saved.len()
                )
            });
        return Err(ck(
            &mpath,
            format!("key layers (name, out, in) differ: {first}"),
        ));
    }
    let weights = man
        .layers
        .iter()
        .map(|e| ts.weight(e))
        .collect::<Result<Vec<Weight>>>()?;
    let names: Vec<String> = have.iter().map(|h| h.0.clone()).collect();
    let weight_names = weight_param_names(&names);
    let mut others: Vec<(String, usize)> = Vec::new();
    for p in trainer.model.params() {
        if !weight_names.contains(&p.name) {
            others.push((p.name, p.values.len()));
        }
    }
    let other_names: Vec<&String> = others.iter().map(|o| &o.0).collect();
    if other_names != man.params.iter().collect::<Vec<_>>() {
        return Err(ck(
            &mpath,
            format!(
                "key params lists {:?}, the model has {:?}",
                man.params, other_names
            ),
        ));
    }
    let other_values = others
        .iter()
        .map(|(n, len)| ts.f32(n, &[*len]))
        .collect::<Result<Vec<Vec<f32>>>>()?;

    // optimizer and callbacks
    if man.optimizer.name != trainer.optimizer.name() {
        return Err(ck(
            &mpath,
            format!(
                "key optimizer.name is {}, the trainer's optimizer is {}",
                man.optimizer.name,
                trainer.optimizer.name()
            ),
        ));
    }
    let mut os = OptimState::default();
    for k in man.optimizer.scalars.keys() {
        let bits = man
            .optimizer
            .scalar_bits
            .get(k)
            .ok_or_else(|| ck(&mpath, format!("key optimizer.scalar_bits lacks {k}")))?;
        os.scalars.insert(k.clone(), f64::from_bits(*bits));
    }
    for k in &man.optimizer.tensors {
        os.tensors
            .insert(k.clone(), ts.f32_any(&format!("optim.{k}"))?);
    }
    let cb_names = trainer.callback_names();
    let saved_cbs: Vec<&String> = man.callbacks.iter().map(|c| &c.name).collect();
    if cb_names.iter().collect::<Vec<_>>() != saved_cbs {
        return Err(ck(
            &mpath,
            format!(
                "key callbacks holds {saved_cbs:?}, the trainer has {cb_names:?} (same names, same order)"
            ),
        ));
    }
    let mut cb_states = Vec::new();
    for c in &man.callbacks {
        let mut st = CallbackState {
            tensors: BTreeMap::new(),
            json: c.json.clone(),
        };
        for k in &c.tensors {
            st.tensors
                .insert(k.clone(), ts.f32_any(&format!("cb.{}.{k}", c.name))?);
        }
        cb_states.push(st);
    }
    if let Some(extra) = ts.map.keys().find(|k| !ts.used.contains(*k)) {
        return Err(ck(
            &tpath,
            format!("tensor {extra} is not described by the manifest"),
        ));
    }
    let mut log = man.log.clone();
    set_log_floats(&mut log, &man.log_f64_bits, &mpath)?;
    let mut energy = EnergyReport::new(man.energy.factors.clone());
    for p in &man.energy_phases {
        let method = Method::from_label(&p.method).ok_or_else(|| {
            ck(
                &mpath,
                format!("key energy_phases: unknown method {:?}", p.method),
            )
        })?;
        energy.add_raw(
            &p.phase,
            f64::from_bits(p.joules_bits),
            f64::from_bits(p.seconds_bits),
            method,
        );
    }

    // everything checked: apply
    trainer
        .optimizer
        .load_state(&os)
        .map_err(|e| ck(&mpath, format!("optimizer state: {e}")))?;
    for (cb, st) in trainer.callbacks.iter_mut().zip(&cb_states) {
        cb.load_state(st)
            .map_err(|e| ck(&mpath, format!("callback {}: {e}", cb.name())))?;
    }
    for (l, w) in trainer.model.linears_mut().into_iter().zip(weights) {
        l.set_weight(w)?;
    }
    for ((n, _), v) in others.iter().zip(&other_values) {
        trainer.model.set_param(n, v)?;
    }
    trainer.step = man.step;
    trainer.log = log;
    trainer.counters = man.counters;
    trainer.energy = energy;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn log_floats_round_trip() {
        let mut log = RunLog::default();
        log.train.push(crate::TrainPoint {
            step: 0,
            loss: 0.1f32 as f64,
            lr: 3e-4,
            wall_s: 1.0 / 3.0,
        });
        log.evals.push(crate::EvalPoint {
            step: 1,
            val_loss: 2.0f64.sqrt(),
            accuracy: Some(0.7),
            wall_s: 0.5,
            energy_j: 1e-9,
            energy_method: "x".into(),
            flops_executed: 1,
            flops_dense_equivalent: 2,
        });
        let bits: Vec<u64> = log_floats(&log).iter().map(|x| x.to_bits()).collect();
        let mut other = log.clone();
        other.train[0].loss = 0.0;
        other.evals[0].accuracy = Some(0.0);
        set_log_floats(&mut other, &bits, Path::new("m")).unwrap();
        assert_eq!(other, log);
        assert!(set_log_floats(&mut other, &bits[1..], Path::new("m")).is_err());
    }
}
