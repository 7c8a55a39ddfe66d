//! Compression stages driven hook by hook on a small GPT (width 32, context 16), with a recording
//! fake optimizer (plain SGD that logs every remap).
use lopper_nn::{Gpt, GptConfig, Mlp, MlpActivation, ParamMut, Weight};
use lopper_prune::granularity::kept_count;
use lopper_train::compress::{
    GradualMagnitude, GradualMagnitudeConfig, Grow, LayerScope, Layout, LowRankRule,
    MaskedMagnitude, Rigl, RiglConfig, RiglEnd, ToLora, ToLowRank, ToSparse24, stored_positions,
};
use lopper_train::{
    Batch, Callback, CallbackState, Ctx, Model, OptimState, Optimizer, Result, RunLog,
};
use std::collections::BTreeMap;

type Gather = Option<Vec<Option<usize>>>;
/// Parameter values by name.
type Snapshot = Vec<(String, Vec<f32>)>;

/// Plain SGD (ignores masks: Masked layers re-mask at every forward) that records remaps.
#[derive(Default)]
struct Recorder {
    remaps: Vec<(String, Gather)>,
}

impl Optimizer for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn step(&mut self, params: &mut [ParamMut<'_>], lr: f32) -> Result<()> {
        for p in params.iter_mut() {
            for (v, g) in p.values.iter_mut().zip(p.grad) {
                *v -= lr * g;
            }
        }
        Ok(())
    }
    fn remap(&mut self, name: &str, gather: Option<&[Option<usize>]>) {
        self.remaps
            .push((name.to_string(), gather.map(<[Option<usize>]>::to_vec)));
    }
    fn state(&self) -> OptimState {
        OptimState::default()
    }
    fn load_state(&mut self, _: &OptimState) -> Result<()> {
        Ok(())
    }
}

fn gpt(seed: u64) -> Gpt {
    Gpt::new(GptConfig {
        vocab: 64,
        ctx: 16,
        layers: 2,
        heads: 2,
        width: 32,
        tie_weights: true,
        seed,
    })
    .unwrap()
}

/// A deterministic token batch (2 x 16) for `step`.
fn batch(step: u64) -> Batch {
    let (b, t) = (2, 16);
    let mut x = step.wrapping_mul(2654435761).wrapping_add(12345);
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) % 64) as u32
    };
    let seq: Vec<u32> = (0..b * (t + 1)).map(|_| next()).collect();
    let mut tokens = Vec::new();
    let mut targets = Vec::new();
    for r in 0..b {
        tokens.extend_from_slice(&seq[r * (t + 1)..r * (t + 1) + t]);
        targets.extend_from_slice(&seq[r * (t + 1) + 1..(r + 1) * (t + 1)]);
    }
    Batch::Tokens {
        tokens,
        targets,
        b,
        t,
    }
}

struct Run<'a> {
    model: &'a mut dyn Model,
    opt: &'a mut Recorder,
    log: RunLog,
    total: u64,
    lr: f32,
}

impl Run<'_> {
    fn ctx(&mut self, step: u64) -> Ctx<'_> {
        Ctx {
            step,
            total_steps: self.total,
            model: self.model,
            optimizer: self.opt,
            lr: self.lr,
            loss: f32::NAN,
            log: &mut self.log,
        }
    }
    fn begin(&mut self, cb: &mut dyn Callback, step: u64) -> Result<()> {
        cb.on_begin(&mut self.ctx(step))
    }
    /// One full step through every hook; `inspect` runs between after_backward and the update.
    fn step(
        &mut self,
        cb: &mut dyn Callback,
        step: u64,
        inspect: &mut dyn FnMut(&mut dyn Model),
    ) -> Result<f32> {
        cb.before_step(&mut self.ctx(step))?;
        self.model.zero_grad();
        let loss = self.model.forward(&batch(step))?;
        self.model.backward()?;
        cb.after_backward(&mut self.ctx(step))?;
        inspect(self.model);
        let lr = self.lr;
        self.opt.step(&mut self.model.params(), lr)?;
        cb.on_step_end(&mut self.ctx(step))?;
        Ok(loss)
    }
}

