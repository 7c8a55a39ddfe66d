//! Shared test fixtures: tiny deterministic data sources (a pure function of the step), model
//! builders and a callback with tensor state.
#![allow(dead_code)]
use lopper_nn::{Gpt, GptConfig, Mlp, MlpActivation, WeightKind};
use lopper_train::{
    Batch, Callback, CallbackState, Control, Ctx, DataError, DataSource, Model, Result,
};
use std::collections::BTreeMap;

/// splitmix64.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// Token sequences following `next = (3 * cur + 1) % vocab` with a random start per row, so
/// there is something to learn.
pub struct Tokens {
    pub vocab: u32,
    pub b: usize,
    pub t: usize,
    pub seed: u64,
}

impl Tokens {
    fn batch(&self, key: u64) -> Batch {
        let (mut tokens, mut targets) = (Vec::new(), Vec::new());
        for r in 0..self.b {
            let mut cur =
                (mix(self.seed ^ key.wrapping_mul(1000) ^ r as u64) % self.vocab as u64) as u32;
            for _ in 0..self.t {
                tokens.push(cur);
                let next = (3 * cur + 1) % self.vocab;
                targets.push(next);
                cur = next;
            }
        }
        Batch::Tokens {
            tokens,
            targets,
            b: self.b,
            t: self.t,
        }
    }
}

impl DataSource for Tokens {
    fn train_batch(&self, step: u64) -> Result<Batch, DataError> {
        Ok(self.batch(step))
    }
    fn val_batches(&self) -> Result<Vec<Batch>, DataError> {
        Ok(vec![self.batch(1 << 40), self.batch((1 << 40) + 1)])
    }
    fn describe(&self) -> String {
        format!("test tokens vocab {} b {} t {}", self.vocab, self.b, self.t)
    }
}

/// Feature rows in `dim` dimensions; the class is the arg-max of the first `classes` features.
pub struct Features {
    pub dim: usize,
    pub classes: usize,
    pub rows: usize,
    pub seed: u64,
}

impl Features {
    fn batch(&self, key: u64) -> Batch {
        let mut x = Vec::with_capacity(self.rows * self.dim);
        let mut targets = Vec::new();
        for r in 0..self.rows {
            let row: Vec<f32> = (0..self.dim)
                .map(|j| {
                    let h = mix(self.seed ^ (key << 20) ^ ((r * self.dim + j) as u64));
                    (h % 2001) as f32 / 1000.0 - 1.0
                })
                .collect();
            let best = (0..self.classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            targets.push(best as u32);
            x.extend(row);
        }
        Batch::Features {
            x,
            dim: self.dim,
            targets,
        }
    }
}

impl DataSource for Features {
    fn train_batch(&self, step: u64) -> Result<Batch, DataError> {
        Ok(self.batch(step))
    }
    fn val_batches(&self) -> Result<Vec<Batch>, DataError> {
        Ok(vec![self.batch(1 << 30)])
    }
    fn describe(&self) -> String {
        format!("test features {}x{}", self.rows, self.dim)
    }
}

/// A mask keeping about `keep` of `n` entries (deterministic in `seed`).
pub fn mask(n: usize, keep: f64, seed: u64) -> Vec<bool> {
    (0..n)
        .map(|i| (mix(seed ^ i as u64) % 1000) as f64 / 1000.0 < keep)
        .collect()
}

/// A 2-layer GPT (width 16, ctx 8, vocab 32); with `mixed`, layers of every kind.
pub fn gpt(mixed: bool) -> Gpt {
    let mut g = Gpt::new(GptConfig {
        vocab: 32,
        ctx: 8,
        layers: 2,
        heads: 2,
        width: 16,
        tie_weights: true,
        seed: 7,
    })
    .unwrap();
    if mixed {
        for l in g.linears_mut() {
            let n = l.in_features() * l.out_features();
            let kind = match l.name.as_str() {
                "h.0.attn.qkv" => WeightKind::CsrMask(mask(n, 0.5, 1)),
                "h.0.attn.proj" => WeightKind::Lora {
                    rank: 2,
                    alpha: 4.0,
                    sparse_base: false,
                    seed: 3,
                },
                "h.0.mlp.fc" => WeightKind::Masked(mask(n, 0.3, 2)),
                "h.1.attn.proj" => WeightKind::Sparse24,
                "h.1.mlp.fc" => WeightKind::Lora {
                    rank: 3,
                    alpha: 1.5,
                    sparse_base: true,
                    seed: 4,
                },
                "h.1.mlp.proj" => WeightKind::LowRank { rank: 4 },
                _ => continue,
            };
            l.set_kind(&kind).unwrap();
        }
    }
    g
}

/// An MLP 12 -> 16 -> 10 -> 4; with `mixed`: Csr, Masked and LowRank layers.
pub fn mlp(mixed: bool) -> Mlp {
    let mut m = Mlp::new(&[12, 16, 10, 4], MlpActivation::Relu, 5).unwrap();
    if mixed {
        for l in m.linears_mut() {
            let n = l.in_features() * l.out_features();
            let kind = match l.name.as_str() {
                "fc.0" => WeightKind::CsrMask(mask(n, 0.4, 9)),
                "fc.1" => WeightKind::Masked(mask(n, 0.5, 10)),
                _ => WeightKind::LowRank { rank: 3 },
            };
            l.set_kind(&kind).unwrap();
        }
    }
    m
}

/// Every parameter's name and values.
pub fn params(m: &mut dyn Model) -> Vec<(String, Vec<f32>)> {
    m.params()
        .into_iter()
        .map(|p| (p.name, p.values.to_vec()))
        .collect()
}

/// A callback with tensor and JSON state: an exponential average of the training loss, and the
/// count of steps it saw.
#[derive(Default)]
pub struct LossAverage {
    pub avg: Vec<f32>,
    pub seen: u64,
}

impl Callback for LossAverage {
    fn name(&self) -> String {
        "loss_average".into()
    }
    fn on_step_end(&mut self, ctx: &mut Ctx<'_>) -> Result<Control> {
        if self.avg.is_empty() {
            self.avg = vec![ctx.loss, ctx.loss];
        } else {
            self.avg[0] = 0.9 * self.avg[0] + 0.1 * ctx.loss;
            self.avg[1] = ctx.loss;
        }
        self.seen += 1;
        Ok(Control::Continue)
    }
    fn state(&self) -> CallbackState {
        CallbackState {
            tensors: BTreeMap::from([("avg".to_string(), self.avg.clone())]),
            json: serde_json::json!({ "seen": self.seen }),
        }
    }
    fn load_state(&mut self, st: &CallbackState) -> Result<()> {
        self.avg = st.tensors.get("avg").cloned().unwrap_or_default();
        self.seen = st.json["seen"].as_u64().unwrap();
        Ok(())
    }
}
