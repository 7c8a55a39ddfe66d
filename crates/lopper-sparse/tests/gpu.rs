//! Every GPU kernel against its CPU reference (feature `cuda`): random inputs, awkward shapes (one
//! row, empty rows, N and K not multiples of the tiles), DLMC patterns when present, every csr_spmm
//! variant, and the launchers' typed errors. Without a device each test prints
//! "skipped: no CUDA device" and passes. Without the feature this file compiles to nothing.
//!
//! DLMC: `$LOPPER_DLMC`, else `dlmc/` beside the test binary's folder (the GPU bundle), else
//! `../shared/dlmc` from the workspace.
#![cfg(feature = "cuda")]

use half::bf16;
use lopper_sparse::gpu::{self, Gpu, GpuCsr, GpuCsrT, GpuSparse24};
use lopper_sparse::{Csr, Sparse24, Sparse24Fragments, reference};
use lopper_tensor::{MatMut, MatRef, Tensor};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;

fn device() -> Option<Arc<Gpu>> {
    if !gpu::is_available() {
        println!("{}", lopper_cuda::SKIP_MESSAGE);
        return None;
    }
    Some(Gpu::get(0).expect("a device is present"))
}

fn random_csr(rows: usize, cols: usize, density: f64, seed: u64) -> Csr {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut d: Vec<f32> = (0..rows * cols)
        .map(|_| {
            if r.random_bool(density) {
                r.random_range(-1.0f32..1.0)
            } else {
                0.0
            }
        })
        .collect();
    if rows > 2 {
        d[cols..2 * cols].fill(0.0); // an empty row
        d[2 * cols..3 * cols]
            .iter_mut()
            .for_each(|x| *x = r.random_range(-1.0f32..1.0)); // a full one
    }
    Csr::from_dense(MatRef::new(&d, rows, cols).unwrap(), 0.0).unwrap()
}

fn dense(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    Tensor::randn(&[rows, cols], 1.0, seed)
        .as_f32()
        .unwrap()
        .to_vec()
}

fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// A device buffer of bf16 read back as f32.
fn download_f32(g: &Gpu, d: &lopper_cuda::CudaSlice<bf16>) -> Vec<f32> {
    g.download(d).unwrap().iter().map(|v| v.to_f32()).collect()
}

/// |got - want| <= atol + rtol |want|: f32 with the reference's length-scaled tolerance, bf16 with
/// 1e-2 relative (of the row's scale).
fn check(got: &[f32], want: &[f64], len: usize, bf: bool, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = if bf {
            1e-2 * (w.abs() + 1e-2 * scale) + 1e-3
        } else {
            reference::tolerance(len, w, 2.0)
        };
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w}, tol {tol}"
        );
    }
}

const SHAPES: &[(usize, usize, f64)] = &[
    (1, 1, 1.0),
    (1, 37, 0.5),
    (7, 5, 0.0),
    (33, 65, 0.1),
    (130, 257, 0.05),
    (64, 512, 0.3),
];
const NS: &[usize] = &[1, 3, 8, 12, 64, 100, 256, 520];

#[test]
fn csr_spmm_f32_all_variants() {
    let Some(g) = device() else { return };
    for (s, &(m, k, dens)) in SHAPES.iter().enumerate() {
        let w = random_csr(m, k, dens, s as u64);
        let dw = GpuCsr::upload(&g, &w).unwrap();
        for &n in NS {
            let x = dense(k, n, 100 + n as u64);
            let want = reference::spmm(&w.to_dense(), m, k, &x, n);
            let dx = g.upload(&x).unwrap();
            let mut variants = vec![lopper_cuda::SpmmVariant::Auto];
            variants.extend(lopper_cuda::SpmmVariant::all());
            for v in variants {
                let mut dy = g.upload(&vec![f32::NAN; m * n]).unwrap(); // poisoned: every element must be written
                match dw.spmm(&g, &dx, n, &mut dy, v) {
                    Ok(()) => check(
                        &g.download(&dy).unwrap(),
                        &want,
                        k,
                        false,
                        &format!("spmm {m}x{k} n={n} {}", v.name()),
                    ),
                    Err(e) => assert!(
                        n % 4 != 0 && e.to_string().contains("alignment"),
                        "{m}x{k} n={n} {}: {e}",
                        v.name()
                    ),
                }
            }
        }
    }
}

