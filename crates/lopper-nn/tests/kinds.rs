//! Switching a Linear's weight kind keeps its function; FLOP accounting; errors name the layer.
mod common;
use common::*;
use lopper_nn::{Gpt, GptConfig, Linear, Weight, WeightKind};

fn out(l: &mut Linear, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0; n * l.out_features()];
    l.forward(x, n, &mut y).unwrap();
    y
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn dense_to_csr_with_the_same_zeros_keeps_outputs_and_gradients() {
    let (n, k, m) = (9, 24, 20);
    let mut w = randv(m * k, 1.0, 1);
    for (i, v) in w.iter_mut().enumerate() {
        if i % 5 != 0 {
            *v = 0.0; // 80% zeros
        }
    }
    let x = randv(n * k, 1.0, 2);
    let dy = randv(n * m, 1.0, 3);
    let mut dense = Linear::from_dense("probe", k, m, w.clone(), Some(randv(m, 1.0, 4))).unwrap();
    let mut csr = dense.clone();
    csr.set_kind(&WeightKind::Csr).unwrap();
    assert_eq!(csr.weight().kind_name(), "csr");
    assert_eq!(csr.weight().stored(m, k), m * k / 5);
    let (yd, yc) = (out(&mut dense, &x, n), out(&mut csr, &x, n));
    assert!(max_rel(&yc, &yd) < 1e-5, "{}", max_rel(&yc, &yd));
    let (mut dxd, mut dxc) = (vec![0.0; n * k], vec![0.0; n * k]);
    dense.backward(&x, &dy, n, &mut dxd).unwrap();
    csr.backward(&x, &dy, n, &mut dxc).unwrap();
    assert!(max_rel(&dxc, &dxd) < 1e-5);
    // dW of the CSR layer is the dense dW at the pattern
    let Weight::Dense { dw: dwd, .. } = dense.weight() else {
        panic!()
    };
    let Weight::Csr { w: c, dw: dwc, .. } = csr.weight() else {
        panic!()
    };
    let mut p = 0;
    for i in 0..m {
        for &j in c.row(i).0 {
            assert!(
                (dwc[p] - dwd[i * k + j as usize]).abs()
                    < 1e-4 * (1.0 + dwd[i * k + j as usize].abs())
            );
            p += 1;
        }
    }
    // and back to dense is the same function again
    let mut back = csr.clone();
    back.set_kind(&WeightKind::Dense).unwrap();
    assert_eq!(back.dense_weight(), w);
}

#[test]
fn masked_csr_sparse24_lowrank_lora_keep_the_function_when_they_can() {
    let (n, k, m) = (7, 16, 12);
    let x = randv(n * k, 1.0, 5);
    let base = Linear::from_dense("l", k, m, randv(m * k, 1.0, 6), None).unwrap();
    let mask: Vec<bool> = (0..m * k).map(|i| i % 3 == 0).collect();
    let mut masked = base.clone();
    masked.set_kind(&WeightKind::Masked(mask.clone())).unwrap();
    let ym = out(&mut masked, &x, n);
    // Masked -> Csr keeps the mask's pattern
    let mut csr = masked.clone();
    csr.set_kind(&WeightKind::Csr).unwrap();
    assert!(max_rel(&out(&mut csr, &x, n), &ym) < 1e-5);
    // Masked -> LoRA (B = 0 at first) on a sparse base
    let mut lora = masked.clone();
    lora.set_kind(&WeightKind::Lora {
        rank: 4,
        alpha: 8.0,
        sparse_base: true,
        seed: 1,
    })
    .unwrap();
    assert!(max_rel(&out(&mut lora, &x, n), &ym) < 1e-5);
    // full-rank LowRank is exact up to SVD rounding
    let mut lr = base.clone();
    lr.set_kind(&WeightKind::LowRank { rank: 12 }).unwrap();
    let mut b2 = base.clone();
    assert!(max_rel(&out(&mut lr, &x, n), &out(&mut b2, &x, n)) < 1e-4);
    // a weight that already is 2:4 keeps its function as Sparse24
    let w24: Vec<f32> = base
        .dense_weight()
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 4 < 2 { *v } else { 0.0 })
        .collect();
    let mut d24 = Linear::from_dense("l24", k, m, w24, None).unwrap();
    let yd = out(&mut d24, &x, n);
    d24.set_kind(&WeightKind::Sparse24).unwrap();
    assert!(max_rel(&out(&mut d24, &x, n), &yd) < 1e-5);
}

