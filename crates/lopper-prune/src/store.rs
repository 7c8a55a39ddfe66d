//! The compressed store: a safetensors file whose pruned tensors are kept as CSR or N:M parts,
//! described by a JSON manifest under the `lopper` metadata key. Any safetensors reader can open
//! it; [`decompress`] / [`load`] give back the exact dense tensors.
//!
//! For a tensor `NAME` (matrix view: last axis = columns, all others flattened into rows):
//! - `csr`: `NAME.csr_row_ptr` (I32, or I64 past 2^31 entries, `rows + 1`), `NAME.csr_col_idx`
//!   (same index dtype, `nnz`), `NAME.csr_values` (the tensor's dtype, `nnz`). Stored entries are
//!   those whose bits are not all zero, so `-0.0` and NaN survive.
//! - `nm`: `NAME.nm_values` (the tensor's dtype, `[rows, cols * n / m]`) and `NAME.nm_index` (U8,
//!   same shape): the position (0..m) of each kept value within its group of `m`, increasing within
//!   a group. Groups with fewer than `n` non-zeros are padded with zeros at the lowest free positions.
//! - `dense`: stored under `NAME` unchanged (also every non-float entry).
//!
//! Manifest: `{"format": "lopper.compressed", "version": 1, "tensors": [{"name", "layout", "dtype",
//! "shape", "n", "m"}, ...]}` in the original tensor order.
use crate::param::matrix_dims;
use crate::{Error, Result};
use lopper_sparse::Csr;
use lopper_tensor::io::safetensors::{self as st, Entry, RawDType, SafetensorsFile};
use lopper_tensor::{DType, MatRef, Storage, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Metadata key holding the manifest.
pub const MANIFEST_KEY: &str = "lopper";
/// The manifest's `format` value.
pub const FORMAT: &str = "lopper.compressed";

/// How one tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// As is, under its own name.
    Dense,
    /// Compressed sparse rows.
    Csr,
    /// N:M values and in-group positions.
    Nm,
}

/// One manifest record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Tensor name.
    pub name: String,
    /// Storage layout.
    pub layout: Layout,
    /// `f32`, `f16` or `bf16` (absent for dense records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Logical shape (absent for dense records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<usize>>,
    /// N of N:M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// M of N:M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
}

/// The manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version, 1.
    pub version: u32,
    /// Records in tensor order.
    pub tensors: Vec<Record>,
}

/// Requested layout per tensor for [`compress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Keep dense.
    Dense,
    /// CSR.
    Csr,
    /// N:M with these N and M.
    Nm(usize, usize),
}

fn store_err(path: &str, detail: impl Into<String>) -> Error {
    Error::Store {
        path: path.to_string(),
        detail: detail.into(),
    }
}

fn storage_from_f32(dtype: DType, v: &[f32]) -> Storage {
    use lopper_tensor::{bf16, f16};
    match dtype {
        DType::F32 => Storage::F32(v.to_vec()),
        DType::F16 => Storage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        DType::BF16 => Storage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
    }
}

fn bits_nonzero(t: &Tensor) -> Vec<bool> {
    match t.storage() {
        Storage::F32(v) => v.iter().map(|x| x.to_bits() != 0).collect(),
        Storage::F16(v) => v.iter().map(|x| x.to_bits() != 0).collect(),
        Storage::BF16(v) => v.iter().map(|x| x.to_bits() != 0).collect(),
    }
}

fn index_entry(v: &[usize], wide: bool) -> Entry {
    let (dtype, bytes) = if wide {
        (
            RawDType::I64,
            v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
        )
    } else {
        (
            RawDType::I32,
            v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
        )
    };
    Entry::Raw {
        dtype,
        shape: vec![v.len()],
        bytes,
    }
}

