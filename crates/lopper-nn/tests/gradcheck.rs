//! Every backward against central finite differences on small random shapes (f32 forward, loss in
//! f64, eps 1e-2, relative tolerance 1e-2 on the gradient vector's norm).
mod common;
use common::*;
use lopper_nn::activation::*;
use lopper_nn::attention::{AttnCache, AttnShape, attention_backward, attention_forward};
use lopper_nn::embedding::Embedding;
use lopper_nn::layernorm::LayerNorm;
use lopper_nn::loss::{cross_entropy_backward, cross_entropy_forward};
use lopper_nn::{Gpt, GptConfig, Linear, Mlp, MlpActivation, ParamMut, WeightKind};

const EPS: f32 = 1e-2;
const RTOL: f64 = 1e-2;

fn lin_params(l: &mut Linear) -> Vec<ParamMut<'_>> {
    let mut v = Vec::new();
    l.params(&mut v);
    v
}

fn mask(n: usize, density: f64, seed: u64) -> Vec<bool> {
    use rand::Rng;
    let mut r = rng(seed);
    (0..n).map(|_| r.random_bool(density)).collect()
}

fn kinds(m: usize, k: usize) -> Vec<WeightKind> {
    vec![
        WeightKind::Dense,
        WeightKind::Masked(mask(m * k, 0.4, 3)),
        WeightKind::CsrMask(mask(m * k, 0.3, 4)),
        WeightKind::Sparse24,
        WeightKind::LowRank { rank: 2 },
        WeightKind::Lora {
            rank: 2,
            alpha: 4.0,
            sparse_base: false,
            seed: 5,
        },
        WeightKind::Lora {
            rank: 3,
            alpha: 2.0,
            sparse_base: true,
            seed: 6,
        },
    ]
}

#[test]
fn linear_every_kind_matches_finite_differences() {
    let (n, k, m) = (5, 8, 6);
    let x = randv(n * k, 1.0, 1);
    let r = randv(n * m, 1.0, 2);
    for kind in kinds(m, k) {
        let mut l =
            Linear::from_dense("lin", k, m, randv(m * k, 1.0, 7), Some(randv(m, 1.0, 8))).unwrap();
        l.set_kind(&kind).unwrap();
        // a LoRA's B starts at 0, which would make dA vanish: give it values
        for p in lin_params(&mut l) {
            if p.name.ends_with("lora_b") {
                p.values.copy_from_slice(&randv(p.values.len(), 1.0, 9));
            }
        }
        let mut y = vec![0.0; n * m];
        let mut dx = vec![0.0; n * k];
        l.zero_grad();
        l.forward(&x, n, &mut y).unwrap();
        l.backward(&x, &r, n, &mut dx).unwrap();
        let grads = grads_of(&mut l, lin_params);
        let what = format!("{kind:?}");
        let mut loss = |l: &mut Linear| {
            let mut y = vec![0.0; n * m];
            l.forward(&x, n, &mut y).unwrap();
            dot64(&y, &r)
        };
        check_params(&mut l, lin_params, &mut loss, &grads, EPS, RTOL, 64);
        let mut xx = x.clone();
        let idx: Vec<usize> = (0..n * k).collect();
        let num = fd_vec(&mut xx, &idx, EPS, &mut |xv| {
            let mut y = vec![0.0; n * m];
            l.forward(xv, n, &mut y).unwrap();
            dot64(&y, &r)
        });
        assert_close(&format!("{what} dx"), &dx, &num, RTOL);
    }
}

#[test]
fn the_checker_can_fail() {
    // a gradient off by 5% must be rejected
    let num = vec![1.0f64, -2.0, 0.5];
    let bad: Vec<f32> = num.iter().map(|v| (*v * 1.05) as f32).collect();
    let r = std::panic::catch_unwind(|| assert_close("negative control", &bad, &num, RTOL));
    assert!(r.is_err());
}

#[test]
fn layernorm_matches_finite_differences() {
    // 7 and 19: the scalar tail only (rows are reduced 32 lanes at a time); 45: a 32-lane chunk and
    // a tail; 64: chunks only
    for c in [7, 19, 45, 64] {
        layernorm_check(4, c);
    }
}