#[test]
fn flops_scale_with_density() {
    let (k, m, n) = (64, 32, 10);
    let mut l = Linear::from_dense("f", k, m, randv(m * k, 1.0, 7), None).unwrap();
    let f = l.flops(n);
    assert_eq!(f.forward.executed, 2 * (n * m * k) as u64);
    assert_eq!(f.backward.executed, 4 * (n * m * k) as u64);
    let mask: Vec<bool> = (0..m * k).map(|i| i % 10 == 0).collect();
    l.set_kind(&WeightKind::CsrMask(mask.clone())).unwrap();
    let f = l.flops(n);
    let nnz = mask.iter().filter(|b| **b).count() as u64;
    assert_eq!(f.forward.executed, 2 * n as u64 * nnz);
    assert_eq!(f.forward.dense, 2 * (n * m * k) as u64);
    assert!((f.total().ratio() - 0.1).abs() < 0.01);
    l.set_kind(&WeightKind::Masked(mask)).unwrap();
    assert_eq!(l.flops(n).total().ratio(), 1.0, "a mask saves nothing");
}

#[test]
fn bad_input_is_an_error_naming_the_layer() {
    let mut l = Linear::from_dense("h.3.mlp.fc", 4, 2, vec![0.0; 8], None).unwrap();
    let e = l
        .forward(&[0.0; 5], 1, &mut [0.0; 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("h.3.mlp.fc") && e.contains("shape"), "{e}");
    let e = l
        .set_kind(&WeightKind::Masked(vec![true; 3]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("h.3.mlp.fc"), "{e}");
    let e = l
        .set_kind(&WeightKind::LowRank { rank: 9 })
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank"), "{e}");
    assert!(Linear::from_dense("x", 4, 2, vec![0.0; 7], None).is_err());
    let mut l3 = Linear::from_dense("k3", 3, 2, vec![1.0; 6], None).unwrap();
    assert!(
        l3.set_kind(&WeightKind::Sparse24).is_err(),
        "K = 3 is not a multiple of 4"
    );

    let mut g = Gpt::new(GptConfig {
        vocab: 10,
        ctx: 4,
        layers: 1,
        heads: 2,
        width: 8,
        tie_weights: true,
        seed: 0,
    })
    .unwrap();
    assert!(g.backward().is_err(), "backward before forward");
    assert!(
        g.forward(&[1, 2], &[1, 2], 1, 5).is_err(),
        "context too long"
    );
    let e = g.forward(&[1, 20], &[1, 2], 1, 2).unwrap_err().to_string();
    assert!(e.contains("wte"), "{e}");
    assert!(g.forward(&[1, 2], &[1], 1, 2).is_err());
    assert!(
        Gpt::new(GptConfig {
            width: 10,
            heads: 4,
            ..GptConfig::default()
        })
        .is_err()
    );
    let names: Vec<String> = g.linears_mut().map(|l| l.name.clone()).collect();
    assert_eq!(
        names,
        [
            "h.0.attn.qkv",
            "h.0.attn.proj",
            "h.0.mlp.fc",
            "h.0.mlp.proj"
        ]
    );
}

#[test]
fn absurd_sizes_are_errors_not_overflow_panics_or_aborts() {
    use lopper_nn::{Mlp, MlpActivation};
    let small = GptConfig {
        vocab: 10,
        ctx: 4,
        layers: 1,
        heads: 2,
        width: 8,
        tie_weights: true,
        seed: 0,
    };
    // parameter counts that overflow, or need more memory than any machine: refused up front
    for cfg in [
        GptConfig {
            width: 1 << 40,
            heads: 1,
            ..small
        },
        GptConfig {
            vocab: 1 << 40,
            ..small
        },
        GptConfig {
            ctx: 1 << 50,
            ..small
        },
    ] {
        let e = Gpt::new(cfg).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("weights and gradients"), "{e}");
    }
    assert_eq!(small.params(), Some(10 * 8 + 4 * 8 + 12 * 64 + 13 * 8 + 16));
    let mut g = Gpt::new(small).unwrap();
    // B * T overflows: a shape error (it panicked in debug, and wrapped to 0 in release)
    let e = g.forward(&[], &[], 1 << 63, 2).unwrap_err().to_string();
    assert!(e.contains("tokens"), "{e}");
    let e = g.forward(&[1; 3], &[1; 3], usize::MAX, 2).unwrap_err();
    assert!(e.to_string().contains("tokens"), "{e}");
    // a Linear's n * width overflows: a shape error naming the layer
    let mut l = Linear::from_dense("h.0.mlp.fc", 4, 2, vec![0.0; 8], None).unwrap();
    let e = l.forward(&[], usize::MAX, &mut []).unwrap_err().to_string();
    assert!(e.contains("h.0.mlp.fc: shape mismatch"), "{e}");
    let e = Linear::from_dense("x", usize::MAX, 2, vec![], None)
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("overflows usize"), "{e}");
    // MLP sizes that cannot fit, and the largest seed (`seed * 100` overflowed in debug)
    let e = Mlp::new(&[1 << 40, 1 << 40], MlpActivation::Relu, 0)
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("weights and gradients"), "{e}");
    assert!(Mlp::new(&[3, 2], MlpActivation::Relu, u64::MAX).is_ok());
    // a LoRA alpha that would make every output NaN
    let e = l
        .set_kind(&WeightKind::Lora {
            rank: 1,
            alpha: f32::NAN,
            sparse_base: false,
            seed: 0,
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("h.0.mlp.fc") && e.to_string().contains("alpha"),
        "{e}"
    );
}