fn layer_masks(model: &dyn Model) -> BTreeMap<String, Vec<bool>> {
    model
        .linears()
        .iter()
        .map(|l| {
            let (m, k) = (l.out_features(), l.in_features());
            let mask = match l.weight() {
                Weight::Masked { mask, .. } => mask.clone(),
                w => {
                    let mut mask = vec![false; m * k];
                    for f in stored_positions(w, m, k).unwrap() {
                        mask[f] = true;
                    }
                    mask
                }
            };
            (l.name.clone(), mask)
        })
        .collect()
}

#[test]
fn gradual_follows_the_schedule_and_switches_to_csr_once() {
    let mut model = gpt(1);
    let mut opt = Recorder::default();
    let cfg = GradualMagnitudeConfig {
        target: 0.8,
        start: 2,
        end: 12,
        every: 2,
        switch_to_csr_at: 0.7,
        ..Default::default()
    };
    let mut stage = GradualMagnitude::new(cfg).unwrap();
    let mut run = Run {
        model: &mut model,
        opt: &mut opt,
        log: RunLog::default(),
        total: 16,
        lr: 0.05,
    };
    run.begin(&mut stage, 0).unwrap();
    let mut prev: Option<BTreeMap<String, Vec<bool>>> = None;
    let mut switched_at = None;
    for t in 0..16 {
        let pruning = stage.is_prune_step(t);
        run.step(&mut stage, t, &mut |_| {}).unwrap();
        let s = stage.sparsity_at(t);
        let masks = layer_masks(run.model);
        for l in run.model.linears() {
            let n = l.out_features() * l.in_features();
            let mask = &masks[&l.name];
            if t < 2 {
                assert_eq!(l.weight().kind_name(), "dense");
                continue;
            }
            // exact counts at the schedule's sparsity
            assert_eq!(
                mask.iter().filter(|b| **b).count(),
                kept_count(n, s),
                "{} at step {t}",
                l.name
            );
            let want = if s >= 0.7 { "csr" } else { "masked" };
            assert_eq!(l.weight().kind_name(), want, "{} at step {t}", l.name);
            // masks stay true: nothing off the mask is non-zero after the update
            let dense = l.dense_weight();
            assert!(dense.iter().zip(mask).all(|(x, &k)| k || *x == 0.0));
            if let Some(p) = &prev {
                let pm = &p[&l.name];
                // masks only shrink; unchanged between pruning steps
                assert!(mask.iter().zip(pm).all(|(&a, &b)| !a || b));
                if !pruning {
                    assert_eq!(mask, pm);
                }
            }
        }
        if s >= 0.7 && switched_at.is_none() {
            switched_at = Some(t);
        }
        prev = (t >= 2).then_some(masks);
    }
    let sw = switched_at.unwrap();
    let switch_events: Vec<_> = run
        .log
        .events
        .iter()
        .filter(|e| e.message.contains("-> csr at"))
        .collect();
    assert_eq!(switch_events.len(), 8, "{:?}", run.log.events);
    assert!(switch_events.iter().all(|e| e.step == sw));
    assert!(
        switch_events[0]
            .message
            .starts_with(&format!("step {sw}: h.0.attn.qkv -> csr at"))
    );
    // every prune step remapped every layer's weight with a gather of the right length
    let prune_steps = (0..16).filter(|&t| stage.is_prune_step(t)).count();
    assert_eq!(opt.remaps.len(), 8 * prune_steps);
}

#[test]
fn switch_to_csr_keeps_the_function() {
    // A: the stage prunes straight to 75% (> switch) at step 0 -> Csr. B: the same weights with
    // the same masks as Masked (dense compute). Same function.
    let mut a = gpt(2);
    let mut b = gpt(2);
    let mut opt = Recorder::default();
    let mut stage = GradualMagnitude::new(GradualMagnitudeConfig {
        target: 0.75,
        start: 0,
        end: 0,
        every: 1,
        ..Default::default()
    })
    .unwrap();
    let mut run = Run {
        model: &mut a,
        opt: &mut opt,
        log: RunLog::default(),
        total: 4,
        lr: 0.0,
    };
    run.begin(&mut stage, 0).unwrap();
    stage.before_step(&mut run.ctx(0)).unwrap();
    let masks = stage.masks().clone();
    assert_eq!(masks.len(), 8);
    for l in b.linears_mut() {
        l.set_kind(&lopper_nn::WeightKind::Masked(masks[&l.name].clone()))
            .unwrap();
    }
    for l in a.linears() {
        assert_eq!(l.weight().kind_name(), "csr");
    }
    let la = Model::forward(&mut a, &batch(7)).unwrap();
    let lb = Model::forward(&mut b, &batch(7)).unwrap();
    assert!((la - lb).abs() < 1e-5, "{la} vs {lb}");
    let (xa, xb) = (Model::logits(&a), Model::logits(&b));
    let worst = xa
        .iter()
        .zip(xb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "logits differ by {worst}");
    // executed FLOPs fell with the Csr kinds
    let fa = Model::flops(&a, &batch(0));
    let fb = Model::flops(&b, &batch(0));
    assert!(fa.forward.executed < fb.forward.executed);
}

