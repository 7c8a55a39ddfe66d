//! `lopper compress` end to end: the built binary on generated safetensors files.
use lopper_lowrank::{Precision, optimal_rel_error, rel_frobenius_error, svd};
use lopper_tensor::io::safetensors::{self as st, Entry, RawDType, SafetensorsFile};
use lopper_tensor::{DType, Tensor};
use std::path::Path;
use std::process::{Command, Output};

fn lopper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lopper"))
        .args(args)
        .output()
        .expect("run lopper")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A checkpoint with two 2-D weights (f32 and bf16), a bias, a 3-D kernel and an i64 tensor.
fn checkpoint(path: &Path) -> SafetensorsFile {
    let mut f = SafetensorsFile::default();
    f.push("layer.0.weight", Tensor::randn(&[24, 16], 1.0, 1));
    f.push("layer.0.bias", Tensor::randn(&[24], 1.0, 2));
    f.push(
        "layer.1.weight",
        Tensor::randn(&[16, 20], 1.0, 3).to_dtype(DType::BF16),
    );
    f.push("conv.weight", Tensor::randn(&[4, 3, 3], 1.0, 4));
    f.entries.push((
        "ids".into(),
        Entry::Raw {
            dtype: RawDType::I64,
            shape: vec![2],
            bytes: vec![1; 16],
        },
    ));
    f.metadata.insert("format".into(), "pt".into());
    st::write(path, &f).unwrap();
    // as stored (safetensors orders tensors by dtype alignment, then name)
    st::read(path).unwrap()
}

#[test]
fn svd_rank_dense_is_the_eckart_young_optimum() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    let f = checkpoint(&inp);
    let o = lopper(&[
        "compress",
        s(&inp),
        "-o",
        s(&out),
        "--method",
        "svd",
        "--rank",
        "5",
        "--exclude",
        "layer\\.1",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("layer.0.weight") && stdout.contains("rank 5"),
        "{stdout}"
    );
    assert!(stdout.contains("params 384 -> 200"), "{stdout}");
    assert!(
        !stdout.contains("layer.1.weight"),
        "excluded tensor was compressed: {stdout}"
    );
    let g = st::read(&out).unwrap();
    // same names in the same order, same dtypes; everything else copied bit for bit
    let names = |f: &SafetensorsFile| f.entries.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&f), names(&g));
    assert_eq!(g.metadata, f.metadata);
    for (n, e) in &f.entries {
        if n != "layer.0.weight" {
            assert_eq!(
                Some(e),
                g.entries.iter().find(|(m, _)| m == n).map(|(_, e)| e),
                "{n}"
            );
        }
    }
    let w = f.tensor("layer.0.weight").unwrap();
    let w2 = g.tensor("layer.0.weight").unwrap();
    assert_eq!((w2.shape(), w2.dtype()), (w.shape(), DType::F32));
    let full = svd(w.mat("t").unwrap(), Precision::F64, lopper_tensor::Par::Seq).unwrap();
    let want = optimal_rel_error(&full.s, 5);
    let got = rel_frobenius_error(w.as_f32().unwrap(), w2.as_f32().unwrap()).unwrap();
    assert!(
        (got - want).abs() <= 1e-4 * want,
        "error {got} vs optimum {want}"
    );
    // the printed error is the measured one
    assert!(
        stdout.contains(&format!("{got:.6e}")),
        "{stdout} lacks {got:.6e}"
    );
}

