//! bf16 storage (Precision::Bf16) against f32: outputs and gradients within bf16 tolerance, the
//! f32 master weights untouched by a step, saved activations about halved, and a few training
//! steps with losses close to f32's.
mod common;
use common::*;
use lopper_nn::{Gpt, GptConfig, Linear, Mlp, MlpActivation, Precision, WeightKind};

/// ||a - b|| / ||b||.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let e: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (e / n.max(1e-30)).sqrt()
}

fn grads(l: &mut Linear) -> Vec<Vec<f32>> {
    let mut v = Vec::new();
    l.params(&mut v);
    v.iter().map(|p| p.grad.to_vec()).collect()
}

#[test]
fn bf16_linear_is_within_bf16_tolerance_of_f32_for_every_stored_kind() {
    let (n, k, m) = (37, 44, 29); // K a multiple of 4 for 2:4
    let mask: Vec<bool> = (0..m * k).map(|i| i % 4 != 0).collect();
    let x = randv(n * k, 1.0, 1);
    let dy = randv(n * m, 1.0, 2);
    for kind in [
        WeightKind::Dense,
        WeightKind::Masked(mask.clone()),
        WeightKind::CsrMask(mask),
        WeightKind::Sparse24,
        WeightKind::LowRank { rank: 5 },
    ] {
        let mut f =
            Linear::from_dense("p", k, m, randv(m * k, 0.3, 3), Some(randv(m, 0.3, 4))).unwrap();
        f.set_kind(&kind).unwrap();
        let mut b = f.clone();
        b.set_precision(Precision::Bf16);
        let master = b.dense_weight();
        let name = f.weight().kind_name();
        let (mut yf, mut yb) = (vec![0.0; n * m], vec![0.0; n * m]);
        f.forward(&x, n, &mut yf).unwrap();
        b.forward(&x, n, &mut yb).unwrap();
        assert!(
            yb.iter()
                .all(|v| *v == lopper_tensor::bf16::from_f32(*v).to_f32())
        );
        let r = rel(&yb, &yf);
        assert!(r < 2e-2 && r > 0.0, "{name} forward: {r}");
        assert_eq!(
            b.saved_bytes(),
            n * k * 2,
            "{name}: the input is saved as bf16"
        );
        let (mut dxf, mut dxb) = (vec![0.0; n * k], vec![0.0; n * k]);
        f.backward(&x, &dy, n, &mut dxf).unwrap();
        // bf16 mode reads its saved input: a wrong x of the right shape changes nothing
        b.backward(&vec![9.0; n * k], &dy, n, &mut dxb).unwrap();
        assert!(rel(&dxb, &dxf) < 2e-2, "{name} dx: {}", rel(&dxb, &dxf));
        for (gb, gf) in grads(&mut b).iter().zip(grads(&mut f).iter()) {
            assert!(rel(gb, gf) < 2e-2, "{name} grad: {}", rel(gb, gf));
        }
        assert_eq!(
            b.dense_weight(),
            master,
            "{name}: the f32 master is untouched"
        );
    }
}

fn data(b: usize, t: usize, v: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    use rand::Rng;
    let mut r = rng(seed);
    let toks: Vec<u32> = (0..b * t + 1)
        .map(|_| r.random_range(0..v as u32))
        .collect();
    (toks[..b * t].to_vec(), toks[1..].to_vec())
}

fn sgd(g: &mut Gpt, lr: f32) {
    for p in g.params() {
        for (v, d) in p.values.iter_mut().zip(p.grad) {
            *v -= lr * d;
        }
    }
}