#[test]
fn degenerate_sizes_are_errors_not_panics() {
    use lopper_nn::embedding::Embedding;
    use lopper_nn::{Mlp, MlpActivation};
    // width 0 passed (0 is a multiple of any head count), then the embedding panicked
    let cfg = GptConfig {
        vocab: 10,
        ctx: 4,
        layers: 1,
        heads: 2,
        width: 0,
        tie_weights: true,
        seed: 0,
    };
    let e = Gpt::new(cfg).map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("width must be a positive multiple of heads"),
        "{e}"
    );
    // an empty batch returned a loss of 0 and the backward after it panicked
    let mut g = Gpt::new(GptConfig { width: 8, ..cfg }).unwrap();
    let e = g.forward(&[], &[], 0, 2).unwrap_err().to_string();
    assert!(e.contains("batch size B must be at least 1"), "{e}");
    assert!(g.backward().is_err(), "no forward ran");
    let mut m = Mlp::new(&[4, 3, 2], MlpActivation::Relu, 0).unwrap();
    let e = m.forward(&[], &[]).unwrap_err().to_string();
    assert!(e.contains("empty batch"), "{e}");
    assert!(m.backward().is_err(), "no forward ran");
    // an embedding of width 0 moves nothing (it panicked on a chunk size of 0)
    let mut emb = Embedding::new("e", 4, 0, 0.1, 0);
    emb.forward(&[1, 2], &mut []).unwrap();
    emb.forward_add(&[1, 2], &mut []).unwrap();
    emb.backward(&[3], &[]).unwrap();
    assert!(emb.forward(&[9], &mut []).is_err(), "ids are still checked");
}