#[test]
fn masked_magnitude_keeps_dense_compute() {
    let mut model = gpt(3);
    let mut opt = Recorder::default();
    let mut stage = MaskedMagnitude::new(0.8, 1, LayerScope::all()).unwrap();
    let mut run = Run {
        model: &mut model,
        opt: &mut opt,
        log: RunLog::default(),
        total: 5,
        lr: 0.05,
    };
    run.begin(&mut stage, 0).unwrap();
    let flops0 = run.model.flops(&batch(0));
    for t in 0..5 {
        run.step(&mut stage, t, &mut |_| {}).unwrap();
    }
    for l in run.model.linears() {
        let n = l.out_features() * l.in_features();
        let Weight::Masked { mask, .. } = l.weight() else {
            panic!("{} is {}", l.name, l.weight().kind_name())
        };
        assert_eq!(mask.iter().filter(|b| **b).count(), kept_count(n, 0.8));
        assert!(
            l.dense_weight()
                .iter()
                .zip(mask)
                .all(|(x, &k)| k || *x == 0.0)
        );
    }
    assert_eq!(run.model.flops(&batch(0)), flops0);
    // gathers: identity on kept entries, None on pruned ones
    for (name, g) in &opt.remaps {
        let g = g.as_ref().unwrap();
        let layer = name.trim_end_matches(".weight");
        let mask = &stage.masks()[layer];
        for (i, x) in g.iter().enumerate() {
            assert_eq!(*x, mask[i].then_some(i));
        }
    }
}

#[test]
fn sparse24_pattern_and_gather() {
    let mut model = gpt(4);
    let before: BTreeMap<String, Vec<f32>> = model
        .linears()
        .map(|l| (l.name.clone(), l.dense_weight()))
        .collect();
    let mut opt = Recorder::default();
    let mut stage = ToSparse24::new(
        0,
        LayerScope {
            include: Some(r"mlp\.".into()),
            exclude: None,
        },
    );
    let mut run = Run {
        model: &mut model,
        opt: &mut opt,
        log: RunLog::default(),
        total: 3,
        lr: 0.0,
    };
    run.begin(&mut stage, 0).unwrap();
    stage.before_step(&mut run.ctx(0)).unwrap();
    for l in model.linears() {
        let (m, k) = (l.out_features(), l.in_features());
        if !l.name.contains("mlp.") {
            assert_eq!(l.weight().kind_name(), "dense");
            continue;
        }
        assert_eq!(l.weight().kind_name(), "sparse24");
        let d = l.dense_weight();
        let old = &before[&l.name];
        for r in 0..m {
            for g in 0..k / 4 {
                let grp = &d[r * k + 4 * g..r * k + 4 * g + 4];
                assert!(grp.iter().filter(|x| **x != 0.0).count() <= 2);
                // the kept two are the two largest |w| of the group
                let mut mags: Vec<f32> = old[r * k + 4 * g..r * k + 4 * g + 4]
                    .iter()
                    .map(|x| x.abs())
                    .collect();
                mags.sort_by(|a, b| b.total_cmp(a));
                for (j, x) in grp.iter().enumerate() {
                    if *x != 0.0 {
                        assert!(old[r * k + 4 * g + j].abs() >= mags[1]);
                    }
                }
            }
        }
        let (_, g) = opt
            .remaps
            .iter()
            .find(|(n, _)| *n == format!("{}.weight", l.name))
            .unwrap();
        let g = g.as_ref().unwrap();
        assert_eq!(g.len(), m * k / 2);
        let Weight::Sparse24 { w, .. } = l.weight() else {
            unreachable!()
        };
        for (i, src) in g.iter().enumerate() {
            assert_eq!(w.values()[i], old[src.unwrap()]);
        }
    }
    assert_eq!(opt.remaps.len(), 4);
}

