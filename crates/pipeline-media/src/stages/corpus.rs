//! The FakeAVCeleb-shaped corpus layout shared by the synth, seedvc,
//! elements and voxceleb_subset stages:
//! `<Category>/<race>/<gender>/<idNNNNN>/<name>.mp4`. Paths are walked as
//! paths (race folders have spaces and parentheses), never split on spaces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use pipeline_core::stages::category::Category;

/// FakeAVCeleb's race folders.
pub const RACES: [&str; 5] = [
    "African",
    "Asian (East)",
    "Asian (South)",
    "Caucasian (American)",
    "Caucasian (European)",
];

/// FakeAVCeleb's gender folders.
pub const GENDERS: [&str; 2] = ["men", "women"];

/// One video of the corpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Video {
    /// `Category/race/gender/id/name.mp4`, '/'-separated: the stable item key.
    pub key: String,
    pub path: PathBuf,
    pub category: Category,
    pub race: String,
    pub gender: String,
    pub identity: String,
    /// The file name (`00109.mp4`).
    pub name: String,
}

impl Video {
    /// The key the seedvc stage writes this (RVRA) video's voice clone of
    /// `category` at: the same path under the clone's category folder.
    pub fn key_as(&self, category: Category) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            category.folder(),
            self.race,
            self.gender,
            self.identity,
            self.name
        )
    }
}

fn sorted_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        out.push((name, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Every `.mp4` under the category folders of `root` (unknown folders are
/// ignored), sorted by key.
pub fn scan(root: &Path) -> Result<Vec<Video>> {
    let mut videos = Vec::new();
    for (cat_name, cat_path) in sorted_dirs(root)? {
        let Some(category) = Category::from_folder(&cat_name) else {
            continue;
        };
        if !cat_path.is_dir() {
            continue;
        }
        for (race, race_path) in sorted_dirs(&cat_path)? {
            if !race_path.is_dir() {
                continue;
            }
            for (gender, gender_path) in sorted_dirs(&race_path)? {
                if !gender_path.is_dir() {
                    continue;
                }
                for (identity, id_path) in sorted_dirs(&gender_path)? {
                    if !id_path.is_dir() {
                        continue;
                    }
                    for (name, path) in sorted_dirs(&id_path)? {
                        if !name.to_ascii_lowercase().ends_with(".mp4") || !path.is_file() {
                            continue;
                        }
                        videos.push(Video {
                            key: format!("{cat_name}/{race}/{gender}/{identity}/{name}"),
                            path,
                            category,
                            race: race.clone(),
                            gender: gender.clone(),
                            identity: identity.clone(),
                            name,
                        });
                    }
                }
            }
        }
    }
    videos.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(videos)
}

/// Whether a folder name is a FakeAVCeleb / VoxCeleb2 identity (`id00018`):
/// the two corpora share this namespace.
pub fn is_identity(name: &str) -> bool {
    name.strip_prefix("id")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The identity folders under `root/<category>/<race>/<gender>/`, whether or
/// not they hold videos yet; an error when there is none, naming the folder.
pub fn identities(root: &Path, category: Category) -> Result<BTreeSet<String>> {
    let dir = root.join(category.folder());
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a folder: the input corpus has no {} category; point the stage's \
             input at a FakeAVCeleb-shaped folder or change `identities_from`",
            dir.display(),
            category.folder()
        );
    }
    let mut ids = BTreeSet::new();
    for (_, race_path) in sorted_dirs(&dir)? {
        if !race_path.is_dir() {
            continue;
        }
        for (_, gender_path) in sorted_dirs(&race_path)? {
            if !gender_path.is_dir() {
                continue;
            }
            for (identity, id_path) in sorted_dirs(&gender_path)? {
                if is_identity(&identity) && id_path.is_dir() {
                    ids.insert(identity);
                }
            }
        }
    }
    if ids.is_empty() {
        anyhow::bail!(
            "no identity folders (idNNNNN) under {}/<race>/<gender>/: the corpus is empty or \
             not FakeAVCeleb-shaped",
            dir.display()
        );
    }
    Ok(ids)
}
