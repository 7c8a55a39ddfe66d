use super::*;
use crate::criterion::{self, Criterion, Magnitude, Movement, Random, Snip, Taylor, Wanda};
use crate::granularity::{Granularity, Unstructured};
use crate::param::ParamRef;
use lopper_sparse::Csr;
use lopper_tensor::MatRef;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Unstructured magnitude keeps exactly round((1-s)n), the largest |w|, ties to the lower
    /// index: the same set as lopper-sparse's Csr::from_topk.
    #[test]
    fn magnitude_unstructured_is_exact_topk(rows in 1usize..10, cols in 1usize..12, s in 0.0f64..1.0, seed: u64) {
        let n = rows * cols;
        let v = values_with_ties(n, seed);
        let shape = [rows, cols];
        let p = ParamRef::new("w", &shape, &v);
        let sc = Magnitude.score(p).unwrap();
        let m = Unstructured.mask("w", &shape, &sc, s).unwrap();
        prop_assert_eq!(count(&m), py_round(n, s));
        assert_topk_order(&sc, &m);
        let c = Csr::from_topk(MatRef::new(&v, rows, cols).unwrap(), py_round(n, s)).unwrap();
        prop_assert_eq!(c.mask(), m);
    }

    /// Every criterion: exact count, kept scores dominate dropped ones, formula checked.
    #[test]
    fn gradient_criteria_follow_their_formulas(n in 1usize..40, steps in 1usize..4, s in 0.0f64..1.0, seed: u64) {
        let w = values_with_ties(n, seed);
        let grads: Vec<Vec<f32>> = (0..steps).map(|t| values_with_ties(n, seed ^ (t as u64 + 1))).collect();
        let shape = [n];
        let mut mv = Movement::new();
        let mut ty = Taylor::new();
        let mut sn = Snip::new();
        for g in &grads {
            let p = ParamRef::new("w", &shape, &w).with_grad(g);
            mv.observe(p).unwrap();
            ty.observe(p).unwrap();
            sn.observe(p).unwrap();
        }
        let p = ParamRef::new("w", &shape, &w);
        let (smv, sty, ssn) = (mv.score(p).unwrap(), ty.score(p).unwrap(), sn.score(p).unwrap());
        for i in 0..n {
            let sum_wg: f32 = grads.iter().map(|g| -w[i] * g[i]).sum();
            prop_assert!((smv[i] - sum_wg).abs() <= 1e-5 * (1.0 + sum_wg.abs()));
            let mean_abs: f32 = grads.iter().map(|g| (w[i] * g[i]).abs()).sum::<f32>() / steps as f32;
            prop_assert!((sty[i] - mean_abs).abs() <= 1e-5 * (1.0 + mean_abs));
            let mean_g: f32 = grads.iter().map(|g| g[i]).sum::<f32>() / steps as f32;
            prop_assert!((ssn[i] - (w[i] * mean_g).abs()).abs() <= 1e-5 * (1.0 + mean_g.abs()));
        }
        for sc in [&smv, &sty, &ssn] {
            let m = Unstructured.mask("w", &shape, sc, s).unwrap();
            prop_assert_eq!(count(&m), py_round(n, s));
            assert_topk_order(sc, &m);
        }
    }

    /// Wanda: |w_ij| * ||x_j|| with norms accumulated from activations.
    #[test]
    fn wanda_scales_columns_by_input_norms(rows in 1usize..6, cols in 1usize..8, toks in 1usize..5, seed: u64) {
        let w = values(rows * cols, seed);
        let x = values(toks * cols, seed ^ 7);
        let shape = [rows, cols];
        let mut wd = Wanda::new();
        wd.observe_inputs("w", MatRef::new(&x, toks, cols).unwrap()).unwrap();
        let sc = wd.score(ParamRef::new("w", &shape, &w)).unwrap();
        for i in 0..rows { for j in 0..cols {
            let nj: f32 = (0..toks).map(|t| x[t * cols + j] * x[t * cols + j]).sum::<f32>().sqrt();
            let want = w[i * cols + j].abs() * nj;
            prop_assert!((sc[i * cols + j] - want).abs() <= 1e-4 * (1.0 + want));
        }}
    }

    /// Random: reproducible from the seed, in [0, 1), exact counts.
    #[test]
    fn random_is_seeded_and_exact(n in 1usize..60, s in 0.0f64..1.0, seed: u64) {
        let w = values(n, seed);
        let shape = [n];
        let p = ParamRef::new("w", &shape, &w);
        let a = Random::new(seed).score(p).unwrap();
        prop_assert_eq!(&a, &Random::new(seed).score(p).unwrap());
        prop_assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
        let m = Unstructured.mask("w", &shape, &a, s).unwrap();
        prop_assert_eq!(count(&m), py_round(n, s));
    }
}

#[test]
fn criteria_errors_are_typed() {
    let w = [1.0f32, 2.0];
    let shape = [2];
    let p = ParamRef::new("w", &shape, &w);
    for name in ["movement", "taylor", "snip"] {
        let mut c = criterion::by_name(name, 0).unwrap();
        let e = c.score(p).unwrap_err().to_string();
        assert!(e.contains("no gradient") && e.contains("\"w\""), "{e}");
    }
    let e = Wanda::new().score(p).unwrap_err().to_string();
    assert!(e.contains("no input activation norms"), "{e}");
    let mut wd = Wanda::new();
    wd.set_input_norms("w", &[1.0, 2.0, 3.0]);
    assert!(wd.score(p).is_err());
    assert!(criterion::by_name("bogus", 0).is_err());
    let bad = ParamRef::new("w", &[3], &w);
    assert!(Magnitude.score(bad).is_err());
    // random differs across seeds
    assert_ne!(
        Random::new(1).score(p).unwrap(),
        Random::new(2).score(p).unwrap()
    );
}