fn layernorm_check(n: usize, c: usize) {
    let x = randv(n * c, 2.0, 11);
    let r = randv(n * c, 1.0, 12);
    let mut ln = LayerNorm::new("ln", c);
    for p in ln_params(&mut ln) {
        let len = p.values.len();
        p.values
            .iter_mut()
            .zip(randv(len, 0.5, 13))
            .for_each(|(v, d)| *v += d);
    }
    let (mut out, mut mean, mut rstd, mut dx) = (
        vec![0.0; n * c],
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n * c],
    );
    ln.forward(&x, n, &mut out, &mut mean, &mut rstd).unwrap();
    ln.backward(&x, &r, &mean, &rstd, n, &mut dx).unwrap();
    let grads = grads_of(&mut ln, ln_params);
    let mut loss = |l: &mut LayerNorm| {
        let (mut o, mut m, mut s) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        l.forward(&x, n, &mut o, &mut m, &mut s).unwrap();
        dot64(&o, &r)
    };
    check_params(&mut ln, ln_params, &mut loss, &grads, EPS, RTOL, 64);
    let mut xx = x.clone();
    let idx: Vec<usize> = (0..n * c).collect();
    let num = fd_vec(&mut xx, &idx, 1e-2, &mut |xv| {
        let (mut o, mut m, mut s) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        ln.forward(xv, n, &mut o, &mut m, &mut s).unwrap();
        dot64(&o, &r)
    });
    assert_close("layernorm dx", &dx, &num, RTOL);
}

#[test]
fn activations_match_finite_differences() {
    let n = 40;
    // keep ReLU inputs away from the kink at 0
    let x: Vec<f32> = randv(n, 3.0, 21)
        .into_iter()
        .map(|v| if v.abs() < 0.1 { v + 0.3 } else { v })
        .collect();
    let r = randv(n, 1.0, 22);
    type Fwd = fn(&[f32], &mut [f32]) -> lopper_nn::Result<()>;
    type Bwd = fn(&[f32], &[f32], &mut [f32]) -> lopper_nn::Result<()>;
    let pairs: [(&str, Fwd, Bwd); 2] = [
        ("gelu", gelu_forward, gelu_backward),
        ("relu", relu_forward, relu_backward),
    ];
    for (name, f, b) in pairs {
        let mut dx = vec![0.0; n];
        b(&x, &r, &mut dx).unwrap();
        let mut xx = x.clone();
        let idx: Vec<usize> = (0..n).collect();
        let num = fd_vec(&mut xx, &idx, 1e-3, &mut |xv| {
            let mut o = vec![0.0; n];
            f(xv, &mut o).unwrap();
            dot64(&o, &r)
        });
        assert_close(name, &dx, &num, RTOL);
    }
    // the parallel chunked path equals the sequential one on a large input
    let big = randv(100_003, 4.0, 23);
    let g = randv(100_003, 1.0, 24);
    let (mut a, mut b) = (vec![0.0; big.len()], vec![0.0; big.len()]);
    gelu_forward(&big, &mut a).unwrap();
    gelu_forward_par(&big, &mut b, lopper_tensor::Par::rayon()).unwrap();
    assert_eq!(a, b);
    gelu_backward(&big, &g, &mut a).unwrap();
    gelu_backward_par(&big, &g, &mut b, lopper_tensor::Par::rayon()).unwrap();
    assert_eq!(a, b);
    // GELU values against the GPT-2 formula at a few points
    let mut o = vec![0.0; 3];
    gelu_forward(&[0.0, 1.0, -2.0], &mut o).unwrap();
    assert!(
        (o[0]).abs() < 1e-7 && (o[1] - 0.841_192).abs() < 1e-5 && (o[2] + 0.045_402_3).abs() < 1e-5,
        "{o:?}"
    );
}

#[test]
fn attention_matches_finite_differences() {
    let s = AttnShape {
        b: 2,
        t: 5,
        c: 8,
        heads: 2,
        par: lopper_tensor::Par::rayon(),
    };
    let n = s.b * s.t;
    let qkv = randv(n * 3 * s.c, 1.5, 31);
    let r = randv(n * s.c, 1.0, 32);
    let mut cache = AttnCache::default();
    let mut out = vec![0.0; n * s.c];
    attention_forward(&qkv, s, &mut out, &mut cache).unwrap();
    // causality: changing a later token must not change an earlier output
    let mut q2 = qkv.clone();
    for v in &mut q2[(s.t - 1) * 3 * s.c..s.t * 3 * s.c] {
        *v += 1.0;
    }
    let mut out2 = vec![0.0; n * s.c];
    attention_forward(&q2, s, &mut out2, &mut AttnCache::default()).unwrap();
    assert_eq!(out[..(s.t - 1) * s.c], out2[..(s.t - 1) * s.c]);
    assert_ne!(
        out[(s.t - 1) * s.c..s.t * s.c],
        out2[(s.t - 1) * s.c..s.t * s.c]
    );
    let mut dqkv = vec![0.0; n * 3 * s.c];
    attention_backward(&r, s, &mut cache, &mut dqkv).unwrap();
    let mut xx = qkv.clone();
    let idx: Vec<usize> = (0..xx.len()).collect();
    let num = fd_vec(&mut xx, &idx, EPS, &mut |xv| {
        let mut o = vec![0.0; n * s.c];
        attention_forward(xv, s, &mut o, &mut AttnCache::default()).unwrap();
        dot64(&o, &r)
    });
    assert_close("attention dqkv", &dqkv, &num, RTOL);
}

