//! Exact resume: N steps straight == N/2 steps, checkpoint, a trainer built from scratch, load,
//! N/2 steps; bit for bit (parameters, optimizer state, callback state, log, counters). And
//! corrupt checkpoints give typed errors naming the file and the key or tensor.
mod common;
use common::*;
use lopper_energy::EstimateMeter;
use lopper_tensor::io::safetensors as st;
use lopper_train::checkpoint::{self, fnv1a64};
use lopper_train::{
    AdamW, AdamWConfig, Callback, EarlyStopping, Error, Model, Sgd, SgdConfig, TrainConfig,
    Trainer, WarmupCosine,
};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy)]
enum Which {
    GptAdam,
    MlpSgd,
}

fn trainer(which: Which, steps: u64) -> Trainer {
    let cfg = TrainConfig {
        steps,
        eval_every: 2,
        log_every: 1,
        grad_clip: Some(1.0),
        ..Default::default()
    };
    let mut t = match which {
        Which::GptAdam => Trainer::new(
            Box::new(gpt(true)),
            Box::new(
                AdamW::new(AdamWConfig {
                    weight_decay: 0.1,
                    ..Default::default()
                })
                .unwrap()
                .with_par_threshold(64),
            ),
            Box::new(WarmupCosine::new(3e-3, 2, 8, 3e-4).unwrap()),
            Box::new(Tokens {
                vocab: 32,
                b: 2,
                t: 8,
                seed: 11,
            }),
            cfg,
        ),
        Which::MlpSgd => Trainer::new(
            Box::new(mlp(true)),
            Box::new(
                Sgd::new(SgdConfig {
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 1e-3,
                    ..Default::default()
                })
                .unwrap(),
            ),
            Box::new(WarmupCosine::new(0.05, 1, 8, 0.0).unwrap()),
            Box::new(Features {
                dim: 12,
                classes: 4,
                rows: 16,
                seed: 2,
            }),
            cfg,
        ),
    };
    // a FLOP estimate is deterministic, so energy figures resume (to f64 rounding: see assert_same)
    t.set_energy_meter(Box::new(EstimateMeter::flops(1e-10).unwrap()));
    t.add_callback(Box::new(EarlyStopping::new(100, 0.0).unwrap()));
    t.add_callback(Box::new(LossAverage::default()));
    t
}

fn cb_states(t: &Trainer) -> Vec<String> {
    // compare callback states through a saved manifest's JSON is indirect; use the public names
    t.callback_names()
}

