//! SVD and randomized SVD at 1024^2 and 2048^2, rank 64, on the peers' matrix
//! U diag(1/(1+i)) V^T (see ../shared/peers/peer_bench.py, svd section).
//!
//! `cargo bench -p lopper-lowrank --bench svd`. Prints the error of each method against the
//! Eckart-Young optimum once per size before timing (torch.svd_lowrank: 1.006x).
use criterion::{Criterion, criterion_group, criterion_main};
use lopper_lowrank::rsvd::decaying_test_matrix;
use lopper_lowrank::{Precision, RsvdParams, optimal_rel_error, rel_frobenius_error, rsvd, svd};
use lopper_tensor::{MatRef, Par};
use std::hint::black_box;
use std::time::Duration;

const RANK: usize = 64;

fn bench(c: &mut Criterion) {
    let par = Par::rayon();
    for n in [1024usize, 2048] {
        let (a, s) = decaying_test_matrix(n, 0, par);
        let am = MatRef::new(&a, n, n).unwrap();
        let opt = optimal_rel_error(&s, RANK);
        let params = RsvdParams::default(); // oversample 10 (q = 74), 2 power iterations
        let r = rsvd(am, RANK, params, par).unwrap();
        let e_r = rel_frobenius_error(&a, &r.reconstruct(par).unwrap()).unwrap();
        let f = svd(am, Precision::F32, par)
            .unwrap()
            .truncate(RANK)
            .unwrap();
        let e_f = rel_frobenius_error(&a, &f.reconstruct(par).unwrap()).unwrap();
        println!(
            "n={n} rank={RANK}: rsvd error {:.5}x optimum, full f32 svd truncated {:.5}x optimum",
            e_r / opt,
            e_f / opt
        );
        let mut g = c.benchmark_group(format!("svd_{n}"));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(if n == 1024 { 3 } else { 8 }));
        g.bench_function("rsvd_r64_q74_niter2", |b| {
            b.iter(|| black_box(rsvd(am, RANK, params, par).unwrap()))
        });
        g.bench_function("full_thin_svd_f32", |b| {
            b.iter(|| black_box(svd(am, Precision::F32, par).unwrap()))
        });
        // baseline timed in the same rounds: one (n, n) x (n, 74) GEMM; rSVD with 2 power
        // iterations does 6 of these plus the panel QRs and a (n, 74) SVD
        let b = vec![1.0f32; n * 74];
        let mut c = vec![0.0f32; n * 74];
        g.bench_function("gemm_n_x_74_baseline", |bch| {
            bch.iter(|| {
                lopper_tensor::gemm(
                    lopper_tensor::MatMut::new(&mut c, n, 74).unwrap(),
                    am,
                    lopper_tensor::Transpose::No,
                    MatRef::new(&b, n, 74).unwrap(),
                    lopper_tensor::Transpose::No,
                    1.0,
                    0.0,
                    par,
                )
                .unwrap();
                black_box(&c);
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
