use super::*;
use crate::Error;
use crate::granularity::{AxisSlices, NM, Unstructured, topk_mask};
use crate::param::ParamRef;
use crate::scope::{Scope, ScopeKind, compute_masks};
use proptest::prelude::*;

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Global scope ranks all included tensors together: the same set as top-k over the
    /// concatenation (earlier tensor first on ties), total round((1-s) * N).
    #[test]
    fn global_ranks_all_tensors_together(sizes in proptest::collection::vec(1usize..30, 1..5), s in 0.0f64..1.0, seed: u64) {
        let vals: Vec<Vec<f32>> = sizes.iter().enumerate().map(|(i, &n)| values_with_ties(n, seed ^ i as u64)).collect();
        let shapes: Vec<[usize; 1]> = sizes.iter().map(|&n| [n]).collect();
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("t{i}")).collect();
        let params: Vec<ParamRef<'_>> = (0..sizes.len()).map(|i| ParamRef::new(&names[i], &shapes[i], &vals[i])).collect();
        let scores: Vec<Vec<f32>> = vals.iter().map(|v| abs(v)).collect();
        let sel = vec![true; sizes.len()];
        let masks = compute_masks(&params, &scores, &sel, &Unstructured, ScopeKind::Global { min_density: 0.0 }, s).unwrap();
        let all: Vec<f32> = scores.concat();
        let want = topk_mask(&all, py_round(all.len(), s));
        let got: Vec<bool> = masks.into_iter().flat_map(|m| m.unwrap()).collect();
        prop_assert_eq!(got, want);
    }

    /// With a floor, every tensor keeps at least ceil(min * n) and the total is the larger of the
    /// budget and the floors.
    #[test]
    fn global_min_density_is_respected(sizes in proptest::collection::vec(1usize..30, 1..5), s in 0.0f64..1.0, min in 0.0f64..0.6, seed: u64) {
        let vals: Vec<Vec<f32>> = sizes.iter().enumerate().map(|(i, &n)| {
            // tensor i scaled by 10^-i: without floors the later ones would be wiped out
            values(n, seed ^ i as u64).into_iter().map(|x| x * 10f32.powi(-(i as i32))).collect()
        }).collect();
        let shapes: Vec<[usize; 1]> = sizes.iter().map(|&n| [n]).collect();
        let params: Vec<ParamRef<'_>> = (0..sizes.len()).map(|i| ParamRef::new("t", &shapes[i], &vals[i])).collect();
        let scores: Vec<Vec<f32>> = vals.iter().map(|v| abs(v)).collect();
        let masks = compute_masks(&params, &scores, &vec![true; sizes.len()], &Unstructured, ScopeKind::Global { min_density: min }, s).unwrap();
        let mut reserved = 0;
        let mut total = 0;
        for (m, &n) in masks.iter().zip(&sizes) {
            let floor = ((min * n as f64) - 1e-9).ceil() as usize;
            let k = count(m.as_ref().unwrap());
            prop_assert!(k >= floor.min(n));
            reserved += floor.min(n);
            total += k;
        }
        let budget = py_round(sizes.iter().sum(), s);
        prop_assert_eq!(total, budget.max(reserved));
    }

    /// Per-layer scope: every selected tensor reaches its own count; unselected ones get no mask.
    #[test]
    fn layer_scope_is_per_tensor(sizes in proptest::collection::vec(1usize..30, 1..5), s in 0.0f64..1.0, seed: u64) {
        let vals: Vec<Vec<f32>> = sizes.iter().enumerate().map(|(i, &n)| values_with_ties(n, seed ^ i as u64)).collect();
        let shapes: Vec<[usize; 1]> = sizes.iter().map(|&n| [n]).collect();
        let params: Vec<ParamRef<'_>> = (0..sizes.len()).map(|i| ParamRef::new("t", &shapes[i], &vals[i])).collect();
        let scores: Vec<Vec<f32>> = vals.iter().map(|v| abs(v)).collect();
        let sel: Vec<bool> = (0..sizes.len()).map(|i| i % 2 == 0).collect();
        let masks = compute_masks(&params, &scores, &sel, &Unstructured, ScopeKind::Layer, s).unwrap();
        for (i, m) in masks.iter().enumerate() {
            match m {
                Some(m) => { prop_assert!(sel[i]); prop_assert_eq!(count(m), py_round(sizes[i], s)); }
                None => prop_assert!(!sel[i]),
            }
        }
    }
}

#[test]
fn selection_defaults_and_regexes() {
    let t: Vec<(&str, &[usize])> = vec![
        ("h.0.attn.weight", &[8, 8]),
        ("h.0.attn.bias", &[8]),
        ("wte.weight", &[100, 8]),
        ("model.embed_tokens.weight", &[100, 8]),
        ("h.0.mlp.weight", &[8, 8]),
    ];
    let sel = Scope::layer().select(&t).unwrap();
    assert_eq!(sel, [true, false, false, false, true]);
    let sel = Scope::layer()
        .with_1d(true)
        .with_embeddings(true)
        .select(&t)
        .unwrap();
    assert_eq!(sel, [true; 5]);
    let sel = Scope::layer().include("mlp").unwrap().select(&t).unwrap();
    assert_eq!(sel, [false, false, false, false, true]);
    let sel = Scope::layer().exclude(r"attn").unwrap().select(&t).unwrap();
    assert_eq!(sel, [false, false, false, false, true]);
    let e = Scope::layer()
        .include("nothing_like_this")
        .unwrap()
        .select(&t)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoMatch {
                which: "include",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("nothing_like_this"));
    let e = Scope::layer()
        .exclude("zzz")
        .unwrap()
        .select(&t)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoMatch {
                which: "exclude",
                ..
            }
        ),
        "{e}"
    );
    let e = Scope::layer()
        .include("bias")
        .unwrap()
        .select(&t)
        .unwrap_err();
    assert!(matches!(e, Error::NothingSelected(_)), "{e}");
    assert!(matches!(
        Scope::layer().include("(").unwrap_err(),
        Error::Regex { .. }
    ));
    assert!(Scope::global(1.5).is_err());
}

#[test]
fn global_scope_needs_elementwise_or_fixed_pattern() {
    let v = values(16, 1);
    let sh = [4, 4];
    let p = [ParamRef::new("w", &sh, &v)];
    let sc = vec![abs(&v)];
    let g = ScopeKind::Global { min_density: 0.0 };
    assert!(compute_masks(&p, &sc, &[true], &AxisSlices::rows(), g, 0.5).is_err());
    let m = compute_masks(&p, &sc, &[true], &NM::new(2, 4).unwrap(), g, 0.0).unwrap();
    assert_eq!(count(m[0].as_ref().unwrap()), 8);
    for s in [-0.1, 1.0, f64::NAN] {
        let e = compute_masks(&p, &sc, &[true], &Unstructured, ScopeKind::Layer, s).unwrap_err();
        assert!(e.to_string().contains("sparsity"), "{e}");
    }
}

#[test]
fn global_min_density_out_of_range_is_an_error() {
    // `ScopeKind::Global` can be built without `Scope::global`'s check: NaN acted as 0 silently
    let v = [3.0f32, 1.0, 2.0, 4.0];
    let p = [ParamRef::new("w", &[2, 2], &v)];
    let scores = [abs(&v)];
    for min_density in [f64::NAN, -0.1, 5.0] {
        let e = compute_masks(
            &p,
            &scores,
            &[true],
            &Unstructured,
            ScopeKind::Global { min_density },
            0.5,
        )
        .unwrap_err();
        assert!(e.to_string().contains("min density"), "{min_density}: {e}");
    }
}