#[test]
fn gpt_sparse_model_matches_its_masked_twin_and_learns() {
    let cfg = GptConfig {
        vocab: 16,
        ctx: 8,
        layers: 2,
        heads: 2,
        width: 16,
        tie_weights: false,
        seed: 3,
    };
    let mut a = Gpt::new(cfg).unwrap();
    let mut b = Gpt::new(cfg).unwrap();
    for (la, lb) in a.linears_mut().zip(b.linears_mut()) {
        let n = la.in_features() * la.out_features();
        let mask: Vec<bool> = (0..n).map(|i| (i * 7) % 10 < 2).collect();
        la.set_kind(&WeightKind::Masked(mask.clone())).unwrap();
        lb.set_kind(&WeightKind::CsrMask(mask)).unwrap();
    }
    let toks: Vec<u32> = (0..16).map(|i| (i * 3 % 16) as u32).collect();
    let tg: Vec<u32> = (0..16).map(|i| ((i * 3 + 1) % 16) as u32).collect();
    let la = a.forward(&toks, &tg, 2, 8).unwrap();
    let lb = b.forward(&toks, &tg, 2, 8).unwrap();
    assert!((la - lb).abs() < 1e-5, "{la} vs {lb}");
    let f = b.flops(2, 8);
    assert!(f.total().executed < f.total().dense);
    // plain SGD on the sparse model lowers the loss on a fixed batch
    let first = lb;
    let mut last = lb;
    for _ in 0..30 {
        b.zero_grad();
        last = b.forward(&toks, &tg, 2, 8).unwrap();
        b.backward().unwrap();
        for p in b.params() {
            for (v, g) in p.values.iter_mut().zip(p.grad) {
                *v -= 0.1 * g;
            }
        }
    }
    assert!(last < first - 0.05, "{first} -> {last}");
}

#[test]
fn requested_dense_grad_of_a_csr_layer_equals_the_dense_layers_dw_and_accumulates() {
    let (n, k, m) = (7, 12, 10);
    let mut w = randv(m * k, 1.0, 11);
    for (i, v) in w.iter_mut().enumerate() {
        if i % 3 != 0 {
            *v = 0.0;
        }
    }
    let x = randv(n * k, 1.0, 12);
    let dy = randv(n * m, 1.0, 13);
    let mut dense = Linear::from_dense("probe", k, m, w.clone(), None).unwrap();
    let mut csr = dense.clone();
    csr.set_kind(&WeightKind::Csr).unwrap();
    assert!(csr.dense_grad().is_none());
    let before = csr.flops(n);
    csr.request_dense_grad(true);
    // the dense gradient is one more dense GEMM, counted as executed
    let after = csr.flops(n);
    assert_eq!(
        after.backward.executed,
        before.backward.executed + 2 * (n * m * k) as u64
    );
    assert_eq!(after.backward.dense, before.backward.dense);
    let mut dx = vec![0.0; n * k];
    let _ = out(&mut dense, &x, n);
    let _ = out(&mut csr, &x, n);
    dense.backward(&x, &dy, n, &mut dx).unwrap();
    csr.backward(&x, &dy, n, &mut dx).unwrap();
    let Weight::Dense { dw, .. } = dense.weight() else {
        panic!()
    };
    let g = csr.dense_grad().unwrap().to_vec();
    assert!(max_rel(&g, dw) < 1e-5, "{}", max_rel(&g, dw));
    // a second backward accumulates, zero_grad clears, `false` drops the buffer
    csr.backward(&x, &dy, n, &mut dx).unwrap();
    let g2 = csr.dense_grad().unwrap();
    let twice: Vec<f32> = g.iter().map(|v| 2.0 * v).collect();
    assert!(max_rel(g2, &twice) < 1e-5);
    csr.zero_grad();
    assert!(csr.dense_grad().unwrap().iter().all(|&v| v == 0.0));
    csr.request_dense_grad(false);
    assert!(csr.dense_grad().is_none());
}