/// The compressed form of `file`: tensors named in `want` with `Csr` or `Nm` are stored compressed,
/// everything else as is. Other metadata is kept; the manifest goes under [`MANIFEST_KEY`].
pub fn compress(file: &SafetensorsFile, want: &BTreeMap<String, Want>) -> Result<SafetensorsFile> {
    let mut out = SafetensorsFile {
        entries: Vec::new(),
        metadata: file.metadata.clone(),
    };
    let mut records = Vec::new();
    for (name, entry) in &file.entries {
        let w = want.get(name).copied().unwrap_or(Want::Dense);
        let t = match (entry, w) {
            (Entry::Tensor(t), Want::Csr | Want::Nm(..)) => t,
            _ => {
                out.entries.push((name.clone(), entry.clone()));
                records.push(Record {
                    name: name.clone(),
                    layout: Layout::Dense,
                    dtype: None,
                    shape: None,
                    n: None,
                    m: None,
                });
                continue;
            }
        };
        let (rows, cols) = matrix_dims(t.shape());
        let f = t.to_f32_vec();
        let keep = bits_nonzero(t);
        let mut rec = Record {
            name: name.clone(),
            layout: Layout::Csr,
            dtype: Some(t.dtype().to_string()),
            shape: Some(t.shape().to_vec()),
            n: None,
            m: None,
        };
        match w {
            Want::Csr => {
                let c = Csr::from_mask(MatRef::new(&f, rows, cols)?, &keep)?;
                let wide = c.nnz() > i32::MAX as usize
                    || rows >= i32::MAX as usize
                    || cols > i32::MAX as usize;
                let ci: Vec<usize> = c.col_idx().iter().map(|&j| j as usize).collect();
                out.entries.push((
                    format!("{name}.csr_row_ptr"),
                    index_entry(c.row_ptr(), wide),
                ));
                out.entries
                    .push((format!("{name}.csr_col_idx"), index_entry(&ci, wide)));
                let vals = Tensor::new(&[c.nnz()], storage_from_f32(t.dtype(), c.values()))?;
                out.entries
                    .push((format!("{name}.csr_values"), Entry::Tensor(vals)));
            }
            Want::Nm(n, m) => {
                crate::granularity::NM::new(n, m)?;
                if t.shape().is_empty() || !cols.is_multiple_of(m) {
                    return Err(Error::pattern(
                        name,
                        t.shape(),
                        format!("{n}:{m} needs the last axis to be a multiple of {m}"),
                    ));
                }
                let kept = rows * cols / m * n;
                let mut vals = Vec::with_capacity(kept);
                let mut idx = Vec::with_capacity(kept);
                for (g, chunk) in keep.chunks(m).enumerate() {
                    let nz: Vec<usize> = (0..m).filter(|&p| chunk[p]).collect();
                    if nz.len() > n {
                        return Err(Error::pattern(
                            name,
                            t.shape(),
                            format!(
                                "group {g} (row {}, columns {}..{}) has {} non-zeros, more than {n} of {m}",
                                g * m / cols.max(1),
                                g * m % cols.max(1),
                                g * m % cols.max(1) + m,
                                nz.len()
                            ),
                        ));
                    }
                    let mut pos = nz;
                    pos.extend((0..m).filter(|&p| !chunk[p]).take(n - pos.len()));
                    pos.sort_unstable();
                    for p in pos {
                        idx.push(p as u8);
                        vals.push(f[g * m + p]);
                    }
                }
                let shape = [rows, cols / m * n];
                let vt = Tensor::new(&shape, storage_from_f32(t.dtype(), &vals))?;
                out.entries
                    .push((format!("{name}.nm_values"), Entry::Tensor(vt)));
                out.entries.push((
                    format!("{name}.nm_index"),
                    Entry::Raw {
                        dtype: RawDType::U8,
                        shape: shape.to_vec(),
                        bytes: idx,
                    },
                ));
                rec.layout = Layout::Nm;
                rec.n = Some(n);
                rec.m = Some(m);
            }
            Want::Dense => unreachable!("dense handled above"),
        }
        records.push(rec);
    }
    let mut seen = HashSet::new();
    for (n, _) in &out.entries {
        if !seen.insert(n.as_str()) {
            return Err(store_err(
                "<output>",
                format!("stored name {n:?} collides with another tensor"),
            ));
        }
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: 1,
        tensors: records,
    };
    let json =
        serde_json::to_string(&manifest).map_err(|e| store_err("<output>", e.to_string()))?;
    out.metadata.insert(MANIFEST_KEY.into(), json);
    Ok(out)
}