#[test]
fn rsvd_energy_factors_keeps_dtype_and_writes_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    let f = checkpoint(&inp);
    let o = lopper(&[
        "compress",
        s(&inp),
        "-o",
        s(&out),
        "--method",
        "rsvd",
        "--energy",
        "0.8",
        "--include",
        "weight$",
        "--store",
        "factors",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = st::read(&out).unwrap();
    assert!(g.tensor("layer.0.weight").is_none() && g.tensor("layer.1.weight").is_none());
    assert!(
        g.tensor("conv.weight").is_some(),
        "3-D tensors are copied through"
    );
    let manifest: serde_json::Value = serde_json::from_str(&g.metadata["lopper.lowrank"]).unwrap();
    for (name, dtype) in [
        ("layer.0.weight", DType::F32),
        ("layer.1.weight", DType::BF16),
    ] {
        let u = g.tensor(&format!("{name}.lowrank_u")).unwrap();
        let v = g.tensor(&format!("{name}.lowrank_v")).unwrap();
        assert_eq!((u.dtype(), v.dtype()), (dtype, dtype));
        let r = u.shape()[1];
        assert_eq!(manifest[name]["rank"], r);
        let w = f.tensor(name).unwrap();
        let (m, n) = w.dims2("t").unwrap();
        assert_eq!((u.shape(), v.shape()), (&[m, r][..], &[r, n][..]));
        let rec = lopper_lowrank::LowRank::from_tensors(u, v)
            .unwrap()
            .to_dense(lopper_tensor::Par::Seq)
            .unwrap();
        let e = rel_frobenius_error(&w.to_f32_vec(), &rec).unwrap();
        // 80% of the energy kept (bf16 factors round at ~4e-3 relative)
        assert!(e * e <= 0.2 + 1e-2, "{name}: error {e}");
    }
}

#[test]
fn ratio_bounds_the_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    checkpoint(&inp);
    let o = lopper(&[
        "compress",
        s(&inp),
        "-o",
        s(&out),
        "--method",
        "rsvd",
        "--ratio",
        "0.25",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 24x16: r <= 0.25 * 384 / 40 -> 2 ; 16x20: r <= 0.25 * 320 / 36 -> 2
    assert!(
        stdout.contains("layer.0.weight  24x16  rank 2 "),
        "{stdout}"
    );
    assert!(
        stdout.contains("layer.1.weight  16x20  rank 2 "),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 tensors compressed: params 704 -> 152"),
        "{stdout}"
    );
}

#[test]
fn bad_input_fails_cleanly_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("in.safetensors");
    checkpoint(&good);
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a safetensors file").unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 40]).unwrap();
    let nan = dir.path().join("nan.safetensors");
    let mut f = SafetensorsFile::default();
    let mut v = Tensor::randn(&[8, 16], 1.0, 1).to_f32_vec();
    v[3] = f32::NAN;
    f.push("h.0.fc.weight", Tensor::from_f32(&[8, 16], v).unwrap());
    st::write(&nan, &f).unwrap();
    let out = dir.path().join("out.safetensors");
    let missing = dir.path().join("missing.safetensors");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![s(&garbage), "--rank", "2"], "garbage.safetensors"),
        (
            vec![s(&nan), "--rank", "2"],
            "h.0.fc.weight (8x16): 1 NaN or infinite values",
        ),
        (
            vec![
                s(&good),
                "--rank",
                "2",
                "--method",
                "rsvd",
                "--power-iters",
                "1000000",
            ],
            "--power-iters 1000000: at most 64",
        ),
        (vec![s(&truncated), "--rank", "2"], "truncated.safetensors"),
        (vec![s(&missing), "--rank", "2"], "missing.safetensors"),
        (
            vec![s(&good), "--rank", "0"],
            "--rank 0: rank must be at least 1",
        ),
        (
            vec![s(&good), "--rank", "2", "--seed", "3"],
            "--seed applies to --method rsvd only",
        ),
        (
            vec![s(&good), "--rank", "2", "--oversample", "1000000000"],
            "--oversample applies to --method rsvd only",
        ),
        (vec![s(&good), "--energy", "1.5"], "energy fraction"),
        (vec![s(&good), "--ratio", "-0.5"], "ratio"),
        (
            vec![s(&good), "--rank", "2", "--include", "nothing_matches_this"],
            "no 2-D f32, f16 or bf16 tensor matches",
        ),
        (
            vec![s(&good), "--rank", "2", "--include", "(unclosed"],
            "--include",
        ),
        (vec![s(&good)], "--rank"),
        (
            vec![s(&good), "--rank", "2", "--energy", "0.5"],
            "cannot be used with",
        ),
        (
            vec![s(&good), "--rank", "2", "--method", "qr"],
            "invalid value",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["compress", "-o", s(&out)];
        all.extend(args.iter().copied());
        let o = lopper(&all);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr lacks {needle:?}: {stderr}"
        );
        assert!(!out.exists(), "{args:?} left {}", out.display());
        // no temporary file left behind either
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 4, "{args:?}: {left:?}");
    }
}

