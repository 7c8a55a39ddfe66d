//! Stage-by-stage timing of rsvd on the peers' matrix: `cargo run --release -p lopper-lowrank
//! --example rsvd_timing -- 1024`.
use lopper_lowrank::rsvd::decaying_test_matrix;
use lopper_lowrank::{RsvdParams, rsvd};
use lopper_tensor::{MatRef, Par};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let par = Par::rayon();
    let (a, _) = decaying_test_matrix(n, 0, par);
    let am = MatRef::new(&a, n, n).unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        let s = rsvd(am, 64, RsvdParams::default(), par).unwrap();
        println!(
            "rsvd n={n}: {:.1} ms (k={})",
            t.elapsed().as_secs_f64() * 1e3,
            s.k
        );
    }
    // the GEMMs alone: 6 products of (n, n) x (n, 74)
    let b = vec![1.0f32; n * 74];
    let mut c = vec![0.0f32; n * 74];
    let t = Instant::now();
    for _ in 0..6 {
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
    }
    println!("6 gemms: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let panel = faer::Mat::<f32>::from_fn(n, 74, |i, j| {
        ((i * 7 + j * 13) % 17) as f32 - 8.0 + (i == j) as u8 as f32
    });
    let (mut tq, mut tl) = (0.0, 0.0);
    for _ in 0..10 {
        let mut y = panel.clone();
        let t = Instant::now();
        lopper_lowrank::rsvd::orthonormalize(&mut y, faer::Par::Seq);
        tq += t.elapsed().as_secs_f64();
        let mut y = panel.clone();
        let t = Instant::now();
        lopper_lowrank::rsvd::lu_normalize(&mut y, faer::Par::Seq);
        tl += t.elapsed().as_secs_f64();
    }
    println!(
        "panel ({n}, 74): QR {:.2} ms, LU {:.2} ms",
        tq * 100.0,
        tl * 100.0
    );
}
