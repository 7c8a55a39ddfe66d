//! Forward + backward of the tiny GPT (4 layers, 4 heads, width 256, context 128, batch 8) with
//! dense, masked-80% and CSR-80% Linear layers, and dense with bf16 storage. Throughput is in tokens (B*T per step).
//! Run: `cargo bench -p lopper-nn --bench gpt_step`.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lopper_nn::{Gpt, GptConfig, WeightKind};
use std::time::Duration;

const B: usize = 8;
const T: usize = 128;

fn model(kind: &str) -> Gpt {
    let mut g = Gpt::new(GptConfig::default()).expect("config");
    // LOPPER_GEMM_THREADS=n: products with n threads whatever the rayon pool's size (to compare
    // thread-pool arrangements, e.g. with RAYON_NUM_THREADS=1)
    if let Some(n) = std::env::var("LOPPER_GEMM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        g.set_par(lopper_tensor::Par::Rayon(n));
    }
    // LOPPER_LOOP_SEQ=1: attention and GELU loops on the caller's thread (default: rayon)
    if std::env::var("LOPPER_LOOP_SEQ").is_ok() {
        g.set_loop_par(lopper_tensor::Par::Seq);
    }
    // LOPPER_GEMM_FAER=1: faer's own parallel GEMM instead of row slabs on rayon
    if std::env::var("LOPPER_GEMM_FAER").is_ok() {
        g.set_gemm_threads(lopper_nn::GemmThreads::Faer);
    }
    if kind.ends_with("bf16") {
        g.set_precision(lopper_nn::Precision::Bf16);
    }
    for l in g.linears_mut() {
        let w = l.dense_weight();
        let keep = w.len() / 5; // 80% sparse: keep the 20% largest magnitudes
        let mut idx: Vec<usize> = (0..w.len()).collect();
        idx.select_nth_unstable_by(keep, |&a, &b| w[b].abs().total_cmp(&w[a].abs()));
        let mut mask = vec![false; w.len()];
        idx[..keep].iter().for_each(|&i| mask[i] = true);
        match kind {
            "masked80" => l.set_kind(&WeightKind::Masked(mask)).expect("mask"),
            "csr80" | "csr80_bf16" => l.set_kind(&WeightKind::CsrMask(mask)).expect("csr"),
            _ => {}
        }
    }
    g
}

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let reps = 5;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64 * 1e3
}

