//! criterion benches of the CPU sparse kernels beside the dense GEMM of the same shape
//! (faer, same threads), at a transformer FFN shape (3072 x 768, N = 512) and 90% sparsity.
//!
//! `cargo bench --bench spmm` (add `-- spmm_t` etc. to filter). Ratios are what to read: each group
//! has its dense baseline measured in the same run. Criterion's thread joins rayon's global pool
//! first, as `lopper bench` and `lopper train` do, so each parallel call starts from inside the
//! pool (docs/benchmarks.md, "kernels started from inside rayon's pool").
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use lopper::sparse::{
    Csr, Sparse24, sddmm, sddmm_add, spmm, spmm_24, spmm_t, spmm_t_sddmm, spmm_t_with,
};
use lopper::tensor::{MatMut, Par, Tensor, Transpose, gemm};
use std::hint::black_box;

const M: usize = 3072;
const K: usize = 768;
const N: usize = 512;

fn csr(sparsity: f64) -> Csr {
    let w = Tensor::randn(&[M, K], 1.0, 1);
    let keep = ((1.0 - sparsity) * (M * K) as f64).round() as usize;
    Csr::from_topk(w.mat("bench").unwrap(), keep).unwrap()
}

fn dense_gemm(c: &mut Criterion, group: &str, m: usize, k: usize, n: usize) {
    let a = Tensor::randn(&[m, k], 1.0, 2);
    let b = Tensor::randn(&[k, n], 1.0, 3);
    let mut y = vec![0.0f32; m * n];
    let mut g = c.benchmark_group(group);
    g.sample_size(20);
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));
    g.bench_function(
        BenchmarkId::new("dense_gemm", format!("{m}x{k}x{n}")),
        |bch| {
            bch.iter(|| {
                gemm(
                    MatMut::new(&mut y, m, n).unwrap(),
                    a.mat("a").unwrap(),
                    Transpose::No,
                    b.mat("b").unwrap(),
                    Transpose::No,
                    1.0,
                    0.0,
                    Par::rayon(),
                )
                .unwrap();
                black_box(&y);
            })
        },
    );
    g.finish();
}

fn bench_spmm(c: &mut Criterion) {
    dense_gemm(c, "spmm", M, K, N);
    let x = Tensor::randn(&[K, N], 1.0, 4);
    let mut y = vec![0.0f32; M * N];
    let mut g = c.benchmark_group("spmm");
    g.sample_size(20);
    for s in [0.7, 0.9, 0.95] {
        let w = csr(s);
        g.throughput(Throughput::Elements((2 * w.nnz() * N) as u64));
        g.bench_function(BenchmarkId::new("csr", s), |b| {
            b.iter(|| {
                spmm(
                    &w,
                    x.mat("x").unwrap(),
                    MatMut::new(&mut y, M, N).unwrap(),
                    Par::rayon(),
                )
                .unwrap();
                black_box(&y);
            })
        });
    }
    g.finish();
}

fn bench_spmm_t(c: &mut Criterion) {
    dense_gemm(c, "spmm_t", K, M, N);
    let x = Tensor::randn(&[M, N], 1.0, 5);
    let mut y = vec![0.0f32; K * N];
    let w = csr(0.9);
    let wt = w.transpose();
    let mut g = c.benchmark_group("spmm_t");
    g.sample_size(20);
    g.throughput(Throughput::Elements((2 * w.nnz() * N) as u64));
    g.bench_function("csr_0.9_transpose_each_call", |b| {
        b.iter(|| {
            spmm_t(
                &w,
                x.mat("x").unwrap(),
                MatMut::new(&mut y, K, N).unwrap(),
                Par::rayon(),
            )
            .unwrap();
            black_box(&y);
        })
    });
    g.bench_function("csr_0.9_cached_transpose", |b| {
        b.iter(|| {
            lopper::sparse::spmm_t_with(
                &wt,
                x.mat("x").unwrap(),
                MatMut::new(&mut y, K, N).unwrap(),
                Par::rayon(),
            )
            .unwrap();
            black_box(&y);
        })
    });
    g.finish();
}