fn t(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut o = vec![0.0; a.len()];
    for i in 0..rows {
        for j in 0..cols {
            o[j * rows + i] = a[i * cols + j];
        }
    }
    o
}

#[test]
fn feature_major_products_match_the_row_major_ones_for_every_kind() {
    // n above one 128-row panel and not a multiple of it; k not a multiple of 8
    let (n, k, m) = (150, 20, 12);
    let mask: Vec<bool> = (0..m * k).map(|i| i % 3 != 1).collect();
    let kinds = [
        WeightKind::Dense,
        WeightKind::Masked(mask.clone()),
        WeightKind::CsrMask(mask),
        WeightKind::Sparse24,
        WeightKind::LowRank { rank: 3 },
        WeightKind::Lora {
            rank: 2,
            alpha: 4.0,
            sparse_base: true,
            seed: 9,
        },
    ];
    let x = randv(n * k, 1.0, 11);
    let dy = randv(n * m, 1.0, 12);
    for kind in &kinds {
        let base =
            Linear::from_dense("fm", k, m, randv(m * k, 1.0, 13), Some(randv(m, 1.0, 14))).unwrap();
        let mut rm = base.clone();
        rm.set_kind(kind).unwrap();
        if let WeightKind::Lora { .. } = kind {
            // B starts at zero: give the adapter a non-zero contribution
            for p in lin_params_of(&mut rm) {
                p.values.iter_mut().for_each(|v| *v += 0.1);
            }
        }
        let mut fm = rm.clone();
        let name = rm.weight().kind_name();
        let y = out(&mut rm, &x, n);
        let mut yt = vec![0.0; n * m];
        fm.forward_t(&t(&x, n, k), n, &mut yt).unwrap();
        assert!(max_rel(&t(&yt, m, n), &y) < 1e-5, "{name} forward");
        let (mut dx, mut dxt) = (vec![0.0; n * k], vec![0.0; n * k]);
        rm.backward(&x, &dy, n, &mut dx).unwrap();
        fm.backward_t(&t(&x, n, k), &t(&dy, n, m), n, &mut dxt)
            .unwrap();
        assert!(max_rel(&t(&dxt, k, n), &dx) < 1e-5, "{name} dx");
        let (gr, gf) = (lin_params_of(&mut rm), lin_params_of(&mut fm));
        assert_eq!(gr.len(), gf.len());
        for (a, b) in gr.iter().zip(&gf) {
            assert!(max_rel(b.grad, a.grad) < 1e-4, "{name} {}", a.name);
        }
    }
}

fn lin_params_of(l: &mut Linear) -> Vec<lopper_nn::ParamMut<'_>> {
    let mut v = Vec::new();
    l.params(&mut v);
    v
}

#[test]
fn dense_weight_gradient_matches_the_definition_through_either_transpose() {
    // K (N + M) < N M takes the x^T route, the other shape the dy^T route
    for (n, k, m) in [(40, 6, 30), (9, 24, 20)] {
        let x = randv(n * k, 1.0, 21);
        let dy = randv(n * m, 1.0, 22);
        let mut l =
            Linear::from_dense("g", k, m, randv(m * k, 1.0, 23), Some(vec![0.0; m])).unwrap();
        l.request_dense_grad(true);
        let mut dx = vec![0.0; n * k];
        l.backward(&x, &dy, n, &mut dx).unwrap();
        l.backward(&x, &dy, n, &mut dx).unwrap(); // accumulates: twice the gradient
        let Weight::Dense { dw, .. } = l.weight() else {
            panic!()
        };
        let mut want = vec![0.0f32; m * k];
        for r in 0..n {
            for i in 0..m {
                for j in 0..k {
                    want[i * k + j] += 2.0 * dy[r * m + i] * x[r * k + j];
                }
            }
        }
        assert!(
            max_rel(dw, &want) < 1e-5,
            "{n}x{k}x{m}: {}",
            max_rel(dw, &want)
        );
        assert!(max_rel(l.dense_grad().unwrap(), &want) < 1e-5);
        let db: Vec<f32> = (0..m)
            .map(|i| 2.0 * (0..n).map(|r| dy[r * m + i]).sum::<f32>())
            .collect();
        let params = lin_params_of(&mut l);
        let bias = params.iter().find(|p| p.name == "g.bias").unwrap();
        assert!(max_rel(bias.grad, &db) < 1e-5, "{n}x{k}x{m} bias");
    }
}

