//! Probe of multi-threaded GEMM arrangements at the GPT's shapes (docs/nn.md, "One pool"): one
//! thread, faer's parallel GEMM (`GemmSplit::Faer`), lopper's default (`gemm`, `GemmSplit::Slabs`),
//! and slabs forced to rows or to columns (the two choices `Slabs` picks between), in GFLOP/s.
//! Run: `RAYON_NUM_THREADS=2 cargo run --release -p lopper-tensor --example gemm_split`.
use lopper_tensor::{GemmSplit, MatMut, MatRef, Par, Transpose, gemm_with};
use std::time::Instant;

/// Best of 7 batches of 5 calls, after 3 warm-up calls, in seconds per call.
fn time<F: FnMut()>(mut f: F) -> f64 {
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

/// `c[:, c0..c1] = a op(b)[:, c0..c1]` on one thread, through faer's views.
fn col_block(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    tb: Transpose,
    c0: usize,
    c1: usize,
) {
    let bf = match tb {
        Transpose::No => faer::MatRef::from_row_major_slice(b, k, n),
        Transpose::Yes => faer::MatRef::from_row_major_slice(b, n, k).transpose(),
    };
    let cf = faer::MatMut::from_row_major_slice_mut(c, m, n).subcols_mut(c0, c1 - c0);
    let af = faer::MatRef::from_row_major_slice(a, m, k);
    faer::linalg::matmul::matmul(
        cf,
        faer::Accum::Replace,
        af,
        bf.subcols(c0, c1 - c0),
        1.0f32,
        faer::Par::Seq,
    );
}

fn main() {
    let threads = rayon::current_num_threads();
    // (name, M, K, N, op of B): C (M, N) = A (M, K) op(B); with Transpose::Yes, B is stored (N, K)
    let shapes = [
        ("fwd qkv", 1024, 256, 768, Transpose::Yes),
        ("fwd fc", 1024, 256, 1024, Transpose::Yes),
        ("fwd proj", 1024, 1024, 256, Transpose::Yes),
        ("fwd attn.proj", 1024, 256, 256, Transpose::Yes),
        ("dx qkv", 1024, 768, 256, Transpose::No),
        ("dx fc", 1024, 1024, 256, Transpose::No),
        ("dx proj", 1024, 256, 1024, Transpose::No),
        ("dW qkv", 768, 1024, 256, Transpose::No),
        ("dW fc (x^T dy)", 256, 1024, 1024, Transpose::No),
        ("dW proj", 256, 1024, 1024, Transpose::No),
        ("lowrank x V^T", 1024, 256, 32, Transpose::Yes),
        ("lowrank h U^T", 1024, 32, 256, Transpose::Yes),
        ("lowrank dh^T x", 32, 1024, 256, Transpose::No),
        ("small K 16", 1024, 16, 256, Transpose::Yes),
        ("small K 64", 1024, 64, 256, Transpose::Yes),
        ("small M 64", 64, 512, 512, Transpose::No),
        ("spmm_24 base", 3072, 768, 512, Transpose::No),
        ("DLMC 512", 512, 512, 512, Transpose::No),
        ("DLMC 2048", 2048, 512, 512, Transpose::No),
    ];
    println!(
        "{threads} threads; GFLOP/s: one thread | faer's pool | gemm (Slabs) | row slabs | column slabs"
    );
    for (name, m, k, n, tb) in shapes {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i % 97) as f32 - 48.0) * 0.01)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i % 89) as f32 - 44.0) * 0.01)
            .collect();
        let mut c = vec![0.0f32; m * n];
        let bm = match tb {
            Transpose::Yes => MatRef::new(&b, n, k).unwrap(),
            Transpose::No => MatRef::new(&b, k, n).unwrap(),
        };
        let am = MatRef::new(&a, m, k).unwrap();
        let mut run = |par: Par, split: GemmSplit| {
            time(|| {
                let cm = MatMut::new(&mut c, m, n).unwrap();
                gemm_with(cm, am, Transpose::No, bm, tb, 1.0, 0.0, None, par, split).unwrap()
            })
        };
        let seq = run(Par::Seq, GemmSplit::Slabs);
        let faer = run(Par::rayon(), GemmSplit::Faer);
        let slabs = run(Par::rayon(), GemmSplit::Slabs);
        let rows = {
            let r = m.div_ceil(threads);
            time(|| {
                rayon::scope(|s| {
                    for (cs, as_) in c.chunks_mut(r * n).zip(a.chunks(r * k)) {
                        s.spawn(move |_| {
                            let rr = cs.len() / n;
                            let cm = MatMut::new(cs, rr, n).unwrap();
                            let am = MatRef::new(as_, rr, k).unwrap();
                            gemm_with(
                                cm,
                                am,
                                Transpose::No,
                                bm,
                                tb,
                                1.0,
                                0.0,
                                None,
                                Par::Seq,
                                GemmSplit::Slabs,
                            )
                            .unwrap();
                        });
                    }
                })
            })
        };
        let cols = {
            // one thread per column block; each writes its own copy of C (columns of one row-major
            // C cannot be handed out as slices), which is what the slab costs apart from the stores
            let w = n.div_ceil(threads);
            let mut copies = vec![vec![0.0f32; m * n]; threads];
            time(|| {
                rayon::scope(|s| {
                    for (t, cc) in copies.iter_mut().enumerate() {
                        let (a, b) = (&a, &b);
                        s.spawn(move |_| {
                            col_block(
                                cc,
                                a,
                                b,
                                (m, k, n),
                                tb,
                                (t * w).min(n),
                                ((t + 1) * w).min(n),
                            )
                        });
                    }
                })
            })
        };
        let gf = 2.0 * (m * k * n) as f64 / 1e9;
        println!(
            "{name:16} {m:>5}x{k:<5}x{n:<5} {:6.1} | {:6.1} | {:6.1} | {:6.1} | {:6.1}",
            gf / seq,
            gf / faer,
            gf / slabs,
            gf / rows,
            gf / cols
        );
    }
}