#[test]
fn lowrank_and_lora_conversions() {
    let mut model = gpt(5);
    let mut opt = Recorder::default();
    let mut lr = ToLowRank::new(
        1,
        LowRankRule::Energy(0.9),
        LayerScope {
            include: Some("attn.proj".into()),
            exclude: None,
        },
    )
    .unwrap();
    let mut lora = ToLora::new(
        2,
        4,
        8.0,
        false,
        0,
        LayerScope {
            include: Some("mlp".into()),
            exclude: None,
        },
    )
    .unwrap();
    let mut run = Run {
        model: &mut model,
        opt: &mut opt,
        log: RunLog::default(),
        total: 4,
        lr: 0.05,
    };
    run.begin(&mut lr, 0).unwrap();
    run.begin(&mut lora, 0).unwrap();
    run.step(&mut lr, 0, &mut |_| {}).unwrap();
    run.step(&mut lr, 1, &mut |_| {}).unwrap();
    // LoRA keeps the function at conversion (B = 0)
    let l0 = run.model.forward(&batch(9)).unwrap();
    lora.before_step(&mut run.ctx(2)).unwrap();
    let l1 = run.model.forward(&batch(9)).unwrap();
    assert!((l0 - l1).abs() < 1e-5, "{l0} vs {l1}");
    for l in run.model.linears() {
        let want = if l.name.contains("attn.proj") {
            "lowrank"
        } else if l.name.contains("mlp") {
            "lora"
        } else {
            "dense"
        };
        assert_eq!(l.weight().kind_name(), want, "{}", l.name);
    }
    let names: Vec<String> = run.model.params().iter().map(|p| p.name.clone()).collect();
    assert!(names.contains(&"h.0.attn.proj.u".to_string()));
    assert!(names.contains(&"h.1.mlp.fc.lora_b".to_string()));
    assert!(
        run.opt
            .remaps
            .iter()
            .any(|(n, g)| n == "h.0.attn.proj.weight" && g.is_none())
    );
    assert!(
        run.opt
            .remaps
            .iter()
            .any(|(n, g)| n == "h.1.mlp.proj.weight" && g.is_none())
    );
    assert!(
        run.log
            .events
            .iter()
            .any(|e| e.message.contains("lowrank (rank"))
    );
}

fn rigl_cfg(grow: Grow) -> RiglConfig {
    RiglConfig {
        sparsity: 0.8,
        layout: Layout::Erk,
        delta_t: 2,
        drop_fraction: 0.3,
        end: RiglEnd::Step(9),
        grow,
        seed: 3,
        scope: LayerScope::all(),
    }
}

