//! Detection metrics: ROC AUC, average precision, accuracy at 0.5 and the
//! equal error rate, overall and per fake category (each category against
//! the real clips), for the fused, audio-only and A2V-only scores, plus the
//! mean fusion weights per category.
//!
//! Conventions (each pinned by a hand-computed test): AUC counts a tied
//! real/fake pair as one half (the Mann-Whitney statistic, equal to the
//! trapezoidal area under the ROC curve); AP is the step-wise sum
//! `sum_n (R_n - R_{n-1}) P_n` over distinct thresholds (scikit-learn's
//! `average_precision_score`); a score `>= 0.5` predicts fake; the EER is where
//! the linear interpolation between consecutive ROC points crosses FPR = FNR.
//! A metric undefined for the data (one class missing) is `None`.
//!
//! Uncertainty: [`auc_interval`] is the 95 % percentile bootstrap interval of
//! the AUC. Each replicate resamples the real and the fake clips separately,
//! with replacement, keeping both counts (the AUC is a two-sample statistic);
//! the draws come from a generator seeded by the caller's seed and the
//! interval's name, so every interval is reproducible on its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::category::Category;
use super::rng::Rng;

/// A 95 % interval `[lo, hi]`.
pub type Interval = [f64; 2];

/// How the bootstrap intervals of a report are drawn.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bootstrap {
    pub replicates: usize,
    pub seed: u64,
}

/// The `q` quantile of sorted values, linearly interpolated between order
/// statistics (NumPy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// 95 % percentile bootstrap interval of [`roc_auc`]; `None` when the AUC
/// is undefined or `replicates` is 0. `stream` names the interval (mixed
/// into the seed).
pub fn auc_interval(
    scores: &[f64],
    labels: &[bool],
    boot: Bootstrap,
    stream: &str,
) -> Option<Interval> {
    roc_auc(scores, labels)?;
    if boot.replicates == 0 {
        return None;
    }
    let pos: Vec<f64> = (0..scores.len())
        .filter(|&i| labels[i])
        .map(|i| scores[i])
        .collect();
    let neg: Vec<f64> = (0..scores.len())
        .filter(|&i| !labels[i])
        .map(|i| scores[i])
        .collect();
    let key = u64::from_le_bytes(
        blake3::hash(stream.as_bytes()).as_bytes()[..8]
            .try_into()
            .ok()?,
    );
    let mut rng = Rng::from_keys(&[boot.seed, key]);
    let mut s = Vec::with_capacity(scores.len());
    let mut l = Vec::with_capacity(scores.len());
    let mut aucs: Vec<f64> = (0..boot.replicates)
        .map(|_| {
            s.clear();
            l.clear();
            for (group, label) in [(&pos, true), (&neg, false)] {
                for _ in 0..group.len() {
                    s.push(group[rng.below(group.len())]);
                    l.push(label);
                }
            }
            roc_auc(&s, &l).expect("both classes are drawn")
        })
        .collect();
    aucs.sort_by(f64::total_cmp);
    Some([quantile(&aucs, 0.025), quantile(&aucs, 0.975)])
}

pub use pipeline_core::auc::roc_auc;

/// Cumulative (false positives, true positives) at each distinct threshold,
/// from the highest score down.
fn roc_counts(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut fp, mut tp) = (0.0, 0.0);
    let mut points = Vec::new();
    for (pos, &k) in order.iter().enumerate() {
        if labels[k] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_run = pos + 1 == order.len() || scores[order[pos + 1]] != scores[k];
        if last_of_run {
            points.push((fp, tp));
        }
    }
    points
}

/// Average precision (positives = fakes).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&l| l).count() as f64;
    if n_pos == 0.0 {
        return None;
    }
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (fp, tp) in roc_counts(scores, labels) {
        let recall = tp / n_pos;
        ap += (recall - prev_recall) * tp / (tp + fp);
        prev_recall = recall;
    }
    Some(ap)
}

/// Fraction of clips classified right with threshold 0.5 (`score >= 0.5` is fake).
pub fn accuracy(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let right = scores
        .iter()
        .zip(labels)
        .filter(|(s, l)| (**s >= 0.5) == **l)
        .count();
    Some(right as f64 / scores.len() as f64)
}

