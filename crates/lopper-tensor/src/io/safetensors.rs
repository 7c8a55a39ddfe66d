//! safetensors files: f32, f16 and bf16 tensors become [`Tensor`]s (names and file metadata kept;
//! reading lists tensors in file order, writing lays them out as the format's reference writer does:
//! by dtype alignment, then by name); tensors of other dtypes (integers, f64, ...) are carried through
//! untouched as [`Entry::Raw`] so that a tool that rewrites a checkpoint never drops them.
use crate::{DType, Error, Result, Storage, Tensor};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub use safetensors::Dtype as RawDType;

/// One named tensor of a safetensors file.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// An f32, f16 or bf16 tensor.
    Tensor(Tensor),
    /// Any other dtype, kept as bytes.
    Raw {
        dtype: RawDType,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    },
}

/// The contents of a safetensors file, tensors in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SafetensorsFile {
    pub entries: Vec<(String, Entry)>,
    /// The `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// The float tensor called `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find_map(|(n, e)| match e {
            Entry::Tensor(t) if n == name => Some(t),
            _ => None,
        })
    }

    /// Float tensors in file order.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().filter_map(|(n, e)| match e {
            Entry::Tensor(t) => Some((n.as_str(), t)),
            Entry::Raw { .. } => None,
        })
    }

    /// Appends a float tensor.
    pub fn push(&mut self, name: impl Into<String>, t: Tensor) {
        self.entries.push((name.into(), Entry::Tensor(t)));
    }
}

fn to_raw(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    }
}

fn fmt_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: "safetensors",
        detail: detail.into(),
    }
}

/// Parses safetensors bytes; `path` only names the source in errors.
pub fn from_bytes(buf: &[u8], path: &Path) -> Result<SafetensorsFile> {
    if let Some(name) = super::st_header::duplicate(buf) {
        return Err(fmt_err(
            path,
            format!("tensor {name:?} appears twice in the header"),
        ));
    }
    // the first tensor whose dtype, shape and offsets disagree, named (the crate's message may not
    // name it); checked before the crate parses, which adds the last data offset to the header
    // length unchecked: offsets summing to near u64::MAX panicked there ("attempt to add with
    // overflow") in debug builds
    if let Some(why) = super::st_header::explain(buf) {
        return Err(fmt_err(path, why));
    }
    let st = SafeTensors::deserialize(buf).map_err(|e| fmt_err(path, e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(buf).map_err(|e| fmt_err(path, e.to_string()))?;
    // file order: by data offset, and tensors that share one (empty tensors) in header order; the
    // crate's `offset_keys` orders those as its HashMap iterates, differently from read to read
    let mut names = super::st_header::names(buf).unwrap_or_else(|| meta.offset_keys());
    names.sort_by_key(|n| meta.info(n).map(|i| i.data_offsets));
    let mut entries = Vec::new();
    for name in names {
        let view = st.tensor(&name).map_err(|e| fmt_err(path, e.to_string()))?;
        let shape = view.shape().to_vec();
        let data = view.data();
        let entry = match view.dtype() {
            Dtype::F32 => Entry::Tensor(Tensor::new(
                &shape,
                Storage::F32(bytemuck::pod_collect_to_vec(data)),
            )?),
            Dtype::F16 => Entry::Tensor(Tensor::new(
                &shape,
                Storage::F16(bytemuck::pod_collect_to_vec::<u8, f16>(data)),
            )?),
            Dtype::BF16 => Entry::Tensor(Tensor::new(
                &shape,
                Storage::BF16(bytemuck::pod_collect_to_vec::<u8, bf16>(data)),
            )?),
            other => Entry::Raw {
                dtype: other,
                shape,
                bytes: data.to_vec(),
            },
        };
        entries.push((name, entry));
    }
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(SafetensorsFile { entries, metadata })
}

/// Reads a safetensors file. A file that is not safetensors or is truncated is an
/// [`Error::Format`] naming the path.
pub fn read(path: &Path) -> Result<SafetensorsFile> {
    let buf = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&buf, path)
}

struct EntryView<'a>(&'a Entry);

