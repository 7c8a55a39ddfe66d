use super::*;
use crate::dst::{DstConfig, DynamicSparse, Grow, Layout, layout_densities};
use crate::param::Param;
use crate::permute;
use proptest::prelude::*;

fn cfg(density: f64, layout: Layout, grow: Grow, seed: u64) -> DstConfig {
    DstConfig {
        density,
        layout,
        grow,
        drop_fraction: 0.3,
        delta_t: 2,
        end_step: 30,
        seed,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// SET and RigL keep every tensor's kept count constant through updates; inactive weights
    /// are zero after every step; RigL's grown weights start at zero and are the inactive ones of
    /// largest gradient.
    #[test]
    fn dst_keeps_density_constant(a in 2usize..8, b in 2usize..8, d in 0.1f64..0.9, rigl: bool, erk: bool, seed: u64) {
        let shapes = [vec![a, b], vec![b, a * 2], vec![3, a, 2, 2]];
        let mut vals: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(i, s)| values(s.iter().product(), seed ^ i as u64)).collect();
        let names = ["l0", "l1", "conv"];
        let grow = if rigl { Grow::Gradient } else { Grow::Random };
        let layout = if erk { Layout::Erk } else { Layout::Uniform };
        let mut params: Vec<Param<'_>> = names.iter().zip(&shapes).zip(vals.iter_mut()).map(|((n, s), v)| Param::new(n, s, v)).collect();
        let mut ds = DynamicSparse::init(cfg(d, layout, grow, seed), &mut params).unwrap();
        drop(params);
        let counts: Vec<usize> = ds.masks().iter().map(|m| count(m)).collect();
        let mut updates = 0;
        for t in 0..32u64 {
            let grads: Vec<Vec<f32>> = vals.iter().enumerate().map(|(i, v)| values(v.len(), seed ^ t ^ (i as u64) << 8)).collect();
            for v in vals.iter_mut() { for x in v.iter_mut() { *x += 0.01; } }
            let before: Vec<Vec<bool>> = ds.masks().to_vec();
            let mut params: Vec<Param<'_>> = names.iter().zip(&shapes).zip(vals.iter_mut()).zip(&grads).map(|(((n, s), v), g)| Param::new(n, s, v).with_grad(g)).collect();
            let up = ds.after_step(t, &mut params).unwrap();
            drop(params);
            for ((m, c), v) in ds.masks().iter().zip(&counts).zip(&vals) {
                prop_assert_eq!(count(m), *c);
                for (x, &k) in v.iter().zip(m) { if !k { prop_assert_eq!(*x, 0.0); } }
            }
            if let Some(u) = up {
                updates += 1;
                prop_assert!((u.drop_fraction - 0.15 * (1.0 + (std::f64::consts::PI * t as f64 / 30.0).cos())).abs() < 1e-12);
                if rigl {
                    for ((m, old), (v, g)) in ds.masks().iter().zip(&before).zip(vals.iter().zip(&grads)) {
                        let grown: Vec<usize> = (0..m.len()).filter(|&i| m[i] && !old[i]).collect();
                        for &i in &grown { prop_assert_eq!(v[i], 0.0); }
                        // every grown weight has a gradient at least as large as any non-grown inactive one
                        let min_grown = grown.iter().map(|&i| g[i].abs()).fold(f32::INFINITY, f32::min);
                        let max_idle = (0..m.len()).filter(|&i| !m[i]).map(|i| g[i].abs()).fold(0.0f32, f32::max);
                        if !grown.is_empty() { prop_assert!(min_grown >= max_idle); }
                    }
                }
            }
        }
        prop_assert_eq!(updates, 14);
    }

    /// ERK: densities in [0, 1], total kept = density * total, smaller tensors denser.
    #[test]
    fn erk_layout_meets_budget(d in 0.05f64..1.0, a in 1usize..40, b in 1usize..40) {
        let shapes: [&[usize]; 3] = [&[a, b], &[4 * a, 4 * b], &[a, b, 3, 3]];
        let dens = layout_densities(&shapes, d, Layout::Erk).unwrap();
        let n: Vec<f64> = shapes.iter().map(|s| s.iter().product::<usize>() as f64).collect();
        let total: f64 = dens.iter().zip(&n).map(|(d, n)| d * n).sum();
        prop_assert!((total - d * n.iter().sum::<f64>()).abs() < 1e-6 * n.iter().sum::<f64>());
        prop_assert!(dens.iter().all(|x| (0.0..=1.0 + 1e-12).contains(x)));
        prop_assert!(dens[0] + 1e-12 >= dens[1]);
    }

    /// N:M permutation: a valid permutation that never keeps less magnitude than the identity,
    /// with the reported fraction matching the permuted matrix.
    #[test]
    fn permutation_never_loses(rows in 1usize..6, groups in 2usize..5, seed: u64) {
        let cols = groups * 4;
        let v = values_with_ties(rows * cols, seed);
        let sh = [rows, cols];
        let p = permute::search(&v, &sh, 2, 4, 4).unwrap();
        prop_assert!(p.kept_permuted + 1e-12 >= p.kept_identity);
        let pv = permute::permute_columns(&v, &sh, &p.perm).unwrap();
        let total: f64 = v.iter().map(|x| f64::from(x.abs())).sum();
        let kept: f64 = pv.chunks(4).map(|g| {
            let mut a: Vec<f64> = g.iter().map(|x| f64::from(x.abs())).collect();
            a.sort_by(|x, y| y.total_cmp(x));
            a[0] + a[1]
        }).sum();
        prop_assert!((kept / total - p.kept_permuted).abs() < 1e-9);
        let inv = permute::inverse(&p.perm).unwrap();
        prop_assert_eq!(permute::permute_columns(&pv, &sh, &inv).unwrap(), v);
    }
}

#[test]
fn permutation_finds_the_obvious_gain() {
    // three large values in the first group: 2:4 drops one unless it moves to the second group
    let v = [9.0, 9.0, 9.0, 0.1, 0.1, 0.1, 0.1, 0.1f32];
    let p = permute::search(&v, &[1, 8], 2, 4, 4).unwrap();
    assert!((p.kept_identity - 18.2 / 27.5).abs() < 1e-6, "{p:?}");
    assert!((p.kept_permuted - 27.1 / 27.5).abs() < 1e-6, "{p:?}");
    assert!(permute::search(&v, &[1, 8], 2, 3, 1).is_err());
    assert!(permute::permute_columns(&v, &[1, 8], &[0, 0, 1, 2, 3, 4, 5, 6]).is_err());
    assert!(layout_densities(&[&[2, 2]], 0.0, Layout::Erk).is_err());
}

#[test]
fn inverse_refuses_what_is_not_a_permutation() {
    assert_eq!(permute::inverse(&[2, 0, 1]).unwrap(), vec![1, 2, 0]);
    assert_eq!(permute::inverse(&[]).unwrap(), Vec::<usize>::new());
    let e = permute::inverse(&[0, 0]).unwrap_err().to_string();
    assert!(e.contains("entry 1 (0)"), "{e}");
    assert!(permute::inverse(&[1]).is_err());
}
