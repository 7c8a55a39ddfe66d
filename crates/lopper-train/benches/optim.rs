//! One optimizer step over the benchmark GPT's Linear weights (4 layers: 3.1M values), plain and
//! with a random 80% mask (the Masked baseline and gradual pruning's masked phase), for AdamW and
//! SGD with momentum. Throughput is in parameter values per step.
//! Run: `cargo bench -p lopper-train --bench optim`.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lopper_nn::ParamMut;
use lopper_train::optim::{AdamW, Optimizer, Sgd, SgdConfig};
use std::time::Duration;

/// The benchmark GPT's Linear weights: per layer qkv (768x256), proj (256x256), fc (1024x256),
/// fc proj (256x1024).
const SHAPES: [usize; 4] = [768 * 256, 256 * 256, 1024 * 256, 256 * 1024];
const LAYERS: usize = 4;

struct Params {
    values: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    masks: Vec<Vec<bool>>,
}

fn params() -> Params {
    let sizes: Vec<usize> = (0..LAYERS).flat_map(|_| SHAPES).collect();
    let gen_ = |n: usize, s: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 2_654_435_761 + s) >> 9) % 2001) as f32 * 1e-5 - 0.01)
            .collect()
    };
    Params {
        values: sizes.iter().enumerate().map(|(i, &n)| gen_(n, i)).collect(),
        grads: sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| gen_(n, 77 + i))
            .collect(),
        // keep one in five, scattered (a hash, not a stride)
        masks: sizes
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|i| ((i * 2_654_435_761usize) >> 7).is_multiple_of(5))
                    .collect()
            })
            .collect(),
    }
}

fn step(opt: &mut dyn Optimizer, p: &mut Params, masked: bool) {
    let mut ps: Vec<ParamMut<'_>> = p
        .values
        .iter_mut()
        .zip(&p.grads)
        .zip(&p.masks)
        .enumerate()
        .map(|(i, ((v, g), m))| ParamMut {
            name: format!("w{i}"),
            values: v,
            grad: g,
            mask: masked.then_some(m.as_slice()),
        })
        .collect();
    opt.step(&mut ps, 1e-3).expect("step");
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("optim");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let n: usize = LAYERS * SHAPES.iter().sum::<usize>();
    g.throughput(Throughput::Elements(n as u64));
    for masked in [false, true] {
        let tag = if masked { "masked80" } else { "plain" };
        let mut p = params();
        let mut adamw = AdamW::default();
        g.bench_function(format!("adamw/{tag}"), |b| {
            b.iter(|| step(&mut adamw, &mut p, masked))
        });
        let mut sgd = Sgd::new(SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        })
        .expect("sgd");
        g.bench_function(format!("sgd_momentum/{tag}"), |b| {
            b.iter(|| step(&mut sgd, &mut p, masked))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
