//! Optimizers against plain f64 references (PyTorch's update rules), masks, remap, state
//! round trip, stale state, gradient clipping.
use lopper_nn::ParamMut;
use lopper_train::optim::{GradClip, decay_all, grad_norm};
use lopper_train::{AdamW, AdamWConfig, Error, Optimizer, Sgd, SgdConfig, clip_grad_norm};
use proptest::prelude::*;

fn one<'a>(name: &str, v: &'a mut [f32], g: &'a [f32], m: Option<&'a [bool]>) -> Vec<ParamMut<'a>> {
    vec![ParamMut {
        name: name.into(),
        values: v,
        grad: g,
        mask: m,
    }]
}

/// f64 AdamW reference (torch.optim.AdamW, amsgrad off), `steps` updates with gradients `gs`.
fn adamw_ref(p0: &[f32], gs: &[Vec<f32>], lr: f64, c: AdamWConfig) -> Vec<f64> {
    let (b1, b2, eps, wd) = (
        c.beta1 as f64,
        c.beta2 as f64,
        c.eps as f64,
        c.weight_decay as f64,
    );
    let mut p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for (t, g) in gs.iter().enumerate() {
        let t = (t + 1) as i32;
        for i in 0..p.len() {
            let gi = g[i] as f64;
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let mh = m[i] / (1.0 - b1.powi(t));
            let vh = v[i] / (1.0 - b2.powi(t));
            p[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }
    p
}

/// f64 SGD reference (torch.optim.SGD).
fn sgd_ref(p0: &[f32], gs: &[Vec<f32>], lr: f64, c: SgdConfig) -> Vec<f64> {
    let (mu, damp, wd) = (c.momentum as f64, c.dampening as f64, c.weight_decay as f64);
    let mut p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let mut buf: Option<Vec<f64>> = None;
    for g in gs {
        let mut d: Vec<f64> = g.iter().zip(&p).map(|(&g, &x)| g as f64 + wd * x).collect();
        if mu != 0.0 {
            let b = match buf.take() {
                None => d.clone(),
                Some(b) => b
                    .iter()
                    .zip(&d)
                    .map(|(b, d)| mu * b + (1.0 - damp) * d)
                    .collect(),
            };
            d = if c.nesterov {
                d.iter().zip(&b).map(|(d, b)| d + mu * b).collect()
            } else {
                b.clone()
            };
            buf = Some(b);
        }
        for (x, d) in p.iter_mut().zip(&d) {
            *x -= lr * d;
        }
    }
    p
}

fn close(a: &[f32], b: &[f64], tol: f64) -> std::result::Result<(), String> {
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if (x as f64 - y).abs() > tol * (1.0 + y.abs()) {
            return Err(format!("entry {i}: {x} vs reference {y}"));
        }
    }
    Ok(())
}

fn vals(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-1.0f32..1.0, n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn adamw_matches_reference(
        p0 in vals(1..40),
        seed in 0u64..1000,
        steps in 1usize..6,
        wd in 0.0f32..0.2,
        par in any::<bool>(),
    ) {
        let n = p0.len();
        let gs: Vec<Vec<f32>> = (0..steps)
            .map(|s| (0..n).map(|i| (((seed + 31 * s as u64 + 7 * i as u64) % 97) as f32 / 48.0) - 1.0).collect())
            .collect();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: wd };
        let mut o = AdamW::new(cfg).unwrap().with_decay_filter(decay_all)
            .with_par_threshold(if par { 1 } else { usize::MAX });
        let mut p = p0.clone();
        for g in &gs {
            o.step(&mut one("w", &mut p, g, None), 1e-2).unwrap();
        }
        let r = adamw_ref(&p0, &gs, 1e-2, cfg);
        prop_assert!(close(&p, &r, 1e-5).is_ok(), "{:?}", close(&p, &r, 1e-5));
    }

    #[test]
    fn sgd_matches_reference(
        p0 in vals(1..40),
        seed in 0u64..1000,
        steps in 1usize..6,
        momentum in 0.0f32..0.95,
        nesterov in any::<bool>(),
        damp in 0.0f32..0.5,
        wd in 0.0f32..0.1,
    ) {
        let n = p0.len();
        let gs: Vec<Vec<f32>> = (0..steps)
            .map(|s| (0..n).map(|i| (((seed + 13 * s as u64 + 5 * i as u64) % 89) as f32 / 44.0) - 1.0).collect())
            .collect();
        let cfg = SgdConfig {
            momentum,
            dampening: if nesterov { 0.0 } else { damp },
            nesterov: nesterov && momentum > 0.0,
            weight_decay: wd,
        };
        let mut o = Sgd::new(cfg).unwrap().with_decay_filter(decay_all);
        let mut p = p0.clone();
        for g in &gs {
            o.step(&mut one("w", &mut p, g, None), 0.05).unwrap();
        }
        let r = sgd_ref(&p0, &gs, 0.05, cfg);
        prop_assert!(close(&p, &r, 1e-5).is_ok(), "{:?}", close(&p, &r, 1e-5));
    }

    #[test]
    fn masks_stay_true(p0 in vals(1..64), mseed in 0u64..1000) {
        let n = p0.len();
        let mask: Vec<bool> = (0..n).map(|i| (mseed >> (i % 10)) & 1 == 1 || i % 3 == 0).collect();
        let g: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.0).collect();
        let mut adam = AdamW::default();
        let mut sgd = Sgd::new(SgdConfig { momentum: 0.9, weight_decay: 0.1, ..Default::default() }).unwrap();
        let (mut pa, mut ps) = (p0.clone(), p0.clone());
        for _ in 0..3 {
            adam.step(&mut one("l.weight", &mut pa, &g, Some(&mask)), 0.1).unwrap();
            sgd.step(&mut one("l.weight", &mut ps, &g, Some(&mask)), 0.1).unwrap();
        }
        let sa = adam.state();
        let ss = sgd.state();
        for i in 0..n {
            if !mask[i] {
                prop_assert_eq!(pa[i].to_bits(), 0);
                prop_assert_eq!(ps[i].to_bits(), 0);
                prop_assert_eq!(sa.tensors["l.weight.m"][i], 0.0);
                prop_assert_eq!(sa.tensors["l.weight.v"][i], 0.0);
                prop_assert_eq!(ss.tensors["l.weight.momentum"][i], 0.0);
            } else {
                prop_assert!(sa.tensors["l.weight.v"][i] > 0.0 || g[i] == 0.0);
            }
        }
    }

    /// A mask only zeroes its false entries: the kept ones get bit for bit the update of an unmasked
    /// run (SGD with and without momentum, AdamW), starting from values that are already masked.
    #[test]
    fn masked_updates_match_unmasked_on_kept_entries(p0 in vals(1..300), mseed in 0u64..1000,
                                                       momentum in prop::sample::select(vec![0.0f32, 0.9])) {
        let n = p0.len();
        let mask: Vec<bool> = (0..n).map(|i| (mseed >> (i % 10)) & 1 == 1).collect();
        let p0: Vec<f32> = p0.iter().zip(&mask).map(|(&v, &k)| if k { v } else { 0.0 }).collect();
        let g: Vec<f32> = (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.07).collect();
        let sgd = || Sgd::new(SgdConfig { momentum, weight_decay: 0.1, ..Default::default() }).unwrap();
        let (mut s_m, mut s_u, mut a_m, mut a_u) = (sgd(), sgd(), AdamW::default(), AdamW::default());
        let (mut ps_m, mut ps_u, mut pa_m, mut pa_u) = (p0.clone(), p0.clone(), p0.clone(), p0.clone());
        for _ in 0..3 {
            s_m.step(&mut one("l.weight", &mut ps_m, &g, Some(&mask)), 0.1).unwrap();
            s_u.step(&mut one("l.weight", &mut ps_u, &g, None), 0.1).unwrap();
            a_m.step(&mut one("l.weight", &mut pa_m, &g, Some(&mask)), 0.1).unwrap();
            a_u.step(&mut one("l.weight", &mut pa_u, &g, None), 0.1).unwrap();
        }
        for i in 0..n {
            if mask[i] {
                prop_assert_eq!(ps_m[i].to_bits(), ps_u[i].to_bits(), "sgd entry {}", i);
                prop_assert_eq!(pa_m[i].to_bits(), pa_u[i].to_bits(), "adamw entry {}", i);
            } else {
                prop_assert_eq!(ps_m[i].to_bits(), 0);
                prop_assert_eq!(pa_m[i].to_bits(), 0);
            }
        }
    }
}

