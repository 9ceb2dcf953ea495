//! The detection metrics against values computed by hand on small arrays,
//! ties included.

#![cfg(feature = "torch")]

use std::collections::BTreeMap;

use pipeline::models::category::Category;
use pipeline::models::metrics::{accuracy, average_precision, eer, report, roc_auc, ScoredClip};

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
