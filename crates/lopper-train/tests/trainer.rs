//! The training loop: learning, hook order, evaluation, early stopping, NaN stop, FLOPs, energy,
//! progress, checkpointing callback.
mod common;
use common::*;
use lopper_energy::EstimateMeter;
use lopper_train::{
    AdamW, AdamWConfig, Callback, Checkpointing, Constant, Control, Ctx, EarlyStopping, EvalResult,
    Result, Sgd, SgdConfig, TrainConfig, Trainer, WarmupCosine,
};
use std::sync::{Arc, Mutex};

fn mlp_trainer(mixed: bool, cfg: TrainConfig, lr: f32) -> Trainer {
    Trainer::new(
        Box::new(mlp(mixed)),
        Box::new(
            AdamW::new(AdamWConfig {
                weight_decay: 0.0,
                ..Default::default()
            })
            .unwrap(),
        ),
        Box::new(Constant::new(lr).unwrap()),
        Box::new(Features {
            dim: 12,
            classes: 4,
            rows: 32,
            seed: 3,
        }),
        cfg,
    )
}

#[test]
fn mlp_learns_and_logs() {
    let cfg = TrainConfig {
        steps: 60,
        eval_every: 20,
        log_every: 10,
        ..Default::default()
    };
    let mut t = mlp_trainer(false, cfg, 1e-2);
    let s = t.run().unwrap();
    assert_eq!(s.steps, 60);
    assert_eq!(t.step(), 60);
    let log = t.log();
    let steps: Vec<u64> = log.train.iter().map(|p| p.step).collect();
    assert_eq!(steps, vec![0, 10, 20, 30, 40, 50, 59]);
    let evs: Vec<u64> = log.evals.iter().map(|e| e.step).collect();
    assert_eq!(evs, vec![20, 40, 60], "no duplicate evaluation at the end");
    assert!(
        log.train.last().unwrap().loss < 0.7 * log.train[0].loss,
        "{:?}",
        log.train
    );
    assert!(s.final_val_loss.unwrap() < log.evals[0].val_loss);
    assert_eq!(
        s.best_val_loss,
        log.evals.iter().map(|e| e.val_loss).reduce(f64::min)
    );
    assert!(s.accuracy.unwrap() > 0.5, "{:?}", s.accuracy);
    // dense model: executed == dense-equivalent, counted every step
    assert!(s.flops_executed > 0);
    assert_eq!(s.flops_executed, s.flops_dense_equivalent);
    assert_eq!(log.evals[0].flops_executed * 3, s.flops_executed);
    // no meter set: an estimate, said so
    assert!(
        log.events
            .iter()
            .any(|e| e.source == "energy" && e.message.contains("ESTIMATE"))
    );
    assert!(s.energy.phase("train").is_some());
    assert_eq!(log.evals[0].energy_method, "estimate-cpu-time");
    assert!(s.tokens_or_examples_per_s > 0.0);
    // 60 steps: the median of steps 4..60
    assert!(
        s.steady_per_s.is_some_and(|r| r > 0.0),
        "{:?}",
        s.steady_per_s
    );
    assert!(s.stopped_early.is_none());
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("flops_dense_equivalent"));
}

#[test]
fn sparse_kinds_execute_fewer_flops() {
    let cfg = TrainConfig {
        steps: 3,
        eval_every: 0,
        ..Default::default()
    };
    let mut t = mlp_trainer(true, cfg, 1e-2);
    let s = t.run().unwrap();
    assert!(s.flops_executed < s.flops_dense_equivalent, "{s:?}");
    assert_eq!(t.log().evals.len(), 1, "eval at the end only");
    // no step past the warm-up: no steady-state figure rather than a made-up one
    assert_eq!(s.steady_per_s, None);
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Callback for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }
    fn on_begin(&mut self, c: &mut Ctx<'_>) -> Result<()> {
        self.0.lock().unwrap().push(format!("begin {}", c.step));
        Ok(())
    }
    fn before_step(&mut self, c: &mut Ctx<'_>) -> Result<()> {
        assert!(c.loss.is_nan());
        self.0
            .lock()
            .unwrap()
            .push(format!("before_step {}", c.step));
        Ok(())
    }
    fn after_backward(&mut self, c: &mut Ctx<'_>) -> Result<()> {
        assert!(c.loss.is_finite());
        self.0
            .lock()
            .unwrap()
            .push(format!("after_backward {}", c.step));
        Ok(())
    }
    fn on_step_end(&mut self, c: &mut Ctx<'_>) -> Result<Control> {
        self.0.lock().unwrap().push(format!("step_end {}", c.step));
        Ok(Control::Continue)
    }
    fn before_eval(&mut self, c: &mut Ctx<'_>) -> Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("before_eval {}", c.step));
        Ok(())
    }
    fn on_eval(&mut self, _c: &mut Ctx<'_>, e: &EvalResult) -> Result<Control> {
        self.0.lock().unwrap().push(format!("eval {}", e.step));
        Ok(Control::Continue)
    }
    fn on_end(&mut self, c: &mut Ctx<'_>) -> Result<()> {
        self.0.lock().unwrap().push(format!("end {}", c.step));
        Ok(())
    }
}