#[test]
fn bf16_gpt_matches_f32_and_halves_the_saved_activations() {
    let cfg = GptConfig {
        vocab: 32,
        ctx: 40,
        layers: 2,
        heads: 2,
        width: 32,
        tie_weights: true,
        seed: 3,
    };
    let (b, t) = (3, 40);
    let (toks, tg) = data(b, t, cfg.vocab, 7);
    for sparse in [false, true] {
        let mut f = Gpt::new(cfg).unwrap();
        if sparse {
            for l in f.linears_mut() {
                let len = l.in_features() * l.out_features();
                let mask: Vec<bool> = (0..len).map(|i| i % 5 < 2).collect();
                l.set_kind(&WeightKind::CsrMask(mask)).unwrap();
            }
        }
        let mut h = Gpt::new(cfg).unwrap();
        if sparse {
            for (a, l) in f.linears().zip(h.linears_mut()) {
                l.set_weight(a.weight().clone()).unwrap();
            }
        }
        h.set_precision(Precision::Bf16);
        f.zero_grad();
        h.zero_grad();
        let lf = f.forward(&toks, &tg, b, t).unwrap();
        let lh = h.forward(&toks, &tg, b, t).unwrap();
        assert!(
            ((lh - lf) / lf).abs() < 1e-2,
            "sparse {sparse}: loss {lh} vs {lf}"
        );
        f.backward().unwrap();
        h.backward().unwrap();
        let (pf, ph) = (f.params(), h.params());
        for (a, c) in pf.iter().zip(&ph) {
            let r = rel(c.grad, a.grad);
            assert!(r < 5e-2, "sparse {sparse}: {} grad off by {r}", a.name);
        }
        drop((pf, ph));
        let (bf, bh) = (f.saved_activation_bytes(), h.saved_activation_bytes());
        assert!(
            (bh as f64) < 0.8 * bf as f64,
            "sparse {sparse}: bf16 keeps {bh} bytes vs f32 {bf}"
        );
    }
}

#[test]
fn a_few_bf16_training_steps_follow_f32() {
    let cfg = GptConfig {
        vocab: 16,
        ctx: 16,
        layers: 2,
        heads: 2,
        width: 32,
        tie_weights: true,
        seed: 5,
    };
    let (b, t) = (4, 16);
    let (mut f, mut h) = (Gpt::new(cfg).unwrap(), Gpt::new(cfg).unwrap());
    h.set_precision(Precision::Bf16);
    let (mut first, mut last) = ((0.0, 0.0), (0.0, 0.0));
    for step in 0..8 {
        let (toks, tg) = data(b, t, cfg.vocab, 100 + step % 2);
        let mut losses = [0.0f32; 2];
        for (i, g) in [&mut f, &mut h].into_iter().enumerate() {
            g.zero_grad();
            losses[i] = g.forward(&toks, &tg, b, t).unwrap();
            g.backward().unwrap();
            sgd(g, 0.5);
        }
        assert!(
            ((losses[1] - losses[0]) / losses[0]).abs() < 2e-2,
            "step {step}: bf16 {} vs f32 {}",
            losses[1],
            losses[0]
        );
        if step == 0 {
            first = (losses[0], losses[1]);
        }
        last = (losses[0], losses[1]);
    }
    assert!(
        last.0 < first.0 && last.1 < first.1,
        "{first:?} -> {last:?}: both learn"
    );
}

#[test]
fn bf16_mlp_follows_f32() {
    let mut f = Mlp::new(&[12, 20, 5], MlpActivation::Gelu, 1).unwrap();
    let mut h = Mlp::new(&[12, 20, 5], MlpActivation::Gelu, 1).unwrap();
    h.set_precision(Precision::Bf16);
    let x = randv(8 * 12, 1.0, 9);
    let y: Vec<u32> = (0..8).map(|i| i % 5).collect();
    let (lf, lh) = (f.forward(&x, &y).unwrap(), h.forward(&x, &y).unwrap());
    assert!(((lh - lf) / lf).abs() < 1e-2, "{lh} vs {lf}");
    f.zero_grad();
    h.zero_grad();
    f.backward().unwrap();
    h.backward().unwrap();
    for (a, c) in f.params().iter().zip(h.params().iter()) {
        assert!(rel(c.grad, a.grad) < 5e-2, "{}", a.name);
    }
}