impl View for EntryView<'_> {
    fn dtype(&self) -> Dtype {
        match self.0 {
            Entry::Tensor(t) => to_raw(t.dtype()),
            Entry::Raw { dtype, .. } => *dtype,
        }
    }
    fn shape(&self) -> &[usize] {
        match self.0 {
            Entry::Tensor(t) => t.shape(),
            Entry::Raw { shape, .. } => shape,
        }
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self.0 {
            Entry::Tensor(t) => Cow::Borrowed(t.storage().as_bytes()),
            Entry::Raw { bytes, .. } => Cow::Borrowed(bytes),
        }
    }
    fn data_len(&self) -> usize {
        match self.0 {
            Entry::Tensor(t) => t.storage().as_bytes().len(),
            Entry::Raw { bytes, .. } => bytes.len(),
        }
    }
}

/// Serializes to safetensors bytes. Duplicate names are an error.
pub fn to_bytes(file: &SafetensorsFile) -> Result<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    for (n, _) in &file.entries {
        // the header's key for the metadata map: a tensor under it makes an unreadable file
        if n == "__metadata__" {
            return Err(Error::invalid(
                "safetensors::to_bytes",
                "a tensor cannot be named \"__metadata__\" (the header's metadata key)",
            ));
        }
        if !seen.insert(n.as_str()) {
            return Err(Error::invalid(
                "safetensors::to_bytes",
                format!("tensor name {n:?} appears twice"),
            ));
        }
    }
    let meta: Option<HashMap<String, String>> = if file.metadata.is_empty() {
        None
    } else {
        Some(file.metadata.clone().into_iter().collect())
    };
    safetensors::serialize(
        file.entries.iter().map(|(n, e)| (n.as_str(), EntryView(e))),
        meta,
    )
    .map_err(|e| Error::invalid("safetensors::to_bytes", e.to_string()))
}