/// A hook's rayon thread index (None outside a pool) and its pool's size.
type Place = (Option<usize>, usize);

/// Records where each hook ran.
#[derive(Clone, Default)]
struct Where(Arc<Mutex<Vec<Place>>>);

impl Where {
    fn record(&self) {
        let here = (rayon::current_thread_index(), rayon::current_num_threads());
        self.0.lock().unwrap().push(here);
    }
}

impl Callback for Where {
    fn name(&self) -> String {
        "where".into()
    }
    fn on_begin(&mut self, _c: &mut Ctx<'_>) -> Result<()> {
        self.record();
        Ok(())
    }
    fn on_step_end(&mut self, _c: &mut Ctx<'_>) -> Result<Control> {
        self.record();
        Ok(Control::Continue)
    }
}

#[test]
fn run_steps_on_a_thread_of_the_pool() {
    let cfg = TrainConfig {
        steps: 2,
        ..Default::default()
    };
    // called from the test's own thread, outside any pool: the loop runs on one of the global
    // pool's threads (each parallel region then starts there instead of being handed over)
    let mut t = mlp_trainer(false, cfg.clone(), 1e-3);
    let w = Where::default();
    t.add_callback(Box::new(w.clone()));
    assert_eq!(rayon::current_thread_index(), None);
    t.run().unwrap();
    let got = w.0.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(i, _)| i.is_some()), "{got:?}");
    // inside a pool of its own: it stays there
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let mut t = mlp_trainer(false, cfg, 1e-3);
    let w = Where::default();
    t.add_callback(Box::new(w.clone()));
    pool.install(|| t.run()).unwrap();
    let got = w.0.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|&(i, n)| i.is_some() && n == 3), "{got:?}");
}

#[test]
fn hooks_run_in_the_documented_order() {
    let cfg = TrainConfig {
        steps: 3,
        eval_every: 2,
        log_every: 1,
        ..Default::default()
    };
    let mut t = mlp_trainer(false, cfg, 1e-3);
    let r = Recorder::default();
    t.add_callback(Box::new(r.clone()));
    let progress = Arc::new(Mutex::new(Vec::new()));
    let p2 = progress.clone();
    t.set_progress(Box::new(move |p| {
        p2.lock().unwrap().push((p.step, p.eval.is_some()))
    }));
    t.run().unwrap();
    let got = r.0.lock().unwrap().clone();
    let want = [
        "begin 0",
        "before_step 0",
        "after_backward 0",
        "step_end 0",
        "before_step 1",
        "after_backward 1",
        "step_end 1",
        "before_eval 2",
        "eval 2",
        "before_step 2",
        "after_backward 2",
        "step_end 2",
        "before_eval 3",
        "eval 3",
        "end 3",
    ];
    assert_eq!(got, want);
    assert_eq!(
        *progress.lock().unwrap(),
        vec![(1, false), (2, false), (2, true), (3, false), (3, true)]
    );
}

#[test]
fn early_stopping_stops_and_says_why() {
    // lr 0: the validation loss never improves after the first evaluation
    let cfg = TrainConfig {
        steps: 50,
        eval_every: 1,
        ..Default::default()
    };
    let mut t = mlp_trainer(false, cfg, 0.0);
    t.add_callback(Box::new(EarlyStopping::new(2, 0.0).unwrap()));
    let s = t.run().unwrap();
    assert_eq!(s.steps, 3);
    let why = s.stopped_early.unwrap();
    assert!(
        why.contains("early_stopping") && why.contains("did not improve"),
        "{why}"
    );
    assert!(
        t.log()
            .events
            .iter()
            .any(|e| e.source == "trainer" && e.message.contains("stopped early"))
    );
    assert_eq!(t.log().evals.len(), 3);
    assert!(EarlyStopping::new(0, 0.0).is_err());
}

struct Poison;
impl Callback for Poison {
    fn name(&self) -> String {
        "poison".into()
    }
    fn on_step_end(&mut self, c: &mut Ctx<'_>) -> Result<Control> {
        if c.step == 1 {
            c.model.set_param("fc.2.bias", &[f32::NAN; 4])?;
        }
        Ok(Control::Continue)
    }
}

