//! `lopper prune` and `lopper inspect` on generated safetensors files, checked with independent
//! (numpy-like) logic: sort by |w| descending, ties to the lower flat index, keep round((1-s)*n).
use lopper_tensor::io::safetensors::{self as st, Entry, RawDType, SafetensorsFile};
use lopper_tensor::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lopper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lopper"))
        .args(args)
        .output()
        .expect("run lopper")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A small GPT-like checkpoint with ties in the first weight.
fn checkpoint(dir: &Path) -> PathBuf {
    let mut f = SafetensorsFile::default();
    let mut w0 = Tensor::randn(&[8, 12], 1.0, 1).to_f32_vec();
    for x in w0.iter_mut().step_by(5) {
        *x = 0.75; // ties
    }
    f.push("h.0.attn.weight", Tensor::from_f32(&[8, 12], w0).unwrap());
    f.push("h.0.attn.bias", Tensor::randn(&[8], 1.0, 2));
    f.push(
        "h.0.mlp.weight",
        Tensor::randn(&[16, 8], 0.1, 3).to_dtype(DType::F16),
    );
    f.push(
        "h.1.mlp.weight",
        Tensor::randn(&[4, 16], 3.0, 4).to_dtype(DType::BF16),
    );
    f.push("wte.weight", Tensor::randn(&[10, 8], 1.0, 5));
    f.entries.push((
        "step".into(),
        Entry::Raw {
            dtype: RawDType::I64,
            shape: vec![1],
            bytes: 42i64.to_le_bytes().to_vec(),
        },
    ));
    f.metadata.insert("format".into(), "pt".into());
    let path = dir.join("model.safetensors");
    st::write(&path, &f).unwrap();
    path
}

/// numpy: order = lexsort((arange(n), -abs(w))); keep order[:round((1-s)*n)].
fn expected_keep(w: &[f32], k: usize) -> Vec<bool> {
    let mut idx: Vec<usize> = (0..w.len()).collect();
    idx.sort_by(|&a, &b| w[b].abs().partial_cmp(&w[a].abs()).unwrap().then(a.cmp(&b)));
    let mut keep = vec![false; w.len()];
    for &i in &idx[..k] {
        keep[i] = true;
    }
    keep
}

fn py_round(x: f64) -> usize {
    x.round_ties_even() as usize
}

#[test]
fn unstructured_per_layer_is_exact_and_keeps_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let input = checkpoint(dir.path());
    let out = dir.path().join("out.safetensors");
    let o = lopper(&["prune", p(&input), "-o", p(&out), "--sparsity", "0.3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("h.0.attn.weight") && stdout.contains("total (3 tensors)"),
        "{stdout}"
    );
    let a = st::read(&input).unwrap();
    let b = st::read(&out).unwrap();
    assert_eq!(a.metadata, b.metadata);
    for ((na, ea), (nb, eb)) in a.entries.iter().zip(&b.entries) {
        assert_eq!(na, nb);
        match (ea, eb) {
            (Entry::Tensor(ta), Entry::Tensor(tb)) => {
                assert_eq!(ta.dtype(), tb.dtype(), "{na}");
                assert_eq!(ta.shape(), tb.shape());
                let (wa, wb) = (ta.to_f32_vec(), tb.to_f32_vec());
                if ta.rank() < 2 || na.starts_with("wte") {
                    assert_eq!(ta, tb, "{na} must be untouched");
                    continue;
                }
                let keep = expected_keep(&wa, py_round(0.7 * wa.len() as f64));
                for i in 0..wa.len() {
                    assert_eq!(wb[i], if keep[i] { wa[i] } else { 0.0 }, "{na}[{i}]");
                }
            }
            _ => assert_eq!(ea, eb, "raw entries pass through"),
        }
    }
}

