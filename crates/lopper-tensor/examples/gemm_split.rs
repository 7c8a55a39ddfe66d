//! Probe of two-thread GEMM arrangements at the GPT's shapes: one thread, faer's parallel GEMM, row
//! slabs and column slabs, each on rayon (docs/nn.md, "One pool").
//! Run: `RAYON_NUM_THREADS=2 cargo run --release -p lopper-tensor --example gemm_split`.
use lopper_tensor::{MatMut, MatRef, Par, Transpose, gemm};
use rayon::prelude::*;
use std::time::Instant;

fn t<F: FnMut()>(mut f: F) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..7 {
        let s = Instant::now();
        for _ in 0..5 {
            f();
        }
        best = best.min(s.elapsed().as_secs_f64() / 5.0);
    }
    best
}

fn main() {
    // (M, K, N, tb): C (M,N) = A (M,K) op(B); tb Yes: B stored (N,K)
    let shapes = [
        ("fwd qkv", 1024, 256, 768, Transpose::Yes),
        ("fwd fc", 1024, 256, 1024, Transpose::Yes),
        ("fwd proj", 1024, 1024, 256, Transpose::Yes),
        ("fwd attnproj", 1024, 256, 256, Transpose::Yes),
        ("dx qkv", 1024, 768, 256, Transpose::No),
        ("dx fc", 1024, 1024, 256, Transpose::No),
        ("dx proj", 1024, 256, 1024, Transpose::No),
        ("dW qkv", 768, 1024, 256, Transpose::No),
        ("dW fc^T", 256, 1024, 1024, Transpose::No),
        ("dW proj", 256, 1024, 1024, Transpose::No),
        ("bench 24", 3072, 768, 512, Transpose::No),
        ("bench dlmc", 512, 512, 512, Transpose::No),
        ("bench ffn", 2048, 512, 512, Transpose::No),
    ];
    let mut tot = [0.0f64; 4];
    for (name, m, k, n, tb) in shapes {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i % 97) as f32 - 48.0) * 0.01)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i % 89) as f32 - 44.0) * 0.01)
            .collect();
        let mut c = vec![0.0f32; m * n];
        let bm = || match tb {
            Transpose::Yes => MatRef::new(&b, n, k).unwrap(),
            Transpose::No => MatRef::new(&b, k, n).unwrap(),
        };
        let seq = t(|| {
            gemm(
                MatMut::new(&mut c, m, n).unwrap(),
                MatRef::new(&a, m, k).unwrap(),
                Transpose::No,
                bm(),
                tb,
                1.0,
                0.0,
                Par::Seq,
            )
            .unwrap()
        });
        let faer = t(|| {
            gemm(
                MatMut::new(&mut c, m, n).unwrap(),
                MatRef::new(&a, m, k).unwrap(),
                Transpose::No,
                bm(),
                tb,
                1.0,
                0.0,
                Par::Rayon(2),
            )
            .unwrap()
        });
        let rows = t(|| {
            let r = m / 2;
            c.par_chunks_mut(r * n)
                .zip(a.par_chunks(r * k))
                .for_each(|(cs, as_)| {
                    let rr = cs.len() / n;
                    gemm(
                        MatMut::new(cs, rr, n).unwrap(),
                        MatRef::new(as_, rr, k).unwrap(),
                        Transpose::No,
                        bm(),
                        tb,
                        1.0,
                        0.0,
                        Par::Seq,
                    )
                    .unwrap();
                })
        });
        // column split: each thread computes C[:, half] into its own buffer, B half
        let mut c0 = vec![0.0f32; m * n / 2];
        let mut c1 = vec![0.0f32; m * n / 2];
        let cols = t(|| {
            rayon::join(
                || colhalf(&a, &b, &mut c0, m, k, n, tb, 0),
                || colhalf(&a, &b, &mut c1, m, k, n, tb, 1),
            );
        });
        let gf = 2.0 * (m * k * n) as f64 / 1e9;
        println!(
            "{name:14} {m}x{k}x{n}: seq {:6.1}  faer2 {:6.1}  rows2 {:6.1}  cols2 {:6.1} GFLOP/s",
            gf / seq,
            gf / faer,
            gf / rows,
            gf / cols
        );
        tot[0] += seq / 2.0;
        tot[1] += faer;
        tot[2] += rows;
        tot[3] += cols;
    }
    println!(
        "total ms: seq/2 {:.3} faer2 {:.3} rows2 {:.3} cols2 {:.3}",
        tot[0] * 1e3,
        tot[1] * 1e3,
        tot[2] * 1e3,
        tot[3] * 1e3
    );
}

#[allow(clippy::too_many_arguments)]
fn colhalf(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    tb: Transpose,
    h: usize,
) {
    let nh = n / 2;
    match tb {
        Transpose::Yes => {
            // B stored (N, K): rows h*nh.. of it
            let bs = &b[h * nh * k..(h + 1) * nh * k];
            gemm(
                MatMut::new(c, m, nh).unwrap(),
                MatRef::new(a, m, k).unwrap(),
                Transpose::No,
                MatRef::new(bs, nh, k).unwrap(),
                Transpose::Yes,
                1.0,
                0.0,
                Par::Seq,
            )
            .unwrap();
        }
        Transpose::No => {
            // B stored (K, N): a column block needs a strided view; use faer directly
            let bf = faer::MatRef::from_row_major_slice(b, k, n).subcols(h * nh, nh);
            let af = faer::MatRef::from_row_major_slice(a, m, k);
            let cf = faer::MatMut::from_row_major_slice_mut(c, m, nh);
            faer::linalg::matmul::matmul(cf, faer::Accum::Replace, af, bf, 1.0f32, faer::Par::Seq);
        }
    }
}