#[test]
fn non_finite_loss_stops_the_run() {
    let cfg = TrainConfig {
        steps: 10,
        eval_every: 0,
        eval_at_end: false,
        ..Default::default()
    };
    let mut t = mlp_trainer(false, cfg, 1e-3);
    t.add_callback(Box::new(Poison));
    let s = t.run().unwrap();
    assert_eq!(s.steps, 3);
    let why = s.stopped_early.unwrap();
    // lopper-nn clamps the probability in the loss, so the NaN shows in the gradient norm
    assert!(
        why.contains("NaN at step 2") && why.contains("update skipped"),
        "{why}"
    );
    assert_eq!(t.log().train.last().unwrap().step, 2);
}

#[test]
fn gpt_with_every_kind_trains_with_clipping_and_a_meter() {
    let cfg = TrainConfig {
        steps: 6,
        eval_every: 3,
        log_every: 1,
        grad_clip: Some(0.5),
        ..Default::default()
    };
    let mut t = Trainer::new(
        Box::new(gpt(true)),
        Box::new(
            Sgd::new(SgdConfig {
                momentum: 0.9,
                ..Default::default()
            })
            .unwrap(),
        ),
        Box::new(WarmupCosine::new(0.1, 2, 6, 0.01).unwrap()),
        Box::new(Tokens {
            vocab: 32,
            b: 2,
            t: 8,
            seed: 1,
        }),
        cfg,
    );
    t.set_energy_meter(Box::new(EstimateMeter::flops(1e-10).unwrap()));
    let norms = Arc::new(Mutex::new(Vec::new()));
    let n2 = norms.clone();
    t.set_progress(Box::new(move |p| n2.lock().unwrap().push(p.grad_norm)));
    let s = t.run().unwrap();
    assert_eq!(s.steps, 6);
    assert!(s.accuracy.is_none(), "token batches have no accuracy");
    assert!(s.flops_executed < s.flops_dense_equivalent);
    assert!(
        norms
            .lock()
            .unwrap()
            .iter()
            .all(|n| n.is_some_and(|x| x > 0.0))
    );
    assert!(
        !t.log()
            .events
            .iter()
            .any(|e| e.message.contains("no energy meter"))
    );
    let train = s.energy.phase("train").unwrap();
    // FLOP estimate: exactly the executed FLOPs x 1e-10 J
    assert!((train.joules.value - s.flops_executed as f64 * 1e-10).abs() < 1e-9);
    assert_eq!(t.log().evals[0].energy_method, "estimate-flops");
    let lrs: Vec<f64> = t.log().train.iter().map(|p| p.lr).collect();
    assert!(
        (lrs[0] - 0.05).abs() < 1e-7 && (lrs[1] - 0.1).abs() < 1e-7,
        "{lrs:?}"
    );
}

#[test]
fn checkpointing_keeps_the_last_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        steps: 7,
        eval_every: 0,
        eval_at_end: false,
        ..Default::default()
    };
    let mut t = mlp_trainer(false, cfg, 1e-2);
    t.add_callback(Box::new(Checkpointing::new(dir.path(), 2, 2).unwrap()));
    t.run().unwrap();
    let kept: Vec<u64> = Checkpointing::list(dir.path())
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(
        kept,
        vec![6, 7],
        "every 2 steps and the last, newest 2 kept"
    );
    assert_eq!(
        Checkpointing::latest(dir.path()).unwrap(),
        dir.path().join("step-00000007")
    );
    assert!(
        t.log()
            .events
            .iter()
            .any(|e| e.source == "checkpointing" && e.message.contains("removed"))
    );
    assert!(Checkpointing::new(dir.path(), 0, 1).is_err());
}

#[test]
fn checkpointing_removes_only_its_own_checkpoints() {
    // an earlier run left steps 2 and 4 in the folder
    let dir = tempfile::tempdir().unwrap();
    let cfg = |steps| TrainConfig {
        steps,
        eval_every: 0,
        eval_at_end: false,
        ..Default::default()
    };
    let mut old = mlp_trainer(false, cfg(4), 1e-2);
    old.add_callback(Box::new(Checkpointing::new(dir.path(), 2, 0).unwrap()));
    old.run().unwrap();
    let steps =
        |d: &std::path::Path| -> Vec<u64> { Checkpointing::list(d).iter().map(|c| c.0).collect() };
    assert_eq!(steps(dir.path()), vec![2, 4]);
    // a new 3-step run into the same folder saves 1, 2 (over the old 2) and 3, removes its own 1,
    // never the old 4
    let mut t = mlp_trainer(false, cfg(3), 1e-2);
    t.add_callback(Box::new(Checkpointing::new(dir.path(), 1, 2).unwrap()));
    t.run().unwrap();
    assert_eq!(steps(dir.path()), vec![2, 3, 4]);
}