/// Equal error rate: FPR = FNR on the ROC curve, linearly interpolated.
pub fn eer(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&l| l).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let mut prev = (0.0, 1.0); // (fpr, fnr) above the highest score
    for (fp, tp) in roc_counts(scores, labels) {
        let cur = (fp / n_neg, 1.0 - tp / n_pos);
        if cur.0 >= cur.1 {
            let d0 = prev.0 - prev.1;
            let d1 = cur.0 - cur.1;
            let t = if d1 == d0 { 0.0 } else { -d0 / (d1 - d0) };
            return Some(prev.0 + t * (cur.0 - prev.0));
        }
        prev = cur;
    }
    Some(1.0)
}

/// The four metrics of one score on one set of clips.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricSet {
    pub auc: Option<f64>,
    /// 95 % bootstrap interval of `auc` (reports made with a [`Bootstrap`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc_ci95: Option<Interval>,
    pub ap: Option<f64>,
    pub acc: Option<f64>,
    pub eer: Option<f64>,
    pub n_real: usize,
    pub n_fake: usize,
}

impl MetricSet {
    pub fn compute(scores: &[f64], labels: &[bool]) -> Self {
        let n_fake = labels.iter().filter(|&&l| l).count();
        Self {
            auc: roc_auc(scores, labels),
            auc_ci95: None,
            ap: average_precision(scores, labels),
            acc: accuracy(scores, labels),
            eer: eer(scores, labels),
            n_real: labels.len() - n_fake,
            n_fake,
        }
    }
}

/// One evaluated clip: its category, its label and its scores (probabilities).
#[derive(Debug, Clone)]
pub struct ScoredClip {
    pub category: Category,
    pub label: bool,
    /// Named scores, e.g. `final`, `audio`, `a2v`.
    pub scores: BTreeMap<&'static str, f64>,
    /// Stage 2's fusion weights `(w_audio, w_a2v)`.
    pub weights: Option<(f64, f64)>,
}

/// Metrics for every score, overall and per fake category, and mean fusion
/// weights per category.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// score name -> metrics over every clip.
    pub overall: BTreeMap<String, MetricSet>,
    /// score name -> fake category -> metrics over that category and the real clips.
    pub per_category: BTreeMap<String, BTreeMap<String, MetricSet>>,
    /// category -> mean `(w_audio, w_a2v)`.
    pub mean_fusion_weights: BTreeMap<String, (f64, f64)>,
}

/// Builds the report of a set of scored clips.
pub fn report(clips: &[ScoredClip]) -> Report {
    report_with(clips, None)
}

/// [`report`] with the bootstrap interval of every AUC (overall and per
/// category, for every score), each drawn from its own seeded stream.
pub fn report_with_intervals(clips: &[ScoredClip], boot: Bootstrap) -> Report {
    report_with(clips, Some(boot))
}

fn report_with(clips: &[ScoredClip], boot: Option<Bootstrap>) -> Report {
    let names: Vec<&'static str> = clips
        .first()
        .map(|c| c.scores.keys().copied().collect())
        .unwrap_or_default();
    let mut overall = BTreeMap::new();
    let mut per_category = BTreeMap::new();
    let categories: std::collections::BTreeSet<Category> =
        clips.iter().map(|c| c.category).collect();
    for name in &names {
        let select = |stream: &str, keep: &dyn Fn(&ScoredClip) -> bool| {
            let chosen: Vec<&ScoredClip> = clips.iter().filter(|c| keep(c)).collect();
            let s: Vec<f64> = chosen.iter().map(|c| c.scores[name]).collect();
            let l: Vec<bool> = chosen.iter().map(|c| c.label).collect();
            let mut m = MetricSet::compute(&s, &l);
            if let Some(b) = boot {
                m.auc_ci95 = auc_interval(&s, &l, b, &format!("{name}/{stream}"));
            }
            m
        };
        overall.insert(name.to_string(), select("overall", &|_| true));
        let mut per = BTreeMap::new();
        for &cat in categories.iter().filter(|c| c.y_video()) {
            per.insert(
                cat.folder().to_string(),
                select(cat.folder(), &|c| !c.label || c.category == cat),
            );
        }
        per_category.insert(name.to_string(), per);
    }
    let mut mean_fusion_weights = BTreeMap::new();
    for &cat in &categories {
        let w: Vec<(f64, f64)> = clips
            .iter()
            .filter(|c| c.category == cat)
            .filter_map(|c| c.weights)
            .collect();
        if !w.is_empty() {
            let n = w.len() as f64;
            let a = w.iter().map(|x| x.0).sum::<f64>() / n;
            let v = w.iter().map(|x| x.1).sum::<f64>() / n;
            mean_fusion_weights.insert(cat.folder().to_string(), (a, v));
        }
    }
    Report {
        overall,
        per_category,
        mean_fusion_weights,
    }
}
