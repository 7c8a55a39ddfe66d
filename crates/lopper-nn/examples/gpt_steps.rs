//! Interleaved A/B timing of training steps (forward + backward, no optimizer) of the tiny GPT
//! (4 layers, 4 heads, width 256, context 128, batch 8):
//! `cargo run --release -p lopper-nn --example gpt_steps -- [rounds] [config...]`
//! where a config is `KIND:THREADS[:rm][:bf16]`, KIND `dense` or `csr80`, THREADS `row` (products split into
//! slabs of columns or rows on rayon, the default), `faer` (faer's own parallel GEMM) or `seq` (everything on one
//! thread); `rm` keeps sparse MLPs row-major (`Gpt::set_feature_major(false)`), `bf16` stores
//! weights and saved activations as bf16 (`Gpt::set_precision`).
//! Each round runs one step of every config in turn; prints the median and best tokens/s of each.
use lopper_nn::{GemmThreads, Gpt, GptConfig, WeightKind};
use lopper_tensor::Par;

/// Counts heap allocations (bytes and calls) to check that a step allocates nothing.
struct Counting;
static ALLOCS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
// SAFETY: forwards to the system allocator unchanged, only counting.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        BYTES.fetch_add(l.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

const B: usize = 8;
const T: usize = 128;

fn model(cfg: &str) -> Result<Gpt, Box<dyn std::error::Error>> {
    let mut parts = cfg.split(':');
    let kind = parts.next().unwrap_or("dense");
    let threads = parts.next().unwrap_or("row");
    let mut g = Gpt::new(GptConfig::default())?;
    for flag in parts {
        match flag {
            "rm" => g.set_feature_major(false),
            "bf16" => g.set_precision(lopper_nn::Precision::Bf16),
            other => return Err(format!("unknown flag {other:?} (rm, bf16)").into()),
        }
    }
    match threads {
        "seq" => {
            g.set_par(Par::Seq);
            g.set_loop_par(Par::Seq);
        }
        "faer" => g.set_gemm_threads(GemmThreads::Faer),
        "row" => g.set_gemm_threads(GemmThreads::Slabs),
        other => return Err(format!("unknown threads {other:?} (row, faer, seq)").into()),
    }
    match kind {
        "dense" => {}
        "csr80" => {
            for l in g.linears_mut() {
                let w = l.dense_weight();
                let keep = w.len() / 5; // keep the 20% largest magnitudes
                let mut idx: Vec<usize> = (0..w.len()).collect();
                idx.select_nth_unstable_by(keep, |&a, &b| w[b].abs().total_cmp(&w[a].abs()));
                let mut mask = vec![false; w.len()];
                idx[..keep].iter().for_each(|&i| mask[i] = true);
                l.set_kind(&WeightKind::CsrMask(mask))?;
            }
        }
        other => return Err(format!("unknown kind {other:?} (dense, csr80)").into()),
    }
    Ok(g)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let mut cfgs: Vec<String> = args.iter().skip(1).cloned().collect();
    if cfgs.is_empty() {
        cfgs = vec!["dense:row".into(), "dense:faer".into(), "csr80:row".into()];
    }
    let mut models = cfgs
        .iter()
        .map(|c| model(c))
        .collect::<Result<Vec<_>, _>>()?;
    let tokens: Vec<u32> = (0..B * T).map(|i| ((i * 7919 + 13) % 256) as u32).collect();
    let targets: Vec<u32> = (0..B * T)
        .map(|i| ((i * 104_729 + 5) % 256) as u32)
        .collect();
    let mut times = vec![Vec::new(); cfgs.len()];
    let mut allocs = vec![(0usize, 0usize); cfgs.len()];
    for r in 0..rounds + 1 {
        for ((g, ts), al) in models.iter_mut().zip(&mut times).zip(&mut allocs) {
            let (a0, b0) = (
                ALLOCS.load(std::sync::atomic::Ordering::Relaxed),
                BYTES.load(std::sync::atomic::Ordering::Relaxed),
            );
            let t0 = std::time::Instant::now();
            g.zero_grad();
            g.forward(&tokens, &targets, B, T)?;
            g.backward()?;
            if r > 0 {
                ts.push(t0.elapsed().as_secs_f64()); // round 0 allocates and warms up
                al.0 += ALLOCS.load(std::sync::atomic::Ordering::Relaxed) - a0;
                al.1 += BYTES.load(std::sync::atomic::Ordering::Relaxed) - b0;
            }
        }
    }
    for (((c, ts), al), g) in cfgs.iter().zip(&mut times).zip(&allocs).zip(&models) {
        ts.sort_by(f64::total_cmp);
        let (med, best) = (ts[ts.len() / 2], ts[0]);
        let tok = (B * T) as f64;
        println!(
            "{c:>14}: median {:.0} tokens/s ({:.1} ms), best {:.0} tokens/s; {:.1} allocations ({:.0} bytes) per step; saved activations {:.1} MiB",
            tok / med,
            med * 1e3,
            tok / best,
            al.0 as f64 / rounds as f64,
            al.1 as f64 / rounds as f64,
            g.saved_activation_bytes() as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