fn assert_same(a: &mut Trainer, b: &mut Trainer) {
    assert_eq!(a.step(), b.step());
    let (pa, pb) = (params(a.model_mut()), params(b.model_mut()));
    assert_eq!(pa.len(), pb.len());
    for ((na, va), (nb, vb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        let ba: Vec<u32> = va.iter().map(|x| x.to_bits()).collect();
        let bb: Vec<u32> = vb.iter().map(|x| x.to_bits()).collect();
        assert!(ba == bb, "parameter {na} differs");
    }
    for (la, lb) in a.model().linears().iter().zip(b.model().linears()) {
        assert_eq!(
            la.weight().kind_name(),
            lb.weight().kind_name(),
            "{}",
            la.name
        );
        assert_eq!(la.dense_weight(), lb.dense_weight(), "{}", la.name);
    }
    assert_eq!(a.optimizer().state(), b.optimizer().state());
    let la: Vec<(u64, u64, u64)> = a
        .log()
        .train
        .iter()
        .map(|p| (p.step, p.loss.to_bits(), p.lr.to_bits()))
        .collect();
    let lb: Vec<(u64, u64, u64)> = b
        .log()
        .train
        .iter()
        .map(|p| (p.step, p.loss.to_bits(), p.lr.to_bits()))
        .collect();
    assert_eq!(la, lb);
    type EvalKey = (u64, u64, Option<u64>, u64);
    let key = |t: &Trainer| -> Vec<EvalKey> {
        t.log()
            .evals
            .iter()
            .map(|e| {
                (
                    e.step,
                    e.val_loss.to_bits(),
                    e.accuracy.map(f64::to_bits),
                    e.flops_executed,
                )
            })
            .collect()
    };
    let (ea, eb) = (key(a), key(b));
    assert_eq!(ea, eb);
    // Energy: a resumed run meters in more windows (the save splits one), and the sum of the
    // windows' joules rounds differently from one window's (the FLOP estimate is flops x J/FLOP
    // per window). Equal to f64 rounding, not bit for bit; with a real counter a resumed run's
    // energy is a different measurement anyway.
    for (x, y) in a.log().evals.iter().zip(&b.log().evals) {
        let tol = 1e-12 * x.energy_j.abs().max(y.energy_j.abs());
        assert!(
            (x.energy_j - y.energy_j).abs() <= tol,
            "step {}: energy {} vs {}",
            x.step,
            x.energy_j,
            y.energy_j
        );
    }
    assert_eq!(a.counters().flops_executed, b.counters().flops_executed);
    assert_eq!(
        a.counters().flops_dense_equivalent,
        b.counters().flops_dense_equivalent
    );
    assert_eq!(a.counters().examples, b.counters().examples);
    assert_eq!(cb_states(a), cb_states(b));
}

fn resume_matches_straight(which: Which) {
    let n = 8;
    let mut straight = trainer(which, n);
    let s1 = straight.run().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first = trainer(which, n / 2);
    first.run().unwrap();
    let manifest = first.save_checkpoint(dir.path()).unwrap();
    assert_eq!(manifest, dir.path().join("manifest.json"));
    drop(first);

    let mut resumed = trainer(which, n);
    resumed.resume_from(dir.path()).unwrap();
    assert_eq!(resumed.step(), n / 2);
    let s2 = resumed.run().unwrap();
    assert_same(&mut straight, &mut resumed);
    assert_eq!(
        s1.final_val_loss.map(f64::to_bits),
        s2.final_val_loss.map(f64::to_bits)
    );
    assert_eq!(s1.flops_executed, s2.flops_executed);
    assert_eq!(
        s1.energy.phase("train").unwrap().joules.value.to_bits(),
        s2.energy.phase("train").unwrap().joules.value.to_bits()
    );
    // the callback with tensor state continued, not restarted
    let d2 = tempfile::tempdir().unwrap();
    let (a, b) = (
        straight.save_checkpoint(d2.path()).unwrap(),
        resumed.save_checkpoint(dir.path()).unwrap(),
    );
    let (_, ma) = checkpoint::read_manifest(&a).unwrap();
    let (_, mb) = checkpoint::read_manifest(&b).unwrap();
    assert_eq!(ma.callbacks, mb.callbacks);
    assert_eq!(ma.callbacks[1].json["seen"], n);
    assert_eq!(ma.tensors_fnv1a64, mb.tensors_fnv1a64, "the same bytes");
}

#[test]
fn gpt_of_every_kind_resumes_bit_for_bit() {
    resume_matches_straight(Which::GptAdam);
}

#[test]
fn mlp_with_sgd_resumes_bit_for_bit() {
    resume_matches_straight(Which::MlpSgd);
}

#[test]
fn straight_runs_are_deterministic() {
    let mut a = trainer(Which::GptAdam, 4);
    let mut b = trainer(Which::GptAdam, 4);
    a.run().unwrap();
    b.run().unwrap();
    assert_same(&mut a, &mut b);
}

/// A saved GPT checkpoint in a fresh directory, with its tensors file's path.
fn saved() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(Which::GptAdam, 2);
    t.run().unwrap();
    let m = t.save_checkpoint(dir.path()).unwrap();
    let (_, man) = checkpoint::read_manifest(&m).unwrap();
    let tf = dir.path().join(man.tensors_file);
    (dir, m, tf)
}

fn load_err(path: &Path) -> Error {
    let mut t = trainer(Which::GptAdam, 4);
    t.resume_from(path).unwrap_err()
}

