//! Recipes: every file in recipes/ parses (and builds where its data is here); every kind of
//! error names the file, the key and its line.
use lopper_train::Error;
use lopper_train::recipe::Recipe;
use std::path::PathBuf;

fn recipes_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes")
}

const BASE: &str = r#"name = "t"
seed = 1

[model]
kind = "gpt"
ctx = 16
layers = 1
heads = 2
width = 32

[data]
kind = "text"
batch = 2
context = 16
val_batches = 1

[optimizer]
kind = "adamw"
lr = 1e-3

[train]
steps = 6
eval_every = 3
log_every = 1
"#;

/// (line, key, detail) of a recipe error; panics on any other outcome.
fn recipe_err(text: &str) -> (usize, String, String) {
    match Recipe::from_str(text, "t.toml") {
        Err(Error::Recipe {
            path,
            line,
            key,
            detail,
        }) => {
            assert_eq!(path, "t.toml");
            (line, key, detail)
        }
        Err(e) => panic!("not a recipe error: {e}"),
        Ok(_) => panic!("parsed:\n{text}"),
    }
}

/// The 1-based line of the first line of `text` that starts with `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

#[test]
fn every_recipe_in_the_folder_parses() {
    let mut n = 0;
    let mut names = Vec::new();
    for e in std::fs::read_dir(recipes_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let r = Recipe::from_file(&p).unwrap_or_else(|e| panic!("{e}"));
        names.push(r.name().to_string());
        n += 1;
    }
    names.sort();
    for want in [
        "dense",
        "digits",
        "fashion-mnist",
        "gradual80",
        "lowrank",
        "masked80",
        "rigl90",
        "sparse24",
    ] {
        assert!(names.iter().any(|x| x == want), "{want} missing: {names:?}");
    }
    assert!(n >= 8);
}

#[test]
fn demo_recipes_share_one_model_and_data() {
    let demo = [
        "dense",
        "masked80",
        "gradual80",
        "sparse24",
        "lowrank",
        "rigl90",
    ];
    let specs: Vec<_> = demo
        .iter()
        .map(|n| {
            Recipe::from_file(recipes_dir().join(format!("{n}.toml")))
                .unwrap()
                .spec
        })
        .collect();
    for s in &specs[1..] {
        assert_eq!(s.model, specs[0].model, "{}", s.name);
        assert_eq!(s.data, specs[0].data, "{}", s.name);
        assert_eq!(s.optimizer, specs[0].optimizer, "{}", s.name);
        assert_eq!(s.schedule, specs[0].schedule, "{}", s.name);
        assert_eq!(s.train, specs[0].train, "{}", s.name);
        assert_eq!(s.seed, specs[0].seed, "{}", s.name);
    }
}

#[test]
fn bad_toml_syntax_points_at_its_line() {
    let text = BASE.replace("lr = 1e-3", "lr = = 1e-3");
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(line, line_of(&text, "lr = ="), "{detail}");
    assert_eq!(key, "optimizer.lr", "{detail}");
    let text = BASE.replace("[train]", "[train");
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(line, line_of(&text, "[train"), "{detail}");
    assert_eq!(key, "train", "{detail}");
}

#[test]
fn unknown_keys_are_errors() {
    let text = BASE.replace("log_every = 1", "log_every = 1\nwarmup_steps = 3");
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(line, line_of(&text, "warmup_steps"));
    assert_eq!(key, "train.warmup_steps", "{detail}");
    assert!(detail.contains("unknown field"), "{detail}");
    // inside a stage
    let text = format!("{BASE}\n[[stage]]\nkind = \"rigl\"\nsparsity = 0.9\nsparsty = 0.8\n");
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(line, line_of(&text, "sparsty"));
    assert_eq!(key, "stage[0].sparsty", "{detail}");
    // a key of another stage kind
    let text = format!("{BASE}\n[[stage]]\nkind = \"rigl\"\nsparsity = 0.9\nrank = 4\n");
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "rank"), "stage[0].rank")
    );
    assert!(
        detail.contains("does not apply to stage kind \"rigl\""),
        "{detail}"
    );
    // top level
    let text = format!("colour = 3\n{BASE}");
    let (line, key, _) = recipe_err(&text);
    assert_eq!((line, key.as_str()), (1, "colour"));
}