#[test]
fn csr_spmm_bf16() {
    let Some(g) = device() else { return };
    for (s, &(m, k, dens)) in SHAPES.iter().enumerate() {
        let w = random_csr(m, k, dens, 50 + s as u64);
        let wv = round_bf16(w.values());
        let w = w.with_values(wv.clone()).unwrap();
        let wb = to_bf16(&wv);
        let dw = lopper_cuda::CsrDev::from_parts(&g, m, k, w.row_ptr(), w.col_idx(), &wb).unwrap();
        for &n in &[1usize, 8, 24, 256, 264] {
            let x = round_bf16(&dense(k, n, 7 + n as u64));
            let xb = to_bf16(&x);
            let want = reference::spmm(&w.to_dense(), m, k, &x, n);
            let dx = g.upload(&xb).unwrap();
            let mut dy = g.zeros::<bf16>(m * n).unwrap();
            lopper_cuda::csr_spmm(&g, &dw, &dx, n, &mut dy, lopper_cuda::SpmmVariant::Auto)
                .unwrap();
            let got: Vec<f32> = download_f32(&g, &dy);
            check(&got, &want, k, true, &format!("spmm bf16 {m}x{k} n={n}"));
        }
    }
}

#[test]
fn csr_spmm_t_through_device_transpose() {
    let Some(g) = device() else { return };
    for (s, &(m, k, dens)) in SHAPES.iter().enumerate() {
        let mut w = random_csr(m, k, dens, 200 + s as u64);
        let mut src = GpuCsr::upload(&g, &w).unwrap();
        let mut t = GpuCsrT::upload(&g, &w.transpose()).unwrap();
        // new values on the device only: the transpose must pick them up through refresh
        let v2: Vec<f32> = w.values().iter().map(|x| 2.0 * x - 0.5).collect();
        src.set_values(&g, &v2).unwrap();
        w = w.with_values(v2).unwrap();
        t.refresh(&g, &src).unwrap();
        for &n in &[1usize, 4, 36] {
            let x = dense(m, n, 300 + n as u64);
            let want = reference::spmm_t(&w.to_dense(), m, k, &x, n);
            let dx = g.upload(&x).unwrap();
            let mut dy = g.zeros::<f32>(k * n).unwrap();
            t.csr()
                .spmm(&g, &dx, n, &mut dy, lopper_cuda::SpmmVariant::Auto)
                .unwrap();
            check(
                &g.download(&dy).unwrap(),
                &want,
                m,
                false,
                &format!("spmm_t {m}x{k} n={n}"),
            );
            let mut y = vec![0.0f32; k * n];
            gpu::spmm_t(
                &g,
                &w,
                MatRef::new(&x, m, n).unwrap(),
                MatMut::new(&mut y, k, n).unwrap(),
            )
            .unwrap();
            check(&y, &want, m, false, "gpu::spmm_t");
        }
    }
}