#[test]
fn rigl_keeps_nnz_and_moves_connections() {
    for grow in [Grow::Gradient, Grow::Random] {
        let mut model = gpt(6);
        let mut opt = Recorder::default();
        let mut stage = Rigl::new(rigl_cfg(grow)).unwrap();
        let mut run = Run {
            model: &mut model,
            opt: &mut opt,
            log: RunLog::default(),
            total: 12,
            lr: 0.05,
        };
        run.begin(&mut stage, 0).unwrap();
        let nnz0: Vec<usize> = stage
            .masks()
            .iter()
            .map(|m| m.iter().filter(|b| **b).count())
            .collect();
        let (kept, all): (usize, usize) = (
            nnz0.iter().sum(),
            stage.masks().iter().map(|m| m.len()).sum(),
        );
        assert!((1.0 - kept as f64 / all as f64 - 0.8).abs() < 0.01);
        for l in run.model.linears() {
            assert_eq!(l.weight().kind_name(), "csr");
        }
        let mut moved_total = 0;
        for t in 0..12 {
            let before = stage.masks().to_vec();
            let n_remaps = run.opt.remaps.len();
            let update = stage.is_update_step(t);
            let mut checked = false;
            let layers = stage.layers().to_vec();
            // stage is borrowed by run.step; inspect grown weights through a snapshot after
            run.step(&mut stage, t, &mut |m| {
                if !update {
                    return;
                }
                // between after_backward and the update: grown (RigL) weights are 0 and dw is the
                // dense gradient at the new pattern; dense gradients were dropped
                for l in m.linears() {
                    assert!(l.dense_grad().is_none());
                }
                checked = true;
            })
            .unwrap();
            assert_eq!(checked, update);
            let after = stage.masks();
            for (i, (b, a)) in before.iter().zip(after).enumerate() {
                assert_eq!(
                    a.iter().filter(|x| **x).count(),
                    nnz0[i],
                    "layer {i} step {t}"
                );
                let l = run
                    .model
                    .linears()
                    .into_iter()
                    .find(|l| l.name == layers[i])
                    .unwrap();
                let Weight::Csr { w, .. } = l.weight() else {
                    panic!()
                };
                assert_eq!(w.nnz(), nnz0[i]);
                if !update {
                    assert_eq!(a, b);
                }
            }
            if update {
                let changed: usize = before
                    .iter()
                    .zip(after)
                    .map(|(b, a)| b.iter().zip(a).filter(|(x, y)| **x && !**y).count())
                    .sum();
                assert!(changed > 0, "step {t}: nothing moved");
                moved_total += changed;
                // the gathers: survivors point at their old stored index, grown ones are None
                let new = &run.opt.remaps[n_remaps..];
                assert_eq!(new.len(), layers.len());
                for (i, (name, g)) in new.iter().enumerate() {
                    assert_eq!(*name, format!("{}.weight", layers[i]));
                    let g = g.as_ref().unwrap();
                    let old_pos: Vec<usize> =
                        (0..before[i].len()).filter(|&f| before[i][f]).collect();
                    let new_pos: Vec<usize> =
                        (0..after[i].len()).filter(|&f| after[i][f]).collect();
                    for (j, src) in g.iter().enumerate() {
                        match src {
                            Some(s) => assert_eq!(old_pos[*s], new_pos[j]),
                            None => assert!(!before[i][new_pos[j]]),
                        }
                    }
                }
            }
        }
        assert!(moved_total > 0);
        let updates = run
            .log
            .events
            .iter()
            .filter(|e| e.message.contains("moved"))
            .count();
        assert_eq!(updates, 4, "updates at 2, 4, 6, 8: {:?}", run.log.events);
    }
}