/// Writes a safetensors file atomically (temp file + rename).
pub fn write(path: &Path, file: &SafetensorsFile) -> Result<()> {
    use std::io::Write;
    let bytes = to_bytes(file)?;
    crate::io::write_atomic(path, |w| w.write_all(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_dtypes_names_metadata_and_raw() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let mut f = SafetensorsFile::default();
        let base = Tensor::randn(&[3, 4], 1.0, 1);
        f.push("z.weight", base.clone());
        f.push("a.bias", base.to_dtype(DType::F16).reshape(&[12]).unwrap());
        f.push("m.bf", base.to_dtype(DType::BF16));
        f.entries.push((
            "ids".into(),
            Entry::Raw {
                dtype: RawDType::I64,
                shape: vec![2],
                bytes: [7i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect(),
            },
        ));
        f.metadata.insert("format".into(), "pt".into());
        write(&p, &f).unwrap();
        let g = read(&p).unwrap();
        assert_eq!(g.metadata, f.metadata);
        assert_eq!(g.entries.len(), 4);
        for (name, e) in &f.entries {
            let (_, ge) = g.entries.iter().find(|(n, _)| n == name).unwrap();
            assert_eq!(ge, e, "{name}");
        }
    }

    #[test]
    fn truncated_and_garbage_are_format_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.safetensors");
        std::fs::write(&p, b"this is not a safetensors file").unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{e}");
        assert!(e.to_string().contains("bad.safetensors"));

        let mut f = SafetensorsFile::default();
        f.push("w", Tensor::randn(&[8, 8], 1.0, 2));
        let bytes = to_bytes(&f).unwrap();
        let cut = &bytes[..bytes.len() - 10];
        assert!(matches!(from_bytes(cut, &p), Err(Error::Format { .. })));
        assert!(read(&dir.path().join("missing")).is_err());
    }

    /// A file from a header (JSON text) and `data` bytes.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn header_errors_name_the_tensor() {
        let p = Path::new("h.safetensors");
        let err = |h: &str, data: &[u8]| from_bytes(&file(h, data), p).unwrap_err().to_string();
        // a byte length that does not match dtype x shape
        let e = err(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[8,28]}}"#,
            &[0; 28],
        );
        assert!(e.contains("h.safetensors"), "{e}");
        assert!(e.contains("tensor \"w\" (F32 [2, 3]): data_offsets [8, 28] hold 20 bytes, its dtype and shape need 24"), "{e}");
        // offsets past the data
        let e = err(
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &[0; 8],
        );
        assert!(
            e.contains("tensor \"w\"") && e.contains("outside the 8 bytes"),
            "{e}"
        );
        // a name given twice, even with identical entries (the parser keeps one silently)
        let e = err(
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &[0; 4],
        );
        assert!(e.contains("tensor \"w\" appears twice"), "{e}");
        // a good hand-made file still reads
        let f = from_bytes(
            &file(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                &1f32.to_le_bytes(),
            ),
            p,
        )
        .unwrap();
        assert_eq!(f.tensor("w").unwrap().to_f32_vec(), vec![1.0]);
    }

    #[test]
    fn offsets_summing_past_u64_are_an_error_not_an_overflow() {
        // sixteen contiguous U8 tensors whose last offset is u64::MAX, each size in range: the
        // crate's parser added that offset to the header length and panicked (debug builds)
        let step = 1u64 << 60;
        let parts: Vec<String> = (0..16u64)
            .map(|i| {
                let (a, b) = (i * step, if i == 15 { u64::MAX } else { (i + 1) * step });
                format!(
                    r#""t{i}":{{"dtype":"U8","shape":[{}],"data_offsets":[{a},{b}]}}"#,
                    b - a
                )
            })
            .collect();
        let b = file(&format!("{{{}}}", parts.join(",")), &[0; 4]);
        let e = from_bytes(&b, Path::new("big.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("big.safetensors"), "{e}");
        assert!(
            e.contains(
                "tensor \"t0\": data_offsets [0, 1152921504606846976] lie outside the 4 bytes"
            ),
            "{e}"
        );
    }

    /// A valid file from the writer: `n` tensors of the three float dtypes and one raw, and metadata.
    fn valid(shapes: &[Vec<usize>], seed: u64) -> Vec<u8> {
        let mut f = SafetensorsFile::default();
        for (i, s) in shapes.iter().enumerate() {
            let dt = [DType::F32, DType::F16, DType::BF16][i % 3];
            f.push(
                format!("t{i}"),
                Tensor::randn(s, 1.0, seed + i as u64).to_dtype(dt),
            );
        }
        f.entries.push((
            "ids".into(),
            Entry::Raw {
                dtype: RawDType::I32,
                shape: vec![2],
                bytes: vec![7; 8],
            },
        ));
        f.metadata.insert("format".into(), "pt".into());
        to_bytes(&f).unwrap()
    }

    /// Each entry as (name, dtype, shape, stored bytes): equal exactly when the files hold the
    /// same bits, NaNs included.
    fn bits(f: &SafetensorsFile) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
        f.entries
            .iter()
            .map(|(n, e)| match e {
                Entry::Tensor(t) => (
                    n.clone(),
                    format!("{:?}", t.dtype()),
                    t.shape().to_vec(),
                    t.storage().as_bytes().to_vec(),
                ),
                Entry::Raw {
                    dtype,
                    shape,
                    bytes,
                } => (
                    n.clone(),
                    format!("{dtype:?}"),
                    shape.clone(),
                    bytes.clone(),
                ),
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes, bare or as the header of a file: an error, never a panic (a header
        /// that is a JSON object, such as `{}`, may be a valid file).
        #[test]
        fn arbitrary_bytes_are_errors(
            header in proptest::prelude::any::<bool>(),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let p = Path::new("f.safetensors");
            if header {
                let h = String::from_utf8_lossy(&tail);
                let object = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&h);
                let r = from_bytes(&file(&h, b""), p);
                proptest::prop_assert!(r.is_err() || object.is_ok());
            } else {
                proptest::prop_assert!(from_bytes(&tail, p).is_err());
            }
        }

        /// A valid file cut short, with a wrong header length, or with one byte changed: never a
        /// panic; the first two always an error, and a changed file that still reads writes back
        /// to a file that reads the same tensors.
        #[test]
        fn mutated_valid_files_never_panic(
            shapes in proptest::collection::vec(proptest::collection::vec(0usize..4, 0..3), 0..4),
            seed in 0u64..1000,
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
            hlen in proptest::prop_oneof![
                proptest::strategy::Just(0u64),
                proptest::strategy::Just(u64::MAX),
                proptest::strategy::Just(1 << 31),
                proptest::strategy::Just(1 << 63),
                proptest::prelude::any::<u64>(),
                0u64..400,
            ],
        ) {
            let p = Path::new("f.safetensors");
            let good = valid(&shapes, seed);
            let k = at.index(good.len());
            proptest::prop_assert!(from_bytes(&good[..k], p).is_err());
            if hlen.to_le_bytes() != good[..8] {
                let mut b = good.clone();
                b[..8].copy_from_slice(&hlen.to_le_bytes());
                proptest::prop_assert!(from_bytes(&b, p).is_err());
            }
            let mut b = good.clone();
            b[k] = byte;
            if let Ok(mut f) = from_bytes(&b, p) {
                // the writer lays tensors out by dtype, then name: compare them by name
                let mut again = from_bytes(&to_bytes(&f).unwrap(), p).unwrap();
                f.entries.sort_by(|a, b| a.0.cmp(&b.0));
                again.entries.sort_by(|a, b| a.0.cmp(&b.0));
                // by bits: a changed byte can make a NaN, which `==` never calls equal
                proptest::prop_assert_eq!(bits(&again), bits(&f));
                proptest::prop_assert_eq!(again.metadata, f.metadata);
            }
        }
    }

    #[test]
    fn empty_tensors_sharing_an_offset_read_in_header_order() {
        // they came back in a HashMap's order, which changed from one read to the next
        let h = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"e2":{"dtype":"F16","shape":[0],"data_offsets":[4,4]},"e1":{"dtype":"BF16","shape":[2,0],"data_offsets":[4,4]},"e3":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#;
        let b = file(h, &[0; 4]);
        for _ in 0..20 {
            let f = from_bytes(&b, Path::new("e.safetensors")).unwrap();
            let names: Vec<&str> = f.entries.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["a", "w", "e2", "e1", "e3"]);
        }
        // and what the writer lays out reads back as it was written, every time
        let mut f = SafetensorsFile::default();
        for n in ["z", "y", "x"] {
            f.push(n, Tensor::zeros(&[0], DType::F32));
        }
        f.push("w", Tensor::zeros(&[2], DType::F32));
        let b = to_bytes(&f).unwrap();
        let first = from_bytes(&b, Path::new("e.safetensors")).unwrap();
        for _ in 0..20 {
            assert_eq!(from_bytes(&b, Path::new("e.safetensors")).unwrap(), first);
        }
    }

    #[test]
    fn duplicate_names_rejected() {
        let mut f = SafetensorsFile::default();
        f.push("w", Tensor::zeros(&[1], DType::F32));
        f.push("w", Tensor::zeros(&[1], DType::F32));
        assert!(to_bytes(&f).is_err());
    }

    #[test]
    fn a_tensor_named_like_the_metadata_key_is_refused() {
        // it was written, and the file could not be read back (with or without metadata)
        for meta in [false, true] {
            let mut f = SafetensorsFile::default();
            if meta {
                f.metadata.insert("format".into(), "pt".into());
            }
            f.push("__metadata__", Tensor::zeros(&[1], DType::F32));
            let e = to_bytes(&f).unwrap_err().to_string();
            assert!(e.contains("\"__metadata__\""), "{e}");
        }
    }
}