#[test]
fn decay_filter_skips_bias_and_layernorm() {
    let mut o = AdamW::new(AdamWConfig {
        weight_decay: 0.5,
        ..Default::default()
    })
    .unwrap();
    let g = [0.0f32; 2];
    let (mut w, mut b, mut ln) = ([1.0f32; 2], [1.0f32; 2], [1.0f32; 2]);
    let mut ps = vec![
        ParamMut {
            name: "fc.0.weight".into(),
            values: &mut w,
            grad: &g,
            mask: None,
        },
        ParamMut {
            name: "fc.0.bias".into(),
            values: &mut b,
            grad: &g,
            mask: None,
        },
        ParamMut {
            name: "h.0.ln_1.weight".into(),
            values: &mut ln,
            grad: &g,
            mask: None,
        },
    ];
    o.step(&mut ps, 0.1).unwrap();
    assert_eq!(w, [0.95; 2]); // (1 - 0.1 * 0.5), zero gradient
    assert_eq!(b, [1.0; 2]);
    assert_eq!(ln, [1.0; 2]);
}

#[test]
fn remap_gathers_and_drops() {
    let mut o = AdamW::default();
    let mut p = vec![0.5f32, -0.5, 0.25, 1.0];
    let g = vec![0.1f32, 0.2, -0.3, 0.4];
    o.step(&mut one("l.weight", &mut p, &g, None), 0.01)
        .unwrap();
    o.step(&mut one("l.weight", &mut p, &g, None), 0.01)
        .unwrap();
    let before = o.state();
    o.remap("l.weight", Some(&[Some(2), None, Some(0)]));
    let after = o.state();
    let (m0, m1) = (&before.tensors["l.weight.m"], &after.tensors["l.weight.m"]);
    assert_eq!(m1, &vec![m0[2], 0.0, m0[0]]);
    let (v0, v1) = (&before.tensors["l.weight.v"], &after.tensors["l.weight.v"]);
    assert_eq!(v1, &vec![v0[2], 0.0, v0[0]]);
    assert_eq!(after.scalars["l.weight.t"], 2.0);
    let mut q = vec![1.0f32; 3];
    o.step(&mut one("l.weight", &mut q, &g[..3], None), 0.01)
        .unwrap();
    assert_eq!(o.state().scalars["l.weight.t"], 3.0);
    // dropped: starts again at t = 1 with any length
    o.remap("l.weight", None);
    let mut r = vec![1.0f32; 5];
    o.step(&mut one("l.weight", &mut r, &[0.1; 5], None), 0.01)
        .unwrap();
    assert_eq!(o.state().scalars["l.weight.t"], 1.0);
    assert_eq!(o.state().scalars["t"], 4.0);
    // SGD momentum the same way
    let mut s = Sgd::new(SgdConfig {
        momentum: 0.9,
        ..Default::default()
    })
    .unwrap();
    let mut p = vec![0.0f32; 3];
    s.step(&mut one("x", &mut p, &[1.0, 2.0, 3.0], None), 0.1)
        .unwrap();
    s.remap("x", Some(&[Some(1), None]));
    assert_eq!(s.state().tensors["x.momentum"], vec![2.0, 0.0]);
}

