use super::*;
use crate::checkpoint::{PruneSpec, describe, prune_checkpoint};
use crate::scope::Scope;
use lopper_tensor::io::safetensors::SafetensorsFile;
use lopper_tensor::{DType, Tensor};

fn file() -> SafetensorsFile {
    let mut f = SafetensorsFile::default();
    f.push(
        "a.weight",
        Tensor::from_f32(&[6, 8], values(48, 1)).unwrap(),
    );
    f.push(
        "b.weight",
        Tensor::from_f32(&[4, 8], values(32, 2))
            .unwrap()
            .to_dtype(DType::BF16),
    );
    f.push("b.bias", Tensor::from_f32(&[4], values(4, 3)).unwrap());
    f
}

fn spec(s: Option<f64>, method: &str, pattern: &str, seed: u64) -> PruneSpec {
    PruneSpec {
        sparsity: s,
        method: method.into(),
        pattern: pattern.into(),
        scope: Scope::layer(),
        seed,
        compressed: false,
        permute_report: false,
    }
}

#[test]
fn random_method_is_seeded_and_exact() {
    let f = file();
    let a = prune_checkpoint(&f, &spec(Some(0.25), "random", "unstructured", 7)).unwrap();
    let b = prune_checkpoint(&f, &spec(Some(0.25), "random", "unstructured", 7)).unwrap();
    let c = prune_checkpoint(&f, &spec(Some(0.25), "random", "unstructured", 8)).unwrap();
    assert_eq!(a.file, b.file);
    assert_ne!(a.file, c.file);
    assert_eq!(
        a.report.totals.kept,
        py_round(48, 0.25) + py_round(32, 0.25)
    );
    assert_eq!(a.file.tensor("b.weight").unwrap().dtype(), DType::BF16);
    assert_eq!(a.file.tensor("b.bias"), f.tensor("b.bias"));
}

#[test]
fn rows_pattern_and_description() {
    let f = file();
    let p = prune_checkpoint(&f, &spec(Some(0.5), "magnitude", "rows", 0)).unwrap();
    let w = p.file.tensor("a.weight").unwrap().to_f32_vec();
    assert_eq!(
        w.chunks(8).filter(|r| r.iter().all(|x| *x == 0.0)).count(),
        3
    );
    let d = describe(&p.file, "mem").unwrap();
    assert!(!d.compressed);
    assert_eq!(d.float_tensors, 3);
    assert_eq!(d.nonzeros, 24 + 16 + 4);
    let p = prune_checkpoint(&f, &spec(None, "magnitude", "1:4", 0)).unwrap();
    let d = describe(&p.file, "mem").unwrap();
    assert_eq!(d.valid_2_4, 2);
    assert_eq!(d.tensors[0].n_of_4, Some(1));
    let mut s = spec(None, "magnitude", "1:4", 0);
    s.compressed = true;
    s.permute_report = true;
    let c = prune_checkpoint(&f, &s).unwrap();
    let dc = describe(&c.file, "mem").unwrap();
    assert!(dc.compressed);
    assert_eq!(dc.tensors[0].layout, "nm");
    assert_eq!(dc.nonzeros, d.nonzeros);
    assert_eq!(c.permutations.len(), 2);
    for (_, p) in &c.permutations {
        assert!(p.kept_permuted >= p.kept_identity && p.kept_identity > 0.25);
    }
}

#[test]
fn non_finite_values_are_an_error_naming_the_tensor() {
    // a NaN or infinite weight has no place in a ranking (it used to be kept as the "largest"):
    // the checkpoint is refused, naming the tensor and where its first bad value is
    let mut f = SafetensorsFile::default();
    f.push(
        "ok",
        Tensor::from_f32(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
    );
    let v = vec![1.0, f32::NAN, 2.0, 3.0, -4.0, 0.0, 0.5, f32::INFINITY];
    f.push("w", Tensor::from_f32(&[2, 4], v).unwrap());
    for pattern in ["2:4", "unstructured"] {
        let sp = if pattern == "2:4" { None } else { Some(0.5) };
        let e = prune_checkpoint(&f, &spec(sp, "magnitude", pattern, 0)).unwrap_err();
        assert!(
            matches!(e, crate::Error::Pattern { ref tensor, .. } if tensor == "w"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("2 NaN or infinite values (the first at flat index 1)"),
            "{e}"
        );
    }
}
