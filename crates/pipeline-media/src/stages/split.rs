//! The identity-disjoint train/validation/test (and fusion) split of the
//! `elements` stage: seeded and stratified by (race, gender), or read from
//! the file `split.file` names. Its own module so that `pipeline check`
//! (through `pipeline-media check-corpus`) computes the split a run would
//! make with the very code the stage runs, before any element exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::corpus::Video;
use crate::elementset::Split;
use crate::rng::shuffle;

type Params = super::media_params::ElementsParams;

/// identity -> its part of the split, for the videos of every input of the
/// stage `stage` (named in messages); a split file is relative to `workspace`.
pub fn split(
    workspace: &Path,
    stage: &str,
    p: &Params,
    videos: &[Video],
) -> Result<BTreeMap<String, Split>> {
    let identities: BTreeSet<&str> = videos.iter().map(|v| v.identity.as_str()).collect();
    let mut out = BTreeMap::new();
    if let Some(file) = &p.split.file {
        let path = workspace.join(file);
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SplitFile {
            train: Vec<String>,
            val: Vec<String>,
            #[serde(default)]
            test: Vec<String>,
            #[serde(default)]
            fusion: Vec<String>,
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the split file {}", path.display()))?;
        let sf: SplitFile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected {{\"train\": [ids], \"val\": [ids], \"test\": [ids]}}",
                path.display()
            )
        })?;
        for (part, ids) in [
            (Split::Train, sf.train),
            (Split::Val, sf.val),
            (Split::Test, sf.test),
            (Split::Fusion, sf.fusion),
        ] {
            for id in ids {
                if let Some(other) = out.insert(id.clone(), part) {
                    bail!(
                        "{}: identity {id} is in both {} and {}",
                        path.display(),
                        other.name(),
                        part.name()
                    );
                }
            }
        }
        if let Some(missing) = identities.iter().find(|id| !out.contains_key(**id)) {
            bail!(
                "{}: identity {missing} of the corpus is in none of train, val and test; add it",
                path.display()
            );
        }
        return Ok(out);
    }
    let (tf, sf, ff) = (
        p.split.train_fraction,
        p.split.test_fraction,
        p.split.fusion_fraction,
    );
    if !(0.0..=1.0).contains(&tf) || !(0.0..=1.0).contains(&sf) || tf + sf > 1.0 {
        bail!(
            "stage {}: split.train_fraction ({tf}) and split.test_fraction ({sf}) must lie in \
             [0, 1] and add up to at most 1 (the rest validates)",
            stage
        );
    }
    if !(0.0..=tf).contains(&ff) {
        bail!(
            "stage {}: split.fusion_fraction ({ff}) is taken from the training identities, so \
             it must lie in [0, train_fraction ({tf})]",
            stage
        );
    }
    // Stratify by (race, gender) of each identity's first video.
    let mut strata: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for v in videos {
        if !out.contains_key(&v.identity) {
            out.insert(v.identity.clone(), Split::Val);
            strata
                .entry((v.race.as_str(), v.gender.as_str()))
                .or_default()
                .insert(v.identity.as_str());
        }
    }
    for ((race, gender), ids) in strata {
        let mut ids: Vec<&str> = ids.into_iter().collect();
        let h = blake3::Hasher::new()
            .update(&p.seed.to_le_bytes())
            .update(format!("split/{race}/{gender}").as_bytes())
            .finalize();
        shuffle(&mut ids, u64::from_le_bytes(h.as_bytes()[..8].try_into()?));
        let n = ids.len();
        let n_train = ((tf * n as f64).round() as usize).min(n);
        let n_test = ((sf * n as f64).round() as usize).min(n - n_train);
        let n_fusion = ((ff * n as f64).round() as usize).min(n_train);
        for (k, id) in ids[..n_train].iter().enumerate() {
            let part = if k < n_fusion {
                Split::Fusion
            } else {
                Split::Train
            };
            out.insert((*id).to_string(), part);
        }
        for id in &ids[n - n_test..] {
            out.insert((*id).to_string(), Split::Test);
        }
    }
    Ok(out)
}
