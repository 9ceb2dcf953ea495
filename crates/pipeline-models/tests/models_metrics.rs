//! The detection metrics against values computed by hand on small arrays,
//! ties included.

use std::collections::BTreeMap;

use pipeline_models::category::Category;
use pipeline_models::metrics::{
    accuracy, auc_interval, average_precision, eer, report, report_with_intervals, roc_auc,
    Bootstrap, ScoredClip,
};

fn close(a: Option<f64>, b: f64) {
    let a = a.expect("metric defined");
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn distinct_scores() {
    // Positives 0.35, 0.8; negatives 0.1, 0.4.
    let s = [0.1, 0.4, 0.35, 0.8];
    let l = [false, false, true, true];
    // Pairs (pos > neg): 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3 of 4.
    close(roc_auc(&s, &l), 0.75);
    // Thresholds 0.8: P 1, R 1/2; 0.4: R unchanged; 0.35: P 2/3, R 1.
    close(average_precision(&s, &l), 0.5 * 1.0 + 0.5 * 2.0 / 3.0);
    // 0.35 is the only clip on the wrong side of 0.5.
    close(accuracy(&s, &l), 0.75);
    // ROC (FPR, FNR): (0, 1/2) after 0.8, (1/2, 1/2) after 0.4: equal there.
    close(eer(&s, &l), 0.5);
}

#[test]
fn tied_scores() {
    // Positives 0.5, 0.5, 0.9; negatives 0.5, 0.2.
    let s = [0.5, 0.5, 0.5, 0.9, 0.2];
    let l = [true, false, true, true, false];
    // Neg 0.5: two ties (1/2 each) + 0.9 -> 2; neg 0.2: 3. Total 5 of 6.
    close(roc_auc(&s, &l), 5.0 / 6.0);
    // Thresholds 0.9: P 1, R 1/3; 0.5 (all three at once): P 3/4, R 1.
    close(average_precision(&s, &l), 1.0 / 3.0 + (2.0 / 3.0) * 0.75);
    // 0.5 counts as fake: only the negative at 0.5 is wrong.
    close(accuracy(&s, &l), 0.8);
    // (FPR, FNR) from (0, 2/3) to (1/2, 0): fpr = t/2, fnr = 2/3 (1 - t) meet at t = 4/7.
    close(eer(&s, &l), 2.0 / 7.0);
}

#[test]
fn all_tied_and_undefined() {
    let s = [0.3, 0.3, 0.3, 0.3];
    let l = [true, false, false, true];
    close(roc_auc(&s, &l), 0.5);
    close(average_precision(&s, &l), 0.5);
    close(eer(&s, &l), 0.5);
    close(accuracy(&s, &l), 0.5);
    assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    assert_eq!(average_precision(&[0.1, 0.2], &[false, false]), None);
    assert_eq!(eer(&[0.1], &[false]), None);
}

#[test]
fn per_category_report_pairs_each_fake_category_with_the_reals() {
    let clip = |cat: Category, f: f64, a: f64, w: (f64, f64)| ScoredClip {
        category: cat,
        label: cat.y_video(),
        scores: BTreeMap::from([("final", f), ("audio", a)]),
        weights: Some(w),
    };
    let clips = vec![
        clip(Category::Rvra, 0.2, 0.1, (0.5, 0.5)),
        clip(Category::Rvra, 0.6, 0.3, (0.7, 0.3)),
        clip(Category::Rvfa, 0.9, 0.2, (0.9, 0.1)),
        clip(Category::Fvra, 0.4, 0.9, (0.2, 0.8)),
    ];
    let r = report(&clips);
    // final: RVFA 0.9 beats both reals; FVRA 0.4 beats one of two.
    close(r.per_category["final"]["RealVideo-FakeAudio"].auc, 1.0);
    close(r.per_category["final"]["FakeVideo-RealAudio"].auc, 0.5);
    // overall final: fakes {0.9, 0.4} vs reals {0.2, 0.6}: 3 of 4 pairs.
    close(r.overall["final"].auc, 0.75);
    // audio: RVFA 0.2 beats only 0.1.
    close(r.per_category["audio"]["RealVideo-FakeAudio"].auc, 0.5);
    assert_eq!(r.per_category["final"]["FakeVideo-RealAudio"].n_real, 2);
    assert_eq!(r.per_category["final"]["FakeVideo-RealAudio"].n_fake, 1);
    let w = r.mean_fusion_weights["RealVideo-RealAudio"];
    assert!((w.0 - 0.6).abs() < 1e-12 && (w.1 - 0.4).abs() < 1e-12);
}

/// Scores of `n` reals and `n` fakes: `sin`-spread, fakes shifted by `shift`
/// (a deterministic set with an AUC strictly between 0.5 and 1).
fn overlapping(n: usize, shift: f64) -> (Vec<f64>, Vec<bool>) {
    let mut s = Vec::new();
    let mut l = Vec::new();
    for i in 0..n {
        s.push((i as f64 * 1.7).sin());
        l.push(false);
        s.push((i as f64 * 2.3).sin() + shift);
        l.push(true);
    }
    (s, l)
}

const BOOT: Bootstrap = Bootstrap {
    replicates: 2000,
    seed: 7,
};

#[test]
fn the_bootstrap_interval_is_seeded_and_brackets_the_estimate() {
    let (s, l) = overlapping(60, 0.6);
    let auc = roc_auc(&s, &l).unwrap();
    let ci = auc_interval(&s, &l, BOOT, "final/overall").unwrap();
    assert!(ci[0] < auc && auc < ci[1], "{ci:?} does not bracket {auc}");
    // The same seed and stream give the same interval; another stream or
    // seed another draw (equal only by a coincidence of 2000 resamplings).
    assert_eq!(ci, auc_interval(&s, &l, BOOT, "final/overall").unwrap());
    assert_ne!(ci, auc_interval(&s, &l, BOOT, "audio/overall").unwrap());
    let other = Bootstrap { seed: 8, ..BOOT };
    assert_ne!(ci, auc_interval(&s, &l, other, "final/overall").unwrap());
}

#[test]
fn the_bootstrap_interval_has_the_width_of_the_aucs_standard_error() {
    // Hanley & McNeil (1982): the standard error of an AUC A from n1 fakes
    // and n2 reals; a 95 % interval spans about 2 x 1.96 of it.
    let (s, l) = overlapping(80, 0.6);
    let a = roc_auc(&s, &l).unwrap();
    let (n1, n2) = (80.0, 80.0);
    let (q1, q2) = (a / (2.0 - a), 2.0 * a * a / (1.0 + a));
    let se = ((a * (1.0 - a) + (n1 - 1.0) * (q1 - a * a) + (n2 - 1.0) * (q2 - a * a)) / (n1 * n2))
        .sqrt();
    let ci = auc_interval(&s, &l, BOOT, "x").unwrap();
    let ratio = (ci[1] - ci[0]) / (2.0 * 1.96 * se);
    assert!(
        (0.75..1.25).contains(&ratio),
        "interval {ci:?} for AUC {a:.3}: width {:.4} against 3.92 SE = {:.4}",
        ci[1] - ci[0],
        2.0 * 1.96 * se
    );
    // Four times the clips: about half the width.
    let (s4, l4) = overlapping(320, 0.6);
    let ci4 = auc_interval(&s4, &l4, BOOT, "x").unwrap();
    let shrink = (ci4[1] - ci4[0]) / (ci[1] - ci[0]);
    assert!((0.35..0.65).contains(&shrink), "width ratio {shrink}");
}

#[test]
fn a_perfect_or_undefined_auc_has_the_interval_it_must() {
    let s = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9];
    let l = [false, false, false, true, true, true];
    assert_eq!(auc_interval(&s, &l, BOOT, "x"), Some([1.0, 1.0]));
    assert_eq!(auc_interval(&s, &[true; 6], BOOT, "x"), None);
    let none = Bootstrap {
        replicates: 0,
        ..BOOT
    };
    assert_eq!(auc_interval(&s, &l, none, "x"), None);
}

#[test]
fn a_report_with_intervals_carries_one_for_every_auc() {
    let mut clips = Vec::new();
    for i in 0..40 {
        for cat in [Category::Rvra, Category::Fvra, Category::RvfaVc] {
            let base = (i as f64 * 0.37).sin() * 0.3 + 0.5;
            let p = if cat == Category::Rvra {
                base - 0.1
            } else {
                base + 0.1
            };
            clips.push(ScoredClip {
                category: cat,
                label: cat.y_video(),
                scores: BTreeMap::from([("final", p), ("audio", 1.0 - p)]),
                weights: None,
            });
        }
    }
    let r = report_with_intervals(&clips, BOOT);
    for score in ["final", "audio"] {
        let m = &r.overall[score];
        let ci = m.auc_ci95.expect("overall interval");
        assert!(ci[0] <= m.auc.unwrap() && m.auc.unwrap() <= ci[1]);
        for (cat, m) in &r.per_category[score] {
            assert!(m.auc_ci95.is_some(), "{score}/{cat} has no interval");
        }
    }
    assert!(report(&clips).overall["final"].auc_ci95.is_none());
}