#[test]
fn csr_sddmm_f32_and_bf16() {
    let Some(g) = device() else { return };
    for (s, &(m, k, dens)) in SHAPES.iter().enumerate() {
        let p = random_csr(m, k, dens, 400 + s as u64);
        for &d in &[1usize, 4, 30, 64, 130] {
            let (a, b) = (dense(m, d, 1 + d as u64), dense(k, d, 2 + d as u64));
            let want = reference::sddmm(&p, &a, &b, d);
            let got = gpu::sddmm(
                &g,
                &p,
                MatRef::new(&a, m, d).unwrap(),
                MatRef::new(&b, k, d).unwrap(),
            )
            .unwrap();
            check(&got, &want, d, false, &format!("sddmm {m}x{k} d={d}"));
            let (ar, br) = (round_bf16(&a), round_bf16(&b));
            let want = reference::sddmm(&p, &ar, &br, d);
            let dp = GpuCsr::upload(&g, &p).unwrap();
            let (da, db) = (
                g.upload(&to_bf16(&ar)).unwrap(),
                g.upload(&to_bf16(&br)).unwrap(),
            );
            let mut out = g.zeros::<f32>(p.nnz().max(1)).unwrap();
            lopper_cuda::csr_sddmm(&g, dp.dev(), &da, &db, d, &mut out).unwrap();
            let mut got = g.download(&out).unwrap();
            got.truncate(p.nnz());
            check(&got, &want, d, false, &format!("sddmm bf16 {m}x{k} d={d}"));
        }
    }
}

fn random24(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Sparse24) {
    let d = round_bf16(&dense(rows, cols, seed));
    let s = Sparse24::from_dense_prune(MatRef::new(&d, rows, cols).unwrap()).unwrap();
    (d, s)
}

#[test]
fn sparse24_spmm_matches_reference() {
    // the names the bench prints and parse reads round-trip, and every name is distinct
    for t in lopper_cuda::Spmm24Tile::ALL {
        assert_eq!(lopper_cuda::Spmm24Tile::parse(&t.name()), Some(t));
    }
    assert_eq!(lopper_cuda::Spmm24Tile::parse("n128_k64_s9"), None);
    let Some(g) = device() else { return };
    let mut failed: Vec<String> = Vec::new();
    // K = 520 and 1000 leave a partial last pipeline stage for every BK; M = 300 a partial block;
    // N = 136 and 264 partial column tiles for BN = 128 and 256; K = 2080 runs 65 K tiles deep.
    for &(m, k) in &[
        (1usize, 4usize),
        (16, 32),
        (17, 36),
        (130, 100),
        (128, 256),
        (300, 520),
        (64, 1000),
        (129, 2080),
    ] {
        let (_, s) = random24(m, k, (m * k) as u64);
        let dw = GpuSparse24::upload(&g, &s).unwrap();
        for &n in &[8usize, 16, 136, 264] {
            let x = round_bf16(&dense(k, n, n as u64));
            let want = reference::spmm_24(&s, &x, n);
            let mut y = vec![0.0f32; m * n];
            gpu::spmm_24(
                &g,
                &s,
                MatRef::new(&x, k, n).unwrap(),
                MatMut::new(&mut y, m, n).unwrap(),
            )
            .unwrap();
            check(&y, &want, k, true, &format!("spmm_24 {m}x{k} n={n}"));
            // every tile configuration of the kernel, at the device level, into a poisoned Y
            let xb = to_bf16(&x);
            let dx = g.upload(&xb).unwrap();
            for tile in lopper_cuda::Spmm24Tile::ALL {
                if !tile.runs_on(&g) {
                    continue;
                }
                let mut dy = g.upload(&vec![bf16::NAN; m * n]).unwrap();
                lopper_cuda::sparse24_spmm_with(&g, dw.dev(), &dx, n, &mut dy, tile).unwrap();
                let got: Vec<f32> = download_f32(&g, &dy);
                let what = format!("sparse24_spmm {} {m}x{k} n={n}", tile.name());
                // every tile is checked before the test fails, so one run names all the wrong ones
                if let Err(e) = std::panic::catch_unwind(|| check(&got, &want, k, true, &what)) {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| what.clone());
                    println!("FAILED tile {}: {msg}", tile.name());
                    failed.push(tile.name());
                }
            }
        }
        let dx = g.zeros::<bf16>(k * 12).unwrap();
        let mut dy = g.zeros::<bf16>(m * 12).unwrap();
        let e = dw.spmm(&g, &dx, 12, &mut dy).unwrap_err();
        assert!(e.to_string().contains("multiple of 8"), "{e}");
    }
    failed.sort();
    failed.dedup();
    assert!(
        failed.is_empty(),
        "tiles that disagree with the reference: {failed:?}"
    );
}