/// The first event says how many mask updates the run will have, and says so when there is none
/// (delta_t not below the end step): never a silent RigL that does nothing.
#[test]
fn rigl_announces_its_updates_and_their_absence() {
    for (delta_t, end, total, expect) in [
        (2, 9, 12, "4 updates: every 2 steps until step 9"),
        (
            9,
            9,
            12,
            "no mask update in this run: delta_t = 9 is not below step 9",
        ),
        (
            5,
            9,
            4,
            "no mask update in this run: delta_t = 5 is not below step 4",
        ),
    ] {
        let mut model = gpt(6);
        let mut opt = Recorder::default();
        let mut stage = Rigl::new(RiglConfig {
            delta_t,
            end: RiglEnd::Step(end),
            ..rigl_cfg(Grow::Gradient)
        })
        .unwrap();
        let mut run = Run {
            model: &mut model,
            opt: &mut opt,
            log: RunLog::default(),
            total,
            lr: 0.05,
        };
        run.begin(&mut stage, 0).unwrap();
        let first = &run.log.events[0].message;
        assert!(first.contains(expect), "{first}");
        let updates = (0..total).filter(|&t| stage.is_update_step(t)).count();
        let said: usize = first
            .split(" updates:")
            .next()
            .and_then(|s| s.rsplit('(').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert_eq!(said, updates, "{first}");
    }
}

#[test]
fn rigl_grown_weights_start_at_zero_with_their_gradient() {
    let mut model = gpt(7);
    let mut opt = Recorder::default();
    let mut stage = Rigl::new(rigl_cfg(Grow::Gradient)).unwrap();
    let mut run = Run {
        model: &mut model,
        opt: &mut opt,
        log: RunLog::default(),
        total: 12,
        lr: 0.05,
    };
    run.begin(&mut stage, 0).unwrap();
    run.step(&mut stage, 0, &mut |_| {}).unwrap();
    run.step(&mut stage, 1, &mut |_| {}).unwrap();
    let before = stage.masks().to_vec();
    // step 2 by hand, keeping the dense gradient of one layer for comparison
    stage.before_step(&mut run.ctx(2)).unwrap();
    run.model.zero_grad();
    run.model.forward(&batch(2)).unwrap();
    run.model.backward().unwrap();
    let name = stage.layers()[2].clone();
    let g = run
        .model
        .linears()
        .into_iter()
        .find(|l| l.name == name)
        .unwrap()
        .dense_grad()
        .unwrap()
        .to_vec();
    stage.after_backward(&mut run.ctx(2)).unwrap();
    let after = &stage.masks()[2];
    let l = run
        .model
        .linears()
        .into_iter()
        .find(|l| l.name == name)
        .unwrap();
    let Weight::Csr { w, dw, .. } = l.weight() else {
        panic!()
    };
    let k = l.in_features();
    let mut p = 0;
    let mut grown = 0;
    for r in 0..l.out_features() {
        let (cols, vals) = w.row(r);
        for (c, v) in cols.iter().zip(vals) {
            let f = r * k + *c as usize;
            assert!(after[f]);
            assert_eq!(dw[p], g[f], "dw at the new pattern is the dense gradient");
            if !before[2][f] {
                assert_eq!(*v, 0.0);
                grown += 1;
            }
            p += 1;
        }
    }
    assert!(grown > 0);
}

/// Runs `steps` steps of `make()`'s stage on a fresh model, checkpointing (stage state and
/// parameter values) after `cut` steps and resuming on a second fresh model and stage; the resumed
/// run must end bit-for-bit where the straight one does.
fn check_resume(
    what: &str,
    make: &dyn Fn() -> Box<dyn Callback>,
    steps: u64,
    cut: u64,
    orders: &[bool],
) {
    let straight = {
        let mut model = gpt(8);
        let mut opt = Recorder::default();
        let mut cb = make();
        let mut run = Run {
            model: &mut model,
            opt: &mut opt,
            log: RunLog::default(),
            total: steps,
            lr: 0.05,
        };
        run.begin(cb.as_mut(), 0).unwrap();
        for t in 0..steps {
            run.step(cb.as_mut(), t, &mut |_| {}).unwrap();
        }
        snapshot(&mut model)
    };
    let (state, params, weights): (CallbackState, Snapshot, Vec<Weight>) = {
        let mut model = gpt(8);
        let mut opt = Recorder::default();
        let mut cb = make();
        let mut run = Run {
            model: &mut model,
            opt: &mut opt,
            log: RunLog::default(),
            total: steps,
            lr: 0.05,
        };
        run.begin(cb.as_mut(), 0).unwrap();
        for t in 0..cut {
            run.step(cb.as_mut(), t, &mut |_| {}).unwrap();
        }
        let weights = model.linears().map(|l| l.weight().clone()).collect();
        (cb.state(), snapshot(&mut model), weights)
    };
    // two loaders: (a) stage state and on_begin first, then the parameter values; (b) the
    // layers' kinds and values first (as lopper-train's checkpoint loader does), then the stage.
    // LoRA needs (b): its frozen base is not a parameter.
    for &model_first in orders {
        let mut model = gpt(8);
        if model_first {
            for (l, w) in model.linears_mut().zip(&weights) {
                l.set_weight(w.clone()).unwrap();
            }
        }
        let mut opt = Recorder::default();
        let mut cb = make();
        cb.load_state(&state).unwrap();
        let mut run = Run {
            model: &mut model,
            opt: &mut opt,
            log: RunLog::default(),
            total: steps,
            lr: 0.05,
        };
        run.begin(cb.as_mut(), cut).unwrap();
        for (n, v) in &params {
            run.model.set_param(n, v).unwrap();
        }
        for t in cut..steps {
            run.step(cb.as_mut(), t, &mut |_| {}).unwrap();
        }
        let what = format!("{what} (model first: {model_first})");
        let resumed = snapshot(&mut model);
        assert_eq!(resumed.len(), straight.len(), "{what}: parameter count");
        for ((n, a), (m, b)) in resumed.iter().zip(&straight) {
            assert_eq!(n, m, "{what}");
            let diff = a
                .iter()
                .zip(b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
            assert!(
                a.len() == b.len() && diff == 0,
                "{what}: {n} differs after resume ({} vs {} values, {diff} differ)",
                a.len(),
                b.len()
            );
        }
    }
}

fn snapshot(model: &mut dyn Model) -> Snapshot {
    model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.values.to_vec()))
        .collect()
}

