use super::*;
use crate::Error;
use crate::store::{self, Want};
use lopper_tensor::io::safetensors::{Entry, RawDType, SafetensorsFile};
use lopper_tensor::{DType, Tensor};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn pruned(shape: &[usize], seed: u64, keep_every: usize) -> Vec<f32> {
    let n = shape.iter().product();
    values(n, seed)
        .into_iter()
        .enumerate()
        .map(|(i, x)| if i % keep_every == 0 { x } else { 0.0 })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Compressed store round trip: CSR and N:M tensors in f32, f16 and bf16, raw and dense
    /// entries and other metadata all read back exactly, through a real file.
    #[test]
    fn compressed_round_trip_is_exact(rows in 1usize..6, groups in 1usize..4, seed: u64, d in 0usize..3) {
        let dtype = [DType::F32, DType::F16, DType::BF16][d];
        let sh = [rows, groups * 4];
        let mut f = SafetensorsFile::default();
        let mut neg = pruned(&sh, seed, 3);
        neg[0] = -0.0;
        f.push("a.weight", Tensor::from_f32(&sh, neg).unwrap().to_dtype(dtype));
        f.push("b.weight", Tensor::from_f32(&sh, pruned(&sh, seed ^ 1, 2)).unwrap().to_dtype(dtype));
        f.push("c.bias", Tensor::from_f32(&[3], vec![1.0, 0.0, 2.0]).unwrap());
        f.entries.push(("ids".into(), Entry::Raw { dtype: RawDType::I64, shape: vec![2], bytes: vec![1; 16] }));
        f.metadata.insert("format".into(), "pt".into());
        let want = BTreeMap::from([("a.weight".to_string(), Want::Csr), ("b.weight".to_string(), Want::Nm(2, 4))]);
        let c = store::compress(&f, &want).unwrap();
        prop_assert!(c.entries.iter().any(|(n, _)| n == "a.weight.csr_values"));
        prop_assert!(c.entries.iter().any(|(n, _)| n == "b.weight.nm_index"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        lopper_tensor::io::safetensors::write(&p, &c).unwrap();
        let back = store::load(&p).unwrap();
        prop_assert_eq!(&back, &f);
        // -0.0 survived bit for bit
        let a = back.tensor("a.weight").unwrap().to_f32_vec();
        prop_assert!(a[0].is_sign_negative());
        // a plain file reads back as itself
        prop_assert_eq!(store::decompress(&f, "x").unwrap(), f);
    }
}

#[test]
fn store_rejects_bad_input() {
    let sh = [2, 4];
    let mut f = SafetensorsFile::default();
    f.push(
        "w",
        Tensor::from_f32(&sh, vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 1.0]).unwrap(),
    );
    // 3 non-zeros in a group of 4 cannot be 2:4
    let want = BTreeMap::from([("w".to_string(), Want::Nm(2, 4))]);
    assert!(matches!(
        store::compress(&f, &want).unwrap_err(),
        Error::Pattern { .. }
    ));
    let want = BTreeMap::from([("w".to_string(), Want::Csr)]);
    let c = store::compress(&f, &want).unwrap();
    // tamper: drop a part
    let mut t = c.clone();
    t.entries.retain(|(n, _)| n != "w.csr_col_idx");
    assert!(
        store::decompress(&t, "t")
            .unwrap_err()
            .to_string()
            .contains("csr_col_idx")
    );
    // tamper: stray tensor
    let mut t = c.clone();
    t.push("stray", Tensor::zeros(&[1], DType::F32));
    assert!(
        store::decompress(&t, "t")
            .unwrap_err()
            .to_string()
            .contains("stray")
    );
    // tamper: bad manifest
    let mut t = c.clone();
    t.metadata
        .insert(store::MANIFEST_KEY.into(), "{not json".into());
    assert!(matches!(
        store::decompress(&t, "t").unwrap_err(),
        Error::Store { .. }
    ));
    // tamper: the manifest lists w twice, or claims a shape that cannot be expanded
    let man = c.metadata[store::MANIFEST_KEY].clone();
    let mut v: serde_json::Value = serde_json::from_str(&man).unwrap();
    let entry = v["tensors"][0].clone();
    v["tensors"].as_array_mut().unwrap().push(entry);
    let mut t = c.clone();
    t.metadata.insert(store::MANIFEST_KEY.into(), v.to_string());
    let e = store::decompress(&t, "t").unwrap_err().to_string();
    assert!(e.contains("\"w\" is listed twice"), "{e}");
    let mut shapes = vec![serde_json::json!([2, u64::MAX])]; // overflows
    if lopper_tensor::mem::physical_memory().is_some() {
        shapes.push(serde_json::json!([1u64 << 20, 1u64 << 22])); // 16 TiB
    }
    for shape in shapes {
        let mut v: serde_json::Value = serde_json::from_str(&man).unwrap();
        v["tensors"][0]["shape"] = shape;
        let mut t = c.clone();
        t.metadata.insert(store::MANIFEST_KEY.into(), v.to_string());
        let e = store::decompress(&t, "t").unwrap_err().to_string();
        assert!(e.contains("w"), "{e}");
        assert!(e.contains("memory"), "{e}");
    }
    // tamper: out-of-range column index
    let mut t = c;
    for (n, e) in t.entries.iter_mut() {
        if n == "w.csr_col_idx"
            && let Entry::Raw { bytes, .. } = e
        {
            bytes[0..4].copy_from_slice(&9i32.to_le_bytes());
        }
    }
    assert!(
        store::decompress(&t, "t")
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
    // name collision
    let mut f2 = f.clone();
    f2.push("w.csr_values", Tensor::zeros(&[1], DType::F32));
    let want = BTreeMap::from([("w".to_string(), Want::Csr)]);
    assert!(
        store::compress(&f2, &want)
            .unwrap_err()
            .to_string()
            .contains("collides")
    );
}

#[test]
fn index_entries_with_overflowing_shapes_are_errors() {
    // a file built in memory (not read from disk, where the reader checks sizes) whose row
    // offsets claim 2^62 I32 entries with no bytes: `2^62 * 4` wrapped to 0 and matched
    let sh = [2, 4];
    let mut f = SafetensorsFile::default();
    f.push("w", Tensor::from_f32(&sh, pruned(&sh, 1, 2)).unwrap());
    let want = BTreeMap::from([("w".to_string(), Want::Csr)]);
    let mut c = store::compress(&f, &want).unwrap();
    for dtype in [RawDType::I32, RawDType::I64] {
        let (_, e) = c
            .entries
            .iter_mut()
            .find(|(n, _)| n == "w.csr_row_ptr")
            .unwrap();
        *e = Entry::Raw {
            dtype,
            shape: vec![1 << 62],
            bytes: vec![],
        };
        let err = store::decompress(&c, "mem").unwrap_err().to_string();
        assert!(
            err.contains("w.csr_row_ptr: expected a 1-D I32 or I64 tensor"),
            "{err}"
        );
    }
}