/// With LOPPER_BREAKDOWN=1: milliseconds of each layer type's forward and backward at the GPT's
/// shapes, dense vs CSR 80%, to see where a step's time goes.
fn breakdown() {
    use lopper_nn::Linear;
    use lopper_nn::attention::{AttnCache, AttnShape, attention_backward, attention_forward};
    let n = B * T;
    for (k, m) in [(256, 768), (256, 1024), (1024, 256)] {
        let x: Vec<f32> = (0..n * k)
            .map(|i| ((i % 97) as f32 - 48.0) * 0.01)
            .collect();
        let dy: Vec<f32> = (0..n * m)
            .map(|i| ((i % 89) as f32 - 44.0) * 0.01)
            .collect();
        let (mut y, mut dx) = (vec![0.0; n * m], vec![0.0; n * k]);
        for kind in ["dense", "dense-nobias", "csr80"] {
            let mut l = Linear::new("probe", k, m, kind != "dense-nobias", 0.02, 1);
            if kind == "csr80" {
                let mask: Vec<bool> = (0..m * k)
                    .map(|i| ((i * 2_654_435_761usize) >> 7).is_multiple_of(5))
                    .collect();
                l.set_kind(&WeightKind::CsrMask(mask)).expect("csr");
            }
            let f = time(|| l.forward(&x, n, &mut y).expect("fwd"));
            let b = time(|| l.backward(&x, &dy, n, &mut dx).expect("bwd"));
            eprintln!("linear {k}->{m} {kind}: forward {f:.2} ms, backward {b:.2} ms");
        }
    }
    {
        use lopper_tensor::{MatMut, MatRef, Par, Transpose::*, gemm};
        let (m, k) = (768usize, 256usize);
        let x: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let dy: Vec<f32> = (0..n * m).map(|i| (i % 5) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..m * k).map(|i| (i % 3) as f32 * 0.1).collect();
        let (mut dw, mut dx, mut y) = (vec![0.0; m * k], vec![0.0; n * k], vec![0.0; n * m]);
        let p = Par::rayon();
        let fwd = time(|| {
            gemm(
                MatMut::new(&mut y, n, m).unwrap(),
                MatRef::new(&x, n, k).unwrap(),
                No,
                MatRef::new(&w, m, k).unwrap(),
                Yes,
                1.0,
                0.0,
                p,
            )
            .unwrap()
        });
        let dw1 = time(|| {
            gemm(
                MatMut::new(&mut dw, m, k).unwrap(),
                MatRef::new(&dy, n, m).unwrap(),
                Yes,
                MatRef::new(&x, n, k).unwrap(),
                No,
                1.0,
                1.0,
                p,
            )
            .unwrap()
        });
        let dw0 = time(|| {
            gemm(
                MatMut::new(&mut dw, m, k).unwrap(),
                MatRef::new(&dy, n, m).unwrap(),
                Yes,
                MatRef::new(&x, n, k).unwrap(),
                No,
                1.0,
                0.0,
                p,
            )
            .unwrap()
        });
        let dxt = time(|| {
            gemm(
                MatMut::new(&mut dx, n, k).unwrap(),
                MatRef::new(&dy, n, m).unwrap(),
                No,
                MatRef::new(&w, m, k).unwrap(),
                No,
                1.0,
                0.0,
                p,
            )
            .unwrap()
        });
        eprintln!(
            "gemm 1024x256 -> 768: forward {fwd:.2} ms, dW (beta 1) {dw1:.2} ms, dW (beta 0) {dw0:.2} ms, dx {dxt:.2} ms"
        );
    }
    {
        use lopper_sparse::{Csr, sddmm, spmm};
        use lopper_tensor::{MatMut, MatRef, Par};
        let (m, k) = (768, 256);
        let w: Vec<f32> = (0..m * k)
            .map(|i| {
                if ((i * 2_654_435_761usize) >> 7).is_multiple_of(5) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let c = Csr::from_dense(MatRef::new(&w, m, k).unwrap(), 0.0).unwrap();
        for d in [1024usize, 1040] {
            let a: Vec<f32> = (0..m * d).map(|i| (i % 7) as f32).collect();
            let bm: Vec<f32> = (0..k * d).map(|i| (i % 5) as f32).collect();
            let mut out = vec![0.0; c.nnz()];
            let t = time(|| {
                sddmm(
                    &c,
                    MatRef::new(&a, m, d).unwrap(),
                    MatRef::new(&bm, k, d).unwrap(),
                    &mut out,
                    Par::rayon(),
                )
                .unwrap()
            });
            let mut y = vec![0.0; m * d];
            let t2 = time(|| {
                spmm(
                    &c,
                    MatRef::new(&bm, k, d).unwrap(),
                    MatMut::new(&mut y, m, d).unwrap(),
                    Par::rayon(),
                )
                .unwrap()
            });
            let gf = 2.0 * c.nnz() as f64 * d as f64 / 1e6;
            eprintln!(
                "sddmm D={d}: {t:.2} ms ({:.1} GFLOP/s); spmm N={d}: {t2:.2} ms ({:.1} GFLOP/s)",
                gf / t,
                gf / t2
            );
        }
    }
    let s = AttnShape {
        b: B,
        t: T,
        c: 256,
        heads: 4,
        par: lopper_tensor::Par::Seq,
    };
    let qkv: Vec<f32> = (0..n * 768)
        .map(|i| ((i % 101) as f32 - 50.0) * 0.01)
        .collect();
    let (mut out, mut cache, mut dq) =
        (vec![0.0; n * 256], AttnCache::default(), vec![0.0; n * 768]);
    let f = time(|| attention_forward(&qkv, s, &mut out, &mut cache).expect("attn"));
    let dout = out.clone();
    let b = time(|| attention_backward(&dout, s, &mut cache, &mut dq).expect("attn bwd"));
    eprintln!("attention: forward {f:.2} ms, backward {b:.2} ms");
}

fn bench(c: &mut Criterion) {
    if std::env::var("LOPPER_BREAKDOWN").is_ok() {
        breakdown();
    }
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
    for kind in ["dense", "masked80", "csr80", "dense_bf16"] {
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