#[test]
fn resume_continues_exactly() {
    let gradual = || -> Box<dyn Callback> {
        Box::new(
            GradualMagnitude::new(GradualMagnitudeConfig {
                target: 0.8,
                start: 1,
                end: 9,
                every: 2,
                ..Default::default()
            })
            .unwrap(),
        )
    };
    check_resume("gradual", &gradual, 12, 6, &[false, true]);
    let rigl = || -> Box<dyn Callback> { Box::new(Rigl::new(rigl_cfg(Grow::Random)).unwrap()) };
    check_resume("rigl", &rigl, 12, 5, &[false, true]);
    let s24 = || -> Box<dyn Callback> { Box::new(ToSparse24::new(2, LayerScope::all())) };
    check_resume("s24", &s24, 6, 4, &[false, true]);
    let lowrank = || -> Box<dyn Callback> {
        Box::new(ToLowRank::new(1, LowRankRule::Energy(0.8), LayerScope::all()).unwrap())
    };
    check_resume("lowrank", &lowrank, 5, 3, &[false, true]);
    let lora = || -> Box<dyn Callback> {
        Box::new(ToLora::new(1, 4, 8.0, true, 0, LayerScope::all()).unwrap())
    };
    check_resume("lora", &lora, 5, 3, &[true]);
    let masked = || -> Box<dyn Callback> {
        Box::new(MaskedMagnitude::new(0.7, 2, LayerScope::all()).unwrap())
    };
    check_resume("masked", &masked, 6, 4, &[false, true]);
}

#[test]
fn bad_configs_name_the_stage() {
    let msg = |e: lopper_train::Error| e.to_string();
    let e = GradualMagnitude::new(GradualMagnitudeConfig {
        target: 1.5,
        end: 10,
        ..Default::default()
    });
    assert!(msg(e.err().unwrap()).starts_with("gradual_magnitude: target sparsity 1.5"));
    let e = GradualMagnitude::new(GradualMagnitudeConfig {
        start: 10,
        end: 5,
        ..Default::default()
    });
    assert!(msg(e.err().unwrap()).contains("gradual_magnitude: end 5 is before start 10"));
    let e = Rigl::new(RiglConfig {
        sparsity: 1.5,
        ..Default::default()
    });
    assert!(msg(e.err().unwrap()).starts_with("rigl: sparsity 1.5"));
    let e = ToLowRank::new(0, LowRankRule::Rank(0), LayerScope::all());
    assert!(msg(e.err().unwrap()).starts_with("lowrank:"));
    let e = ToLora::new(0, 0, 1.0, false, 0, LayerScope::all());
    assert!(msg(e.err().unwrap()).starts_with("lora:"));
    // checked against the model and the run at on_begin
    let mut mlp = Mlp::new(&[6, 8, 3], MlpActivation::Relu, 0).unwrap();
    let mut opt = Recorder::default();
    let mut run = Run {
        model: &mut mlp,
        opt: &mut opt,
        log: RunLog::default(),
        total: 10,
        lr: 0.1,
    };
    let e = run.begin(&mut ToSparse24::new(1, LayerScope::all()), 0);
    let e = msg(e.err().unwrap());
    assert!(e.starts_with("sparse24: layer fc.0 has K = 6"), "{e}");
    let e = run.begin(&mut ToSparse24::new(10, LayerScope::all()), 0);
    assert!(msg(e.err().unwrap()).starts_with("sparse24: at 10 is not a step"));
    let mut g = GradualMagnitude::new(GradualMagnitudeConfig {
        end: 5,
        scope: LayerScope {
            include: Some("nope".into()),
            exclude: None,
        },
        ..Default::default()
    })
    .unwrap();
    let e = msg(run.begin(&mut g, 0).err().unwrap());
    assert!(
        e.starts_with("gradual_magnitude:") && e.contains("nope"),
        "{e}"
    );
}

mod props {
    use super::*;
    use lopper_nn::WeightKind;
    use lopper_train::compress::gather;
    use proptest::prelude::*;

    /// (m, k, values, old mask, new mask)
    fn layout() -> impl Strategy<Value = (usize, usize, Vec<f32>, Vec<bool>, Vec<bool>)> {
        (1usize..7, 1usize..9).prop_flat_map(|(m, k)| {
            (
                Just(m),
                Just(k),
                proptest::collection::vec(-2.0f32..2.0, m * k),
                proptest::collection::vec(any::<bool>(), m * k),
                proptest::collection::vec(any::<bool>(), m * k),
            )
        })
    }

