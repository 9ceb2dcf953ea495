//! The `shortcut_audit` stage: could a trivial property of the files tell a
//! fake from a real clip? Per video of the FakeAVCeleb-shaped trees it reads
//! (the corpus, the seedvc outputs), it measures the audio's leading and
//! trailing silence, loudness, peak and duration, the audio and video codec
//! parameters (codec, sample rate, channels, bit rate, frame rate, size) and
//! the video's duration; then, per fake category against the real clips
//! (RVRA), the ROC AUC of each statistic alone as a detector. A statistic whose
//! AUC lies outside `[1 - flag_auc, flag_auc]` is a shortcut: a detector can
//! learn it instead of the forgery (real FakeAVCeleb's fakes begin with a
//! short silence that alone separates them).
//!
//! Numeric statistics are scored as they are (an AUC under 0.5 means fakes
//! have the smaller values); a categorical one (a codec name) scores 1 where
//! the value differs from the real clips' most common value. The output
//! folder holds `audit.json` (every statistic per category, every AUC, the
//! flagged shortcuts) and `audit.md` (the same as tables); the step's log
//! shows the flagged ones. The stage does not fail on a shortcut: it is a
//! measurement for auditors (and a gate only when `fail_on_shortcut` is set).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::corpus::{scan, Category, Video};
use super::items::{summarize, ItemLog, Outcome};
use super::{Stage, StageContext};
use crate::auc::roc_auc;
use crate::media::decode::{decode_audio_mono, probe};
use crate::media::stats::{audio_stats, SilenceRule};

/// The built-in `shortcut_audit` kind.
pub struct ShortcutAudit;

type Params = super::media_params::AuditParams;

/// One measured value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Value {
    Number(f64),
    Label(String),
}

/// The statistics of one video, by name, in a fixed order.
fn measure(v: &Video, rule: SilenceRule) -> Result<Vec<(&'static str, Value)>, String> {
    let p = probe(&v.path).map_err(|e| e.to_string())?;
    let audio = p.audio.ok_or("the file has no audio stream")?;
    let video = p.video.ok_or("the file has no video stream")?;
    let samples = decode_audio_mono(&v.path, audio.sample_rate).map_err(|e| e.to_string())?;
    let a = audio_stats(&samples, audio.sample_rate, rule);
    use Value::{Label, Number};
    Ok(vec![
        ("leading_silence_s", Number(a.leading_silence_s)),
        ("trailing_silence_s", Number(a.trailing_silence_s)),
        ("loudness_dbfs", Number(a.loudness_dbfs)),
        ("peak_dbfs", Number(a.peak_dbfs)),
        ("audio_duration_s", Number(a.duration_s)),
        ("video_duration_s", Number(video.duration_sec)),
        ("audio_codec", Label(audio.codec)),
        ("sample_rate", Number(f64::from(audio.sample_rate))),
        ("channels", Number(f64::from(audio.channels))),
        ("audio_bit_rate", Number(audio.bit_rate as f64)),
        ("video_codec", Label(video.codec)),
        ("fps", Number(video.fps)),
        ("width", Number(f64::from(video.width))),
        ("height", Number(f64::from(video.height))),
        ("video_bit_rate", Number(video.bit_rate as f64)),
    ])
}

/// What one category's values of one statistic look like.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
enum Summary {
    Numbers { mean: f64, min: f64, max: f64 },
    Labels { counts: BTreeMap<String, usize> },
}

