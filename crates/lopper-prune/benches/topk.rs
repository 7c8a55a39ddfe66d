//! Magnitude top-k on one layer's weights (262,144 values, the benchmark GPT's `mlp.fc`), keeping
//! 20%: what every pruning step of gradual magnitude pruning does per layer.
//! Run: `cargo bench -p lopper-prune --bench topk`.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lopper_prune::granularity::{kept_count, topk_mask};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let n = 1024 * 256;
    // scattered magnitudes with ties (a hash into 2^16 levels)
    let scores: Vec<f32> = (0..n)
        .map(|i| (((i * 2_654_435_761usize) >> 11) % 65_536) as f32 * 1e-5)
        .collect();
    let mut g = c.benchmark_group("topk");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("topk_mask/262144/keep20", |b| {
        b.iter(|| topk_mask(&scores, kept_count(n, 0.8)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