#[test]
fn wrong_types_point_at_the_value() {
    let text = BASE.replace("steps = 6", "steps = \"six\"");
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(line, line_of(&text, "steps ="));
    assert_eq!(key, "train.steps", "{detail}");
    assert!(detail.contains("invalid type"), "{detail}");
    let text = format!("{BASE}\n[[stage]]\nkind = \"sparse24\"\nat = 1.5\n");
    let (line, key, _) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "at = 1.5"), "stage[0].at")
    );
}

#[test]
fn out_of_range_values_name_key_and_line() {
    let text = format!(
        "{BASE}\n[[stage]]\nkind = \"sparse24\"\nat = 2\n\n[[stage]]\nkind = \"gradual_magnitude\"\nsparsity = 1.5\nend = 4\n"
    );
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(line, line_of(&text, "sparsity = 1.5"));
    assert_eq!(key, "stage[1].sparsity");
    assert!(detail.contains("1.5 is outside [0, 1)"), "{detail}");
    let text = format!(
        "{BASE}\n[[stage]]\nkind = \"gradual_magnitude\"\nsparsity = 0.5\nstart = 4\nend = 2\n"
    );
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "end = 2"), "stage[0].end")
    );
    assert!(detail.contains("end 2 is before start 4"), "{detail}");
    // a step past the run
    let text = format!("{BASE}\n[[stage]]\nkind = \"masked_magnitude\"\nsparsity = 0.5\nat = 6\n");
    let (line, key, _) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "at = 6"), "stage[0].at")
    );
    let text = BASE.replace("lr = 1e-3", "lr = -1.0");
    let (line, key, _) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "lr = -1"), "optimizer.lr")
    );
    let text = BASE.replace("width = 32", "width = 33");
    let (line, key, _) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "width"), "model.width")
    );
}

#[test]
fn unknown_kinds_and_missing_keys() {
    let text = format!("{BASE}\n[[stage]]\nkind = \"prune_everything\"\n");
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(line, line_of(&text, "kind = \"prune_everything\""));
    assert_eq!(key, "stage[0].kind");
    assert!(
        detail.contains("unknown stage kind") && detail.contains("rigl"),
        "{detail}"
    );
    let text = BASE.replace("kind = \"adamw\"", "kind = \"adam\"");
    let (line, key, _) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "kind = \"adam\""), "optimizer.kind")
    );
    // missing steps: the [train] table's line
    let text = BASE.replace("steps = 6\n", "");
    let (line, key, _) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "[train]"), "train.steps")
    );
    // missing required stage key: the stage's line
    let text = format!("{BASE}\n[[stage]]\nkind = \"lowrank\"\nat = 2\n");
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(key, "stage[0].rank", "{detail}");
    assert_eq!(line, line_of(&text, "[[stage]]"));
    // model and data that do not go together
    let text = BASE.replace("kind = \"text\"", "kind = \"digits\"");
    let (line, key, _) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "kind = \"digits\""), "data.kind")
    );
}

#[test]
fn errors_display_file_line_and_key() {
    let text = BASE.replace("steps = 6", "steps = 0");
    let e = Recipe::from_str(&text, "recipes/x.toml").err().unwrap();
    let line = line_of(&text, "steps = 0");
    assert_eq!(
        e.to_string(),
        format!("recipes/x.toml:{line}: train.steps: must be at least 1")
    );
    // keeping no checkpoint is not a setting (it kept two)
    let text = BASE.replace(
        "steps = 6",
        "steps = 6\ncheckpoint_every = 2\ncheckpoint_keep = 0",
    );
    let e = Recipe::from_str(&text, "recipes/x.toml").err().unwrap();
    let line = line_of(&text, "checkpoint_keep = 0");
    assert_eq!(
        e.to_string(),
        format!("recipes/x.toml:{line}: train.checkpoint_keep: must be at least 1")
    );
    let e = Recipe::from_file("/nonexistent/r.toml").err().unwrap();
    assert!(e.to_string().starts_with("/nonexistent/r.toml:"), "{e}");
}