#[test]
fn a_compressed_store_is_expanded_first() {
    // prune to a compressed store (CSR tensors), then compress it: the pruned weights are found
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("in.safetensors");
    checkpoint(&good);
    let store = dir.path().join("store.safetensors");
    let o = lopper(&[
        "prune",
        s(&good),
        "-o",
        s(&store),
        "--sparsity",
        "0.7",
        "--store",
        "compressed",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.path().join("out.safetensors");
    let o = lopper(&[
        "compress",
        s(&store),
        "-o",
        s(&out),
        "--rank",
        "2",
        "--include",
        "layer.0.weight",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = st::read(&out).unwrap();
    let t = f
        .tensor("layer.0.weight")
        .expect("the CSR-stored weight, compressed");
    assert_eq!(t.shape(), &[24, 16]);
    // no CSR parts and no store manifest in the output
    assert!(f.entries.iter().all(|(n, _)| !n.contains(".csr_")));
    // a factor store is not compressed again; pruning one drops its (now stale) manifest
    let factors = dir.path().join("factors.safetensors");
    let o = lopper(&[
        "compress",
        s(&good),
        "-o",
        s(&factors),
        "--rank",
        "2",
        "--store",
        "factors",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = dir.path().join("again.safetensors");
    let o = lopper(&["compress", s(&factors), "-o", s(&again), "--rank", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("already a low-rank factor store"),
        "{err}"
    );
    assert!(!again.exists());
    let pruned = dir.path().join("pruned.safetensors");
    let o = lopper(&["prune", s(&factors), "-o", s(&pruned), "--sparsity", "0.5"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("manifest of the input's low-rank factors is dropped"),
        "{out}"
    );
    assert!(
        !st::read(&pruned)
            .unwrap()
            .metadata
            .contains_key("lopper.lowrank")
    );
}

#[test]
fn negative_numbers_are_refused_naming_their_argument() {
    // clap took "-1" for an unknown flag: "unexpected argument '-1' found" named no argument
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    checkpoint(&inp);
    let cases: [(Vec<&str>, &str); 6] = [
        (
            vec!["compress", s(&inp), "-o", s(&out), "--rank", "-1"],
            "'--rank <RANK>'",
        ),
        (
            vec!["compress", s(&inp), "-o", s(&out), "--energy", "-0.5"],
            "--energy -0.5: energy fraction must be in (0, 1]",
        ),
        (
            vec![
                "prune",
                s(&inp),
                "-o",
                s(&out),
                "--sparsity",
                "0.5",
                "--scope",
                "global",
                "--min-density",
                "-1",
            ],
            "min density: -1 is outside [0, 1]",
        ),
        (
            vec!["train", "--recipe", "r.toml", "--steps", "-1"],
            "'--steps <STEPS>'",
        ),
        (
            vec!["train", "--recipe", "r.toml", "--threads", "-2"],
            "'--threads <THREADS>'",
        ),
        (vec!["bench", "spmm24", "--m", "-4"], "'--m <M>'"),
    ];
    for (args, want) in cases {
        let o = lopper(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

#[test]
fn rsvd_factors_zero_and_exactly_low_rank_matrices() {
    // the power iterations' LU divided 0 by 0 on an exactly rank-deficient sketch: "SVD ... did
    // not converge (NaN or Inf in the input?)" for finite weights
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    let u: Vec<f32> = (1..=8).map(|x| x as f32).collect();
    let rank1: Vec<f32> = u
        .iter()
        .flat_map(|a| u.iter().map(move |b| a * b))
        .collect();
    let mut f = SafetensorsFile::default();
    f.push(
        "zero.weight",
        Tensor::from_f32(&[8, 8], vec![0.0; 64]).unwrap(),
    );
    f.push(
        "rank1.weight",
        Tensor::from_f32(&[8, 8], rank1.clone()).unwrap(),
    );
    st::write(&inp, &f).unwrap();
    let o = lopper(&[
        "compress",
        s(&inp),
        "-o",
        s(&out),
        "--method",
        "rsvd",
        "--rank",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let g = st::read(&out).unwrap();
    for (name, e) in &g.entries {
        let Entry::Tensor(t) = e else {
            panic!("{name}")
        };
        let got = t.to_f32_vec();
        let want = if name == "zero.weight" {
            vec![0.0; 64]
        } else {
            rank1.clone()
        };
        let err = if name == "zero.weight" {
            got.iter().map(|x| x.abs()).fold(0.0, f32::max) as f64
        } else {
            rel_frobenius_error(&want, &got).unwrap()
        };
        assert!(err < 1e-5, "{name}: error {err}");
    }
}
