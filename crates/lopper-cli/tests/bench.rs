//! `lopper bench`: the harness runs the production kernels, checks them against dense, and prints the
//! documented JSON keys; bad arguments are errors with a non-zero exit.
use std::process::Command;

fn lopper(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lopper"))
        .args(args)
        .output()
        .expect("run lopper")
}

#[test]
fn single_matrix_json_has_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.smtx");
    // 4 x 6, rows of 2, 0, 3, 1 entries (an empty row included)
    std::fs::write(&p, "4, 6, 6\n0 2 2 5 6\n0 5 1 2 3 4\n").unwrap();
    for kernel in ["spmm", "spmm_t", "sddmm", "spmm_t_sddmm"] {
        let out = lopper(&[
            "bench",
            "spmm",
            "--matrix",
            p.to_str().unwrap(),
            "--n",
            "17",
            "--json",
            "--rounds",
            "1",
            "--min-time",
            "0",
            "--kernel",
            kernel,
        ]);
        assert!(
            out.status.success(),
            "{kernel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for key in [
            "rows",
            "cols",
            "nnz",
            "n",
            "sparse_ms",
            "dense_ms",
            "speedup",
        ] {
            assert!(v.get(key).is_some(), "{kernel}: missing {key} in {v}");
        }
        assert_eq!(
            (
                v["rows"].as_u64(),
                v["cols"].as_u64(),
                v["nnz"].as_u64(),
                v["n"].as_u64()
            ),
            (Some(4), Some(6), Some(6), Some(17))
        );
        assert_eq!(v["kernel"], kernel);
        // the hypervisor's share of CPU time while timing: a fraction, or null when unknown (no
        // /proc/stat, or a window too short for a clock tick, as with --min-time 0 here)
        assert!(v.get("cpu_steal").is_some(), "{kernel}: {v}");
        if let Some(f) = v["cpu_steal"].as_f64() {
            assert!((0.0..=1.0).contains(&f), "{kernel}: cpu_steal {f}");
        } else {
            assert!(v["cpu_steal"].is_null(), "{kernel}: {}", v["cpu_steal"]);
        }
    }
}