#[test]
fn hash_ignores_layout_and_comments_not_values() {
    let a = Recipe::from_str(BASE, "a").unwrap();
    let b = Recipe::from_str(
        &format!(
            "# a comment\n{}",
            BASE.replace("lr = 1e-3", "lr   =   0.001  # same")
        ),
        "b",
    )
    .unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.hash().len(), 16);
    let c = Recipe::from_str(&BASE.replace("lr = 1e-3", "lr = 2e-3"), "c").unwrap();
    assert_ne!(a.hash(), c.hash());
}

#[test]
fn a_small_recipe_builds_and_trains() {
    let text = format!(
        "{}\n[schedule]\nkind = \"cosine\"\nwarmup = 1\n\n[[stage]]\nkind = \"gradual_magnitude\"\nsparsity = 0.75\nstart = 1\nend = 4\nevery = 1\n\n[[stage]]\nkind = \"rigl\"\ninclude = \"mlp\"\nsparsity = 0.5\ndelta_t = 2\nend = 5\n",
        BASE.replace("[train]", "[train]\nearly_stopping_patience = 5")
    );
    // two stages on the same layers would fight: gradual takes attn, rigl the MLP
    let text = text.replace(
        "kind = \"gradual_magnitude\"\n",
        "kind = \"gradual_magnitude\"\ninclude = \"attn\"\n",
    );
    let r = Recipe::from_str(&text, "small").unwrap();
    let mut t = r.build().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        t.callback_names(),
        vec!["gradual_magnitude", "rigl", "early_stopping"]
    );
    assert_eq!(t.recipe_hash(), Some(r.hash().as_str()));
    let summary = t.run().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.steps, 6);
    assert!(summary.flops_executed < summary.flops_dense_equivalent);
    let events: Vec<&str> = t.log().events.iter().map(|e| e.message.as_str()).collect();
    assert!(events.iter().any(|m| m.contains("-> csr at")), "{events:?}");
    assert!(events.iter().any(|m| m.contains("moved")), "{events:?}");
}

#[test]
fn demo_recipes_build() {
    for n in [
        "dense",
        "masked80",
        "gradual80",
        "sparse24",
        "lowrank",
        "rigl90",
        "digits",
    ] {
        let r = Recipe::from_file(recipes_dir().join(format!("{n}.toml"))).unwrap();
        r.build().unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    // Fashion-MNIST builds where Debian's dataset is installed; elsewhere the error names the
    // data.dir key and its line
    let p = recipes_dir().join("fashion-mnist.toml");
    let r = Recipe::from_file(&p).unwrap();
    match r.build() {
        Ok(_) => {}
        Err(Error::Recipe { key, line, .. }) => {
            let text = std::fs::read_to_string(&p).unwrap();
            assert_eq!((key.as_str(), line), ("data.dir", line_of(&text, "dir =")));
        }
        Err(e) => panic!("{e}"),
    }
}

/// The demo's six recipes one after the other, with wall time, final loss and executed FLOPs
/// (`cargo test -p lopper-train --release --test recipe demo_timing -- --ignored --nocapture`).
#[test]
#[ignore]
fn demo_timing() {
    let t0 = std::time::Instant::now();
    for n in [
        "dense",
        "masked80",
        "gradual80",
        "sparse24",
        "lowrank",
        "rigl90",
    ] {
        let r = Recipe::from_file(recipes_dir().join(format!("{n}.toml"))).unwrap();
        let mut t = r.build().unwrap();
        let s = t.run().unwrap();
        println!(
            "{n:10} train {:6.1} s  eval {:5.1} s  val loss {:.3}  executed/dense FLOPs {:.3}",
            s.train_wall_s,
            s.eval_wall_s,
            s.final_val_loss.unwrap_or(f64::NAN),
            s.flops_executed as f64 / s.flops_dense_equivalent as f64
        );
    }
    println!("all six: {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn the_examples_in_the_docs_parse() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/recipes.md"),
    )
    .unwrap();
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(!blocks.is_empty());
    for b in blocks {
        Recipe::from_str(b, "docs/recipes.md").unwrap_or_else(|e| panic!("{e}\n{b}"));
    }
}

