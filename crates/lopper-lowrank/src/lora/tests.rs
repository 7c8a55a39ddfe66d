//! Tests of the LoRA layer: init, merge/unmerge round trips, gradients, sparse base.
use super::*;
use crate::testutil::*;
use proptest::prelude::*;

pub(crate) fn layer(m: usize, k: usize, r: usize, seed: u64) -> LoraLinear {
    let w = Tensor::from_f32(&[m, k], randn(m * k, seed)).unwrap();
    let mut l = LoraLinear::new(&w, r, 2.0 * r as f32, seed + 1).unwrap();
    // B is zero at init; give it values so the update is not trivially zero
    l.adapter_mut().unwrap().b = randn(m * r, seed + 2);
    l
}

#[test]
fn starts_equal_to_base() {
    let w = Tensor::from_f32(&[5, 7], randn(35, 1)).unwrap();
    let l = LoraLinear::new(&w, 3, 6.0, 2).unwrap();
    assert!(l.adapter().b.iter().all(|&x| x == 0.0));
    let bound = 1.0 / 7f32.sqrt();
    assert!(
        l.adapter().a.iter().all(|&x| x.abs() <= bound) && l.adapter().a.iter().any(|&x| x != 0.0)
    );
    let x = randn(4 * 7, 3);
    let y = l.forward(MatRef::new(&x, 4, 7).unwrap(), Par::Seq).unwrap();
    let wt: Vec<f32> = (0..7)
        .flat_map(|j| {
            (0..5)
                .map(|i| w.as_f32().unwrap()[i * 7 + j])
                .collect::<Vec<_>>()
        })
        .collect();
    let want = matmul_ref(&x, &wt, 4, 7, 5);
    assert!(
        y.iter()
            .zip(&want)
            .all(|(&a, &b)| (a as f64 - b).abs() < 1e-4)
    );
    assert!(LoraLinear::new(&w, 0, 1.0, 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn merge_unmerge_round_trip(m in 1usize..24, k in 1usize..24, r in 1usize..6, t in 1usize..6, seed in 0u64..500) {
        let mut l = layer(m, k, r, seed);
        let Base::Dense(w0) = l.base().clone() else { unreachable!() };
        let x = randn(t * k, seed + 9);
        let xm = MatRef::new(&x, t, k).unwrap();
        let y0 = l.forward(xm, Par::Seq).unwrap();
        let delta = l.adapter().delta(Par::Seq).unwrap();
        let dmax = delta.iter().fold(0.0f32, |a, &d| a.max(d.abs()));
        let rep = l.merge(Par::Seq).unwrap();
        prop_assert!(l.merge(Par::Seq).is_err());
        // the change reported is the update, up to rounding
        prop_assert!((rep.max_abs_change - dmax).abs() <= 1e-5 * (1.0 + dmax) * 4.0);
        let y1 = l.forward(xm, Par::Seq).unwrap();
        for (a, b) in y0.iter().zip(&y1) {
            prop_assert!((a - b).abs() <= 1e-4 * (k as f32 + 1.0) * (1.0 + b.abs()));
        }
        let rep2 = l.unmerge(Par::Seq).unwrap();
        prop_assert!((rep2.fro_change - rep.fro_change).abs() <= 1e-5 * (1.0 + rep.fro_change) * 4.0);
        let Base::Dense(w1) = l.base() else { unreachable!() };
        // exact up to the rounding of one add and one subtract: |w1 - w0| <= 2 ulp(|w0| + |delta|)
        for ((a, b), d) in w1.iter().zip(&w0).zip(&delta) {
            let ulp = f32::EPSILON * (b.abs() + d.abs());
            prop_assert!((a - b).abs() <= 2.0 * ulp, "{a} vs {b}");
        }
    }

    #[test]
    fn backward_matches_finite_differences_of_a_linear_loss(m in 1usize..8, k in 1usize..8, r in 1usize..4,
                                                            t in 1usize..4, seed in 0u64..500) {
        // loss = sum(Y * dY) is linear in A for fixed B (and in B for fixed A): the gradient is
        // exactly the difference quotient up to rounding.
        let l = layer(m, k, r, seed);
        let x = randn(t * k, seed + 3);
        let dy = randn(t * m, seed + 4);
        let xm = MatRef::new(&x, t, k).unwrap();
        let loss = |l: &LoraLinear| -> f64 {
            l.forward(xm, Par::Seq).unwrap().iter().zip(&dy).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let g = l.backward(xm, MatRef::new(&dy, t, m).unwrap(), Par::Seq).unwrap();
        let base = loss(&l);
        let h = 1e-2f32;
        for i in 0..r * k {
            let mut l2 = l.clone();
            l2.adapter_mut().unwrap().a[i] += h;
            let fd = (loss(&l2) - base) / h as f64;
            prop_assert!((fd - g.da[i] as f64).abs() <= 2e-2 * (1.0 + fd.abs()), "dA[{i}] {fd} vs {}", g.da[i]);
        }
        for i in 0..m * r {
            let mut l2 = l.clone();
            l2.adapter_mut().unwrap().b[i] += h;
            let fd = (loss(&l2) - base) / h as f64;
            prop_assert!((fd - g.db[i] as f64).abs() <= 2e-2 * (1.0 + fd.abs()), "dB[{i}] {fd} vs {}", g.db[i]);
        }
    }
}

#[test]
fn sparse_base_matches_dense_and_round_trips() {
    let (m, k, r, t) = (9, 7, 2, 3);
    let w = randn(m * k, 5);
    let csr = Csr::from_topk(MatRef::new(&w, m, k).unwrap(), 20).unwrap();
    let mut dense = layer(m, k, r, 5);
    dense.base = Base::Dense(csr.to_dense());
    let mut sparse =
        LoraLinear::with_adapter(Base::Sparse(csr.clone()), dense.adapter().clone()).unwrap();
    let x = randn(t * k, 6);
    let dy = randn(t * m, 7);
    let (xm, dym) = (
        MatRef::new(&x, t, k).unwrap(),
        MatRef::new(&dy, t, m).unwrap(),
    );
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
    };
    assert!(close(
        &sparse.forward(xm, Par::Seq).unwrap(),
        &dense.forward(xm, Par::Seq).unwrap()
    ));
    let (gs, gd) = (
        sparse.backward(xm, dym, Par::Seq).unwrap(),
        dense.backward(xm, dym, Par::Seq).unwrap(),
    );
    assert!(close(&gs.dx, &gd.dx) && close(&gs.da, &gd.da) && close(&gs.db, &gd.db));
    let y0 = sparse.forward(xm, Par::Seq).unwrap();
    sparse.merge(Par::Seq).unwrap();
    assert!(matches!(sparse.base(), Base::Dense(_)));
    assert!(close(&sparse.forward(xm, Par::Seq).unwrap(), &y0));
    let rep = sparse.unmerge(Par::Seq).unwrap();
    // (0 + d) - d is exactly 0 in IEEE arithmetic: nothing left off the pattern
    assert_eq!(rep.off_pattern_max, 0.0);
    let Base::Sparse(back) = sparse.base() else {
        panic!("unmerge restores the CSR")
    };
    assert_eq!(
        (back.row_ptr(), back.col_idx()),
        (csr.row_ptr(), csr.col_idx())
    );
    for (a, b) in back.values().iter().zip(csr.values()) {
        assert!(
            (a - b).abs() <= 4.0 * f32::EPSILON * (1.0 + b.abs()),
            "{a} vs {b}"
        );
    }
    assert!(
        LoraLinear::with_adapter(
            Base::Sparse(csr),
            LoraAdapter::new(3, 3, 1, 1.0, 0).unwrap()
        )
        .is_err()
    );
}

#[test]
fn claimed_sizes_and_alpha_are_checked() {
    // a rank of 2^62 for a 4x4 weight: A would be 2^64 floats; refused, not an abort
    let e = LoraAdapter::new(4, 4, 1 << 62, 1.0, 0).unwrap_err();
    assert!(e.to_string().contains("LoraAdapter::new: A"), "{e}");
    if lopper_tensor::mem::physical_memory().is_some_and(|m| m < 1 << 50) {
        let e = LoraAdapter::new(1 << 20, 1 << 20, 1 << 20, 1.0, 0).unwrap_err();
        assert!(
            e.to_string()
                .contains("A (1048576x1048576) of a rank-1048576 adapter"),
            "{e}"
        );
    }
    // from_parts refused a NaN alpha only in `new`: now in both
    let (a, b) = (
        Tensor::zeros(&[1, 2], lopper_tensor::DType::F32),
        Tensor::zeros(&[2, 1], lopper_tensor::DType::F32),
    );
    for alpha in [f32::NAN, f32::INFINITY] {
        let e = LoraAdapter::from_parts(&a, &b, alpha).unwrap_err();
        assert!(e.to_string().contains("alpha"), "{e}");
    }
    // a file whose metadata says alpha = NaN is an error naming the file and the adapter
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("adapter.safetensors");
    let ad = LoraAdapter::from_parts(&a, &b, 2.0).unwrap();
    save_adapters(&p, &[("layer", &ad)]).unwrap();
    let mut f = lopper_tensor::io::safetensors::read(&p).unwrap();
    let key = f
        .metadata
        .keys()
        .find(|k| k.ends_with("lora_alpha"))
        .unwrap()
        .clone();
    f.metadata.insert(key, "NaN".into());
    lopper_tensor::io::safetensors::write(&p, &f).unwrap();
    let e = load_adapters(&p, None).unwrap_err().to_string();
    assert!(
        e.contains("adapter.safetensors") && e.contains("alpha = NaN"),
        "{e}"
    );
}