#[test]
fn evaluate_needs_validation_data() {
    struct NoVal;
    impl lopper_train::DataSource for NoVal {
        fn train_batch(
            &self,
            s: u64,
        ) -> std::result::Result<lopper_train::Batch, lopper_train::DataError> {
            Features {
                dim: 12,
                classes: 4,
                rows: 4,
                seed: 0,
            }
            .train_batch(s)
        }
        fn val_batches(
            &self,
        ) -> std::result::Result<Vec<lopper_train::Batch>, lopper_train::DataError> {
            Ok(vec![])
        }
        fn describe(&self) -> String {
            "no validation".into()
        }
    }
    let mut t = Trainer::new(
        Box::new(mlp(false)),
        Box::new(AdamW::default()),
        Box::new(Constant::new(1e-3).unwrap()),
        Box::new(NoVal),
        TrainConfig {
            steps: 2,
            eval_every: 0,
            eval_at_end: true,
            ..Default::default()
        },
    );
    let e = t.run().unwrap_err();
    assert!(e.to_string().contains("no validation batches"), "{e}");
    // a wrong batch kind is an error, not a panic
    let mut t = Trainer::new(
        Box::new(gpt(false)),
        Box::new(AdamW::default()),
        Box::new(Constant::new(1e-3).unwrap()),
        Box::new(Features {
            dim: 12,
            classes: 4,
            rows: 4,
            seed: 0,
        }),
        TrainConfig::default(),
    );
    assert!(t.step_once().is_err());
}

#[test]
fn trainer_is_send() {
    fn send<T: Send>() {}
    send::<Trainer>();
}

/// With shapes big enough for the parallel splits of the products and the optimizer, two runs on
/// the same thread count are bit-identical (the basis of exact resume). Different thread counts
/// may differ in the last bits (lopper-nn's row splits), so a resume must use the same count.
#[test]
fn runs_are_bit_identical_on_a_fixed_thread_count() {
    use lopper_nn::{Gpt, GptConfig, WeightKind};
    let run = || {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            let mut g = Gpt::new(GptConfig {
                vocab: 64,
                ctx: 32,
                layers: 1,
                heads: 4,
                width: 128,
                tie_weights: true,
                seed: 1,
            })
            .unwrap();
            for l in g.linears_mut() {
                let n = l.in_features() * l.out_features();
                if l.name.contains("fc") {
                    l.set_kind(&WeightKind::CsrMask(mask(n, 0.2, 3))).unwrap();
                }
            }
            let mut t = Trainer::new(
                Box::new(g),
                Box::new(AdamW::default().with_par_threshold(1024)),
                Box::new(Constant::new(1e-3).unwrap()),
                Box::new(Tokens {
                    vocab: 64,
                    b: 8,
                    t: 32,
                    seed: 5,
                }),
                TrainConfig {
                    steps: 2,
                    eval_every: 0,
                    eval_at_end: false,
                    ..Default::default()
                },
            );
            t.run().unwrap();
            params(t.model_mut())
        })
    };
    assert!(run() == run());
}

/// Timing, not a check: `cargo test --release -p lopper-train --test trainer -- --ignored
/// --nocapture step_breakdown`. A whole trainer step (batch, forward, backward, gradient norm,
/// AdamW, hooks) against the AdamW update and the gradient norm alone, interleaved, best of 5.
#[test]
#[ignore]
fn step_breakdown() {
    use lopper_nn::{Gpt, GptConfig};
    use lopper_train::Optimizer;
    use lopper_train::optim::grad_norm;
    let g = Gpt::new(GptConfig {
        layers: 2,
        ..GptConfig::default()
    })
    .unwrap();
    let mut t = Trainer::new(
        Box::new(g),
        Box::new(AdamW::default()),
        Box::new(Constant::new(1e-4).unwrap()),
        Box::new(Tokens {
            vocab: 256,
            b: 4,
            t: 64,
            seed: 5,
        }),
        TrainConfig {
            steps: 1000,
            grad_clip: Some(1.0),
            ..Default::default()
        },
    );
    let mut opt = AdamW::default();
    t.step_once().unwrap();
    let (mut ts, mut to, mut tn) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        t.step_once().unwrap();
        ts = ts.min(t0.elapsed().as_secs_f64());
        let mut ps = t.model_mut().params();
        let t1 = std::time::Instant::now();
        let _ = grad_norm(&ps);
        tn = tn.min(t1.elapsed().as_secs_f64());
        let t2 = std::time::Instant::now();
        opt.step(&mut ps, 0.0).unwrap();
        to = to.min(t2.elapsed().as_secs_f64());
    }
    let n = t.model_mut().num_params();
    println!(
        "GPT 2x256, b4 t64, {n} params, {} threads: step {:.1} ms, AdamW {:.2} ms ({:.1}%), grad norm {:.2} ms ({:.1}%)",
        rayon::current_num_threads(),
        ts * 1e3,
        to * 1e3,
        100.0 * to / ts,
        tn * 1e3,
        100.0 * tn / ts
    );
}