fn summarise(values: &[&Value]) -> Summary {
    let numbers: Vec<f64> = values
        .iter()
        .filter_map(|v| match v {
            Value::Number(x) => Some(*x),
            Value::Label(_) => None,
        })
        .collect();
    if numbers.len() == values.len() && !numbers.is_empty() {
        Summary::Numbers {
            mean: numbers.iter().sum::<f64>() / numbers.len() as f64,
            min: numbers.iter().copied().fold(f64::INFINITY, f64::min),
            max: numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    } else {
        let mut counts = BTreeMap::new();
        for v in values {
            let key = match v {
                Value::Number(x) => x.to_string(),
                Value::Label(s) => s.clone(),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        Summary::Labels { counts }
    }
}

/// The AUC of one statistic alone, fakes against reals: numbers as scores,
/// labels as "differs from the reals' most common label".
fn statistic_auc(real: &[&Value], fake: &[&Value]) -> Option<f64> {
    let mut common: BTreeMap<&str, usize> = BTreeMap::new();
    for v in real {
        if let Value::Label(s) = v {
            *common.entry(s.as_str()).or_insert(0) += 1;
        }
    }
    let usual = common.iter().max_by_key(|(_, n)| **n).map(|(s, _)| *s);
    let score = |v: &Value| match v {
        Value::Number(x) => *x,
        Value::Label(s) => f64::from(u8::from(Some(s.as_str()) != usual)),
    };
    let scores: Vec<f64> = real.iter().chain(fake).map(|v| score(v)).collect();
    let labels: Vec<bool> = (0..scores.len()).map(|i| i >= real.len()).collect();
    roc_auc(&scores, &labels)
}

/// One flagged statistic.
#[derive(Clone, Debug, Serialize)]
struct Shortcut {
    category: String,
    statistic: String,
    auc: f64,
}

/// The whole audit, as written to `audit.json`.
#[derive(Debug, Serialize)]
struct Audit {
    videos: usize,
    failed: usize,
    flag_auc: f64,
    /// category -> number of videos.
    counts: BTreeMap<String, usize>,
    /// category -> statistic -> summary.
    statistics: BTreeMap<String, BTreeMap<String, Summary>>,
    /// fake category -> statistic -> AUC against RVRA.
    auc_vs_real: BTreeMap<String, BTreeMap<String, Option<f64>>>,
    shortcuts: Vec<Shortcut>,
}

fn audit(measured: &[(&Video, Vec<(&'static str, Value)>)], failed: usize, flag_auc: f64) -> Audit {
    let names: Vec<&'static str> = measured
        .first()
        .map(|(_, s)| s.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    let cats: BTreeSet<Category> = measured.iter().map(|(v, _)| v.category).collect();
    let of = |cat: Category, i: usize| -> Vec<&Value> {
        measured
            .iter()
            .filter(|(v, _)| v.category == cat)
            .map(|(_, s)| &s[i].1)
            .collect()
    };
    let mut out = Audit {
        videos: measured.len(),
        failed,
        flag_auc,
        counts: BTreeMap::new(),
        statistics: BTreeMap::new(),
        auc_vs_real: BTreeMap::new(),
        shortcuts: Vec::new(),
    };
    for &cat in &cats {
        out.counts
            .insert(cat.folder().to_string(), of(cat, 0).len());
        let per = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), summarise(&of(cat, i))))
            .collect();
        out.statistics.insert(cat.folder().to_string(), per);
        if cat == Category::Rvra {
            continue;
        }
        let mut aucs = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            let auc = statistic_auc(&of(Category::Rvra, i), &of(cat, i));
            if let Some(a) = auc.filter(|a| *a > flag_auc || *a < 1.0 - flag_auc) {
                out.shortcuts.push(Shortcut {
                    category: cat.folder().to_string(),
                    statistic: n.to_string(),
                    auc: a,
                });
            }
            aucs.insert(n.to_string(), auc);
        }
        out.auc_vs_real.insert(cat.folder().to_string(), aucs);
    }
    out
}

fn markdown(a: &Audit) -> String {
    let mut s = String::from("# Shortcut audit\n\n");
    let _ = writeln!(
        s,
        "{} videos ({} could not be measured). AUC of each statistic alone as a detector, \
         each fake category against RealVideo-RealAudio; flagged outside [{:.2}, {:.2}].\n",
        a.videos,
        a.failed,
        1.0 - a.flag_auc,
        a.flag_auc
    );
    let cats: Vec<&String> = a.auc_vs_real.keys().collect();
    let names: Vec<&String> = a
        .auc_vs_real
        .values()
        .next()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "| statistic | {} |",
        cats.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---|".repeat(cats.len()));
    for n in names {
        let cells: Vec<String> = cats
            .iter()
            .map(|c| match a.auc_vs_real[*c][n] {
                Some(x) if x > a.flag_auc || x < 1.0 - a.flag_auc => format!("**{x:.3}**"),
                Some(x) => format!("{x:.3}"),
                None => "-".to_string(),
            })
            .collect();
        let _ = writeln!(s, "| {n} | {} |", cells.join(" | "));
    }
    if a.shortcuts.is_empty() {
        s.push_str("\nNo statistic alone separates a fake category from the real clips.\n");
    } else {
        s.push_str("\nShortcuts:\n\n");
        for sc in &a.shortcuts {
            let _ = writeln!(s, "- {} / {}: AUC {:.3}", sc.category, sc.statistic, sc.auc);
        }
    }
    s
}

impl Stage for ShortcutAudit {
    fn kind(&self) -> &'static str {
        "shortcut_audit"
    }

    fn version(&self) -> u32 {
        super::versions::SHORTCUT_AUDIT
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        Params::from_json(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let p = Params::from_json(ctx.params)
            .with_context(|| format!("stage {}: bad shortcut_audit parameters", ctx.stage))?;
        let rule = SilenceRule {
            relative_db: p.silence_relative_db,
            floor_dbfs: p.silence_floor_dbfs,
        };
        let mut videos = Vec::new();
        for (name, root) in ctx.inputs {
            videos.extend(
                scan(root).with_context(|| format!("stage {}: reading input {name}", ctx.stage))?,
            );
        }
        videos.sort_by(|a, b| a.key.cmp(&b.key));
        if !videos.iter().any(|v| v.category == Category::Rvra) {
            bail!(
                "stage {}: no RealVideo-RealAudio videos among the inputs; the audit compares \
                 every fake category against them",
                ctx.stage
            );
        }
        let log = ItemLog::open(ctx.step_dir, ctx.stage, videos.len())?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.threads.max(1))
            .build()
            .context("cannot start the worker threads")?;
        let results: Vec<Result<(&Video, Result<_, String>)>> = pool.install(|| {
            videos
                .par_iter()
                .map(|v| {
                    let r = measure(v, rule);
                    let o = match &r {
                        Ok(_) => Outcome::Ok,
                        Err(e) => Outcome::Failed(e.clone()),
                    };
                    log.record(&v.key, &o)?;
                    Ok((v, r))
                })
                .collect()
        });
        let results = results.into_iter().collect::<Result<Vec<_>>>()?;
        let outcomes: Vec<(String, Outcome)> = results
            .iter()
            .map(|(v, r)| {
                let o = match r {
                    Ok(_) => Outcome::Ok,
                    Err(e) => Outcome::Failed(e.clone()),
                };
                (v.key.clone(), o)
            })
            .collect();
        summarize(ctx.stage, &outcomes, p.max_failed_fraction)?;
        let failed = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
            .count();
        let measured: Vec<(&Video, Vec<(&'static str, Value)>)> = results
            .into_iter()
            .filter_map(|(v, r)| r.ok().map(|s| (v, s)))
            .collect();
        let a = audit(&measured, failed, p.flag_auc);
        let dir = ctx.output("report")?;
        write_report(dir, &a)?;
        for sc in &a.shortcuts {
            eprintln!(
                "{}: shortcut: {} alone separates {} from the real clips (AUC {:.3})",
                ctx.stage, sc.statistic, sc.category, sc.auc
            );
        }
        if a.shortcuts.is_empty() {
            eprintln!(
                "{}: no statistic alone separates a fake category from the real clips",
                ctx.stage
            );
        } else if p.fail_on_shortcut {
            bail!(
                "stage {}: {} shortcut(s) found (see {}); fix the data or unset fail_on_shortcut",
                ctx.stage,
                a.shortcuts.len(),
                dir.join("audit.md").display()
            );
        }
        Ok(())
    }
}

fn write_report(dir: &Path, a: &Audit) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("audit.json"), serde_json::to_vec_pretty(a)?)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    std::fs::write(dir.join("audit.md"), markdown(a))
        .with_context(|| format!("cannot write {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_default_silence_rule_is_the_media_modules() {
        let p = Params::from_json(&serde_json::json!({})).unwrap();
        let rule = SilenceRule::default();
        assert_eq!(
            (p.silence_relative_db, p.silence_floor_dbfs),
            (rule.relative_db, rule.floor_dbfs)
        );
    }

    fn n(x: f64) -> Value {
        Value::Number(x)
    }

    #[test]
    fn a_statistic_that_separates_is_scored_by_its_values() {
        let real = [n(0.0), n(0.01), n(0.02)];
        let fake = [n(0.3), n(0.31)];
        let r: Vec<&Value> = real.iter().collect();
        let f: Vec<&Value> = fake.iter().collect();
        assert_eq!(statistic_auc(&r, &f), Some(1.0));
        assert_eq!(statistic_auc(&f, &r), Some(0.0));
    }

    #[test]
    fn a_label_scores_where_it_differs_from_the_reals_usual_one() {
        let l = |s: &str| Value::Label(s.to_string());
        let real = [l("aac"), l("aac"), l("aac"), l("mp3")];
        let fake = [l("pcm_s16le"), l("aac")];
        let r: Vec<&Value> = real.iter().collect();
        let f: Vec<&Value> = fake.iter().collect();
        // Scores: real 0,0,0,1; fake 1,0. Pairs (fake > real) 3 + ties ...
        // fake 1 beats three reals and ties one; fake 0 ties three, loses one.
        let expect = (3.0 + 0.5 + 0.5 * 3.0) / 8.0;
        assert!((statistic_auc(&r, &f).unwrap() - expect).abs() < 1e-12);
    }
}