#[test]
fn sparse24_compress_matches_cpu_pruning() {
    let Some(g) = device() else { return };
    for &(m, k) in &[(1usize, 4usize), (16, 32), (17, 36), (130, 100), (64, 1024)] {
        let (mut d, _) = random24(m, k, 9 + (m * k) as u64);
        for x in d.iter_mut().step_by(7) {
            *x = x.signum(); // ties
        }
        let cpu = Sparse24::from_dense_prune(MatRef::new(&d, m, k).unwrap()).unwrap();
        let gpu_s = gpu::prune_24(&g, MatRef::new(&d, m, k).unwrap()).unwrap();
        assert_eq!(gpu_s, cpu, "prune {m}x{k}");
        // and the raw words equal the CPU reorder, padding included
        let wb = to_bf16(&d);
        let dev = GpuSparse24::prune(&g, &g.upload(&wb).unwrap(), m, k).unwrap();
        assert_eq!(
            dev.download(&g).unwrap(),
            Sparse24Fragments::from_sparse24(&cpu),
            "words {m}x{k}"
        );
    }
}

#[test]
fn mask_and_masked_adamw() {
    let Some(g) = device() else { return };
    let n = 1000;
    let mut r = rand::rngs::StdRng::seed_from_u64(5);
    let mask: Vec<u8> = (0..n).map(|_| r.random_bool(0.6) as u8).collect();
    let x = dense(1, n, 3);
    let mut dx = g.upload(&x).unwrap();
    let dm = g.upload(&mask).unwrap();
    lopper_cuda::mask_apply(&g, &dm, &mut dx).unwrap();
    let got = g.download(&dx).unwrap();
    for i in 0..n {
        assert_eq!(got[i], if mask[i] == 1 { x[i] } else { 0.0 });
    }
    let hp = lopper_cuda::AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let (w, gr, m0, v0) = (
        dense(1, n, 10),
        dense(1, n, 11),
        dense(1, n, 12),
        dense(1, n, 13).iter().map(|x| x.abs()).collect::<Vec<_>>(),
    );
    for masked in [false, true] {
        let (mut dw, dg, mut dm0, mut dv0) = (
            g.upload(&w).unwrap(),
            g.upload(&gr).unwrap(),
            g.upload(&m0).unwrap(),
            g.upload(&v0).unwrap(),
        );
        lopper_cuda::masked_adamw(
            &g,
            &mut dw,
            &dg,
            &mut dm0,
            &mut dv0,
            masked.then_some(&dm),
            &hp,
            3,
        )
        .unwrap();
        let (gw, gm, gv) = (
            g.download(&dw).unwrap(),
            g.download(&dm0).unwrap(),
            g.download(&dv0).unwrap(),
        );
        let (bc1, bc2) = (1.0 - 0.9f64.powi(3), 1.0 - 0.999f64.powi(3));
        for i in 0..n {
            if masked && mask[i] == 0 {
                assert_eq!((gw[i], gm[i], gv[i]), (0.0, 0.0, 0.0));
                continue;
            }
            let mi = 0.9 * m0[i] as f64 + 0.1 * gr[i] as f64;
            let vi = 0.999 * v0[i] as f64 + 0.001 * (gr[i] as f64).powi(2);
            let wi =
                w[i] as f64 - 1e-2 * ((mi / bc1) / ((vi / bc2).sqrt() + 1e-8) + 0.1 * w[i] as f64);
            assert!(
                (gw[i] as f64 - wi).abs() <= 1e-5 * (1.0 + wi.abs()),
                "adamw[{i}]: {} vs {wi}",
                gw[i]
            );
            assert!((gm[i] as f64 - mi).abs() <= 1e-6 * (1.0 + mi.abs()));
        }
    }
}

