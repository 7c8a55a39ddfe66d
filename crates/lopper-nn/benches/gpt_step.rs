//! Forward + backward of the tiny GPT (4 layers, 4 heads, width 256, context 128, batch 8) with
//! dense, masked-80% and CSR-80% Linear layers. Throughput is in tokens (B*T per step).
//! Run: `cargo bench -p lopper-nn --bench gpt_step`.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lopper_nn::{Gpt, GptConfig, WeightKind};
use std::time::Duration;

const B: usize = 8;
const T: usize = 128;

fn model(kind: &str) -> Gpt {
    let mut g = Gpt::new(GptConfig::default()).expect("config");
    for l in g.linears_mut() {
        let w = l.dense_weight();
        let keep = w.len() / 5; // 80% sparse: keep the 20% largest magnitudes
        let mut idx: Vec<usize> = (0..w.len()).collect();
        idx.select_nth_unstable_by(keep, |&a, &b| w[b].abs().total_cmp(&w[a].abs()));
        let mut mask = vec![false; w.len()];
        idx[..keep].iter().for_each(|&i| mask[i] = true);
        match kind {
            "masked80" => l.set_kind(&WeightKind::Masked(mask)).expect("mask"),
            "csr80" => l.set_kind(&WeightKind::CsrMask(mask)).expect("csr"),
            _ => {}
        }
    }
    g
}

fn bench(c: &mut Criterion) {
    let tokens: Vec<u32> = (0..B * T).map(|i| ((i * 7919 + 13) % 256) as u32).collect();
    let targets: Vec<u32> = (0..B * T)
        .map(|i| ((i * 104_729 + 5) % 256) as u32)
        .collect();
    let mut group = c.benchmark_group("gpt_step_4L4H256w_T128_B8");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements((B * T) as u64));
    for kind in ["dense", "masked80", "csr80"] {
        let mut g = model(kind);
        let f = g.flops(B, T).total();
        eprintln!(
            "{kind}: executed {:.2} GFLOP/step, dense-equivalent {:.2} GFLOP/step",
            f.executed as f64 / 1e9,
            f.dense as f64 / 1e9
        );
        group.bench_function(kind, |bch| {
            bch.iter(|| {
                g.zero_grad();
                let loss = g.forward(&tokens, &targets, B, T).expect("forward");
                g.backward().expect("backward");
                loss
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
