use super::*;
use crate::Error;
use crate::granularity::{self, AxisSlices, Blocks, Granularity, NM, RowBalanced, is_nm};
use crate::param::{ParamRef, to_csr, to_sparse24};
use lopper_sparse::Sparse24;
use lopper_tensor::MatRef;
use proptest::prelude::*;

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Structured masks: constant within each group; kept groups count exact; kept groups' score
/// sums dominate dropped ones (ties to the lower group index).
fn check_groups(
    mask: &[bool],
    scores: &[f32],
    group_of: impl Fn(usize) -> usize,
    groups: usize,
    s: f64,
) {
    let mut kept = vec![None; groups];
    let mut sums = vec![0.0f64; groups];
    for i in 0..mask.len() {
        let g = group_of(i);
        sums[g] += f64::from(scores[i]);
        match kept[g] {
            None => kept[g] = Some(mask[i]),
            Some(k) => assert_eq!(k, mask[i], "group {g} split"),
        }
    }
    let k: Vec<bool> = kept.iter().map(|k| k.unwrap_or(false)).collect();
    assert_eq!(count(&k), py_round(groups, s));
    for i in 0..groups {
        for j in 0..groups {
            if k[i] && !k[j] {
                assert!(
                    sums[i] > sums[j] || (sums[i] == sums[j] && i < j),
                    "group {i} kept over {j}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// N:M for any N < M: exactly N kept per group of M along the last axis, the N best,
    /// ties to the lower index; values pruned with it are N:M-valid.
    #[test]
    fn nm_keeps_n_best_of_each_group(rows in 1usize..6, groups in 1usize..5, m in 2usize..9, nfrac in 0.0f64..1.0, seed: u64) {
        let n = 1 + ((m - 1) as f64 * nfrac) as usize % (m - 1);
        let cols = groups * m;
        let v = values_with_ties(rows * cols, seed);
        let sc = abs(&v);
        let g = NM::new(n, m).unwrap();
        let mask = g.mask("w", &[rows, cols], &sc, 0.0).unwrap();
        for (gm, gs) in mask.chunks(m).zip(sc.chunks(m)) {
            prop_assert_eq!(count(gm), n);
            assert_topk_order(gs, gm);
        }
        let pruned: Vec<f32> = v.iter().zip(&mask).map(|(&x, &k)| if k { x } else { 0.0 }).collect();
        prop_assert!(is_nm(&pruned, &[rows, cols], n, m));
    }

    /// 2:4 magnitude equals lopper-sparse's Sparse24::from_dense_prune, and the pruned weight hands
    /// on as Sparse24 and Csr with the same values.
    #[test]
    fn two_four_matches_sparse24(rows in 1usize..6, groups in 1usize..5, seed: u64) {
        let cols = groups * 4;
        let v = values_with_ties(rows * cols, seed);
        let shape = [rows, cols];
        let mask = NM::new(2, 4).unwrap().mask("w", &shape, &abs(&v), 0.0).unwrap();
        let pruned: Vec<f32> = v.iter().zip(&mask).map(|(&x, &k)| if k { x } else { 0.0 }).collect();
        let s24 = Sparse24::from_dense_prune(MatRef::new(&v, rows, cols).unwrap()).unwrap();
        prop_assert_eq!(s24.to_dense(), pruned.clone());
        let p = ParamRef::new("w", &shape, &pruned);
        prop_assert_eq!(to_sparse24(p).unwrap().to_dense(), pruned.clone());
        let c = to_csr(p, &mask).unwrap();
        prop_assert_eq!(c.nnz(), rows * cols / 2);
        prop_assert_eq!(c.to_dense(), pruned);
    }

    /// Row-balanced: every row keeps round((1-s) * cols), the best of the row.
    #[test]
    fn row_balanced_is_exact_per_row(rows in 1usize..6, cols in 1usize..10, s in 0.0f64..1.0, seed: u64) {
        let sc = abs(&values_with_ties(rows * cols, seed));
        let mask = RowBalanced.mask("w", &[rows, cols], &sc, s).unwrap();
        for (rm, rs) in mask.chunks(cols).zip(sc.chunks(cols)) {
            prop_assert_eq!(count(rm), py_round(cols, s));
            assert_topk_order(rs, rm);
        }
    }

    /// Rows, columns, heads, conv channels (both axes) and blocks.
    #[test]
    fn structured_units_are_exact(a in 1usize..5, b in 1usize..5, h in 1usize..4, w in 1usize..4, s in 0.0f64..1.0, seed: u64) {
        // 2-D [a*h, b*w]
        let (r, c) = (a * h, b * w);
        let sc = abs(&values_with_ties(r * c, seed));
        let sh = [r, c];
        let m = AxisSlices::rows().mask("w", &sh, &sc, s).unwrap();
        check_groups(&m, &sc, |i| i / c, r, s);
        let m = AxisSlices::columns().mask("w", &sh, &sc, s).unwrap();
        check_groups(&m, &sc, |i| i % c, c, s);
        let m = AxisSlices::heads(a, 0).mask("w", &sh, &sc, s).unwrap();
        check_groups(&m, &sc, |i| i / c / h, a, s);
        let m = AxisSlices::heads(b, 1).mask("w", &sh, &sc, s).unwrap();
        check_groups(&m, &sc, |i| (i % c) / w, b, s);
        let m = Blocks { h, w }.mask("w", &sh, &sc, s).unwrap();
        check_groups(&m, &sc, |i| (i / c / h) * b + (i % c) / w, a * b, s);
        // conv [a, b, h, w]
        let sh4 = [a, b, h, w];
        let m = AxisSlices::channels(0).mask("w", &sh4, &sc, s).unwrap();
        check_groups(&m, &sc, |i| i / (b * h * w), a, s);
        let m = AxisSlices::channels(1).mask("w", &sh4, &sc, s).unwrap();
        check_groups(&m, &sc, |i| (i / (h * w)) % b, b, s);
    }
}

#[test]
fn patterns_that_do_not_fit_are_typed_errors() {
    let sc = vec![1.0f32; 6];
    let e = NM::new(2, 4)
        .unwrap()
        .mask("layer.w", &[2, 3], &sc, 0.0)
        .unwrap_err();
    assert!(matches!(e, Error::Pattern { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("layer.w") && msg.contains("multiple of 4"),
        "{msg}"
    );
    assert!(NM::new(4, 4).is_err() && NM::new(0, 4).is_err());
    assert!(Blocks { h: 4, w: 1 }.check("w", &[2, 3]).is_err());
    assert!(AxisSlices::heads(4, 0).check("w", &[6, 2]).is_err());
    assert!(AxisSlices::channels(0).check("w", &[6, 2]).is_err());
    assert!(AxisSlices::columns().check("b", &[6]).is_err());
    for bad in ["3:3", "x:4", "blocks:2", "heads:0", "diagonal"] {
        assert!(granularity::parse(bad).is_err(), "{bad}");
    }
    for good in [
        "unstructured",
        "2:4",
        "1:8",
        "rows",
        "cols",
        "blocks:2x2",
        "heads:4",
        "channels",
        "in-channels",
        "row-balanced",
    ] {
        assert!(granularity::parse(good).is_ok(), "{good}");
    }
    assert_eq!(
        granularity::parse("2:4").unwrap().fixed_density(),
        Some(0.5)
    );
    // round half to even, like Python: round(0.5 * 5) = 2, round(0.5 * 7) = 4
    assert_eq!(granularity::kept_count(5, 0.5), 2);
    assert_eq!(granularity::kept_count(7, 0.5), 4);
}

/// The k first indices in the ranking order: key descending (NaN as +inf; -0.0 below +0.0, as
/// `total_cmp`), then index ascending; by a full sort.
#[test]
fn sparsity_outside_the_range_is_an_error_not_a_silent_mask() {
    // before: NaN or 1.0 kept nothing (every weight removed), -0.5 or 1.5 kept all or nothing
    let sc = [3.0f32, 1.0, 2.0, 4.0];
    let grans: [Box<dyn Granularity>; 4] = [
        Box::new(crate::granularity::Unstructured),
        Box::new(RowBalanced),
        Box::new(AxisSlices::rows()),
        Box::new(Blocks { h: 1, w: 2 }),
    ];
    for g in &grans {
        for s in [f64::NAN, -0.5, 1.0, 1.5, f64::INFINITY] {
            let e = g.mask("w", &[2, 2], &sc, s).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Invalid {
                        what: "sparsity",
                        ..
                    }
                ),
                "{} at {s}: {e}",
                g.name()
            );
        }
        assert_eq!(g.mask("w", &[2, 2], &sc, 0.5).unwrap().len(), 4);
    }
    // N:M ignores the sparsity (fixed density): still fine
    assert!(
        NM::new(1, 2)
            .unwrap()
            .mask("w", &[2, 2], &sc, f64::NAN)
            .is_ok()
    );
}

#[test]
fn shapes_that_overflow_are_errors_not_panics() {
    let sc = [3.0f32, 1.0, 2.0, 4.0];
    let huge = [usize::MAX, 2, 4];
    let grans: [Box<dyn Granularity>; 5] = [
        Box::new(crate::granularity::Unstructured),
        Box::new(RowBalanced),
        Box::new(AxisSlices::rows()),
        Box::new(Blocks { h: 1, w: 2 }),
        Box::new(NM::new(2, 4).unwrap()),
    ];
    for g in &grans {
        let e = g.mask("w", &huge, &sc, 0.5).unwrap_err();
        assert!(
            e.to_string().contains("shape overflows usize"),
            "{}: {e}",
            g.name()
        );
    }
    assert_eq!(crate::param::matrix_dims(&huge), (usize::MAX, 4));
    let e = crate::permute::search(&sc, &[1 << 33, 1 << 33, 4], 2, 4, 1).unwrap_err();
    assert!(e.to_string().contains("permutation needs"), "{e}");
    let e = crate::permute::permute_columns(&sc, &[usize::MAX, 2, 2], &[0, 1]).unwrap_err();
    assert!(
        e.to_string().contains("4 values and a permutation of 2"),
        "{e}"
    );
    // a claimed last axis of 2^50 with a short permutation: an error before any allocation
    let e = crate::permute::permute_columns(&sc, &[1, 1 << 50], &[0]).unwrap_err();
    assert!(
        e.to_string()
            .contains("permutation of 1 for a 1x1125899906842624"),
        "{e}"
    );
}

fn topk_reference(keys: &[f64], k: usize) -> Vec<usize> {
    let key = |x: f64| if x.is_nan() { f64::INFINITY } else { x };
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    idx.sort_by(|&a, &b| key(keys[b]).total_cmp(&key(keys[a])).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// topk_indices against a full sort, on keys drawn from a handful of values (many ties, NaN,
    /// both zeros, infinities) and on spread-out keys, every k from 0 to past the length.
    #[test]
    fn topk_indices_is_the_sorted_prefix(
        picks in proptest::collection::vec(0usize..9, 0..200),
        spread in proptest::collection::vec(-1e3f64..1e3, 0..200),
        kf in 0.0f64..1.2,
    ) {
        let table = [f64::NAN, f64::NEG_INFINITY, -1.0, -0.0, 0.0, 1.0, 2.0, f64::INFINITY, -f64::NAN];
        let tied: Vec<f64> = picks.iter().map(|&p| table[p]).collect();
        for keys in [&tied, &spread] {
            let k = (kf * keys.len() as f64) as usize;
            let mut got = granularity::topk_indices(keys, k);
            got.sort_unstable();
            prop_assert_eq!(got, topk_reference(keys, k.min(keys.len())));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// topk_mask (f32 keys) marks exactly topk_indices of the same scores as f64.
    #[test]
    fn topk_mask_matches_topk_indices(
        picks in proptest::collection::vec(0usize..9, 0..200),
        kf in 0.0f64..1.2,
    ) {
        let table = [f32::NAN, f32::NEG_INFINITY, -1.5, -0.0, 0.0, 1e-30, 2.0, f32::INFINITY, -f32::NAN];
        let scores: Vec<f32> = picks.iter().map(|&p| table[p]).collect();
        let k = (kf * scores.len() as f64) as usize;
        let keys: Vec<f64> = scores.iter().map(|&x| f64::from(x)).collect();
        let mut want = vec![false; scores.len()];
        for i in granularity::topk_indices(&keys, k) {
            want[i] = true;
        }
        prop_assert_eq!(granularity::topk_mask(&scores, k), want);
    }
}
