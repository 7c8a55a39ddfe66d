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
    for kernel in ["spmm", "spmm_t", "sddmm"] {
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

const QUICK: [&str; 5] = ["--json", "--rounds", "1", "--min-time", "0"];

#[test]
fn shapes_that_cannot_fit_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wide.smtx");
    // 4 x 4e9: its dense copy alone is 64 GB; with N = 1e6, X is 16 PB
    std::fs::write(&p, "4, 4000000000, 5\n0 2 3 4 5\n0 2 1 3 0\n").unwrap();
    let p = p.to_str().unwrap();
    for kernel in ["spmm", "spmm_t", "sddmm"] {
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