#[test]
fn precision_bf16_trains_close_to_f32_and_bad_values_name_the_line() {
    let run = |text: &str| {
        let r = Recipe::from_str(text, "p.toml").unwrap_or_else(|e| panic!("{e}"));
        let mut t = r.build().unwrap_or_else(|e| panic!("{e}"));
        let s = t.run().unwrap_or_else(|e| panic!("{e}"));
        s.final_val_loss.expect("evaluated")
    };
    let f32_loss = run(BASE);
    let bf16 = BASE.replace("width = 32\n", "width = 32\nprecision = \"bf16\"\n");
    let bf16_loss = run(&bf16);
    // bf16 storage really is in effect (the losses differ) and stays close to f32
    assert_ne!(f32_loss, bf16_loss);
    assert!(
        (bf16_loss - f32_loss).abs() < 0.05 * f32_loss,
        "{bf16_loss} vs {f32_loss}"
    );
    let bad = BASE.replace("width = 32\n", "width = 32\nprecision = \"fp8\"\n");
    let (line, key, detail) = recipe_err(&bad);
    assert_eq!(line, line_of(&bad, "precision"));
    assert_eq!(key, "model.precision");
    assert!(detail.contains("fp8"), "{detail}");
}

#[test]
fn stages_are_checked_against_the_model_when_built() {
    // (stage body, model change, key, a piece of the detail): each fails in build(), before any
    // step, pointing at the stage's key
    let cases = [
        (
            "kind = \"sparse24\"\nat = 0\ninclude = \"zzz\"",
            None,
            "include",
            "\"zzz\" matches no Linear layer",
        ),
        (
            "kind = \"sparse24\"\nat = 0\ninclude = \"(\"",
            None,
            "include",
            "bad regex",
        ),
        (
            "kind = \"sparse24\"\nat = 0\nexclude = \"h\"",
            None,
            "exclude",
            "selects no Linear layer",
        ),
        (
            "kind = \"lora\"\nat = 0\nrank = 1000",
            None,
            "rank",
            "1000 is more than min(M, K) = 32",
        ),
        (
            "kind = \"sparse24\"\nat = 0",
            Some(("width = 32", "width = 30")),
            "kind",
            "K = 30 input features, not a multiple of 4",
        ),
    ];
    for (stage, model, want_key, want) in cases {
        let mut text = format!("{BASE}\n[[stage]]\n{stage}\n");
        if let Some((a, b)) = model {
            text = text.replace(a, b);
        }
        let r = Recipe::from_str(&text, "t.toml").unwrap_or_else(|e| panic!("{stage}: {e}"));
        match r.build() {
            Err(Error::Recipe {
                line, key, detail, ..
            }) => {
                assert_eq!(key, format!("stage[0].{want_key}"), "{stage}: {detail}");
                let at = if want_key == "kind" {
                    "kind = "
                } else {
                    want_key
                };
                let first = text
                    .lines()
                    .position(|l| l.starts_with("[[stage]]"))
                    .unwrap();
                let expect = first
                    + 1
                    + text
                        .lines()
                        .skip(first)
                        .position(|l| l.starts_with(at))
                        .unwrap();
                assert_eq!(line, expect, "{stage}: {detail}");
                assert!(detail.contains(want), "{stage}: {detail}");
            }
            Err(e) => panic!("{stage}: not a recipe error: {e}"),
            Ok(_) => panic!("{stage}: built"),
        }
    }
}

#[test]
fn range_errors_point_at_their_own_key() {
    let with_opt = |extra: &str| BASE.replace("lr = 1e-3", &format!("lr = 1e-3\n{extra}"));
    for (text, key) in [
        (with_opt("eps = -1e-8"), "optimizer.eps"),
        (with_opt("weight_decay = -0.1"), "optimizer.weight_decay"),
        (
            BASE.replace("kind = \"adamw\"", "kind = \"sgd\"\nmomentum = 1.5"),
            "optimizer.momentum",
        ),
        (
            format!(
                "{BASE}\n[[stage]]\nkind = \"gradual_magnitude\"\nsparsity = 0.5\ninitial = 0.8\nstart = 1\nend = 4\nevery = 1\n"
            ),
            "stage[0].initial",
        ),
    ] {
        let (line, k, detail) = recipe_err(&text);
        assert_eq!(k, key, "{detail}");
        let field = key.rsplit('.').next().unwrap();
        let want = text
            .lines()
            .position(|l| l.starts_with(&format!("{field} =")))
            .unwrap()
            + 1;
        assert_eq!(line, want, "{key}: {detail}");
    }
    // a folder given as the recipe
    let dir = tempfile::tempdir().unwrap();
    let e = Recipe::from_file(dir.path()).err().unwrap().to_string();
    assert!(e.contains("is a folder, not a recipe file"), "{e}");
}