#[test]
fn cublas_gemm_f32_and_bf16() {
    let Some(g) = device() else { return };
    for &(m, n, k) in &[(1usize, 1usize, 1usize), (17, 9, 33), (128, 64, 256)] {
        let (a, b) = (round_bf16(&dense(m, k, 1)), round_bf16(&dense(k, n, 2)));
        let a_csr = Csr::from_dense(MatRef::new(&a, m, k).unwrap(), 0.0).unwrap();
        let want = reference::spmm(&a_csr.to_dense(), m, k, &b, n);
        let mut c = g.zeros::<f32>(m * n).unwrap();
        lopper_cuda::gemm(
            &g,
            m,
            n,
            k,
            &g.upload(&a).unwrap(),
            &g.upload(&b).unwrap(),
            &mut c,
        )
        .unwrap();
        // cuBLAS may use TF32 for f32 GEMM only when asked; default is full f32
        check(
            &g.download(&c).unwrap(),
            &want,
            k,
            false,
            &format!("sgemm {m}x{n}x{k}"),
        );
        let mut cb = g.zeros::<bf16>(m * n).unwrap();
        lopper_cuda::gemm(
            &g,
            m,
            n,
            k,
            &g.upload(&to_bf16(&a)).unwrap(),
            &g.upload(&to_bf16(&b)).unwrap(),
            &mut cb,
        )
        .unwrap();
        let got: Vec<f32> = download_f32(&g, &cb);
        check(&got, &want, k, true, &format!("bf16 gemm {m}x{n}x{k}"));
    }
}

#[test]
fn typed_errors_on_bad_input() {
    let Some(g) = device() else { return };
    let w = random_csr(4, 6, 0.5, 1);
    let dw = GpuCsr::upload(&g, &w).unwrap();
    let dx = g.zeros::<f32>(5 * 3).unwrap();
    let mut dy = g.zeros::<f32>(4 * 3).unwrap();
    let e = dw
        .spmm(&g, &dx, 3, &mut dy, lopper_cuda::SpmmVariant::Auto)
        .unwrap_err();
    assert!(e.to_string().contains("shape"), "{e}");
    let bad = lopper_cuda::CsrDev::<f32>::from_parts(&g, 1, 2, &[0, 1], &[5], &[1.0]);
    assert!(bad.is_err());
    assert!(lopper_cuda::Sparse24Dev::from_fragments(&g, 1, 4, &[0; 128], &[0; 16]).is_err()); // code 0b0000
}

fn dlmc_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LOPPER_DLMC") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.parent()?.join("dlmc");
    if beside.is_dir() {
        return Some(beside);
    }
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/dlmc");
    ws.is_dir().then_some(ws)
}

#[test]
fn dlmc_patterns() {
    let Some(g) = device() else { return };
    let Some(dir) = dlmc_dir() else {
        println!("no DLMC folder: generated patterns only");
        return;
    };
    let mut files = Vec::new();
    for sub in [
        "transformer/variational_dropout/0.9",
        "transformer/magnitude_pruning/0.98",
        "rn50/magnitude_pruning/0.8",
    ] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            files.extend(
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "smtx")),
            );
        }
    }
    files.sort();
    for f in files.iter().take(6) {
        let pat = lopper_sparse::io::smtx::read(f).unwrap();
        let w = pat.with_random_values(1).unwrap();
        let n = 36;
        let x = dense(w.cols(), n, 4);
        let mut y = vec![0.0f32; w.rows() * n];
        gpu::spmm(
            &g,
            &w,
            MatRef::new(&x, w.cols(), n).unwrap(),
            MatMut::new(&mut y, w.rows(), n).unwrap(),
        )
        .unwrap();
        let want = reference::spmm(&w.to_dense(), w.rows(), w.cols(), &x, n);
        check(&y, &want, w.cols(), false, &f.display().to_string());
    }
}