#[test]
fn stale_state_is_an_error_naming_the_parameter() {
    let mut o = AdamW::default();
    let mut p = vec![1.0f32; 4];
    o.step(&mut one("h.0.mlp.fc.weight", &mut p, &[0.1; 4], None), 0.01)
        .unwrap();
    let mut q = vec![1.0f32; 3];
    let e = o
        .step(&mut one("h.0.mlp.fc.weight", &mut q, &[0.1; 3], None), 0.01)
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }));
    assert!(e.to_string().contains("h.0.mlp.fc.weight"), "{e}");
    assert_eq!(q, vec![1.0; 3], "nothing updated");
    let mut s = Sgd::new(SgdConfig {
        momentum: 0.5,
        ..Default::default()
    })
    .unwrap();
    s.step(&mut one("a", &mut p, &[0.1; 4], None), 0.01)
        .unwrap();
    assert!(
        s.step(&mut one("a", &mut q, &[0.1; 3], None), 0.01)
            .unwrap_err()
            .to_string()
            .contains("a")
    );
    // a bad gather index is reported by the next step
    o.remap("h.0.mlp.fc.weight", Some(&[Some(9), Some(0), None]));
    let e = o
        .step(&mut one("h.0.mlp.fc.weight", &mut q, &[0.1; 3], None), 0.01)
        .unwrap_err();
    assert!(e.to_string().contains("gather index 9"), "{e}");
    // mismatched gradient length
    let mut w = vec![1.0f32; 2];
    assert!(
        o.step(&mut one("z", &mut w, &[0.1; 3], None), 0.01)
            .is_err()
    );
}