#[test]
fn two_four_and_global_and_compressed_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = checkpoint(dir.path());
    let a = st::read(&input).unwrap();
    // 2:4: the 2 largest |w| of each group of 4 along the last axis
    let out = dir.path().join("p24.safetensors");
    let o = lopper(&[
        "prune",
        p(&input),
        "-o",
        p(&out),
        "--pattern",
        "2:4",
        "--sparsity",
        "0.5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = st::read(&out).unwrap();
    for name in ["h.0.attn.weight", "h.0.mlp.weight", "h.1.mlp.weight"] {
        let (wa, wb) = (
            a.tensor(name).unwrap().to_f32_vec(),
            b.tensor(name).unwrap().to_f32_vec(),
        );
        for (ga, gb) in wa.chunks(4).zip(wb.chunks(4)) {
            let keep = expected_keep(ga, 2);
            for i in 0..4 {
                assert_eq!(gb[i], if keep[i] { ga[i] } else { 0.0 });
            }
        }
    }
    // inspect sees 2:4 everywhere it was applied
    let o = lopper(&["inspect", p(&out), "--json"]);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["valid_2_4"], 3);
    // permutation report: kept fraction with and without an ASP-style channel permutation
    let o = lopper(&[
        "prune",
        p(&input),
        "-o",
        p(&out),
        "--pattern",
        "2:4",
        "--permute-report",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let perms = j["permutations"].as_array().unwrap();
    assert_eq!(perms.len(), 3);
    for q in perms {
        let (a, b) = (
            q["kept_identity"].as_f64().unwrap(),
            q["kept_permuted"].as_f64().unwrap(),
        );
        assert!(a > 0.5 && b >= a && b <= 1.0, "{q}");
    }

    // global: all included tensors ranked together
    let out = dir.path().join("g.safetensors");
    let o = lopper(&[
        "prune",
        p(&input),
        "-o",
        p(&out),
        "--sparsity",
        "0.6",
        "--scope",
        "global",
        "--include",
        "mlp",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = st::read(&out).unwrap();
    let names = ["h.0.mlp.weight", "h.1.mlp.weight"];
    let all: Vec<f32> = names
        .iter()
        .flat_map(|n| a.tensor(n).unwrap().to_f32_vec())
        .collect();
    let keep = expected_keep(&all, py_round(0.4 * all.len() as f64));
    let got: Vec<f32> = names
        .iter()
        .flat_map(|n| b.tensor(n).unwrap().to_f32_vec())
        .collect();
    for i in 0..all.len() {
        assert_eq!(got[i], if keep[i] { all[i] } else { 0.0 });
    }
    assert_eq!(b.tensor("h.0.attn.weight"), a.tensor("h.0.attn.weight"));

    // compressed store: reads back exactly as the dense output
    for pattern in ["unstructured", "2:4"] {
        let dense = dir.path().join("d.safetensors");
        let comp = dir.path().join("c.safetensors");
        let args = ["--sparsity", "0.5", "--pattern", pattern];
        assert!(
            lopper(&[&["prune", p(&input), "-o", p(&dense)][..], &args].concat())
                .status
                .success()
        );
        let o = lopper(
            &[
                &["prune", p(&input), "-o", p(&comp), "--store", "compressed"][..],
                &args,
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let c = st::read(&comp).unwrap();
        assert!(c.metadata.contains_key("lopper"));
        assert_eq!(
            lopper_prune::store::load(&comp).unwrap(),
            st::read(&dense).unwrap()
        );
        let o = lopper(&["inspect", p(&comp)]);
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && s.contains("compressed store"), "{s}");
        assert!(
            s.contains(if pattern == "2:4" { " nm" } else { " csr" }),
            "{s}"
        );
    }
}

/// Every bad input: non-zero exit, a message naming the problem, no output file, no temp file.
#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let input = checkpoint(dir.path());
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a safetensors file").unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&input).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 17]).unwrap();
    let odd = dir.path().join("odd.safetensors");
    let mut f = SafetensorsFile::default();
    f.push("layer.weight", Tensor::randn(&[4, 6], 1.0, 1));
    st::write(&odd, &f).unwrap();
    let nan = dir.path().join("nan.safetensors");
    let mut f = SafetensorsFile::default();
    let mut v = Tensor::randn(&[4, 8], 1.0, 1).to_f32_vec();
    v[5] = f32::NAN;
    v[9] = f32::INFINITY;
    f.push("layer.weight", Tensor::from_f32(&[4, 8], v).unwrap());
    st::write(&nan, &f).unwrap();
    let ints = dir.path().join("ints.safetensors");
    let mut f = SafetensorsFile::default();
    f.entries.push((
        "w".into(),
        Entry::Raw {
            dtype: RawDType::I64,
            shape: vec![2],
            bytes: vec![0; 16],
        },
    ));
    st::write(&ints, &f).unwrap();
    let out = dir.path().join("never.safetensors");
    let missing = dir.path().join("missing.safetensors");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![p(&garbage), "--sparsity", "0.5"],
            "garbage.safetensors",
        ),
        (
            vec![p(&truncated), "--sparsity", "0.5"],
            "truncated.safetensors",
        ),
        (
            vec![p(&missing), "--sparsity", "0.5"],
            "missing.safetensors",
        ),
        (vec![p(&input), "--sparsity", "1.0"], "sparsity"),
        (vec![p(&input), "--sparsity", "-0.1"], "sparsity"),
        (vec![p(&input), "--sparsity", "NaN"], "sparsity"),
        (vec![p(&input)], "needs --sparsity"),
        (vec![p(&odd), "--pattern", "2:4"], "multiple of 4"),
        (
            vec![p(&input), "--sparsity", "0.3", "--pattern", "2:4"],
            "does not match pattern",
        ),
        (
            vec![p(&input), "--sparsity", "0.5", "--pattern", "5:4"],
            "N:M",
        ),
        (
            vec![p(&input), "--sparsity", "0.5", "--include", "no_such_layer"],
            "matches no tensor",
        ),
        (
            vec![p(&input), "--sparsity", "0.5", "--exclude", "zzz"],
            "matches no tensor",
        ),
        (
            vec![p(&input), "--sparsity", "0.5", "--include", "("],
            "bad regex",
        ),
        (
            vec![p(&input), "--sparsity", "0.5", "--include", "bias"],
            "nothing to prune",
        ),
        (
            vec![p(&input), "--sparsity", "0.5", "--method", "movement"],
            "magnitude and random",
        ),
        (
            vec![p(&input), "--sparsity", "0.5", "--seed", "7"],
            "--seed applies to --method random only",
        ),
        (
            vec![p(&input), "--sparsity", "0.5", "--min-density", "0.1"],
            "--min-density 0.1 applies to --scope global only",
        ),
        (
            vec![p(&input), "--pattern", "2:4", "--scope", "global"],
            "--scope global with --pattern 2:4",
        ),
        (
            vec![p(&input), "--sparsity", "0.5", "--permute-report"],
            "--permute-report applies to N:M patterns only (--pattern unstructured",
        ),
        (
            vec![p(&ints), "--sparsity", "0.5"],
            "no f32, f16 or bf16 tensor among the file's 1 tensors (other dtypes pass through unpruned: w (I64))",
        ),
        (
            vec![p(&nan), "--sparsity", "0.5"],
            "\"layer.weight\" of shape [4, 8]: 2 NaN or infinite values (the first at flat index 5)",
        ),
        (
            vec![
                p(&input),
                "--sparsity",
                "0.5",
                "--pattern",
                "rows",
                "--scope",
                "global",
            ],
            "global scope",
        ),
    ];
    for (args, needle) in cases {
        let o = lopper(&[&["prune"][..], &args, &["-o", p(&out)]].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left an output");
    }
    let o = lopper(&["inspect", p(&garbage)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("garbage"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_closed_stdout_ends_inspect_quietly() {
    // `lopper inspect F | head -1`: the reader goes away after its first line. The output (one line
    // per tensor, ~200 KB) is larger than a pipe's buffer, so lopper writes into the closed pipe.
    let dir = tempfile::tempdir().unwrap();
    let mut f = SafetensorsFile::default();
    for i in 0..3000 {
        f.push(format!("layer.{i}.weight"), Tensor::randn(&[2, 2], 1.0, i));
    }
    let path = dir.path().join("many.safetensors");
    st::write(&path, &f).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lopper"))
        .args(["inspect", p(&path)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take()); // close the pipe
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert_ne!(out.status.code(), Some(101), "stderr: {err}");
}

#[test]
fn notes_say_what_the_numbers_hide() {
    let dir = tempfile::tempdir().unwrap();
    let input = checkpoint(dir.path());
    let out = dir.path().join("g.safetensors");
    // global scope with a floor above the budget: the achieved sparsity is said
    let o = lopper(&[
        "prune",
        p(&input),
        "-o",
        p(&out),
        "--sparsity",
        "0.5",
        "--scope",
        "global",
        "--min-density",
        "0.9",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("note: the pruned tensors reach sparsity 0.0938, not 0.5000"),
        "{text}"
    );
    assert!(text.contains("(--min-density 0.9 keeps more)"), "{text}");
    // inspect notes NaN and infinite values
    let nan = dir.path().join("nan.safetensors");
    let mut f = SafetensorsFile::default();
    f.push("w", Tensor::from_f32(&[2, 2], vec![f32::NAN; 4]).unwrap());
    st::write(&nan, &f).unwrap();
    let o = lopper(&["inspect", p(&nan)]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("note: w holds 4 NaN or infinite values (of 4)"),
        "{text}"
    );
}

#[test]
fn inputs_that_are_not_regular_files_are_refused_by_argument() {
    // a FIFO waited for a writer forever (and /dev/zero would never end); a folder said only
    // "Is a directory"
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let fifo = dir.path().join("fifo.safetensors");
    let made = Command::new("mkfifo").arg(&fifo).status();
    let mut inputs = vec![(dir.path().to_path_buf(), "is a folder, not a file")];
    if made.is_ok_and(|s| s.success()) {
        inputs.push((fifo, "is not a regular file"));
    }
    for (input, want) in &inputs {
        let runs: [(Vec<&str>, &str); 4] = [
            (vec!["inspect", p(input)], "FILE"),
            (
                vec!["prune", p(input), "-o", p(&out), "--sparsity", "0.5"],
                "INPUT",
            ),
            (
                vec!["compress", p(input), "-o", p(&out), "--rank", "2"],
                "INPUT",
            ),
            (
                vec!["bench", "spmm", "--matrix", p(input), "--rounds", "1"],
                "--matrix",
            ),
        ];
        for (args, arg) in runs {
            let o = lopper(&args);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{args:?} succeeded");
            assert!(
                stderr.contains(&format!("{arg} {}: {want}", p(input))),
                "{args:?}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert!(!out.exists(), "{args:?} wrote {}", out.display());
        }
    }
}
