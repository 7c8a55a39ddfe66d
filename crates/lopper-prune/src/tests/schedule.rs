use super::*;
use crate::criterion::{Magnitude, Movement};
use crate::granularity::{AxisSlices, NM, Unstructured};
use crate::lottery::LotteryTicket;
use crate::param::{Param, ParamRef};
use crate::schedule::{OneShot, Polynomial, Pruner, Schedule};
use crate::scope::Scope;
use proptest::prelude::*;

/// A fake optimizer step: every value moves a little (pruned ones too: the hook must re-zero them).
fn sgd_step(v: &mut [f32], seed: u64) -> Vec<f32> {
    let g = values(v.len(), seed);
    for (x, gi) in v.iter_mut().zip(&g) {
        *x -= 0.05 * gi;
    }
    g
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Polynomial schedule: non-decreasing, the formula at prune steps, final at the end.
    #[test]
    fn polynomial_schedule_follows_zhu_gupta(s0 in 0.0f64..0.5, extra in 0.0f64..0.49, begin in 0u64..20, len in 0u64..50, freq in 1u64..10, e in 1.0f64..4.0) {
        let sf = s0 + extra;
        let p = Polynomial::new(s0, sf, begin, begin + len, freq, e).unwrap();
        let mut last = 0.0;
        for t in 0..begin + len + 5 {
            let s = p.sparsity_at(t);
            prop_assert!(s + 1e-12 >= last);
            last = s;
            if p.is_prune_step(t) && t < begin + len {
                let want = sf + (s0 - sf) * (1.0 - (t - begin) as f64 / len as f64).powf(e);
                prop_assert!((s - want).abs() < 1e-12);
            }
        }
        prop_assert!(p.is_prune_step(begin + len));
        prop_assert_eq!(p.sparsity_at(begin + len), sf);
        prop_assert_eq!(p.sparsity_at(begin.saturating_sub(1)), if begin == 0 { p.sparsity_at(0) } else { 0.0 });
    }

    /// Gradual pruning through the Pruner hook: masks only shrink, counts are exact at each
    /// prune step, and pruned weights stay zero after every optimizer step.
    #[test]
    fn gradual_masks_are_monotone_and_exact(rows in 2usize..8, cols in 2usize..8, sf in 0.1f64..0.95, seed: u64, movement: bool) {
        let n = rows * cols;
        let shape = [rows, cols];
        let mut w = values(n, seed);
        let sched = Polynomial::new(0.0, sf, 2, 20, 3, 3.0).unwrap();
        let crit: Box<dyn crate::Criterion> = if movement { Box::new(Movement::new()) } else { Box::new(Magnitude) };
        let mut pr = Pruner::new(crit, Box::new(Unstructured), Scope::layer(), Box::new(sched));
        let mut prev: Option<Vec<bool>> = None;
        for t in 0..25u64 {
            let g = sgd_step(&mut w, seed ^ t);
            pr.observe(&[ParamRef::new("w", &shape, &w).with_grad(&g)]).unwrap();
            let ev = pr.after_step(t, &mut [Param::new("w", &shape, &mut w).with_grad(&g)]).unwrap();
            if let Some(m) = pr.mask("w") {
                for (x, &k) in w.iter().zip(m) { if !k { prop_assert_eq!(*x, 0.0); } }
                if let Some(p) = &prev { for i in 0..n { prop_assert!(p[i] || !m[i], "revived {i} at step {t}"); } }
                if ev.is_some() { prop_assert_eq!(count(m), py_round(n, sched.sparsity_at(t))); }
                prev = Some(m.clone());
            }
        }
        prop_assert_eq!(count(prev.as_ref().unwrap()), py_round(n, sf));
    }

    /// Gradual pruning in global scope (two tensors ranked together) and with whole rows per
    /// layer: masks only shrink and the counts follow the schedule at every prune step.
    #[test]
    fn gradual_global_and_rows_are_monotone(r in 2usize..7, c in 2usize..7, sf in 0.1f64..0.95, seed: u64, global: bool) {
        let (sa, sb) = ([r, c], [c, r + 1]);
        let (na, nb) = (r * c, c * (r + 1));
        let mut a = values(na, seed);
        let mut b = values(nb, seed ^ 99);
        let sched = Polynomial::new(0.1, sf.max(0.1), 1, 13, 2, 2.0).unwrap();
        let (scope, gran): (Scope, Box<dyn crate::Granularity>) = if global {
            (Scope::global(0.0).unwrap(), Box::new(Unstructured))
        } else {
            (Scope::layer(), Box::new(AxisSlices::rows()))
        };
        let mut pr = Pruner::new(Box::new(Magnitude), gran, scope, Box::new(sched));
        let mut prev: Option<Vec<bool>> = None;
        for t in 0..16u64 {
            sgd_step(&mut a, seed ^ t);
            sgd_step(&mut b, seed ^ t ^ 7);
            let ev = pr.after_step(t, &mut [Param::new("a", &sa, &mut a), Param::new("b", &sb, &mut b)]).unwrap();
            let (Some(ma), Some(mb)) = (pr.mask("a"), pr.mask("b")) else { continue };
            let m: Vec<bool> = ma.iter().chain(mb).copied().collect();
            for (x, &k) in a.iter().chain(&b).zip(&m) { if !k { prop_assert_eq!(*x, 0.0); } }
            if let Some(p) = &prev { for i in 0..m.len() { prop_assert!(p[i] || !m[i], "revived {i} at step {t}"); } }
            if ev.is_some() {
                let s = sched.sparsity_at(t);
                if global {
                    prop_assert_eq!(count(&m), py_round(na + nb, s));
                } else {
                    prop_assert_eq!(count(ma), py_round(r, s) * c);
                    prop_assert_eq!(count(mb), py_round(c, s) * (r + 1));
                }
            }
            prev = Some(m);
        }
    }

    /// Lottery ticket: after round r, sparsity 1-(1-p)^r (exact count), nested mask history,
    /// survivors restored to their rewind-step values, pruned ones zero.
    #[test]
    fn lottery_rewinds_survivors(n in 4usize..60, p in 0.1f64..0.6, rounds in 1usize..4, k in 0u64..3, seed: u64) {
        let shape = [n / 2 + 1, 2];
        let n = shape[0] * 2;
        let mut w = values(n, seed);
        let mut lt = LotteryTicket::new(p, rounds, k, Scope::layer()).unwrap();
        let mut saved = None;
        let mut step = 0u64;
        for r in 1..=rounds {
            for _ in 0..5 {
                sgd_step(&mut w, seed ^ step);
                lt.after_step(step, &mut [Param::new("w", &shape, &mut w)]).unwrap();
                if step == k && saved.is_none() { saved = Some(w.clone()); }
                step += 1;
            }
            let rep = lt.end_round(&mut [Param::new("w", &shape, &mut w)]).unwrap();
            step = rep.rewind_step;
            let m = &lt.masks()["w"];
            let target = 1.0 - (1.0 - p).powi(r as i32);
            prop_assert_eq!(count(m), py_round(n, target));
            let ck = saved.as_ref().unwrap();
            for i in 0..n { prop_assert_eq!(w[i], if m[i] { ck[i] } else { 0.0 }); }
            prop_assert_eq!(lt.history().len(), r);
        }
        for pair in lt.history().windows(2) {
            for (a, b) in pair[0]["w"].iter().zip(&pair[1]["w"]) { prop_assert!(*a || !*b); }
        }
        prop_assert!(lt.end_round(&mut [Param::new("w", &shape, &mut w)]).is_err());
    }
}