#[test]
fn a_data_file_too_short_points_at_data_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tiny.txt");
    std::fs::write(&f, "too short").unwrap();
    let text = BASE.replace(
        "kind = \"text\"",
        &format!("kind = \"text\"\npath = {:?}", f.to_str().unwrap()),
    );
    let r = Recipe::from_str(&text, "t.toml").unwrap();
    match r.build() {
        Err(Error::Recipe { key, detail, .. }) => {
            assert_eq!(key, "data.path", "{detail}");
            assert!(detail.contains("shorter than one window"), "{detail}");
        }
        Err(e) => panic!("not a recipe error: {e}"),
        Ok(_) => panic!("built"),
    }
}

/// (key, detail) of a recipe error from `Recipe::build`; panics on any other outcome.
fn build_err(text: &str) -> (String, String) {
    let r = Recipe::from_str(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    match r.build() {
        Err(Error::Recipe { key, detail, .. }) => (key, detail),
        Err(e) => panic!("not a recipe error: {e}"),
        Ok(_) => panic!("built:\n{text}"),
    }
}

#[test]
fn runs_beyond_the_machines_memory_are_refused_at_their_key() {
    if lopper_tensor::mem::physical_memory().is_none() {
        return; // nothing to compare with
    }
    let digits = std::fs::read_to_string(recipes_dir().join("digits.toml")).unwrap();
    for (text, key) in [
        (
            BASE.replace("batch = 2", "batch = 100000000000"),
            "data.batch",
        ),
        (
            BASE.replace("val_batches = 1", "val_batches = 100000000000"),
            "data.val_batches",
        ),
        (BASE.replace("width = 32", "width = 1000000"), "model.width"),
        (
            BASE.replace("width = 32", "width = 32\nvocab = 10000000000"),
            "model.vocab",
        ),
        (
            BASE.replace("layers = 1", "layers = 10000000"),
            "model.layers",
        ),
        (
            digits.replace("sizes = [64, 128, 10]", "sizes = [64, 1000000000, 10]"),
            "model.sizes",
        ),
    ] {
        let (k, detail) = build_err(&text);
        assert_eq!(k, key, "{detail}");
        assert!(
            detail.contains("GiB") && detail.contains("more than this machine's memory"),
            "{detail}"
        );
    }
}

#[test]
fn options_without_their_feature_and_empty_folders_are_errors() {
    let text = BASE.replace("[train]", "[train]\nearly_stopping_min_delta = 0.01");
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (
            line_of(&text, "early_stopping_min_delta"),
            "train.early_stopping_min_delta"
        )
    );
    assert!(detail.contains("early_stopping_patience"), "{detail}");
    let text = BASE.replace(
        "[train]",
        "[train]\ncheckpoint_every = 2\ncheckpoint_dir = \"\"",
    );
    let (line, key, _) = recipe_err(&text);
    assert_eq!(
        (line, key.as_str()),
        (line_of(&text, "checkpoint_dir"), "train.checkpoint_dir")
    );
}