/// Loss, every parameter gradient and the fc layers' dense gradients of one forward + backward.
fn step_grads(g: &mut Gpt, toks: &[u32], tg: &[u32], b: usize, t: usize) -> (f32, Vec<Vec<f32>>) {
    g.zero_grad();
    let loss = g.forward(toks, tg, b, t).unwrap();
    g.backward().unwrap();
    let mut grads: Vec<Vec<f32>> = g.params().into_iter().map(|p| p.grad.to_vec()).collect();
    for l in g.linears() {
        if let Some(d) = l.dense_grad() {
            grads.push(d.to_vec());
        }
    }
    (loss, grads)
}

#[test]
fn sparse_mlp_on_panels_matches_the_row_major_path() {
    // n = 3 * 100 = 300 rows: two full panels of 128 and one of 44; on two threads two parts of
    // 256 and 44 rows. MLP layers Csr (80% sparse) or 2:4, attention Csr; the fc layers also
    // accumulate their dense gradients (RigL's growth steps).
    let cfg = GptConfig {
        vocab: 32,
        ctx: 100,
        layers: 2,
        heads: 2,
        width: 32,
        tie_weights: false,
        seed: 5,
    };
    let (b, t) = (3, 100);
    let toks: Vec<u32> = (0..b * t).map(|i| ((i * 7 + i / 5) % 32) as u32).collect();
    let tg: Vec<u32> = (0..b * t).map(|i| ((i * 11 + 3) % 32) as u32).collect();
    for s24 in [false, true] {
        for par in [lopper_tensor::Par::Seq, lopper_tensor::Par::Rayon(2)] {
            let mut runs = Vec::new();
            for panels in [true, false] {
                let mut g = Gpt::new(cfg).unwrap();
                g.set_par(par);
                g.set_feature_major(panels);
                for l in g.linears_mut() {
                    let n = l.in_features() * l.out_features();
                    let kind = if s24 && l.name.contains("mlp") {
                        WeightKind::Sparse24
                    } else {
                        WeightKind::CsrMask((0..n).map(|i| (i * 13 + i / 7) % 5 == 0).collect())
                    };
                    l.set_kind(&kind).unwrap();
                    if l.name.ends_with("mlp.fc") {
                        l.request_dense_grad(true);
                    }
                }
                // two steps: the second reuses the buffers (and its gradients must not carry
                // anything over from the first)
                step_grads(&mut g, &toks, &tg, b, t);
                runs.push(step_grads(&mut g, &toks, &tg, b, t));
            }
            let ((lp, gp), (lr, gr)) = (&runs[0], &runs[1]);
            assert!((lp - lr).abs() <= 1e-5 * lr.abs(), "loss {lp} vs {lr}");
            assert_eq!(gp.len(), gr.len());
            for (i, (x, y)) in gp.iter().zip(gr).enumerate() {
                // sums over up to 300 rows in another order: tolerance scaled with that length
                let scale = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (u, v) in x.iter().zip(y) {
                    assert!(
                        (u - v).abs() <= 1e-6 + 300.0 * f32::EPSILON * scale,
                        "s24 {s24} {par:?} gradient {i}: {u} vs {v} (scale {scale})"
                    );
                }
            }
        }
    }
}