#[test]
fn spmm24_json_and_bad_arguments() {
    let out = lopper(&[
        "bench",
        "spmm24",
        "--m",
        "8",
        "--k",
        "16",
        "--n",
        "5",
        "--json",
        "--rounds",
        "1",
        "--min-time",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nnz"].as_u64(), Some(64));

    let bad = lopper(&["bench", "spmm24", "--k", "6"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("multiple of 4"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.smtx");
    std::fs::write(&p, "2, 3, 2\n0 1\n0\n").unwrap();
    let bad = lopper(&["bench", "spmm", "--matrix", p.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad.smtx:2"));
}

/// A failed run: not a success, no panic or abort, and stderr mentions every piece of `want`.
fn fails_naming(args: &[&str], want: &[&str]) {
    let out = lopper(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(c) if c != 0 && c != 101),
        "{args:?}: status {:?}, stderr {err}",
        out.status
    );
    for w in want {
        assert!(err.contains(w), "{args:?}: stderr lacks {w:?}: {err}");
    }
}

/// The rows of a successful `--json` run (one object or an array).
fn json_rows(args: &[&str]) -> Vec<serde_json::Value> {
    let out = lopper(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        serde_json::Value::Array(v) => v,
        v => vec![v],
    }
}

const QUICK: [&str; 5] = ["--json", "--rounds", "1", "--min-time", "0"];

#[test]
fn shapes_that_cannot_fit_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wide.smtx");
    // 4 x 4e9: its dense copy alone is 64 GB; with N = 1e6, X is 16 PB
    std::fs::write(&p, "4, 4000000000, 5\n0 2 3 4 5\n0 2 1 3 0\n").unwrap();
    let p = p.to_str().unwrap();
    for kernel in ["spmm", "spmm_t", "sddmm", "spmm_t_sddmm"] {
        let args = ["bench", "spmm", "--matrix", p, "--kernel", kernel];
        let big = [&args[..], &["--n", "1000000"], &QUICK[..]].concat();
        fails_naming(&big, &["wide", "4x4000000000", "N = 1000000", "bytes"]);
        let over = [&args[..], &["--n", "100000000000"], &QUICK[..]].concat();
        fails_naming(&over, &["4x4000000000", "overflow"]);
    }
    let s24 = |m: &'static str, k: &'static str, n: &'static str| {
        let a = ["bench", "spmm24", "--m", m, "--k", k, "--n", n];
        [&a[..], &QUICK[..]].concat()
    };
    fails_naming(
        &s24("1000000", "1000000", "512"),
        &["1000000x1000000", "bytes"],
    );
    fails_naming(
        &s24("18446744073709551615", "4", "4"),
        &["18446744073709551615x4", "overflow"],
    );
    fails_naming(
        &s24("4294967296", "4294967296", "4"),
        &["4294967296x4294967296", "overflow"],
    );
}

#[test]
fn nonsense_arguments_name_the_option() {
    let s24 = ["bench", "spmm24", "--m", "8", "--k", "16", "--n", "4"];
    let with = |extra: &[&'static str]| [&s24[..], &["--json"], extra].concat();
    fails_naming(&with(&["--rounds", "0"]), &["--rounds"]);
    for t in [
        "--min-time=NaN",
        "--min-time=inf",
        "--min-time=1e300",
        "--min-time=-1",
    ] {
        fails_naming(&with(&["--rounds", "1", t]), &["--min-time"]);
    }
    fails_naming(
        &with(&["--rounds", "1", "--threads", "100000"]),
        &["--threads"],
    );
    for opt in ["--m", "--k", "--n"] {
        let mut a = [&s24[..], &QUICK[..]].concat();
        let i = a.iter().position(|x| x == &opt).unwrap();
        a[i + 1] = "0";
        fails_naming(&a, &[opt]);
    }
    fails_naming(&["bench", "spmm", "--n", "0", "--rounds", "1"], &["--n"]);
}

#[test]
fn matrix_market_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mm = "%%MatrixMarket matrix coordinate real general\n% c\n3 5 4\n1 1 2.5\n1 5 1\n3 2 -1\n2 3 4\n";
    // by extension, and by the header under another extension
    for name in ["m.mtx", "m.txt"] {
        let p = dir.path().join(name);
        std::fs::write(&p, mm).unwrap();
        let args = ["bench", "spmm", "--matrix", p.to_str().unwrap(), "--n", "3"];
        let r = json_rows(&[&args[..], &QUICK[..]].concat());
        assert_eq!(r.len(), 1);
        assert_eq!(
            (
                r[0]["rows"].as_u64(),
                r[0]["cols"].as_u64(),
                r[0]["nnz"].as_u64()
            ),
            (Some(3), Some(5), Some(4)),
            "{name}"
        );
    }
    let p = dir.path().join("bad.mtx");
    std::fs::write(
        &p,
        "%%MatrixMarket matrix coordinate real general\n2 2 1\n3 1 1\n",
    )
    .unwrap();
    fails_naming(
        &["bench", "spmm", "--matrix", p.to_str().unwrap()],
        &["bad.mtx:3:", "row 3 out of range"],
    );
}

#[test]
fn matrices_folder_filters_before_parsing_and_skips_symlinked_folders() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("good.smtx"), "2, 3, 2\n0 1 2\n0 2\n").unwrap();
    std::fs::write(
        sub.join("other.mtx"),
        "%%MatrixMarket matrix coordinate pattern general\n2 2 1\n1 2\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.smtx"), "2, 3, 2\n0 1\n0\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let args = |filter: &'static str| {
        let a = [
            "bench",
            "spmm",
            "--matrices",
            d,
            "--filter",
            filter,
            "--n",
            "2",
        ];
        [&a[..], &QUICK[..]].concat()
    };
    // the malformed file is excluded by the filter, so it is never read
    let r = json_rows(&args("good"));
    assert_eq!(r.len(), 1);
    assert!(r[0]["matrix"].as_str().unwrap().ends_with("sub/good"));
    // .mtx files are found too
    assert_eq!(json_rows(&args("other"))[0]["cols"].as_u64(), Some(2));
    fails_naming(&args("broken"), &["broken.smtx:2:"]);
    #[cfg(unix)]
    {
        // a symlink back up would loop; a symlink to a file counts once
        std::os::unix::fs::symlink("..", sub.join("up")).unwrap();
        std::os::unix::fs::symlink(sub.join("good.smtx"), dir.path().join("link.smtx")).unwrap();
        let mut names: Vec<String> = json_rows(&args("good"))
            .iter()
            .chain(json_rows(&args("link")).iter())
            .map(|r| r["matrix"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names[0].ends_with("/link") && names[1].ends_with("sub/good"),
            "{names:?}"
        );
    }
}

#[test]
fn a_matrix_with_no_stored_entry_is_not_benchmarked() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.smtx");
    std::fs::write(&f, "4, 4, 0\n0 0 0 0 0\n\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lopper"))
        .args([
            "bench",
            "spmm",
            "--matrix",
            f.to_str().unwrap(),
            "--n",
            "4",
            "--rounds",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("empty (4x4, 0 non-zeros): no stored entry, nothing to benchmark"),
        "{err}"
    );
}

#[test]
fn peer_figures_are_set_beside_the_rows_they_match() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("transformer/magnitude_pruning/0.9");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("layer.smtx"), "4, 6, 6\n0 2 2 5 6\n0 5 1 2 3 4\n").unwrap();
    // one torch_csr row for this matrix at N = 16, a row of another library, another section,
    // and a torch_csr row of a matrix not benchmarked
    let peer = dir.path().join("peer.json");
    let m = "transformer/magnitude_pruning/0.9/layer.smtx";
    std::fs::write(
        &peer,
        serde_json::json!({"rows": [
            {"section": "spmm", "lib": "torch_csr", "matrix": m, "n": 16, "gflops": 2.0},
            {"section": "spmm", "lib": "scipy_csr", "matrix": m, "n": 32, "gflops": 1.0},
            {"section": "gemm", "lib": "torch", "shape": "1x1x1", "gflops": 9.0},
            {"section": "spmm", "lib": "torch_csr", "matrix": "x/y/0.5/other.smtx", "n": 16, "gflops": 3.0},
        ]})
        .to_string(),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let p = peer.to_str().unwrap();
    let base = [
        "bench",
        "spmm",
        "--matrices",
        d,
        "--n",
        "16,32",
        "--peer",
        p,
    ];
    let rows = json_rows(&[&base[..], &QUICK[..]].concat());
    assert_eq!(rows.len(), 2);
    for r in &rows {
        if r["n"] == 16 {
            assert_eq!(r["peer_gflops"], 2.0, "{r}");
            let want = r["effective_gflops"].as_f64().unwrap() / 2.0;
            assert!((r["vs_peer"].as_f64().unwrap() - want).abs() < 1e-9, "{r}");
        } else {
            // no torch_csr row at N = 32: no peer keys at all
            assert!(
                r.get("peer_gflops").is_none() && r.get("vs_peer").is_none(),
                "{r}"
            );
        }
    }
    // the table: the two peer columns and the geometric mean over the matched rows
    let out = lopper(&[&base[..], &["--rounds", "1", "--min-time", "0"][..]].concat());
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("peer GF/s") && t.contains("vs peer"), "{t}");
    assert!(
        t.contains("over torch_csr") && t.contains("over 1 of 2 rows"),
        "{t}"
    );
    // scipy's row matches at N = 32 when asked for
    let mut args = vec!["bench", "spmm", "--matrices", d, "--n", "32", "--peer", p];
    args.extend(["--peer-lib", "scipy_csr"]);
    args.extend(QUICK);
    assert_eq!(json_rows(&args)[0]["peer_gflops"], 1.0);
    // a file that is not JSON, and a row of the library without its figures, fail before timing
    std::fs::write(&peer, "not json").unwrap();
    fails_naming(
        &["bench", "spmm", "--matrices", d, "--peer", p],
        &["--peer", "peer.json", "not JSON"],
    );
    std::fs::write(
        &peer,
        r#"{"rows": [{"section": "spmm", "lib": "torch_csr", "matrix": "a", "n": 16}]}"#,
    )
    .unwrap();
    fails_naming(
        &["bench", "spmm", "--matrices", d, "--peer", p],
        &["--peer", "row 0 (torch_csr)", "positive gflops"],
    );
    // --peer-lib needs --peer
    fails_naming(
        &["bench", "spmm", "--matrices", d, "--peer-lib", "x"],
        &["--peer"],
    );
}