/// Naive float64 causal attention (B*T, 3C) -> (B*T, C), the reference for the blocked kernel.
fn attention_naive(qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) -> Vec<f64> {
    let hs = c / nh;
    let mut out = vec![0.0f64; b * t * c];
    let at = |bi: usize, ti: usize, col: usize| qkv[(bi * t + ti) * 3 * c + col] as f64;
    for bi in 0..b {
        for h in 0..nh {
            for i in 0..t {
                let w: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..hs)
                            .map(|d| at(bi, i, h * hs + d) * at(bi, j, c + h * hs + d))
                            .sum::<f64>()
                            / (hs as f64).sqrt()
                    })
                    .collect();
                let mx = w.iter().copied().fold(f64::MIN, f64::max);
                let z: f64 = w.iter().map(|x| (x - mx).exp()).sum();
                for d in 0..hs {
                    out[(bi * t + i) * c + h * hs + d] = (0..=i)
                        .map(|j| (w[j] - mx).exp() / z * at(bi, j, 2 * c + h * hs + d))
                        .sum();
                }
            }
        }
    }
    out
}

#[test]
fn attention_over_several_causal_blocks_matches_naive_and_finite_differences() {
    // T above and not a multiple of the 32-row causal block; odd head size
    for (b, t, c, heads) in [(2, 70, 12, 3), (1, 33, 10, 2), (3, 1, 4, 1)] {
        let s = AttnShape {
            b,
            t,
            c,
            heads,
            par: lopper_tensor::Par::rayon(),
        };
        let n = b * t;
        let qkv = randv(n * 3 * c, 1.5, 41 + t as u64);
        let mut cache = AttnCache::default();
        let mut out = vec![0.0; n * c];
        attention_forward(&qkv, s, &mut out, &mut cache).unwrap();
        let want = attention_naive(&qkv, b, t, c, heads);
        for (i, (o, w)) in out.iter().zip(&want).enumerate() {
            assert!(
                (*o as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "T={t} element {i}: {o} vs naive {w}"
            );
        }
        let r = randv(n * c, 1.0, 42);
        let mut dqkv = vec![0.0; n * 3 * c];
        attention_backward(&r, s, &mut cache, &mut dqkv).unwrap();
        let mut xx = qkv.clone();
        let idx: Vec<usize> = (0..xx.len()).step_by(5).collect();
        let num = fd_vec(&mut xx, &idx, EPS, &mut |xv| {
            let mut o = vec![0.0; n * c];
            attention_forward(xv, s, &mut o, &mut AttnCache::default()).unwrap();
            dot64(&o, &r)
        });
        let ana: Vec<f32> = idx.iter().map(|&i| dqkv[i]).collect();
        assert_close(&format!("attention dqkv T={t}"), &ana, &num, RTOL);
    }
}

#[test]
fn cross_entropy_and_embedding_match_finite_differences() {
    let (n, v) = (6, 5);
    let logits = randv(n * v, 2.0, 41);
    let targets: Vec<u32> = (0..n as u32).map(|i| i % v as u32).collect();
    let mut probs = vec![0.0; n * v];
    let loss = cross_entropy_forward(&logits, &targets, v, &mut probs).unwrap();
    let want: f64 = (0..n)
        .map(|i| {
            let row = &logits[i * v..(i + 1) * v];
            let lse = row.iter().map(|x| (*x as f64).exp()).sum::<f64>().ln();
            lse - row[targets[i] as usize] as f64
        })
        .sum::<f64>()
        / n as f64;
    assert!((loss as f64 - want).abs() < 1e-5, "{loss} vs {want}");
    let mut d = vec![0.0; n * v];
    cross_entropy_backward(&probs, &targets, v, &mut d).unwrap();
    let mut xx = logits.clone();
    let idx: Vec<usize> = (0..xx.len()).collect();
    let num = fd_vec(&mut xx, &idx, 1e-2, &mut |l| {
        let mut p = vec![0.0; n * v];
        cross_entropy_forward(l, &targets, v, &mut p).unwrap() as f64
    });
    assert_close("cross-entropy", &d, &num, RTOL);
    assert!(cross_entropy_forward(&logits, &[9; 6], v, &mut probs).is_err());

    let mut e = Embedding::new("wte", 7, 3, 1.0, 1);
    let ids = [1u32, 4, 1, 6];
    let r = randv(12, 1.0, 42);
    e.backward(&ids, &r).unwrap();
    let grads = grads_of(&mut e, emb_params);
    let mut lossf = |e: &mut Embedding| {
        let mut o = vec![0.0; 12];
        e.forward(&ids, &mut o).unwrap();
        dot64(&o, &r)
    };
    check_params(&mut e, emb_params, &mut lossf, &grads, EPS, RTOL, 64);
    let err = e.forward(&[7], &mut [0.0; 3]).unwrap_err().to_string();
    assert!(err.contains("wte") && err.contains("out of range"), "{err}");
}

fn randomize_gpt(g: &mut Gpt, seed: u64) {
    for (i, p) in g.params().into_iter().enumerate() {
        let len = p.values.len();
        let base = if p.name.contains("ln") && p.name.ends_with("weight") {
            1.0
        } else {
            0.0
        };
        for (v, d) in p.values.iter_mut().zip(randv(len, 0.5, seed + i as u64)) {
            *v = base + d;
        }
    }
}

fn ln_params(l: &mut LayerNorm) -> Vec<ParamMut<'_>> {
    let mut v = Vec::new();
    l.params(&mut v);
    v
}