/// The manifest of a file, if it is a compressed store.
pub fn manifest(file: &SafetensorsFile, path: &str) -> Result<Option<Manifest>> {
    let Some(json) = file.metadata.get(MANIFEST_KEY) else {
        return Ok(None);
    };
    let m: Manifest =
        serde_json::from_str(json).map_err(|e| store_err(path, format!("manifest: {e}")))?;
    if m.format != FORMAT || m.version != 1 {
        return Err(store_err(
            path,
            format!("unknown format {:?} version {}", m.format, m.version),
        ));
    }
    Ok(Some(m))
}

fn read_index(e: Option<&Entry>, what: &str, path: &str) -> Result<Vec<usize>> {
    let bad = |d: String| store_err(path, format!("{what}: {d}"));
    match e {
        Some(Entry::Raw {
            dtype: RawDType::I32,
            shape,
            bytes,
        }) if shape.len() == 1 && shape[0].checked_mul(4) == Some(bytes.len()) => bytes
            .chunks_exact(4)
            .map(|b| {
                usize::try_from(i32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .map_err(|_| bad("negative index".into()))
            })
            .collect(),
        Some(Entry::Raw {
            dtype: RawDType::I64,
            shape,
            bytes,
        }) if shape.len() == 1 && shape[0].checked_mul(8) == Some(bytes.len()) => bytes
            .chunks_exact(8)
            .map(|b| {
                usize::try_from(i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .map_err(|_| bad("negative index".into()))
            })
            .collect(),
        Some(_) => Err(bad("expected a 1-D I32 or I64 tensor".into())),
        None => Err(bad("missing".into())),
    }
}

/// The dense file a compressed store stands for (a file without manifest is returned as is).
/// `path` only names the source in errors.
pub fn decompress(file: &SafetensorsFile, path: &str) -> Result<SafetensorsFile> {
    let Some(man) = manifest(file, path)? else {
        return Ok(file.clone());
    };
    let by_name: BTreeMap<&str, &Entry> =
        file.entries.iter().map(|(n, e)| (n.as_str(), e)).collect();
    let mut used = HashSet::new();
    let mut get = |n: String| {
        let e = by_name.get(n.as_str()).copied();
        used.insert(n);
        e
    };
    let mut out = SafetensorsFile {
        entries: Vec::new(),
        metadata: file.metadata.clone(),
    };
    out.metadata.remove(MANIFEST_KEY);
    let mut listed = HashSet::new();
    for r in &man.tensors {
        let name = &r.name;
        if !listed.insert(name.as_str()) {
            return Err(store_err(
                path,
                format!("tensor {name:?} is listed twice in the manifest"),
            ));
        }
        if r.layout == Layout::Dense {
            let e = get(name.clone())
                .ok_or_else(|| store_err(path, format!("dense tensor {name:?} is missing")))?;
            out.entries.push((name.clone(), e.clone()));
            continue;
        }
        let dtype = r
            .dtype
            .as_deref()
            .and_then(DType::parse)
            .ok_or_else(|| store_err(path, format!("{name:?}: bad or missing dtype")))?;
        let shape = r
            .shape
            .clone()
            .ok_or_else(|| store_err(path, format!("{name:?}: missing shape")))?;
        // the claimed shape is expanded to dense below: refuse one that cannot fit first
        lopper_tensor::mem::elements(name, &shape)
            .and_then(|n| {
                lopper_tensor::mem::check_bytes(&format!("{name} expanded to dense"), n, 4)
            })
            .map_err(|e| store_err(path, e.to_string()))?;
        let (rows, cols) = matrix_dims(&shape);
        let values = |e: Option<&Entry>, what: &str| -> Result<Tensor> {
            match e {
                Some(Entry::Tensor(t)) if t.dtype() == dtype => Ok(t.clone()),
                _ => Err(store_err(
                    path,
                    format!("{name}.{what}: missing or not {dtype}"),
                )),
            }
        };
        let dense: Vec<f32> = match r.layout {
            Layout::Csr => {
                let rp = read_index(
                    get(format!("{name}.csr_row_ptr")),
                    &format!("{name}.csr_row_ptr"),
                    path,
                )?;
                let ci = read_index(
                    get(format!("{name}.csr_col_idx")),
                    &format!("{name}.csr_col_idx"),
                    path,
                )?;
                let v = values(get(format!("{name}.csr_values")), "csr_values")?;
                let ci = ci
                    .into_iter()
                    .map(|j| {
                        u32::try_from(j).map_err(|_| {
                            store_err(path, format!("{name}: column index {j} too large"))
                        })
                    })
                    .collect::<Result<Vec<u32>>>()?;
                Csr::from_parts(rows, cols, rp, ci, v.to_f32_vec())
                    .map_err(|e| store_err(path, format!("{name}: {e}")))?
                    .to_dense()
            }
            Layout::Nm => {
                let (n, m) = match (r.n, r.m) {
                    (Some(n), Some(m)) if n >= 1 && n < m && m <= 256 && cols.is_multiple_of(m) => {
                        (n, m)
                    }
                    _ => {
                        return Err(store_err(
                            path,
                            format!("{name}: bad N:M {:?}:{:?} for shape {shape:?}", r.n, r.m),
                        ));
                    }
                };
                let v = values(get(format!("{name}.nm_values")), "nm_values")?;
                let want = [rows, cols / m * n];
                let idx = match get(format!("{name}.nm_index")) {
                    Some(Entry::Raw {
                        dtype: RawDType::U8,
                        shape: s,
                        bytes,
                    }) if s[..] == want[..] && bytes.len() == want[0] * want[1] => bytes.clone(),
                    _ => {
                        return Err(store_err(
                            path,
                            format!("{name}.nm_index: missing or not U8 {want:?}"),
                        ));
                    }
                };
                if v.shape() != want {
                    return Err(store_err(
                        path,
                        format!("{name}.nm_values: shape {:?}, expected {want:?}", v.shape()),
                    ));
                }
                let vf = v.to_f32_vec();
                let mut d = vec![0.0f32; rows * cols];
                for (g, (pos, vals)) in idx.chunks(n).zip(vf.chunks(n)).enumerate() {
                    for (t, (&p, &x)) in pos.iter().zip(vals).enumerate() {
                        if p as usize >= m || (t > 0 && pos[t - 1] >= p) {
                            return Err(store_err(
                                path,
                                format!(
                                    "{name}.nm_index: group {g} has positions {pos:?} (need increasing, < {m})"
                                ),
                            ));
                        }
                        d[g * m + p as usize] = x;
                    }
                }
                d
            }
            Layout::Dense => unreachable!("handled above"),
        };
        let t = Tensor::new(&shape, storage_from_f32(dtype, &dense))?;
        out.entries.push((name.clone(), Entry::Tensor(t)));
    }
    if let Some((extra, _)) = file.entries.iter().find(|(n, _)| !used.contains(n)) {
        return Err(store_err(
            path,
            format!("tensor {extra:?} is not described by the manifest"),
        ));
    }
    Ok(out)
}

/// Reads a safetensors file, expanding it when it is a compressed store.
pub fn load(path: &Path) -> Result<SafetensorsFile> {
    let f = st::read(path)?;
    decompress(&f, &path.display().to_string())
}
