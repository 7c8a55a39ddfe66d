//! Golden test: a tiny GPT's loss and every parameter gradient against an independent float64 numpy
//! implementation (tests/golden/gpt_golden.py), from the same weights (tests/golden/weights.safetensors).
//! The expected values are committed (tests/golden/expected.safetensors): no Python at test time.
//!
//! Regenerate: `cargo test -p lopper-nn --test golden -- --ignored write_golden_weights`, then
//! `python3 crates/lopper-nn/tests/golden/gpt_golden.py` (needs numpy).
use lopper_nn::{Gpt, GptConfig, WeightKind};
use lopper_tensor::Tensor;
use lopper_tensor::io::safetensors::{self, SafetensorsFile};
use std::path::PathBuf;

const B: usize = 2;
const T: usize = 5;

fn cfg() -> GptConfig {
    GptConfig {
        vocab: 13,
        ctx: 6,
        layers: 2,
        heads: 2,
        width: 8,
        tie_weights: true,
        seed: 7,
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn tokens() -> (Vec<u32>, Vec<u32>) {
    let v = cfg().vocab;
    let toks = (0..B * T).map(|i| ((i * 5 + 3) % v) as u32).collect();
    let tg = (0..B * T).map(|i| ((i * 7 + 1) % v) as u32).collect();
    (toks, tg)
}

#[test]
#[ignore = "writes the golden weights; run by hand, then the numpy script"]
fn write_golden_weights() {
    use rand::{Rng, SeedableRng};
    let mut g = Gpt::new(cfg()).unwrap();
    let mut r = rand::rngs::StdRng::seed_from_u64(2024);
    let mut file = SafetensorsFile::default();
    for p in g.params() {
        let base = if p.name.contains("ln") && p.name.ends_with("weight") {
            1.0
        } else {
            0.0
        };
        for v in p.values.iter_mut() {
            *v = base + r.random_range(-0.5f32..0.5);
        }
        file.push(
            p.name.clone(),
            Tensor::from_f32(&[p.values.len()], p.values.to_vec()).unwrap(),
        );
    }
    let (toks, tg) = tokens();
    let c = cfg();
    let meta = [
        (
            "tokens",
            toks.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "targets",
            tg.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "config",
            format!(
                "{},{},{},{},{},{},{}",
                c.vocab, c.ctx, c.layers, c.heads, c.width, B, T
            ),
        ),
    ];
    for (k, v) in meta {
        file.metadata.insert(k.into(), v);
    }
    safetensors::write(&dir().join("weights.safetensors"), &file).unwrap();
}

fn run(kind: Option<WeightKind>) {
    let w = safetensors::read(&dir().join("weights.safetensors")).expect("committed weights");
    let want =
        safetensors::read(&dir().join("expected.safetensors")).expect("committed expected values");
    let mut g = Gpt::new(cfg()).unwrap();
    for (name, t) in w.tensors() {
        g.set_param(name, t.as_f32().unwrap()).unwrap();
    }
    if let Some(k) = &kind {
        for l in g.linears_mut() {
            l.set_kind(k).unwrap();
        }
    }
    let (toks, tg) = tokens();
    assert_eq!(
        w.metadata["tokens"],
        toks.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    g.zero_grad();
    let loss = g.forward(&toks, &tg, B, T).unwrap();
    g.backward().unwrap();
    let want_loss = want.tensor("loss").unwrap().as_f32().unwrap()[0];
    assert!(
        (loss - want_loss).abs() <= 1e-4 * want_loss.abs(),
        "loss {loss} vs numpy {want_loss}"
    );
    let mut checked = 0;
    for p in g.params() {
        let e = want
            .tensor(&format!("grad.{}", p.name))
            .unwrap_or_else(|| panic!("no expected grad for {}", p.name));
        let e = e.as_f32().unwrap();
        assert_eq!(e.len(), p.grad.len(), "{}", p.name);
        let scale = e.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{}: zero expected gradient", p.name);
        for (i, (a, b)) in p.grad.iter().zip(e).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (b.abs() + 1e-2 * scale),
                "{} [{i}]: {a} vs numpy {b} ({kind:?})",
                p.name
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 2 + 2 * 12 + 2, "every parameter checked");
}

#[test]
fn dense_gpt_matches_numpy_float64() {
    run(None);
}

#[test]
fn csr_gpt_with_every_entry_kept_matches_numpy_float64() {
    // random weights have no zeros: the CSR pattern is full, so gradients line up with dense ones
    run(Some(WeightKind::Csr));
}