fn emb_params(e: &mut Embedding) -> Vec<ParamMut<'_>> {
    let mut v = Vec::new();
    e.params(&mut v);
    v
}

fn mlp_params(m: &mut Mlp) -> Vec<ParamMut<'_>> {
    m.params()
}

fn gpt_params(g: &mut Gpt) -> Vec<ParamMut<'_>> {
    g.params()
}

fn gpt_check(cfg: GptConfig, sparse: bool) {
    let (b, t) = (2, 4);
    let mut g = Gpt::new(cfg).unwrap();
    randomize_gpt(&mut g, 100);
    if sparse {
        for (i, l) in g.linears_mut().enumerate() {
            let n = l.in_features() * l.out_features();
            l.set_kind(&WeightKind::CsrMask(mask(n, 0.5, 200 + i as u64)))
                .unwrap();
        }
    }
    let tokens: Vec<u32> = (0..b * t)
        .map(|i| ((i * 5 + 1) % cfg.vocab) as u32)
        .collect();
    let targets: Vec<u32> = (0..b * t)
        .map(|i| ((i * 3 + 2) % cfg.vocab) as u32)
        .collect();
    g.zero_grad();
    g.forward(&tokens, &targets, b, t).unwrap();
    g.backward().unwrap();
    let grads = grads_of(&mut g, gpt_params);
    let mut loss = |g: &mut Gpt| g.forward(&tokens, &targets, b, t).unwrap() as f64;
    check_params(&mut g, gpt_params, &mut loss, &grads, EPS, 2e-2, 24);
}

#[test]
fn gpt_tied_dense_matches_finite_differences() {
    gpt_check(
        GptConfig {
            vocab: 11,
            ctx: 6,
            layers: 2,
            heads: 2,
            width: 8,
            tie_weights: true,
            seed: 1,
        },
        false,
    );
}

#[test]
fn gpt_untied_csr_matches_finite_differences() {
    gpt_check(
        GptConfig {
            vocab: 9,
            ctx: 4,
            layers: 1,
            heads: 2,
            width: 8,
            tie_weights: false,
            seed: 2,
        },
        true,
    );
}

#[test]
fn mlp_matches_finite_differences() {
    for act in [MlpActivation::Gelu, MlpActivation::Relu] {
        let mut m = Mlp::new(&[6, 10, 4], act, 3).unwrap();
        let x = randv(5 * 6, 1.0, 51);
        let y = [0u32, 3, 1, 2, 3];
        m.zero_grad();
        m.forward(&x, &y).unwrap();
        m.backward().unwrap();
        let grads = grads_of(&mut m, mlp_params);
        let mut loss = |m: &mut Mlp| m.forward(&x, &y).unwrap() as f64;
        check_params(&mut m, mlp_params, &mut loss, &grads, 1e-2, 2e-2, 64);
    }
}