#[test]
fn state_round_trip_continues_identically() {
    for adam in [true, false] {
        let mk = || -> Box<dyn Optimizer> {
            if adam {
                Box::new(AdamW::default())
            } else {
                Box::new(
                    Sgd::new(SgdConfig {
                        momentum: 0.9,
                        nesterov: true,
                        ..Default::default()
                    })
                    .unwrap(),
                )
            }
        };
        let mut a = mk();
        let mut p = vec![0.3f32, -0.2, 0.9];
        for s in 0..3 {
            let g = [0.1 * s as f32, -0.5, 0.25];
            a.step(&mut one("w", &mut p, &g, None), 0.05).unwrap();
        }
        let mut b = mk();
        b.load_state(&a.state()).unwrap();
        assert_eq!(a.state(), b.state());
        let mut q = p.clone();
        let g = [0.7f32, 0.1, -0.4];
        a.step(&mut one("w", &mut p, &g, None), 0.05).unwrap();
        b.step(&mut one("w", &mut q, &g, None), 0.05).unwrap();
        assert_eq!(p, q);
        assert_eq!(a.state(), b.state());
        // garbage states are refused
        let mut bad = a.state();
        bad.tensors.insert("w.bogus".into(), vec![1.0]);
        assert!(mk().load_state(&bad).is_err());
        let mut bad = a.state();
        bad.scalars.remove("t");
        assert!(mk().load_state(&bad).is_err());
    }
}

#[test]
fn clip_grad_norm_is_pytorchs() {
    let g1 = [3.0f32];
    let g2 = [4.0f32];
    let (mut a, mut b) = ([0.0f32], [0.0f32]);
    let ps = vec![
        ParamMut {
            name: "a".into(),
            values: &mut a,
            grad: &g1,
            mask: None,
        },
        ParamMut {
            name: "b".into(),
            values: &mut b,
            grad: &g2,
            mask: None,
        },
    ];
    assert_eq!(grad_norm(&ps), 5.0);
    let c = clip_grad_norm(&ps, 1.0);
    assert_eq!(
        c,
        GradClip {
            norm: 5.0,
            scale: 1.0 / (5.0 + 1e-6)
        }
    );
    assert_eq!(clip_grad_norm(&ps, 10.0).scale, 1.0);
    // step_scaled == step on pre-scaled gradients, bit for bit
    let g = [0.3f32, -1.7, 2.5];
    let gs: Vec<f32> = g.iter().map(|x| x * c.scale).collect();
    let mut o1 = AdamW::default();
    let mut o2 = AdamW::default();
    let (mut p1, mut p2) = ([1.0f32, 2.0, 3.0], [1.0f32, 2.0, 3.0]);
    o1.step_scaled(&mut one("w", &mut p1, &g, None), 0.1, c.scale)
        .unwrap();
    o2.step(&mut one("w", &mut p2, &gs, None), 0.1).unwrap();
    assert_eq!(p1, p2);
}

#[test]
fn bad_hyper_parameters_are_refused() {
    assert!(
        AdamW::new(AdamWConfig {
            beta1: 1.0,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        AdamW::new(AdamWConfig {
            eps: 0.0,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        AdamW::new(AdamWConfig {
            weight_decay: f32::NAN,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        Sgd::new(SgdConfig {
            nesterov: true,
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        Sgd::new(SgdConfig {
            momentum: -0.1,
            ..Default::default()
        })
        .is_err()
    );
}

/// Timing, not a check: `cargo test --release -p lopper-train --test optim -- --ignored
/// --nocapture adamw_throughput`. Serial and rayon updates interleaved, best of 7 each.
#[test]
#[ignore]
fn adamw_throughput() {
    let n = 1 << 22;
    let g: Vec<f32> = (0..n).map(|i| ((i % 997) as f32 - 498.0) / 500.0).collect();
    let mut w = vec![0.1f32; n];
    let mut ser = AdamW::default().with_par_threshold(usize::MAX);
    let mut par = AdamW::default().with_par_threshold(1);
    let (mut ts, mut tp) = (f64::MAX, f64::MAX);
    for _ in 0..7 {
        for (o, t) in [(&mut ser, &mut ts), (&mut par, &mut tp)] {
            let t0 = std::time::Instant::now();
            o.step(&mut one("w", &mut w, &g, None), 1e-3).unwrap();
            *t = t.min(t0.elapsed().as_secs_f64());
        }
    }
    println!(
        "AdamW step over {n} values: serial {:.2} ms ({:.2} GB/s of state), rayon ({} threads) {:.2} ms, ratio {:.2}",
        ts * 1e3,
        (n * 4 * 4) as f64 / ts / 1e9,
        rayon::current_num_threads(),
        tp * 1e3,
        ts / tp
    );
}
