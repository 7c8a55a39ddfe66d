//! criterion benches of the CPU sparse kernels beside the dense GEMM of the same shape
//! (faer, same threads), at a transformer FFN shape (3072 x 768, N = 512) and 90% sparsity.
//!
//! `cargo bench --bench spmm` (add `-- spmm_t` etc. to filter). Ratios are what to read: each group
//! has its dense baseline measured in the same run.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lopper::sparse::{Csr, Sparse24, sddmm, spmm, spmm_24, spmm_t};
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
    bench_spmm_24
);
criterion_main!(benches);
