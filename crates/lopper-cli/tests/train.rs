//! `lopper train`, `compare` and `demo` end to end: the built binary on tiny recipes written here
//! (a 1-layer GPT of width 16 on the embedded text, an MLP on the embedded digits), the report
//! files' contract, errors that name file, line and key, and nothing left behind on failure.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lopper_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lopper"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run lopper")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const GPT: &str = r#"name = "tiny-gpt"
seed = 3
[model]
kind = "gpt"
ctx = 16
layers = 1
heads = 2
width = 16
[data]
kind = "text"
batch = 2
val_batches = 2
[optimizer]
kind = "adamw"
lr = 1e-3
[train]
steps = 5
eval_every = 2
"#;

const MLP: &str = r#"name = "tiny-mlp"
[model]
kind = "mlp"
sizes = [64, 16, 10]
[data]
kind = "digits"
batch = 32
[optimizer]
kind = "sgd"
lr = 0.1
[train]
steps = 5
eval_every = 5
"#;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn read_json(dir: &Path) -> Value {
    let t = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    serde_json::from_str(&t).expect("report.json parses")
}

/// The keys other tools read, with their types; returns the variant names in order.
fn check_contract(j: &Value) -> Vec<String> {
    let vs = j["variants"].as_array().expect("variants array");
    assert!(!vs.is_empty());
    for v in vs {
        assert!(v["name"].is_string(), "{v}");
        assert!(v["energy_method"].is_string(), "{v}");
        for k in ["val_loss", "tokens_per_s", "wall_s", "energy_j"] {
            let x = v[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{k} not a number: {v}"));
            assert!(x.is_finite() && x >= 0.0, "{k} = {x}");
        }
        for k in [
            "flops_executed",
            "flops_dense_equivalent",
            "steps",
            "params",
        ] {
            assert!(v[k].as_u64().is_some(), "{k} not an integer: {v}");
        }
        assert!(v["flops_executed"].as_u64() <= v["flops_dense_equivalent"].as_u64());
        assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(v["events"].is_array() && v["curve"].is_array());
        // the training phase is part of the run's energy report (train + eval)
        let total = v["energy_report"]["total"]["joules"]["value"]
            .as_f64()
            .unwrap();
        assert!(total + 1e-9 >= v["energy_j"].as_f64().unwrap(), "{v}");
        assert!(v["run_wall_s"].as_f64().unwrap() >= v["wall_s"].as_f64().unwrap());
        // an estimate says so (no counters on CI machines; on one with RAPL it says rapl)
        let m = v["energy_method"].as_str().unwrap();
        assert_eq!(v["energy_measured"], m == "rapl" || m == "nvml", "{v}");
    }
    let m = &j["machine"];
    assert!(m["threads"].as_u64().unwrap() >= 1);
    assert!(m["cpu_model"].is_string());
    assert!(!m["energy_meter"].as_array().unwrap().is_empty());
    assert!(j["created"].as_str().unwrap().ends_with('Z'));
    vs.iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

fn check_files(out: &Path, names: &[String]) {
    let csv = std::fs::read_to_string(out.join("report.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + names.len(), "{csv}");
    assert!(lines[0].starts_with("variant,val_loss,"), "{csv}");
    let cols = lines[0].split(',').count();
    for (l, n) in lines[1..].iter().zip(names) {
        assert!(l.starts_with(&format!("{n},")), "{l}");
        assert_eq!(l.split(',').count(), cols, "{l}");
    }
    let svg = std::fs::read_to_string(out.join("report.svg")).unwrap();
    assert!(svg.len() > 1000 && svg.starts_with("<svg"));
    for n in names {
        assert!(svg.contains(n.as_str()), "{n} not in the SVG");
    }
}

#[test]
fn train_gpt_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(dir.path(), "gpt.toml", GPT);
    let out = dir.path().join("out");
    let o = lopper_in(
        dir.path(),
        &["train", "--recipe", s(&r), "--out", s(&out), "--quiet"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("tiny-gpt") && stdout.contains("ESTIMATE")
            || stdout.contains("measured by")
    );
    assert!(o.stderr.is_empty(), "--quiet printed: {}", text(&o));
    let j = read_json(&out);
    let names = check_contract(&j);
    assert_eq!(names, ["tiny-gpt"]);
    let v = &j["variants"][0];
    assert_eq!(v["steps"], 5);
    assert_eq!(v["val_loss_change_pct"], 0.0);
    // evaluations at steps 2, 4 and the end
    let steps: Vec<u64> = v["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 4, 5]);
    assert!(v["recipe_hash"].as_str().unwrap().len() >= 8);
    check_files(&out, &names);
}

#[test]
fn train_mlp_on_digits_with_threads_and_steps_override() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(dir.path(), "mlp.toml", MLP);
    let out = dir.path().join("out");
    let o = lopper_in(
        dir.path(),
        &[
            "train",
            "--recipe",
            s(&r),
            "--out",
            s(&out),
            "--steps",
            "7",
            "--threads",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let j = read_json(&out);
    let names = check_contract(&j);
    assert_eq!(j["machine"]["threads"], 1);
    let v = &j["variants"][0];
    assert_eq!(v["steps"], 7);
    let acc = v["accuracy"]
        .as_f64()
        .expect("a classifier has an accuracy");
    assert!((0.0..=1.0).contains(&acc));
    check_files(&out, &names);
}

#[test]
fn compare_two_recipes_in_one_report() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "gpt.toml", GPT);
    let b = write(
        dir.path(),
        "gpt2.toml",
        &GPT.replace("tiny-gpt", "tiny-gpt-b")
            .replace("lr = 1e-3", "lr = 3e-3"),
    );
    let out = dir.path().join("cmp");
    let o = lopper_in(
        dir.path(),
        &["compare", s(&a), s(&b), "--out", s(&out), "--steps", "3"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let j = read_json(&out);
    let names = check_contract(&j);
    assert_eq!(names, ["tiny-gpt", "tiny-gpt-b"]);
    assert_eq!(j["baseline"], "tiny-gpt");
    let (l0, l1) = (
        j["variants"][0]["val_loss"].as_f64().unwrap(),
        j["variants"][1]["val_loss"].as_f64().unwrap(),
    );
    let pct = j["variants"][1]["val_loss_change_pct"].as_f64().unwrap();
    assert!((pct - 100.0 * (l1 - l0) / l0).abs() < 1e-9, "{pct}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("vs tiny-gpt"), "{stdout}");
    // stderr is a pipe here: status lines, but no progress bar (no terminal escapes)
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("[2/2] training tiny-gpt-b"), "{stderr}");
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
    check_files(&out, &names);
}

#[test]
fn demo_quick_runs_the_six_variants_from_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let t = std::time::Instant::now();
    // the working folder holds no recipes: they are embedded
    let o = lopper_in(
        dir.path(),
        &[
            "demo",
            "--quick",
            "--steps",
            "2",
            "--out",
            s(&out),
            "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let j = read_json(&out);
    let names = check_contract(&j);
    assert_eq!(
        names,
        [
            "dense",
            "masked80",
            "gradual80",
            "sparse24",
            "lowrank",
            "rigl90"
        ]
    );
    for v in j["variants"].as_array().unwrap() {
        let r = v["recipe"].as_str().unwrap();
        assert!(
            r.starts_with("recipes/") && r.ends_with(".toml (embedded)"),
            "{r}"
        );
        assert_eq!(v["steps"], 2);
    }
    assert_eq!(j["baseline"], "dense");
    check_files(&out, &names);
    eprintln!("demo --quick --steps 2: {:.1} s", t.elapsed().as_secs_f64());
}

/// Lists what is under `dir` (empty when it does not exist).
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn bad_recipe_names_file_line_and_key_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // line 12 is the unknown key
    let bad = GPT.replace("batch = 2\n", "batch = 2\nbatchh = 3\n");
    assert_eq!(bad.lines().position(|l| l.starts_with("batchh")), Some(11));
    let r = write(dir.path(), "bad.toml", &bad);
    let out = dir.path().join("out");
    let o = lopper_in(dir.path(), &["train", "--recipe", s(&r), "--out", s(&out)]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:12"), "{err}");
    assert!(err.contains("batchh"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(leftovers(&out).is_empty() && !out.exists());

    // a bad value: line and key
    let bad = GPT.replace("lr = 1e-3", "lr = \"fast\"");
    let r = write(dir.path(), "bad2.toml", &bad);
    let o = lopper_in(dir.path(), &["train", "--recipe", s(&r), "--out", s(&out)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let line = 1 + bad.lines().position(|l| l.starts_with("lr =")).unwrap();
    assert!(err.contains(&format!("bad2.toml:{line}")), "{err}");
    assert!(!out.exists());

    // compare: one bad recipe among good ones fails before any training
    let good = write(dir.path(), "good.toml", GPT);
    let o = lopper_in(dir.path(), &["compare", s(&good), s(&r), "--out", s(&out)]);
    assert!(!o.status.success());
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("training tiny-gpt"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
}

#[test]
fn missing_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = lopper_in(
        dir.path(),
        &["train", "--recipe", "nope.toml", "--out", s(&out)],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nope.toml") && err.contains("no such file"),
        "{err}"
    );
    assert!(!out.exists());

    // a data file the recipe names but that does not exist: the key's line
    let r = write(
        dir.path(),
        "data.toml",
        &GPT.replace(
            "kind = \"text\"\n",
            "kind = \"text\"\npath = \"missing.txt\"\n",
        ),
    );
    let o = lopper_in(dir.path(), &["train", "--recipe", s(&r), "--out", s(&out)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing.txt") && err.contains("data.toml:"),
        "{err}"
    );
    assert!(!out.exists());

    // --out that is a file, --steps 0, duplicate names
    let f = write(dir.path(), "file", "x");
    let g = write(dir.path(), "gpt.toml", GPT);
    for args in [
        vec!["train", "--recipe", s(&g), "--out", s(&f)],
        vec!["train", "--recipe", s(&g), "--out", s(&out), "--steps", "0"],
        vec!["compare", s(&g), s(&g), "--out", s(&out)],
        vec![
            "train",
            "--recipe",
            s(&g),
            "--out",
            s(&out),
            "--checkpoint-every",
            "0",
        ],
    ] {
        let o = lopper_in(dir.path(), &args);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
        assert!(!out.exists(), "{args:?} left {:?}", leftovers(&out));
    }
}

#[test]
fn checkpoints_and_resume_continue_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(dir.path(), "gpt.toml", GPT);
    let full = dir.path().join("full");
    let o = lopper_in(
        dir.path(),
        &[
            "train",
            "--recipe",
            s(&r),
            "--out",
            s(&full),
            "--checkpoint-every",
            "2",
            "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let ck = full.join("checkpoints");
    let mut saved: Vec<String> = leftovers(&ck)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    // every 2 steps and after the last (5); the recipe keeps the newest two
    assert!(saved.contains(&"step-00000005".to_string()), "{saved:?}");
    assert!(saved.contains(&"step-00000004".to_string()), "{saved:?}");

    // the resumed run needs the same callbacks: without --checkpoint-every it is told so
    let resumed = dir.path().join("resumed");
    let step4 = ck.join("step-00000004");
    let mut args = vec![
        "train",
        "--recipe",
        s(&r),
        "--out",
        s(&resumed),
        "--resume",
        s(&step4),
        "--quiet",
    ];
    let o = lopper_in(dir.path(), &args);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--checkpoint-every"),
        "{}",
        text(&o)
    );
    assert!(!resumed.exists());
    args.extend(["--checkpoint-every", "2"]);
    let o = lopper_in(dir.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    let (a, b) = (read_json(&full), read_json(&resumed));
    assert_eq!(b["variants"][0]["steps"], 5);
    // the resume reproduces the uninterrupted run's final validation loss
    assert_eq!(a["variants"][0]["val_loss"], b["variants"][0]["val_loss"]);

    // a checkpoint of another recipe is refused
    let other = write(
        dir.path(),
        "other.toml",
        &GPT.replace("lr = 1e-3", "lr = 2e-3"),
    );
    let bad_out = dir.path().join("bad");
    let o = lopper_in(
        dir.path(),
        &[
            "train",
            "--recipe",
            s(&other),
            "--out",
            s(&bad_out),
            "--resume",
            s(&step4),
            "--checkpoint-every",
            "2",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!bad_out.exists());
}

#[test]
fn absurd_thread_counts_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["demo", "--quick", "--threads", "100000"][..],
        &["train", "--recipe", "missing.toml", "--threads", "100000"][..],
    ] {
        let o = lopper_in(dir.path(), args);
        assert!(!o.status.success(), "{args:?}");
        let t = text(&o);
        assert!(t.contains("--threads 100000: at most"), "{args:?}: {t}");
    }
    // nothing was written
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn recipe_paths_that_are_not_files_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status();
    let mut cases = vec![(dir.path().to_path_buf(), "is a folder, not a recipe file")];
    if made.is_ok_and(|s| s.success()) {
        cases.push((fifo, "is not a regular file"));
    }
    for (p, want) in cases {
        let o = lopper_in(dir.path(), &["train", "--recipe", s(&p), "--out", s(&out)]);
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("--recipe {}: {want}", s(&p))),
            "{err}"
        );
        assert!(!out.exists());
        // compare takes its recipes as positional arguments, and says so
        let o = lopper_in(dir.path(), &["compare", s(&p), "--out", s(&out)]);
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("RECIPES {}: {want}", s(&p))), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn bad_output_folders_fail_before_any_training() {
    let dir = tempfile::tempdir().unwrap();
    let g = write(dir.path(), "gpt.toml", GPT);
    let f = write(dir.path(), "afile", "x");
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
    let under_file = f.join("sub");
    for (args, want) in [
        (
            vec!["train", "--recipe", s(&g), "--out", s(&under_file)],
            format!(
                "--out {}: {} is a file, not a folder",
                s(&under_file),
                s(&f)
            ),
        ),
        (
            vec!["train", "--recipe", s(&g), "--out", s(&dangling)],
            format!("--out {}: is a symbolic link to nothing", s(&dangling)),
        ),
        (
            vec!["demo", "--quick", "--out", s(&under_file)],
            format!(
                "--out {}: {} is a file, not a folder",
                s(&under_file),
                s(&f)
            ),
        ),
    ] {
        let o = lopper_in(dir.path(), &args);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&want), "{args:?}: {err}");
        assert!(!err.contains("training"), "{args:?}: {err}");
    }
    // OUT/checkpoints in the way: named as part of --out, before training
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    write(&out, "checkpoints", "x");
    let o = lopper_in(
        dir.path(),
        &[
            "train",
            "--recipe",
            s(&g),
            "--out",
            s(&out),
            "--checkpoint-every",
            "2",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("--out {}: checkpoint folder", s(&out))),
        "{err}"
    );
    assert!(!err.contains("training"), "{err}");
    // a recipe's checkpoint_dir that is a file: its file, line and key, before the first recipe
    // of a compare trains
    let ck = GPT.replace(
        "eval_every = 2\n",
        &format!(
            "eval_every = 2\ncheckpoint_every = 2\ncheckpoint_dir = {:?}\n",
            s(&f)
        ),
    );
    let line = 1 + ck
        .lines()
        .position(|l| l.starts_with("checkpoint_dir"))
        .unwrap();
    let b = write(dir.path(), "ck.toml", &ck.replace("tiny-gpt", "tiny-ck"));
    let out2 = dir.path().join("out2");
    let o = lopper_in(dir.path(), &["compare", s(&g), s(&b), "--out", s(&out2)]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("ck.toml:{line}: train.checkpoint_dir:")),
        "{err}"
    );
    assert!(!err.contains("training"), "{err}");
    assert!(!out2.exists());
}

#[test]
fn a_run_into_a_used_folder_keeps_the_earlier_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(dir.path(), "gpt.toml", GPT);
    let out = dir.path().join("out");
    let ck = out.join("checkpoints");
    // an earlier run left step 4 and 5; the new 3-step run keeps its own newest 2 and those
    let run = |steps: &str| {
        let o = lopper_in(
            dir.path(),
            &[
                "train",
                "--recipe",
                s(&r),
                "--out",
                s(&out),
                "--checkpoint-every",
                "1",
                "--steps",
                steps,
                "--quiet",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
    };
    run("5");
    let names = || {
        let mut v: Vec<String> = leftovers(&ck)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(), ["step-00000004", "step-00000005"]);
    run("3");
    assert_eq!(
        names(),
        [
            "step-00000002",
            "step-00000003",
            "step-00000004",
            "step-00000005"
        ]
    );
}

#[test]
fn a_resume_path_that_is_a_fifo_is_refused_not_read() {
    // reading the FIFO (given, or as the manifest.json of a folder) waited for a writer forever
    let dir = tempfile::tempdir().unwrap();
    let recipe = write(dir.path(), "gpt.toml", GPT);
    let out = dir.path().join("out");
    let ck = dir.path().join("step-00000001");
    std::fs::create_dir(&ck).unwrap();
    let fifo = ck.join("manifest.json");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        return; // no mkfifo here
    }
    for resume in [&fifo, &ck] {
        let o = lopper_in(
            dir.path(),
            &[
                "train",
                "--recipe",
                s(&recipe),
                "--out",
                s(&out),
                "--resume",
                s(resume),
            ],
        );
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(
            t.contains(&format!(
                "checkpoint {}: cannot read: not a regular file",
                s(&fifo)
            )),
            "{t}"
        );
        assert!(!out.exists(), "{t}");
    }
}