fn bench_sddmm(c: &mut Criterion) {
    // dW = dY^T X at the pattern: A = dY^T (M, N), B = X^T (K, N); dense equivalent is M x N x K
    dense_gemm(c, "sddmm", M, N, K);
    let a = Tensor::randn(&[M, N], 1.0, 6);
    let bm = Tensor::randn(&[K, N], 1.0, 7);
    let w = csr(0.9);
    let mut out = vec![0.0f32; w.nnz()];
    let mut g = c.benchmark_group("sddmm");
    g.sample_size(20);
    g.throughput(Throughput::Elements((2 * w.nnz() * N) as u64));
    g.bench_function("csr_0.9", |b| {
        b.iter(|| {
            sddmm(
                &w,
                a.mat("a").unwrap(),
                bm.mat("b").unwrap(),
                &mut out,
                Par::rayon(),
            )
            .unwrap();
            black_box(&out);
        })
    });
    g.finish();
}

/// The backward of one sparse layer on one feature-major panel, as lopper-nn runs it (one thread
/// per panel): the benchmark GPT's qkv layer (768 x 256, 80% sparse) and a sequence of 128 tokens.
/// `separate` is spmm_t through the cached transpose plus sddmm_add, `fused` is spmm_t_sddmm, and
/// `dense` the two GEMMs a dense layer runs (dX = W^T dY and dW += dY X^T).
fn bench_spmm_t_sddmm(c: &mut Criterion) {
    let (m, k, d) = (768, 256, 128);
    let w = Tensor::randn(&[m, k], 1.0, 10);
    let w = Csr::from_topk(w.mat("w").unwrap(), m * k / 5).unwrap();
    let wt = w.transpose();
    let wd = Tensor::from_f32(&[m, k], w.to_dense()).unwrap();
    let dy = Tensor::randn(&[m, d], 1.0, 11);
    let x = Tensor::randn(&[k, d], 1.0, 12);
    let (mut dx, mut dwd) = (vec![0.0f32; k * d], vec![0.0f32; m * k]);
    let mut dw = vec![0.0f32; w.nnz()];
    let mut g = c.benchmark_group("spmm_t_sddmm");
    g.sample_size(30);
    g.bench_function("separate", |b| {
        b.iter(|| {
            let (yv, xv) = (dy.mat("dy").unwrap(), x.mat("x").unwrap());
            sddmm_add(&w, yv, xv, &mut dw, Par::Seq).unwrap();
            spmm_t_with(&wt, yv, MatMut::new(&mut dx, k, d).unwrap(), Par::Seq).unwrap();
            black_box((&dw, &dx));
        })
    });
    g.bench_function("fused", |b| {
        b.iter(|| {
            let (yv, xv) = (dy.mat("dy").unwrap(), x.mat("x").unwrap());
            spmm_t_sddmm(
                &wt,
                yv,
                xv,
                MatMut::new(&mut dx, k, d).unwrap(),
                &mut dw,
                Par::Seq,
            )
            .unwrap();
            black_box((&dw, &dx));
        })
    });
    g.bench_function("dense", |b| {
        b.iter(|| {
            let (yv, xv, wv) = (
                dy.mat("dy").unwrap(),
                x.mat("x").unwrap(),
                wd.mat("w").unwrap(),
            );
            let dxm = MatMut::new(&mut dx, k, d).unwrap();
            gemm(
                dxm,
                wv,
                Transpose::Yes,
                yv,
                Transpose::No,
                1.0,
                0.0,
                Par::Seq,
            )
            .unwrap();
            let dwm = MatMut::new(&mut dwd, m, k).unwrap();
            gemm(
                dwm,
                yv,
                Transpose::No,
                xv,
                Transpose::Yes,
                1.0,
                1.0,
                Par::Seq,
            )
            .unwrap();
            black_box((&dwd, &dx));
        })
    });
    g.finish();
}

fn bench_spmm_24(c: &mut Criterion) {
    dense_gemm(c, "spmm_24", M, K, N);
    let w = Sparse24::from_tensor_prune(&Tensor::randn(&[M, K], 1.0, 8)).unwrap();
    let x = Tensor::randn(&[K, N], 1.0, 9);
    let mut y = vec![0.0f32; M * N];
    let mut g = c.benchmark_group("spmm_24");
    g.sample_size(20);
    g.throughput(Throughput::Elements((M * K * N) as u64));
    g.bench_function("2:4", |b| {
        b.iter(|| {
            spmm_24(
                &w,
                x.mat("x").unwrap(),
                MatMut::new(&mut y, M, N).unwrap(),
                Par::rayon(),
            )
            .unwrap();
            black_box(&y);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_spmm,
    bench_spmm_t,
    bench_sddmm,
    bench_spmm_t_sddmm,
    bench_spmm_24
);
fn main() {
    // the main thread becomes one of the global pool's workers (if the pool is already built,
    // the kernels run as before, from outside it)
    let _ = rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