#[test]
fn a_checkpoint_dir_that_is_a_file_is_found_when_built() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("afile");
    std::fs::write(&f, "x").unwrap();
    for p in [f.clone(), f.join("sub")] {
        let text = BASE.replace(
            "[train]",
            &format!(
                "[train]\ncheckpoint_every = 2\ncheckpoint_dir = {:?}",
                s(&p)
            ),
        );
        let (key, detail) = build_err(&text);
        assert_eq!(key, "train.checkpoint_dir", "{detail}");
        assert!(detail.contains("is a file, not a folder"), "{detail}");
    }
    // a dangling link
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("gone"), &link).unwrap();
    let text = BASE.replace(
        "[train]",
        &format!(
            "[train]\ncheckpoint_every = 2\ncheckpoint_dir = {:?}",
            s(&link)
        ),
    );
    let (key, detail) = build_err(&text);
    assert_eq!(key, "train.checkpoint_dir", "{detail}");
    assert!(detail.contains("symbolic link to nothing"), "{detail}");
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// An IDX file: magic, big-endian dimensions, bytes.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

#[test]
fn an_empty_idx_set_points_at_data_dir_and_a_batch_too_big_at_data_batch() {
    let dir = tempfile::tempdir().unwrap();
    let write = |train_rows: u32| {
        let n = train_rows as usize;
        let files = [
            (
                "train-images-idx3-ubyte",
                idx(0x803, &[train_rows, 2, 2], &vec![1; n * 4]),
            ),
            (
                "train-labels-idx1-ubyte",
                idx(0x801, &[train_rows], &vec![1; n]),
            ),
            ("t10k-images-idx3-ubyte", idx(0x803, &[3, 2, 2], &[2; 12])),
            ("t10k-labels-idx1-ubyte", idx(0x801, &[3], &[0, 1, 2])),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
    };
    let text = format!(
        "name = \"i\"\n[model]\nkind = \"mlp\"\nsizes = [4, 10]\n[data]\nkind = \"idx\"\ndir = {:?}\nbatch = 4\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n[train]\nsteps = 1\n",
        s(dir.path())
    );
    write(0);
    let (key, detail) = build_err(&text);
    assert_eq!(key, "data.dir", "{detail}");
    assert!(detail.contains("no rows"), "{detail}");
    write(2);
    let (key, detail) = build_err(&text);
    assert_eq!(key, "data.batch", "{detail}");
    write(4);
    Recipe::from_str(&text, "t.toml").unwrap().build().unwrap();
}

#[test]
fn a_digits_batch_above_the_training_rows_points_at_data_batch() {
    // 1,797 embedded rows, 20% held out: 1,438 training rows
    let text = "name = \"d\"\n[model]\nkind = \"mlp\"\nsizes = [64, 10]\n[data]\nkind = \"digits\"\nbatch = 5000\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n[train]\nsteps = 1\n";
    let (key, detail) = build_err(text);
    assert_eq!(key, "data.batch", "{detail}");
    assert!(
        detail.contains("batch 5000 must be in 1..=1438"),
        "{detail}"
    );
    Recipe::from_str(&text.replace("5000", "1438"), "t.toml")
        .unwrap()
        .build()
        .unwrap();
}

#[test]
fn a_context_beyond_memory_is_refused_at_model_ctx() {
    // without data.context the window is model.ctx: the error named `data.ctx`, a key that
    // does not exist
    if lopper_tensor::mem::physical_memory().is_none() {
        return;
    }
    let text = BASE
        .replace("ctx = 16", "ctx = 100000000000")
        .replace("context = 16\n", "");
    let (key, detail) = build_err(&text);
    assert_eq!(key, "model.ctx", "{detail}");
    assert!(
        detail.contains("more than this machine's memory"),
        "{detail}"
    );
}

#[test]
fn betas_take_exactly_two_values() {
    // toml filled [f32; 2] from the first two of three values and dropped the third
    for (betas, want) in [
        (
            "[0.9, 0.95, 0.999]",
            "invalid length 3, expected an array of length 2",
        ),
        ("[0.9]", "invalid length 1"),
    ] {
        let text = BASE.replace("lr = 1e-3", &format!("lr = 1e-3\nbetas = {betas}"));
        let (line, key, detail) = recipe_err(&text);
        assert_eq!(key, "optimizer.betas", "{detail}");
        assert_eq!(line, line_of(&text, "betas"), "{detail}");
        assert!(detail.contains(want), "{detail}");
    }
    let text = BASE.replace("lr = 1e-3", "lr = 1e-3\nbetas = [0.9, 0.95]");
    let r = Recipe::from_str(&text, "t.toml").unwrap();
    assert_eq!(r.spec.optimizer.betas, Some([0.9, 0.95]));
}

#[test]
fn a_default_stage_name_taken_by_an_earlier_name_is_an_error() {
    // stage[2] would be called masked_magnitude.2, the name stage[1] chose: the two callbacks'
    // checkpoint states collided at the first checkpoint, after training had started
    let mm = "kind = \"masked_magnitude\"\nsparsity = 0.5\nat = 1\n";
    let text = format!(
        "{BASE}\n[[stage]]\n{mm}\n[[stage]]\n{mm}name = \"masked_magnitude.2\"\ninclude = \"mlp\"\n\n[[stage]]\n{mm}include = \"attn\"\n"
    );
    let (line, key, detail) = recipe_err(&text);
    assert_eq!(key, "stage[2].kind", "{detail}");
    assert!(
        detail.contains("default name \"masked_magnitude.2\""),
        "{detail}"
    );
    let last = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("kind = \"masked"))
        .last();
    assert_eq!(line, last.unwrap().0 + 1, "{detail}");
}