#[test]
fn one_shot_and_structured_pruner() {
    let shape = [4, 8];
    let mut w = values(32, 3);
    let sched = OneShot::new(5, 0.5).unwrap();
    assert!(OneShot::new(0, 1.0).is_err());
    let mut pr = Pruner::new(
        Box::new(Magnitude),
        Box::new(AxisSlices::rows()),
        Scope::layer(),
        Box::new(sched),
    );
    for t in 0..5 {
        assert!(
            pr.after_step(t, &mut [Param::new("w", &shape, &mut w)])
                .unwrap()
                .is_none()
        );
    }
    let ev = pr
        .after_step(5, &mut [Param::new("w", &shape, &mut w)])
        .unwrap()
        .unwrap();
    assert_eq!(ev.report.totals.kept, 16);
    assert_eq!(
        w.chunks(8).filter(|r| r.iter().all(|x| *x == 0.0)).count(),
        2
    );
    assert!(ev.report.totals.kept_magnitude > 0.5 && ev.report.totals.flops_saved == 0.5);
    // N:M via the pruner, and the grad hook
    let mut pr = Pruner::new(
        Box::new(Magnitude),
        Box::new(NM::new(2, 4).unwrap()),
        Scope::layer(),
        Box::new(OneShot::new(0, 0.0).unwrap()),
    );
    pr.after_step(0, &mut [Param::new("w", &shape, &mut w)])
        .unwrap();
    let mut g = vec![1.0f32; 32];
    pr.mask_grad("w", &mut g).unwrap();
    assert!(g.iter().sum::<f32>() <= 16.0);
    assert!(Polynomial::new(0.5, 0.2, 0, 10, 1, 3.0).is_err());
    assert!(Polynomial::new(0.0, 0.5, 10, 5, 1, 3.0).is_err());
    assert!(Polynomial::new(0.0, 0.5, 0, 10, 0, 3.0).is_err());
    assert!(
        LotteryTicket::new(0.2, 2, 100, Scope::layer())
            .unwrap()
            .end_round(&mut [Param::new("w", &shape, &mut w)])
            .is_err()
    );
}