fn edit_manifest(m: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(m, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn truncated_tensors_file_is_a_checkpoint_error() {
    let (_d, m, tf) = saved();
    let bytes = std::fs::read(&tf).unwrap();
    std::fs::write(&tf, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&m);
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    let s = e.to_string();
    assert!(
        s.contains(tf.file_name().unwrap().to_str().unwrap()) && s.contains("truncated"),
        "{s}"
    );
    // one flipped byte: the checksum
    let mut b2 = bytes.clone();
    let k = b2.len() - 3;
    b2[k] ^= 1;
    std::fs::write(&tf, &b2).unwrap();
    assert!(load_err(&m).to_string().contains("checksum"));
    std::fs::remove_file(&tf).unwrap();
    assert!(matches!(load_err(&m), Error::Checkpoint { .. }));
}

#[test]
fn checkpoint_past_the_run_or_with_a_foreign_tensors_path_is_refused() {
    // saved at step 2: a run of 1 step cannot continue from it
    let (_d, m, _) = saved();
    let mut short = trainer(Which::GptAdam, 1);
    let e = short.resume_from(&m).unwrap_err().to_string();
    assert!(e.contains("at step 2, past this run's 1 steps"), "{e}");
    // a run of exactly 2 steps may (it has nothing left to do)
    trainer(Which::GptAdam, 2).resume_from(&m).unwrap();
    // the tensors file must be a name beside the manifest
    for bad in ["../../etc/passwd", "/etc/passwd", "..", "sub/t.safetensors"] {
        edit_manifest(&m, |v| v["tensors_file"] = bad.into());
        let e = load_err(&m).to_string();
        assert!(e.contains("tensors_file") && e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn manifest_missing_a_key_or_wrong_version() {
    let (_d, m, _) = saved();
    let orig = std::fs::read(&m).unwrap();
    edit_manifest(&m, |v| {
        v.as_object_mut().unwrap().remove("step");
    });
    let e = load_err(&m);
    assert!(
        matches!(e, Error::Checkpoint { .. }) && e.to_string().contains("step"),
        "{e}"
    );
    std::fs::write(&m, &orig).unwrap();
    edit_manifest(&m, |v| v["version"] = 99.into());
    assert!(load_err(&m).to_string().contains("version"));
    std::fs::write(&m, &orig).unwrap();
    // h.0.mlp.fc is masked: said dense, its mask tensor is left over
    edit_manifest(&m, |v| v["layers"][2]["kind"] = "dense".into());
    let e = load_err(&m).to_string();
    assert!(
        e.contains("h.0.mlp.fc.weight.mask") && e.contains("not described"),
        "{e}"
    );
    std::fs::write(&m, &orig).unwrap();
    // h.0.attn.qkv is csr: said lowrank, its factors are missing
    edit_manifest(&m, |v| {
        v["layers"][0]["kind"] = "lowrank".into();
        v["layers"][0]["rank"] = 2.into();
    });
    let e = load_err(&m).to_string();
    assert!(e.contains("tensor h.0.attn.qkv.u is missing"), "{e}");
    std::fs::write(&m, b"{ not json").unwrap();
    assert!(load_err(&m).to_string().contains("not JSON"));
    assert!(matches!(
        load_err(&m.with_file_name("nope.json")),
        Error::Checkpoint { .. }
    ));
}

#[test]
fn wrong_shape_names_the_tensor() {
    let (_d, m, tf) = saved();
    let mut f = st::read(&tf).unwrap();
    for (n, e) in &mut f.entries {
        if n == "wte.weight" {
            *e = st::Entry::Tensor(lopper_tensor::Tensor::from_f32(&[3], vec![0.0; 3]).unwrap());
        }
    }
    let bytes = st::to_bytes(&f).unwrap();
    std::fs::write(&tf, &bytes).unwrap();
    edit_manifest(&m, |v| {
        v["tensors_bytes"] = (bytes.len() as u64).into();
        v["tensors_fnv1a64"] = format!("{:016x}", fnv1a64(&bytes)).into();
    });
    let e = load_err(&m);
    assert!(matches!(e, Error::Checkpoint { .. }));
    assert!(
        e.to_string().contains("wte.weight") && e.to_string().contains("shape"),
        "{e}"
    );
}

#[test]
fn a_different_trainer_is_refused() {
    let (_d, m, _) = saved();
    // another optimizer
    let mut t = trainer(Which::GptAdam, 4);
    let mut t2 = Trainer::new(
        Box::new(gpt(true)),
        Box::new(Sgd::new(SgdConfig::default()).unwrap()),
        Box::new(WarmupCosine::new(1e-3, 0, 4, 0.0).unwrap()),
        Box::new(Tokens {
            vocab: 32,
            b: 2,
            t: 8,
            seed: 11,
        }),
        TrainConfig::default(),
    );
    t2.add_callback(Box::new(EarlyStopping::new(100, 0.0).unwrap()));
    t2.add_callback(Box::new(LossAverage::default()));
    assert!(
        t2.resume_from(&m)
            .unwrap_err()
            .to_string()
            .contains("optimizer")
    );
    // another model
    let mut t3 = Trainer::new(
        Box::new(mlp(false)),
        Box::new(AdamW::default()),
        Box::new(WarmupCosine::new(1e-3, 0, 4, 0.0).unwrap()),
        Box::new(Tokens {
            vocab: 32,
            b: 2,
            t: 8,
            seed: 11,
        }),
        TrainConfig::default(),
    );
    assert!(
        t3.resume_from(&m)
            .unwrap_err()
            .to_string()
            .contains("model_kind")
    );
    // missing callback
    let mut t4 = Trainer::new(
        Box::new(gpt(false)),
        Box::new(AdamW::default()),
        Box::new(WarmupCosine::new(1e-3, 0, 4, 0.0).unwrap()),
        Box::new(Tokens {
            vocab: 32,
            b: 2,
            t: 8,
            seed: 11,
        }),
        TrainConfig::default(),
    );
    assert!(
        t4.resume_from(&m)
            .unwrap_err()
            .to_string()
            .contains("callbacks")
    );
    // and the right one loads, whatever its layer kinds were before (rebuilt from the file)
    t.resume_from(&m).unwrap();
    let kinds: Vec<&str> = t
        .model()
        .linears()
        .iter()
        .map(|l| l.weight().kind_name())
        .collect();
    assert!(kinds.contains(&"sparse24") && kinds.contains(&"lora") && kinds.contains(&"csr"));
}

#[test]
fn resaving_replaces_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(Which::MlpSgd, 2);
    t.run().unwrap();
    t.save_checkpoint(dir.path()).unwrap();
    t.config_mut().steps = 4;
    t.run().unwrap();
    let m = t.save_checkpoint(dir.path()).unwrap();
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        files.len(),
        2,
        "{files:?}: the old tensors file is gone, no temp files"
    );
    // a later save interrupted after its tensors file, before its manifest: the checkpoint on
    // disk is still the previous one, whole
    std::fs::write(
        dir.path().join("tensors-00000009-0.safetensors"),
        b"partial",
    )
    .unwrap();
    let mut u = trainer(Which::MlpSgd, 4);
    u.resume_from(&m).unwrap();
    assert_eq!(u.step(), 4);
    // and the next save cleans the leftover
    u.save_checkpoint(dir.path()).unwrap();
    assert!(!dir.path().join("tensors-00000009-0.safetensors").exists());
    let _ = u.model_mut().num_params();
    let _: &dyn Callback = &EarlyStopping::new(1, 0.0).unwrap();
    let _: &dyn Model = u.model();
}

/// Stops the run after step `at` (so a first half can run with the full run's `steps`, which
/// schedules such as RigL's `end` fraction depend on).
struct StopAfter(Option<u64>);

impl Callback for StopAfter {
    fn name(&self) -> String {
        "stop_after".into()
    }
    fn on_step_end(
        &mut self,
        ctx: &mut lopper_train::Ctx<'_>,
    ) -> lopper_train::Result<lopper_train::Control> {
        Ok(if Some(ctx.step) == self.0 {
            lopper_train::Control::Stop
        } else {
            lopper_train::Control::Continue
        })
    }
}

/// A GPT whose layers change kind mid-run through lopper-train's compression stages: gradual
/// magnitude pruning (Masked, then Csr) on the MLP input layers, RigL on the QKV layers, 2:4 at
/// step 3 on the attention projections, low rank at step 5 on the MLP output layers.
fn staged(stop: Option<u64>) -> Trainer {
    use lopper_train::compress::*;
    let scope = |re: &str| LayerScope {
        include: Some(re.into()),
        exclude: None,
    };
    let mut t = Trainer::new(
        Box::new(gpt(false)),
        Box::new(AdamW::default().with_par_threshold(64)),
        Box::new(WarmupCosine::new(3e-3, 1, 8, 3e-4).unwrap()),
        Box::new(Tokens {
            vocab: 32,
            b: 2,
            t: 8,
            seed: 5,
        }),
        TrainConfig {
            steps: 8,
            eval_every: 2,
            log_every: 1,
            grad_clip: Some(1.0),
            // an interrupted first half has no extra evaluation at its end
            eval_at_end: stop.is_none(),
            ..Default::default()
        },
    );
    t.set_energy_meter(Box::new(EstimateMeter::flops(1e-10).unwrap()));
    t.add_callback(Box::new(
        GradualMagnitude::new(GradualMagnitudeConfig {
            target: 0.8,
            start: 1,
            end: 6,
            every: 1,
            scope: scope("mlp\\.fc"),
            switch_to_csr_at: 0.5,
            ..Default::default()
        })
        .unwrap(),
    ));
    t.add_callback(Box::new(
        Rigl::new(RiglConfig {
            sparsity: 0.6,
            layout: Layout::Uniform,
            delta_t: 2,
            end: RiglEnd::Fraction(0.9),
            scope: scope("attn\\.qkv"),
            ..Default::default()
        })
        .unwrap(),
    ));
    t.add_callback(Box::new(ToSparse24::new(3, scope("attn\\.proj"))));
    t.add_callback(Box::new(
        ToLowRank::new(5, LowRankRule::Rank(4), scope("mlp\\.proj")).unwrap(),
    ));
    t.add_callback(Box::new(StopAfter(stop)));
    t
}

#[test]
fn compression_stages_resume_bit_for_bit() {
    let mut straight = staged(None);
    straight.run().unwrap();
    let kinds: Vec<&str> = straight
        .model()
        .linears()
        .iter()
        .map(|l| l.weight().kind_name())
        .collect();
    assert_eq!(
        kinds,
        [
            "csr", "sparse24", "csr", "lowrank", "csr", "sparse24", "csr", "lowrank"
        ],
        "every stage ran"
    );
    for split in [3, 4, 5] {
        let dir = tempfile::tempdir().unwrap();
        let mut first = staged(Some(split - 1));
        let s = first.run().unwrap();
        assert_eq!(s.steps, split);
        first.save_checkpoint(dir.path()).unwrap();
        drop(first);
        let mut resumed = staged(None);
        resumed.resume_from(dir.path()).unwrap();
        resumed.run().unwrap();
        assert_same(&mut straight, &mut resumed);
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// A tensors file cut or altered anywhere, with the manifest's length and checksum made
        /// to match (so the safetensors parser and the tensor checks see it): an error, never a
        /// panic.
        #[test]
        fn damaged_tensors_never_panic(cut in 0.0f64..1.0, flip in 0usize..4096, bit in 0u8..8) {
            let (_d, m, tf) = saved();
            let mut bytes = std::fs::read(&tf).unwrap();
            if flip % 2 == 0 {
                bytes.truncate((bytes.len() as f64 * cut) as usize);
            } else {
                let i = flip * 7919 % bytes.len().min(4096);
                bytes[i] ^= 1 << bit;
            }
            std::fs::write(&tf, &bytes).unwrap();
            edit_manifest(&m, |v| {
                v["tensors_bytes"] = (bytes.len() as u64).into();
                v["tensors_fnv1a64"] = format!("{:016x}", fnv1a64(&bytes)).into();
            });
            let mut t = trainer(Which::GptAdam, 4);
            // a flip inside a float's bytes may still load (it is a valid file); otherwise a
            // typed error
            if let Err(e) = t.resume_from(&m) {
                prop_assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
            }
        }
    }
}