#[test]
fn a_data_path_that_is_a_fifo_is_refused_not_read() {
    // reading a FIFO waited for a writer forever
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("corpus.txt");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        return; // no mkfifo here
    }
    let text = BASE.replace(
        "kind = \"text\"",
        &format!("kind = \"text\"\npath = {:?}", s(&fifo)),
    );
    let (key, detail) = build_err(&text);
    assert_eq!(key, "data.path", "{detail}");
    assert!(detail.contains("is not a regular file"), "{detail}");
}

#[test]
fn a_val_fraction_that_empties_a_part_points_at_data_val_fraction() {
    // the error named data.kind, which the recipe did not get wrong
    let text = BASE.replace("val_batches = 1", "val_batches = 1\nval_fraction = 1e-9");
    let (key, detail) = build_err(&text);
    assert_eq!(key, "data.val_fraction", "{detail}");
    assert!(detail.contains("leaves 0 validation"), "{detail}");
    let digits = "name = \"d\"\n[model]\nkind = \"mlp\"\nsizes = [64, 10]\n[data]\nkind = \"digits\"\nval_fraction = 0.9999\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n[train]\nsteps = 1\n";
    let (key, detail) = build_err(digits);
    assert_eq!(key, "data.val_fraction", "{detail}");
    assert!(detail.contains("0 training"), "{detail}");
}

#[test]
fn magnitude_pruning_after_a_lowrank_or_lora_stage_is_refused_when_built() {
    // the pruning stage failed at its step, in the middle of the run, without a recipe key
    let lowrank = "kind = \"lowrank\"\nat = 1\nrank = 4\n";
    let lora = "kind = \"lora\"\nat = 1\nrank = 2\n";
    let mm = |at: u64| format!("kind = \"masked_magnitude\"\nsparsity = 0.5\nat = {at}\n");
    let gm = "kind = \"gradual_magnitude\"\nsparsity = 0.5\nstart = 0\nend = 3\n";
    let two = |a: &str, b: &str| format!("{BASE}\n[[stage]]\n{a}\n[[stage]]\n{b}\n");
    for (text, key, want) in [
        (two(lowrank, &mm(2)), "stage[1].kind", "stage[0] (lowrank)"),
        (two(gm, lowrank), "stage[0].kind", "stage[1] (lowrank)"),
        // same step: stages run in file order
        (two(lowrank, &mm(1)), "stage[1].kind", "at step 1"),
        (
            two(lora, &format!("{}include = \"mlp\"\n", mm(3))),
            "stage[1].include",
            "h.0.mlp.fc, which stage[0] (lora) turns into a LoRA adapter",
        ),
    ] {
        let (k, detail) = build_err(&text);
        assert_eq!(k, key, "{detail}");
        assert!(detail.contains(want), "{detail}");
    }
    // pruning first, or other layers: fine
    for text in [
        two(&mm(1), lowrank),
        two(
            &format!("{lowrank}include = \"attn\"\n"),
            &format!("{}include = \"mlp\"\n", mm(2)),
        ),
    ] {
        Recipe::from_str(&text, "t.toml")
            .unwrap()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