    fn kind(which: u8, mask: &[bool]) -> WeightKind {
        match which % 3 {
            0 => WeightKind::Dense,
            1 => WeightKind::Masked(mask.to_vec()),
            _ => WeightKind::CsrMask(mask.to_vec()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// New stored entry i takes old stored entry g[i] exactly when the old layout stored
        /// (and did not mask out) the same (r, c), and the new layout keeps it.
        #[test]
        fn gather_maps_same_positions((m, k, w, om, nm) in layout(), a in 0u8..3, b in 0u8..3) {
            let base = Weight::dense(w);
            let old = base.convert(&kind(a, &om), m, k, "l").unwrap();
            let new = old.convert(&kind(b, &nm), m, k, "l").unwrap();
            let g = gather(&old, &new, m, k).unwrap();
            let op = stored_positions(&old, m, k).unwrap();
            let np = stored_positions(&new, m, k).unwrap();
            prop_assert_eq!(g.len(), np.len());
            let live = |w: &Weight, f: usize, pos: &[usize]| match w {
                Weight::Masked { mask, .. } => mask[f],
                _ => pos.contains(&f),
            };
            for (i, src) in g.iter().enumerate() {
                let f = np[i];
                match src {
                    Some(j) => {
                        prop_assert_eq!(op[*j], f);
                        prop_assert!(live(&old, f, &op) && live(&new, f, &np));
                    }
                    None => prop_assert!(!live(&old, f, &op) || !live(&new, f, &np)),
                }
            }
        }
    }
}

#[test]
fn rigl_on_an_awkward_mlp_keeps_nnz() {
    // odd shapes, uniform layout, SET growth, a Masked layer to start from
    let mut mlp = Mlp::new(&[7, 5, 3], MlpActivation::Gelu, 4).unwrap();
    let mut opt = Recorder::default();
    let mut stage = Rigl::new(RiglConfig {
        sparsity: 0.6,
        layout: Layout::Uniform,
        delta_t: 1,
        drop_fraction: 0.5,
        end: RiglEnd::Fraction(1.0),
        grow: Grow::Random,
        seed: 9,
        scope: LayerScope::all(),
    })
    .unwrap();
    let batch = |s: u64| Batch::Features {
        x: (0..4 * 7)
            .map(|i| ((i as u64 * 31 + s * 7) % 13) as f32 / 13.0 - 0.5)
            .collect(),
        dim: 7,
        targets: (0..4).map(|i| ((i + s) % 3) as u32).collect(),
    };
    let mut log = RunLog::default();
    macro_rules! c {
        ($t:expr) => {
            &mut Ctx {
                step: $t,
                total_steps: 8,
                model: &mut mlp,
                optimizer: &mut opt,
                lr: 0.1,
                loss: f32::NAN,
                log: &mut log,
            }
        };
    }
    stage.on_begin(c!(0)).unwrap();
    let nnz0: Vec<usize> = stage
        .masks()
        .iter()
        .map(|m| m.iter().filter(|b| **b).count())
        .collect();
    assert_eq!(nnz0, vec![kept_count(35, 0.6), kept_count(15, 0.6)]);
    let mut moved = 0;
    for t in 0..8 {
        let before = stage.masks().to_vec();
        stage.before_step(c!(t)).unwrap();
        Model::zero_grad(&mut mlp);
        Model::forward(&mut mlp, &batch(t)).unwrap();
        Model::backward(&mut mlp).unwrap();
        stage.after_backward(c!(t)).unwrap();
        opt.step(&mut Model::params(&mut mlp), 0.1).unwrap();
        for (i, m) in stage.masks().iter().enumerate() {
            assert_eq!(m.iter().filter(|b| **b).count(), nnz0[i], "step {t}");
            moved += m
                .iter()
                .zip(&before[i])
                .filter(|(a, b)| **a && !**b)
                .count();
        }
    }
    assert!(moved > 0);
    // a second on_begin (a second `run` of the same trainer) keeps the masks
    let masks = stage.masks().to_vec();
    stage.on_begin(c!(8)).unwrap();
    assert_eq!(stage.masks(), &masks[..]);
}
